"""ThreeFactor: with the true learning signal as modulator it is D-RTRL on the traced
weights; plain parameters get zero; the gradient is linear in the modulator; errors.
Also OSTLFeedforward == pp_prop(1e-6)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import ETraceConfig
from tests._support import models
from tests._support.oracle import flat, online_grads, restore_states, snapshot_states
from tests._support.tasks import task_loss, train

T = 6


def _peek_hidden(model, hidden_state, x):
    """``h_t`` of the next step without advancing the model (run, read, restore)."""
    old = {p: st.value for p, st in model.states(brainstate.HiddenState).items()}
    model(x)
    h = hidden_state.value
    for p, st in model.states(brainstate.HiddenState).items():
        st.value = old[p]
    return h


def _true_signal_step_fn(learner, model, hidden_state, readout):
    """step_fn passing ``∂L_t/∂h_t`` of ``L_t = Σ readout(h_t)²`` (via jax.grad) as the modulator."""
    def step_fn(x):
        h = _peek_hidden(model, hidden_state, x)
        signal = jax.grad(lambda h_: jnp.sum(readout(h_) ** 2))(h)
        return jnp.sum(learner(x, modulator=signal) ** 2)
    return step_fn


@pytest.mark.parametrize("name", ["leaky", "gru"])
def test_true_signal_as_modulator_equals_d_rtrl(name):
    brainstate.random.seed(0)
    model = models.LeakyRNN(3, 5, 2) if name == "leaky" else models.gru(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    hidden = model.h if name == "leaky" else model.cell.h
    snap = snapshot_states(model)
    d_rtrl = braintrace.D_RTRL(model)
    d_rtrl.compile_graph(xs[0])
    expected = online_grads(d_rtrl, xs)
    restore_states(model, snap)
    learner = braintrace.ThreeFactor(model)
    learner.compile_graph(xs[0])
    actual = learner.etrace_grad(xs, step_fn=_true_signal_step_fn(learner, model, hidden, model.out),
                                 reduction="sum")
    traced = {p for rel in learner.graph.hidden_param_op_relations for p in rel.trainable_paths.values()}
    assert traced, "the model must have traced weights"
    for path in flat(expected):
        if path in traced:
            np.testing.assert_allclose(flat(actual)[path], flat(expected)[path], rtol=1e-5,
                                       atol=1e-6 * np.max(np.abs(flat(expected)[path])), err_msg=str(path))
            assert np.max(np.abs(flat(expected)[path])) > 1e-3
        else:  # plain parameters (the readout; GRU's untraced Wr) get an exact zero
            np.testing.assert_array_equal(flat(actual)[path], 0.0, err_msg=str(path))
    assert np.max(np.abs(flat(expected)[("out", "weight")])) > 1e-3  # ... which D-RTRL does train


def _leaky_learner(**options):
    brainstate.random.seed(1)
    model = models.LeakyRNN(3, 4, 2)
    brainstate.nn.init_all_states(model, 2)
    learner = braintrace.ThreeFactor(model, **options)
    learner.compile_graph(jnp.ones((2, 3)))
    return model, learner, brainstate.random.randn(T, 2, 3)


def _modulated(learner, model, xs, m=None):
    snap = snapshot_states(model)
    learner.reset_state()
    fn = (lambda x: jnp.sum(learner(x))) if m is None else (lambda x: jnp.sum(learner(x, modulator=m)))
    grads = learner.etrace_grad(xs, step_fn=fn, reduction="sum")
    restore_states(model, snap)
    return flat(grads)


def test_gradient_is_linear_in_the_modulator_and_shapes_broadcast():
    model, learner, xs = _leaky_learner()
    g1 = _modulated(learner, model, xs, 0.5)
    g2 = _modulated(learner, model, xs, jnp.asarray(1.0))
    np.testing.assert_allclose(g2[("W", "weight")], 2.0 * g1[("W", "weight")], rtol=1e-6)
    assert np.linalg.norm(g1[("W", "weight")]) > 1e-3
    # varshape (B, N), a broadcastable (N,) and the full signal shape (B, N, S) agree.
    per_unit = jnp.asarray([0.5, 1.0, -1.0, 2.0])
    a = _modulated(learner, model, xs, jnp.broadcast_to(per_unit, (2, 4)))
    b = _modulated(learner, model, xs, per_unit)
    c = _modulated(learner, model, xs, jnp.broadcast_to(per_unit, (2, 4))[..., None])
    for path in a:
        np.testing.assert_allclose(b[path], a[path], rtol=1e-6)
        np.testing.assert_allclose(c[path], a[path], rtol=1e-6)
    np.testing.assert_array_equal(a[("out", "weight")], 0.0)
    # The standing modulator is used by calls that pass none.
    learner.modulator = 1.0
    np.testing.assert_allclose(_modulated(learner, model, xs)[("W", "weight")], g2[("W", "weight")], rtol=1e-6)


def test_modulator_errors():
    model, learner, xs = _leaky_learner()
    with pytest.raises(ValueError, match="needs a modulator"):
        learner(xs[0])
    with pytest.raises(TypeError, match="tuple"):
        learner(xs[0], modulator=(1.0, 2.0))
    with pytest.raises(TypeError, match="list"):
        learner.modulator = [1.0]
    with pytest.raises(ValueError, match="broadcastable"):
        learner(xs[0], modulator=jnp.ones(3))
    with pytest.raises(braintrace.NotSupportedError, match="single-step"):
        braintrace.ThreeFactor(model, vjp_method="multi-step")
    with pytest.raises(braintrace.NotSupportedError, match="single-step"):
        braintrace.compile(model, "three_factor", xs[0], batch_size=2, vjp_method="multi-step")


def test_compile_by_name_and_by_config():
    x = jnp.ones((2, 3))
    for algorithm in ("three_factor", ETraceConfig(learning_signal="modulatory")):
        learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), algorithm, x, batch_size=2, modulator=1.0)
        assert type(learner) is braintrace.ThreeFactor
        grads = learner.etrace_grad(jnp.ones((4, 2, 3)), step_fn=lambda x: jnp.sum(learner(x)))
        assert float(jnp.abs(grads[("Wz", "weight")]["weight"]).sum()) > 0


def test_three_factor_lowers_the_loss():
    """The modulator is the true per-step signal of the masked task loss (a local error)."""
    def factory(learner, model):
        def step_fn(x, y, m):
            h = _peek_hidden(model, model.cell.h, x)
            signal = jax.grad(lambda h_: m * task_loss(model.out(h_), y))(h)
            return m * task_loss(learner(x, modulator=signal), y)
        return step_fn

    first, last = train("three_factor", steps=40, step_fn_factory=factory)
    assert last < 0.95 * first, f"ThreeFactor did not learn: {first:.3f} -> {last:.3f}"


def test_ostl_feedforward_is_pp_prop_with_a_vanishing_decay():
    brainstate.random.seed(2)
    model = models.gru(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    snap = snapshot_states(model)
    a = braintrace.OSTLFeedforward(model)
    a.compile_graph(xs[0])
    ga = online_grads(a, xs)
    restore_states(model, snap)
    b = braintrace.pp_prop(model, decay_or_rank=1e-6)
    b.compile_graph(xs[0])
    gb = online_grads(b, xs)
    assert a.decay == 1e-6 and a.regime == "feedforward"
    for path in flat(gb):
        np.testing.assert_array_equal(flat(ga)[path], flat(gb)[path])
    first, last = train("ostl_feedforward", steps=40)
    assert last < 0.9 * first, f"OSTLFeedforward did not learn: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("algorithm, options", [
    ("three_factor", {}),
    ("eprop", {"feedback": "random", "random_feedback_key": 0, "kappa_filter_decay": 0.3}),
])
def test_vmap_lanes_equal_the_batched_learner_under_jit(algorithm, options):
    """One modulator (one lane's shape) is shared by the lanes; the feedback matrix too."""
    xs = jnp.linspace(-1.0, 1.0, 4 * 2 * 3).reshape(4, 2, 3)
    out = []
    for vmap in (False, True):
        brainstate.random.seed(0)
        learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), algorithm, xs[0], batch_size=2, vmap=vmap,
                                     **options)
        if algorithm == "three_factor":
            fn = lambda x, lrn=learner: jnp.sum(lrn(x, modulator=0.7))  # noqa: E731
        else:
            fn = lambda x, lrn=learner: jnp.sum(lrn(x) ** 2)  # noqa: E731
        out.append(brainstate.transform.jit(
            lambda xs, lrn=learner, fn=fn: lrn.etrace_grad(xs, step_fn=fn, reduction="sum"))(xs))
    for path in flat(out[0]):
        np.testing.assert_allclose(flat(out[1])[path], flat(out[0])[path], rtol=1e-5, atol=1e-7)
