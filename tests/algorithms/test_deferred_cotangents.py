"""The reset gate's same-step product deferred to the window (``deferred_cotangents``).

The GRU's ``W_r`` learns from ``s = (ct · W_h[rows]ᵀ) ⊙ m``; under ``etrace_grad`` with a
window the step stacks ``(x, ct, m)`` and the driver makes ``s`` per window. These tests pin
where that happens (the GRU reset gate, nothing that fails the conditions), that the
gradients are the per-step ones (every window and the hand-written reference in
``test_es_d_rtrl_scale.py``), and that a differentiated step input gets its exact cotangent
(the step falls back to the per-step product for it).
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support import models
from tests._support.oracle import squared_loss, windowed_grads

ALGORITHMS = [("es_d_rtrl", {"decay_or_rank": 0.9}), ("d_rtrl", {})]


def _learner(model, algorithm, batch=3, n_in=20, **options):
    with pytest.warns(UserWarning, match="relation_excluded_weight_to_weight"):  # W_r reaches h only via W_h
        return braintrace.compile(model, algorithm, jnp.zeros((batch, n_in)), batch_size=batch, **options)


def _deferred_paths(learner):
    paths = learner._compiled.layout.param_paths
    return [paths[f.param_slot] for f in learner._compiled.factors.deferred]


def _assert_equal(got, expected, rtol=2e-5):
    for key in expected:
        for g, e in zip(jax.tree.leaves(got[key]), jax.tree.leaves(expected[key]), strict=True):
            scale = float(jnp.max(jnp.abs(e)))
            np.testing.assert_allclose(g, e, rtol=rtol, atol=1e-6 * max(scale, 1.0), err_msg=str(key))


@pytest.mark.parametrize("algorithm,options", ALGORITHMS)
def test_gru_reset_gate_is_deferred_and_equals_per_step(algorithm, options):
    brainstate.random.seed(3)
    learner = _learner(models.gru(20, 24, 2), algorithm, **options)
    assert _deferred_paths(learner) == [("cell", "Wr", "weight")]
    deferral = learner._compiled.factors.deferred[0].deferral
    assert deferral.ct_shape == (3, 24) and len(deferral.chain) == 2  # logistic, r * h
    xs = jax.random.normal(jax.random.PRNGKey(0), (10, 3, 20))
    expected = windowed_grads(learner, xs, 1)
    assert float(jnp.linalg.norm(expected[("cell", "Wr", "weight")]["weight"])) > 1e-3
    for window in (4, 10):  # two windows and a remainder of 2; one window
        _assert_equal(windowed_grads(learner, xs, window), expected)


def test_differentiated_step_input_keeps_its_cotangent():
    """A step input made from a weight needs ``∂L/∂x`` through the reset gate: computed per step.

    ``step_fn`` feeds ``x + Σ b_out`` to the learner, so the readout bias also learns through
    the input, and part of that gradient passes the reset gate's ``ct · W_hᵀ``. Dropping it
    (the deferred step's default) changes the bias gradient by far more than the tolerance.
    """
    brainstate.random.seed(4)
    learner = _learner(models.gru(20, 24, 2), "es_d_rtrl", decay_or_rank=0.9)
    assert _deferred_paths(learner) == [("cell", "Wr", "weight")]
    model = learner.model

    def step_fn(x):
        return squared_loss(learner(x + 3.0 * jnp.sum(model.out.weight.value["bias"])))

    xs = jax.random.normal(jax.random.PRNGKey(1), (8, 3, 20))
    expected = windowed_grads(learner, xs, 1, step_fn)
    _assert_equal(windowed_grads(learner, xs, 4, step_fn), expected)


class ResetReadTwice(brainstate.nn.Module):
    """A GRU-like cell whose reset gate enters ``W_h`` twice, as ``r*h`` and as ``r*r``.

    ``W_r`` still reaches the hidden state only through ``W_h`` (a same-step pair), but its
    chain forks, so ``∂L/∂y`` is not ``(∂L/∂(r*h)) ⊙ m`` of one part.
    """

    def __init__(self, n_in=20, n_hidden=24, n_out=2):
        super().__init__()
        self.n_hidden = n_hidden
        self.Wr = bnn.Linear(n_in + n_hidden, n_hidden)
        self.Wh = bnn.Linear(n_in + 2 * n_hidden, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, self.n_hidden)))

    def update(self, x):
        h = self.h.value
        r = jax.nn.sigmoid(self.Wr(jnp.concatenate([x, h], axis=-1)))
        self.h.value = 0.5 * h + 0.5 * jnp.tanh(self.Wh(jnp.concatenate([x, r * h, r * r], axis=-1)))
        return self.out(self.h.value)


class ResetRounded(ResetReadTwice):
    """A GRU-like cell whose reset gate is rounded to bfloat16 and back before ``r*h``.

    Reverse mode rounds the cotangent at the cast, a forward-mode ``m`` would round the
    tangent: deferred, ``W_r``'s gradient was off by 1.7e-3 relative (found in review).
    """

    def __init__(self, n_in=20, n_hidden=24, n_out=2):
        super().__init__(n_in, n_hidden, n_out)
        self.Wh = bnn.Linear(n_in + n_hidden, n_hidden)

    def update(self, x):
        h = self.h.value
        r = jax.nn.sigmoid(self.Wr(jnp.concatenate([x, h], axis=-1))).astype(jnp.bfloat16).astype(jnp.float32)
        self.h.value = 0.5 * h + 0.5 * jnp.tanh(self.Wh(jnp.concatenate([x, r * h], axis=-1)))
        return self.out(self.h.value)


@pytest.mark.parametrize("cell", [ResetReadTwice, ResetRounded])
def test_reset_gate_read_elsewhere_or_rounded_is_not_deferred(cell):
    brainstate.random.seed(5)
    learner = _learner(cell(), "d_rtrl")
    kinds = [(f.kind, learner._compiled.layout.param_paths[f.param_slot]) for f in learner._compiled.factors.factors]
    assert ("same_step", ("Wr", "weight")) in kinds
    assert _deferred_paths(learner) == []
    xs = jax.random.normal(jax.random.PRNGKey(2), (8, 3, 20))
    _assert_equal(windowed_grads(learner, xs, 4), windowed_grads(learner, xs, 1))
