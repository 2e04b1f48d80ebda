"""CodingLayer: observe-only forward and gradients, storage under jit/loops, switches, hooks, fail-open."""

import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.coding import CodingLayer, CodingTrace, soft_assign


class Linear(brainstate.nn.Module):
    """``tanh(x @ W + b)`` from plain jnp ops; counts how often it is traced or run."""

    def __init__(self, n_in=3, n_out=6, seed=0):
        super().__init__()
        self.in_size = (n_in,)
        self.out_size = (n_out,)
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        self.weight = brainstate.ParamState(jax.random.normal(k1, (n_in, n_out)) / np.sqrt(n_in))
        self.bias = brainstate.ParamState(0.1 * jax.random.normal(k2, (n_out,)))
        self.calls = 0

    def update(self, x):
        self.calls += 1
        return jnp.tanh(x @ self.weight.value + self.bias.value)


class LeakyCell(brainstate.nn.Module):
    """``h = sigmoid(τ) h + tanh(x W + b)`` built on braintrace's ETP ops."""

    def __init__(self, n_in=3, n_hidden=5, seed=0):
        super().__init__()
        self.in_size = (n_in,)
        self.out_size = (n_hidden,)
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        self.weight = brainstate.ParamState(jax.random.normal(k1, (n_in, n_hidden)) / np.sqrt(n_in))
        self.bias = brainstate.ParamState(0.1 * jax.random.normal(k2, (n_hidden,)))
        self.tau = brainstate.ParamState(jnp.linspace(-1.0, 2.0, n_hidden))

    def init_state(self, batch_size=None, **kwargs):
        shape = self.out_size if batch_size is None else (batch_size, *self.out_size)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        decay = braintrace.element_wise(self.tau.value, weight_fn=jax.nn.sigmoid)
        drive = braintrace.matmul(x, self.weight.value, self.bias.value)
        self.h.value = decay * self.h.value + jnp.tanh(drive)
        return self.h.value


class Net(brainstate.nn.Module):
    def __init__(self, cell, n_hidden=5, n_out=2):
        super().__init__()
        self.cell = cell
        self.readout = brainstate.ParamState(jnp.linspace(-1.0, 1.0, n_hidden * n_out).reshape(n_hidden, n_out))

    def update(self, x):
        return braintrace.matmul(self.cell(x), self.readout.value)


