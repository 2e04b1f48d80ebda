"""Windowed factor pairs (``etrace_grad(gradient_window=...)``) change the summation order only.

The dense per-step weight gradients of plain dense ops are replaced by ``(x, s)`` pairs that
the driver stacks over ``K`` steps and contracts at once (see
``braintrace.algorithms.factored_gradients``). Every gradient must equal the per-step one
(``gradient_window=1``) to float32 round-off, for trace pairs (ES-D-RTRL), same-step pairs
(GRU reset gate, readouts; every rule) and their biases, with a remainder window, a mask,
``has_aux``, ``weights`` subsets; and where the learner is exact, equal BPTT.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.algorithms import factored_gradients
from tests._support import models
from tests._support.oracle import (assert_grads_close, bptt_grads, flat, restore_states, snapshot_states,
                                   squared_loss, windowed_grads)


def _learner(model, algorithm, batch=3, n_in=3, **options):
    return braintrace.compile(model, algorithm, jnp.zeros((batch, n_in)), batch_size=batch, **options)


def _kinds(learner):
    return sorted((f.kind, learner._compiled.layout.param_paths[f.param_slot], f.bias is not None)
                  for f in learner._compiled.factors.factors)


def test_gru_input_cotangents_read_transposed_row_blocks():
    """The reset gate's same-step gradient needs the ``r*h`` part of ``ct @ Whᵀ``; the signal ``ct @ W_outᵀ``."""
    learner = _learner(models.gru(3, 5, 2), "es_d_rtrl", decay_or_rank=0.9)
    plan = learner._compiled.factors
    paths = learner._compiled.layout.param_paths
    blocks = {paths[t.param_slot]: [(start, stop) for _, start, stop in t.parts] for t in plan.transposed}
    assert blocks == {("cell", "Wh", "weight"): [(0, 3), (3, 8)], ("out", "weight"): [(0, 5)]}
    values = plan.transposed_weights(learner._compiled.layout.split(
        [jax.tree.leaves(st.value) for st in learner._current_states()])[0])
    wh = learner.model.cell.Wh.weight.value["weight"]
    np.testing.assert_array_equal(values[[paths[t.param_slot] for t in plan.transposed].index(
        ("cell", "Wh", "weight"))][1], wh[3:8].T)


def test_lstm_gates_share_one_stacked_input():
    learner = _learner(models.lstm(3, 5, 2), "es_d_rtrl", decay_or_rank=0.9)
    groups = learner._compiled.factors.groups()
    trace_groups = [g for g in groups if g[0].kind == "trace"]
    assert len(trace_groups) == 1 and len(trace_groups[0]) == 4
    x_shape, s_shape = [a.shape for a in learner._compiled.factors.zero_sinks()[groups.index(trace_groups[0])]]
    assert x_shape == (3, 8) and s_shape == (3, 20)  # x̄ of [x, h] once; the four gates' s side by side


def test_gru_es_plan_has_trace_and_same_step_pairs():
    learner = _learner(models.gru(3, 5, 2), "es_d_rtrl", decay_or_rank=0.9)
    assert _kinds(learner) == [
        ("same_step", ("cell", "Wr", "weight"), True),
        ("same_step", ("out", "weight"), True),
        ("trace", ("cell", "Wh", "weight"), True),
        ("trace", ("cell", "Wz", "weight"), True),
    ]


