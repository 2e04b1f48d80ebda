# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Checkpoint and bit-exact resume of an online learner, built on orbax-checkpoint.

:func:`save` writes every state of a compiled learner (the model's parameters and other
states, the eligibility traces and the running index) plus an arbitrary ``extra`` pytree
(an optax optimizer state, a data-loader position, ...) under ``directory/<step>``.
:func:`restore` reads them back into a learner compiled for the same model structure, so
that training continues exactly where it stopped: the values are bit-identical and keep the
placement (sharding) of the learner they are restored into.

Install the dependency with ``pip install 'braintrace[checkpoint]'`` (``orbax-checkpoint``).

``extra`` keeps its tree structure and leaf types: the tree structure is stored with
``pickle`` (so NamedTuples such as optax states come back as the same classes; restoring
needs those classes importable, and, as with any pickle, only restore checkpoints you trust).
Under ``jax.distributed`` every process must call :func:`save` and :func:`restore`.
"""

from __future__ import annotations

import base64
import os
import pickle

import jax
import numpy as np

from .compiler.diagnostics import format_path

__all__ = ["save", "restore", "all_steps"]

_FORMAT = 1
_PY_SCALARS = {"bool": bool, "int": int, "float": float, "complex": complex}


def _ocp():
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "braintrace.checkpoint needs orbax-checkpoint; install it with "
            "`pip install 'braintrace[checkpoint]'` (or `pip install orbax-checkpoint`)."
        ) from error
    return ocp


def _manager(directory: str, create: bool):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def _learner_states(learner, what: str) -> dict:
    from .algorithms.base import ETraceAlgorithm

    if not isinstance(learner, ETraceAlgorithm):
        raise TypeError(f"`{what}` takes an online learner (`braintrace.compile(...)`); got {type(learner).__name__}.")
    if not learner.is_compiled:
        raise ValueError(
            f"`{what}` needs a compiled learner (its traces exist only after compilation); "
            "call `braintrace.compile(model, algorithm, *example_inputs, ...)` first."
        )
    return dict(learner.states())


def _describe(states: dict) -> list:
    out = []
    for path, st in states.items():
        leaves, treedef = jax.tree.flatten(st.value)
        out.append({
            "path": [str(p) for p in path],
            "kind": type(st).__name__,
            "treedef": str(treedef),
            "leaves": [[list(np.shape(a)), str(np.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype)]
                       for a in leaves],
        })
    return out


def _extra_leaves(extra):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(extra)
    arrays, kinds = {}, []
    for k, (key_path, leaf) in enumerate(leaves):
        if isinstance(leaf, jax.Array):
            kinds.append("jax")
            arrays[f"e{k}"] = leaf
        elif isinstance(leaf, np.ndarray | np.generic):
            kinds.append("numpy")
            arrays[f"e{k}"] = np.asarray(leaf)
        elif type(leaf).__name__ in _PY_SCALARS and isinstance(leaf, bool | int | float | complex):
            kinds.append(type(leaf).__name__)
            arrays[f"e{k}"] = np.asarray(leaf)
        else:
            raise TypeError(
                f"`extra` leaf `{jax.tree_util.keystr(key_path) or '<root>'}` is a {type(leaf).__name__}; "
                "a checkpoint stores arrays and Python numbers only. Keep other values out of `extra`."
            )
    return arrays, kinds, jax.tree.structure(extra)


def save(directory, learner, *, step: int, extra=None) -> str:
    """Save every state of ``learner`` and an ``extra`` pytree as checkpoint ``step``.

    Saving reads the states and writes nothing back: the running learner is not perturbed.

    Parameters
    ----------
    directory : str or os.PathLike
        The checkpoint directory (created if missing); the step goes to ``directory/<step>``.
    learner : ETraceAlgorithm
        A compiled learner (``braintrace.compile``).
    step : int
        A non-negative step number (for example the optimizer step), larger than every step
        already saved in ``directory``.
    extra : pytree, optional
        Anything else to restore with the learner: arrays and Python numbers in any pytree
        (dicts, lists, NamedTuples such as optax states).

    Returns
    -------
    str
        The absolute checkpoint directory.

    Raises
    ------
    ValueError
        For a negative ``step``, one not larger than the saved steps, or an uncompiled learner.
    TypeError
        For an ``extra`` leaf that is neither an array nor a Python number.

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp
    >>> import braintrace, braintrace.checkpoint
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), 'd_rtrl', jnp.zeros((4, 2)), batch_size=4)
    >>> _ = learner(jnp.ones((4, 2)))
    >>> directory = tempfile.mkdtemp()
    >>> _ = braintrace.checkpoint.save(directory, learner, step=1, extra={'epoch': 7})
    >>> braintrace.checkpoint.restore(directory, learner)
    {'epoch': 7}
    """
    states = _learner_states(learner, "braintrace.checkpoint.save")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"`step` must be a non-negative int; got {step!r}.")
    step = int(step)
    directory = os.path.abspath(os.fspath(directory))
    extra_arrays, extra_kinds, extra_treedef = _extra_leaves(extra)
    tree = {f"s{i}_{j}": leaf for i, st in enumerate(states.values())
            for j, leaf in enumerate(jax.tree.leaves(st.value))}
    meta = {
        "format": _FORMAT,
        "learner": type(learner).__name__,
        "states": _describe(states),
        "extra_kinds": extra_kinds,
        "extra_leaves": [[list(a.shape), str(a.dtype)] for a in extra_arrays.values()],
        "extra_treedef": base64.b64encode(pickle.dumps(extra_treedef)).decode("ascii"),
    }
    ocp = _ocp()
    items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
    if extra_arrays:  # orbax refuses empty items
        items["extra"] = ocp.args.StandardSave(extra_arrays)
    manager = _manager(directory, create=True)
    try:
        saved = sorted(int(s) for s in manager.all_steps())
        if step in saved:
            raise ValueError(f"checkpoint step {step} already exists in {directory}; save under a new step.")
        if saved and step < saved[-1]:
            raise ValueError(f"checkpoint steps must increase: {directory} already holds step {saved[-1]}, "
                             f"so step {step} cannot be saved there. Use a larger step or another directory.")
        if not manager.save(step, args=ocp.args.Composite(**items)):
            raise RuntimeError(f"orbax declined to save step {step} in {directory}.")
        manager.wait_until_finished()
    finally:
        manager.close()
    return directory


def all_steps(directory) -> list:
    """The saved steps in ``directory``, ascending (``FileNotFoundError`` if it is missing).

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp
    >>> import braintrace, braintrace.checkpoint
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), 'd_rtrl', jnp.zeros(2))
    >>> directory = tempfile.mkdtemp()
    >>> _ = braintrace.checkpoint.save(directory, learner, step=5)
    >>> braintrace.checkpoint.all_steps(directory)
    [5]
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist.")
    manager = _manager(directory, create=False)
    try:
        return sorted(int(s) for s in manager.all_steps())
    finally:
        manager.close()


