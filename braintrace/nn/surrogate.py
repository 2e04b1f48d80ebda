# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Surrogate-gradient spike function: a Heaviside step with a smooth pseudo-derivative.

The forward pass is ``H(x) = 1 if x >= 0 else 0``. Its true derivative is zero almost
everywhere, so :func:`spike_function` replaces it by a bump-shaped surrogate (``jax.custom_jvp``)
whose width is set by ``alpha``. Every surrogate is element-wise, so a spiking layer built on
it keeps per-neuron dynamics.
"""

from __future__ import annotations

import abc
import dataclasses
import functools

import jax
import jax.numpy as jnp

__all__ = [
    "AbstractSurrogate",
    "FastSigmoidSurrogate",
    "SigmoidSurrogate",
    "TriangleSurrogate",
    "as_surrogate",
    "spike_function",
]


class AbstractSurrogate(abc.ABC):
    """Interface of a surrogate: the pseudo-derivative used in place of ``H'(x)``."""

    @abc.abstractmethod
    def derivative(self, x: jax.Array) -> jax.Array:
        """The pseudo-derivative of the Heaviside step at ``x`` (element-wise)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SigmoidSurrogate(AbstractSurrogate):
    """Derivative of a steep sigmoid: ``alpha * s * (1 - s)`` with ``s = sigmoid(alpha * x)``.

    Integrates to one; its peak is ``alpha / 4`` at ``x = 0``.

    Parameters
    ----------
    alpha : float
        Steepness (default 4.0); larger values give a narrower, taller bump.

    Examples
    --------
    >>> import braintrace.nn
    >>> float(braintrace.nn.SigmoidSurrogate(alpha=4.0).derivative(0.0))
    1.0
    """

    alpha: float = 4.0

    def derivative(self, x):
        s = jax.nn.sigmoid(self.alpha * x)
        return self.alpha * s * (1.0 - s)


@dataclasses.dataclass(frozen=True, slots=True)
class TriangleSurrogate(AbstractSurrogate):
    """Triangular pseudo-derivative ``alpha * max(0, 1 - alpha * |x|)`` (as in e-prop).

    Integrates to one; nonzero on ``|x| < 1 / alpha``.

    Parameters
    ----------
    alpha : float
        Peak height and inverse half-width (default 1.0).

    Examples
    --------
    >>> import braintrace.nn
    >>> float(braintrace.nn.TriangleSurrogate(alpha=1.0).derivative(0.5))
    0.5
    """

    alpha: float = 1.0

    def derivative(self, x):
        return self.alpha * jnp.maximum(0.0, 1.0 - self.alpha * jnp.abs(x))


@dataclasses.dataclass(frozen=True, slots=True)
class FastSigmoidSurrogate(AbstractSurrogate):
    """SuperSpike pseudo-derivative ``1 / (alpha * |x| + 1) ** 2``.

    Its peak is one at ``x = 0`` and it decays polynomially, so distant neurons still get a
    small gradient.

    Parameters
    ----------
    alpha : float
        Slope (default 25.0); larger values give a narrower bump.

    Examples
    --------
    >>> import braintrace.nn
    >>> float(braintrace.nn.FastSigmoidSurrogate(alpha=1.0).derivative(1.0))
    0.25
    """

    alpha: float = 25.0

    def derivative(self, x):
        return 1.0 / (self.alpha * jnp.abs(x) + 1.0) ** 2


_SURROGATES_BY_NAME: dict[str, type[AbstractSurrogate]] = {
    "sigmoid": SigmoidSurrogate,
    "triangle": TriangleSurrogate,
    "fast_sigmoid": FastSigmoidSurrogate,
}


def as_surrogate(surrogate: str | AbstractSurrogate) -> AbstractSurrogate:
    """Return ``surrogate`` as an :class:`AbstractSurrogate` instance.

    Parameters
    ----------
    surrogate : str or AbstractSurrogate
        An instance, or one of ``'sigmoid'``, ``'triangle'``, ``'fast_sigmoid'`` (built
        with its default ``alpha``).

    Returns
    -------
    AbstractSurrogate

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If ``surrogate`` is neither a name nor a surrogate instance.

    Examples
    --------
    >>> import braintrace.nn
    >>> braintrace.nn.as_surrogate('triangle')
    TriangleSurrogate(alpha=1.0)
    """
    if isinstance(surrogate, AbstractSurrogate):
        return surrogate
    if isinstance(surrogate, str):
        try:
            return _SURROGATES_BY_NAME[surrogate]()
        except KeyError:
            raise ValueError(
                f"Unknown surrogate `{surrogate}`; expected one of {sorted(_SURROGATES_BY_NAME)} "
                "or an `AbstractSurrogate` instance."
            ) from None
    raise TypeError(
        f"`surrogate` must be a name or an `AbstractSurrogate` instance; got {type(surrogate).__name__}."
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _heaviside(x, surrogate):
    return jnp.asarray(x >= 0, dtype=x.dtype)


@_heaviside.defjvp
def _heaviside_jvp(surrogate, primals, tangents):
    (x,), (x_dot,) = primals, tangents
    return _heaviside(x, surrogate), surrogate.derivative(x).astype(x.dtype) * x_dot


def spike_function(x: jax.typing.ArrayLike, surrogate: str | AbstractSurrogate = "sigmoid") -> jax.Array:
    """Heaviside step ``x >= 0`` with a surrogate derivative.

    Parameters
    ----------
    x : array_like
        Dimensionless, normalised distance to threshold, e.g. ``(V - V_th) / (V_th - V_reset)``.
    surrogate : str or AbstractSurrogate
        The pseudo-derivative (default ``'sigmoid'``, i.e. ``SigmoidSurrogate(alpha=4.0)``).

    Returns
    -------
    jax.Array
        Spikes (0.0 or 1.0) with the floating dtype of ``x``.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> braintrace.nn.spike_function(jnp.array([-0.5, 0.0, 0.5]))
    Array([0., 1., 1.], dtype=float32)
    >>> float(jax.grad(braintrace.nn.spike_function)(0.0))
    1.0
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return _heaviside(x, as_surrogate(surrogate))
