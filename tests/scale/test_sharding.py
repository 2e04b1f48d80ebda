"""Data-parallel online learning: ``braintrace.compile(..., sharding=NamedSharding(mesh, P('batch')))``."""

import os
import pathlib
import subprocess
import sys

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import braintrace
from tests.scale._models import GRUReadout, loss_fn

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_four_host_devices_match_the_unsharded_learner():
    """Runs ``_sharded_check.py`` on 4 forced CPU devices (jax must see them before import).

    The script compares jitted ``etrace_grad`` gradients, losses and final states of a
    sharded and an unsharded learner (rtol 1e-5) for D-RTRL and ES-D-RTRL, with and without
    ``vmap``; checks that every batched state and trace leaf holds B/4 rows per device, that
    parameters, the step counter and gradients are replicated, that the compiled step has no
    all-gather, and that a restored checkpoint keeps the placement.
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "scale" / "_sharded_check.py")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    ok = [line for line in result.stdout.splitlines() if line.startswith("OK ")]
    assert len(ok) == 5, result.stdout
    for algo in ("d_rtrl", "es_d_rtrl"):
        for vmap in (False, True):
            assert any(line.startswith(f"OK {algo} vmap={vmap}: grads equal") for line in ok), result.stdout


def _mesh(shape=(1,), names=("batch",)):
    return Mesh(np.array(jax.devices()[:1]).reshape(shape), names)


def test_one_device_mesh_places_and_matches():
    sharding = NamedSharding(_mesh(), P("batch"))
    xs = jax.random.normal(jax.random.PRNGKey(2), (5, 4, 3))
    grads = []
    for s in (None, sharding):
        brainstate.random.seed(3)
        learner = braintrace.compile(GRUReadout(3, 4, 2), "d_rtrl", jnp.zeros((4, 3)), batch_size=4, sharding=s)
        grads.append(learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x))))
        if s is not None:
            # (on one device P('batch') and P() are the same placement)
            assert learner.model.cell.h.value.sharding.is_equivalent_to(sharding, 2)
            assert learner.model.out.weight.value["weight"].sharding.mesh == sharding.mesh
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make, error, match", [
    (lambda: jax.sharding.SingleDeviceSharding(jax.devices()[0]), TypeError, "NamedSharding"),
    (lambda: NamedSharding(_mesh((1, 1), ("batch", "model")), P("batch")), ValueError, "1-D mesh"),
    (lambda: NamedSharding(_mesh(), P(None, "batch")), ValueError, r"PartitionSpec\('batch'\)"),
    (lambda: NamedSharding(_mesh(), P()), ValueError, "leading"),
])
def test_bad_sharding_is_refused_before_anything_changes(make, error, match):
    model = GRUReadout(3, 4, 2)
    with pytest.raises(error, match=match):
        braintrace.compile(model, "d_rtrl", jnp.zeros((4, 3)), batch_size=4, sharding=make())
    assert not model.states(brainstate.HiddenState)  # states were never initialised


def test_sharding_needs_a_divisible_batch_size():
    sharding = NamedSharding(_mesh(), P("batch"))
    with pytest.raises(ValueError, match="needs `batch_size`"):
        braintrace.compile(GRUReadout(3, 4, 2), "d_rtrl", jnp.zeros(3), sharding=sharding)
    fake = NamedSharding(Mesh(np.array(jax.devices()[:1] * 1), ("batch",)), P("batch"))
    from braintrace.algorithms.sharding import batch_placement

    with pytest.raises(ValueError, match="positive multiple"):
        batch_placement(fake, 0)
