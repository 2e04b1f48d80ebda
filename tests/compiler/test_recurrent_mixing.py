"""Compiler options of the coupled and SnAp scopes: the recurrent op traced into the group
transition (Jacobians against the analytic ones), SnAp patterns and their records
(conservative, degenerate), the size cap, anchoring, and option validation."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import DiagnosticKind as K
from braintrace.compiler.snap_pattern import _closure, _table
from tests._support import models
from tests._support.mixing_models import CumsumRNN, SparseRecurrentRNN, TanhRNN


def _tanh_rnn(batch=None, seed=0):
    brainstate.random.seed(seed)
    model = TanhRNN(3, 4, 2)
    brainstate.nn.init_all_states(model, batch)
    model.h.value = 0.5 * brainstate.random.randn(*model.h.value.shape)
    x = brainstate.random.randn(*((batch, 3) if batch else (3,)))
    return model, x


def _jacobian_inputs(graph, x):
    group = graph.hidden_groups[0]
    _, _, temps, _, _ = graph.module_info.jaxpr_call(x)
    old = group.concat_hidden([temps[v] for v in group.hidden_invars])
    return group, old, [temps[v] for v in group.transition_jaxpr_constvars]


def _analytic_jacobian(model, x):
    """``J[(b, o), (b', i)] = δ_bb' (1 - h_new[b, o]²) W[i, o]`` for ``h = tanh(x W_in + b + h W)``."""
    win, b = model.win.weight.value["weight"], model.win.weight.value["bias"]
    w = model.w.weight.value["weight"]
    h = jnp.atleast_2d(model.h.value)
    slope = 1.0 - jnp.tanh(jnp.atleast_2d(x) @ win + b + h @ w) ** 2  # (B, N)
    batch, n = slope.shape
    full = np.zeros((batch, n, batch, n))
    for r in range(batch):
        full[r, :, r, :] = np.asarray(slope[r][:, None] * w.T)
    return full


def test_default_is_diagonal_and_mixing_traces_the_recurrent_op():
    model, x = _tanh_rnn()
    diagonal = braintrace.compile_etrace_graph(model, x)
    assert diagonal.hidden_groups[0].is_diagonal_recurrence
    assert not diagonal.hidden_groups[0].transition_jaxpr.eqns  # D = 0 (zero-recurrence fallback)
    assert diagonal.explain(kind=K.HIDDEN_GROUP_ZERO_RECURRENCE)
    mixing = braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True)
    group = mixing.hidden_groups[0]
    assert not group.is_diagonal_recurrence and group.snap is None
    assert "etp_matmul" in {str(e.primitive) for e in group.transition_jaxpr.eqns}
    assert not mixing.explain(kind=K.HIDDEN_GROUP_ZERO_RECURRENCE)
    assert not mixing.explain(kind=K.TRANSITION_NOT_ELEMENTWISE)
    # grouping and relations are the same in both modes
    assert [g.hidden_paths for g in mixing.hidden_groups] == [g.hidden_paths for g in diagonal.hidden_groups]
    assert len(mixing.hidden_param_op_relations) == len(diagonal.hidden_param_op_relations) == 2


def test_full_and_coupled_jacobians_match_the_analytic_ones():
    model, x = _tanh_rnn()
    graph = braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True)
    group, old, consts = _jacobian_inputs(graph, x)
    expected = _analytic_jacobian(model, x)[0, :, 0, :]  # (N, N)
    full = np.asarray(group.full_jacobian(old, consts))  # (N, 1, N, 1)
    np.testing.assert_allclose(full[:, 0, :, 0], expected, rtol=1e-5, atol=1e-7)
    block = np.asarray(group.jacobian(old, consts))  # coupled: (N, 1, 1)
    np.testing.assert_allclose(block[:, 0, 0], np.diag(expected), rtol=1e-5, atol=1e-7)


def test_snap_jacobian_gathers_the_neighbourhood_of_each_position():
    model, x = _tanh_rnn(batch=2)
    graph = braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True, sparse_n=2)
    group, old, consts = _jacobian_inputs(graph, x)
    pattern = group.snap
    assert pattern.precise and pattern.num_neighbours == 4
    full = _analytic_jacobian(model, x).reshape(8, 8)
    widened = np.asarray(group.jacobian(old, consts)).reshape(8, 4, 4)
    for p in range(8):
        for k in range(4):
            for k2 in range(4):
                q, q2 = pattern.neighbours[p, k], pattern.neighbours[p, k2]
                want = full[q, q2] * pattern.valid[p, k] * pattern.valid[p, k2]
                np.testing.assert_allclose(widened[p, k, k2], want, rtol=1e-5, atol=1e-7)
    assert all(pattern.neighbours[p, 0] == p for p in range(8))  # slot 0 is the position itself


def test_closure_of_a_chain_adjacency():
    chain = np.eye(5, dtype=bool) | np.eye(5, k=1, dtype=bool) | np.eye(5, k=-1, dtype=bool)
    neighbours, valid = _table(_closure(chain, 2))
    assert neighbours.shape == (5, 3)
    assert set(neighbours[2][valid[2]]) == {1, 2, 3} and set(neighbours[0][valid[0]]) == {0, 1}
    neighbours, valid = _table(_closure(chain, 3))
    assert set(neighbours[0][valid[0]]) == {0, 1, 2} and neighbours.shape == (5, 5)


def test_conservative_pattern_is_reported():
    brainstate.random.seed(0)
    model = CumsumRNN()
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="snap_pattern_conservative"):
        graph = braintrace.compile_etrace_graph(model, jnp.ones(3), include_recurrent_mixing=True, sparse_n=2)
    (record,) = graph.explain(kind=K.SNAP_PATTERN_CONSERVATIVE)
    assert record.context["primitives"] == ["cumsum"] and record.context["num_neighbours"] == 4
    assert not graph.hidden_groups[0].snap.precise


def test_degenerate_pattern_is_reported():
    brainstate.random.seed(0)
    model = models.LeakyRNN(3, 5, 2)  # element-wise recurrence: no position reaches another
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="snap_pattern_degenerate"):
        graph = braintrace.compile_etrace_graph(model, jnp.ones(3), include_recurrent_mixing=True, sparse_n=3)
    (record,) = graph.explain(kind=K.SNAP_PATTERN_DEGENERATE)
    assert record.context == {"group": 0, "n": 3}
    assert graph.hidden_groups[0].snap.num_neighbours == 1


def test_size_cap_names_the_group_and_the_numbers():
    model, x = _tanh_rnn(batch=3)
    with pytest.raises(braintrace.CompilationError,
                       match=r"group 0 \(`h`\).*12·\(4·1\)² = 192 elements.*snap_max_jacobian_elements=100"):
        braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True, sparse_n=2,
                                        snap_max_jacobian_elements=100)
    graph = braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True, sparse_n=2,
                                            snap_max_jacobian_elements=192)
    assert graph.hidden_groups[0].snap.num_neighbours == 4


def test_unanchored_relation_is_refused_under_sparse_n():
    brainstate.random.seed(0)
    model = SparseRecurrentRNN()
    brainstate.nn.init_all_states(model)
    with pytest.raises(NotImplementedError, match="not anchored"):
        braintrace.compile_etrace_graph(model, jnp.ones(3), include_recurrent_mixing=True, sparse_n=2)
    # the coupled scope keeps the op's own trace layout and compiles
    graph = braintrace.compile_etrace_graph(model, jnp.ones(3), include_recurrent_mixing=True)
    assert not graph.hidden_groups[0].is_diagonal_recurrence


@pytest.mark.parametrize("bad", [0, -2, True, 2.5, "2"])
def test_invalid_sparse_n_raises(bad):
    model, x = _tanh_rnn()
    with pytest.raises(ValueError, match="sparse_n"):
        braintrace.compile_etrace_graph(model, x, include_recurrent_mixing=True, sparse_n=bad)


def test_sparse_n_needs_recurrent_mixing():
    model, x = _tanh_rnn()
    with pytest.raises(braintrace.NotSupportedError, match="include_recurrent_mixing=True"):
        braintrace.compile_etrace_graph(model, x, sparse_n=2)
