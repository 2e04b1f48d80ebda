# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Minimal recurrent cells: minGRU, minLSTM, MinimalRNN and the chaos-free network.

minGRU and minLSTM (Feng et al. 2024) compute their gates from the input only, so the
recurrence ``h = a(x) * h + b(x)`` is element-wise and D-RTRL is exact for them.
MinimalRNN and CFN gate on ``h`` through dense weights, so D-RTRL approximates them.
"""

from __future__ import annotations

from collections.abc import Callable

import braintools
import jax
import jax.numpy as jnp

from .linear import Initializer, Linear
from .rnn_cells import RecurrentCell, _concat

__all__ = ["CFNCell", "MiniGRU", "MiniLSTM", "MinimalRNNCell"]


class MiniGRU(RecurrentCell):
    """minGRU (Feng et al. 2024): a GRU whose gates see only the input.

    One step::

        z      = sigmoid(Wz(x))
        h_cand = Wh(x)
        h      = (1 - z) * h + z * h_cand

    The recurrence is element-wise in ``h``, so D-RTRL equals BPTT.

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (``(in_size, out_size)``, default ``Orthogonal()``)
        and bias (default ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wz, Wh : Linear
        Update gate and candidate weights on ``x``.
    h : brainstate.HiddenState
        Hidden state.

    References
    ----------
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), *Were RNNs all we needed?*

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.MiniGRU(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> cell(jnp.ones(3)).shape
    (4,)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Initializer = braintools.init.Orthogonal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, None, name)
        self._gates(("Wz", "Wh"), self.num_in, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        z = jax.nn.sigmoid(self.Wz(x))
        self.h.value = (1.0 - z) * self.h.value + z * self.Wh(x)
        return self.h.value


class MiniLSTM(RecurrentCell):
    """minLSTM (Feng et al. 2024): normalised forget and input gates that see only the input.

    One step::

        f, i   = sigmoid(Wf(x)), sigmoid(Wi(x))
        h_cand = Wh(x)
        h      = f / (f + i) * h + i / (f + i) * h_cand

    The recurrence is element-wise in ``h``, so D-RTRL equals BPTT.

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each gate's weight (default ``Orthogonal()``) and bias (default
        ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wf, Wi, Wh : Linear
        Forget gate, input gate and candidate weights on ``x``.
    h : brainstate.HiddenState
        Hidden state.

    References
    ----------
    Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), *Were RNNs all we needed?*

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.MiniLSTM(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell, 2)
    >>> cell(jnp.ones((2, 3))).shape
    (2, 4)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Initializer = braintools.init.Orthogonal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, None, name)
        self._gates(("Wf", "Wi", "Wh"), self.num_in, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        f = jax.nn.sigmoid(self.Wf(x))
        i = jax.nn.sigmoid(self.Wi(x))
        total = f + i
        self.h.value = (f / total) * self.h.value + (i / total) * self.Wh(x)
        return self.h.value


class _LinearTanh:
    """The default MinimalRNN encoder ``tanh(Wx(x))`` (a callable over the cell's ``Wx``)."""

    def __init__(self, layer: Linear):
        self.layer = layer

    def __call__(self, x):
        return jnp.tanh(self.layer(x))


class MinimalRNNCell(RecurrentCell):
    """MinimalRNN (Chen 2017): an encoder ``z = phi(x)`` and one update gate.

    One step::

        z = phi(x)                          # default: tanh(Wx(x))
        u = sigmoid(Wu([z, h]))
        h = u * h + (1 - u) * z

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of the gate (and default encoder) weights (default ``Orthogonal()``)
        and biases (default ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    phi : callable or brainstate.nn.Module, optional
        Encoder from ``(..., in_size)`` to ``(..., out_size)``. ``None`` (default) makes a
        :class:`Linear` ``Wx`` with a ``tanh``.
    name : str, optional
        Module name.

    Attributes
    ----------
    Wx : Linear or None
        The default encoder's weight (``None`` when ``phi`` is given).
    Wu : Linear
        The update gate on ``[z, h]``.
    h : brainstate.HiddenState
        Hidden state.

    References
    ----------
    Chen (2017), *MinimalRNN: toward more interpretable and trainable recurrent neural networks*.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.MinimalRNNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> cell(jnp.ones(3)).shape
    (4,)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Initializer = braintools.init.Orthogonal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        state_init: Initializer = braintools.init.ZeroInit(),
        phi: Callable | None = None,
        name: str | None = None,
    ):
        super().__init__(in_size, out_size, state_init, None, name)
        if phi is None:
            self.Wx = Linear(self.num_in, self.num_out, w_init=w_init, b_init=b_init)
            phi = _LinearTanh(self.Wx)
        elif not callable(phi):
            raise TypeError(f"`MinimalRNNCell`: `phi` must be callable or None; got {type(phi).__name__}.")
        else:
            self.Wx = None
        self.phi = phi
        self._gates(("Wu",), 2 * self.num_out, w_init, b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        z = self.phi(x)
        if jnp.shape(z)[-1] != self.num_out:
            raise ValueError(
                f"`MinimalRNNCell`: `phi` must map to out_size = {self.num_out} features; got shape {jnp.shape(z)}."
            )
        h = self.h.value
        u = jax.nn.sigmoid(self.Wu(_concat(z, h)))
        self.h.value = u * h + (1.0 - u) * z
        return self.h.value


class CFNCell(RecurrentCell):
    """Chaos-free network (Laurent & von Brecht 2016).

    One step, with ``xh = [x, h]``::

        theta = sigmoid(Wt(xh))
        eta   = sigmoid(We(xh))
        h     = theta * activation(h) + eta * activation(Wx(x))

    Parameters
    ----------
    in_size : int
        Number of input features.
    out_size : int
        Number of hidden units.
    w_init, b_init : callable or array_like
        Initialisers of each weight (default ``Orthogonal()``) and bias (default
        ``ZeroInit()``; ``None`` for no bias).
    state_init : callable or array_like
        Initialiser of ``h`` (default ``ZeroInit()``).
    activation : str or callable
        Nonlinearity applied to ``h`` and to the input drive (default ``'tanh'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    Wt, We : Linear
        The forget gate ``theta`` and input gate ``eta`` on ``[x, h]``.
    Wx : Linear
        The input drive.
    h : brainstate.HiddenState
        Hidden state.

    References
    ----------
    Laurent & von Brecht (2017), *A recurrent neural network without chaos*, ICLR.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> cell = braintrace.nn.CFNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> cell(jnp.ones(3)).shape
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
        self._gates(("Wt", "We"), self.num_in + self.num_out, w_init, b_init)
        self.Wx = Linear(self.num_in, self.num_out, w_init=w_init, b_init=b_init)

    def update(self, x):
        """Advance one step with input ``x``; return the new ``h``."""
        self._check_input(x)
        h = self.h.value
        xh = _concat(x, h)
        theta = jax.nn.sigmoid(self.Wt(xh))
        eta = jax.nn.sigmoid(self.We(xh))
        self.h.value = theta * self.activation(h) + eta * self.activation(self.Wx(x))
        return self.h.value
