"""D-RTRL equals BPTT where it is exact; equals hand-written diagonal RTRL on an Elman RNN."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import (
    assert_grads_close,
    bptt_grads,
    online_grads,
    restore_states,
    snapshot_states,
)


def run_both(model, xs, batch, algorithm=braintrace.D_RTRL, **options):
    if batch is None:
        brainstate.nn.init_all_states(model)
    else:
        brainstate.nn.init_all_states(model, batch)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    return expected, online_grads(learner, xs)


@pytest.mark.parametrize("batch", [None, 3])
def test_leaky_rnn_equals_bptt(batch):
    brainstate.random.seed(0)
    xs = brainstate.random.randn(15, *((batch, 3) if batch else (3,)))
    expected, actual = run_both(models.LeakyRNN(), xs, batch)
    assert set(actual) == {("W", "weight"), ("tau",), ("out", "weight")}
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("batch", [None, 2])
def test_spiking_net_equals_bptt(neuron, batch):
    brainstate.random.seed(1)
    xs = brainstate.random.uniform(0.0, 2.0, (20,) + ((batch, 3) if batch else (3,)))
    model = models.SpikingNet(neuron=neuron)
    expected, actual = run_both(model, xs, batch)
    norms = {p: float(np.linalg.norm(np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(g)]))) for p, g in expected.items()}
    assert norms[("inp", "weight")] > 1e-3, "the network must be live (non-trivial input gradient)"
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_conv_leaky_equals_bptt():
    brainstate.random.seed(2)
    xs = brainstate.random.randn(6, 2, 8, 2)
    expected, actual = run_both(models.ConvLeaky(), xs, 2)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_elman_equals_hand_written_diagonal_rtrl():
    """On a dense Elman RNN the recurrent matmul's output counts as an input, so D_t = 0."""
    brainstate.random.seed(3)
    model = models.elman(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(10, 3)
    w = model.cell.W.weight.value
    w_out = model.out.weight.value
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)

    # Plain-JAX diagonal RTRL, written independently of the library.
    def readout(h):
        return h @ w_out["weight"] + w_out["bias"]

    h = jnp.zeros(5)
    g_w, g_b = jnp.zeros_like(w["weight"]), jnp.zeros_like(w["bias"])
    g_ow, g_ob = jnp.zeros_like(w_out["weight"]), jnp.zeros_like(w_out["bias"])
    for x in xs:
        xh = jnp.concatenate([x, h])
        h = jnp.tanh(xh @ w["weight"] + w["bias"])
        dh = 1.0 - h ** 2                                    # ∂h/∂y, element-wise
        signal = jax.grad(lambda h_: jnp.sum(readout(h_) ** 2))(h)
        g_w = g_w + jnp.outer(xh, signal * dh)               # trace = instantaneous term
        g_b = g_b + signal * dh
        g_ow = g_ow + jnp.outer(h, 2 * readout(h))
        g_ob = g_ob + 2 * readout(h)
    np.testing.assert_allclose(actual[("cell", "W", "weight")]["weight"], g_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(actual[("cell", "W", "weight")]["bias"], g_b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(actual[("out", "weight")]["weight"], g_ow, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(actual[("out", "weight")]["bias"], g_ob, rtol=1e-4, atol=1e-5)


def test_weight_fn_and_outside_mask_are_exact():
    """Processing inside the op (weight_fn) and parameter-only processing outside it are exact."""

    class Masked(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = brainstate.ParamState(brainstate.random.randn(3, 4))
            self.v = brainstate.ParamState(brainstate.random.randn(3, 4))
            self.mask = jnp.asarray(np.random.RandomState(0).rand(3, 4) > 0.5, jnp.float32)

        def init_state(self, batch_size=None, **kwargs):
            self.h = brainstate.HiddenState(jnp.zeros(4))

        def update(self, x):
            y = braintrace.matmul(x, self.w.value, weight_fn=jnp.tanh) + braintrace.matmul(x, self.mask * self.v.value)
            self.h.value = 0.7 * self.h.value + jnp.sin(y)
            return self.h.value

    brainstate.random.seed(4)
    xs = brainstate.random.randn(8, 3)
    model = Masked()
    expected, actual = run_both(model, xs, None)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    masked_out = np.asarray(model.mask) == 0
    assert masked_out.any()
    np.testing.assert_array_equal(np.asarray(actual[("v",)])[masked_out], 0.0)


def test_single_step_gradient_includes_same_step_readout():
    """The readout has no trace: its gradient is exactly the same-step gradient."""
    brainstate.random.seed(5)
    model = models.LeakyRNN()
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model)
    x = brainstate.random.randn(3)
    learner.compile_graph(x)
    snap = snapshot_states(model)
    expected = brainstate.transform.grad(lambda: jnp.sum(model(x) ** 2), grad_states=learner.param_states)()
    restore_states(model, snap)
    actual = brainstate.transform.grad(lambda: jnp.sum(learner(x) ** 2), grad_states=learner.param_states)()
    assert_grads_close(expected, actual)


class UnitLIF(brainstate.nn.Module):
    """A brainpy.state LIF layer with units (mV, ms, mA) in its state; its step runs at dt = 1 ms."""

    def __init__(self):
        super().__init__()
        import brainunit as u

        self.u = u
        self.inp = braintrace.nn.Linear(3, 5, w_init=brainstate.nn.init.KaimingNormal(scale=4.0))
        self.neu = braintrace.nn.LIF(5, tau=5.0 * u.ms, V_th=1.0 * u.mV)
        self.out = braintrace.nn.Linear(5, 2)

    def update(self, x):
        with brainstate.environ.context(dt=1.0 * self.u.ms):
            return self.out(self.neu(3.0 * self.inp(x) * self.u.mA))


class TwoInputsDictOutput(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = braintrace.nn.Linear(3, 4)
        self.b = braintrace.nn.Linear(2, 4)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(4))

    def update(self, x, y):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.a(x) + self.b(y))
        return {"h": self.h.value, "sq": self.h.value ** 2}


def test_lif_with_units_equals_bptt():
    brainstate.random.seed(6)
    xs = brainstate.random.uniform(0.0, 2.0, (15, 3))
    model = UnitLIF()
    expected, actual = run_both(model, xs, None)
    assert float(jnp.abs(expected[("inp", "weight")]["weight"]).max()) > 1e-3, "the network must spike"
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_several_inputs_and_dict_output_equal_bptt():
    brainstate.random.seed(7)
    xs, ys = brainstate.random.randn(10, 3), brainstate.random.randn(10, 2)
    model = TwoInputsDictOutput()
    brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    params = dict(model.states(brainstate.ParamState))

    def loss(out):
        return jnp.sum(out["sq"]) + jnp.sum(out["h"])

    expected = brainstate.transform.grad(
        lambda: jnp.sum(brainstate.transform.for_loop(lambda x, y: loss(model(x, y)), xs, ys)), grad_states=params)()
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0], ys[0])
    actual = learner.etrace_grad(xs, ys, step_fn=lambda x, y: loss(learner(x, y)), reduction="sum")
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_ops_inside_cond_branches_equal_bptt():
    """Both branches are taken over the sequence; D-RTRL stays exact through the select."""
    brainstate.random.seed(8)
    xs = brainstate.random.randn(16, 3)
    assert bool(jnp.any(xs[:, 0] > 0)) and bool(jnp.any(xs[:, 0] <= 0))
    expected, actual = run_both(models.CondBranches(), xs, None)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
