"""The speed-motivated rewrites of issue 14 compute the same numbers as the plain contractions.

* ``executor.apply_jacobian`` unrolls ``Σ_b D[..., a, b] ε[..., c, b]`` into multiply-adds for
  a few stacked states (LSTM's ``h`` and ``c``);
* the dense op's D-RTRL ``trace_contract`` sums ``Σ_lead Σ_s ε[..., o, i, s] L[..., o, s]``
  one leading slice at a time on CPU.

The references are NumPy einsums in float64, independent of the code under test.
"""

import numpy as np
import pytest
import jax.numpy as jnp

from braintrace.algorithms.executor import apply_jacobian
from braintrace.ops.matmul import etp_matmul_p
from braintrace.ops.primitive import etp_rule_of


@pytest.mark.parametrize("states", [1, 2, 3, 9])
def test_apply_jacobian_matches_einsum(states):
    rng = np.random.default_rng(states)
    jacobian = rng.normal(size=(4, 5, states, states)).astype(np.float32)
    trace = rng.normal(size=(4, 5, 6, states)).astype(np.float32)
    expected = np.einsum("...ab,...cb->...ca", jacobian.astype(np.float64), trace.astype(np.float64))
    actual = apply_jacobian(jnp.asarray(jacobian), jnp.asarray(trace), varshape_rank=2)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)


def test_apply_jacobian_keeps_extra_trace_axes():
    # A (*V, *C, S) trace with two C axes (a conv kernel) is flattened and restored.
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(3, 2, 2)).astype(np.float32)
    trace = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
    expected = np.einsum("vab,vxyb->vxya", jacobian.astype(np.float64), trace.astype(np.float64))
    actual = apply_jacobian(jnp.asarray(jacobian), jnp.asarray(trace), varshape_rank=1)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lead,states", [((7,), 1), ((7,), 2), ((2, 3), 1), ((), 2)])
def test_dense_trace_contract_matches_einsum(lead, states):
    rng = np.random.default_rng(len(lead) + states)
    n_in, n_out = 5, 4
    trace = {"weight": rng.normal(size=lead + (n_out, n_in, states)).astype(np.float32),
             "bias": rng.normal(size=lead + (n_out, states)).astype(np.float32)}
    signal = rng.normal(size=lead + (n_out, states)).astype(np.float32)
    rule = etp_rule_of(etp_matmul_p)
    params = dict(has_bias=True, weight_fn=None, bias_fn=None)
    got = rule.trace_contract({k: jnp.asarray(v) for k, v in trace.items()}, jnp.asarray(signal), {}, params)
    t64, s64 = trace["weight"].astype(np.float64), signal.astype(np.float64)
    lead_axes = tuple(range(len(lead)))
    expected_weight = np.einsum("...ois,...os->...io", t64, s64).sum(axis=lead_axes)
    expected_bias = np.einsum("...os,...os->...o", trace["bias"].astype(np.float64), s64).sum(axis=lead_axes)
    np.testing.assert_allclose(np.asarray(got["weight"]), expected_weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["bias"]), expected_bias, rtol=1e-5, atol=1e-5)
    assert got["weight"].shape == (n_in, n_out)
