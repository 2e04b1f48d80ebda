"""CodingLayer around modules without ``out_size`` (D from the first output) and on vmap=True learners."""

import brainpy
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.coding import CodingLayer, monitor_hidden, soft_assign


class TwoLayer(brainstate.nn.Module):
    """A leaky tanh RNN and a linear readout, as one module with no ``in_size``/``out_size``."""

    def __init__(self, n_in=3, n_hidden=5, n_out=4, seed=0):
        super().__init__()
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        self.w_rec = brainstate.ParamState(jax.random.normal(k1, (n_in + n_hidden, n_hidden)) / 2)
        self.w_out = brainstate.ParamState(jax.random.normal(k2, (n_hidden, n_out)) / 2)
        self.n_hidden = n_hidden

    def init_state(self, batch_size=None, **kwargs):
        shape = (self.n_hidden,) if batch_size is None else (batch_size, self.n_hidden)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        xh = jnp.concatenate([x, self.h.value], axis=-1)
        self.h.value = 0.5 * self.h.value + jnp.tanh(braintrace.matmul(xh, self.w_rec.value))
        return braintrace.matmul(self.h.value, self.w_out.value)


class SNNBlock(brainstate.nn.Module):
    """Synaptic weights into a ``brainpy.state.LIF`` layer; returns its spikes; no ``out_size``."""

    def __init__(self, n_in=3, n=6, seed=0):
        super().__init__()
        self.weight = brainstate.ParamState(2.0 * jax.random.normal(jax.random.PRNGKey(seed), (n_in, n)))
        self.lif = brainpy.state.LIF(n, tau=10 * u.ms, V_th=1.0 * u.mV, spk_fun=braintools.surrogate.ReluGrad())

    def update(self, x):
        self.lif(braintrace.matmul(x, self.weight.value) * u.mA)
        return self.lif.get_spike()


class Readout(brainstate.nn.Module):
    """``inner(x) @ R``: gives the learners a loss that reaches the wrapped module's output."""

    def __init__(self, inner, n_features):
        super().__init__()
        self.inner = inner
        self.weight = brainstate.ParamState(jnp.linspace(-1.0, 1.0, 2 * n_features).reshape(n_features, 2))

    def update(self, x):
        return braintrace.matmul(self.inner(x), self.weight.value)


def last_output(module):
    """The module's output at the last step, from its states."""
    if isinstance(module, TwoLayer):
        return module.h.value @ module.w_out.value
    return module.lif.get_spike()


MODULES = {"two_layer": (TwoLayer, 4), "snn_block": (SNNBlock, 6)}  # factory, output features


