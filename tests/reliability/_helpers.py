"""Models and the no-mutation check shared by the reliability tests.

The models use ``braintrace.matmul`` on ``ParamState`` values directly, so they do not depend
on the defaults of ``braintrace.nn`` layers.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import braintrace


def _shape(batch_size, n):
    return (batch_size, n) if batch_size else (n,)


class Leaky(brainstate.nn.Module):
    """``h = 0.8 h + tanh(x W)``: one element-wise group, so D-RTRL equals BPTT."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.n = n
        self.w = brainstate.ParamState(jnp.linspace(-0.6, 0.7, n_in * n).reshape(n_in, n))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(braintrace.matmul(x, self.w.value))
        return self.h.value


def squared(y):
    return jnp.sum(y ** 2)


def bptt(model, xs, loss=squared, paths=None):
    """``jax.grad`` of the summed loss through the unrolled sequence; states restored after."""
    saved = {p: st.value for p, st in model.states().items()}
    weights = {p: st for p, st in model.states(brainstate.ParamState).items() if paths is None or p in paths}

    def total():
        return jnp.sum(brainstate.transform.for_loop(lambda x: loss(model(x)), xs))

    grads = brainstate.transform.grad(total, grad_states=weights)()
    for p, st in model.states().items():
        st.value = saved[p]
    return grads


def online(learner, xs, loss=squared):
    return learner.etrace_grad(xs, step_fn=lambda x: loss(learner(x)), reduction="sum")


def snapshot(*modules):
    """Every state value (as numpy), dtype and tree structure of the given modules."""
    out = {}
    for k, module in enumerate(modules):
        for path, st in module.states().items():
            leaves, treedef = jax.tree.flatten(st.value)
            out[(k,) + tuple(path)] = (type(st), treedef, [(np.asarray(v), jnp.result_type(v)) for v in leaves])
    return out


def assert_unchanged(before, *modules):
    """No state was added, removed, retyped, restructured or changed, and none holds a tracer."""
    after = {}
    for k, module in enumerate(modules):
        for path, st in module.states().items():
            leaves, treedef = jax.tree.flatten(st.value)
            assert not any(isinstance(v, jax.core.Tracer) for v in leaves), f"state {path} holds a tracer"
            after[(k,) + tuple(path)] = (type(st), treedef, leaves)
    assert set(after) == set(before), f"states changed: {set(after) ^ set(before)}"
    for key, (kind, treedef, leaves) in before.items():
        kind2, treedef2, leaves2 = after[key]
        assert kind2 is kind and treedef2 == treedef, f"state {key} changed type or structure"
        for (value, dtype), new in zip(leaves, leaves2, strict=True):
            assert jnp.result_type(new) == dtype, f"state {key} changed dtype"
            np.testing.assert_array_equal(np.asarray(new), value, err_msg=f"state {key} changed value")
