# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The learning-rule axis space: :class:`ETraceConfig` and the named presets.

A learning rule is a point on six axes (trace factorization, temporal recursion, the scope
of the recurrence, the learning signal, a trace filter and the update schedule) plus the
coefficients its categories need (``decay``, ``kappa``, ``sparse_n``, ``window_size``). A
config is canonicalised first (equivalent spellings collapse to one), then validated;
every invalid combination raises a ``ValueError`` that names the rule it breaks.
:func:`braintrace.compile` maps a config to the engine that implements it.
"""

from __future__ import annotations

import dataclasses
import numbers

__all__ = [
    "ETraceConfig",
    "TRACE_FACTORIZATIONS",
    "TEMPORAL_RECURSIONS",
    "RECURRENCE_SCOPES",
    "LEARNING_SIGNALS",
    "TRACE_FILTERS",
    "UPDATE_SCHEDULES",
    "PRESETS",
    "preset",
]

TRACE_FACTORIZATIONS = ("per_param", "io_factorized", "random_projection")
TEMPORAL_RECURSIONS = ("jacobian", "scalar_leak", "none")
RECURRENCE_SCOPES = ("diagonal", "coupled", "sparse_n")
LEARNING_SIGNALS = ("symmetric", "random_feedback", "modulatory", "bootstrapped")
TRACE_FILTERS = ("none", "kappa")
UPDATE_SCHEDULES = ("per_step", "window", "sequence_end")


def _choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}; got {value!r}.")
    return value


def _unit_interval(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1); got {value!r}.")
    return float(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1 (not a bool); got {value!r}.")
    return int(value)


def _pair(name: str, value, parse):
    """A scalar applied to both sides, or an ``(x, f)`` pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"`{name}` as a pair must be (x_side, f_side); got {value!r}.")
        return parse(f"{name}[0]", value[0]), parse(f"{name}[1]", value[1])
    return parse(name, value)


