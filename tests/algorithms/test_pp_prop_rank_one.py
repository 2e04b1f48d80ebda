"""pp_prop with rank 1 reproduces D-RTRL where the hidden state enters through the op's input.

Rank 1 means ``α = (1 - 1)/(1 + 1) = 0`` (reference-behaviour §3.4): the input trace is the
current op input ``x̄_t = x_t``, the output trace the current ``ε_f = ∂h_t/∂y_t`` and the bias
correction ``1 - 0^(k+1) = 1``, so pp_prop's trace is the instantaneous ``x_t ⊗ ∂h_t/∂y_t``.
D-RTRL's trace is ``ε_t = D_t ε_{t-1} + x_t ⊗ ∂h_t/∂y_t``, with ``D_t`` the within-group
diagonal Jacobian. When the previous hidden state reaches the new one only through the op's
input (an Elman cell, ``h = tanh(W [x, h])``; finding F-29) ``D_t = 0`` and the two are the
same, to round-off. A leak ``h = 0.5 h + ...`` gives ``D_t = 0.5`` and they differ.
"""

import brainstate
import jax.numpy as jnp
import numpy as np

import braintrace
import braintrace.nn as bnn
from braintrace import MultiStepData
from tests._support import models
from tests._support.oracle import (assert_grads_close, bptt_grads, flat, online_grads, restore_states,
                                   snapshot_states)

T = 8


class Recurrent(brainstate.nn.Module):
    """``h = leak · h + tanh(W x + U h)``: U's op input is the hidden state itself."""

    def __init__(self, leak, n_in=3, n_hidden=5, n_out=2):
        super().__init__()
        self.leak, self.n_hidden = leak, n_hidden
        self.W = bnn.Linear(n_in, n_hidden)
        self.U = bnn.Linear(n_hidden, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n_hidden))

    def update(self, x):
        self.h.value = self.leak * self.h.value + jnp.tanh(self.W(x) + self.U(self.h.value))
        return self.out(self.h.value)


def _relative(actual, expected) -> float:
    a, e = flat(actual), flat(expected)
    num = np.sqrt(sum(np.sum((a[p] - e[p]) ** 2) for p in e))
    return float(num / np.sqrt(sum(np.sum(e[p] ** 2) for p in e)))


def _pair(make, **options):
    """(D-RTRL gradients, rank-1 pp_prop gradients, both learners, BPTT) on one model and input."""
    brainstate.random.seed(2)
    model = make()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    snap = snapshot_states(model)
    bptt = bptt_grads(model, xs)
    out = []
    for cls, args in ((braintrace.D_RTRL, ()), (braintrace.pp_prop, (1,))):
        restore_states(model, snap)
        learner = cls(model, *args, **options)
        learner.compile_graph(xs[0])
        if options.get("vjp_method") == "multi-step":
            step_fn = lambda w, lrn=learner: jnp.sum(lrn(MultiStepData(w)) ** 2, axis=-1)  # noqa: E731
            grads = learner.etrace_grad(xs, step_fn=step_fn, chunk_size=2, reduction="sum")
        else:
            grads = online_grads(learner, xs)
        out.append((learner, grads))
    (d_rtrl, expected), (pp, actual) = out
    return expected, actual, d_rtrl, pp, bptt


def test_rank_one_on_an_elman_cell_is_d_rtrl():
    expected, actual, d_rtrl, pp, bptt = _pair(models.elman)
    assert pp.decay == 0.0
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-7)
    # The identity is not BPTT's: D-RTRL itself is approximate on this cell.
    assert _relative(expected, bptt) > 1e-2
    # The traces agree too: pp_prop's outer product x̄ ⊗ ε_f is D-RTRL's (O, I, S) trace.
    (key, trace), = d_rtrl.get_etrace_of(("cell", "W", "weight")).items()
    x_bar = pp.etrace.value.inputs[0]
    eps_f = pp.etrace.value.outputs[key]
    np.testing.assert_allclose(eps_f[:, None, :] * x_bar[None, :, None], trace["weight"], rtol=1e-6, atol=1e-7)


def test_rank_one_with_the_hidden_state_as_op_input_is_d_rtrl():
    expected, actual, *_ = _pair(lambda: Recurrent(leak=0.0))
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-7)
    assert float(np.max(np.abs(flat(expected)[("U", "weight")]))) > 1e-2


def test_rank_one_in_windows_is_d_rtrl():
    expected, actual, *_ = _pair(models.elman, vjp_method="multi-step")
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-7)


def test_a_leak_breaks_the_identity():
    # D_t = 0.5: D-RTRL keeps 0.5 ε_{t-1}, rank-1 pp_prop forgets it (measured deviation 0.44).
    expected, actual, *_ = _pair(lambda: Recurrent(leak=0.5))
    assert 0.1 < _relative(actual, expected) < 1.0
