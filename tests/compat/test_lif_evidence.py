"""Research script 2: a recurrent LIF network learns evidence accumulation online (ES-D-RTRL).

The usual BrainX build: ``brainpy.state.LIF`` neurons fed by a ``brainpy.state.AlignPostProj``
whose ``comm`` is a ``braintrace.nn.Linear`` in ``u.mA`` (input and recurrent spikes
concatenated), an exponential synapse and a current-based output, with a
``braintrace.nn.LeakyRateReadout`` on the spikes; everything runs inside
``brainstate.environ.context(dt=1.0 * u.ms)``. Trained with ``braintrace.pp_prop`` (a decay)
and ``'ES_D_RTRL'`` (a rank) through ``braintrace.compile``.
"""

import brainpy
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B = 24, 16
N_IN, N_REC, N_OUT = 8, 24, 2
ITERATIONS = 30


class EvidenceSNN(brainstate.nn.Module):
    def __init__(self, num_in=N_IN, num_rec=N_REC, num_out=N_OUT, tau_mem=10. * u.ms, tau_syn=10. * u.ms,
                 tau_out=5. * u.ms):
        super().__init__()
        self.neu = brainpy.state.LIF(num_rec, tau=tau_mem, V_th=1. * u.mV, V_reset=0. * u.mV,
                                     spk_fun=braintools.surrogate.ReluGrad())
        self.syn = brainpy.state.AlignPostProj(
            comm=braintrace.nn.Linear(num_in + num_rec, num_rec,
                                      w_init=braintools.init.KaimingNormal(scale=2.0, unit=u.mA),
                                      b_init=braintools.init.ZeroInit(unit=u.mA)),
            syn=brainpy.state.Expon(num_rec, tau=tau_syn, g_initializer=braintools.init.ZeroInit(unit=u.mA)),
            out=brainpy.state.CUBA(scale=1.0),
            post=self.neu,
        )
        self.out = braintrace.nn.LeakyRateReadout(num_rec, num_out, tau=tau_out,
                                                  w_init=braintools.init.KaimingNormal())

    def update(self, spikes):
        self.syn(jnp.concatenate([spikes, self.neu.get_spike()], axis=-1))
        self.neu()
        return self.out(self.neu.get_spike())


def evidence_task(key):
    """Spikes ``(T, B, N_IN)``: one half of the channels fires at 0.35, the other at 0.2;
    label = which half fires more. The decision is scored over the last third."""
    k_label, k_spk = jax.random.split(key)
    labels = jax.random.bernoulli(k_label, 0.5, (B,)).astype(jnp.int32)
    first_half = jnp.arange(N_IN) < N_IN // 2
    busy = jnp.where(labels[:, None] == 0, first_half[None], ~first_half[None])
    rates = jnp.where(busy, 0.35, 0.2)
    spikes = jax.random.bernoulli(k_spk, rates, (T, B, N_IN)).astype(jnp.float32)
    mask = (jnp.arange(T) >= (2 * T) // 3).astype(jnp.float32)
    return spikes, labels, mask


def ce(logits, labels):
    return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


ALGORITHMS = {
    "pp_prop-decay0.9": (braintrace.pp_prop, dict(decay_or_rank=0.9)),
    "ES_D_RTRL-rank10": ('ES_D_RTRL', dict(decay_or_rank=10)),
}


@pytest.mark.parametrize("vmap,algo", [(False, "pp_prop-decay0.9"), (True, "pp_prop-decay0.9"),
                                       (False, "ES_D_RTRL-rank10")],
                         ids=["batched-pp_prop", "vmap-pp_prop", "batched-ES_D_RTRL"])
def test_lif_evidence_accumulation(vmap, algo, compat_record):
    algorithm, options = ALGORITHMS[algo]
    with brainstate.environ.context(dt=1.0 * u.ms):
        brainstate.random.seed(0)
        model = EvidenceSNN()
        xs0, _, _ = evidence_task(jax.random.PRNGKey(0))
        learner = braintrace.compile(model, algorithm, xs0[0], batch_size=B, vmap=vmap, **options)
        opt = braintools.optim.Adam(lr=1e-2)
        opt.register_trainable_weights(model.states(brainstate.ParamState))

        def run(key, train):
            xs, labels, mask = evidence_task(key)
            brainstate.nn.reset_all_states(learner, B)

            def step(x):
                logits = learner(x)
                return ce(logits, labels), jnp.mean(jnp.argmax(logits, -1) == labels)

            grads, losses, accs = learner.etrace_grad(xs, step_fn=step, mask=mask, reduction='sum',
                                                      return_value=True, has_aux=True)
            if train:
                opt.update(brainstate.nn.clip_grad_norm(grads, 1.0))
            window = jnp.sum(mask)
            return jnp.sum(losses * mask) / window, jnp.sum(accs * mask) / window

        train_step = brainstate.transform.jit(lambda key: run(key, True))
        eval_step = brainstate.transform.jit(lambda key: run(key, False))
        eval_keys = jax.random.split(jax.random.PRNGKey(99), 3)

        def evaluate():
            res = np.array([[float(v) for v in eval_step(k)] for k in eval_keys])
            return res.mean(0)

        before, acc_before = evaluate()
        history = [float(train_step(k)[0]) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
        after, acc_after = evaluate()
        rate = float(jnp.mean(model.neu.get_spike()))
    compat_record(("vmap " if vmap else "batched ") + algo, float(before), float(after),
                  acc_before=float(acc_before), acc_after=float(acc_after), last_rate=rate)
    assert np.all(np.isfinite(history))
    assert after < 0.4 * before, (before, after)
    assert acc_after >= 0.85, acc_after
