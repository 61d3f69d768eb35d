"""The explicit fast path against the same ODE written implicitly.

Lotka–Volterra and a small neural vector field, each stated three ways:
`Problem.explicit(φ)`, `Problem(h = ẋ − φ)` (Newton for ẋ, transposed solve for λ) and
`Problem.mass_matrix(I, φ)` (LU solves). Reported: the median wall time of a jitted
gradient (InterpolatingAdjoint, Tsit5, rtol = atol = 1e-6, float64, one thread) and
its ratio to the explicit form, measured in the same run; and the largest relative
difference of each gradient from the explicit one.

Run: python benchmarks/bench_forms.py [--repeats N]
"""

import argparse
import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
from _timing import median_time  # noqa: E402

import jadjoint as ja  # noqa: E402


def lotka_volterra(x, p, t):
    prey, predator = x
    return jnp.stack(
        [
            p["a"] * prey - p["b"] * prey * predator,
            p["c"] * prey * predator - p["d"] * predator,
        ]
    )


def forms(vector_field, n):
    return {
        "Problem.explicit(φ)": ja.Problem.explicit(vector_field),
        "Problem(h = ẋ − φ)": ja.Problem(
            lambda x, xdot, p, t: xdot - vector_field(x, p, t)
        ),
        "Problem.mass_matrix(I, φ)": ja.Problem.mass_matrix(jnp.eye(n), vector_field),
    }


def gradient(problem, x0, ts):
    def loss(p):
        solution = ja.solve(
            problem, p, 0.0, ts[-1], x0, saveat=ts, rtol=1e-6, atol=1e-6
        )
        return jnp.sum(solution.xs**2)

    return eqx.filter_jit(eqx.filter_grad(loss))


def max_relative_difference(a, b):
    pairs = zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v))) for u, v in pairs)


def run(name, vector_field, p, x0, ts, repeats):
    print(f"\n## {name} ({len(ts) - 1} save intervals)")
    print("| form | median ms | ratio to explicit | difference from explicit |")
    print("|---|---|---|---|")
    baseline = reference = None
    for label, problem in forms(vector_field, x0.size).items():
        grad = gradient(problem, x0, ts)
        value = grad(p)
        t = median_time(grad, p, repeats)
        baseline = t if baseline is None else baseline
        reference = value if reference is None else reference
        gap = max_relative_difference(value, reference)
        print(f"| {label} | {1e3 * t:.2f} | {t / baseline:.2f} | {gap:.1e} |")


def main(repeats=20):
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    p_lv = {k: jnp.array(v) for k, v in dict(a=1.1, b=0.4, c=0.1, d=0.4).items()}
    x0_lv = jnp.array([10.0, 5.0])
    run(
        "Lotka–Volterra", lotka_volterra, p_lv, x0_lv, jnp.linspace(0, 20, 101), repeats
    )
    model = eqx.nn.MLP(8, 8, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    field = lambda x, p, t: eqx.combine(p, static)(x) - x
    x0 = jnp.linspace(-1.0, 1.0, 8)
    run(
        "Neural ODE (MLP 8-32-32-8)", field, params, x0, jnp.linspace(0, 5, 21), repeats
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
