# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The learner's checks of what it is given: example inputs, step inputs, states, derivatives.

Each check raises a :class:`~braintrace.NotSupportedError`, :class:`~braintrace.CompilationError`,
``ValueError`` or ``TypeError`` that says what was expected, what was found, where, and what
to do; none of them changes the learner or the model.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from .. import _errors
from ..compiler.diagnostics import format_path

__all__ = ["bind_inputs", "check_hidden_states", "check_no_complex", "check_not_traced", "checked_arg_leaves",
           "first_order_only"]


def bind_inputs(model, args: tuple, kwargs: dict) -> tuple:
    """``args`` and ``kwargs`` as positional inputs of ``model.update``."""
    if not kwargs:
        return tuple(args)
    name = f"{type(model).__name__}.update"
    try:
        bound = inspect.signature(model.update).bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"the inputs do not match the signature of `{name}`: {error}.") from None
    if bound.kwargs:
        raise TypeError(
            f"`{name}` takes {sorted(bound.kwargs)} as keyword-only arguments; the learner passes "
            "inputs by position. Make them positional-or-keyword parameters of `update`."
        )
    return tuple(bound.args)


def checked_arg_leaves(model, compiled, args: tuple, lanes: int | None) -> list:
    """The input leaves, checked against (and cast to) the compiled example inputs.

    ``compiled`` carries ``arg_treedef`` and ``arg_avals`` (one lane's); ``lanes`` is the
    lane count of a vmapped learner (``None`` otherwise).
    """
    name = f"{type(model).__name__}.update"
    leaves, treedef = jax.tree.flatten(args)
    if treedef != compiled.arg_treedef:
        raise TypeError(
            f"the inputs of `{name}` have tree structure {treedef}; the learner was compiled for "
            f"{compiled.arg_treedef}. Pass inputs structured like the example inputs, or recompile."
        )
    out = []
    for i, (leaf, (shape, dtype)) in enumerate(zip(leaves, compiled.arg_avals, strict=True)):
        where = f"input leaf {i} of `{name}`" if len(leaves) > 1 else f"the input of `{name}`"
        found = tuple(jnp.shape(leaf))
        expected = shape if lanes is None else (lanes,) + tuple(shape)
        if found != tuple(expected):
            hint = ("recompile for the new batch size (`braintrace.compile(..., batch_size=...)`)"
                    if found[1:] == tuple(expected)[1:] and found else
                    "check the feature axes, or recompile with example inputs of this shape")
            raise ValueError(f"{where} has shape {found}; the learner was compiled for {tuple(expected)}"
                             f"{' (lane axis first)' if lanes is not None else ''}. To use this shape, {hint}.")
        found_dtype = jnp.result_type(leaf)
        if found_dtype != dtype:
            if not np.can_cast(found_dtype, dtype, casting="same_kind"):
                raise TypeError(f"{where} has dtype {found_dtype}; the learner was compiled for {dtype}, and "
                                f"{found_dtype} does not convert to it without loss. Cast the input, or "
                                "recompile with example inputs of this dtype.")
            leaf = jnp.asarray(leaf, dtype)
        out.append(leaf)
    return out


@jax.custom_jvp
def _first_order_guard(x):
    return x


@_first_order_guard.defjvp
def _first_order_guard_jvp(primals, tangents):
    raise _errors.NotSupportedError(
        "differentiating the online gradient (a second derivative, `jax.jacfwd`/`jax.hessian`/"
        "`jax.grad` over `etrace_grad` or over a gradient of a learner step) is not supported: the "
        "eligibility-trace gradient is an estimate with no derivative of its own, and returning one "
        "would give silent zeros. Differentiate a BPTT loss (`brainstate.transform.grad` of the "
        "unrolled model) for higher-order derivatives, or use finite differences of `etrace_grad`."
    )


def first_order_only(tree):
    """Identity on values; raises if a forward-mode tangent flows into the learner's step."""
    return jax.tree.map(
        lambda a: _first_order_guard(a) if jnp.issubdtype(jnp.result_type(a), jnp.inexact) else a, tree)


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def check_not_traced(model, args, kwargs, what: str) -> None:
    """Refuse to compile under a JAX trace: the model and learner would keep dead tracers."""
    traced_input = any(_is_tracer(a) for a in jax.tree.leaves((args, kwargs)))
    traced_state = [format_path(p) for p, st in model.states().items()
                    if any(_is_tracer(v) for v in jax.tree.leaves(st.value))]
    if traced_input or traced_state or _is_tracer(jnp.zeros(())):
        found = ("traced example inputs" if traced_input else
                 f"traced values in state(s) {', '.join(traced_state)}" if traced_state else "an active JAX trace")
        raise _errors.NotSupportedError(
            f"`{what}` was called inside `jax.jit` (or another JAX transformation): found {found}. "
            "Compilation stores concrete state values and the traced graph in the learner, which would "
            "hold dead tracers after the transformation returns. Compile once outside `jit` with concrete "
            "example inputs, then call the learner (or `etrace_grad`) inside `jit`."
        )


def check_no_complex(model, args) -> None:
    """Complex inputs, parameters or states: the trace rules assume real arrays."""
    for i, leaf in enumerate(jax.tree.leaves(args)):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise _errors.NotSupportedError(
                f"input leaf {i} of `{type(model).__name__}.update` has the complex dtype {jnp.result_type(leaf)}; "
                "online learning supports real-valued inputs, parameters and hidden states only. Split the "
                "input into real and imaginary parts (two real arrays), or use BPTT for complex models."
            )
    for path, st in model.states().items():
        for leaf in jax.tree.leaves(st.value):
            if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
                raise _errors.NotSupportedError(
                    f"{type(st).__name__} `{format_path(path)}` has the complex dtype {jnp.result_type(leaf)}; "
                    "online learning supports real-valued inputs, parameters and hidden states only. Store the "
                    "real and imaginary parts in separate real arrays, or use BPTT for complex models."
                )


def check_hidden_states(model, graph) -> None:
    """Every hidden state used by the step is floating point and keeps its shape and dtype."""
    minfo = graph.module_info
    for path, invar in minfo.hidden_path_to_invar.items():
        dtype = invar.aval.dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise _errors.NotSupportedError(
                f"HiddenState `{format_path(path)}` has dtype {dtype}; hidden states carry eligibility traces and "
                "gradients, so they must be floating point. Keep integer or boolean quantities (spike counts, "
                "refractory flags, step counters) in a `brainstate.ShortTermState`, or store them as floats."
            )
        outvar = minfo.hidden_path_to_outvar[path]
        before = (tuple(invar.aval.shape), invar.aval.dtype)
        after = (tuple(outvar.aval.shape), outvar.aval.dtype)
        if before != after:
            raise _errors.CompilationError(
                f"HiddenState `{format_path(path)}` enters the step as {before[1]}{list(before[0])} and leaves it as "
                f"{after[1]}{list(after[0])}; a hidden state must keep its shape and dtype from step to step "
                f"(eligibility traces are laid out per hidden position). Fix `{type(model).__name__}.update` so "
                "that the new value has the old value's shape (slice, reshape or cast it), or initialise the "
                "state with the shape the step produces."
            )
