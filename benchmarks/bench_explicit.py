"""Explicit ODEs: jadjoint's adjoints against diffrax and jax.experimental.ode.

For each problem, every method computes the gradient of the same loss at the same
tolerance (Tsit5 / Dormand–Prince, rtol = atol = 1e-6, float64, one thread). Reported:
the median wall time of a jitted gradient over repeats, its ratio to diffrax's
`RecursiveCheckpointAdjoint` measured in the same run, and the gradient's relative error
against a reference (diffrax RCA at rtol = atol = 1e-12, checked against jadjoint
InterpolatingAdjoint at 1e-12: the two independent methods must agree).

Run: python benchmarks/bench_explicit.py [--repeats N]
"""

import argparse
import os
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
from _timing import median_time  # noqa: E402
from jax.experimental.ode import odeint  # noqa: E402

import jadjoint as ja  # noqa: E402

RTOL = ATOL = 1e-6


def lotka_volterra(x, p, t):
    prey, predator = x
    return jnp.stack(
        [
            p["a"] * prey - p["b"] * prey * predator,
            p["c"] * prey * predator - p["d"] * predator,
        ]
    )


def loss_jadjoint(vector_field, x0, ts, adjoint, tol):
    problem = ja.Problem.explicit(vector_field)

    def loss(p):
        solution = ja.solve(
            problem, p, 0.0, ts[-1], x0, saveat=ts, adjoint=adjoint, rtol=tol, atol=tol
        )
        return jnp.sum(solution.xs**2)

    return loss


def loss_diffrax(vector_field, x0, ts, adjoint, tol):
    def loss(p):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, x, p: vector_field(x, p, t)),
            diffrax.Tsit5(),
            0.0,
            ts[-1],
            None,
            x0,
            args=p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            adjoint=adjoint,
            max_steps=100_000,
        )
        return jnp.sum(solution.ys**2)

    return loss


def loss_odeint(vector_field, x0, ts, tol):
    def loss(p):
        xs = odeint(
            lambda x, t, p: vector_field(x, p, t), x0, ts, p, rtol=tol, atol=tol
        )
        return jnp.sum(xs[1:] ** 2)

    return loss


def relative_error(grad, reference):
    num = sum(
        float(jnp.sum((a - b) ** 2))
        for a, b in zip(*map(jtu.tree_leaves, (grad, reference)), strict=True)
    )
    den = sum(float(jnp.sum(b**2)) for b in jtu.tree_leaves(reference))
    return (num / den) ** 0.5


def run(name, vector_field, p, x0, ts, repeats):
    reference = eqx.filter_jit(
        eqx.filter_grad(
            loss_diffrax(
                vector_field, x0, ts, diffrax.RecursiveCheckpointAdjoint(), 1e-12
            )
        )
    )(p)
    check = eqx.filter_jit(
        eqx.filter_grad(
            loss_jadjoint(vector_field, x0, ts, ja.InterpolatingAdjoint(), 1e-12)
        )
    )(p)
    print(f"\n## {name} ({len(ts) - 1} save intervals)")
    gap = relative_error(check, reference)
    print(f"reference check: jadjoint vs diffrax at 1e-12 differ by {gap:.1e}")
    methods = {
        "diffrax RecursiveCheckpointAdjoint": loss_diffrax(
            vector_field, x0, ts, diffrax.RecursiveCheckpointAdjoint(), RTOL
        ),
        "diffrax BacksolveAdjoint": loss_diffrax(
            vector_field, x0, ts, diffrax.BacksolveAdjoint(), RTOL
        ),
        "jax odeint": loss_odeint(vector_field, x0, ts, RTOL),
        "jadjoint InterpolatingAdjoint": loss_jadjoint(
            vector_field, x0, ts, ja.InterpolatingAdjoint(), RTOL
        ),
        "jadjoint BacksolveAdjoint": loss_jadjoint(
            vector_field, x0, ts, ja.BacksolveAdjoint(), RTOL
        ),
        "jadjoint QuadratureAdjoint": loss_jadjoint(
            vector_field, x0, ts, ja.QuadratureAdjoint(), RTOL
        ),
        "jadjoint InterpolatingAdjoint(checkpoints=8)": loss_jadjoint(
            vector_field, x0, ts, ja.InterpolatingAdjoint(checkpoints=8), RTOL
        ),
    }
    print("| method | median ms | ratio to RCA | compile s | gradient rel. error |")
    print("|---|---|---|---|---|")
    baseline = None
    for label, loss in methods.items():
        grad = eqx.filter_jit(eqx.filter_grad(loss))
        start = time.perf_counter()
        value = jax.block_until_ready(grad(p))
        compile_s = time.perf_counter() - start
        t = median_time(grad, p, repeats)
        baseline = t if baseline is None else baseline
        error = relative_error(value, reference)
        print(
            f"| {label} | {1e3 * t:.2f} | {t / baseline:.2f} | {compile_s:.1f} "
            f"| {error:.1e} |"
        )


def main(repeats=20):
    device = jax.devices()[0].device_kind
    print(f"device: {device}, jax {jax.__version__}, diffrax {diffrax.__version__}")
    p_lv = {k: jnp.array(v) for k, v in dict(a=1.1, b=0.4, c=0.1, d=0.4).items()}
    run(
        "Lotka–Volterra",
        lotka_volterra,
        p_lv,
        jnp.array([10.0, 5.0]),
        jnp.linspace(0.0, 20.0, 101),
        repeats,
    )
    model = eqx.nn.MLP(2, 2, 50, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    field = lambda x, p, t: eqx.combine(p, static)(x**3)
    run(
        "Neural ODE spiral (MLP 2-50-50-2)",
        field,
        params,
        jnp.array([2.0, 0.0]),
        jnp.linspace(0.0, 25.0, 1000),
        repeats,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
