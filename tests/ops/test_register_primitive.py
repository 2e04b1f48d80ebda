"""`braintrace.register_primitive` in the published calling convention: impl over the equation inputs."""

import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads


def _impl(x, w, b, *, gain):
    return gain * jnp.tanh(x @ w) + b


user_mm_p = braintrace.register_primitive(
    "test_published_user_mm", _impl, batched=True,
    trainable_invars_fn=lambda params: {"weight": 1, "bias": 2},
)
# An impl written for an unbatched x only: x.shape[0] is taken as the feature size.
unbatched_p = braintrace.register_primitive(
    "test_published_unbatched", lambda x, w: jnp.reshape(x, (x.shape[0],)) @ w,
)


def _rand(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_forward_grad_jit_equal_plain_jax():
    x, w, b = _rand(0, (4, 3)), _rand(1, (3, 5)), _rand(2, (5,))
    ref = _impl(x, w, b, gain=0.7)
    np.testing.assert_allclose(user_mm_p.bind(x, w, b, gain=0.7), ref, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda *a: user_mm_p.bind(*a, gain=0.7))(x, w, b), ref, rtol=1e-6)
    g = jax.grad(lambda *a: jnp.sum(jnp.sin(user_mm_p.bind(*a, gain=0.7))), (0, 1, 2))(x, w, b)
    g_ref = jax.grad(lambda *a: jnp.sum(jnp.sin(_impl(*a, gain=0.7))), (0, 1, 2))(x, w, b)
    for a, e in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    assert user_mm_p.batched is True


def test_vmap_over_x_keeps_the_etp_equation():
    xs, w, b = _rand(3, (2, 4, 3)), _rand(1, (3, 5)), _rand(2, (5,))
    fn = jax.vmap(lambda x: user_mm_p.bind(x, w, b, gain=1.0))
    np.testing.assert_allclose(fn(xs), _impl(xs, w, b, gain=1.0), rtol=1e-6)
    jaxpr = jax.make_jaxpr(fn)(xs)
    assert any(e.primitive is user_mm_p for e in jaxpr.eqns)


def test_vmap_of_an_impl_without_leading_axes_falls_back_with_a_warning():
    xs, w = _rand(4, (2, 3)), _rand(5, (3, 4))
    with pytest.warns(UserWarning, match="extra leading axis"):
        jaxpr = jax.make_jaxpr(jax.vmap(lambda x: unbatched_p.bind(x, w)))(xs)
        out = jax.vmap(lambda x: unbatched_p.bind(x, w))(xs)
    assert not any(e.primitive is unbatched_p for e in jaxpr.eqns)
    np.testing.assert_allclose(out, xs @ w, rtol=1e-6)


class _LeakyUser(brainstate.nn.Module):
    """h = 0.8 h + user_mm(x): the user op is the only input, the recurrence element-wise (exact class)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(_rand(6, (3, 4)) * 0.5)
        self.b = brainstate.ParamState(_rand(7, (4,)) * 0.1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((4,) if batch_size is None else (batch_size, 4)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + user_mm_p.bind(x, self.w.value, self.b.value, gain=1.3)
        return self.h.value


@pytest.mark.parametrize("batch", [None, 2])
def test_d_rtrl_equals_bptt_on_a_user_op(batch):
    model = _LeakyUser()
    brainstate.nn.init_all_states(model, batch)
    xs = _rand(8, (6, 3) if batch is None else (6, batch, 3))
    expected = bptt_grads(model, xs)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    assert len(learner.graph.hidden_param_op_relations) == 1
    assert_grads_close(expected, online_grads(learner, xs))


def test_published_rule_registry_is_accepted_and_said_unused():
    p = braintrace.register_primitive("test_published_rules", lambda x, w: x @ w)
    with pytest.warns(UserWarning, match="not used"):
        assert p.register_etp_rules(dt_to_t=lambda *a, **k: None, xy_to_dw=lambda *a, **k: None) is p
    assert sorted(p.published_rules) == ["dt_to_t", "xy_to_dw"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.register_etp_rules()  # nothing given, nothing said


def test_bad_layouts_are_named():
    with pytest.raises(braintrace.NotSupportedError, match="y_outvar_index"):
        braintrace.register_primitive("test_published_multi", lambda x, w: x @ w, y_outvar_index=1)
    with pytest.raises(TypeError, match="impl_fn"):
        braintrace.register_primitive("test_published_none")
    with pytest.raises(TypeError, match="unexpected keyword"):
        braintrace.register_primitive("test_published_kw", lambda x, w: x @ w, weight_fn=None)
    gap_p = braintrace.register_primitive("test_published_gap", lambda x, m, w: x @ (m * w),
                                          trainable_invars_fn=lambda params: {"weight": 2})
    with pytest.raises(braintrace.NotSupportedError, match=r"inputs \[1\]"):
        gap_p.bind(jnp.ones(3), jnp.ones((3, 2)), jnp.ones((3, 2)))


def test_own_form_keywords_are_passed_to_define_primitive():
    p = braintrace.register_primitive("test_own_form", lambda x, eff: x * eff["weight"], trainable_inputs={"weight": 1})
    assert float(p.bind(jnp.array(2.0), jnp.array(3.0))) == 6.0
    assert braintrace.ops.etp_rule_of(p).check_batching is False
