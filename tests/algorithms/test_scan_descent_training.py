"""Online learning through a descended long scan: D-RTRL equals BPTT, other engines refuse."""

import brainpy
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states

K = braintrace.DiagnosticKind


class SubstepLIF(brainstate.nn.Module):
    """A LIF layer whose membrane is advanced ``length`` Euler substeps inside the step.

    The ETP input sits inside the loop body; ``mode`` picks ``lax.scan``, ``lax.fori_loop``
    or ``brainstate.transform.for_loop``. A surrogate spike resets the membrane after the loop.
    """

    def __init__(self, n_in=3, n=4, length=40, mode="scan", batch=None):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.8)
        self.n, self.length, self.mode, self.batch = n, length, mode, batch

    def init_state(self, *args, **kwargs):
        self.v = brainstate.HiddenState(jnp.zeros((self.n,) if self.batch is None else (self.batch, self.n)))

    def _substep(self, v, x):
        return v + 0.05 * (-v + braintrace.matmul(x, self.w.value))

    def update(self, x):
        if self.mode == "scan":
            self.v.value, _ = jax.lax.scan(lambda v, _: (self._substep(v, x), None), self.v.value, None,
                                           length=self.length)
        elif self.mode == "fori_loop":
            self.v.value = jax.lax.fori_loop(0, self.length, lambda i, v: self._substep(v, x), self.v.value)
        else:
            def body(i):
                self.v.value = self._substep(self.v.value, x)

            brainstate.transform.for_loop(body, jnp.arange(self.length))
        spike = braintools.surrogate.sigmoid(self.v.value - 1.0)
        self.v.value = self.v.value - jax.lax.stop_gradient(spike)
        return spike


class SynapseLIF(brainstate.nn.Module):
    """Two carried states per neuron (synaptic current and membrane), 100 substeps, plus a readout."""

    def __init__(self, n_in=3, n=4, length=100):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.8)
        self.readout = brainstate.ParamState(brainstate.random.randn(n, 2) * 0.5)
        self.n, self.length = n, length

    def init_state(self, *args, **kwargs):
        self.v = brainstate.HiddenState(jnp.zeros(self.n))
        self.i = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        def body(carry, _):
            v, i = carry
            i = i + 0.1 * (-i + braintrace.matmul(x, self.w.value))
            return (v + 0.05 * (-v + jnp.tanh(i)), i), None

        (self.v.value, self.i.value), _ = jax.lax.scan(body, (self.v.value, self.i.value), None, length=self.length)
        return braintrace.matmul(self.v.value, self.readout.value)


class BrainpyLIFSubsteps(brainstate.nn.Module):
    """``brainpy.state.LIF`` advanced 40 substeps per step with ``for_loop``; ETP input in the body."""

    def __init__(self, n_in=3, n=4, length=40):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 2.0)
        self.neu = brainpy.state.LIF(n, tau=5.0 * u.ms, V_th=1.0 * u.mV, V_reset=0.0 * u.mV, V_rest=0.0 * u.mV,
                                     R=1.0 * u.ohm)
        self.length = length

    def update(self, x):
        spikes = brainstate.transform.for_loop(lambda i: self.neu(braintrace.matmul(x, self.w.value) * u.mA),
                                               jnp.arange(self.length))
        return u.get_mantissa(self.neu.V.value), spikes


def _bptt_and_online(model, xs, loss_fn=lambda y: jnp.sum(y ** 2), algorithm=braintrace.D_RTRL, chunk_size=None,
                     **options):
    brainstate.nn.init_all_states(model)
    snapshot = snapshot_states(model)
    expected = bptt_grads(model, xs, loss_fn)
    restore_states(model, snapshot)
    learner = algorithm(model, **options)
    graph = learner.compile_graph(xs[0])
    assert graph.explain(kind=K.SCAN_DESCENT_APPLIED), "the scan was not descended"
    if chunk_size in (None, 1):  # chunk_size=1 is one step per call
        step_fn = lambda x: loss_fn(learner(x))  # noqa: E731
    else:  # a window of `chunk_size` steps per call; the loss is per step
        step_fn = lambda x: jax.vmap(loss_fn)(learner(braintrace.MultiStepData(x)))  # noqa: E731
    online = learner.etrace_grad(xs, step_fn=step_fn, reduction="sum", chunk_size=chunk_size)
    return expected, online, graph


@pytest.mark.parametrize("mode", ["scan", "fori_loop", "for_loop"])
def test_d_rtrl_equals_bptt_through_a_40_step_descended_loop(mode):
    brainstate.random.seed(10)
    xs = brainstate.random.rand(6, 3) * 3.0
    expected, online, graph = _bptt_and_online(SubstepLIF(mode=mode), xs)
    assert np.linalg.norm(flat(expected)[("w",)]) > 1e-2  # the layer is live
    assert_grads_close(expected, online, rtol=1e-4)
    # Not unrolled: one scan equation, a step of a few equations.
    assert [str(e.primitive) for e in graph.module_info.closed_jaxpr.eqns].count("scan") == 1
    assert len(graph.module_info.closed_jaxpr.eqns) < 20


def test_d_rtrl_equals_bptt_on_brainpy_lif_substeps():
    brainstate.random.seed(11)
    xs = brainstate.random.rand(5, 3) * 3.0
    model = BrainpyLIFSubsteps()
    with brainstate.environ.context(dt=0.1 * u.ms):
        expected, online, _ = _bptt_and_online(model, xs, loss_fn=lambda out: jnp.sum(out[0] ** 2))
        brainstate.nn.init_all_states(model)
        _, spikes = model(xs[0])
    assert float(jnp.sum(u.get_mantissa(spikes))) > 0  # the neurons spike inside the substeps
    assert_grads_close(expected, online, rtol=1e-4)


