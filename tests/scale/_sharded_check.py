"""Data-parallel checks on 4 host devices; run as a script by ``test_sharding.py``.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before jax is imported,
so this runs in its own process. It exits non-zero (an AssertionError) on the first failure
and prints one ``OK ...`` line per passed check.
"""

import os
import re
import sys
import tempfile

import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import braintrace  # noqa: E402
import braintrace.checkpoint  # noqa: E402
from tests.scale._models import GRUReadout, loss_fn  # noqa: E402

B, T, N_DEV = 8, 6, 4


def build(algo, sharding, vmap):
    options = {"decay_or_rank": 0.9} if algo == "es_d_rtrl" else {}
    brainstate.random.seed(1)  # identical parameters in every build
    learner = braintrace.compile(GRUReadout(3, 4, 2), algo, jnp.zeros((B, 3)), batch_size=B, seed=1,
                                 sharding=sharding, vmap=vmap, **options)
    fn = brainstate.transform.jit(
        lambda seq: learner.etrace_grad(seq, step_fn=lambda x: loss_fn(learner(x)), return_value=True))
    return learner, fn


def check_placement(learner, label):
    for path, st in learner.states().items():
        for leaf in jax.tree.leaves(st.value):
            shards = leaf.addressable_shards
            assert len(shards) == N_DEV, (label, path, len(shards))
            if isinstance(st, brainstate.ParamState) or np.ndim(leaf) == 0:
                assert leaf.sharding.is_fully_replicated, (label, path, leaf.sharding)
                assert all(s.data.shape == leaf.shape for s in shards), (label, path)
            else:
                assert leaf.shape[0] == B, (label, path, leaf.shape)
                rows = sorted({s.data.shape[0] for s in shards})
                assert rows == [B // N_DEV], (label, path, rows)
                assert all(s.data.shape[1:] == leaf.shape[1:] for s in shards), (label, path)


def main():
    assert "--xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", ""), "set XLA_FLAGS first"
    assert len(jax.devices()) == N_DEV, jax.devices()
    mesh = Mesh(jax.devices(), ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    xs = jax.random.normal(jax.random.PRNGKey(0), (T, B, 3))
    xs_sharded = jax.device_put(xs, NamedSharding(mesh, P(None, "batch")))
    for vmap in (False, True):
        for algo in ("d_rtrl", "es_d_rtrl"):
            label = f"{algo} vmap={vmap}"
            plain, plain_fn = build(algo, None, vmap)
            grads_ref, losses_ref = plain_fn(xs)
            sharded, sharded_fn = build(algo, batch, vmap)
            check_placement(sharded, label + " after compile")
            grads, losses = sharded_fn(xs_sharded)
            check_placement(sharded, label + " after etrace_grad")
            for path in grads_ref:
                for a, b in zip(jax.tree.leaves(grads_ref[path]), jax.tree.leaves(grads[path]), strict=True):
                    assert b.sharding.is_fully_replicated, (label, path)
                    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=f"{label} {path}")
            np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
            for (p, a), (q, b) in zip(plain.states().items(), sharded.states().items(), strict=True):
                if not isinstance(a, brainstate.ParamState):
                    for u, v in zip(jax.tree.leaves(a.value), jax.tree.leaves(b.value), strict=True):
                        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-7, err_msg=f"{label} state {p}")
            hlo = sharded_fn.lower(xs_sharded).compile().as_text()
            gathers = len(re.findall(r"all-gather", hlo))
            assert gathers == 0, (label, gathers)
            scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_ref))
            assert scale > 1e-4, (label, scale)  # the compared gradients are not trivially zero
            print(f"OK {label}: grads equal (max |g| {scale:.3g}), {B // N_DEV} rows per device, "
                  f"params replicated, no all-gather", flush=True)

    # A sharded learner restored from a checkpoint keeps its placement and values.
    learner, fn = build("d_rtrl", batch, False)
    fn(xs_sharded)
    with tempfile.TemporaryDirectory() as directory:
        braintrace.checkpoint.save(directory, learner, step=1)
        fresh, _ = build("d_rtrl", batch, False)
        braintrace.checkpoint.restore(directory, fresh)
    check_placement(fresh, "restored")
    for (p, a), (_, b) in zip(learner.states().items(), fresh.states().items(), strict=True):
        for u, v in zip(jax.tree.leaves(a.value), jax.tree.leaves(b.value), strict=True):
            np.testing.assert_array_equal(np.asarray(v), np.asarray(u), err_msg=f"restored {p}")
    print("OK restore keeps the sharded placement", flush=True)


if __name__ == "__main__":
    main()
