# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""One-call setup of an online learner: initialise states, build, compile."""

from __future__ import annotations

import importlib
import logging

import brainstate
import jax
import jax.numpy as jnp

from .. import _errors
from .base import ETraceAlgorithm
from .input_checks import check_not_traced
from .config import ETraceConfig
from .d_rtrl import ParamDimVjpAlgorithm
from .es_d_rtrl import IODimVjpAlgorithm
from .sharding import batch_placement

__all__ = ["compile", "ALGORITHMS", "LAZY_ALGORITHMS", "NOT_IMPLEMENTED_ALGORITHMS"]

_logger = logging.getLogger("braintrace")

ALGORITHMS = {
    "d_rtrl": ParamDimVjpAlgorithm,
    "es_d_rtrl": IODimVjpAlgorithm,
    "esd_rtrl": IODimVjpAlgorithm,
    "pp_prop": IODimVjpAlgorithm,
}

# Names whose class lives in braintrace.algorithms but is resolved at call time, so that
# compile() works (and names the class) whether or not this build provides it.
LAZY_ALGORITHMS = {
    "eprop": "EProp",
    "e_prop": "EProp",
    "ostl_feedforward": "OSTLFeedforward",
    "ostl_recurrent": "OSTLRecurrent",
    "three_factor": "ThreeFactor",
    "uoro": "UORO",
    "dni": "DNI",
}

# Published names of rules this version has no engine for.
NOT_IMPLEMENTED_ALGORITHMS = {
}


def _lazy_class(class_name: str, asked_for: str):
    package = importlib.import_module(__package__)
    cls = getattr(package, class_name, None)
    if cls is None:
        raise _errors.NotSupportedError(
            f"{asked_for} needs `braintrace.algorithms.{class_name}`, which this build does not provide; use "
            f"{sorted(ALGORITHMS)} or pass an ETraceAlgorithm subclass."
        )
    return cls


def _resolve_name(algorithm: str):
    key = algorithm.strip().lower().replace("-", "_")
    if key in ALGORITHMS:
        return ALGORITHMS[key]
    if key in LAZY_ALGORITHMS:
        return _lazy_class(LAZY_ALGORITHMS[key], f"algorithm {algorithm!r}")
    if key in NOT_IMPLEMENTED_ALGORITHMS:
        raise _errors.NotSupportedError(
            f"algorithm {algorithm!r} ({NOT_IMPLEMENTED_ALGORITHMS[key]}) is not implemented in this version; use "
            f"one of {sorted(ALGORITHMS)} or pass an ETraceAlgorithm subclass."
        )
    known = sorted(set(ALGORITHMS) | set(LAZY_ALGORITHMS) | set(NOT_IMPLEMENTED_ALGORITHMS))
    raise ValueError(
        f"unknown algorithm {algorithm!r}; known names (case-insensitive) are {known}, or pass an "
        "ETraceAlgorithm subclass or a braintrace.ETraceConfig."
    )


def engine_for_config(config: ETraceConfig):
    """The learner class implementing ``config`` and the constructor options it implies.

    Raises
    ------
    NotSupportedError
        Naming the axis value this version has no engine for (random-projection traces, the
        coupled or sparse_n scopes with a non-symmetric signal or a filter, bootstrapped signals, window or sequence-end updates, a
        recursion other than the Jacobian on per-parameter traces, unequal io decays, ...).

    Examples
    --------
    >>> import braintrace
    >>> from braintrace.algorithms.compile import engine_for_config
    >>> cls, options = engine_for_config(braintrace.ETraceConfig('io_factorized', decay=0.8))
    >>> cls.__name__, options
    ('IODimVjpAlgorithm', {'decay_or_rank': 0.8})
    """

    def refuse(axis: str, value, what: str):
        raise _errors.NotSupportedError(
            f"ETraceConfig {axis}={value!r} ({what}) has no engine in this version; supported configs are "
            "D_RTRL (per_param, jacobian, diagonal), pp_prop (io_factorized, (scalar_leak, jacobian), diagonal, "
            "equal decays), EProp (kappa filter / random_feedback), ThreeFactor (modulatory), OSTLRecurrent (coupled) "
            "and SnAp (sparse_n), both with the symmetric signal and no filter, UORO (random_projection, coupled) and "
            "DNI (bootstrapped)."
        )

    if config.update_schedule != "per_step":
        refuse("update_schedule", config.update_schedule, "gradients are formed per step or per window call")
    if config.trace_factorization == "random_projection":
        # Validation already pinned recurrence_scope='coupled'.
        if config.temporal_recursion != "jacobian":
            refuse("temporal_recursion", config.temporal_recursion, "UORO projects the Jacobian recursion")
        if config.learning_signal != "symmetric":
            refuse("learning_signal", config.learning_signal, "UORO contracts the true ∂L/∂h")
        return _lazy_class("UORO", "trace_factorization='random_projection'"), {}
    if config.recurrence_scope != "diagonal":
        return _scoped_engine(config, refuse)
    if config.learning_signal == "bootstrapped":
        if config.is_factorized or config.temporal_recursion != "jacobian" or config.trace_filter != "none":
            refuse("learning_signal", "bootstrapped", "DNI is D-RTRL (per_param, jacobian, no filter) plus a "
                   "synthetic gradient")
        return _lazy_class("DNI", "learning_signal='bootstrapped'"), {}
    if config.is_factorized:
        if config.temporal_recursion != ("scalar_leak", "jacobian"):
            refuse("temporal_recursion", config.temporal_recursion, "pp-prop leaks x and rolls f by the Jacobian")
        if config.decay_x != config.decay_f:
            refuse("decay", config.decay, "pp-prop has one decay for both sides")
        if config.learning_signal != "symmetric":
            refuse("learning_signal", config.learning_signal, "pp-prop uses the symmetric signal")
        return IODimVjpAlgorithm, {"decay_or_rank": config.decay_f}
    if config.temporal_recursion != "jacobian":
        refuse("temporal_recursion", config.temporal_recursion, "per-parameter traces roll by the Jacobian")
    if config.learning_signal == "modulatory":
        if config.trace_filter != "none":
            refuse("trace_filter", config.trace_filter, "ThreeFactor has no trace filter")
        return _lazy_class("ThreeFactor", "learning_signal='modulatory'"), {}
    if config.trace_filter == "kappa" or config.learning_signal == "random_feedback":
        return _lazy_class("EProp", f"{config.describe()!r}"), {
            "feedback": config.learning_signal, "kappa_filter_decay": config.kappa or 0.0}
    return ParamDimVjpAlgorithm, {}


