# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""One-call setup of an online learner: initialise states, build, compile."""

from __future__ import annotations

import logging

import brainstate
import jax
import jax.numpy as jnp

from .base import ETraceAlgorithm, _check_not_traced
from .d_rtrl import ParamDimVjpAlgorithm
from .es_d_rtrl import IODimVjpAlgorithm
from .sharding import batch_placement

__all__ = ["compile", "ALGORITHMS"]

_logger = logging.getLogger("braintrace")

ALGORITHMS = {
    "d_rtrl": ParamDimVjpAlgorithm,
    "es_d_rtrl": IODimVjpAlgorithm,
    "esd_rtrl": IODimVjpAlgorithm,
    "pp_prop": IODimVjpAlgorithm,
}


def _resolve(algorithm):
    if isinstance(algorithm, str):
        key = algorithm.strip().lower().replace("-", "_")
        if key not in ALGORITHMS:
            raise ValueError(
                f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)} or pass an "
                "ETraceAlgorithm subclass."
            )
        return ALGORITHMS[key]
    if isinstance(algorithm, type) and issubclass(algorithm, ETraceAlgorithm):
        return algorithm
    raise TypeError(f"`algorithm` must be a name or an ETraceAlgorithm subclass; got {algorithm!r}.")


def compile(model: brainstate.nn.Module, algorithm, *example_inputs, batch_size: int | None = None,
            seed: int | None = None, verbose: int = 0, vmap: bool = False, sharding=None,
            **options) -> ETraceAlgorithm:
    """Initialise ``model``'s states, build an online learner and compile its graph.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    algorithm : str or type
        ``'d_rtrl'``, ``'es_d_rtrl'`` / ``'pp_prop'``, or an :class:`ETraceAlgorithm` subclass.
    *example_inputs
        One step's inputs (with the batch axis first when ``batch_size`` is given).
    batch_size : int, optional
        Batch size. Without ``vmap`` the batch is a real axis of every state and op.
    seed : int, optional
        Seeds ``brainstate.random`` before the states are initialised, so that random
        initial states are reproducible.
    verbose : int
        ``verbose >= 1`` logs the compilation report (logger ``braintrace``, level INFO).
    vmap : bool
        Compile one unbatched lane and run ``batch_size`` lanes with ``jax.vmap`` (requires
        ``batch_size``). Both modes give identical gradients.
    sharding : jax.sharding.NamedSharding, optional
        Data parallel: ``NamedSharding(mesh, P('batch'))`` over a 1-D mesh (needs a
        ``batch_size`` divisible by the number of devices). Every state whose leading axis is
        the batch (or lane) axis (hidden states, traces) is split over the mesh axis, every
        other state (parameters, the step counter) is replicated, and each step keeps that
        placement. Place input sequences with ``jax.device_put(xs, NamedSharding(mesh,
        P(None, 'batch')))``. See :mod:`braintrace.algorithms.sharding` (also multi-host).
    **options
        Passed to the algorithm (e.g. ``decay_or_rank`` for ES-D-RTRL).

    Returns
    -------
    ETraceAlgorithm
        The compiled learner.

    Raises
    ------
    NotSupportedError
        When called inside ``jax.jit`` (or another JAX trace): compile once outside, then
        call the learner inside ``jit``. Nothing is changed in that case.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), 'd_rtrl', jnp.ones((2, 3)), batch_size=2)
    >>> learner(jnp.ones((2, 3))).shape
    (2, 4)
    """
    cls = _resolve(algorithm)
    placement = None if sharding is None else batch_placement(sharding, batch_size)
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"`verbose` must be a non-negative int; got {verbose!r}.")
    # Before init_all_states: under a trace it would leave tracers in the model.
    _check_not_traced(model, example_inputs, {}, "braintrace.compile")
    # The learner first: a rejected option leaves the model untouched.
    learner = cls(model, vmap=vmap, **options)
    if seed is not None:
        brainstate.random.seed(seed)
    if vmap:
        if batch_size is None:
            raise ValueError("`vmap=True` needs `batch_size` (the number of lanes).")
        for i, leaf in enumerate(jax.tree.leaves(example_inputs)):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != batch_size:
                raise ValueError(
                    f"with vmap=True every input leaf needs a leading axis of size {batch_size}; input leaf {i} "
                    f"has shape {jnp.shape(leaf)}."
                )
        brainstate.nn.init_all_states(model)
        for st in model.states().values():
            if not isinstance(st, brainstate.ParamState):
                st.value = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch_size,) + jnp.shape(a)), st.value)
    elif batch_size is not None:
        brainstate.nn.init_all_states(model, batch_size)
    else:
        brainstate.nn.init_all_states(model)
    learner.compile_graph(*example_inputs)
    if placement is not None:
        placement.place_learner(learner)
        learner._placement = placement
    if verbose >= 1:
        _logger.info("%s", learner.report())
    return learner