def test_batched_layer_equals_bptt():
    brainstate.random.seed(12)
    xs = brainstate.random.rand(5, 2, 3) * 3.0
    expected, online, _ = _bptt_and_online(SubstepLIF(batch=2), xs)
    assert_grads_close(expected, online, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_two_state_carry_of_100_substeps_equals_bptt(chunk_size):
    brainstate.random.seed(13)
    xs = brainstate.random.rand(6, 3) * 3.0
    options = {} if chunk_size is None else {"vjp_method": "multi-step"}
    expected, online, graph = _bptt_and_online(SynapseLIF(), xs, chunk_size=chunk_size, **options)
    assert graph.explain(kind=K.SCAN_DESCENT_APPLIED)[0].context["state_positions"] == [0, 1]
    assert_grads_close(expected, online, rtol=1e-4)


def test_descended_equals_unrolled():
    brainstate.random.seed(14)
    xs = brainstate.random.rand(4, 3) * 3.0
    model = SubstepLIF(length=20)
    _, descended, _ = _bptt_and_online(model, xs)
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model, control_flow=braintrace.ControlFlowPolicy(scan_unroll_limit=20))
    assert learner.compile_graph(xs[0]).explain(kind=K.SCAN_UNROLLED)
    unrolled = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
    assert_grads_close(unrolled, descended, rtol=1e-4)


def test_eprop_with_zero_kappa_equals_d_rtrl_on_a_descended_scan():
    models = []
    for _ in range(2):  # the same weights twice
        brainstate.random.seed(15)
        xs = brainstate.random.rand(4, 3) * 3.0
        models.append(SubstepLIF())
    _, d_rtrl, _ = _bptt_and_online(models[0], xs)
    _, eprop, _ = _bptt_and_online(models[1], xs, algorithm=braintrace.EProp)
    assert_grads_close(d_rtrl, eprop, rtol=1e-6)


def test_three_factor_trains_a_descended_scan():
    brainstate.random.seed(16)
    model = SubstepLIF()
    brainstate.nn.init_all_states(model)
    learner = braintrace.ThreeFactor(model, modulator=jnp.ones(4))
    assert learner.compile_graph(jnp.ones(3)).explain(kind=K.SCAN_DESCENT_APPLIED)
    grads = brainstate.transform.grad(lambda: jnp.sum(learner(jnp.ones(3))), grad_states=learner.param_states)()
    assert float(jnp.linalg.norm(grads[("w",)])) > 0


@pytest.mark.parametrize("algorithm", [braintrace.ES_D_RTRL, braintrace.pp_prop, braintrace.OSTLFeedforward])
def test_io_dim_engines_refuse_a_descended_scan_and_change_nothing(algorithm):
    brainstate.random.seed(17)
    model = SubstepLIF()
    brainstate.nn.init_all_states(model)
    model.v.value = jnp.full(4, 0.3)
    before = {path: np.asarray(st.value) for path, st in model.states().items()}
    learner = algorithm(model)
    with pytest.raises(braintrace.NotSupportedError, match=r"descended `scan` \(length 40; weights `w`\)"):
        learner.compile_graph(jnp.ones(3))
    assert not learner.is_compiled
    after = {path: np.asarray(st.value) for path, st in model.states().items()}
    assert before.keys() == after.keys()
    for path in before:
        np.testing.assert_array_equal(after[path], before[path])


def test_vmapped_lanes_equal_bptt_of_the_batched_layer():
    brainstate.random.seed(18)
    xs = brainstate.random.rand(5, 2, 3) * 3.0
    batched = SubstepLIF(batch=2)
    brainstate.nn.init_all_states(batched)
    expected = bptt_grads(batched, xs)
    lane = SubstepLIF()
    lane.w.value = batched.w.value
    learner = braintrace.compile(lane, "d_rtrl", xs[0], batch_size=2, vmap=True)
    assert learner.graph.explain(kind=K.SCAN_DESCENT_APPLIED)
    online = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
    assert_grads_close(expected, online, rtol=1e-4)


class TwoOpsInBody(SubstepLIF):
    """Two ETP ops in one body (one weight masked outside the loop), a tanh between ops and carry."""

    def __init__(self):
        super().__init__()
        self.w2 = brainstate.ParamState(brainstate.random.randn(2, 4) * 0.5)
        self.mask = jnp.array([[1.0, 0.0, 1.0, 1.0]] * 3)

    def update(self, x):
        w = self.w.value * self.mask

        def body(v, _):
            drive = braintrace.matmul(x, w) + braintrace.matmul(jnp.tanh(x[:2]), self.w2.value)
            return v + 0.05 * (-v + jnp.tanh(drive)), None

        self.v.value, _ = jax.lax.scan(body, self.v.value, None, length=30)
        return self.v.value


def test_two_ops_in_one_body_with_a_processed_weight_equal_bptt():
    brainstate.random.seed(19)
    xs = brainstate.random.rand(5, 3) * 3.0
    expected, online, graph = _bptt_and_online(TwoOpsInBody(), xs)
    assert graph.explain(kind=K.SCAN_DESCENT_APPLIED)[0].context["weights"] == ["w", "w2"]
    assert_grads_close(expected, online, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(online[("w",)])[:, 1], 0.0)  # masked column
