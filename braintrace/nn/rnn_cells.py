# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Recurrent cells (Elman, GRU, LSTM, MGU, UR-LSTM) whose weights are :class:`Linear` layers.

Each cell takes ``x`` of shape ``(in_size,)`` or ``(batch_size, in_size)`` and returns its
new hidden state ``h``. Every gate is one :class:`Linear` on the concatenation of the input
and the hidden state, so the compiler sees one trainable op per gate. ``activation`` is a
name (see :data:`braintrace.nn._activation.ACTIVATIONS`) or a callable; ``state_init``
(a ``braintools.init`` initialiser or an array) gives the hidden states their values in
``init_state`` and ``reset_state``.
"""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import braintools
import jax
import jax.numpy as jnp

from ..ops import element_wise
from ._activation import resolve_activation
from .linear import Initializer, Linear

__all__ = ["GRUCell", "LSTMCell", "MGUCell", "RecurrentCell", "URLSTMCell", "ValinaRNNCell", "VanillaRNNCell"]


def initial_state(state_init: Initializer, n: int, batch_size: int | None, owner: str) -> jax.Array:
    """The hidden value ``(n,)`` or ``(batch_size, n)`` drawn from ``state_init``."""
    shape = (n,) if batch_size is None else (batch_size, n)
    try:
        value = braintools.init.param(state_init, (n,), batch_size, allow_none=False)
    except ValueError as error:
        raise ValueError(f"`{owner}`: bad `state_init` for hidden states of shape {shape}: {error}") from None
    try:
        return jnp.broadcast_to(value, shape)
    except ValueError:
        raise ValueError(
            f"`{owner}`: `state_init` gave shape {jnp.shape(value)}; expected {shape} (or a shape broadcasting to it)."
        ) from None


def _concat(x, h):
    return jnp.concatenate([x, h], axis=-1)


def _size(owner: str, arg: str, value) -> int:
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{owner}`: `{arg}` must be a positive int; got {value!r}.")
    return value


class RecurrentCell(brainstate.nn.Module):
    """Shared parts of the cells: sizes, activation, hidden states from ``state_init``.

    Subclasses list their hidden states in ``state_names``, create their gates and define
    ``update``. ``in_size``/``out_size`` are stored as 1-tuples (brainstate's convention);
    ``num_in``/``num_out`` are the ints.
    """

    state_names: tuple[str, ...] = ("h",)

    def __init__(self, in_size: int, out_size: int, state_init: Initializer,
                 activation: str | Callable | None, name: str | None):
        super().__init__(name=name)
        owner = type(self).__name__
        self.num_in = _size(owner, "in_size", in_size)
        self.num_out = _size(owner, "out_size", out_size)
        self.in_size = (self.num_in,)
        self.out_size = (self.num_out,)
        self._state_init = state_init
        initial_state(state_init, self.num_out, None, owner)  # fail early on a bad shape
        if activation is not None:
            self.activation = resolve_activation(activation, owner)

    def _gates(self, names: tuple[str, ...], n_in: int, w_init: Initializer, b_init: Initializer | None):
        for gate in names:
            setattr(self, gate, Linear(n_in, self.num_out, w_init=w_init, b_init=b_init))

    def _check_input(self, x) -> None:
        if jnp.ndim(x) not in (1, 2) or jnp.shape(x)[-1] != self.num_in:
            raise ValueError(
                f"`{type(self).__name__}`: the input must have shape (in_size,) or (batch_size, in_size) "
                f"with in_size = {self.num_in}; got {jnp.shape(x)}."
            )

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create the hidden states from ``state_init``, shape ``(out_size,)`` or ``(batch_size, out_size)``."""
        for state_name in self.state_names:
            value = initial_state(self._state_init, self.num_out, batch_size, type(self).__name__)
            setattr(self, state_name, brainstate.HiddenState(value))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set the hidden states back to their ``state_init`` values."""
        for state_name in self.state_names:
            getattr(self, state_name).value = initial_state(self._state_init, self.num_out, batch_size,
                                                            type(self).__name__)


class ValinaRNNCell(RecurrentCell):
    """Elman RNN cell: ``h = activation(W [x, h] + b)``.

    ``VanillaRNNCell`` is the same class. Its recurrence passes through the dense weight, so
    D-RTRL learns ``W`` through the instantaneous term only (no parameter-free path from the
    previous ``h``).

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    w_init, b_init : callable or array_like
        Initialisers of ``W`` (``(in_size + out_size, out_size)``, default ``XavierNormal()``)
        and ``b`` (default ``ZeroInit()``; ``None`` for no bias).
    activation : str or callable
        Element-wise nonlinearity (default ``'relu'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    W : Linear
        The weight on ``[x, h]``.
    h : brainstate.HiddenState
        Hidden state.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4, activation='tanh')
    >>> cell.init_state(batch_size=2)
    >>> cell(jnp.ones((2, 3))).shape
    (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        state_init: Initializer = braintools.init.ZeroInit(),
        w_init: Initializer = braintools.init.XavierNormal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        activation: str | Callable = "relu",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, activation, name)
        self._gates(("W",), self.num_in + self.num_out, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        self.h.value = self.activation(self.W(_concat(x, self.h.value)))
        return self.h.value


VanillaRNNCell = ValinaRNNCell


class GRUCell(RecurrentCell):
    """Gated recurrent unit.

    One step, with ``xh = [x, h]``::

        r      = sigmoid(Wr(xh))
        z      = sigmoid(Wz(xh))
        h_cand = activation(Wh([x, r * h]))
        h      = (1 - z) * h + z * h_cand

    ``Wz`` and ``Wh`` reach ``h`` through element-wise tails; ``Wr`` reaches ``h`` only
    through ``Wh`` (excluded from D-RTRL as weight-to-weight).

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (``(in_size + out_size, out_size)``, default
        ``Orthogonal()``) and bias (default ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    activation : str or callable
        Nonlinearity of the candidate (default ``'tanh'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wz, Wr, Wh : Linear
        Update gate, reset gate and candidate weights.
    h : brainstate.HiddenState
        Hidden state.

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
        w_init: Initializer = braintools.init.Orthogonal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, activation, name)
        self._gates(("Wz", "Wr", "Wh"), self.num_in + self.num_out, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        h = self.h.value
        xh = _concat(x, h)
        r = jax.nn.sigmoid(self.Wr(xh))
        z = jax.nn.sigmoid(self.Wz(xh))
        h_cand = self.activation(self.Wh(_concat(x, r * h)))
        self.h.value = (1.0 - z) * h + z * h_cand
        return self.h.value


class LSTMCell(RecurrentCell):
    """Long short-term memory cell.

    One step, with ``xh = [x, h]``::

        i = sigmoid(Wi(xh));  g = activation(Wg(xh))
        f = sigmoid(Wf(xh) + forget_bias);  o = sigmoid(Wo(xh))
        c = f * c + i * g
        h = o * activation(c)

    ``forget_bias`` is the class attribute ``LSTMCell.forget_bias = 1.0`` (Jozefowicz et
    al. 2015); set it on an instance to change it.

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (default ``XavierNormal()``) and bias
        (default ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` and ``c`` (default ``ZeroInit()``).
    activation : str or callable
        Nonlinearity of the candidate and of the cell output (default ``'tanh'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wi, Wg, Wf, Wo : Linear
        Input gate, candidate, forget gate and output gate weights.
    h, c : brainstate.HiddenState
        Hidden output and cell state.

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
    forget_bias: float = 1.0

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Initializer = braintools.init.XavierNormal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, activation, name)
        self._gates(("Wi", "Wg", "Wf", "Wo"), self.num_in + self.num_out, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        c, h = self.c.value, self.h.value
        xh = _concat(x, h)
        i = jax.nn.sigmoid(self.Wi(xh))
        g = self.activation(self.Wg(xh))
        f = jax.nn.sigmoid(self.Wf(xh) + self.forget_bias)
        o = jax.nn.sigmoid(self.Wo(xh))
        c = f * c + i * g
        self.c.value = c
        self.h.value = o * self.activation(c)
        return self.h.value


class MGUCell(RecurrentCell):
    """Minimal gated unit: a GRU whose single forget gate also acts as the reset gate.

    One step, with ``xh = [x, h]``::

        f      = sigmoid(Wf(xh))
        h_cand = activation(Wh([x, f * h]))
        h      = (1 - f) * h + f * h_cand

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (default ``Orthogonal()``) and bias
        (default ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    activation : str or callable
        Nonlinearity of the candidate (default ``'tanh'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wf, Wh : Linear
        Forget gate and candidate weights.
    h : brainstate.HiddenState
        Hidden state.

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
        w_init: Initializer = braintools.init.Orthogonal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, activation, name)
        self._gates(("Wf", "Wh"), self.num_in + self.num_out, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        h = self.h.value
        f = jax.nn.sigmoid(self.Wf(_concat(x, h)))
        h_cand = self.activation(self.Wh(_concat(x, f * h)))
        self.h.value = (1.0 - f) * h + f * h_cand
        return self.h.value


def _uniform_forget_bias(n: int) -> jax.Array:
    """``logit(u)`` for ``u ~ U(1/n, 1 - 1/n)``: forget-gate activations spread over (0, 1) (Gu et al. 2020)."""
    low, high = (1.0 / n, 1.0 - 1.0 / n) if n > 2 else (0.25, 0.75)
    u = brainstate.random.uniform(low, high, (n,))
    return jnp.log(u) - jnp.log1p(-u)


class URLSTMCell(RecurrentCell):
    """UR-LSTM: an LSTM with a uniformly initialised forget bias and a refine gate (Gu et al. 2020).

    One step, with ``xh = [x, h]`` and the trainable per-unit bias ``b_f``::

        f = sigmoid(Wf(xh) + b_f);  r = sigmoid(Wr(xh) - b_f)
        g = 2 r f + (1 - 2 r) f**2            # the refined forget gate
        c = g * c + (1 - g) * activation(Wu(xh))
        h = sigmoid(Wo(xh)) * activation(c)

    ``b_f`` starts at ``logit(u)``, ``u ~ U(1/n, 1 - 1/n)``, so the forget gates cover many
    time scales. It enters element-wise through :func:`braintrace.element_wise`; the gate
    layers have no bias of their own.

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init : callable or array_like
        Initialiser of each gate's weight (default ``XavierNormal()``).
    state_init : callable or array_like
        Initialiser of ``h`` and ``c`` (default ``ZeroInit()``).
    activation : str or callable
        Nonlinearity of the candidate and of the cell output (default ``'tanh'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wf, Wr, Wu, Wo : Linear
        Forget, refine, candidate and output gate weights (no bias).
    bias : brainstate.ParamState
        The forget bias ``b_f`` of shape ``(out_size,)``.
    h, c : brainstate.HiddenState
        Hidden output and cell state.

    References
    ----------
    Gu, Gulcehre, Paine, Hoffman & Pascanu (2020), *Improving the gating mechanism of
    recurrent neural networks*, ICML.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.URLSTMCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell, 2)
    >>> cell(jnp.ones((2, 3))).shape
    (2, 4)
    """

    state_names = ("c", "h")

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Initializer = braintools.init.XavierNormal(),
        state_init: Initializer = braintools.init.ZeroInit(),
        activation: str | Callable = "tanh",
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, activation, name)
        self._gates(("Wf", "Wr", "Wu", "Wo"), self.num_in + self.num_out, w_init, None)
        self.bias = brainstate.ParamState(_uniform_forget_bias(self.num_out))

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        c, h = self.c.value, self.h.value
        xh = _concat(x, h)
        b_f = element_wise(self.bias.value)
        f = jax.nn.sigmoid(self.Wf(xh) + b_f)
        r = jax.nn.sigmoid(self.Wr(xh) - b_f)
        g = 2.0 * r * f + (1.0 - 2.0 * r) * f ** 2
        c = g * c + (1.0 - g) * self.activation(self.Wu(xh))
        self.c.value = c
        self.h.value = jax.nn.sigmoid(self.Wo(xh)) * self.activation(c)
        return self.h.value
