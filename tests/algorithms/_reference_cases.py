"""The cases of the stored reference gradients (see ``_make_reference_gradients.py``).

Each case builds a small exactness model with a fixed seed, runs one learner over a few
steps and returns ``{name: array}`` of its online gradients (and the traces that
``get_etrace_of`` reports). The arrays were stored from the code before the learning-rule
contract (issue 9) and must stay bit-identical.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import braintrace
import braintrace.nn as bnn
from braintrace import MultiStepData
from tests._support import models

STEPS = 6


class ReadoutOfOldState(brainstate.nn.Module):
    """The readout sees ``h_{t-1}`` directly (a same-step bypass path)."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w = bnn.Linear(n_in, n)
        self.out = bnn.Linear(n, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(n_shape(batch_size, 4)))

    def update(self, x):
        y = self.out(self.h.value)
        self.h.value = 0.6 * self.h.value + jnp.tanh(self.w(x))
        return y + self.out(self.h.value)


def n_shape(batch_size, n):
    return (batch_size, n) if batch_size else (n,)


MODELS = {
    "leaky": lambda: models.LeakyRNN(),
    "gru": lambda: models.gru(3, 4, 2),
    "elman": lambda: models.elman(3, 4, 2),
    "lif": lambda: models.SpikingNet(neuron="lif"),
    "two_gru": lambda: models.TwoLayerGRU(),
    "group": lambda: models.GroupStateNeuron(),
    "old_state": lambda: ReadoutOfOldState(),
}

# name -> (model, learner factory, batch, mode)
CASES = {
    "d_rtrl/leaky": ("leaky", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/gru_b2": ("gru", lambda m: braintrace.D_RTRL(m), 2, "single"),
    "d_rtrl/elman": ("elman", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/lif": ("lif", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/two_gru": ("two_gru", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/group": ("group", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/old_state": ("old_state", lambda m: braintrace.D_RTRL(m), None, "single"),
    "d_rtrl/gru_vmap": ("gru", lambda m: braintrace.D_RTRL(m, vmap=True), "vmap", "single"),
    "d_rtrl/gru_window3": ("gru", lambda m: braintrace.D_RTRL(m, vjp_method="multi-step"), None, "window"),
    "pp_prop/gru": ("gru", lambda m: braintrace.ES_D_RTRL(m, 0.9), None, "single"),
    "pp_prop/leaky_b2": ("leaky", lambda m: braintrace.pp_prop(m, 3), 2, "single"),
    "pp_prop/two_gru": ("two_gru", lambda m: braintrace.ES_D_RTRL(m, 0.9), None, "single"),
    "pp_prop/old_state": ("old_state", lambda m: braintrace.ES_D_RTRL(m, 0.8), None, "single"),
    "pp_prop/gru_window3": ("gru", lambda m: braintrace.ES_D_RTRL(m, 0.9, vjp_method="multi-step"), None, "window"),
    "eprop_k06/gru": ("gru", lambda m: braintrace.EProp(m, kappa_filter_decay=0.6), None, "single"),
    "eprop_k06/leaky": ("leaky", lambda m: braintrace.EProp(m, kappa_filter_decay=0.6), None, "single"),
    "eprop_k06/old_state": ("old_state", lambda m: braintrace.EProp(m, kappa_filter_decay=0.6), None, "single"),
    "eprop_random/gru": ("gru", lambda m: braintrace.EProp(m, feedback="random", random_feedback_key=0), None,
                         "single"),
    "eprop_random_k06/two_gru": ("two_gru", lambda m: braintrace.EProp(
        m, feedback="random", kappa_filter_decay=0.6, random_feedback_key=jax.random.PRNGKey(3)), None, "single"),
    "eprop_k06/gru_window3": ("gru", lambda m: braintrace.EProp(m, kappa_filter_decay=0.6, vjp_method="multi-step"),
                              None, "window"),
    "three_factor/gru": ("gru", lambda m: braintrace.ThreeFactor(m), None, "modulated"),
    "three_factor/leaky_b2": ("leaky", lambda m: braintrace.ThreeFactor(m), 2, "modulated"),
    "ostl_ff/gru": ("gru", lambda m: braintrace.OSTLFeedforward(m), None, "single"),
    "ostl_ff/two_gru": ("two_gru", lambda m: braintrace.OSTLFeedforward(m), None, "single"),
}


def run_case(name: str) -> dict:
    """``{key: array}`` of one case's online gradients and reported traces."""
    model_name, make, batch, mode = CASES[name]
    brainstate.random.seed(7)
    model = MODELS[model_name]()
    if batch in (None, "vmap"):
        brainstate.nn.init_all_states(model)
    else:
        brainstate.nn.init_all_states(model, batch)
    rng = np.random.RandomState(11)
    lead = (STEPS, 2) if batch == "vmap" else (STEPS, batch) if batch else (STEPS,)
    xs = jnp.asarray(rng.uniform(-1.0, 2.0, lead + (3,)), jnp.float32)
    if batch == "vmap":
        brainstate.nn.init_all_states(model)
        for st in model.states().values():
            if not isinstance(st, brainstate.ParamState):
                st.value = jax.tree.map(lambda a: jnp.stack([a, a + 0.1]), st.value)
    learner = make(model)
    learner.compile_graph(xs[0])
    if mode == "single":
        grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
    elif mode == "window":
        grads = learner.etrace_grad(xs, step_fn=lambda w: jnp.sum(learner(MultiStepData(w)) ** 2, axis=-1),
                                    chunk_size=3, reduction="sum")
    else:
        modulators = jnp.asarray(rng.uniform(-1.0, 1.0, (STEPS,)), jnp.float32)
        grads = learner.etrace_grad(xs, modulators, step_fn=lambda x, m: jnp.sum(learner(x, modulator=m)),
                                    reduction="sum")
    out = {}
    for path, g in grads.items():
        for i, leaf in enumerate(jax.tree.leaves(g)):
            out[f"grad|{'/'.join(map(str, path))}|{i}"] = np.asarray(leaf)
    for r, rel in enumerate(learner.graph.hidden_param_op_relations):
        path = next(iter(rel.trainable_paths.values()))
        for (rr, g), trace in learner.get_etrace_of(path).items():
            for i, leaf in enumerate(jax.tree.leaves(trace)):
                out[f"trace|{'/'.join(map(str, path))}|{rr}:{g}|{i}"] = np.asarray(leaf)
    return out
