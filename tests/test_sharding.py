"""Ensembles sharded over a device mesh give the single-device results.

A batch of 64 Lotka–Volterra gradients (each its own parameters and initial state),
`jax.vmap`ped and `jax.jit`-compiled, with the batch axis sharded over 8 devices by
`NamedSharding`, against the same computation on one device: equal to 1e-12 relative
in float64 (the same arithmetic, partitioned); the per-member gradients stay sharded
along the batch, and the data-parallel mean gradient comes back replicated. A mesh
with explicit axes (`jax.make_mesh`'s default) is refused with a message saying how
to build an automatic one.

The 8 devices are simulated CPU devices (`--xla_force_host_platform_device_count=8`),
which must be set before JAX starts: this file runs itself as a script in a
subprocess and prints what the test checks.
"""

import json
import os
import subprocess
import sys

BATCH = 64


def test_sharded_batch_of_gradients_equals_single_device():
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8",
    }
    result = subprocess.run(
        [sys.executable, __file__],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    assert report["member_gradients_difference"] < 1e-12
    assert report["mean_gradient_difference"] < 1e-12
    assert report["member_gradients_spec"] == ["batch"]
    assert report["member_gradients_devices"] == 8
    assert report["mean_gradient_replicated"]
    assert "axis_types=(jax.sharding.AxisType.Auto,)" in report["explicit_mesh_error"]


def _sharded_report() -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    import jadjoint as ja

    def lotka_volterra(x, p, t):
        prey, predator = x
        return jnp.stack(
            [
                p[0] * prey - p[1] * prey * predator,
                p[2] * prey * predator - p[3] * predator,
            ]
        )

    problem = ja.Problem.explicit(lotka_volterra, f=lambda x, p, t: 0.01 * x[0] * x[1])
    ts = jnp.linspace(0.5, 5.0, 10)

    def loss(p, x0):
        solution = ja.solve(problem, p, 0.0, 5.0, x0, saveat=ts, rtol=1e-8, atol=1e-8)
        return solution.cost + jnp.sum(jnp.log(solution.xs) ** 2)

    member_gradients = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))
    batch_mean = jax.jit(lambda tree: jax.tree.map(lambda g: jnp.mean(g, 0), tree))
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    base = jnp.array([1.1, 0.4, 0.1, 0.4])
    ps = base * jnp.exp(0.2 * jax.random.normal(key_p, (BATCH, 4)))
    x0s = jnp.exp(jax.random.normal(key_x, (BATCH, 2)))

    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Auto,))
    batch_spec = PartitionSpec("batch")
    batch_sharding = NamedSharding(mesh, batch_spec)
    sharded = jax.device_put((ps, x0s), batch_sharding)
    single = jax.device_put((ps, x0s), jax.devices()[0])

    def difference(a, b):
        pairs = zip(*map(jax.tree.leaves, jax.device_get((a, b))), strict=True)
        return max(float(np.max(np.abs(u - v)) / np.max(np.abs(v))) for u, v in pairs)

    members, single_members = member_gradients(*sharded), member_gradients(*single)
    mean = batch_mean(members)
    first = jax.tree.leaves(members)[0]
    explicit_mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Explicit,))
    explicit = jax.device_put((ps, x0s), NamedSharding(explicit_mesh, batch_spec))
    try:
        member_gradients(*explicit)
        explicit_mesh_error = ""
    except ValueError as error:
        explicit_mesh_error = str(error)
    return {
        "devices": len(jax.devices()),
        "explicit_mesh_error": explicit_mesh_error,
        "member_gradients_difference": difference(members, single_members),
        "mean_gradient_difference": difference(mean, batch_mean(single_members)),
        "member_gradients_spec": list(first.sharding.spec),
        "member_gradients_devices": len(first.sharding.device_set),
        "mean_gradient_replicated": all(
            leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(mean)
        ),
    }


if __name__ == "__main__":
    print(json.dumps(_sharded_report()))
