"""Item 3: cross-group coupling dropped by the traces is a warning naming weight and groups."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import DiagnosticKind as K

from ._helpers import bptt, online

XS = jnp.sin(jnp.linspace(0.0, 6.0, 24)).reshape(8, 3)


class Stacked(brainstate.nn.Module):
    """Two leaky layers coupled by a dense weight: ``h1 -> W2 -> h2``."""

    def __init__(self, upper_memory=True):
        super().__init__()
        self.upper_memory = upper_memory
        self.w1 = brainstate.ParamState(jnp.linspace(-0.8, 0.9, 12).reshape(3, 4))
        self.w2 = brainstate.ParamState(jnp.linspace(0.7, -0.6, 20).reshape(4, 5))

    def init_state(self, batch_size=None, **kwargs):
        self.h1 = brainstate.HiddenState(jnp.zeros(4))
        self.h2 = brainstate.HiddenState(jnp.zeros(5))

    def update(self, x):
        self.h1.value = 0.8 * self.h1.value + jnp.tanh(braintrace.matmul(x, self.w1.value))
        drive = jnp.tanh(braintrace.matmul(self.h1.value, self.w2.value))
        self.h2.value = (0.7 * self.h2.value + drive) if self.upper_memory else drive
        return self.h2.value


def records(model):
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="cross_group_coupling_dropped") if getattr(model, "upper_memory", True) \
            else _no_cross_group_warning():
        graph = braintrace.compile_etrace_graph(model, XS[0])
    return graph.explain(kind=K.CROSS_GROUP_COUPLING_DROPPED)


class _no_cross_group_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [w for w in self._log if "cross_group_coupling_dropped" in str(w.message)]


def test_dense_stacked_layers_warn_for_the_lower_weight_only():
    found = records(Stacked())
    assert [(r.level.value, r.weight_path, r.hidden_paths) for r in found] == [
        ("warning", ("w1",), (("h1",), ("h2",)))]
    assert found[0].context == {"group": 0, "downstream_group": 1}
    assert "`w1`" in found[0].message and "group 1" in found[0].message


def test_the_warning_is_truthful_lower_weight_approximate_upper_exact():
    """Without cascade traces (``cascade_max_elements=0``) the lower weight's later influence is dropped."""
    model = Stacked()
    with pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
        learner = braintrace.compile(model, "d_rtrl", XS[0], cascade_max_elements=0)
    expected = bptt(model, XS)
    grads = online(learner, XS)
    np.testing.assert_allclose(grads[("w2",)], expected[("w2",)], rtol=1e-4, atol=1e-6)
    relative = float(jnp.linalg.norm(grads[("w1",)] - expected[("w1",)]) / jnp.linalg.norm(expected[("w1",)]))
    assert relative > 0.05


def test_d_rtrl_carries_the_coupling_with_a_cascade_trace_and_is_exact():
    """The upper layer's recurrence is element-wise (``0.7 h2 + ...``): D-RTRL's default cascade makes ``w1`` exact."""
    import warnings

    model = Stacked()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cross_group_coupling_dropped warning
        learner = braintrace.compile(model, "d_rtrl", XS[0])
    (record,) = learner.graph.explain(kind=K.CROSS_GROUP_CASCADE)
    assert (record.level.value, record.weight_path, record.hidden_paths) == ("info", ("w1",), (("h1",), ("h2",)))
    expected = bptt(model, XS)
    grads = online(learner, XS)
    for path in (("w1",), ("w2",)):
        np.testing.assert_allclose(grads[path], expected[path], rtol=1e-4, atol=1e-6)


def test_memoryless_upper_group_is_exact_and_silent():
    model = Stacked(upper_memory=False)
    assert records(model) == ()
    learner = braintrace.compile(model, "d_rtrl", XS[0])
    expected = bptt(model, XS)
    grads = online(learner, XS)
    for path in (("w1",), ("w2",)):
        np.testing.assert_allclose(grads[path], expected[path], rtol=1e-4, atol=1e-6)


class ElementwiseAcrossLayers(brainstate.nn.Module):
    """``b`` (another shape) reads ``a`` element-wise through a mean: no dense weight."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.linspace(-0.5, 0.5, 12).reshape(3, 4))

    def init_state(self, batch_size=None, **kwargs):
        self.a = brainstate.HiddenState(jnp.zeros(4))
        self.b = brainstate.HiddenState(jnp.zeros(2))

    def update(self, x):
        self.a.value = 0.5 * self.a.value + braintrace.matmul(x, self.w.value)
        self.b.value = 0.9 * self.b.value + jnp.mean(self.a.value)
        return self.b.value


def test_element_wise_cross_layer_coupling_also_names_the_weight():
    with pytest.warns(UserWarning, match=r"\[warning\] hidden_coupling_dropped \(hidden a, b\)"):
        found = records(ElementwiseAcrossLayers())
    assert [(r.weight_path, r.hidden_paths) for r in found] == [(("w",), (("a",), ("b",)))]
