"""The full-window identity for every learning rule (reference-behaviour §3.2, finding F-23).

With ``vjp_method='multi-step'`` and one ``MultiStepData`` window covering the whole sequence,
the traces at window entry are zero, so the gradient is plain reverse mode through the
unrolled window: BPTT, for every rule and every hyperparameter. The matrix below is every
rule × {GRU, LSTM, Elman, LIF}. A cell already tested in the rule's own module is listed as a
skip naming that test (so the matrix is complete in one place without running a cell twice).
One model per rule runs by default; the other cells are ``slow``.

``ThreeFactor`` cannot take part by design: its modulator replaces each step's learning
signal, and a window has no per-step signal to replace, so it refuses ``vjp_method=
'multi-step'`` (tested below).
"""

import warnings

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import MultiStepData
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states

T = 6

MODELS = {
    "gru": models.gru,
    "lstm": models.lstm,
    "elman": models.elman,
    "lif": lambda: models.SpikingNet(neuron="lif"),
}


# Rule name -> (constructor(model) -> learner, its hyperparameters are non-trivial on purpose).
RULES = {
    "d_rtrl": lambda m: braintrace.D_RTRL(m, vjp_method="multi-step"),
    "es_d_rtrl": lambda m: braintrace.ES_D_RTRL(m, 0.9, vjp_method="multi-step"),
    "pp_prop_rank": lambda m: braintrace.pp_prop(m, 3, vjp_method="multi-step"),
    "eprop": lambda m: braintrace.EProp(m, kappa_filter_decay=0.5, feedback="random", random_feedback_key=0,
                                        vjp_method="multi-step"),
    "ostl_feedforward": lambda m: braintrace.OSTLFeedforward(m, vjp_method="multi-step"),
    "ostl_recurrent": lambda m: braintrace.OSTLRecurrent(m, vjp_method="multi-step"),
    "snap": lambda m: braintrace.SnAp(m, n=2, vjp_method="multi-step"),
    "uoro": lambda m: braintrace.UORO(m, projection_key=3),
    "dni": braintrace.DNI,  # its default synthesizer predicts zero (see the xfail below)
}

# The one cell per rule that runs by default (the rest are `slow`).
DEFAULT_MODEL = {
    "d_rtrl": None,  # all four cells are in test_windows.py
    "es_d_rtrl": None,
    "pp_prop_rank": "elman",
    "eprop": "gru",
    "ostl_feedforward": "lstm",
    "ostl_recurrent": "elman",
    "snap": "gru",
    "uoro": "lif",
    "dni": "gru",
}

# Cells tested in the rule's own module (same identity, same tolerance).
COVERED_ELSEWHERE = {
    **{("d_rtrl", m): "test_windows.py::test_one_window_over_the_sequence_equals_bptt" for m in MODELS},
    **{("es_d_rtrl", m): "test_windows.py::test_one_window_over_the_sequence_equals_bptt" for m in MODELS},
    **{("uoro", m): "test_uoro.py::test_full_window_is_bptt" for m in ("gru", "lstm", "elman")},
    ("dni", "lstm"): "test_dni.py::test_full_window_is_bptt_with_a_nonzero_synthesizer",
}


def _cells():
    for rule in RULES:
        for model in MODELS:
            marks = []
            if (rule, model) in COVERED_ELSEWHERE:
                marks.append(pytest.mark.skip(reason=f"covered by {COVERED_ELSEWHERE[(rule, model)]}"))
            elif DEFAULT_MODEL[rule] != model:
                marks.append(pytest.mark.slow)
            yield pytest.param(rule, model, marks=marks, id=f"{rule}-{model}")


def _window_grads(learner, xs):
    step_fn = lambda w: jnp.sum(learner(MultiStepData(w)) ** 2, axis=-1)  # noqa: E731
    return learner.etrace_grad(xs, step_fn=step_fn, chunk_size=len(xs), reduction="sum")


@pytest.mark.parametrize("rule, model_name", list(_cells()))
def test_one_window_over_the_sequence_equals_bptt(rule, model_name):
    brainstate.random.seed(11)
    model = MODELS[model_name]()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    with warnings.catch_warnings():  # compile-time diagnostics (e.g. SnAp fallbacks) are not the point here
        warnings.simplefilter("ignore")
        learner = RULES[rule](model)
        learner.compile_graph(xs[0])
    assert learner.options.vjp_method == "multi-step"
    actual = _window_grads(learner, xs)
    norm = max(float(np.max(np.abs(g))) for g in flat(expected).values())
    assert norm > 1e-2, "the model must be live (a non-trivial BPTT gradient)"
    assert set(actual) == set(expected)
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6 * norm)


def test_the_matrix_names_every_rule_and_model():
    # A rule added to the family must be added here (or to the refusals below).
    exported = {"D_RTRL", "ES_D_RTRL", "EProp", "OSTLFeedforward", "OSTLRecurrent", "SnAp", "UORO", "DNI",
                "ThreeFactor"}
    assert exported <= set(braintrace.__all__)
    assert set(DEFAULT_MODEL) == set(RULES)
    for rule in RULES:
        assert DEFAULT_MODEL[rule] is not None or all((rule, m) in COVERED_ELSEWHERE for m in MODELS)


@pytest.mark.xfail(strict=True, reason=(
    "known bug: DNI bootstraps the exit cotangent of every window, also the last one, where nothing "
    "comes after; a non-zero synthesizer then reaches the parameters that are not ETP-routed (GRU's Wr)"))
def test_dni_with_a_nonzero_synthesizer_on_the_last_window():
    from braintrace.algorithms.dni import SyntheticGradient

    brainstate.random.seed(11)
    model = models.gru()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = braintrace.DNI(model)
        learner.compile_graph(xs[0])
    learner.attach_synthesizer(SyntheticGradient(learner.group_signal_shapes, scale=1.0, seed=3))
    actual = _window_grads(learner, xs)
    norm = max(float(np.max(np.abs(g))) for g in flat(expected).values())
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6 * norm)


def test_three_factor_refuses_windows_by_design():
    """Its modulator replaces each step's learning signal; a window has no per-step signal."""
    model = models.gru()
    brainstate.nn.init_all_states(model)
    with pytest.raises(braintrace.NotSupportedError, match="single-step"):
        braintrace.ThreeFactor(model, vjp_method="multi-step")
    # A single-step ThreeFactor is not differentiable through a window either.
    learner = braintrace.ThreeFactor(model, modulator=1.0)
    learner.compile_graph(jnp.zeros(3))
    with pytest.raises((ValueError, braintrace.NotSupportedError), match="multi-step"):
        _window_grads(learner, jnp.ones((T, 3)))
