# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn

SURROGATES = ["sigmoid", "triangle", "fast_sigmoid"]


def test_forward_is_heaviside():
    x = jnp.array([-2.0, -1e-3, 0.0, 1e-3, 2.0])
    np.testing.assert_array_equal(braintrace.nn.spike_function(x), [0.0, 0.0, 1.0, 1.0, 1.0])


def test_integer_input_gives_float_spikes():
    spikes = braintrace.nn.spike_function(jnp.array([-1, 1]))
    assert jnp.issubdtype(spikes.dtype, jnp.floating)


@pytest.mark.parametrize("name", SURROGATES)
def test_gradient_is_the_surrogate_and_peaks_at_threshold(name):
    surrogate = braintrace.nn.as_surrogate(name)
    grad = jax.vmap(jax.grad(lambda x: braintrace.nn.spike_function(x, surrogate)))
    x = jnp.array([-0.5, -0.1, 0.0, 0.1, 0.5])
    g = grad(x)
    np.testing.assert_allclose(g, surrogate.derivative(x), rtol=1e-6)
    assert float(g[2]) > 0
    assert float(g[2]) == pytest.approx(float(jnp.max(g)))


@pytest.mark.parametrize("name", ["sigmoid", "triangle"])
def test_normalised_surrogates_integrate_to_one(name):
    surrogate = braintrace.nn.as_surrogate(name)
    x = np.linspace(-20.0, 20.0, 40_001)
    area = np.trapezoid(np.asarray(surrogate.derivative(jnp.asarray(x)), dtype=float), x)
    assert float(area) == pytest.approx(1.0, rel=1e-3)


def test_alpha_sets_the_width():
    narrow = braintrace.nn.TriangleSurrogate(alpha=4.0)
    wide = braintrace.nn.TriangleSurrogate(alpha=1.0)
    assert float(narrow.derivative(0.5)) == 0.0
    assert float(wide.derivative(0.5)) > 0.0


def test_works_under_jit_and_vmap():
    f = jax.jit(jax.vmap(jax.grad(lambda x: braintrace.nn.spike_function(x, "triangle"))))
    np.testing.assert_allclose(f(jnp.array([0.0, 2.0])), [1.0, 0.0])


def test_unknown_names_and_types_are_rejected():
    with pytest.raises(ValueError, match="Unknown surrogate"):
        braintrace.nn.as_surrogate("boxcar")
    with pytest.raises(TypeError):
        braintrace.nn.as_surrogate(3.0)
