"""A small recurrent model for the data-parallel and checkpoint tests."""

import brainstate
import jax.numpy as jnp

import braintrace.nn as bnn


class GRUReadout(brainstate.nn.Module):
    """``GRUCell(n_in, n_hidden) -> Linear(n_hidden, n_out)`` (arguments explicit)."""

    def __init__(self, n_in=3, n_hidden=4, n_out=2):
        super().__init__()
        self.cell = bnn.GRUCell(n_in, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out, b_init=None)

    def update(self, x):
        return self.out(self.cell(x))


def loss_fn(y):
    return jnp.mean((y - 0.5) ** 2)
