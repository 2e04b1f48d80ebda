# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Recurrent cells (Elman, GRU, LSTM, MGU) whose weights are :class:`Linear` layers on ``[x, h]``.

Each cell takes ``x`` of shape ``(in_size,)`` or ``(batch_size, in_size)`` and returns its
new hidden state ``h``. Every gate is one :class:`Linear` on the concatenation of the input
and the hidden state, so the compiler sees one trainable op per gate.
"""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp
from brainstate.nn import init

from .linear import Linear

__all__ = ["GRUCell", "LSTMCell", "MGUCell", "ValinaRNNCell", "VanillaRNNCell"]

type Initializer = Callable | jax.typing.ArrayLike


def _zeros(n: int, batch_size: int | None) -> jax.Array:
    return init.param(init.ZeroInit(), (n,), batch_size)


def _concat(x, h):
    return jnp.concatenate([x, h], axis=-1)


class _RecurrentCell(brainstate.nn.Module):
    """Shared parts of the cells: sizes, gate layers on ``[x, h]`` and zero hidden states.

    Subclasses name their gates (each a :class:`Linear` from ``in + out`` to ``out``) and
    their hidden states, and define ``update``.
    """

    state_names: tuple[str, ...] = ("h",)

    def __init__(self, in_size: int, out_size: int, gates: tuple[str, ...], w_init: Initializer,
                 b_init: Initializer, name: str | None):
        super().__init__(name=name)
        self.in_size = in_size
        self.out_size = out_size
        self.num_out = out_size
        for gate in gates:
            setattr(self, gate, Linear(in_size + out_size, out_size, w_init, b_init))

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create the hidden states at zero, shape ``(out_size,)`` or ``(batch_size, out_size)``."""
        for state_name in self.state_names:
            setattr(self, state_name, brainstate.HiddenState(_zeros(self.num_out, batch_size)))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set the hidden states back to zero."""
        for state_name in self.state_names:
            getattr(self, state_name).value = _zeros(self.num_out, batch_size)


class ValinaRNNCell(_RecurrentCell):
    """Elman RNN cell: ``h = activation(W [x, h] + b)``.

    ``VanillaRNNCell`` is the same class. Its recurrence passes through the dense weight, so
    ``h`` forms a singleton hidden group (no parameter-free path from the previous ``h``).

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    activation : callable
        Element-wise nonlinearity (default ``jnp.tanh``).
    w_init, b_init : callable or array_like
        Initialisers of ``W`` (``(in_size + out_size, out_size)``, default ``XavierNormal()``)
        and ``b`` (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    W : Linear
        The weight on ``[x, h]``.
    h : brainstate.HiddenState
        Hidden state, starts at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4)
    >>> cell.init_state(batch_size=2)
    >>> cell(jnp.ones((2, 3))).shape
    (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
        *,
        w_init: Initializer = init.XavierNormal(),
        b_init: Initializer = init.ZeroInit(),
        name: str | None = None,
    ):
        if not callable(activation):
            raise TypeError(f"`activation` must be callable; got {type(activation).__name__}.")
        super().__init__(in_size, out_size, ("W",), w_init, b_init, name)
        self.activation = activation

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self.h.value = self.activation(self.W(_concat(x, self.h.value)))
        return self.h.value


VanillaRNNCell = ValinaRNNCell


class GRUCell(_RecurrentCell):
    """Gated recurrent unit.

    One step, with ``xh = [x, h]``::

        r      = sigmoid(Wr(xh))
        z      = sigmoid(Wz(xh))
        h_cand = tanh(Wh([x, r * h]))
        h      = (1 - z) * h + z * h_cand

    ``Wz`` and ``Wh`` reach ``h`` through element-wise tails; ``Wr`` reaches ``h`` only
    through ``Wh``.

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (``(in_size + out_size, out_size)``, default
        ``XavierNormal()``) and bias (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wz, Wr, Wh : Linear
        Update gate, reset gate and candidate weights.
    h : brainstate.HiddenState
        Hidden state, starts at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> gru(jnp.ones(3)).shape
    (4,)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        w_init: Initializer = init.XavierNormal(),
        b_init: Initializer = init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, ("Wz", "Wr", "Wh"), w_init, b_init, name)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        h = self.h.value
        xh = _concat(x, h)
        r = jax.nn.sigmoid(self.Wr(xh))
        z = jax.nn.sigmoid(self.Wz(xh))
        h_cand = jnp.tanh(self.Wh(_concat(x, r * h)))
        self.h.value = (1.0 - z) * h + z * h_cand
        return self.h.value


class LSTMCell(_RecurrentCell):
    """Long short-term memory cell.

    One step, with ``xh = [x, h]``::

        i = sigmoid(Wi(xh));  g = tanh(Wg(xh))
        f = sigmoid(Wf(xh) + forget_bias);  o = sigmoid(Wo(xh))
        c = f * c + i * g
        h = o * tanh(c)

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    forget_bias : float
        Constant added to the forget gate's pre-activation (default 1.0).
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (default ``XavierNormal()``) and bias
        (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wi, Wg, Wf, Wo : Linear
        Input gate, candidate, forget gate and output gate weights.
    h, c : brainstate.HiddenState
        Hidden output and cell state, both start at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> lstm = braintrace.nn.LSTMCell(3, 4)
    >>> lstm.init_state(batch_size=2)
    >>> lstm(jnp.ones((2, 3))).shape, lstm.c.value.shape
    ((2, 4), (2, 4))
    """

    state_names = ("c", "h")

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        forget_bias: float = 1.0,
        w_init: Initializer = init.XavierNormal(),
        b_init: Initializer = init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, ("Wi", "Wg", "Wf", "Wo"), w_init, b_init, name)
        self.forget_bias = forget_bias

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        c, h = self.c.value, self.h.value
        xh = _concat(x, h)
        i = jax.nn.sigmoid(self.Wi(xh))
        g = jnp.tanh(self.Wg(xh))
        f = jax.nn.sigmoid(self.Wf(xh) + self.forget_bias)
        o = jax.nn.sigmoid(self.Wo(xh))
        c = f * c + i * g
        self.c.value = c
        self.h.value = o * jnp.tanh(c)
        return self.h.value


class MGUCell(_RecurrentCell):
    """Minimal gated unit: a GRU whose single forget gate also acts as the reset gate.

    One step, with ``xh = [x, h]``::

        f      = sigmoid(Wf(xh))
        h_cand = tanh(Wh([x, f * h]))
        h      = (1 - f) * h + f * h_cand

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (default ``XavierNormal()``) and bias
        (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wf, Wh : Linear
        Forget gate and candidate weights.
    h : brainstate.HiddenState
        Hidden state, starts at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> mgu = braintrace.nn.MGUCell(3, 4)
    >>> mgu.init_state()
    >>> mgu(jnp.ones(3)).shape
    (4,)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        w_init: Initializer = init.XavierNormal(),
        b_init: Initializer = init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, ("Wf", "Wh"), w_init, b_init, name)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        h = self.h.value
        f = jax.nn.sigmoid(self.Wf(_concat(x, h)))
        h_cand = jnp.tanh(self.Wh(_concat(x, f * h)))
        self.h.value = (1.0 - f) * h + f * h_cand
        return self.h.value
