"""Model fixtures shared by the compiler and algorithm tests.

Every model is a real brainstate module built on braintrace's ETP ops or layers; each
``update(x)`` runs one time step.
"""

import brainstate
import braintools
import jax
import jax.numpy as jnp

import braintrace
import braintrace.nn as bnn


def _shape(batch_size, n):
    return (batch_size, n) if batch_size else (n,)


class LeakyRNN(brainstate.nn.Module):
    """Element-wise recurrence ``h = sigmoid(τ) h + tanh(W x)``; linear readout.

    D-RTRL is exact here (every weight feeds one group through an element-wise tail).
    """

    def __init__(self, n_in=3, n_hidden=5, n_out=2):
        super().__init__()
        self.n_hidden = n_hidden
        self.W = bnn.Linear(n_in, n_hidden)
        self.tau = brainstate.ParamState(jnp.linspace(-1.0, 2.0, n_hidden))
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n_hidden)))

    def update(self, x):
        decay = braintrace.element_wise(self.tau.value, weight_fn=jax.nn.sigmoid)
        self.h.value = decay * self.h.value + jnp.tanh(self.W(x))
        return self.out(self.h.value)


class CellWithReadout(brainstate.nn.Module):
    """A recurrent cell followed by a linear readout (no hidden state in the readout)."""

    def __init__(self, cell, n_hidden, n_out=2):
        super().__init__()
        self.cell = cell
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.cell(x))


def elman(n_in=3, n_hidden=5, n_out=2):
    return CellWithReadout(bnn.ValinaRNNCell(n_in, n_hidden, activation="tanh"), n_hidden, n_out)


def gru(n_in=3, n_hidden=5, n_out=2):
    return CellWithReadout(bnn.GRUCell(n_in, n_hidden), n_hidden, n_out)


def lstm(n_in=3, n_hidden=5, n_out=2):
    return CellWithReadout(bnn.LSTMCell(n_in, n_hidden), n_hidden, n_out)


class SpikingNet(brainstate.nn.Module):
    """``Linear -> brainpy.state.LIF (or ALIF)`` with a linear readout of the spikes.

    Plain-number constants (no units); each step runs under its own ``dt = 1.0``. The neuron
    recurrence is element-wise, so D-RTRL is exact.
    """

    dt = 1.0

    def __init__(self, n_in=3, n_hidden=6, n_out=2, neuron="lif"):
        super().__init__()
        self.inp = bnn.Linear(n_in, n_hidden, w_init=braintools.init.KaimingNormal(scale=4.0))
        common = dict(R=1.0, tau=5.0, V_th=1.0, V_reset=0.0, V_rest=0.0,
                      V_initializer=braintools.init.Constant(0.0), spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))
        if neuron == "lif":
            self.neu = bnn.LIF(n_hidden, **common)
        else:
            self.neu = bnn.ALIF(n_hidden, tau_a=20.0, beta=0.5, **common)
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        with brainstate.environ.context(dt=self.dt):
            return self.out(self.neu(self.inp(x)))


class TwoLayerGRU(brainstate.nn.Module):
    def __init__(self, n_in=3, n1=4, n2=5, n_out=2):
        super().__init__()
        self.l1 = bnn.GRUCell(n_in, n1)
        self.l2 = bnn.GRUCell(n1, n2)
        self.out = bnn.Linear(n2, n_out)

    def update(self, x):
        return self.out(self.l2(self.l1(x)))


class ConvLeaky(brainstate.nn.Module):
    """A leaky conv layer on a 1-D signal: ``h = 0.8 h + tanh(conv(x, K) + b)``."""

    def __init__(self, length=8, c_in=2, c_out=3, kernel=3):
        super().__init__()
        self.length, self.c_out = length, c_out
        self.kernel = brainstate.ParamState({
            "kernel": brainstate.random.randn(kernel, c_in, c_out) * 0.4,
            "bias": jnp.zeros(c_out),
        })
        self.out = bnn.Linear(length * c_out, 2)

    def init_state(self, batch_size=None, **kwargs):
        shape = (self.length, self.c_out) if batch_size is None else (batch_size, self.length, self.c_out)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        k = self.kernel.value
        y = braintrace.conv(x, k["kernel"], k["bias"], padding="SAME", dimension_numbers=("NWC", "WIO", "NWC"))
        self.h.value = 0.8 * self.h.value + jnp.tanh(y)
        return self.out(self.h.value.reshape(self.h.value.shape[:-2] + (-1,)))


class GroupStateNeuron(brainstate.nn.Module):
    """An adaptive neuron whose ``(V, w)`` live in one ``HiddenGroupState`` (element-wise)."""

    def __init__(self, n_in=3, n=5):
        super().__init__()
        self.n = n
        self.inp = bnn.Linear(n_in, n)
        self.out = bnn.Linear(n, 2)

    def init_state(self, batch_size=None, **kwargs):
        shape = (batch_size, self.n, 2) if batch_size else (self.n, 2)
        self.s = brainstate.HiddenGroupState(jnp.zeros(shape))

    def update(self, x):
        v, w = self.s.value[..., 0], self.s.value[..., 1]
        v_new = 0.9 * v + jnp.tanh(self.inp(x)) - 0.3 * w
        w_new = 0.95 * w + 0.1 * jax.nn.sigmoid(v_new)
        self.s.value = jnp.stack([v_new, w_new], axis=-1)
        return self.out(v_new)


class SpikingLeakyReadout(brainstate.nn.Module):
    """``Linear -> brainpy.state.LIF -> LeakyRateReadout``: two hidden groups in a chain.

    Plain-number constants; each step runs under its own ``dt = 1.0``.
    """

    dt = 1.0

    def __init__(self, n_in=3, n_hidden=6, n_out=2):
        super().__init__()
        self.inp = bnn.Linear(n_in, n_hidden, w_init=braintools.init.KaimingNormal(scale=4.0))
        self.neu = bnn.LIF(n_hidden, R=1.0, tau=5.0, V_th=1.0, V_reset=0.0, V_rest=0.0,
                           V_initializer=braintools.init.Constant(0.0),
                           spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))
        self.out = bnn.LeakyRateReadout(n_hidden, n_out, tau=5.0)

    def update(self, x):
        with brainstate.environ.context(dt=self.dt):
            return self.out(self.neu(self.inp(x)))


class CondBranches(brainstate.nn.Module):
    """A step whose op sits inside ``lax.cond`` branches (if-converted by the compiler)."""

    def __init__(self):
        super().__init__()
        self.w = bnn.Linear(3, 4)
        self.v = bnn.Linear(3, 4)
        self.out = bnn.Linear(4, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(4))

    def update(self, x):
        y = jax.lax.cond(x[0] > 0, lambda: self.w(x), lambda: jnp.tanh(self.v(x)))
        self.h.value = 0.7 * self.h.value + jnp.sin(y)
        return self.out(self.h.value)
