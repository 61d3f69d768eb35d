"""Fit a population of Lotka–Volterra models data-parallel over every visible device.

K sites each have their own predator–prey rates θ_k = log(α, β, γ, δ)_k, drawn around
(1.1, 0.4, 0.4, 0.1), and 20 noisy observations of their populations. All K rate
vectors are fitted at once: the loss is the mean over sites of each site's mean
squared log-population error, `jax.vmap` runs the sites' solves and adjoints as one
batched computation, and the batch axis (parameters and data alike) is sharded over a
`jax.sharding.Mesh` of all devices with `NamedSharding`, so that each device solves
K / devices sites and XLA reduces the loss across devices. Nothing in the training
step names a device: sharded inputs are all it takes.

On a CPU machine this runs on 8 simulated devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set below before JAX starts);
on GPUs or TPUs the batch spreads over those. For several hosts, call
`jax.distributed.initialize()` first and build the mesh over `jax.devices()` (see
the README). Writes `sharded_ensemble.png`: fitted against true rates, every site.

Run: python examples/sharded_ensemble.py [--quick] [--out FOLDER]
"""

import argparse
import os
import pathlib

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402
from progress_bar import with_latest_loss  # noqa: E402

import jadjoint as ja  # noqa: E402

TIMES = jnp.linspace(0.5, 10.0, 20)
X0 = jnp.array([10.0, 5.0])
TYPICAL_RATES = jnp.array([1.1, 0.4, 0.4, 0.1])
NAMES = ["α", "β", "γ", "δ"]


def lotka_volterra(x, log_rates, t):
    alpha, beta, gamma, delta = jnp.exp(log_rates)
    prey, predator = x
    return jnp.stack(
        [
            alpha * prey - beta * prey * predator,
            delta * prey * predator - gamma * predator,
        ]
    )


problem = ja.Problem.explicit(lotka_volterra)


def populations(log_rates):
    solution = ja.solve(problem, log_rates, 0.0, TIMES[-1], X0, saveat=TIMES, rtol=1e-7)
    return solution.xs


def population_loss(log_rates, observed):
    """Mean over sites of the mean squared error of the log populations."""
    predicted = jax.vmap(populations)(log_rates)
    return jnp.mean((jnp.log(predicted) - jnp.log(observed)) ** 2)


def make_sites(count: int):
    """True log rates of `count` sites and their observations with 5% noise."""
    key_rates, key_noise = jax.random.split(jax.random.PRNGKey(0))
    spread = 0.15 * jax.random.normal(key_rates, (count, 4))
    true_log_rates = jnp.log(TYPICAL_RATES) + spread
    noise = 0.05 * jax.random.normal(key_noise, (count, TIMES.size, 2))
    observed = jax.vmap(populations)(true_log_rates) * jnp.exp(noise)
    return true_log_rates, observed


def fit(observed, steps: int, sharding, learning_rate: float = 0.02):
    """Adam on every site's rates at once, from the typical rates; the batch axis of
    the parameters and the data sharded by `sharding`."""
    count = observed.shape[0]
    log_rates = jnp.broadcast_to(jnp.log(TYPICAL_RATES), (count, 4)) * 1.0
    log_rates, observed = jax.device_put((log_rates, observed), sharding)
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(log_rates)

    @jax.jit
    def step(log_rates, state):
        value, grad = jax.value_and_grad(population_loss)(log_rates, observed)
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(log_rates, updates), state, value

    losses = []
    for _ in with_latest_loss(range(steps), losses):
        log_rates, state, value = step(log_rates, state)
        losses.append(float(value))
    losses.append(float(step(log_rates, state)[2]))  # the loss at the result
    return log_rates, losses


def plot(true_log_rates, fitted_log_rates, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_rates, fitted = jnp.exp(true_log_rates), jnp.exp(fitted_log_rates)
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for i, (axis, name) in enumerate(zip(axes, NAMES, strict=True)):
        axis.plot(true_rates[:, i], fitted[:, i], ".", alpha=0.6)
        low, high = float(true_rates[:, i].min()), float(true_rates[:, i].max())
        axis.plot([low, high], [low, high], "k-", linewidth=0.8)
        axis.set_xlabel(f"true {name}")
        axis.set_ylabel(f"fitted {name}")
    figure.suptitle(f"{true_rates.shape[0]} sites fitted data-parallel")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(sites_per_device: int = 64, steps: int = 300, out: str = ".") -> list[float]:
    """Fit every site on a mesh of all devices; print the recovery of the rates,
    write the figure; return the losses."""
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("sites",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("sites"))
    count = sites_per_device * len(devices)
    true_log_rates, observed = make_sites(count)
    fitted, losses = fit(observed, steps, sharding)
    print(
        f"{count} sites on {len(devices)} {devices[0].platform} devices; fitted "
        f"rates sharded as {fitted.sharding.spec}"
    )
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {steps} Adam steps")
    errors = jnp.median(jnp.abs(jnp.exp(fitted - true_log_rates) - 1), axis=0)
    print(
        "median relative error of the fitted rates: "
        + ", ".join(f"{n} {e:.3f}" for n, e in zip(NAMES, errors, strict=True))
    )
    path = pathlib.Path(out) / "sharded_ensemble.png"
    plot(true_log_rates, fitted, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="8 sites a device, 40 steps"
    )
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    if arguments.quick:
        main(sites_per_device=8, steps=40, out=arguments.out)
    else:
        main(out=arguments.out)
