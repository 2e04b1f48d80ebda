"""Multi-step windows: the full-window identity, a hand-computed window reference, errors.

In a window ``[t0, t1]`` the gradient is exact reverse mode through the window's steps with
``h^{t0-1}`` fixed, plus ``Σ_g <∂L_window/∂h^{t0-1}_g, ε^{t0-1}_g>`` (reference-behaviour
§3.2). One window over the whole sequence has zero traces at entry, so it is BPTT.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace import MultiStepData, SingleStepData
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states

T = 6


def window_loss(learner):
    """Per-step squared loss of a window call: a ``(k,)`` vector."""
    return lambda xs: jnp.sum(learner(MultiStepData(xs)) ** 2, axis=-1)


def windowed_grads(learner, xs, chunk_size):
    return learner.etrace_grad(xs, step_fn=window_loss(learner), chunk_size=chunk_size, reduction="sum")


def single_step_grads(learner, xs):
    return learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")


def relative_deviation(expected, actual) -> float:
    e, a = flat(expected), flat(actual)
    num = np.sqrt(sum(np.sum((a[p] - e[p]) ** 2) for p in e))
    den = np.sqrt(sum(np.sum(e[p] ** 2) for p in e))
    return float(num / den)


# ----------------------------------------------------------------------------------------
# The full-window identity
# ----------------------------------------------------------------------------------------
MODELS = {
    "gru": models.gru,
    "lstm": models.lstm,
    "elman": models.elman,
    "lif": lambda: models.SpikingNet(neuron="lif"),
}
ENGINES = {
    "d_rtrl": (braintrace.D_RTRL, {}),
    "es_d_rtrl": (braintrace.ES_D_RTRL, {"decay_or_rank": 0.9}),
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_window_over_the_sequence_equals_bptt(name, engine):
    brainstate.random.seed(11)
    model = MODELS[name]()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    cls, options = ENGINES[engine]
    learner = cls(model, vjp_method="multi-step", **options)
    learner.compile_graph(xs[0])
    actual = windowed_grads(learner, xs, chunk_size=T)
    norm = max(float(np.max(np.abs(g))) for g in flat(expected).values())
    assert norm > 1e-2, "the model must be live (a non-trivial BPTT gradient)"
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6 * norm)
    # The single-step rule is not exact on these models: the identity is the window's.
    restore_states(model, snap)
    online = cls(model, **options)
    online.compile_graph(xs[0])
    if name != "lif" or engine != "d_rtrl":  # D-RTRL is exact on the element-wise LIF
        assert relative_deviation(expected, single_step_grads(online, xs)) > 1e-3


# ----------------------------------------------------------------------------------------
# Finite windows against a hand-written reference of the identity
# ----------------------------------------------------------------------------------------
LEAK = 0.5


class LeakyRecurrent(brainstate.nn.Module):
    """``h = 0.5 h + tanh(W x + U h)`` with a readout: D-RTRL is not exact (U mixes positions)."""

    def __init__(self, n_in=2, n_hidden=3, n_out=2):
        super().__init__()
        self.n_hidden = n_hidden
        self.W = bnn.Linear(n_in, n_hidden)
        self.U = bnn.Linear(n_hidden, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n_hidden))

    def update(self, x):
        self.h.value = LEAK * self.h.value + jnp.tanh(self.W(x) + self.U(self.h.value))
        return self.out(self.h.value)


def _plain_params(model):
    return {name: {k: jnp.asarray(v) for k, v in getattr(model, name).weight.value.items()}
            for name in ("W", "U", "out")}


def reference_window_grads(params, xs, chunk_size):
    """The window identity written in plain JAX, with independently written D-RTRL traces.

    Per window: ``jax.grad`` of the window loss w.r.t. the parameters and the entry hidden
    state ``h0`` (unrolled steps), plus ``Σ_o ∂L/∂h0_o · ε[..., o]`` for W and U (weight
    and bias), whose traces follow ``ε ← 0.5 ε + (1 - tanh(y)²) ⊗ input``.
    """

    def step(p, h, x):
        pre = x @ p["W"]["weight"] + p["W"]["bias"] + h @ p["U"]["weight"] + p["U"]["bias"]
        h_new = LEAK * h + jnp.tanh(pre)
        return h_new, h_new @ p["out"]["weight"] + p["out"]["bias"], pre

    def window_loss(p, h0, window):
        total, h = 0.0, h0
        for x in window:
            h, y, _ = step(p, h, x)
            total = total + jnp.sum(y ** 2)
        return total

    n_hidden = params["U"]["weight"].shape[0]
    traces = {"W": {"weight": jnp.zeros_like(params["W"]["weight"]), "bias": jnp.zeros(n_hidden)},
              "U": {"weight": jnp.zeros_like(params["U"]["weight"]), "bias": jnp.zeros(n_hidden)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    trace_part = jax.tree.map(jnp.zeros_like, params)
    h = jnp.zeros(n_hidden)
    for start in range(0, len(xs), chunk_size):
        window = xs[start:start + chunk_size]
        g_params, g_h0 = jax.grad(window_loss, argnums=(0, 1))(params, h, window)
        grads = jax.tree.map(jnp.add, grads, g_params)
        for name in ("W", "U"):
            for leaf in ("weight", "bias"):
                term = g_h0 * traces[name][leaf]  # broadcast over the input axis of the weight
                grads[name][leaf] = grads[name][leaf] + term
                trace_part[name][leaf] = trace_part[name][leaf] + term
        for x in window:  # advance the traces (and h) over the window
            h_new, _, pre = step(params, h, x)
            df = 1.0 - jnp.tanh(pre) ** 2
            traces["W"] = {"weight": LEAK * traces["W"]["weight"] + x[:, None] * df,
                           "bias": LEAK * traces["W"]["bias"] + df}
            traces["U"] = {"weight": LEAK * traces["U"]["weight"] + h[:, None] * df,
                           "bias": LEAK * traces["U"]["bias"] + df}
            h = h_new
    return grads, trace_part


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_finite_windows_equal_the_hand_written_identity(chunk_size):
    brainstate.random.seed(5)
    model = LeakyRecurrent()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 2)
    params = _plain_params(model)
    snap = snapshot_states(model)
    bptt = bptt_grads(model, xs)
    restore_states(model, snap)
    online = braintrace.D_RTRL(model)
    online.compile_graph(xs[0])
    single = single_step_grads(online, xs)
    restore_states(model, snap)

    learner = braintrace.D_RTRL(model, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    if chunk_size == 1:  # a plain input to a multi-step learner is a window of one step
        actual = single_step_grads(learner, xs)
    else:
        actual = windowed_grads(learner, xs, chunk_size)
    reference, trace_part = reference_window_grads(params, xs, chunk_size)
    expected = {(name, "weight"): g for name, g in reference.items()}
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6)
    # The entry-trace term is a sizable part of the gradient, so its scale is pinned.
    share = relative_deviation(expected, {(n, "weight"): jax.tree.map(jnp.subtract, reference[n], trace_part[n])
                                          for n in reference})
    assert share > 0.05
    # ...and finite windows are neither BPTT nor the single-step rule.
    assert relative_deviation(bptt, actual) > 1e-2
    assert relative_deviation(single, actual) > 1e-2


# ----------------------------------------------------------------------------------------
# Forward consistency, wrappers, chunk_size=1
# ----------------------------------------------------------------------------------------
def _compiled(vjp_method="single-step", seed=3, **options):
    brainstate.random.seed(seed)
    model = models.gru()
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model, vjp_method=vjp_method, **options)
    learner.compile_graph(jnp.zeros(3))
    return model, learner


def test_evolve_in_windows_advances_states_and_traces_like_single_steps():
    xs = brainstate.random.RandomState(0).uniform(0.0, 1.0, (T, 3))
    model_a, stepped = _compiled()
    out_a = stepped.etrace_evolve(xs, return_outputs=True)
    model_b, windowed = _compiled()  # a single-step learner: the window forward is allowed
    out_b = windowed.etrace_evolve(xs, chunk_size=3, return_outputs=True)
    assert out_b.shape == (2, 3, 2)
    np.testing.assert_allclose(np.reshape(out_b, out_a.shape), out_a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model_b.cell.h.value, model_a.cell.h.value, rtol=1e-6, atol=1e-7)
    for key, trace in stepped.etrace.value.items():
        for name in trace:
            np.testing.assert_allclose(windowed.etrace.value[key][name], trace[name], rtol=1e-5, atol=1e-7)
    # running_index counts update() calls (one per window), as in the published behaviour.
    assert int(stepped.running_index.value) == T and int(windowed.running_index.value) == 2


def test_chunk_size_one_is_none():
    xs = brainstate.random.RandomState(1).uniform(0.0, 1.0, (T, 3))
    _, a = _compiled()
    _, b = _compiled()
    step_fn_a = lambda x: jnp.sum(a(x) ** 2)  # noqa: E731
    step_fn_b = lambda x: jnp.sum(b(x) ** 2)  # noqa: E731
    ga = a.etrace_grad(xs, step_fn=step_fn_a)
    gb = b.etrace_grad(xs, step_fn=step_fn_b, chunk_size=1)
    assert_grads_close(ga, gb, rtol=0, atol=0)


def test_single_step_data_is_repeated_over_the_window():
    class TwoInputs(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = bnn.Linear(2, 3)
            self.C = bnn.Linear(1, 3)

        def init_state(self, batch_size=None, **kwargs):
            self.h = brainstate.HiddenState(jnp.zeros(3))

        def update(self, x, c):
            self.h.value = 0.8 * self.h.value + jnp.tanh(self.W(x) + self.C(c))
            return self.h.value

    def run(wrap_context):
        brainstate.random.seed(2)
        model = TwoInputs()
        brainstate.nn.init_all_states(model)
        learner = braintrace.D_RTRL(model, vjp_method="multi-step")
        learner.compile_graph(jnp.zeros(2), jnp.zeros(1))
        xs, c = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2), jnp.array([0.7])
        context = SingleStepData(c) if wrap_context else MultiStepData(jnp.broadcast_to(c, (4, 1)))

        def loss():
            return jnp.sum(learner(MultiStepData(xs), context) ** 2)

        return brainstate.transform.grad(loss, grad_states=learner.param_states)()

    assert_grads_close(run(False), run(True), rtol=1e-6, atol=1e-7)


def test_wrappers_are_pytrees():
    for cls in (SingleStepData, MultiStepData):
        leaves, treedef = jax.tree.flatten(cls({"a": jnp.ones(2), "b": jnp.zeros(3)}))
        assert len(leaves) == 2
        rebuilt = jax.tree.unflatten(treedef, leaves)
        assert type(rebuilt) is cls and set(rebuilt.data) == {"a", "b"}
        assert repr(rebuilt).startswith(cls.__name__)
    with pytest.raises(TypeError, match="already wrapped"):
        MultiStepData(SingleStepData(jnp.ones(2)))


def test_compile_graph_strips_a_window_to_its_first_step():
    brainstate.random.seed(4)
    model = models.gru()
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model, vjp_method="multi-step")
    learner.compile_graph(MultiStepData(jnp.ones((5, 3))))
    assert learner(jnp.ones(3)).shape == (2,)
    assert learner(MultiStepData(jnp.ones((4, 3)))).shape == (4, 2)


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------
def test_chunk_size_must_divide_the_length():
    _, learner = _compiled("multi-step")
    with pytest.raises(ValueError, match=r"chunk_size=4.*T=6"):
        windowed_grads(learner, jnp.ones((T, 3)), 4)
    with pytest.raises(ValueError, match=r"chunk_size=4.*T=6"):
        learner.etrace_evolve(jnp.ones((T, 3)), chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        windowed_grads(learner, jnp.ones((T, 3)), 0)


def test_windows_need_a_multi_step_learner():
    _, learner = _compiled("single-step")
    with pytest.raises(ValueError, match="vjp_method='multi-step'"):
        windowed_grads(learner, jnp.ones((T, 3)), 2)

    def loss():  # differentiating a single-step learner through a window directly
        return jnp.sum(learner(MultiStepData(jnp.ones((2, 3)))) ** 2)

    with pytest.raises(ValueError, match="vjp_method='multi-step'"):
        brainstate.transform.grad(loss, grad_states=learner.param_states)()


def test_windows_are_refused_on_vmapped_learners():
    with pytest.raises(braintrace.NotSupportedError, match="vmap"):
        braintrace.compile(braintrace.nn.GRUCell(3, 4), "d_rtrl", jnp.ones((2, 3)), batch_size=2, vmap=True,
                           vjp_method="multi-step")
    lanes = braintrace.compile(braintrace.nn.GRUCell(3, 4), "d_rtrl", jnp.ones((2, 3)), batch_size=2, vmap=True)
    with pytest.raises(braintrace.NotSupportedError, match="vmap"):
        lanes.etrace_evolve(jnp.ones((T, 2, 3)), chunk_size=2)
    with pytest.raises(braintrace.NotSupportedError, match="vmap"):
        lanes(MultiStepData(jnp.ones((2, 2, 3))))


def test_window_input_errors():
    _, learner = _compiled("multi-step")
    with pytest.raises(TypeError, match="MultiStepData"):
        learner.etrace_grad(MultiStepData(jnp.ones((T, 3))), step_fn=window_loss(learner), chunk_size=2)
    with pytest.raises(ValueError, match=r"\(2,\) vector"):
        learner.etrace_grad(jnp.ones((T, 3)), step_fn=lambda xs: learner(MultiStepData(xs)), chunk_size=2)
    with pytest.raises(ValueError, match="mask"):
        learner.etrace_grad(jnp.ones((T, 3)), step_fn=lambda xs: jnp.sum(learner(MultiStepData(xs)) ** 2),
                            chunk_size=2, mask=jnp.ones(T))
    with pytest.raises(ValueError, match="shape"):
        learner(MultiStepData(jnp.ones((2, 4))))


def test_windowed_mask_and_losses():
    xs = brainstate.random.RandomState(6).uniform(0.0, 1.0, (T, 3))
    mask = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    _, learner = _compiled("multi-step")
    grads, losses = learner.etrace_grad(xs, step_fn=window_loss(learner), chunk_size=2, mask=mask,
                                        reduction="sum", return_value=True)
    assert losses.shape == (T,)
    # The mask weights each step of a window: the same as weighting the loss vector itself.
    _, other = _compiled("multi-step")
    grads_b = other.etrace_grad(xs, mask, step_fn=lambda w, m: m * window_loss(other)(w), chunk_size=2,
                                reduction="sum")
    assert_grads_close(grads, grads_b, rtol=1e-6, atol=1e-7)
    _, unmasked = _compiled("multi-step")
    full = unmasked.etrace_grad(xs, step_fn=window_loss(unmasked), chunk_size=2, reduction="sum")
    assert relative_deviation(full, grads) > 1e-3


def reference_pp_prop_window_grads(params, xs, chunk_size, alpha, correction_by_steps=False):
    """The window identity with independently written pp-prop traces for ``LeakyRecurrent``.

    ``x̄ ← α x̄ + x`` per op input (``x`` for W, ``h^{t-1}`` for U), ``ε_f ← α·0.5·ε_f +
    (1 - α)(1 - tanh(y)²)``; at the entry of window ``w`` the contribution is ``x̄ ⊗ s`` and
    ``s`` for the bias, with ``s = ε_f ⊙ ∂L/∂h0 / (1 - α^(w+1))``: the bias correction counts
    learner calls (one per window), as published. ``correction_by_steps`` gives the
    plausible alternative ``1 - α^(t0)`` (steps), which must not match.
    """

    def step(p, h, x):
        pre = x @ p["W"]["weight"] + p["W"]["bias"] + h @ p["U"]["weight"] + p["U"]["bias"]
        h_new = LEAK * h + jnp.tanh(pre)
        return h_new, h_new @ p["out"]["weight"] + p["out"]["bias"], pre

    def window_loss(p, h0, window):
        total, h = 0.0, h0
        for x in window:
            h, y, _ = step(p, h, x)
            total = total + jnp.sum(y ** 2)
        return total

    n_hidden = params["U"]["weight"].shape[0]
    x_bar = {"W": jnp.zeros(xs.shape[1]), "U": jnp.zeros(n_hidden)}
    eps_f = jnp.zeros(n_hidden)
    grads = jax.tree.map(jnp.zeros_like, params)
    h = jnp.zeros(n_hidden)
    for w, start in enumerate(range(0, len(xs), chunk_size)):
        window = xs[start:start + chunk_size]
        g_params, g_h0 = jax.grad(window_loss, argnums=(0, 1))(params, h, window)
        grads = jax.tree.map(jnp.add, grads, g_params)
        power = start if correction_by_steps else w + 1
        correction = max(1.0 - alpha ** power, 1e-8)
        s = eps_f * g_h0 / correction
        for name in ("W", "U"):
            grads[name]["weight"] = grads[name]["weight"] + x_bar[name][:, None] * s
            grads[name]["bias"] = grads[name]["bias"] + s
        for x in window:
            h_new, _, pre = step(params, h, x)
            x_bar = {"W": alpha * x_bar["W"] + x, "U": alpha * x_bar["U"] + h}
            eps_f = alpha * LEAK * eps_f + (1.0 - alpha) * (1.0 - jnp.tanh(pre) ** 2)
            h = h_new
    return grads


def test_pp_prop_windows_equal_the_hand_written_identity():
    alpha, chunk_size = 0.6, 2
    brainstate.random.seed(8)
    model = LeakyRecurrent()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 2)
    params = _plain_params(model)
    learner = braintrace.ES_D_RTRL(model, alpha, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    actual = windowed_grads(learner, xs, chunk_size)
    expected = {(n, "weight"): g for n, g in reference_pp_prop_window_grads(params, xs, chunk_size, alpha).items()}
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6)
    by_steps = {(n, "weight"): g for n, g in
                reference_pp_prop_window_grads(params, xs, chunk_size, alpha, correction_by_steps=True).items()}
    assert relative_deviation(by_steps, actual) > 1e-3


def test_batched_windows_under_jit_equal_bptt():
    brainstate.random.seed(9)
    model = models.gru()
    brainstate.nn.init_all_states(model, 2)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 2, 3))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.ES_D_RTRL(model, 0.8, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    run = brainstate.transform.jit(lambda seq: learner.etrace_grad(
        seq, step_fn=lambda w: jnp.sum(learner(MultiStepData(w)) ** 2), chunk_size=T, reduction="sum"))
    assert_grads_close(expected, run(xs), rtol=1e-5, atol=1e-6)