def _scoped_engine(config: ETraceConfig, refuse):
    """OSTLRecurrent (coupled) or SnAp (sparse_n) for a per-param, Jacobian, symmetric config."""
    scope = config.recurrence_scope
    if config.learning_signal != "symmetric":
        refuse("learning_signal", config.learning_signal, f"the {scope} scope uses the symmetric signal")
    if config.trace_filter != "none":
        refuse("trace_filter", config.trace_filter, f"the {scope} scope has no trace filter")
    if scope == "coupled":
        return _lazy_class("OSTLRecurrent", "recurrence_scope='coupled'"), {}
    return _lazy_class("SnAp", "recurrence_scope='sparse_n'"), {"n": config.sparse_n}


def _resolve(algorithm, options: dict):
    """The learner class for ``algorithm``, and the options to construct it with."""
    if isinstance(algorithm, ETraceConfig):
        if "config" in options:
            raise ValueError("the ETraceConfig is given twice: as `algorithm` and as `config=`; pass it once, "
                             "as `algorithm`.")
        cls, config_options = engine_for_config(algorithm)
        return cls, {**config_options, **options}
    if isinstance(algorithm, str):
        return _resolve_name(algorithm), options
    if isinstance(algorithm, type) and issubclass(algorithm, ETraceAlgorithm):
        return algorithm, options
    raise TypeError(f"`algorithm` must be a name, an ETraceAlgorithm subclass or an ETraceConfig; got {algorithm!r}.")


def compile(model: brainstate.nn.Module, algorithm, *example_inputs, batch_size: int | None = None,
            seed: int | None = None, verbose: int = 0, vmap: bool = False, sharding=None,
            **options) -> ETraceAlgorithm:
    """Initialise ``model``'s states, build an online learner and compile its graph.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    algorithm : str, type or ETraceConfig
        A case-insensitive name (``'d_rtrl'``, ``'es_d_rtrl'`` / ``'esd_rtrl'`` / ``'pp_prop'``,
        ``'eprop'`` / ``'e_prop'``, ``'ostl_feedforward'``, ``'ostl_recurrent'``,
        ``'three_factor'``, ``'uoro'``, ``'dni'``), an :class:`ETraceAlgorithm` subclass (SnAp
        is class-only: ``braintrace.SnAp``), or an :class:`~braintrace.ETraceConfig`, which
        selects the engine (for pp-prop, ``decay_or_rank`` defaults to ``config.decay``; the
        coupled and sparse_n scopes select OSTLRecurrent and SnAp, random_projection UORO and
        bootstrapped DNI).
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
        call the learner inside ``jit``. Nothing is changed in that case. Also for a rule
        this version has no engine for, and for ``vmap=True`` with
        ``vjp_method='multi-step'``.
    ValueError
        For an unknown algorithm name (the message lists the known ones).

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), 'd_rtrl', jnp.ones((2, 3)), batch_size=2)
    >>> learner(jnp.ones((2, 3))).shape
    (2, 4)
    """
    cls, options = _resolve(algorithm, options)
    placement = None if sharding is None else batch_placement(sharding, batch_size)
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"`verbose` must be a non-negative int; got {verbose!r}.")
    # Before init_all_states: under a trace it would leave tracers in the model.
    check_not_traced(model, example_inputs, {}, "braintrace.compile")
    # The learner first: a rejected option leaves the model untouched.
    learner = cls(model, vmap=vmap, **options)
    if vmap and learner.options.vjp_method == "multi-step":
        raise _errors.NotSupportedError(
            f"`{type(learner).__name__}` with vjp_method='multi-step' and vmap=True: multi-step windows are not "
            "supported on vmapped learners. Use vmap=False (a real batch axis) or vjp_method='single-step'."
        )
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
