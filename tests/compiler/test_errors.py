"""Bad models and bad input: named errors and diagnostic records."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace import DiagnosticKind as K


class NoHidden(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = bnn.Linear(3, 2)

    def update(self, x):
        return self.lin(x)


class ConstantWeight(brainstate.nn.Module):
    """The op's weight is a plain array, not a ParamState."""

    def __init__(self):
        super().__init__()
        self.w = jnp.ones((3, 4))
        self.cell = bnn.ValinaRNNCell(3, 4)

    def update(self, x):
        self.cell.h.value = self.cell.h.value + braintrace.matmul(x, self.w)
        return self.cell(x)


class ShapeMismatch(brainstate.nn.Module):
    """The op output (4,) is tiled into an (8,) hidden state."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((3, 4)))
        self.cell = bnn.ValinaRNNCell(3, 4)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(8))

    def update(self, x):
        y = braintrace.matmul(x, self.w.value)
        self.h.value = 0.5 * self.h.value + jnp.concatenate([y, y])
        return self.cell(x) + self.h.value[:4]


class WritesParam(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((3, 4)))
        self.h = brainstate.HiddenState(jnp.zeros(4))

    def update(self, x):
        self.w.value = self.w.value * 2.0
        self.h.value = 0.5 * self.h.value + braintrace.matmul(x, self.w.value)
        return self.h.value


class Recursive(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = bnn.ValinaRNNCell(3, 4)

    def update(self, x):
        braintrace.compile_etrace_graph(self.cell, x)
        return self.cell(x)


class PlainMatmul(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((3, 4)))
        self.cell = bnn.ValinaRNNCell(3, 4)

    def update(self, x):
        self.cell.h.value = self.cell.h.value + x @ self.w.value
        return self.cell(x)


def init(model):
    brainstate.nn.init_all_states(model)
    return model


def test_no_hidden_state_raises():
    with pytest.raises(braintrace.CompilationError, match="no HiddenState"):
        braintrace.compile_etrace_graph(init(NoHidden()), jnp.ones(3))


def test_not_a_module_raises():
    with pytest.raises(TypeError, match="brainstate.nn.Module"):
        braintrace.compile_etrace_graph(lambda x: x, jnp.ones(3))


def test_weight_not_a_paramstate_is_recorded():
    with pytest.warns(UserWarning, match="ParamState"):
        graph = braintrace.compile_etrace_graph(init(ConstantWeight()), jnp.ones(3))
    records = graph.explain(kind=K.RELATION_EXCLUDED_NO_PARAMSTATE)
    assert len(records) == 1 and records[0].primitive == "etp_matmul"
    assert [r.trainable_paths["weight"] for r in graph.hidden_param_op_relations] == [("cell", "W", "weight")]


def test_shape_mismatch_is_recorded():
    with pytest.warns(UserWarning, match="does not broadcast"):
        graph = braintrace.compile_etrace_graph(init(ShapeMismatch()), jnp.ones(3))
    (record,) = graph.explain(kind=K.RELATION_EXCLUDED_SHAPE_MISMATCH)
    assert record.weight_path == ("w",) and record.hidden_paths == (("h",),)
    assert record.context["y_shape"] == (4,) and record.context["varshape"] == (8,)
    assert ("w",) not in {p for r in graph.hidden_param_op_relations for p in r.trainable_paths.values()}


def test_param_write_raises_and_leaves_states():
    model = init(WritesParam())
    before = np.asarray(model.w.value)
    with pytest.raises(braintrace.NotSupportedError, match="`w`"):
        braintrace.compile_etrace_graph(model, jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(model.w.value), before)
    np.testing.assert_array_equal(np.asarray(model.h.value), np.zeros(4))


def test_recursive_compile_raises():
    with pytest.raises(NotImplementedError, match="recursive"):
        braintrace.compile_etrace_graph(init(Recursive()), jnp.ones(3))


def test_plain_jax_weight_on_hidden_path_warns():
    with pytest.warns(UserWarning, match="plain JAX ops"):
        graph = braintrace.compile_etrace_graph(init(PlainMatmul()), jnp.ones(3))
    (record,) = graph.explain(kind=K.PLAIN_WEIGHT_OPERATION)
    assert record.weight_path == ("w",)


class MatmulInScan(brainstate.nn.Module):
    """An ETP op inside a scan too long to unroll: with scan descent off, invisible to the compiler and reported."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((4, 4)) * 0.1)
        self.cell = bnn.ValinaRNNCell(3, 4)

    def update(self, x):
        h = self.cell(x)

        def body(carry, _):
            return jnp.tanh(braintrace.matmul(carry, self.w.value)), None

        self.cell.h.value, _ = jax.lax.scan(body, h, None, length=20)  # > scan_unroll_limit=16
        return self.cell.h.value


def test_etp_op_inside_control_flow_is_reported():
    policy = braintrace.ControlFlowPolicy(scan_descent="off")
    with pytest.warns(UserWarning, match="does not look inside control flow"):
        graph = braintrace.compile_etrace_graph(init(MatmulInScan()), jnp.ones(3), control_flow=policy)
    (skipped,) = graph.explain(kind=K.SCAN_DESCENT_SKIPPED)
    assert skipped.context == {"length": 20, "reason": "ControlFlowPolicy(scan_descent='off')"}
    (inside,) = graph.explain(kind=K.PRIMITIVE_INSIDE_CONTROL_FLOW)
    assert inside.context["inner_primitives"] == ["etp_matmul"] and inside.context["weights"] == ["w"]
    (weight,) = graph.explain(kind=K.WEIGHT_IN_CONTROL_FLOW)
    assert weight.weight_path == ("w",)
    assert graph.explain(kind=K.PLAIN_WEIGHT_OPERATION) == ()