def inputs(shape=(7, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def param_grads(model, params, x):
    def loss(x):
        return jnp.sum(model(x) ** 2)

    return brainstate.transform.grad(loss, grad_states=params)(x)


def assert_trees_equal(a, b):
    leaves_a, def_a = jax.tree.flatten(a)
    leaves_b, def_b = jax.tree.flatten(b)
    assert def_a == def_b
    for u, v in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------- observe-only
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("update", ["none", "ema"])
def test_outputs_and_gradients_are_bit_identical(compiled, update):
    bare = Linear(seed=1)
    inner = Linear(seed=1)
    wrapped = CodingLayer(inner, K=5, update=update, temperature=0.5)
    run_bare, run_wrapped = bare, wrapped
    grad_bare = lambda x: param_grads(bare, bare.states(brainstate.ParamState), x)  # noqa: E731
    grad_wrapped = lambda x: param_grads(wrapped, inner.states(brainstate.ParamState), x)  # noqa: E731
    if compiled:
        run_bare, run_wrapped = brainstate.transform.jit(bare), brainstate.transform.jit(wrapped)
        grad_bare, grad_wrapped = brainstate.transform.jit(grad_bare), brainstate.transform.jit(grad_wrapped)
    for seed in range(3):
        x = inputs(seed=seed)
        y_bare, y_wrapped = run_bare(x), run_wrapped(x)
        assert y_bare.dtype == y_wrapped.dtype
        np.testing.assert_array_equal(y_bare, y_wrapped)
        assert_trees_equal(grad_bare(x), grad_wrapped(x))
        assert wrapped.last_trace is not None
    assert wrapped.states(brainstate.ParamState).keys() == {("layer", "weight"), ("layer", "bias")}


def test_returns_the_wrapped_output_object():
    out = {"a": jnp.ones((2, 4)), "b": 3}

    class PyTreeOut(brainstate.nn.Module):
        def update(self, x):
            return out

    layer = CodingLayer(PyTreeOut(), K=4, coding_dim=4, reducer=lambda o: (o["a"], {"method": "pick_a"}))
    assert layer(None) is out
    assert layer.last_trace.reduction_meta == {"method": "pick_a"}


def test_recurrent_cell_sequence_is_bit_identical_under_for_loop():
    xs = inputs((12, 4, 3), seed=3)
    bare = LeakyCell(seed=2)
    wrapped = CodingLayer(LeakyCell(seed=2), K=6, update="ema")
    brainstate.nn.init_all_states(bare, 4)
    brainstate.nn.init_all_states(wrapped, 4)
    assert wrapped.trace_slot.value.trace.soft_code.probs.shape == (4, 6)  # shaped by init_state
    ys_bare = brainstate.transform.for_loop(bare, xs)
    ys_wrapped = brainstate.transform.for_loop(wrapped, xs)
    np.testing.assert_array_equal(ys_bare, ys_wrapped)
    trace = wrapped.last_trace
    assert trace.soft_code.probs.shape == (4, 6)
    np.testing.assert_array_equal(trace.reduced, ys_wrapped[-1])


@pytest.mark.parametrize("algorithm", [braintrace.D_RTRL, braintrace.ES_D_RTRL])
def test_online_learner_gradients_unchanged(algorithm):
    xs = inputs((10, 3), seed=4)
    graphs = []

    def online(model):
        brainstate.nn.init_all_states(model)
        learner = algorithm(model)
        graphs.append(learner.compile_graph(xs[0]))
        return learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")

    bare = Net(LeakyCell(seed=5))
    wrapped = Net(CodingLayer(LeakyCell(seed=5), K=4, update="ema"))
    expected = online(bare)
    actual = online(wrapped)

    def relation_profile(graph):
        return sorted((str(r.primitive), tuple(p for p in r.trainable_paths["weight"] if p != "layer"),
                       tuple(g.index for g in r.hidden_groups)) for r in graph.hidden_param_op_relations)

    assert relation_profile(graphs[0]) == relation_profile(graphs[1])
    assert len(graphs[0].hidden_groups) == len(graphs[1].hidden_groups)
    renamed = {tuple(p for p in path if p != "layer"): g for path, g in actual.items()}
    assert renamed.keys() == expected.keys()
    for path in expected:
        assert_trees_equal(expected[path], renamed[path])
    trace = wrapped.cell.last_trace
    assert trace is not None and trace.soft_code.probs.shape == (4,)
    np.testing.assert_array_equal(trace.reduced, wrapped.cell.layer.h.value)
    assert wrapped.cell.coding_error_count == 0


# ---------------------------------------------------------------- statistics and storage
def test_trace_matches_soft_assign_and_statistics():
    layer = CodingLayer(Linear(), K=5, temperature=0.3)
    assert layer.last_trace is None
    assert layer.utilization() is None and layer.mean_entropy() is None
    assert layer.mean_code_length() is None and layer.mean_commitment_distance() is None
    x = inputs()
    y = layer(x)
    trace = layer.last_trace
    assert isinstance(trace, CodingTrace)
    code, inter = soft_assign(y, layer.codebook.centers.value, temperature=0.3)
    np.testing.assert_array_equal(trace.soft_code.probs, code.probs)
    np.testing.assert_array_equal(trace.chosen_center_indices, inter["chosen_center_indices"])
    chosen = np.asarray(inter["chosen_center_indices"])
    assert layer.utilization() == len(np.unique(chosen)) / 5
    assert isinstance(layer.mean_entropy(), float)
    np.testing.assert_allclose(layer.mean_entropy(), np.mean(code.entropy), rtol=1e-6)
    np.testing.assert_allclose(layer.mean_code_length(), np.mean(code.best_length), rtol=1e-6)
    np.testing.assert_allclose(layer.mean_commitment_distance(), np.mean(inter["commitment_distances"]), rtol=1e-6)
    layer.clear_last_trace()
    assert layer.last_trace is None and layer.utilization() is None


def test_jit_compiles_once_and_stores_each_step():
    inner = Linear()
    layer = CodingLayer(inner, K=4)
    step = brainstate.transform.jit(layer)
    traces = []
    for seed in range(4):
        x = inputs(seed=seed)
        step(x)
        traces.append(layer.last_trace)
        eager, _ = soft_assign(inner(x), layer.codebook.centers.value)
        np.testing.assert_allclose(layer.last_trace.soft_code.probs, eager.probs, rtol=1e-6)
    assert inner.calls == 1 + 4  # one trace, plus the four eager reference calls
    assert not np.array_equal(traces[0].reduced, traces[1].reduced)


def test_first_call_under_jit_then_batch_change():
    inner = Linear()
    layer = CodingLayer(inner, K=4)
    step = brainstate.transform.jit(layer)
    step(inputs((7, 3)))
    step(inputs((7, 3), seed=1))
    assert inner.calls == 1
    step(inputs((2, 3)))
    assert layer.last_trace.soft_code.probs.shape == (2, 4)
    layer(inputs((9, 3)))
    assert layer.last_trace.soft_code.probs.shape == (9, 4)


def test_ema_codebook_updates_inside_jit():
    layer = CodingLayer(Linear(), K=4, update="ema", decay=0.5)
    before = layer.codebook.centers.value
    brainstate.transform.jit(layer)(inputs())
    assert not np.array_equal(before, layer.codebook.centers.value)
    assert layer.states(brainstate.ParamState).keys() == {("layer", "weight"), ("layer", "bias")}


def test_spatial_mean_with_projection_for_conv_outputs():
    class Conv(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.out_size = (6, 6, 8)
            self.kernel = brainstate.ParamState(jnp.ones((3, 3, 2, 8)) * 0.1)

        def update(self, x):
            return jax.lax.conv_general_dilated(x, self.kernel.value, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

    layer = CodingLayer(Conv(), K=5, reducer="spatial_mean", coding_dim=3)
    brainstate.nn.init_all_states(layer, 2)
    x = inputs((2, 6, 6, 2))
    y = brainstate.transform.jit(layer)(x)
    assert y.shape == (2, 6, 6, 8)
    trace = layer.last_trace
    assert trace.reduced.shape == (2, 3) and trace.soft_code.probs.shape == (2, 5)
    assert trace.reduction_meta["method"] == "spatial_mean+random_projection"
    assert layer.codebook.code_dim == 3
    # Without a reducer, every spatial position is a sample.
    per_position = CodingLayer(Conv(), K=5)
    per_position(x)
    assert per_position.last_trace.soft_code.probs.shape == (2, 6, 6, 5)


# ---------------------------------------------------------------- switches
def test_bypass_nests_and_clears_the_cache():
    layer = CodingLayer(Linear(), K=4)
    x = inputs()
    layer(x)
    assert layer.last_trace is not None
    with layer.bypass():
        assert not layer.is_coding_active and layer.coding_enabled
        with layer.bypass():
            assert not layer.is_coding_active
        assert not layer.is_coding_active
        y = layer(x)
        assert layer.last_trace is None
    assert layer.is_coding_active
    np.testing.assert_array_equal(y, layer.layer(x))
    layer(x)
    assert layer.last_trace is not None


def test_bypass_exits_on_error():
    layer = CodingLayer(Linear(), K=4)
    with pytest.raises(RuntimeError):
        with layer.bypass():
            raise RuntimeError("inside")
    assert layer.is_coding_active


def test_disable_enable_eager():
    layer = CodingLayer(Linear(), K=4)
    x = inputs()
    layer(x)
    layer.disable_coding()
    assert not layer.coding_enabled and not layer.is_coding_active
    assert layer.last_trace is None  # cleared immediately
    layer(x)
    assert layer.last_trace is None
    layer.enable_coding()
    layer(x)
    assert layer.last_trace is not None


def test_switches_retrace_under_jit():
    inner = Linear()
    layer = CodingLayer(inner, K=4)
    step = brainstate.transform.jit(layer)
    x = inputs()
    step(x)
    step(x)
    assert inner.calls == 1 and layer.last_trace is not None
    layer.disable_coding()
    step(x)
    assert inner.calls == 2 and layer.last_trace is None
    step(x)
    assert inner.calls == 2
    layer.enable_coding()
    step(x)
    assert inner.calls == 3 and layer.last_trace is not None
    with layer.bypass():
        step(x)
        assert layer.last_trace is None
    assert inner.calls == 4
    step(x)
    assert inner.calls == 5 and layer.last_trace is not None


def test_bypass_inside_a_jitted_function():
    inner = Linear()
    layer = CodingLayer(inner, K=4)

    @brainstate.transform.jit
    def step(x):
        with layer.bypass():
            y = layer(x)
        return y

    step(inputs())
    assert layer.last_trace is None and layer.is_coding_active


# ---------------------------------------------------------------- hooks
def test_hooks_run_after_eager_calls_and_errors_are_suppressed():
    layer = CodingLayer(Linear(), K=4)
    seen = []

    def broken(trace):
        raise KeyError("hook failure")

    def good(trace):
        seen.append(np.asarray(trace.soft_code.probs).shape)

    layer.add_diagnostics_hook(broken)
    layer.add_diagnostics_hook(good)
    x = inputs()
    with pytest.warns(RuntimeWarning, match="hook failure"):
        y = layer(x)
    np.testing.assert_array_equal(y, layer.layer(x))
    assert seen == [(7, 4)] and layer.hook_error_count == 1
    assert "KeyError" in layer.last_hook_error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)  # warned once only
    assert layer.hook_error_count == 2 and len(seen) == 2
    layer.remove_diagnostics_hook(broken)
    layer.remove_diagnostics_hook(broken)  # unknown hooks are ignored
    layer(x)
    assert layer.hook_error_count == 2 and len(seen) == 3
    with pytest.raises(TypeError):
        layer.add_diagnostics_hook("not callable")


def test_hooks_under_jit_are_opt_in():
    x = inputs()
    quiet = CodingLayer(Linear(), K=4)
    quiet_seen = []
    quiet.add_diagnostics_hook(quiet_seen.append)
    brainstate.transform.jit(quiet)(x)
    assert quiet_seen == []

    loud = CodingLayer(Linear(), K=4, hooks_under_jit=True)
    loud_seen = []
    loud.add_diagnostics_hook(loud_seen.append)
    loud.add_diagnostics_hook(lambda trace: 1 / 0)
    step = brainstate.transform.jit(loud)
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        step(x)
        step(inputs(seed=1))
        jax.effects_barrier()
    assert len(loud_seen) == 2 and loud.hook_error_count == 2
    assert isinstance(loud_seen[-1], CodingTrace)
    np.testing.assert_allclose(loud_seen[-1].soft_code.probs, loud.last_trace.soft_code.probs)


# ---------------------------------------------------------------- fail-open
def test_reducer_that_raises_is_bypassed_and_recorded():
    def broken(x):
        raise RuntimeError("reducer failure")

    layer = CodingLayer(Linear(), K=4, reducer=broken)
    x = inputs()
    y = layer(x)
    np.testing.assert_array_equal(y, layer.layer(x))
    meta = layer.last_trace.reduction_meta
    assert meta["method"] == "bypass" and meta["reason"] == "reduction_error"
    assert "reducer failure" in meta["error"]
    np.testing.assert_array_equal(layer.last_trace.reduced, y)  # coded as it is
    y = brainstate.transform.jit(layer)(x)
    assert layer.last_trace.reduction_meta["method"] == "bypass"


def test_unusable_output_skips_coding_with_one_warning():
    def wrong_width(x):
        return x[..., :2], {"method": "slice"}

    layer = CodingLayer(Linear(), K=4, reducer=wrong_width)  # the codebook has D = 6
    x = inputs()
    with pytest.warns(RuntimeWarning, match="coding skipped"):
        y = layer(x)
    np.testing.assert_array_equal(y, layer.layer(x))
    assert layer.last_trace is None and layer.coding_error_count == 1
    assert "last axis" in layer.last_coding_error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        brainstate.transform.jit(layer)(x)
    assert layer.coding_error_count == 2 and layer.last_trace is None

    # A reducer failure whose fallback (the raw output) does not fit either.
    layer = CodingLayer(Linear(), K=4, coding_dim=3, reducer=lambda x: 1 / 0)
    with pytest.warns(RuntimeWarning):
        layer(x)
    assert layer.last_trace is None and layer.coding_error_count == 1


def test_raw_jax_jit_cannot_store_but_does_not_break():
    layer = CodingLayer(Linear(), K=4)
    x = inputs()
    with pytest.warns(RuntimeWarning, match="brainstate"):
        y = jax.jit(layer)(x)
    np.testing.assert_array_equal(y, layer.layer(x))
    assert layer.coding_error_count == 1 and layer.last_trace is None
    layer(x)
    assert layer.last_trace is not None


def test_constructor_errors():
    with pytest.raises(TypeError, match="callable"):
        CodingLayer(3)
    with pytest.raises(ValueError, match="coding_dim"):
        CodingLayer(Linear(), coding_dim=0)
    with pytest.raises(ValueError, match="restart_after"):
        CodingLayer(Linear(), restart_after=5)  # needs update='ema'
    with pytest.raises(ValueError, match="restart_after"):
        CodingLayer(Linear(), update="ema", restart_after=0)
    with pytest.raises(ValueError, match="K"):
        CodingLayer(Linear(), K=0)
    with pytest.raises(ValueError, match="temperature"):
        CodingLayer(Linear(), temperature=-1.0)
    with pytest.raises(ValueError, match="eps"):
        CodingLayer(Linear(), eps=float("nan"))
    with pytest.raises(ValueError, match="update"):
        CodingLayer(Linear(), update="adam")
    with pytest.raises(ValueError, match="reducer"):
        CodingLayer(Linear(), reducer="max")
    layer = CodingLayer(brainstate.nn.Identity(), K=4, coding_dim=2)
    assert layer.codebook.code_dim == 2 and layer.out_size is None


def test_fit_trace_and_reset():
    layer = CodingLayer(Linear(), K=4)
    assert layer.fit_trace(jax.ShapeDtypeStruct((3, 6), jnp.float32))
    assert layer.trace_slot.value.trace.reduced.shape == (3, 6)
    assert layer.last_trace is None
    assert not layer.fit_trace(jax.ShapeDtypeStruct((3, 5), jnp.float32))
    layer(inputs((3, 3)))
    assert layer.last_trace is not None
    brainstate.nn.reset_all_states(layer)
    assert layer.last_trace is None