def _check_structure(saved: list, states: dict, where: str) -> None:
    """Raise naming the first state whose path, kind, tree or leaf shapes/dtypes differ."""
    current = {tuple(d["path"]): d for d in _describe(states)}
    stored = {tuple(d["path"]): d for d in saved}
    for path in current:
        if path not in stored:
            raise ValueError(
                f"{where} does not match the learner: state `{format_path(path)}` of the learner is not in the "
                f"checkpoint (saved states: {', '.join(format_path(p) for p in stored)}). Restore into a learner "
                "compiled for the same model and algorithm."
            )
    # The model's own states first: a trace mismatch usually follows from a model change.
    for path, saved_desc in sorted(stored.items(), key=lambda item: item[0][:1] != ("model",)):
        if path not in current:
            raise ValueError(
                f"{where} does not match the learner: the checkpoint has state `{format_path(path)}`, which the "
                "learner does not have. Restore into a learner compiled for the same model and algorithm."
            )
        now = current[path]
        for field, label in (("kind", "state type"), ("treedef", "tree structure"), ("leaves", "leaf shapes/dtypes")):
            if saved_desc[field] != now[field]:
                raise ValueError(
                    f"{where} does not match the learner: state `{format_path(path)}` has {label} "
                    f"{saved_desc[field]} in the checkpoint and {now[field]} in the learner. Restore into a learner "
                    "compiled for the same model, algorithm and batch size."
                )


