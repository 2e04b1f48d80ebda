# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The linear layers and recurrent cells accept braintrace 0.2.8's constructor signatures and
work under brainstate's state initialisation, ``vmap_new_states`` + ``Vmap`` and ``jit``."""

import inspect

import brainstate
import braintools
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn as bnn

init = braintools.init
PARAM = brainstate.ParamState

# (name, default) in order; a default given as a class means "an instance of it".
SIGNATURES = {
    "Linear": [("in_size", None), ("out_size", None), ("w_init", init.KaimingNormal), ("b_init", init.ZeroInit),
               ("w_mask", None), ("name", None), ("param_type", PARAM)],
    "SignedWLinear": [("in_size", None), ("out_size", None), ("w_init", init.KaimingNormal), ("w_sign", None),
                      ("name", None), ("param_type", PARAM)],
    "ScaledWSLinear": [("in_size", None), ("out_size", None), ("w_init", init.KaimingNormal),
                       ("b_init", init.ZeroInit), ("w_mask", None), ("ws_gain", True), ("eps", 1e-4),
                       ("name", None), ("param_type", PARAM)],
    "ValinaRNNCell": [("in_size", None), ("out_size", None), ("state_init", init.ZeroInit),
                      ("w_init", init.XavierNormal), ("b_init", init.ZeroInit), ("activation", "relu"),
                      ("name", None)],
    "URLSTMCell": [("in_size", None), ("out_size", None), ("w_init", init.XavierNormal),
                   ("state_init", init.ZeroInit), ("activation", "tanh"), ("name", None)],
    "LRUCell": [("d_model", None), ("d_hidden", None), ("r_min", 0.0), ("r_max", 1.0), ("max_phase", 6.28)],
    "MinimalRNNCell": [("in_size", None), ("out_size", None), ("w_init", init.Orthogonal),
                       ("b_init", init.ZeroInit), ("state_init", init.ZeroInit), ("phi", None), ("name", None)],
}
for _name, _w in [("GRUCell", init.Orthogonal), ("LSTMCell", init.XavierNormal), ("MGUCell", init.Orthogonal),
                  ("CFNCell", init.Orthogonal)]:
    SIGNATURES[_name] = [("in_size", None), ("out_size", None), ("w_init", _w), ("b_init", init.ZeroInit),
                         ("state_init", init.ZeroInit), ("activation", "tanh"), ("name", None)]
for _name in ("MiniGRU", "MiniLSTM"):
    SIGNATURES[_name] = [("in_size", None), ("out_size", None), ("w_init", init.Orthogonal),
                         ("b_init", init.ZeroInit), ("state_init", init.ZeroInit), ("name", None)]

CELLS = ["ValinaRNNCell", "GRUCell", "LSTMCell", "MGUCell", "URLSTMCell", "MiniGRU", "MiniLSTM",
         "MinimalRNNCell", "CFNCell"]


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_constructor_signature_matches_the_published_one(name):
    params = list(inspect.signature(getattr(bnn, name).__init__).parameters.values())[1:]
    assert [p.name for p in params] == [n for n, _ in SIGNATURES[name]]
    for p, (arg, default) in zip(params, SIGNATURES[name], strict=True):
        if default is None and arg in ("in_size", "out_size", "d_model", "d_hidden"):
            assert p.default is inspect.Parameter.empty, arg
        elif inspect.isclass(default) and default is not PARAM:
            assert type(p.default) is default, (arg, p.default)
        else:
            assert p.default == default, (arg, p.default)
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, arg


def test_cells_accept_positional_published_arguments():
    bnn.ValinaRNNCell(3, 4, init.ZeroInit(), init.XavierNormal(), init.ZeroInit(), "tanh", "rnn")
    bnn.GRUCell(3, 4, init.Orthogonal(), init.ZeroInit(), init.ZeroInit(), "relu", "gru")
    bnn.Linear(3, 4, init.KaimingNormal(), None, jnp.ones((3, 4)), "lin", PARAM)


def _make(name):
    if name == "LRUCell":
        return bnn.LRUCell(3, 6), 3
    return getattr(bnn, name)(3, 5), 5