def inputs(shape, seed=0, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.fixture(autouse=True)
def dt():
    with brainstate.environ.context(dt=1.0 * u.ms):
        yield


def assert_trees_equal(a, b):
    leaves_a, def_a = jax.tree.flatten(a)
    leaves_b, def_b = jax.tree.flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- eager and jit
@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("compiled", [False, True])
def test_wrapping_a_module_without_out_size(name, compiled):
    factory, features = MODULES[name]
    bare, inner = factory(seed=1), factory(seed=1)
    assert bare.out_size is None
    layer = CodingLayer(inner, K=7, temperature=0.5)
    assert layer.coding_dim is None and not layer.codebook.is_built
    brainstate.nn.init_all_states(bare, 5)
    brainstate.nn.init_all_states(layer, 5)
    run_bare, run_layer = bare, layer
    if compiled:
        run_bare, run_layer = brainstate.transform.jit(bare), brainstate.transform.jit(layer)
    for t in range(4):
        x = inputs((5, 3), seed=t, scale=2.0)
        y_bare, y = run_bare(x), run_layer(x)
        np.testing.assert_array_equal(y_bare, y)
        trace = layer.last_trace
        assert trace.soft_code.code_dim == 7 and trace.soft_code.probs.shape == (5, 7)
        np.testing.assert_array_equal(trace.reduced, y)
    assert layer.coding_dim == features and layer.codebook.centers.value.shape == (7, features)
    assert layer.coding_error_count == 0
    if name == "snn_block":
        assert float(jnp.sum(y)) > 0  # some spikes were coded
    code, inter = soft_assign(y, layer.codebook.centers.value, temperature=0.5)
    np.testing.assert_array_equal(trace.chosen_center_indices, inter["chosen_center_indices"])
    np.testing.assert_allclose(trace.soft_code.probs, code.probs, rtol=1e-5, atol=1e-9)


def test_same_seed_same_codebook_as_when_built_at_construction():
    lazy = CodingLayer(TwoLayer(), K=5, seed=3)
    eager = CodingLayer(TwoLayer(), K=5, seed=3, coding_dim=4)
    brainstate.nn.init_all_states(lazy)
    lazy(inputs((3,)))
    np.testing.assert_array_equal(lazy.codebook.centers.value, eager.codebook.centers.value)


def test_coding_dim_is_still_accepted():
    layer = CodingLayer(TwoLayer(n_out=4), K=6, coding_dim=2)
    brainstate.nn.init_all_states(layer, 3)
    y = brainstate.transform.jit(layer)(inputs((3, 3)))
    assert layer.coding_dim == 2 and layer.last_trace.reduced.shape == (3, 2)
    assert layer.last_trace.reduction_meta == {"method": "random_projection", "in_dim": 4, "out_dim": 2}
    assert y.shape == (3, 4)


def test_pytree_output_without_a_reducer_is_a_clear_coding_error():
    class Pair(brainstate.nn.Module):
        def update(self, x):
            return {"a": x, "b": 2 * x}

    layer = CodingLayer(Pair(), K=4)
    x = inputs((2, 3))
    with pytest.warns(RuntimeWarning, match="Cannot infer the coding dimension of `Pair`"):
        out = layer(x)
    assert out["a"] is x and layer.last_trace is None and not layer.codebook.is_built
    picked = CodingLayer(Pair(), K=4, reducer=lambda o: (o["b"], {"method": "b"}))
    picked(x)
    assert picked.coding_dim == 3
    np.testing.assert_array_equal(picked.last_trace.reduced, 2 * x)


def test_fit_trace_builds_the_codebook():
    layer = CodingLayer(TwoLayer(), K=4)
    assert layer.fit_trace(jax.ShapeDtypeStruct((6, 4), jnp.float32))
    assert layer.coding_dim == 4 and layer.trace_slot.value.trace.soft_code.probs.shape == (6, 4)
    assert layer.last_trace is None


# ---------------------------------------------------------------- online learners
@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("algorithm", [braintrace.D_RTRL, braintrace.ES_D_RTRL])
def test_online_gradients_are_bit_identical(name, algorithm):
    """D inferred while the learner compiles its step; gradients as for the bare model."""
    factory, features = MODULES[name]
    xs = inputs((8, 2, 3), seed=4, scale=2.0)

    def online(model):
        brainstate.nn.init_all_states(model, 2)
        learner = algorithm(model)
        learner.compile_graph(xs[0])
        grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
        return {tuple(p for p in path if p != "layer"): g for path, g in grads.items()}, learner

    expected, _ = online(Readout(factory(seed=2), features))
    wrapped = Readout(CodingLayer(factory(seed=2), K=5, update="ema", restart_after=2), features)
    actual, learner = online(wrapped)
    assert expected.keys() == actual.keys()
    for path in expected:
        assert_trees_equal(expected[path], actual[path])
        assert float(jnp.max(jnp.abs(expected[path]))) > 0
    layer = wrapped.inner
    assert layer.coding_dim == features and layer.coding_error_count == 0
    trace = layer.last_trace
    assert trace.soft_code.code_dim == 5 and trace.soft_code.probs.shape == (2, 5)
    np.testing.assert_allclose(trace.reduced, last_output(layer.layer), rtol=1e-6)
    # The codebook, fitted inside the compiled steps, left its initial state.
    initial = CodingLayer(factory(), K=5, coding_dim=features).codebook.centers.value
    assert not np.array_equal(layer.codebook.centers.value, initial)


# ---------------------------------------------------------------- vmap=True learners
def vmap_vs_batched(make_model, prepare=None):
    """Run the same model compiled batched and with vmap=True lanes; return both results."""
    xs = inputs((6, 4, 3), seed=5)
    results = {}
    for vmap in (False, True):
        model = make_model()
        if prepare is not None:
            prepare(model)
        learner = braintrace.compile(model, "d_rtrl", xs[0], batch_size=4, vmap=vmap)
        grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
        results[vmap] = model, grads
    return results


def call_once(model):
    """Run the model once on one unbatched input: fixes D and the trace shapes."""
    brainstate.nn.init_all_states(model)
    model(inputs((3,), seed=9))


def test_vmap_learner_shares_a_fixed_codebook_across_lanes():
    results = vmap_vs_batched(lambda: Readout(CodingLayer(TwoLayer(seed=3), K=6), 4), prepare=call_once)
    (batched, g_batched), (lanes, g_lanes) = results[False], results[True]
    t_batched, t_lanes = batched.inner.last_trace, lanes.inner.last_trace
    assert t_lanes.soft_code.probs.shape == t_batched.soft_code.probs.shape == (4, 6)
    np.testing.assert_array_equal(t_lanes.chosen_center_indices, t_batched.chosen_center_indices)
    for a, b in zip(jax.tree.leaves(t_batched), jax.tree.leaves(t_lanes), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert lanes.inner.utilization() == batched.inner.utilization() > 0
    np.testing.assert_allclose(lanes.inner.mean_entropy(), batched.inner.mean_entropy(), rtol=1e-6)
    # One codebook: the lanes hold identical copies of it, equal to the batched one.
    centers = np.asarray(lanes.inner.codebook.centers.value)
    assert centers.shape == (4, 6, 4)
    for lane in centers:
        np.testing.assert_array_equal(lane, batched.inner.codebook.centers.value)
    for path in g_batched:
        np.testing.assert_allclose(g_lanes[path], g_batched[path], rtol=1e-5, atol=1e-7)


def test_vmap_learner_refuses_an_ema_codebook():
    model = Readout(CodingLayer(TwoLayer(), K=6, update="ema", coding_dim=4), 4)
    with pytest.raises(braintrace.NotSupportedError, match=r"one copy per lane \(4 lanes\).*batched mode"):
        braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4, vmap=True)
    # Batched mode is fine.
    model = Readout(CodingLayer(TwoLayer(), K=6, update="ema", coding_dim=4), 4)
    learner = braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4)
    learner(inputs((4, 3)))
    assert model.inner.codebook.centers.value.shape == (6, 4)