@dataclasses.dataclass(frozen=True)
class ETraceConfig:
    """A point of the learning-rule axis space (frozen; canonical after construction).

    Parameters
    ----------
    trace_factorization : {'per_param', 'io_factorized', 'random_projection'}
        Parameter-shaped traces (D-RTRL), an input-trace ⊗ output-trace product (pp-prop /
        ES-D-RTRL), or a rank-one random projection (UORO).
    temporal_recursion : {'jacobian', 'scalar_leak', 'none'} or (x_side, f_side)
        What carries a trace from one step to the next: the hidden Jacobian, a scalar leak
        ``decay``, or nothing (instantaneous). Under ``io_factorized`` it is an ``(x, f)``
        pair; the shorthand ``'jacobian'`` means ``('scalar_leak', 'jacobian')``, any other
        scalar applies to both sides.
    recurrence_scope : {'diagonal', 'coupled', 'sparse_n'}
        The part of the hidden Jacobian kept: per-position diagonal, the full within-group
        coupling (OSTL with H), or the ``sparse_n``-step neighbourhood (SnAp-n).
    learning_signal : {'symmetric', 'random_feedback', 'modulatory', 'bootstrapped'}
        The signal contracted with the traces: the true ``∂L/∂h``, a fixed random
        projection of it, a user-given modulator (three-factor), or ``∂L/∂h`` plus a
        synthetic future gradient (DNI).
    trace_filter : {'none', 'kappa'}
        ``'kappa'`` low-pass filters the trace (``ē ← κ ē + ε``, e-prop).
    update_schedule : {'per_step', 'window', 'sequence_end'}
        When gradients are formed; only ``'per_step'`` has an engine.
    decay : float or (float, float), optional
        The leak in [0, 1): required by ``scalar_leak`` under ``per_param`` and by
        ``io_factorized`` (a float for both sides, or an ``(x, f)`` pair).
    kappa : float, optional
        The filter constant in [0, 1) of ``trace_filter='kappa'``.
    sparse_n : int, optional
        The SnAp order ``n >= 1`` of ``recurrence_scope='sparse_n'``.
    window_size : int, optional
        The window length of ``update_schedule='window'``.

    Notes
    -----
    Canonicalisation: ``scalar_leak`` with decay 0 becomes ``none``; under
    ``io_factorized`` a decay of 0 turns its side into ``none``; ``none`` pins its decay
    to 0.0; ``kappa=0`` turns the filter off; ``sparse_n=1`` is ``coupled``. Rules (each a
    ``ValueError``): the kappa filter needs ``per_param``; a non-diagonal scope needs a
    ``jacobian`` recursion that is used; the x side is never ``jacobian``; ``per_param``
    with ``jacobian`` takes no decay and with ``scalar_leak`` needs one; ``io_factorized``
    needs both decays; a coefficient is given if and only if its category is selected;
    ``random_projection`` needs the ``coupled`` scope; ``sparse_n`` needs ``per_param``.

    Examples
    --------
    >>> from braintrace.algorithms.config import ETraceConfig
    >>> config = ETraceConfig('io_factorized', decay=0.9)
    >>> config.temporal_recursion, config.decay
    (('scalar_leak', 'jacobian'), (0.9, 0.9))
    >>> ETraceConfig(trace_filter='kappa', kappa=0.0).trace_filter    # kappa 0: no filter
    'none'
    >>> ETraceConfig(decay=0.5)
    Traceback (most recent call last):
    ...
    ValueError: per_param with temporal_recursion='jacobian' takes no decay ...
    """

    trace_factorization: str = "per_param"
    temporal_recursion: object = "jacobian"
    recurrence_scope: str = "diagonal"
    learning_signal: str = "symmetric"
    trace_filter: str = "none"
    update_schedule: str = "per_step"
    decay: object = None
    kappa: float | None = None
    sparse_n: int | None = None
    window_size: int | None = None

    def __post_init__(self):
        values = _parse(self)
        values = _canonicalize(values)
        _validate(values)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ derived views
    @property
    def is_factorized(self) -> bool:
        """True for ``io_factorized`` (an input trace times an output trace)."""
        return self.trace_factorization == "io_factorized"

    @property
    def include_recurrent_mixing(self) -> bool:
        """True when the scope keeps cross-position coupling (``coupled`` or ``sparse_n``)."""
        return self.recurrence_scope in ("coupled", "sparse_n")

    @property
    def recursion_x(self) -> str | None:
        """The input-side recursion (``io_factorized`` only, else None)."""
        return self.temporal_recursion[0] if self.is_factorized else None

    @property
    def recursion_f(self) -> str:
        """The recursion of the output side (of the whole trace when not factorized)."""
        return self.temporal_recursion[1] if self.is_factorized else self.temporal_recursion

    @property
    def decay_x(self) -> float | None:
        """The input-side decay (``io_factorized`` only, else None)."""
        return self.decay[0] if self.is_factorized else None

    @property
    def decay_f(self) -> float | None:
        """The output-side decay (the trace's leak when not factorized; None if it has none)."""
        return self.decay[1] if self.is_factorized else self.decay

    def replace(self, **changes) -> ETraceConfig:
        """A new config with ``changes`` applied (canonicalised and validated again).

        Examples
        --------
        >>> from braintrace.algorithms.config import ETraceConfig
        >>> ETraceConfig().replace(recurrence_scope='coupled').include_recurrent_mixing
        True
        """
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """A one-line readable summary of the rule.

        Examples
        --------
        >>> from braintrace.algorithms.config import ETraceConfig
        >>> ETraceConfig().describe()
        'per_param traces, jacobian recursion, diagonal scope, symmetric signal, per_step updates'
        """
        if self.is_factorized:
            recursion = (f"x:{self.recursion_x}/f:{self.recursion_f} recursion "
                         f"(decay x={self.decay_x}, f={self.decay_f})")
        else:
            recursion = f"{self.temporal_recursion} recursion"
            if self.temporal_recursion == "scalar_leak":
                recursion += f" (decay={self.decay})"
        parts = [f"{self.trace_factorization} traces", recursion, f"{self.recurrence_scope} scope"]
        if self.sparse_n is not None:
            parts[-1] += f" (n={self.sparse_n})"
        parts.append(f"{self.learning_signal} signal")
        if self.trace_filter == "kappa":
            parts.append(f"kappa filter ({self.kappa})")
        schedule = f"{self.update_schedule} updates"
        if self.window_size is not None:
            schedule += f" (window={self.window_size})"
        parts.append(schedule)
        return ", ".join(parts)


