"""EProp: κ = 0 with symmetric feedback is D-RTRL; the κ filter and the random feedback
equal hand-written plain-JAX recursions; options are validated; it learns; compile() builds it."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import ETraceConfig
from braintrace.algorithms.eprop import FixedRandomFeedback, KappaFilter
from tests._support import models
from tests._support.oracle import bptt_grads, flat, online_grads, restore_states, snapshot_states
from tests._support.tasks import train

T = 6


def _rel(a, b) -> float:
    """Max over leaves of ``‖a - b‖ / ‖b‖``."""
    fa, fb = flat(a), flat(b)
    return max(float(np.linalg.norm(fa[p] - fb[p]) / (np.linalg.norm(fb[p]) + 1e-30)) for p in fb)


def _grads(model, xs, cls, **options):
    """Online gradients of ``Σ_t Σ out_t²`` from the model's current states (restored after)."""
    snap = snapshot_states(model)
    learner = cls(model, **options)
    learner.compile_graph(xs[0])
    grads = online_grads(learner, xs)
    restore_states(model, snap)
    return grads, learner


@pytest.mark.parametrize("name", ["gru", "leaky"])
def test_kappa_zero_symmetric_equals_d_rtrl(name):
    brainstate.random.seed(0)
    model = models.gru(3, 5, 2) if name == "gru" else models.LeakyRNN(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    expected, _ = _grads(model, xs, braintrace.D_RTRL)
    actual, learner = _grads(model, xs, braintrace.EProp, kappa_filter_decay=0.0, feedback="symmetric")
    assert learner.etrace.value.filtered == {}, "κ = 0 keeps no filter state"
    for path in expected:
        np.testing.assert_allclose(flat(actual)[path], flat(expected)[path], rtol=1e-6, atol=0, err_msg=str(path))


# ----------------------------------------------------------------------------------------
# A plain-JAX reference on the leaky element-wise RNN
#   h_t = a ⊙ h_{t-1} + tanh(x_t W + b),  a = sigmoid(τ),  out_t = h_t W_o + b_o,  L_t = Σ out_t²
# where the D-RTRL traces are ε^W_t = a ε^W_{t-1} + x_t ⊗ (1 - tanh²(y_t)) (likewise for b) and
# ε^a_t = a ε^a_{t-1} + h_{t-1}; e-prop contracts ē_t = κ ē_{t-1} + ε_t with L'_t = (∂L_t/∂h_t)·B.
# ----------------------------------------------------------------------------------------
def reference_leaky(model, xs, kappa, feedback=None):
    w, b = model.W.weight.value["weight"], model.W.weight.value["bias"]
    tau = model.tau.value
    wo, bo = model.out.weight.value["weight"], model.out.weight.value["bias"]
    a = jax.nn.sigmoid(tau)
    n = a.shape[0]
    h = jnp.zeros(n)
    eps_w, eps_b, eps_a = jnp.zeros_like(w), jnp.zeros(n), jnp.zeros(n)
    bar_w, bar_b, bar_a = jnp.zeros_like(w), jnp.zeros(n), jnp.zeros(n)
    g = {"w": jnp.zeros_like(w), "b": jnp.zeros(n), "tau": jnp.zeros(n), "wo": jnp.zeros_like(wo),
         "bo": jnp.zeros_like(bo)}
    for x in xs:
        y = x @ w + b
        h_prev, h = h, a * h + jnp.tanh(y)
        out = h @ wo + bo
        df = 1.0 - jnp.tanh(y) ** 2
        eps_w = a * eps_w + jnp.outer(x, df)
        eps_b = a * eps_b + df
        eps_a = a * eps_a + h_prev
        bar_w, bar_b, bar_a = kappa * bar_w + eps_w, kappa * bar_b + eps_b, kappa * bar_a + eps_a
        signal = 2.0 * out @ wo.T  # ∂L_t/∂h_t
        if feedback is not None:
            signal = signal @ feedback
        g["w"] += bar_w * signal[None, :]
        g["b"] += bar_b * signal
        g["tau"] += bar_a * signal * a * (1.0 - a)
        g["wo"] += jnp.outer(h, 2.0 * out)  # the readout's exact same-step gradient
        g["bo"] += 2.0 * out
    return {("W", "weight"): np.concatenate([np.ravel(g["b"]), np.ravel(g["w"])]), ("tau",): np.asarray(g["tau"]),
            ("out", "weight"): np.concatenate([np.ravel(g["bo"]), np.ravel(g["wo"])])}


def _leaky(seed=1):
    brainstate.random.seed(seed)
    model = models.LeakyRNN(3, 5, 2)
    brainstate.nn.init_all_states(model)
    return model, brainstate.random.randn(T, 3)


def _assert_matches(reference, actual, rtol=1e-5):
    actual = flat(actual)
    for path, expected in reference.items():
        np.testing.assert_allclose(actual[path], expected, rtol=rtol, atol=1e-6 * np.max(np.abs(expected)),
                                   err_msg=str(path))


def test_kappa_filter_equals_hand_written_recursion():
    model, xs = _leaky()
    actual, _ = _grads(model, xs, braintrace.EProp, kappa_filter_decay=0.6)
    _assert_matches(reference_leaky(model, xs, kappa=0.6), actual)
    # The reference at κ = 0 is BPTT on this model (D-RTRL is exact here): a sanity anchor.
    _assert_matches(reference_leaky(model, xs, kappa=0.0), bptt_grads(model, xs), rtol=1e-4)


def test_kappa_changes_the_gradient():
    """Fails if the filter were skipped (κ → D-RTRL) or applied twice (κ → 2κ-like)."""
    model, xs = _leaky()
    d_rtrl, _ = _grads(model, xs, braintrace.D_RTRL)
    k3, _ = _grads(model, xs, braintrace.EProp, kappa_filter_decay=0.3)
    k6, _ = _grads(model, xs, braintrace.EProp, kappa_filter_decay=0.6)
    assert _rel(k3, d_rtrl) > 1e-2 and _rel(k6, k3) > 1e-2
    # The single filter, as the reference pins it (a double filter would differ by O(κ)).
    ref = reference_leaky(model, xs, kappa=0.6)
    assert np.linalg.norm(flat(k6)[("W", "weight")] - ref[("W", "weight")]) < 1e-4 * np.linalg.norm(ref[("W", "weight")])
    # Readout weights have no trace: κ leaves their exact same-step gradient unchanged.
    np.testing.assert_allclose(flat(k6)[("out", "weight")], flat(d_rtrl)[("out", "weight")], rtol=1e-6)


def test_random_feedback_equals_hand_written_projection():
    model, xs = _leaky()
    actual, learner = _grads(model, xs, braintrace.EProp, feedback="random", random_feedback_key=7,
                             kappa_filter_decay=0.5)
    (fb,) = learner.feedback_matrices
    # The documented recipe: a square N×N matrix per group from fold_in(key, group index).
    independent = FixedRandomFeedback(5, 5, jax.random.fold_in(jax.random.PRNGKey(7), 0), init_scale=0.1)
    np.testing.assert_array_equal(np.asarray(fb.matrix), np.asarray(independent.matrix))
    assert fb.matrix.shape == (5, 5)
    _assert_matches(reference_leaky(model, xs, kappa=0.5, feedback=fb.matrix), actual)


def test_random_feedback_is_deterministic_and_differs_from_symmetric():
    model, xs = _leaky()
    a, _ = _grads(model, xs, braintrace.EProp, feedback="random", random_feedback_key=3)
    b, _ = _grads(model, xs, braintrace.EProp, feedback="random_feedback", random_feedback_key=jax.random.PRNGKey(3))
    c, _ = _grads(model, xs, braintrace.EProp, feedback="random", random_feedback_key=4)
    sym, _ = _grads(model, xs, braintrace.EProp)
    for path in flat(a):
        np.testing.assert_array_equal(flat(a)[path], flat(b)[path])
    assert np.linalg.norm(flat(a)[("W", "weight")] - flat(sym)[("W", "weight")]) > 1e-3 * np.linalg.norm(
        flat(sym)[("W", "weight")])
    assert not np.allclose(flat(a)[("W", "weight")], flat(c)[("W", "weight")])


def test_one_window_equals_bptt_with_filter_and_random_feedback():
    """Multi-step windows are supported: the full window has zero traces at entry, so it is BPTT."""
    model, xs = _leaky()
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    learner = braintrace.EProp(model, kappa_filter_decay=0.5, feedback="random", random_feedback_key=0,
                               vjp_method="multi-step")
    learner.compile_graph(xs[0])
    step_fn = lambda x: jnp.sum(learner(braintrace.MultiStepData(x)) ** 2, axis=-1)  # noqa: E731
    actual = learner.etrace_grad(xs, step_fn=step_fn, chunk_size=T, reduction="sum")
    for path in expected:
        np.testing.assert_allclose(flat(actual)[path], flat(expected)[path], rtol=1e-4, atol=1e-6)
    # Finite windows expose the filtered trace: κ changes the chunked gradient.
    chunked = {}
    for kappa in (0.0, 0.5):
        restore_states(model, snap)
        lrn = braintrace.EProp(model, kappa_filter_decay=kappa, vjp_method="multi-step")
        lrn.compile_graph(xs[0])
        fn = lambda x, lrn=lrn: jnp.sum(lrn(braintrace.MultiStepData(x)) ** 2, axis=-1)  # noqa: E731
        chunked[kappa] = lrn.etrace_grad(xs, step_fn=fn, chunk_size=2, reduction="sum")
    assert _rel(chunked[0.5], chunked[0.0]) > 1e-3


@pytest.mark.parametrize("options, match", [
    ({"feedback": "random"}, "random_feedback_key"),
    ({"feedback": "random_feedback", "random_feedback_key": None}, "random_feedback_key"),
    ({"kappa_filter_decay": 1.0}, r"\[0, 1\)"),
    ({"kappa_filter_decay": -0.1}, r"\[0, 1\)"),
    ({"kappa_filter_decay": True}, r"\[0, 1\)"),
    ({"feedback": "sign"}, "feedback"),
])
def test_invalid_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        braintrace.EProp(braintrace.nn.GRUCell(3, 4), **options)


def test_helpers():
    f = KappaFilter(jnp.zeros(3), 0.5)
    for _ in range(3):
        value = f.update(jnp.ones(3))
    np.testing.assert_allclose(value, 1.75)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        KappaFilter(jnp.zeros(3), 1.5)
    fb = FixedRandomFeedback(3, 2, key=0, init_scale=0.5)
    np.testing.assert_allclose(fb.project(jnp.eye(3)), fb.matrix)
    with pytest.raises(ValueError, match="n_target"):
        fb.project(jnp.ones(4))
    with pytest.raises(TypeError, match="PRNG key"):
        FixedRandomFeedback(3, 2, key="seed")


def test_compile_by_name_and_by_config():
    x = jnp.ones((2, 3))
    by_name = braintrace.compile(braintrace.nn.GRUCell(3, 4), "eprop", x, batch_size=2, kappa_filter_decay=0.4)
    assert type(by_name) is braintrace.EProp and by_name.kappa == 0.4
    assert by_name(x).shape == (2, 4)
    config = ETraceConfig(trace_filter="kappa", kappa=0.6, learning_signal="random_feedback")
    by_config = braintrace.compile(braintrace.nn.GRUCell(3, 4), config, x, batch_size=2, random_feedback_key=1)
    assert type(by_config) is braintrace.EProp
    assert (by_config.kappa, by_config.feedback) == (0.6, "random")
    grads = by_config.etrace_grad(jnp.ones((4, 2, 3)), step_fn=lambda x: jnp.sum(by_config(x) ** 2))
    assert float(jnp.abs(grads[("Wz", "weight")]["weight"]).sum()) > 0
    with pytest.raises(ValueError, match="random_feedback_key"):
        braintrace.compile(braintrace.nn.GRUCell(3, 4), config, x, batch_size=2)


@pytest.mark.parametrize("options", [{"kappa_filter_decay": 0.5},
                                     {"feedback": "random", "random_feedback_key": 1}])
def test_eprop_lowers_the_loss(options):
    first, last = train("eprop", steps=40, **options)
    assert last < 0.9 * first, f"EProp {options} did not learn: {first:.3f} -> {last:.3f}"
