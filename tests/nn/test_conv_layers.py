"""`nn.Conv1d/2d/3d`: construction, forward vs lax, masks, errors, D-RTRL == BPTT, Vmap and jit."""

import brainstate
import braintools
import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import braintrace
import braintrace.nn as bnn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-5, atol=1e-5)


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def lax_forward(layer, x, kernel, bias=None):
    """The layer's convolution written with lax directly (batched input)."""
    ns = layer.num_spatial_dims
    sp = "DHW"[-ns:]
    dn = (f"NC{sp}", f"{sp}IO", f"NC{sp}") if layer.channel_first else (f"N{sp}C", f"{sp}IO", f"N{sp}C")
    y = lax.conv_general_dilated(x, kernel, layer.stride, layer.padding, layer.lhs_dilation, layer.rhs_dilation,
                                 dimension_numbers=dn, feature_group_count=layer.groups)
    if bias is not None:
        y = y + (bias.reshape((-1,) + (1,) * ns) if layer.channel_first else bias)
    return y


LAYERS = [
    ("1d", lambda: bnn.Conv1d((9, 2), 3, 3, b_init=braintools.init.Normal(0.0, 0.3)), (9, 2)),
    ("1d-channel-first-stride", lambda: bnn.Conv1d((2, 9), 4, 2, stride=2, padding="VALID", channel_first=True),
     (2, 9)),
    ("2d-groups-dilation", lambda: bnn.Conv2d((6, 5, 4), 6, (3, 2), rhs_dilation=(1, 2), groups=2,
                                              b_init=braintools.init.Normal(0.0, 0.3)), (6, 5, 4)),
    ("2d-channel-first-pad", lambda: bnn.Conv2d((2, 5, 6), 3, 3, padding=1, channel_first=True), (2, 5, 6)),
    ("3d", lambda: bnn.Conv3d((4, 4, 3, 2), 2, 2, b_init=braintools.init.Normal(0.0, 0.3)), (4, 4, 3, 2)),
]
LAYER_IDS = [c[0] for c in LAYERS]


@pytest.mark.parametrize("case", LAYERS, ids=LAYER_IDS)
def test_forward_matches_lax_batched_and_unbatched(case):
    brainstate.random.seed(0)
    _, make, in_size = case
    layer = make()
    p = layer.weight.value
    assert p["weight"].shape == layer.kernel_size + (layer.in_channels // layer.groups, layer.out_channels)
    assert ("bias" in p) == (p.get("bias") is not None)
    x = randn(1, (3,) + in_size)
    expected = lax_forward(layer, x, p["weight"], p.get("bias"))
    assert layer.out_size == expected.shape[1:]
    np.testing.assert_allclose(layer(x), expected, **TOL)
    np.testing.assert_allclose(layer(x[1]), expected[1], **TOL)
    np.testing.assert_allclose(brainstate.transform.jit(layer)(x), expected, **TOL)


def test_no_bias_by_default():
    assert sorted(bnn.Conv2d((8, 8, 3), 4, 3).weight.value) == ["weight"]


def test_w_mask_is_applied_inside_the_op():
    brainstate.random.seed(1)
    mask = (np.random.RandomState(2).rand(3, 2, 3) > 0.5).astype(np.float32)
    layer = bnn.Conv1d((8, 2), 3, 3, w_mask=mask, b_init=braintools.init.ZeroInit())
    x = randn(3, (2, 8, 2))
    kernel = layer.weight.value["weight"]
    np.testing.assert_allclose(layer(x), lax_forward(layer, x, kernel * mask), **TOL)
    params = layer.states(brainstate.ParamState)
    grads = brainstate.transform.grad(lambda: jnp.sum(jnp.sin(layer(x))), grad_states=params)()
    g = np.asarray(grads[("weight",)]["weight"])
    assert np.all(g[mask == 0] == 0.0) and np.all(np.abs(g[mask == 1]) > 0)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`Conv2d`: `w_mask` must have shape \(3, 3, 3, 4\)"):
        bnn.Conv2d((8, 8, 3), 4, 3, w_mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"`Conv2d`: `in_size`"):
        bnn.Conv2d((8, 3), 4, 3)
    with pytest.raises(ValueError, match=r"`Conv1d`: `groups` = 2"):
        bnn.Conv1d((8, 3), 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"`Conv1d`: `kernel_size`"):
        bnn.Conv1d((8, 3), 4, (3, 3))
    layer = bnn.Conv2d((8, 8, 3), 4, 3)
    with pytest.raises(ValueError, match=r"`Conv2d`: expected an input of shape \(8, 8, 3\).*\(2, 8, 3, 8\)"):
        layer(jnp.ones((2, 8, 3, 8)))


def test_units_flow_through():
    brainstate.random.seed(3)
    layer = bnn.Conv1d((8, 2), 3, 3, w_init=braintools.init.XavierNormal(unit=u.mA),
                       b_init=braintools.init.ZeroInit())
    y = layer(randn(4, (8, 2)))
    assert isinstance(y, u.Quantity) and y.unit == u.mA


class LeakyLayer(brainstate.nn.Module):
    """``h = 0.8 h + tanh(layer(x))`` with the state shaped like the layer's output."""

    def __init__(self, layer, leak=0.8):
        super().__init__()
        self.layer, self.leak = layer, leak

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(((batch_size,) if batch_size else ()) + self.layer.out_size))

    def update(self, x):
        self.h.value = self.leak * self.h.value + jnp.tanh(self.layer(x))
        return self.h.value