@pytest.mark.parametrize("name", CELLS + ["LRUCell"])
@pytest.mark.parametrize("batch_size", [None, 4])
def test_init_all_states_and_output_shape(name, batch_size):
    brainstate.random.seed(0)
    cell, n_out = _make(name)
    brainstate.nn.init_all_states(cell, batch_size)
    lead = () if batch_size is None else (batch_size,)
    for state in cell.states(brainstate.HiddenState).values():
        assert state.value.shape[:-1] == lead
    x = jnp.ones(lead + (3,))
    y = cell(x)
    assert y.shape == lead + (n_out,)
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", CELLS + ["LRUCell"])
def test_vmap_new_states_and_vmap_module_match_a_batch(name):
    brainstate.random.seed(1)
    cell, _ = _make(name)

    @brainstate.transform.vmap_new_states(state_tag="lanes", axis_size=4)
    def init_lanes():
        brainstate.nn.init_all_states(cell)

    init_lanes()
    model = brainstate.nn.Vmap(cell, vmap_states="lanes")
    xs = brainstate.random.randn(3, 4, 3)
    lanes = [model(x) for x in xs]
    # The same cell run batched (batch axis 0) gives the same outputs.
    brainstate.nn.init_all_states(cell, 4)
    batched = [cell(x) for x in xs]
    np.testing.assert_allclose(jnp.stack(lanes), jnp.stack(batched), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELLS + ["LRUCell"])
def test_jit_step_matches_eager(name):
    brainstate.random.seed(2)
    cell, _ = _make(name)
    brainstate.nn.init_all_states(cell, 2)
    xs = brainstate.random.randn(3, 2, 3)
    step = brainstate.transform.jit(lambda x: cell(x))
    jitted = jnp.stack([step(x) for x in xs])
    cell.reset_state(2)
    eager = jnp.stack([cell(x) for x in xs])
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", [
    lambda: bnn.Linear(3, 4, w_mask=jnp.eye(3, 4)),
    lambda: bnn.SignedWLinear(3, 4, w_sign=-jnp.ones((3, 4))),
    lambda: bnn.ScaledWSLinear(3, 4, w_mask=jnp.eye(3, 4)),
])
def test_linear_layers_under_vmap_and_jit(factory):
    brainstate.random.seed(3)
    layer = factory()
    x = brainstate.random.randn(5, 3)
    expected = layer(x)
    np.testing.assert_allclose(brainstate.nn.Vmap(layer)(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(brainstate.transform.jit(lambda v: layer(v))(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_state_init_sets_the_initial_hidden_value(name):
    cell = getattr(bnn, name)(3, 5, state_init=init.Constant(0.25))
    brainstate.nn.init_all_states(cell, 2)
    hidden = cell.states(brainstate.HiddenState)
    assert hidden
    for state in hidden.values():
        np.testing.assert_array_equal(state.value, jnp.full((2, 5), 0.25))
    cell(jnp.ones((2, 3)))
    cell.reset_state(2)
    for state in hidden.values():
        np.testing.assert_array_equal(state.value, jnp.full((2, 5), 0.25))
    array_init = getattr(bnn, name)(3, 5, state_init=jnp.arange(5.0))
    array_init.init_state()
    for state in array_init.states(brainstate.HiddenState).values():
        np.testing.assert_array_equal(state.value, jnp.arange(5.0))


def test_state_init_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="GRUCell.*state_init"):
        bnn.GRUCell(3, 5, state_init=jnp.ones(4))


@pytest.mark.parametrize("name", [n for n in CELLS if "activation" in dict(SIGNATURES[n])])
def test_activation_name_equals_the_function(name):
    brainstate.random.seed(4)
    by_name = getattr(bnn, name)(3, 5, activation="tanh")
    brainstate.random.seed(4)
    by_function = getattr(bnn, name)(3, 5, activation=jnp.tanh)
    brainstate.random.seed(4)
    other = getattr(bnn, name)(3, 5, activation="relu")
    outs = []
    for cell in (by_name, by_function, other):
        brainstate.nn.init_all_states(cell, 2)
        outs.append(jnp.stack([cell(x) for x in jnp.linspace(-1.0, 1.0, 12).reshape(2, 2, 3)]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


@pytest.mark.parametrize("name", [n for n in CELLS if "activation" in dict(SIGNATURES[n])])
def test_unknown_activation_name_lists_the_known_names(name):
    with pytest.raises(ValueError, match=rf"`{name}`.*'tanhh'.*relu.*sigmoid.*tanh"):
        getattr(bnn, name)(3, 5, activation="tanhh")
    with pytest.raises(TypeError, match="activation"):
        getattr(bnn, name)(3, 5, activation=3)


@pytest.mark.parametrize("name", CELLS)
def test_wrong_input_size_names_the_cell(name):
    cell = getattr(bnn, name)(3, 5)
    cell.init_state()
    with pytest.raises(ValueError, match=name):
        cell(jnp.ones(4))
