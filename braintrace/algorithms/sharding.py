# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Data-parallel placement of an online learner over a 1-D device mesh.

``braintrace.compile(..., batch_size=B, sharding=NamedSharding(mesh, P('batch')))`` places
every state whose leading axis is the batch axis (hidden states, eligibility traces, other
per-sample states) with that axis split over the mesh axis, and every other state
(parameters, the step counter) replicated on all devices of the mesh. Inside the step the
learner pins the same placement on the states it writes (``jax.lax.with_sharding_constraint``),
so a jitted loop keeps the traces where they are instead of gathering them.

Sharding changes where values live, never what is computed: the gradients equal those of
the unsharded learner up to the order of the batch reduction.

The same code runs on several hosts after ``jax.distributed.initialize()``: build the mesh
over ``jax.devices()`` (all processes' devices), compile with the same ``seed`` in every
process (the states are created identically everywhere and each process keeps its own
shards), and build per-process input shards with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import brainstate
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["BatchPlacement", "batch_placement"]


class BatchPlacement:
    """Where each state of a data-parallel learner lives.

    A leaf with at least one axis whose leading size is ``batch_size`` is split over the mesh
    axis (``batched``); every other leaf is replicated (``replicated``). Create it with
    :func:`batch_placement`.

    Parameters
    ----------
    batched : jax.sharding.NamedSharding
        The batch sharding, ``NamedSharding(mesh, P(axis))``.
    batch_size : int
        The batch size (the number of lanes in ``vmap`` mode).

    Examples
    --------
    >>> import jax
    >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    >>> from braintrace.algorithms.sharding import batch_placement
    >>> mesh = Mesh(jax.devices()[:1], ('batch',))
    >>> placement = batch_placement(NamedSharding(mesh, P('batch')), 4)
    >>> placement.sharding_of(jax.numpy.zeros((4, 3))).spec == P('batch')
    True
    >>> placement.sharding_of(jax.numpy.zeros((3, 4))).spec == P()
    True
    """

    def __init__(self, batched: NamedSharding, batch_size: int):
        self.batched = batched
        self.replicated = NamedSharding(batched.mesh, PartitionSpec())
        self.batch_size = int(batch_size)

    @property
    def num_shards(self) -> int:
        """The number of devices along the batch axis."""
        return int(self.batched.mesh.size)

    def has_batch_axis(self, leaf) -> bool:
        shape = np.shape(leaf)
        return len(shape) >= 1 and shape[0] == self.batch_size

    def sharding_of(self, leaf) -> NamedSharding:
        """The sharding of one array leaf."""
        return self.batched if self.has_batch_axis(leaf) else self.replicated

    def put(self, tree):
        """``tree`` with every leaf moved to its sharding (outside ``jit``)."""
        return jax.tree.map(lambda a: _put(a, self.sharding_of(a)), tree)

    def constrain(self, tree):
        """``tree`` with the placement pinned (inside or outside ``jit``)."""
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.sharding_of(a)), tree)

    def place_learner(self, learner) -> None:
        """Move every state of ``learner`` (the model's and the learner's own) to its sharding."""
        for st in learner.states().values():
            if isinstance(st, brainstate.ParamState):
                st.value = jax.tree.map(lambda a: _put(a, self.replicated), st.value)
            else:
                st.value = self.put(st.value)

    def __repr__(self) -> str:
        return f"BatchPlacement(batch_size={self.batch_size}, mesh={dict(self.batched.mesh.shape)})"


def _put(value, sharding: NamedSharding):
    if sharding.is_fully_addressable:
        return jax.device_put(value, sharding)
    # Multi-host: every process holds the full (identically initialised) value and
    # contributes the shards of its own devices.
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def batch_placement(sharding, batch_size) -> BatchPlacement:
    """Check a data-parallel ``sharding`` for ``batch_size`` and return its placement.

    Parameters
    ----------
    sharding : jax.sharding.NamedSharding
        ``NamedSharding(mesh, P(axis))`` over a 1-D mesh whose only axis is ``axis``.
    batch_size : int or None
        The batch size; it must be divisible by the number of devices of the mesh.

    Returns
    -------
    BatchPlacement

    Raises
    ------
    TypeError
        If ``sharding`` is not a ``NamedSharding``.
    ValueError
        For a mesh that is not 1-D, a spec that does not split the leading axis over the mesh
        axis, a missing ``batch_size`` or one not divisible by the number of devices.

    Examples
    --------
    >>> import jax
    >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    >>> from braintrace.algorithms.sharding import batch_placement
    >>> batch_placement(NamedSharding(Mesh(jax.devices()[:1], ('batch',)), P('batch')), 8).num_shards
    1
    """
    if not isinstance(sharding, NamedSharding):
        raise TypeError(
            "`sharding` must be a `jax.sharding.NamedSharding(mesh, PartitionSpec('batch'))` over a 1-D mesh; "
            f"got {type(sharding).__name__}."
        )
    mesh = sharding.mesh
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"`sharding` must be over a 1-D mesh (data parallel over the batch); its mesh has axes "
            f"{dict(mesh.shape)}. Build it as `Mesh(devices, ('batch',))`."
        )
    axis = mesh.axis_names[0]
    spec = tuple(sharding.spec)
    if not spec or spec[0] != axis or any(s is not None for s in spec[1:]):
        raise ValueError(
            f"`sharding` must split the leading (batch) axis over the mesh axis: PartitionSpec({axis!r}); "
            f"got {sharding.spec}."
        )
    if batch_size is None:
        raise ValueError("`sharding=` splits the batch over devices and needs `batch_size`.")
    devices = int(mesh.size)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1 or batch_size % devices:
        raise ValueError(
            f"`batch_size` ({batch_size!r}) must be a positive multiple of the {devices} devices of the mesh axis "
            f"{axis!r}, so that every device holds the same number of rows."
        )
    return BatchPlacement(sharding, int(batch_size))
