"""`braintrace.nn.LoRA`: parameter layout and init convention, x@B@A (+ base module), brainstate
state initialisation / Vmap / jit, exact online gradients of both factors, clear errors."""

import brainstate
import braintools
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads

TOL = dict(rtol=1e-5, atol=1e-6)
I, R, O = 6, 2, 4


def test_parameters_and_init_convention():
    brainstate.random.seed(0)
    lora = bnn.LoRA(40, 3, 5)
    assert isinstance(lora.weight, brainstate.ParamState)
    assert set(lora.weight.value) == {"lora_b", "lora_a"}
    b, a = lora.weight.value["lora_b"], lora.weight.value["lora_a"]
    assert b.shape == (40, 3) and a.shape == (3, 5)
    # B from LecunNormal (std 1/sqrt(fan_in) = 1/sqrt(40)), A zero: the adapter starts as the zero map
    assert 0.5 / np.sqrt(40) < float(jnp.std(b)) < 1.5 / np.sqrt(40)
    np.testing.assert_array_equal(a, 0.0)
    np.testing.assert_array_equal(lora(jnp.ones(40)), 0.0)
    assert len(lora.states(brainstate.ParamState)) == 1


def test_kernel_init_and_param_type():
    lora = bnn.LoRA(I, R, O, kernel_init=braintools.init.Constant(0.3), param_type=brainstate.FakeState)
    assert type(lora.weight) is brainstate.FakeState
    np.testing.assert_array_equal(lora.weight.value["lora_b"], 0.3 * jnp.ones((I, R)))


@pytest.mark.parametrize("shape", [(I,), (5, I), (2, 3, I)])
def test_forward_is_x_b_a_plus_base(shape):
    brainstate.random.seed(1)
    base = bnn.Linear(I, O)
    lora = bnn.LoRA(I, R, O, base_module=base)
    lora.weight.value = dict(lora.weight.value, lora_a=brainstate.random.randn(R, O))
    x = brainstate.random.randn(*shape)
    p, q = lora.weight.value, base.weight.value
    np.testing.assert_allclose(lora(x), (x @ p["lora_b"]) @ p["lora_a"] + x @ q["weight"] + q["bias"], **TOL)
    alone = bnn.LoRA(I, R, O)
    alone.weight.value = p
    np.testing.assert_allclose(alone(x), (x @ p["lora_b"]) @ p["lora_a"], **TOL)


def test_vmap_new_states_vmap_module_and_jit():
    brainstate.random.seed(2)
    lora = bnn.LoRA(I, R, O)
    lora.weight.value = dict(lora.weight.value, lora_a=brainstate.random.randn(R, O))
    x = brainstate.random.randn(5, I)
    expected = x @ lora.weight.value["lora_b"] @ lora.weight.value["lora_a"]
    np.testing.assert_allclose(brainstate.nn.Vmap(lora)(x), expected, **TOL)
    np.testing.assert_allclose(brainstate.transform.jit(lambda v: lora(v))(x), expected, **TOL)

    model = Leaky()

    @brainstate.transform.vmap_new_states(state_tag="lanes", axis_size=4)
    def init_lanes():
        brainstate.nn.init_all_states(model)

    init_lanes()
    lanes = brainstate.nn.Vmap(model, vmap_states="lanes")
    xs = brainstate.random.randn(3, 4, I)
    got = jnp.stack([lanes(x) for x in xs])
    brainstate.nn.init_all_states(model, 4)
    np.testing.assert_allclose(got, jnp.stack([model(x) for x in xs]), **TOL)


def test_bad_arguments_name_the_layer_and_argument():
    with pytest.raises(ValueError, match="`LoRA`.*`in_size`.*`in_features` = 6"):
        bnn.LoRA(I, R, O, in_size=(3, I + 1))
    with pytest.raises(ValueError, match="`LoRA`.*`lora_rank`"):
        bnn.LoRA(I, 0, O)
    with pytest.raises(ValueError, match=r"`LoRA`.*`kernel_init`.*\(6, 2\)"):
        bnn.LoRA(I, R, O, kernel_init=jnp.ones((R, I)))
    with pytest.raises(ValueError, match="`LoRA`.*`base_module`"):
        bnn.LoRA(I, R, O, base_module=3)
    lora = bnn.LoRA(I, R, O, in_size=(3, I))
    assert lora.out_size == (3, O)
    with pytest.raises(ValueError, match=rf"`LoRA`.*`in_features` = {I}.*\(2, {I + 1}\)"):
        lora(jnp.ones((2, I + 1)))


class Leaky(brainstate.nn.Module):
    """``h = 0.9 h + tanh(LoRA(x) + Linear(x))``; the base layer is trained online too."""

    def __init__(self):
        super().__init__()
        self.inp = bnn.LoRA(I, R, O, base_module=bnn.Linear(I, O))
        # a non-zero A, so that both factors have a gradient
        self.inp.weight.value = dict(self.inp.weight.value, lora_a=0.5 * brainstate.random.randn(R, O))
        self.out = bnn.Linear(O, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, O) if batch_size else (O,)))

    def update(self, x):
        self.h.value = 0.9 * self.h.value + jnp.tanh(self.inp(x))
        return self.out(self.h.value)


@pytest.mark.parametrize("batch", [None, 3])
def test_d_rtrl_equals_bptt_for_both_factors(batch):
    brainstate.random.seed(3)
    model = Leaky()
    xs = brainstate.random.randn(10, *((batch, I) if batch else (I,)))
    learner = braintrace.compile(model, "d_rtrl", xs[0], batch_size=batch)
    brainstate.nn.init_all_states(model, *([batch] if batch else []))
    expected = bptt_grads(model, xs)
    actual = online_grads(learner, xs)
    path = ("inp", "weight")
    for key in ("lora_b", "lora_a"):
        assert float(jnp.linalg.norm(expected[path][key])) > 1e-2, key
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
