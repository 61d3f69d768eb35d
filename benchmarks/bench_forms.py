"""The explicit fast path against the same model written implicitly or as a DAE.

Lotka–Volterra and a small neural vector field, each stated three ways:
`Problem.explicit(φ)`, `Problem(h = ẋ − φ)` (Newton for ẋ, transposed solve for λ) and
`Problem.mass_matrix(I, φ)` (LU solves); and the stiff Robertson kinetics as an ODE
and as the index-1 DAE with mass conservation for the third equation, in both DAE
forms (`Problem.mass_matrix(diag(1, 1, 0), φ)` and `Problem.semi_explicit(a, b)`),
with Kvaerno5. Reported: the median wall time of a jitted gradient
(InterpolatingAdjoint; Tsit5 at rtol = atol = 1e-6, Kvaerno5 at rtol 1e-8, atol
1e-10; float64, one thread) and its ratio to the explicit form, measured in the same
run; and the largest relative difference of each gradient from the explicit one.

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
from _problems import kvaerno5, robertson_vf  # noqa: E402
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


def ode_forms(vector_field, x0):
    """The ODE `ẋ = φ` stated three ways, each with its `x0`."""
    return {
        "Problem.explicit(φ)": (ja.Problem.explicit(vector_field), x0),
        "Problem(h = ẋ − φ)": (
            ja.Problem(lambda x, xdot, p, t: xdot - vector_field(x, p, t)),
            x0,
        ),
        "Problem.mass_matrix(I, φ)": (
            ja.Problem.mass_matrix(jnp.eye(x0.size), vector_field),
            x0,
        ),
    }


def robertson_forms():
    """The Robertson ODE, and the DAE with `y1 + y2 + y3 = 1` for its third row."""
    y0 = jnp.array([1.0, 0.0, 0.0])
    cost = lambda x, log_k, t: 1e4 * jnp.concatenate(jtu.tree_leaves(x))[1]

    def conservation(y, log_k, t):
        return jnp.concatenate(
            [robertson_vf(y, log_k, t)[:2], jnp.sum(y, keepdims=True) - 1]
        )

    def differential(y, z, log_k, t):
        return robertson_vf(jnp.concatenate([y, z]), log_k, t)[:2]

    def algebraic(y, z, log_k, t):
        return jnp.sum(y, keepdims=True) + z - 1

    return {
        "Problem.explicit(φ)": (ja.Problem.explicit(robertson_vf, f=cost), y0),
        "Problem.mass_matrix(diag(1, 1, 0), φ)": (
            ja.Problem.mass_matrix(
                jnp.diag(jnp.array([1.0, 1.0, 0.0])), conservation, f=cost
            ),
            y0,
        ),
        "Problem.semi_explicit(a, b)": (
            ja.Problem.semi_explicit(differential, algebraic, f=cost),
            (y0[:2], y0[2:]),
        ),
    }


def gradient(problem, x0, ts, weights, **options):
    """The jitted gradient of `cost + Σ weights · x(ts)²`; a DAE's `(ys, zs)` is
    joined into the state."""

    def loss(p):
        solution = ja.solve(problem, p, 0.0, ts[-1], x0, saveat=ts, **options)
        xs = jnp.concatenate(jtu.tree_leaves(solution.xs), axis=-1)
        return solution.cost + jnp.sum(weights * xs**2)

    return eqx.filter_jit(eqx.filter_grad(loss))


def max_relative_difference(a, b):
    pairs = zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v))) for u, v in pairs)


def run(name, forms, p, ts, repeats, weights=1.0, **options):
    print(f"\n## {name} ({len(ts) - 1} save intervals)")
    print("| form | median ms | ratio to explicit | difference from explicit |")
    print("|---|---|---|---|")
    baseline = reference = None
    for label, (problem, x0) in forms.items():
        grad = gradient(problem, x0, ts, weights, **options)
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
    tsit5 = dict(rtol=1e-6, atol=1e-6)
    lv_forms = ode_forms(lotka_volterra, x0_lv)
    run("Lotka–Volterra", lv_forms, p_lv, jnp.linspace(0, 20, 101), repeats, **tsit5)
    model = eqx.nn.MLP(8, 8, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    field = lambda x, p, t: eqx.combine(p, static)(x) - x
    x0 = jnp.linspace(-1.0, 1.0, 8)
    neural_forms = ode_forms(field, x0)
    ts = jnp.linspace(0, 5, 21)
    run("Neural ODE (MLP 8-32-32-8)", neural_forms, params, ts, repeats, **tsit5)
    run(
        "Robertson kinetics, Kvaerno5, 1e4 ∫ y2 dt + observations",
        robertson_forms(),
        jnp.log(jnp.array([0.04, 3e7, 1e4])),
        jnp.logspace(-2, 2, 20),
        repeats,
        weights=jnp.array([1.0, 1e8, 1.0]),
        solver=kvaerno5(1e-8),
        rtol=1e-8,
        atol=1e-10,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
