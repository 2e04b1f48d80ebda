"""The executor's per-step quantities: ∂h/∂y and D against analytic values and jacfwd."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import braintrace
from braintrace.algorithms import executor
from tests._support import models


def quantities(model, x):
    graph = braintrace.compile_etrace_graph(model, x)
    layout = executor.StateLayout.of(graph)
    minfo = graph.module_info
    params, others = layout.split([jax.tree.leaves(st.value) for st in minfo.compiled_model_states])
    _, temps, _ = executor.run_step(graph, layout, jax.tree.leaves((x,)), params, others)
    q = executor.step_quantities(graph, temps, dict(zip(layout.param_paths, params)))
    return graph, temps, q


def test_leaky_rnn_sensitivities_are_analytic():
    model = models.LeakyRNN()
    brainstate.nn.init_all_states(model)
    model.h.value = brainstate.random.randn(5)
    x = brainstate.random.randn(3)
    graph, temps, q = quantities(model, x)
    r = next(i for i, rel in enumerate(graph.hidden_param_op_relations) if rel.x_var is not None)
    y = temps[graph.hidden_param_op_relations[r].y_var]
    np.testing.assert_allclose(q.df[r][0][..., 0], 1.0 - jnp.tanh(y) ** 2, rtol=1e-5)
    decay = jax.nn.sigmoid(model.tau.value)
    np.testing.assert_allclose(q.jacobians[0][..., 0, 0], decay, rtol=1e-6)
    np.testing.assert_allclose(q.x[r], x)
    assert "Array(shape=" in repr(q) and "0." not in repr(q)


def test_alif_two_state_block_equals_jacfwd_diagonal():
    """D of brainpy.state.ALIF's (V, a) block equals the diagonal of jacfwd of the model step."""
    model = models.SpikingNet(neuron="alif")
    brainstate.nn.init_all_states(model)
    neu = model.neu
    neu.V.value = brainstate.random.uniform(0.5, 1.5, (6,))  # some above threshold: the surrogate is active
    neu.a.value = brainstate.random.uniform(0.0, 0.5, (6,))
    x = brainstate.random.uniform(0.0, 1.0, (3,))
    graph, temps, q = quantities(model, x)
    (group,) = graph.hidden_groups
    assert group.num_state == 2
    order = group.hidden_paths
    assert sorted(order) == [("neu", "V"), ("neu", "a")]
    old = {p: temps[v] for p, v in zip(group.hidden_paths, group.hidden_invars)}

    def step(*olds):
        """One step of the model itself, as a function of the group's old values."""
        saved = neu.V.value, neu.a.value
        neu.V.value, neu.a.value = olds[order.index(("neu", "V"))], olds[order.index(("neu", "a"))]
        model(x)
        new = {("neu", "V"): neu.V.value, ("neu", "a"): neu.a.value}
        neu.V.value, neu.a.value = saved
        return new

    jac = brainstate.transform.jacfwd(step, argnums=(0, 1))(*[old[p] for p in order])
    assert float(jnp.abs(jnp.diagonal(jac[("neu", "V")][order.index(("neu", "a"))])).max()) > 1e-3, \
        "the V-a coupling must be live for this check to mean anything"
    for i, out_path in enumerate(order):
        for j in range(2):
            np.testing.assert_allclose(q.jacobians[0][:, i, j], jnp.diagonal(jac[out_path][j]), rtol=1e-5, atol=1e-6)