# ----------------------------------------------------------------------------------------
# Parse, canonicalise, validate
# ----------------------------------------------------------------------------------------
def _parse(config: ETraceConfig) -> dict:
    """Type and range checks of each field on its own."""
    factorization = _choice("trace_factorization", config.trace_factorization, TRACE_FACTORIZATIONS)
    recursion = config.temporal_recursion
    if factorization == "io_factorized":
        if recursion == "jacobian":  # the shorthand: leak on the x side, Jacobian on the f side
            recursion = ("scalar_leak", "jacobian")
        recursion = _pair("temporal_recursion", recursion, lambda n, v: _choice(n, v, TEMPORAL_RECURSIONS))
        if isinstance(recursion, str):
            recursion = (recursion, recursion)
    elif isinstance(recursion, (tuple, list)):
        raise ValueError(
            f"an (x, f) pair of `temporal_recursion` needs trace_factorization='io_factorized'; "
            f"{factorization} traces have one recursion, got {tuple(recursion)!r}."
        )
    else:
        recursion = _choice("temporal_recursion", recursion, TEMPORAL_RECURSIONS)
    decay = config.decay
    if decay is not None:
        if factorization == "io_factorized":
            # A side may be None in a pair (pinned by 'none', or missing: caught by the rules).
            decay = _pair("decay", decay, lambda n, v: None if v is None else _unit_interval(n, v))
            if isinstance(decay, float):
                decay = (decay, decay)
        elif isinstance(decay, (tuple, list)):
            raise ValueError(f"an (x, f) pair of `decay` needs trace_factorization='io_factorized'; got {decay!r}.")
        else:
            decay = _unit_interval("decay", decay)
    return dict(
        trace_factorization=factorization,
        temporal_recursion=recursion,
        recurrence_scope=_choice("recurrence_scope", config.recurrence_scope, RECURRENCE_SCOPES),
        learning_signal=_choice("learning_signal", config.learning_signal, LEARNING_SIGNALS),
        trace_filter=_choice("trace_filter", config.trace_filter, TRACE_FILTERS),
        update_schedule=_choice("update_schedule", config.update_schedule, UPDATE_SCHEDULES),
        decay=decay,
        kappa=None if config.kappa is None else _unit_interval("kappa", config.kappa),
        sparse_n=None if config.sparse_n is None else _positive_int("sparse_n", config.sparse_n),
        window_size=None if config.window_size is None else _positive_int("window_size", config.window_size),
    )


def _canonicalize(v: dict) -> dict:
    """Collapse equivalent spellings to one (see the class notes)."""
    v = dict(v)
    if v["trace_factorization"] == "io_factorized":
        sides, decays = list(v["temporal_recursion"]), v["decay"]
        if decays is not None:
            for i in (0, 1):
                if decays[i] == 0.0:  # no memory on this side: the recursion is instantaneous
                    sides[i] = "none"
        decays = list(decays) if decays is not None else [None, None]
        for i in (0, 1):
            if sides[i] == "none":
                _pin_zero(f"decay[{i}]", decays[i], f"temporal_recursion side {'xf'[i]}='none'")
                decays[i] = 0.0
        v["temporal_recursion"] = tuple(sides)
        v["decay"] = None if decays == [None, None] else tuple(decays)
    else:
        if v["temporal_recursion"] == "scalar_leak" and v["decay"] == 0.0:
            v["temporal_recursion"] = "none"
        if v["temporal_recursion"] == "none":
            _pin_zero("decay", v["decay"], "temporal_recursion='none'")
            v["decay"] = 0.0
    if v["trace_filter"] == "kappa" and v["kappa"] == 0.0:
        v["trace_filter"], v["kappa"] = "none", None
    if v["recurrence_scope"] == "sparse_n" and v["sparse_n"] == 1:
        v["recurrence_scope"], v["sparse_n"] = "coupled", None
    return v


def _pin_zero(name: str, value, why: str) -> None:
    if value not in (None, 0.0):
        raise ValueError(f"{why} has no leak, so `{name}` must be 0 or None; got {value!r}.")


