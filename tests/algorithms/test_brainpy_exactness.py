"""brainpy.state spiking layers, with units, under D-RTRL (exact) and ES-D-RTRL (approximate).

The networks are the ones research code writes: ``AlignPostProj(comm=braintrace.nn.Linear
(weights in mA), syn=Expon, out=CUBA, post=LIF | ALIF)`` run under
``brainstate.environ.context(dt=1 ms)``, read out by a ``braintrace.nn.LeakyRateReadout``.
"""

import contextlib

import brainpy.state
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support.oracle import bptt_grads, cosine, online_grads, restore_states, snapshot_states

N_IN, N_REC, N_OUT, STEPS = 3, 6, 2, 20
DT = 1.0 * u.ms


def _neuron(kind):
    spk_fun = braintools.surrogate.ReluGrad()
    if kind == "lif":
        return brainpy.state.LIF(N_REC, tau=10.0 * u.ms, V_th=1.0 * u.mV, spk_fun=spk_fun)
    return brainpy.state.ALIF(N_REC, tau=10.0 * u.ms, tau_a=50.0 * u.ms, beta=0.5 * u.mV, V_th=1.0 * u.mV,
                              spk_fun=spk_fun)


class SpikingLayer(brainstate.nn.Module):
    """``AlignPostProj(Linear in mA -> Expon -> CUBA -> LIF/ALIF)``, then a readout of the spikes.

    ``readout="linear"``: a ``braintrace.nn.Linear`` (no state), the class where D-RTRL is
    exact. ``readout="leaky"``: a ``LeakyRateReadout``, a second hidden group downstream of the
    neurons, whose future effect on the loss the input weight's diagonal trace does not carry.

    With ``recurrent=True`` the projection also reads the previous step's spikes
    (``stop_gradient``), so the input weight has a recurrent block.
    """

    def __init__(self, neuron="lif", recurrent=False, readout="linear"):
        super().__init__()
        self.recurrent = recurrent
        self.neu = _neuron(neuron)
        n_pre = N_IN + (N_REC if recurrent else 0)
        self.syn = brainpy.state.AlignPostProj(
            comm=braintrace.nn.Linear(n_pre, N_REC, w_init=braintools.init.KaimingNormal(scale=4.0, unit=u.mA),
                                      b_init=braintools.init.ZeroInit(unit=u.mA)),
            syn=brainpy.state.Expon(N_REC, tau=5.0 * u.ms, g_initializer=braintools.init.ZeroInit(unit=u.mA)),
            out=brainpy.state.CUBA(scale=1.0),
            post=self.neu,
        )
        if readout == "leaky":
            self.out = braintrace.nn.LeakyRateReadout(N_REC, N_OUT, tau=5.0 * u.ms)
        else:
            self.out = braintrace.nn.Linear(N_REC, N_OUT)

    def update(self, x):
        if self.recurrent:
            x = jnp.concatenate([x, jax.lax.stop_gradient(self.neu.get_spike())], axis=-1)
        self.syn(x)
        return self.out(self.neu())


def _leaves(tree):
    return jax.tree.leaves(tree, is_leaf=lambda v: isinstance(v, u.Quantity))


def _flat(grads):
    return {path: np.concatenate([np.ravel(u.get_mantissa(leaf)) for leaf in _leaves(g)]) for path, g in grads.items()}


def _inputs(batch, seed):
    brainstate.random.seed(seed)
    return brainstate.random.uniform(0.0, 2.0, (STEPS,) + ((batch, N_IN) if batch else (N_IN,)))


def _bptt_and_online(model, xs, batch, algorithm=braintrace.D_RTRL, **options):
    brainstate.nn.init_all_states(model) if batch is None else brainstate.nn.init_all_states(model, batch)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    return learner, expected, online_grads(learner, xs)


@pytest.mark.parametrize("neuron,num_state", [("lif", 2), ("alif", 3)])
def test_compiles_to_one_element_wise_group(neuron, num_state):
    """Synapse and neuron states merge into one group; braintools' spike primitive is element-wise."""
    with brainstate.environ.context(dt=DT):
        model = SpikingLayer(neuron)
        brainstate.nn.init_all_states(model)
        graph = braintrace.compile_etrace_graph(model, jnp.ones(N_IN))
    (group,) = graph.hidden_groups
    expected_neuron = ["neu.V"] if neuron == "lif" else ["neu.V", "neu.a"]
    assert sorted(".".join(p) for p in group.hidden_paths) == sorted(expected_neuron + ["syn.syn.g"])
    assert group.num_state == num_state
    assert [r.kind for r in graph.diagnostics if r.level is not braintrace.DiagnosticLevel.INFO] == []