@pytest.mark.parametrize("model_fn, algorithm, options", [
    (lambda: models.gru(3, 5, 2), "es_d_rtrl", {"decay_or_rank": 0.9}),
    (lambda: models.lstm(3, 5, 2), "es_d_rtrl", {"decay_or_rank": 0.6}),
    (lambda: models.elman(3, 5, 2), "pp_prop", {"decay_or_rank": 3}),
    (lambda: models.gru(3, 5, 2), "d_rtrl", {}),
    (lambda: models.TwoLayerGRU(3, 4, 5, 2), "eprop", {}),
    (lambda: models.gru(3, 5, 2), "eprop", {"feedback": "random", "random_feedback_key": 0}),
    (lambda: models.gru(3, 5, 2), "ostl_recurrent", {}),
    (lambda: models.gru(3, 5, 2), "ostl_feedforward", {}),
    (lambda: models.gru(3, 5, 2), "uoro", {}),  # multi-step: every call is a window, no pairs
    # Wide enough to stack (the small models' pairs are all narrow, summed per step):
    (lambda: models.gru(20, 24, 2), "es_d_rtrl", {"decay_or_rank": 0.9}),
    (lambda: models.lstm(20, 24, 2), "es_d_rtrl", {"decay_or_rank": 0.6}),
    (lambda: models.gru(20, 24, 2), "d_rtrl", {}),
])
def test_windowed_pairs_equal_per_step_gradients(model_fn, algorithm, options):
    brainstate.random.seed(1)
    model = model_fn()
    n_in = getattr(getattr(model, "cell", None), "in_size", (3,))[-1]
    learner = _learner(model, algorithm, n_in=n_in, **options)
    assert learner._compiled.factors.factors, "the model must have factorable weights"
    xs = brainstate.random.randn(10, 3, n_in)
    dense = windowed_grads(learner, xs, 1)
    # Two windows + a remainder of 2; one window of the whole sequence; a window longer than
    # the sequence (one window of T); five windows of 2 (the carried stacks reused).
    for window in (4, 10, 16, 2):
        windowed = windowed_grads(learner, xs, window)
        assert_grads_close(dense, windowed, rtol=2e-5, atol=1e-6)
    # The pairs are live: zeroing them (a broken contraction) would change every factored weight.
    for f in learner._compiled.factors.factors:
        path = learner._compiled.layout.param_paths[f.param_slot]
        leaf = jax.tree.leaves(dense[path])[f.leaf]
        assert float(jnp.max(jnp.abs(leaf))) > 1e-3, path