def _validate(v: dict) -> None:
    """Raise a ValueError naming the first rule ``v`` breaks."""
    factorization, scope = v["trace_factorization"], v["recurrence_scope"]
    per_param, io = factorization == "per_param", factorization == "io_factorized"
    recursion_f = v["temporal_recursion"][1] if io else v["temporal_recursion"]
    if v["trace_filter"] == "kappa" and not per_param:
        raise ValueError(f"trace_filter='kappa' filters parameter-shaped traces and needs "
                         f"trace_factorization='per_param'; got {factorization!r}.")
    if scope != "diagonal" and recursion_f != "jacobian":
        raise ValueError(f"recurrence_scope={scope!r} keeps part of the hidden Jacobian, so it needs a consumed "
                         f"temporal_recursion='jacobian' (on the f side); got {recursion_f!r}.")
    if io and v["temporal_recursion"][0] == "jacobian":
        raise ValueError("the x side of an io_factorized trace is the op input, which has no hidden Jacobian: "
                         "temporal_recursion[0] must be 'scalar_leak' or 'none', not 'jacobian'.")
    if not io and recursion_f == "jacobian" and v["decay"] is not None:
        raise ValueError(f"{factorization} with temporal_recursion='jacobian' takes no decay (the Jacobian is the "
                         f"recursion); got decay={v['decay']!r}. Drop decay, or use 'scalar_leak'.")
    if not io and recursion_f == "scalar_leak" and v["decay"] is None:
        raise ValueError(f"{factorization} with temporal_recursion='scalar_leak' needs a decay in (0, 1).")
    if io and (v["decay"] is None or None in v["decay"]):
        raise ValueError("trace_factorization='io_factorized' needs both decays: pass decay=α or decay=(α_x, α_f).")
    for name, category, selected in (("kappa", "trace_filter='kappa'", v["trace_filter"] == "kappa"),
                                     ("sparse_n", "recurrence_scope='sparse_n'", scope == "sparse_n"),
                                     ("window_size", "update_schedule='window'", v["update_schedule"] == "window")):
        if selected != (v[name] is not None):
            raise ValueError(f"`{name}` is given if and only if {category} is selected; got {name}={v[name]!r} "
                             f"with {category.split('=')[0]}={v[category.split('=')[0]]!r}.")
    if factorization == "random_projection" and scope != "coupled":
        raise ValueError(f"trace_factorization='random_projection' projects the full within-group recursion and "
                         f"needs recurrence_scope='coupled'; got {scope!r}.")
    if scope == "sparse_n" and not per_param:
        raise ValueError(f"recurrence_scope='sparse_n' masks parameter-shaped traces and needs "
                         f"trace_factorization='per_param'; got {factorization!r}.")


# ----------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------
def preset(name: str, **coefficients) -> ETraceConfig:
    """The config of a named rule.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS` (case-insensitive).
    **coefficients
        ``decay`` for ``pp_prop``/``es_d_rtrl`` (default 0.9), ``kappa`` and ``feedback``
        (``'symmetric'`` or ``'random_feedback'``) for ``eprop``, ``n`` for ``snap``.

    Examples
    --------
    >>> from braintrace.algorithms.config import preset
    >>> preset('pp_prop', decay=0.5).decay
    (0.5, 0.5)
    >>> preset('eprop', kappa=0.8).trace_filter
    'kappa'
    """
    key = name.strip().lower().replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[key](**coefficients)


def _d_rtrl():
    return ETraceConfig()


def _pp_prop(decay=0.9):
    return ETraceConfig("io_factorized", ("scalar_leak", "jacobian"), decay=decay)


def _eprop(kappa=0.0, feedback="symmetric"):
    filtered = kappa is not None and kappa != 0.0
    return ETraceConfig(learning_signal=feedback, trace_filter="kappa" if filtered else "none",
                        kappa=kappa if filtered else None)


def _snap(n=2):
    return ETraceConfig(recurrence_scope="sparse_n", sparse_n=n)


PRESETS = {
    "d_rtrl": _d_rtrl,
    "pp_prop": _pp_prop,
    "es_d_rtrl": _pp_prop,
    "eprop": _eprop,
    "ostl_recurrent": lambda: ETraceConfig(recurrence_scope="coupled"),
    "ostl_feedforward": lambda: _pp_prop(1e-6),
    "snap": _snap,
    "uoro": lambda: ETraceConfig("random_projection", recurrence_scope="coupled"),
    "three_factor": lambda: ETraceConfig(learning_signal="modulatory"),
    "dni": lambda: ETraceConfig(learning_signal="bootstrapped"),
}