def against_bptt(model, xs, batch, algorithm, **options):
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    assert len(learner.graph.hidden_param_op_relations) == 1
    assert float(jnp.linalg.norm(expected[("layer", "weight")]["weight"])) > 0.1  # a live gradient
    return expected, online_grads(learner, xs)


@pytest.mark.parametrize("case", LAYERS, ids=LAYER_IDS)
def test_d_rtrl_equals_bptt(case):
    brainstate.random.seed(4)
    _, make, in_size = case
    batch = None if case[0] == "1d" else 2  # one unbatched model
    xs = randn(5, (6,) + ((batch,) if batch else ()) + in_size)
    expected, actual = against_bptt(LeakyLayer(make()), xs, batch, braintrace.D_RTRL)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_d_rtrl_equals_bptt_with_mask_and_masked_entries_get_zero():
    brainstate.random.seed(5)
    mask = (np.random.RandomState(6).rand(3, 3, 2, 3) > 0.4).astype(np.float32)
    layer = bnn.Conv2d((5, 5, 2), 3, 3, w_mask=mask, b_init=braintools.init.ZeroInit())
    xs = randn(7, (5, 2, 5, 5, 2))
    expected, actual = against_bptt(LeakyLayer(layer), xs, 2, braintrace.D_RTRL)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(actual[("layer", "weight")]["weight"])[mask == 0] == 0.0)


def test_es_d_rtrl_runs_and_is_exact_without_memory():
    brainstate.random.seed(6)
    xs = randn(8, (5, 2, 6, 5, 4))
    layer = bnn.Conv2d((6, 5, 4), 6, 3, groups=2, b_init=braintools.init.Normal(0.0, 0.3))
    expected, actual = against_bptt(LeakyLayer(layer, leak=0.0), xs, 2, braintrace.ES_D_RTRL, decay_or_rank=1)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_vmap_new_states_and_vmap_match_the_batched_model():
    brainstate.random.seed(7)
    layer = bnn.Conv2d((6, 5, 2), 3, 3, b_init=braintools.init.Normal(0.0, 0.3))
    model = LeakyLayer(layer)
    xs = randn(9, (3, 4, 6, 5, 2))  # (T, B, ...)

    @brainstate.transform.vmap_new_states(state_tag="new", axis_size=4)
    def init():
        brainstate.nn.init_all_states(model)

    init()
    lanes = brainstate.nn.Vmap(model, vmap_states="new")
    params = model.states(brainstate.ParamState)

    def loss(run):
        return lambda: jnp.sum(brainstate.transform.for_loop(lambda x: jnp.sum(run(x) ** 2), xs))

    snap = snapshot_states(model)
    y_lanes = brainstate.transform.jit(lanes)(xs[0])
    restore_states(model, snap)
    g_lanes = brainstate.transform.jit(brainstate.transform.grad(loss(lanes), grad_states=params))()
    brainstate.nn.init_all_states(model, 4)
    np.testing.assert_allclose(y_lanes, model(xs[0]), **TOL)
    brainstate.nn.init_all_states(model, 4)
    g_batch = brainstate.transform.grad(loss(model), grad_states=params)()
    assert float(jnp.linalg.norm(g_batch[("layer", "weight")]["weight"])) > 0.1
    assert_grads_close(g_batch, g_lanes, rtol=1e-5, atol=1e-5)