@pytest.mark.parametrize("n_in, n_hidden", [(3, 5), (20, 24)])  # narrow pairs only; stacked pairs
def test_mask_aux_return_value_and_weight_subset(n_in, n_hidden):
    brainstate.random.seed(2)
    learner = _learner(models.gru(n_in, n_hidden, 2), "es_d_rtrl", n_in=n_in, decay_or_rank=0.8)
    if n_hidden == 24:  # Wz, Wh and Wr are stacked, the readout summed per step
        plan, _ = factored_gradients.choose_window(learner._compiled.factors, 4, 9)
        assert sum(not now for now in factored_gradients.per_step_groups(plan, 4)) == 3
    xs = brainstate.random.randn(9, 3, n_in)
    mask = jnp.asarray([1, 0, 1, 1, 0.5, 1, 0, 1, 1], jnp.float32)
    subset = [learner.model.cell.Wr.weight, learner.model.cell.Wz.weight]

    def run(window):
        learner.reset_state()
        snap = snapshot_states(learner.model)

        def step(x):
            y = learner(x)
            return squared_loss(y), jnp.sum(y)

        out = brainstate.transform.jit(lambda xs: learner.etrace_grad(
            xs, step_fn=step, mask=mask, weights=subset, return_value=True, has_aux=True,
            gradient_window=window))(xs)
        restore_states(learner.model, snap)
        return out

    (g1, l1, a1), (g4, l4, a4) = run(1), run(4)
    assert set(g1) == set(g4) == {("cell", "Wr", "weight"), ("cell", "Wz", "weight")}
    assert_grads_close(g1, g4, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(l4), np.asarray(l1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(a4), np.asarray(a1), rtol=1e-6)
    assert l4.shape == (9,) and a4.shape == (9,)


def test_exact_learner_with_windowed_pairs_equals_bptt():
    """D-RTRL on a LIF network is exact; its readout and input weight go through pairs."""
    brainstate.random.seed(3)
    model = models.SpikingNet(3, 6, 2)
    learner = _learner(model, "d_rtrl")
    assert any(f.kind == "same_step" for f in learner._compiled.factors.factors)
    xs = brainstate.random.randn(8, 3, 3) * 2.0
    brainstate.nn.init_all_states(model, 3)
    expected = bptt_grads(model, xs)
    got = windowed_grads(learner, xs, 3)
    assert_grads_close(expected, got, rtol=1e-4, atol=1e-5)


def test_es_scale_through_windowed_pairs():
    """The hand-written ES-D-RTRL recursion of test_es_d_rtrl_scale, through the pairs."""
    from tests.algorithms.test_es_d_rtrl_scale import reference_grads

    brainstate.random.seed(0)
    model = models.LeakyRNN(n_in=3, n_hidden=5, n_out=2)
    brainstate.nn.init_all_states(model, 2)
    xs = brainstate.random.randn(5, 2, 3)
    params = {"W": model.W.weight.value["weight"], "b": model.W.weight.value["bias"], "tau": model.tau.value,
              "W_out": model.out.weight.value["weight"], "b_out": model.out.weight.value["bias"]}
    learner = braintrace.ES_D_RTRL(model, decay_or_rank=0.6)
    learner.compile_graph(xs[0])
    assert any(f.kind == "trace" for f in learner._compiled.factors.factors)
    got = learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), reduction="sum", gradient_window=2)
    expected = reference_grads(params, xs, 0.6)
    np.testing.assert_allclose(got[("W", "weight")]["weight"], expected["W"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[("W", "weight")]["bias"], expected["b"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[("out", "weight")]["weight"], expected["W_out"], rtol=1e-5, atol=1e-6)


def test_auto_window_is_memory_bounded():
    """'auto' stacks a pair over K steps only when K·B·(I + O) <= I·O and K >= 8."""
    learner = _learner(models.gru(32, 256, 8), "es_d_rtrl", batch=16, n_in=32, decay_or_rank=0.9)
    paths = learner._compiled.layout.param_paths
    windows = {tuple(paths[f.param_slot][1] for f in g): factored_gradients.memory_neutral_window(g)
               for g in learner._compiled.factors.groups()}
    # Wz reads [x, h] and Wh [x, r*h]: no shared x̄, each 288·256 // (16·544) = 8 (and Wr's
    # same-step pair); the 256→8 readout is not worth stacking.
    assert windows == {("Wz",): 8, ("Wh",): 8, ("Wr",): 8, ("weight",): 0}
    plan, k = factored_gradients.choose_window(learner._compiled.factors, "auto", 200)
    # Wz, Wh, Wr stacked over 8 steps; the narrow readout (8 outputs) summed at every step.
    assert k == 8 and len(plan.factors) == 4
    assert factored_gradients.per_step_groups(plan, k) == tuple(
        paths[g[0].param_slot][1] == "weight" for g in plan.groups())
    # K=8 and a remainder window where 8 does not divide T; shorter sequences: one window.
    assert factored_gradients.choose_window(learner._compiled.factors, "auto", 100)[1] == 8
    assert factored_gradients.choose_window(learner._compiled.factors, "auto", 99)[1] == 8
    assert factored_gradients.choose_window(learner._compiled.factors, "auto", 5)[1] == 5
    # Batch 1: 288·256 // 544 = 135, capped at MAX_WINDOW (16), whatever T (no shorter divisor).
    single = _learner(models.gru(32, 256, 8), "es_d_rtrl", batch=1, n_in=32, decay_or_rank=0.9)
    wide = [g for g in single._compiled.factors.groups() if g[0].x_shape[-1] == 288]
    assert [factored_gradients.memory_neutral_window(g) for g in wide] == [16, 16, 16]
    assert [factored_gradients.choose_window(single._compiled.factors, "auto", t)[1] for t in (160, 200, 99, 12)] == [
        16, 16, 16, 12]
    # A window of 7 (Elman 16→24 at batch 2: 40·24 // (2·64)) is below MIN_AUTO_WINDOW: per step.
    seven = _learner(models.elman(16, 24, 2), "es_d_rtrl", batch=2, n_in=16, decay_or_rank=0.9)
    (group,) = [g for g in seven._compiled.factors.groups() if g[0].x_shape[-1] == 40]
    assert factored_gradients.memory_neutral_window(group) == 7
    assert factored_gradients.choose_window(seven._compiled.factors, "auto", 200)[1] == 1
    tiny = _learner(models.gru(3, 5, 2), "es_d_rtrl", decay_or_rank=0.9)
    assert factored_gradients.choose_window(tiny._compiled.factors, "auto", 50)[1] == 1
    # The memory benchmark's Elman 32→128: 160·128 // (16·288) = 4 < MIN_AUTO_WINDOW (8),
    # so 'auto' keeps one product per step there (K=4 bought 14% for 34% more memory).
    small = _learner(models.elman(32, 128, 4), "es_d_rtrl", batch=16, n_in=32, decay_or_rank=0.9)
    (group,) = [g for g in small._compiled.factors.groups() if g[0].x_shape[-1] == 160]
    assert factored_gradients.memory_neutral_window(group) == 4
    assert factored_gradients.choose_window(small._compiled.factors, "auto", 200)[1] == 1


def test_auto_window_with_per_step_narrow_pairs_equals_per_step_gradients():
    """'auto' on a GRU 32→256→8: three stacked pairs and the readout's pair summed per step
    (broadcast multiply-adds instead of the dot); every gradient equals one product per step."""
    learner = _learner(models.gru(32, 256, 8), "es_d_rtrl", batch=16, n_in=32, decay_or_rank=0.9)
    xs = jax.random.normal(jax.random.PRNGKey(3), (21, 16, 32))  # K=8: two windows, a remainder of 5
    expected = flat(windowed_grads(learner, xs, 1))
    got = flat(windowed_grads(learner, xs, "auto"))
    assert set(got) == set(expected)
    for key in expected:
        scale = float(jnp.max(jnp.abs(expected[key])))
        assert scale > 0, key
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6 * scale, err_msg=str(key))


def test_stacked_pairs_memory_is_bounded_and_flat_in_length():
    """The windowed path adds its stacked pairs and one transposed weight copy, less a product.

    Measured (GRU 32→256→8, batch 16, T=200, temp + output bytes): 1,676,636 per step;
    2,359,988 with K=4 when the three window products ran side by side (each with its own
    288×256 temporary); 2,098,612 with them run one after another (``add_window``); 2,524,636
    with K=8 ('auto' since the stacks may take the dense gradients' memory); 2,794,212 with
    the reset gate's product deferred to the window (its stacked ``ct`` and the window's
    ``ct · Whᵀ`` temporary, 131 KB each). The K=8 stacks are 836 KB, the transposed row blocks
    303 KB (``Whᵀ`` for the reset gate's same-step gradient, the readout's ``Wᵀ`` for the
    learning signal). The same at T=1000.
    """
    learner = _learner(models.gru(32, 256, 8), "es_d_rtrl", batch=16, n_in=32, decay_or_rank=0.9)

    def memory(window, length=200):
        learner.reset_state()
        xs = jax.ShapeDtypeStruct((length, 16, 32), jnp.float32)
        fn = lambda xs: learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)),  # noqa: E731
                                            gradient_window=window)
        stats = brainstate.transform.jit(fn).lower(xs).compile().memory_analysis()
        return stats.temp_size_in_bytes + stats.output_size_in_bytes

    plan = learner._compiled.factors
    transposed = sum((stop - start) * t.w_var.aval.shape[1] * 4 for t in plan.transposed for _, start, stop in t.parts)
    assert transposed == (288 * 256 + 256 * 8) * 4
    stacks = 8 * 16 * 3 * (288 + 256) * 4
    deferred = 2 * 8 * 16 * 256 * 4  # the reset gate's stacked ct and its window product
    assert [f.deferral is not None for f in plan.factors] == [False, False, True, False]
    one_product = 288 * 256 * 4
    # Sequential window products: at least one product temporary fewer than stacks +
    # transposed copies would add (side by side they exceeded this by ~260 KB).
    assert memory("auto") <= memory(1) + stacks + deferred + transposed - one_product + 64 * 1024
    assert memory("auto", 1000) <= memory("auto", 200) * 1.05 + 4096


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8"])
def test_bad_window_is_refused(bad):
    learner = _learner(models.elman(3, 5, 2), "es_d_rtrl", decay_or_rank=0.9)
    with pytest.raises(ValueError, match="gradient_window"):
        learner.etrace_grad(jnp.ones((4, 3, 3)), step_fn=lambda x: squared_loss(learner(x)), gradient_window=bad)
