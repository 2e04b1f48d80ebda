"""Our ES-D-RTRL against a hand-written one for the benchmark GRU, in one process.

Issue 14 asks for ES-D-RTRL at most 2x the plain forward pass. This benchmark asks how close
to that XLA:CPU lets *any* JAX program of the same algorithm come: the GRU cell, its readout
and ES-D-RTRL's recursion written out by hand in plain JAX, with no compiler, no hooks and
no pytrees of states, and with the same windowed weight products as
:func:`braintrace.etrace_grad` (``K`` steps of ``(x̄, s)`` pairs stacked, one
``(I × K·B)·(K·B × O)`` product per window). The hand-written gradient is checked against the
learner's on the same parameters before anything is timed.

What the hand-written step computes (GRU ``h' = (1 - z) h + z c`` on ``xh = [x, h]``,
``c = tanh([x, r h] W_h + b_h)``, readout ``y = h' W_o + b_o``, loss ``mean(y²)``)::

    L     = ∂loss/∂y · W_oᵀ                         same-step learning signal ∂loss/∂h'
    x̄_z   = α x̄_z + xh,  x̄_h = α x̄_h + [x, r h]     input traces (z and r gates share xh)
    ε_z   = α (1 - z) ε_z + (1 - α) (c - h) z (1 - z)
    ε_h   = α (1 - z) ε_h + (1 - α) z (1 - c²)      output traces, diagonal Jacobian 1 - z
    s     = ε L / (1 - α^(k+1))                     after k earlier steps
    g_r   = ((L z (1 - c²)) W_h[rows of r h]ᵀ) h r (1 - r)   the reset gate's same-step gradient
    ∇W_z += x̄_zᵀ s_z,  ∇W_h += x̄_hᵀ s_h,  ∇W_r += xhᵀ g_r  (per window),  ∇W_o += h'ᵀ ∂loss/∂y

Run ``python -m benchmarks.handwritten [--hidden 256] [--length 200] [--window 8]``.
"""

from __future__ import annotations

import argparse

import brainstate
import jax
import jax.numpy as jnp

try:
    from ._common import Readout, interleaved_medians, loss_fn, machine, table
except ImportError:  # run as a script
    from _common import Readout, interleaved_medians, loss_fn, machine, table

import braintrace

GATES = ("Wz", "Wr", "Wh")


def gru_params(model) -> dict:
    """The weights of a ``Readout('gru', ...)`` model as ``{'Wz': (W, b), ..., 'out': (W, b)}``."""
    out = {name: tuple(getattr(model.cell, name).weight.value[k] for k in ("weight", "bias")) for name in GATES}
    out["out"] = tuple(model.out.weight.value[k] for k in ("weight", "bias"))
    return out


def _gru_step(p, h, x):
    xh = jnp.concatenate([x, h], axis=-1)
    r = jax.nn.sigmoid(xh @ p["Wr"][0] + p["Wr"][1])
    z = jax.nn.sigmoid(xh @ p["Wz"][0] + p["Wz"][1])
    xrh = jnp.concatenate([x, r * h], axis=-1)
    c = jnp.tanh(xrh @ p["Wh"][0] + p["Wh"][1])
    h_new = (1.0 - z) * h + z * c
    return xh, xrh, r, z, c, h_new, h_new @ p["out"][0] + p["out"][1]


def gru_forward(p, xs):
    """The readout of every step, ``(T, B, O)``, from a zero hidden state."""
    h0 = jnp.zeros(xs.shape[1:2] + p["Wz"][0].shape[1:], xs.dtype)
    return jax.lax.scan(lambda h, x: _gru_step(p, h, x)[5:], h0, xs)[1]


def _pair_product(x, s):
    """``Σ_k x_kᵀ s_k`` over a stack ``(K, B, ·)``: one ``(I × K·B)·(K·B × O)`` product."""
    return jax.lax.dot_general(x.reshape(-1, x.shape[-1]), s.reshape(-1, s.shape[-1]), (((0,), (0,)), ((), ())))


