# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A same-step pair whose ``s`` is made once per window: the GRU reset gate.

The reset gate's weight ``W_r`` has no trace: its output ``y`` reaches the hidden state only
through another dense op ``W_h`` (on ``[x, r*h]``, ``r = σ(y)``), so it learns from its
same-step gradient ``Σ_t xᵀ s`` with ``s = (ct · W_h[rows]ᵀ) ⊙ m``. Here ``ct`` is the
cotangent of ``W_h``'s output, ``rows`` are the rows of ``W_h`` that read the part
``p = r*h`` of its input, and ``m = ∂p/∂y`` is the diagonal Jacobian of the element-wise
chain from ``y`` to ``p``. Made at
every step, ``ct · W_h[rows]ᵀ`` is a ``(B × N)(N × N)`` product that reads the weight rows
every step. A GRU at N=1024 and B=16 is bound by that memory traffic. Under
:func:`~braintrace.etrace_grad` the step instead stacks ``(x, ct, m)``, and the driver makes
``s`` for a whole window with one ``(K·B × N)(N × N)`` product. That is the same gradient in
another order. On the 2-core CPU, GRU ES-D-RTRL (B=16) ran 13-19 % faster with it at N=1024
and 5-10 % faster at N=256 (``benchmarks/results.md``).

The step drops ``∂L/∂p`` (its product is what moves to the window), and with it the
cotangents that ``p`` and ``y`` would pass on to the step's inputs. :func:`find_deferral`
therefore accepts a pair only when nothing else that carries a gradient feeds the chain or the
op: its inputs must be data or states. The step (``base.py``) computes those input cotangents
the per-step way whenever an input of the step is differentiated, or when the rule reads the
old states' cotangents.

Conditions on a same-step pair (op ``D`` with output ``y``) and the input part ``p`` of a
:class:`~braintrace.algorithms.factored_gradients.TransposedWeight` op ``W``:

* ``y`` reaches the step's outputs only through one chain of element-wise equations with
  outputs of ``y``'s shape and dtype (a floating one), every intermediate read only inside the
  chain, ending at ``p``;
* ``p`` is read only by the concatenation that is ``W``'s input (or is that input), and that
  input only by ``W``;
* nothing that carries a gradient (a parameter other than the pair's weight and bias, a
  perturbation) reaches ``D``'s input or a side operand of the chain;
* ``D`` has no bias, or the pair takes it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._jax_compat import bind_equation
from .._jax_compat import lax_primitives as P
from ..compiler.jaxpr_tools import ELEMENTWISE_PRIMITIVES, forward_closure, is_var

__all__ = ["Deferral", "find_deferral", "chain_diagonal"]

# Element-wise and shape-keeping: the chain's Jacobian is then diagonal. No rounding: the
# step's reverse mode rounds the cotangent where the window's forward-mode ``m`` would round
# the tangent (a bf16 round trip in the chain gave 1.7e-3 relative on W_r; review of issue 14).
_CHAIN_PRIMITIVES = ELEMENTWISE_PRIMITIVES - {P.broadcast_in_dim_p, P.squeeze_p, P.reshape_p, P.reduce_precision_p}


class Deferral(NamedTuple):
    """Where a same-step pair's ``s`` is made at the window instead of in the step.

    Attributes
    ----------
    transposed : int
        The index of ``W``'s :class:`~braintrace.algorithms.factored_gradients.TransposedWeight`.
    part : int
        The index of ``p`` among its parts.
    chain : tuple of int
        The equations (indices into the perturbed step) from ``y`` to ``p``, in order.
    ct_shape : tuple
        The shape of ``W``'s output, that is of ``ct``.
    ct_dtype : numpy dtype
        Its dtype.
    """

    transposed: int
    part: int
    chain: tuple
    ct_shape: tuple
    ct_dtype: object


def find_deferral(eqns, main, y, op_eqn, own_leaves, gradient_sources, transposed) -> Deferral | None:
    """The :class:`Deferral` of the same-step op ``op_eqn`` (output ``y``), or None.

    ``eqns`` are the perturbed step's equations, ``main`` its gradient-carrying output vars,
    ``own_leaves`` the pair's weight and bias vars, ``gradient_sources`` every var a gradient
    starts from (parameter leaves, perturbations) and ``transposed`` the plan's
    :class:`~braintrace.algorithms.factored_gradients.TransposedWeight` entries.
    """
    if not jnp.issubdtype(y.aval.dtype, jnp.floating):
        return None
    readers = {}
    for i, eqn in enumerate(eqns):
        for a in eqn.invars:
            if is_var(a):
                readers.setdefault(a, []).append(i)
    parts = {part: (t_index, p_index) for t_index, t in enumerate(transposed)
             for p_index, (part, _, _) in enumerate(t.parts)}
    chain, var, on_path = [], y, {y}
    while var not in parts:
        nexts = readers.get(var, [])
        if var in main or len(nexts) != 1:
            return None
        eqn = eqns[nexts[0]]
        out = eqn.outvars[0]
        if (eqn.primitive not in _CHAIN_PRIMITIVES or len(eqn.outvars) != 1 or out.aval.shape != y.aval.shape
                or out.aval.dtype != y.aval.dtype):
            return None
        chain.append(nexts[0])
        on_path.add(out)
        var = out
    t_index, p_index = parts[var]
    t = transposed[t_index]
    if var in main:
        return None
    w_readers = readers.get(t.x_var, [])
    if len(w_readers) != 1 or eqns[w_readers[0]].invars[0] is not t.x_var:
        return None
    if var is not t.x_var:  # one part of W's input: read only by the concatenation making it
        producer = [i for i, e in enumerate(eqns) if any(o is t.x_var for o in e.outvars)]
        if readers.get(var, []) != producer:
            return None
    # Nothing carrying a gradient besides the pair's own leaves reaches the op's input or the
    # chain's side operands: the cotangents dropped with ∂L/∂p go only to data and states.
    carrying = forward_closure(set(gradient_sources) - set(own_leaves), eqns,
                               crosses=lambda e: e.primitive is not P.stop_gradient_p)
    sides = [a for i in chain for a in eqns[i].invars if is_var(a) and a not in on_path]
    if any(a in carrying for a in sides) or (is_var(op_eqn.invars[0]) and op_eqn.invars[0] in carrying):
        return None
    out = eqns[w_readers[0]].outvars[0].aval
    if not jnp.issubdtype(out.dtype, jnp.floating):
        return None
    return Deferral(t_index, p_index, tuple(chain), tuple(out.shape), jnp.dtype(out.dtype))


def chain_diagonal(eqns, deferral: Deferral, y_var, y_value, read):
    """``m = ∂p/∂y`` (element-wise) of the chain, from ``y`` and the step's values ``read``."""

    def chain(y):
        env = {y_var: y}
        for index in deferral.chain:
            eqn = eqns[index]
            outs = bind_equation(eqn, [env[a] if is_var(a) and a in env else read(a) for a in eqn.invars])
            env[eqn.outvars[0]] = outs[0]
        return env[eqns[deferral.chain[-1]].outvars[0]] if deferral.chain else y

    return jax.jvp(chain, (y_value,), (jnp.ones_like(y_value),))[1]
