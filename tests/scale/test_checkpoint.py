"""Checkpoint and bit-exact resume (``braintrace.checkpoint``, on orbax-checkpoint)."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import braintrace
import braintrace.checkpoint as ckpt
from tests.scale._models import GRUReadout, loss_fn

B, T, STEPS = 4, 5, 6
SEQS = jax.random.normal(jax.random.PRNGKey(7), (STEPS, T, B, 3))


def make(algo, seed=0, n_hidden=4):
    brainstate.random.seed(seed)
    options = {"decay_or_rank": 0.9} if algo == "es_d_rtrl" else {}
    learner = braintrace.compile(GRUReadout(3, n_hidden, 2), algo, jnp.zeros((B, 3)), batch_size=B, **options)
    return learner


class Trainer:
    """Online training with optax Adam; the hidden states and traces carry across steps."""

    def __init__(self, learner):
        self.learner = learner
        self.params = learner.param_states
        self.opt = optax.adam(1e-2)
        self.opt_state = self.opt.init({p: st.value for p, st in self.params.items()})

        @brainstate.transform.jit
        def grads(seq):
            return learner.etrace_grad(seq, step_fn=lambda x: loss_fn(learner(x)), return_value=True)

        self.grads = grads

    def step(self, k):
        grads, losses = self.grads(SEQS[k])
        values = {p: st.value for p, st in self.params.items()}
        updates, self.opt_state = self.opt.update(grads, self.opt_state, values)
        for p, v in optax.apply_updates(values, updates).items():
            self.params[p].value = v
        return np.asarray(losses)


def snapshot(learner):
    return {p: [np.asarray(leaf) for leaf in jax.tree.leaves(st.value)] for p, st in learner.states().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for p in a:
        for u, v in zip(a[p], b[p], strict=True):
            np.testing.assert_array_equal(v, u, err_msg=str(p))


@pytest.mark.parametrize("algo", ["d_rtrl", "es_d_rtrl"])
def test_resume_is_bit_exact(tmp_path, algo):
    # Uninterrupted run.
    ref = Trainer(make(algo))
    ref_losses = [ref.step(k) for k in range(STEPS)]
    ref_final = snapshot(ref.learner)

    # Same run with a save after step 3: saving must not perturb it.
    run = Trainer(make(algo))
    losses = [run.step(k) for k in range(3)]
    before = snapshot(run.learner)
    ckpt.save(tmp_path, run.learner, step=3, extra=run.opt_state)
    assert_same(before, snapshot(run.learner))
    losses += [run.step(k) for k in range(3, STEPS)]
    np.testing.assert_array_equal(np.stack(losses), np.stack(ref_losses))
    assert_same(ref_final, snapshot(run.learner))

    # A fresh model and learner (other initial parameters) restored from step 3.
    fresh = Trainer(make(algo, seed=123))
    assert not np.array_equal(snapshot(fresh.learner)[("model", "out", "weight")][0], before[("model", "out", "weight")][0])
    opt_state = ckpt.restore(tmp_path, fresh.learner)
    assert jax.tree.structure(opt_state) == jax.tree.structure(fresh.opt_state)
    assert type(opt_state[0]) is optax.ScaleByAdamState
    assert opt_state[0].count.dtype == jnp.int32 and int(opt_state[0].count) == 3
    fresh.opt_state = opt_state
    assert_same(before, snapshot(fresh.learner))
    assert int(fresh.learner.running_index.value) == 3 * T
    resumed = [fresh.step(k) for k in range(3, STEPS)]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(ref_losses[3:]))
    assert_same(ref_final, snapshot(fresh.learner))  # parameters, hidden states, traces, index


def test_extra_keeps_structure_and_leaf_types(tmp_path):
    learner = make("d_rtrl")
    extra = {"epoch": 7, "lr": 0.5, "done": False, "rng": np.arange(3, dtype=np.uint32),
             "hist": [jnp.ones((2,), jnp.bfloat16), (1, 2.5)], "none": None}
    ckpt.save(tmp_path, learner, step=0, extra=extra)
    back = ckpt.restore(tmp_path, learner)
    assert jax.tree.structure(back) == jax.tree.structure(extra)
    assert type(back["epoch"]) is int and back["epoch"] == 7
    assert type(back["lr"]) is float and back["lr"] == 0.5
    assert back["done"] is False and back["none"] is None
    assert isinstance(back["rng"], np.ndarray) and back["rng"].dtype == np.uint32
    np.testing.assert_array_equal(back["rng"], [0, 1, 2])
    assert isinstance(back["hist"][0], jax.Array) and back["hist"][0].dtype == jnp.bfloat16
    assert back["hist"][1] == (1, 2.5) and type(back["hist"][1][0]) is int


def test_latest_and_chosen_steps(tmp_path):
    learner = make("d_rtrl")
    for k in (2, 5, 10):
        ckpt.save(tmp_path, learner, step=k, extra={"k": k})
    assert ckpt.all_steps(tmp_path) == [2, 5, 10]
    assert ckpt.restore(tmp_path, learner) == {"k": 10}
    assert ckpt.restore(tmp_path, learner, step=2) == {"k": 2}
    with pytest.raises(FileNotFoundError, match=r"no step 3; saved steps: \[2, 5, 10\]"):
        ckpt.restore(tmp_path, learner, step=3)
    with pytest.raises(ValueError, match="step 5 already exists"):
        ckpt.save(tmp_path, learner, step=5)
    with pytest.raises(ValueError, match="steps must increase: .* holds step 10, so step 7"):
        ckpt.save(tmp_path, learner, step=7)
    assert ckpt.all_steps(tmp_path) == [2, 5, 10]
    with pytest.raises(ValueError, match="non-negative int"):
        ckpt.save(tmp_path, learner, step=-1)


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ckpt.restore(missing, make("d_rtrl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        ckpt.restore(tmp_path / "empty", make("d_rtrl"))


@pytest.mark.parametrize("other, match", [
    (lambda: make("d_rtrl", n_hidden=5), r"state `model\.cell\.Wh\.weight` has leaf shapes/dtypes"),
    (lambda: make("es_d_rtrl"), r"state `etrace` has tree structure"),
])
def test_structure_mismatch_names_the_state_and_changes_nothing(tmp_path, other, match):
    ckpt.save(tmp_path, make("d_rtrl"), step=1)
    target = other()
    target(jnp.ones((B, 3)))
    before = snapshot(target)
    with pytest.raises(ValueError, match=match):
        ckpt.restore(tmp_path, target)
    assert_same(before, snapshot(target))


def test_uncompiled_or_foreign_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="online learner"):
        ckpt.save(tmp_path, GRUReadout(3, 4, 2), step=0)
    learner = braintrace.D_RTRL(GRUReadout(3, 4, 2))
    with pytest.raises(ValueError, match="compiled learner"):
        ckpt.save(tmp_path, learner, step=0)
    with pytest.raises(TypeError, match=r"`extra` leaf `\['name'\]` is a str"):
        ckpt.save(tmp_path, make("d_rtrl"), step=0, extra={"name": "run-1"})
    assert not (tmp_path / "0").exists()