def gru_es_d_rtrl(p, xs, alpha: float = 0.9, window: int = 8, defer_reset: bool = False) -> dict:
    """ES-D-RTRL gradients of ``Σ_t mean(y_t²)`` over ``xs`` (``(T, B, I)``), by hand.

    Returns ``{'Wz': (∇W, ∇b), 'Wr': ..., 'Wh': ..., 'out': ...}``. ``T`` must be a multiple
    of ``window``. ``defer_reset`` stacks the reset gate's ``ct = L z (1 - c²)`` and
    ``m = h r (1 - r)`` instead of ``g_r`` and makes ``g_r = (ct W_hᵀ) m`` one
    ``(K·B × N)(N × N)`` product per window (the same gradient, another order): the weight
    rows are then read once per window instead of once per step.
    """
    length, batch = xs.shape[0], xs.shape[1]
    if length % window:
        raise ValueError(f"gru_es_d_rtrl: the length {length} must be a multiple of the window {window}")
    n_in, n_hidden = xs.shape[-1], p["Wz"][0].shape[1]
    w_out = p["out"][0]
    wh_rows_t = p["Wh"][0][n_in:].T  # the r*h rows of W_h, transposed once per sequence

    def step(carry, x):
        h, xbar_z, xbar_h, eps_z, eps_h, g_out, g_bout, k = carry
        xh, xrh, r, z, c, h_new, y = _gru_step(p, h, x)
        dy = 2.0 * y / y.size  # ∂mean(y²)/∂y
        signal = dy @ w_out.T
        g_out, g_bout = g_out + h_new.T @ dy, g_bout + dy.sum(0)
        xbar_z, xbar_h = alpha * xbar_z + xh, alpha * xbar_h + xrh
        eps_z = alpha * (1.0 - z) * eps_z + (1.0 - alpha) * (c - h) * z * (1.0 - z)
        eps_h = alpha * (1.0 - z) * eps_h + (1.0 - alpha) * z * (1.0 - c * c)
        correction = 1.0 - alpha ** (k + 1.0)
        s_z, s_h = eps_z * signal / correction, eps_h * signal / correction
        ct, m = signal * z * (1.0 - c * c), h * r * (1.0 - r)
        reset = (xh, (ct, m)) if defer_reset else (xh, (ct @ wh_rows_t) * m)
        carry = (h_new, xbar_z, xbar_h, eps_z, eps_h, g_out, g_bout, k + 1.0)
        return carry, ((xbar_z, s_z), reset, (xbar_h, s_h))

    def window_body(state, xw):
        carry, grads = state
        carry, pairs = jax.lax.scan(step, carry, xw)
        if defer_reset:
            x, (ct, m) = pairs[1]
            pairs = (pairs[0], (x, (ct @ wh_rows_t) * m), pairs[2])
        # By name: a dict comes out of the scan carry with its keys sorted.
        grads = {name: (grads[name][0] + _pair_product(x, s), grads[name][1] + s.sum((0, 1)))
                 for name, (x, s) in zip(GATES, pairs, strict=True)}
        return (carry, grads), None

    zeros = jnp.zeros
    carry = (zeros((batch, n_hidden)), zeros((batch, n_in + n_hidden)), zeros((batch, n_in + n_hidden)),
             zeros((batch, n_hidden)), zeros((batch, n_hidden)), jnp.zeros_like(w_out), zeros(w_out.shape[1]), 0.0)
    grads = {name: (jnp.zeros_like(p[name][0]), jnp.zeros_like(p[name][1])) for name in GATES}
    (carry, grads), _ = jax.lax.scan(window_body, (carry, grads),
                                     xs.reshape(length // window, window, *xs.shape[1:]))
    grads["out"] = (carry[5], carry[6])
    return grads


def learner_grads_by_name(grads: dict) -> dict:
    """The learner's gradients ``{('cell', 'Wz', 'weight'): {'weight', 'bias'}}`` in :func:`gru_params` form."""
    out = {name: tuple(grads[("cell", name, "weight")][k] for k in ("weight", "bias")) for name in GATES}
    out["out"] = tuple(grads[("out", "weight")][k] for k in ("weight", "bias"))
    return out


def max_relative_difference(a: dict, b: dict) -> float:
    """``max |a - b| / max |b|`` over every leaf."""
    return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v)))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def compare(n_hidden=256, length=200, batch=16, n_in=32, n_out=8, window=8, alpha=0.9, repeats=11, rounds=3):
    """``(rows, difference)``: medians of every round (ms) and the gradients' max relative difference."""
    model = Readout("gru", n_in, n_hidden, n_out)
    brainstate.nn.init_all_states(model, batch)
    params = gru_params(model)
    learner = braintrace.compile(model, "es_d_rtrl", jnp.zeros((batch, n_in)), batch_size=batch, decay_or_rank=alpha)
    xs = jax.random.normal(jax.random.PRNGKey(0), (length, batch, n_in))

    def ours(xs):
        return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)), gradient_window=window,
                                   reduction="sum")

    ours_jit = brainstate.transform.jit(ours)
    hand_forward = jax.jit(gru_forward)
    hand_es = jax.jit(gru_es_d_rtrl, static_argnums=(2, 3, 4))
    # The learner's states are at zero: init_all_states above, and etrace_grad starts there too.
    reference = hand_es(params, xs, alpha, window)
    difference = max(max_relative_difference(learner_grads_by_name(ours_jit(xs)), reference),
                     max_relative_difference(hand_es(params, xs, alpha, window, True), reference))
    brainstate.nn.init_all_states(model, batch)
    fns = {
        "forward (ours)": brainstate.transform.jit(lambda xs: brainstate.transform.for_loop(model, xs)),
        "forward (hand)": lambda xs: hand_forward(params, xs),
        "ES-D-RTRL (ours)": ours_jit,
        "ES-D-RTRL (hand)": lambda xs: hand_es(params, xs, alpha, window),
        "hand, reset deferred": lambda xs: hand_es(params, xs, alpha, window, True),
    }
    rows = [interleaved_medians(fns, xs, repeats) for _ in range(rounds)]
    return rows, difference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds, difference = compare(args.hidden, args.length, args.batch, window=args.window,
                                 repeats=args.repeats, rounds=args.rounds)
    rows = []
    for k, m in enumerate(rounds):
        rows.append([k + 1, *(f"{v * 1e3:.1f}" for v in m.values()),
                     f"{m['ES-D-RTRL (ours)'] / m['forward (ours)']:.2f}",
                     f"{m['ES-D-RTRL (hand)'] / m['forward (hand)']:.2f}",
                     f"{m['hand, reset deferred'] / m['ES-D-RTRL (hand)']:.2f}"])
    print(f"GRU N={args.hidden}, T={args.length}, B={args.batch}, I=32, O=8, window {args.window}; {machine()}")
    print(f"gradients: max relative difference of ours and the deferred variant from the hand-written "
          f"{difference:.1e}\n")
    print(table(["round", *rounds[0].keys(), "ES/forward (ours)", "ES/forward (hand)", "deferred/hand"], rows))
    return rows, difference


if __name__ == "__main__":
    main()
