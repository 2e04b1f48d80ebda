"""Models whose recurrence runs through a weight or a mixing op (coupled / SnAp scopes)."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp

import braintrace
import braintrace.nn as bnn


def _shape(batch_size, n):
    return (batch_size, n) if batch_size else (n,)


class TanhRNN(brainstate.nn.Module):
    """``h = tanh(W_in x + W h)`` with separate input and recurrent matmuls, readout on ``h``.

    The op-to-hidden tail (``tanh``) is element-wise; the recurrence mixes all positions
    through ``W``, so the diagonal scope sees ``D = 0``.
    """

    def __init__(self, n_in=3, n_hidden=5, n_out=2, scale=1.0):
        super().__init__()
        self.n_hidden = n_hidden
        self.win = bnn.Linear(n_in, n_hidden)
        self.w = bnn.Linear(n_hidden, n_hidden, b_init=None)
        self.w.weight.value = {"weight": self.w.weight.value["weight"] * scale}
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n_hidden)))

    def update(self, x):
        self.h.value = jnp.tanh(self.win(x) + self.w(self.h.value))
        return self.out(self.h.value)


class LeakyTanhRNN(TanhRNN):
    """``h = sigmoid(τ) ⊙ h + tanh(W_in x + W h)``: an element-wise ETP op next to the dense recurrence."""

    def __init__(self, n_in=3, n_hidden=5, n_out=2):
        super().__init__(n_in, n_hidden, n_out, scale=0.5)
        self.tau = brainstate.ParamState(jnp.linspace(-1.0, 2.0, n_hidden))

    def update(self, x):
        decay = braintrace.element_wise(self.tau.value, weight_fn=jax.nn.sigmoid)
        self.h.value = decay * self.h.value + jnp.tanh(self.win(x) + self.w(self.h.value))
        return self.out(self.h.value)


class CumsumRNN(brainstate.nn.Module):
    """``h = tanh(W x + 0.5·cumsum(h))``: a mixing op with no known adjacency (SnAp conservative)."""

    def __init__(self, n_in=3, n_hidden=4):
        super().__init__()
        self.n_hidden = n_hidden
        self.win = bnn.Linear(n_in, n_hidden)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n_hidden)))

    def update(self, x):
        self.h.value = jnp.tanh(self.win(x) + 0.5 * jnp.cumsum(self.h.value, axis=-1))
        return self.h.value


class SparseRecurrentRNN(brainstate.nn.Module):
    """``h = tanh(W_in x + M h)`` with a sparse recurrent op (its trace is not anchored)."""

    def __init__(self, n_in=3, n_hidden=4):
        super().__init__()
        self.n_hidden = n_hidden
        self.win = bnn.Linear(n_in, n_hidden)
        dense = jnp.eye(n_hidden) * 0.5 + jnp.eye(n_hidden, k=1) * 0.3
        self.rec = bnn.SparseLinear(u.sparse.CSR.fromdense(dense))

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n_hidden)))

    def update(self, x):
        self.h.value = jnp.tanh(self.win(x) + self.rec(self.h.value))
        return self.h.value


__all__ = ["TanhRNN", "LeakyTanhRNN", "CumsumRNN", "SparseRecurrentRNN"]
