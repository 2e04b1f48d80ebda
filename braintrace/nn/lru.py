# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The linear recurrent unit (Orvieto et al. 2023) with its complex state stored as two real states."""

from __future__ import annotations

import brainstate
import jax
import jax.numpy as jnp

from ..ops import element_wise, matmul

__all__ = ["LRUCell"]


class LRUCell(brainstate.nn.Module):
    """Linear recurrent unit: a complex diagonal linear recurrence with input and output projections.

    With ``λ = exp(-exp(ν) + i exp(θ))`` and ``γ = exp(γ_log)``, one step is::

        h = λ ⊙ h + γ ⊙ (B x)             # h, B complex
        y = Re(C h) + D ⊙ x

    The complex state is stored as two real hidden states ``h_re`` and ``h_im`` of shape
    ``(d_hidden,)`` (or ``(batch_size, d_hidden)``); per hidden unit they form one 2-state
    group whose Jacobian is the 2×2 rotation-scaling ``[[a, -b], [b, a]]``, so the
    recurrence is element-wise and D-RTRL equals BPTT. ``ν``, ``θ`` and ``γ`` are stored
    in log form and enter through :func:`braintrace.element_wise` (``weight_fn=jnp.exp``);
    ``B`` and ``C`` are :func:`braintrace.matmul` weights.

    Parameters
    ----------
    d_model : int
        Input and output features.
    d_hidden : int
        Number of complex hidden units.
    r_min, r_max : float
        ``|λ|`` is drawn uniformly on the ring ``r_min <= |λ| <= r_max`` (``0 <= r_min < r_max <= 1``).
    max_phase : float
        The phase of ``λ`` is drawn from ``U(0, max_phase)``.

    Attributes
    ----------
    nu_log, theta_log, gamma_log : brainstate.ParamState
        ``log ν``, ``log θ`` and ``log γ`` (``γ = sqrt(1 - |λ|²)`` at initialisation), ``(d_hidden,)``.
    B_re, B_im : brainstate.ParamState
        Real and imaginary input projections ``(d_model, d_hidden)``, ``N(0, 1/(2 d_model))``.
    C_re, C_im : brainstate.ParamState
        Real and imaginary output projections ``(d_hidden, d_model)``, ``N(0, 1/d_hidden)``.
    D : brainstate.ParamState
        The skip connection ``(d_model,)``, ``N(0, 1)``.
    h_re, h_im : brainstate.HiddenState
        Real and imaginary parts of the hidden state, starting at zero.

    References
    ----------
    Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De (2023), *Resurrecting recurrent
    neural networks for long sequences*, ICML.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> lru = braintrace.nn.LRUCell(3, 8)
    >>> _ = brainstate.nn.init_all_states(lru, 2)
    >>> lru(jnp.ones((2, 3))).shape
    (2, 3)
    """

    def __init__(self, d_model: int, d_hidden: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 6.28):
        super().__init__()
        for arg, value in (("d_model", d_model), ("d_hidden", d_hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`LRUCell`: `{arg}` must be a positive int; got {value!r}.")
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"`LRUCell`: need 0 <= r_min < r_max <= 1; got r_min={r_min}, r_max={r_max}.")
        if max_phase <= 0:
            raise ValueError(f"`LRUCell`: `max_phase` must be positive; got {max_phase}.")
        self.d_model, self.d_hidden = d_model, d_hidden
        self.in_size, self.out_size = (d_model,), (d_model,)
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)

        u1 = brainstate.random.uniform(0.0, 1.0, (d_hidden,))
        u2 = brainstate.random.uniform(0.0, 1.0, (d_hidden,))
        radius_sq = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2  # |λ|², uniform on the ring's area
        radius_sq = jnp.clip(radius_sq, 1e-12, 1.0 - 1e-7)
        self.nu_log = brainstate.ParamState(jnp.log(-0.5 * jnp.log(radius_sq)))
        self.theta_log = brainstate.ParamState(jnp.log(max_phase * jnp.clip(u2, 1e-7, 1.0)))
        self.gamma_log = brainstate.ParamState(0.5 * jnp.log1p(-radius_sq))
        self.B_re = brainstate.ParamState(brainstate.random.randn(d_model, d_hidden) / jnp.sqrt(2.0 * d_model))
        self.B_im = brainstate.ParamState(brainstate.random.randn(d_model, d_hidden) / jnp.sqrt(2.0 * d_model))
        self.C_re = brainstate.ParamState(brainstate.random.randn(d_hidden, d_model) / jnp.sqrt(d_hidden))
        self.C_im = brainstate.ParamState(brainstate.random.randn(d_hidden, d_model) / jnp.sqrt(d_hidden))
        self.D = brainstate.ParamState(brainstate.random.randn(d_model))

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create ``h_re`` and ``h_im`` at zero, shape ``(d_hidden,)`` or ``(batch_size, d_hidden)``."""
        shape = (self.d_hidden,) if batch_size is None else (batch_size, self.d_hidden)
        self.h_re = brainstate.HiddenState(jnp.zeros(shape))
        self.h_im = brainstate.HiddenState(jnp.zeros(shape))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set ``h_re`` and ``h_im`` back to zero."""
        shape = (self.d_hidden,) if batch_size is None else (batch_size, self.d_hidden)
        self.h_re.value = jnp.zeros(shape)
        self.h_im.value = jnp.zeros(shape)

    def eigenvalues(self) -> jax.Array:
        """The complex diagonal ``λ`` of the recurrence, shape ``(d_hidden,)``."""
        return jnp.exp(-jnp.exp(self.nu_log.value) + 1j * jnp.exp(self.theta_log.value))

    def update(self, x):
        """Advance one step with input ``x`` of shape ``(d_model,)`` or ``(batch_size, d_model)``; return ``y``."""
        if jnp.ndim(x) not in (1, 2) or jnp.shape(x)[-1] != self.d_model:
            raise ValueError(
                f"`LRUCell`: the input must have shape (d_model,) or (batch_size, d_model) with "
                f"d_model = {self.d_model}; got {jnp.shape(x)}."
            )
        nu = element_wise(self.nu_log.value, weight_fn=jnp.exp)
        theta = element_wise(self.theta_log.value, weight_fn=jnp.exp)
        gamma = element_wise(self.gamma_log.value, weight_fn=jnp.exp)
        magnitude = jnp.exp(-nu)
        a, b = magnitude * jnp.cos(theta), magnitude * jnp.sin(theta)
        h_re, h_im = self.h_re.value, self.h_im.value
        new_re = a * h_re - b * h_im + gamma * matmul(x, self.B_re.value)
        new_im = b * h_re + a * h_im + gamma * matmul(x, self.B_im.value)
        self.h_re.value, self.h_im.value = new_re, new_im
        return matmul(new_re, self.C_re.value) - matmul(new_im, self.C_im.value) + self.D.value * x