def test_vmap_learner_needs_the_shapes_before_compiling():
    model = Readout(CodingLayer(TwoLayer(), K=6), 4)
    with pytest.raises(braintrace.NotSupportedError, match="code dimension is not known yet.*call the model once"):
        braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4, vmap=True)
    model = Readout(CodingLayer(TwoLayer(), K=6, coding_dim=4), 4)
    with pytest.raises(braintrace.NotSupportedError, match="trace shapes are set by its first coded call"):
        braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4, vmap=True)
    model = Readout(CodingLayer(TwoLayer(), K=6, coding_dim=4), 4)
    call_once(model)  # what the messages ask for
    learner = braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4, vmap=True)
    learner(inputs((4, 3)))
    assert model.inner.last_trace.reduced.shape == (4, 4)


def test_monitor_on_a_vmap_learner_shares_its_codebooks():
    """monitor_hidden keeps its codebooks outside the model: one codebook for all lanes."""
    xs = inputs((6, 4, 3), seed=6)
    stats = {}
    for vmap in (False, True):
        model = TwoLayer(seed=4)
        learner = braintrace.compile(model, "d_rtrl", xs[0], batch_size=4, vmap=vmap)
        monitor = monitor_hidden(learner, K=6, update="ema", decay=0.5, restart_after=2)
        _, stats[vmap] = monitor.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2))
        assert monitor.codebooks[0].centers.value.shape == (6, 5)
    for name in stats[False][0]:
        np.testing.assert_allclose(stats[True][0][name], stats[False][0][name], rtol=1e-5, atol=1e-7)
    assert stats[True][0]["utilization"].shape == (6,)
