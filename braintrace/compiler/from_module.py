# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The published ``*_from_module`` entry points: trace the module, then run one compiler pass.

Each is :func:`~braintrace.extract_module_info` followed by the ``*_from_minfo`` pass of the
same name (and, for the later passes, the earlier ones they need), for research code that
inspects one pass on a model without building an :class:`~braintrace.ETraceGraph`.
"""

from __future__ import annotations

import inspect

from .hidden_groups import find_hidden_groups_from_minfo
from .module_info import extract_module_info
from .perturbation import add_hidden_perturbation_from_minfo
from .relations import find_hidden_param_op_relations_from_minfo
from .snap_pattern import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["add_hidden_perturbation_in_module", "find_hidden_groups_from_module",
           "find_hidden_param_op_relations_from_module"]


def _module_info(model, args, kwargs):
    if kwargs:
        bound = inspect.signature(model.update).bind(*args, **kwargs)
        args = tuple(bound.args)
    return extract_module_info(model, *args)


def find_hidden_groups_from_module(model, *model_args, include_recurrent_mixing: bool = False, sparse_n=None,
                                   snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                                   **model_kwargs):
    """:func:`~braintrace.find_hidden_groups_from_minfo` on one traced step of ``model``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> lstm = braintrace.nn.LSTMCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(lstm)
    >>> groups, _ = braintrace.find_hidden_groups_from_module(lstm, jnp.ones(3))
    >>> [g.hidden_paths for g in groups]
    [[('c',), ('h',)]]
    """
    minfo = _module_info(model, model_args, model_kwargs)
    return find_hidden_groups_from_minfo(minfo, include_recurrent_mixing=include_recurrent_mixing, sparse_n=sparse_n,
                                         snap_max_jacobian_elements=snap_max_jacobian_elements)


def find_hidden_param_op_relations_from_module(model, *model_args, **model_kwargs):
    """:func:`~braintrace.find_hidden_param_op_relations_from_minfo` on one traced step of ``model``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> relations = braintrace.find_hidden_param_op_relations_from_module(cell, jnp.ones(3))
    >>> len(relations) >= 2
    True
    """
    minfo = _module_info(model, model_args, model_kwargs)
    _, hid_path_to_group = find_hidden_groups_from_minfo(minfo)
    return find_hidden_param_op_relations_from_minfo(minfo, hid_path_to_group)


def add_hidden_perturbation_in_module(model, *model_args, **model_kwargs):
    """:func:`~braintrace.add_hidden_perturbation_from_minfo` on one traced step of ``model``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> perturb = braintrace.add_hidden_perturbation_in_module(cell, jnp.ones(3))
    >>> len(perturb.perturb_hidden_paths)
    1
    """
    minfo = _module_info(model, model_args, model_kwargs)
    groups, hid_path_to_group = find_hidden_groups_from_minfo(minfo)
    relations = find_hidden_param_op_relations_from_minfo(minfo, hid_path_to_group)
    return add_hidden_perturbation_from_minfo(minfo, groups, relations)