@pytest.mark.parametrize("cascade_max_elements", [0, 64])
def test_leaky_readout_is_a_second_group_and_its_coupling_is_carried_by_a_cascade(cascade_max_elements):
    """With cascades (D-RTRL's default) an INFO ``cross_group_cascade``, without them the warning."""
    with brainstate.environ.context(dt=DT):
        model = SpikingLayer("alif", readout="leaky")
        brainstate.nn.init_all_states(model)
        expect = (pytest.warns(UserWarning, match="cross_group_coupling_dropped") if cascade_max_elements == 0
                  else contextlib.nullcontext())
        with expect:
            graph = braintrace.compile_etrace_graph(model, jnp.ones(N_IN), cascade_max_elements=cascade_max_elements)
    groups = sorted(sorted(".".join(p) for p in g.hidden_paths) for g in graph.hidden_groups)
    assert groups == [["neu.V", "neu.a", "syn.syn.g"], ["out.r"]]
    warnings = [r.kind for r in graph.diagnostics if r.level is not braintrace.DiagnosticLevel.INFO]
    if cascade_max_elements == 0:
        assert warnings == [braintrace.DiagnosticKind.CROSS_GROUP_COUPLING_DROPPED]
        assert graph.cascades == ()
        return
    assert warnings == []
    (record,) = graph.explain(kind=braintrace.DiagnosticKind.CROSS_GROUP_CASCADE)
    assert record.weight_path == ("syn", "comm", "weight")
    (plan,) = graph.cascades
    assert graph.hidden_groups[plan.downstream].hidden_paths == [("out", "r")]
    assert plan.num_elements == N_OUT


@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("recurrent", [False, True])
def test_d_rtrl_equals_bptt_with_units(neuron, batch, recurrent):
    with brainstate.environ.context(dt=DT):
        learner, expected, actual = _bptt_and_online(SpikingLayer(neuron, recurrent), _inputs(batch, 1), batch)
    path = ("syn", "comm", "weight")
    assert set(actual) == {path, ("out", "weight")}
    # Gradients carry the parameter's unit (as brainstate.transform.grad returns them).
    for leaf_name in ("weight", "bias"):
        assert u.get_unit(actual[path][leaf_name]) == u.mA
        assert u.get_unit(expected[path][leaf_name]) == u.mA
    assert not isinstance(actual[("out", "weight")]["weight"], u.Quantity)
    e, a = _flat(expected), _flat(actual)
    assert np.linalg.norm(e[path]) > 0.1, "the network must spike (non-trivial input-weight gradient)"
    for p in e:
        np.testing.assert_allclose(a[p], e[p], rtol=1e-4, atol=1e-5 * np.abs(e[p]).max(), err_msg=str(p))


@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("recurrent", [False, True])
def test_d_rtrl_with_a_leaky_readout_equals_bptt_for_all_weights(neuron, batch, recurrent):
    """The path input weight -> V -> r -> later r is carried by the cascade trace (``ε^{r<-W}``).

    Without it (``cascade_max_elements=0``) the input weight's norm was 0.22-0.24 of BPTT's:
    the readout integrates ``x @ W`` with gain ``1 / (1 - exp(-dt / tau)) = 5.5``.
    """
    path = ("syn", "comm", "weight")
    with brainstate.environ.context(dt=DT):
        learner, expected, actual = _bptt_and_online(SpikingLayer(neuron, recurrent, readout="leaky"),
                                                     _inputs(batch, 1), batch)
    assert len(learner.graph.cascades) == 1 and learner.graph.cascades[0].batch_axis == (batch is not None)
    assert set(actual) == {path, ("out", "weight")}
    assert u.get_unit(actual[path]["weight"]) == u.mA
    e, a = _flat(expected), _flat(actual)
    assert np.linalg.norm(e[path]) > 0.1, "the network must spike (non-trivial input-weight gradient)"
    for p in e:
        np.testing.assert_allclose(a[p], e[p], rtol=1e-4, atol=1e-5 * np.abs(e[p]).max(), err_msg=str(p))


def test_without_the_cascade_the_leaky_readout_drops_the_input_weight_scale():
    """``cascade_max_elements=0`` (today's behaviour before cascades): direction kept, norm about 1/4."""
    path = ("syn", "comm", "weight")
    with brainstate.environ.context(dt=DT), pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
        _, expected, actual = _bptt_and_online(SpikingLayer("lif", readout="leaky"), _inputs(None, 0), None,
                                               cascade_max_elements=0)
    e, a = _flat(expected), _flat(actual)
    np.testing.assert_allclose(a[("out", "weight")], e[("out", "weight")], rtol=1e-4, atol=1e-5)
    assert 0.98 < cosine(e[path], a[path]) < 1.0 - 1e-5
    ratio = np.linalg.norm(a[path]) / np.linalg.norm(e[path])
    assert 0.15 < ratio < 0.35, ratio


def test_es_d_rtrl_approximates_bptt_on_the_lif_layer():
    """ES-D-RTRL(decay 0.9), LIF layer + Linear readout, 20 steps, inputs U(0, 2), 4 seeds.

    Measured cosines with BPTT: 0.852, 0.905, 0.921, 0.908.
    """
    path = ("syn", "comm", "weight")
    cosines = []
    for seed in range(4):
        with brainstate.environ.context(dt=DT):
            _, expected, actual = _bptt_and_online(SpikingLayer("lif"), _inputs(None, seed), None,
                                                   braintrace.ES_D_RTRL, decay_or_rank=0.9)
        e, a = _flat(expected), _flat(actual)
        assert np.linalg.norm(e[path]) > 0.1
        cosines.append(cosine(e[path], a[path]))
        # The readout has no state: its gradient is the exact same-step one.
        np.testing.assert_allclose(a[("out", "weight")], e[("out", "weight")], rtol=1e-4, atol=1e-5)
    assert min(cosines) > 0.8 and np.mean(cosines) > 0.87, np.round(cosines, 3)
    assert max(cosines) < 1.0 - 1e-6, "ES-D-RTRL is an approximation here; equality would mean the test is vacuous"
