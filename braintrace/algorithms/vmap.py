# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The published driver mixin and lane wrapper: ``SequenceDriverMixin`` and ``ETraceVmap``."""

from __future__ import annotations

from collections.abc import Callable

import brainstate

from .. import _errors
from . import drivers

__all__ = ["ETraceVmap", "SequenceDriverMixin"]


class SequenceDriverMixin:
    """``etrace_grad`` / ``etrace_evolve`` methods over :meth:`driven_learner` (``self`` by default).

    The learners (:class:`~braintrace.ETraceAlgorithm`) provide the same two methods; the
    mixin gives them to wrappers such as :class:`ETraceVmap`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), 'd_rtrl', jnp.ones((4, 2)), batch_size=4, vmap=True)
    >>> wrapped = braintrace.ETraceVmap(learner)
    >>> isinstance(wrapped, braintrace.SequenceDriverMixin)
    True
    >>> wrapped.etrace_evolve(jnp.ones((5, 4, 2)), return_outputs=True).shape
    (5, 4, 3)
    """

    def driven_learner(self):
        """The learner the drivers run (``self``)."""
        return self

    def etrace_grad(self, *sequences, step_fn: Callable, mask=None, chunk_size=None, weights=None,
                    reduction: str = "mean", loss_output: str = "per_step", return_value: bool = False,
                    has_aux: bool = False, gradient_window="auto"):
        """Online gradients over whole sequences (see :func:`braintrace.etrace_grad`)."""
        return drivers.etrace_grad(self.driven_learner(), *sequences, step_fn=step_fn, mask=mask,
                                   chunk_size=chunk_size, weights=weights, reduction=reduction,
                                   loss_output=loss_output, return_value=return_value, has_aux=has_aux,
                                   gradient_window=gradient_window)

    def etrace_evolve(self, *sequences, step_fn=None, chunk_size=None, return_outputs: bool = False):
        """Advance states and traces over sequences (see :func:`braintrace.etrace_evolve`)."""
        return drivers.etrace_evolve(self.driven_learner(), *sequences, step_fn=step_fn, chunk_size=chunk_size,
                                     return_outputs=return_outputs)


class ETraceVmap(SequenceDriverMixin, brainstate.nn.Vmap):
    """A ``brainstate.nn.Vmap`` over a lane-mode learner, with the sequence drivers.

    Our learners compiled with ``vmap=True`` (``braintrace.compile(..., batch_size=B,
    vmap=True)``) already run their lanes (and sum the lane gradients of shared weights), so
    this wrapper calls the learner as it is and drives it with ``etrace_grad`` /
    ``etrace_evolve``; the arguments of ``brainstate.nn.Vmap`` are accepted for
    compatibility.

    Parameters
    ----------
    module : ETraceAlgorithm
        A learner compiled with ``vmap=True``.
    in_axes, out_axes, vmap_states, vmap_out_states, axis_name, axis_size
        As for ``brainstate.nn.Vmap`` (``vmap_states`` defaults to ``'new'``).

    Raises
    ------
    NotSupportedError
        For a learner compiled without ``vmap=True`` (its batch is a real axis already).
    """

    def __init__(self, module, in_axes=0, out_axes=0, vmap_states=None, vmap_out_states=None, axis_name=None,
                 axis_size=None):
        from .base import ETraceAlgorithm

        if not isinstance(module, ETraceAlgorithm) or not module.vmap:
            raise _errors.NotSupportedError(
                f"ETraceVmap wraps a learner compiled with vmap=True (`braintrace.compile(model, rule, x, "
                f"batch_size=B, vmap=True)`); got {type(module).__name__}"
                f"{'' if not isinstance(module, ETraceAlgorithm) else ' compiled without vmap'}. A learner without "
                "vmap runs its batch as a real axis: drive it directly."
            )
        super().__init__(module, in_axes=in_axes, out_axes=out_axes,
                         vmap_states="new" if vmap_states is None else vmap_states, vmap_out_states=vmap_out_states,
                         axis_name=axis_name, axis_size=axis_size)

    def driven_learner(self):
        return self.module

    def update(self, *args, **kwargs):
        return self.module(*args, **kwargs)