def restore(directory, learner, *, step: int | None = None):
    """Restore ``learner``'s states from checkpoint ``step`` (the latest when None).

    The learner must be compiled for a model of the same structure (state paths, types,
    shapes, dtypes); otherwise a ``ValueError`` names a mismatched state path and the learner
    is left untouched. Restored arrays keep the placement of the learner's current values
    (so a data-parallel learner stays sharded).

    Parameters
    ----------
    directory : str or os.PathLike
        The checkpoint directory given to :func:`save`.
    learner : ETraceAlgorithm
        A compiled learner.
    step : int, optional
        The step to restore; the latest saved step by default.

    Returns
    -------
    pytree
        The ``extra`` saved with the step, with its own tree structure and leaf types.

    Raises
    ------
    FileNotFoundError
        If ``directory`` does not exist, holds no checkpoint, or has no ``step``.
    ValueError
        If the checkpoint does not match the learner's structure.

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp, numpy as np
    >>> import braintrace, braintrace.checkpoint
    >>> def make():
    ...     return braintrace.compile(braintrace.nn.GRUCell(2, 3), 'es_d_rtrl', jnp.zeros(2), seed=0)
    >>> learner = make()
    >>> _ = learner(jnp.ones(2))
    >>> directory = tempfile.mkdtemp()
    >>> _ = braintrace.checkpoint.save(directory, learner, step=1)
    >>> fresh = make()
    >>> braintrace.checkpoint.restore(directory, fresh) is None
    True
    >>> np.array_equal(fresh(jnp.ones(2)), learner(jnp.ones(2)))
    True
    """
    states = _learner_states(learner, "braintrace.checkpoint.restore")
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist.")
    ocp = _ocp()
    manager = _manager(directory, create=False)
    try:
        steps = sorted(int(s) for s in manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"checkpoint directory {directory} holds no checkpoint.")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"checkpoint directory {directory} has no step {step}; saved steps: {steps}.")
        where = f"checkpoint {directory} step {step}"
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{where} has format {meta.get('format')!r}; this braintrace reads format {_FORMAT}.")
        _check_structure(meta["states"], states, where)
        flat = [jax.tree.flatten(st.value) for st in states.values()]
        target = {f"s{i}_{j}": _abstract(leaf) for i, (leaves, _) in enumerate(flat) for j, leaf in enumerate(leaves)}
        extra_kinds = meta["extra_kinds"]
        items = {"state": ocp.args.StandardRestore(target)}
        if extra_kinds:
            items["extra"] = ocp.args.StandardRestore({
                f"e{k}": _abstract(np.zeros(shape, dtype)) for k, (shape, dtype) in enumerate(meta["extra_leaves"])})
        loaded = manager.restore(step, args=ocp.args.Composite(**items))
    finally:
        manager.close()
    extra_treedef = pickle.loads(base64.b64decode(meta["extra_treedef"]))
    extra_leaves = [_extra_leaf(loaded["extra"][f"e{k}"], kind) for k, kind in enumerate(extra_kinds)]
    extra = jax.tree.unflatten(extra_treedef, extra_leaves)
    # Commit: everything was read and checked before any state is written.
    for i, (st, (leaves, treedef)) in enumerate(zip(states.values(), flat, strict=True)):
        st.value = jax.tree.unflatten(treedef, [loaded["state"][f"s{i}_{j}"] for j in range(len(leaves))])
    return extra


def _abstract(leaf):
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    leaf = np.asarray(leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def _extra_leaf(value, kind: str):
    if kind == "jax":
        return jax.numpy.asarray(value)
    value = np.asarray(value)
    if kind == "numpy":
        return value
    return _PY_SCALARS[kind](value.item())

