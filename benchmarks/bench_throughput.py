"""Gradient throughput of batched solves: gradients per second against batch size.

A batch of B independent problems (each its own initial state; the parameters shared,
as in neural-ODE training, or per member, as in ensembles) is differentiated as
`jax.jit(jax.vmap(jax.grad(loss)))`, for B = 1, 4, 16, 64, 256, 1024:

- Lotka–Volterra (rtol 1e-6, running cost and 100 observations), a parameter vector
  per member: per-member gradients, as in fitting a population;
- the neural spiral (MLP 2→50→2, 100 save times), one shared MLP and a batch of
  initial states on the circle of radius 2: the gradient of the batch-mean loss, as in
  training.

Reported: gradients (batch members) per second, median over calls after compiling
(float64, all cores),
for jadjoint's InterpolatingAdjoint and QuadratureAdjoint and diffrax's
RecursiveCheckpointAdjoint in the same run, and the ratio to RCA's throughput. The
device kind is printed first: the script runs unchanged on GPU and TPU.

Run: python benchmarks/bench_throughput.py [--max-batch B] [--repeats N]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _problems import (  # noqa: E402
    diffrax_loss,
    jadjoint_loss,
    lotka_volterra,
    neural_spiral,
    spiral_batch,
)
from _timing import median_time  # noqa: E402

import jadjoint as ja  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8
METHODS = {
    "jadjoint Interpolating": lambda problem: jadjoint_loss(
        problem, ja.InterpolatingAdjoint(), RTOL, ATOL
    ),
    "jadjoint Quadrature": lambda problem: jadjoint_loss(
        problem, ja.QuadratureAdjoint(), RTOL, ATOL
    ),
    "diffrax RCA": lambda problem: diffrax_loss(
        problem, diffrax.RecursiveCheckpointAdjoint(), RTOL, ATOL
    ),
}


def population_gradients(loss):
    """Per-member gradients of a batch of parameter vectors (one x0)."""
    return jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))


def training_gradient(loss):
    """The gradient of the batch-mean loss over initial states (shared parameters)."""
    batch_loss = lambda p, x0s: jnp.mean(jax.vmap(loss, in_axes=(None, 0))(p, x0s))
    return jax.jit(jax.grad(batch_loss))


def run(name, problem, batched_gradient, make_batch, sizes, repeats):
    print(f"\n## {name}")
    print(
        "| batch | "
        + " | ".join(f"{m} grads/s" for m in METHODS)
        + " | ratios to RCA |"
    )
    print("|---|" + "---|" * (len(METHODS) + 1))
    for size in sizes:
        inputs = make_batch(size)
        rates = {}
        for label, make_loss in METHODS.items():
            gradient = batched_gradient(make_loss(problem))
            seconds = median_time(lambda a, fn=gradient: fn(*a), inputs, repeats)
            rates[label] = size / seconds
        rca = rates["diffrax RCA"]
        ratios = ", ".join(f"{rate / rca:.2f}" for rate in list(rates.values())[:-1])
        cells = " | ".join(f"{rate:.0f}" for rate in rates.values())
        print(f"| {size} | {cells} | {ratios} |")


def main(max_batch: int, repeats: int):
    device = jax.devices()[0].device_kind
    print(f"device: {device} × {len(jax.devices())}, jax {jax.__version__}")
    sizes = [b for b in (1, 4, 16, 64, 256, 1024) if b <= max_batch]
    lv, p, x0 = lotka_volterra()

    def lv_batch(size):
        spread = jnp.exp(0.1 * jax.random.normal(jax.random.PRNGKey(0), (size, 4)))
        members = {name: p[name] * spread[:, i] for i, name in enumerate(p)}
        return members, x0

    run(
        "Lotka–Volterra, per-member gradients",
        lv,
        population_gradients,
        lv_batch,
        sizes,
        repeats,
    )
    spiral, params, _ = neural_spiral(100)
    spiral_inputs = lambda size: (params, spiral_batch(size))
    run(
        "Neural spiral, gradient of the batch-mean loss",
        spiral,
        training_gradient,
        spiral_inputs,
        sizes,
        repeats,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.max_batch, arguments.repeats)
