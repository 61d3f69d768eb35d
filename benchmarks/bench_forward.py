"""Forward mode: the full Jacobian of the states at 100 observation times with respect
to the parameters, by jadjoint's `jax.jacfwd` (forward sensitivities), its
`jax.jacrev` (the adjoint, one backward pass per output, batched) and diffrax's
`ForwardMode` under `jax.jacfwd`.

Lotka–Volterra (4 parameters) and the neural spiral (MLP 2 → 50 → 2, 252
parameters), 200 outputs each, Tsit5 at rtol 1e-6, float64, one thread. Times are
medians of interleaved calls in one process (each after its compile); the ratio is
to diffrax `ForwardMode` in the same run. Errors are relative (max |J − J_ref| /
max |J_ref|) against diffrax `ForwardMode` at rtol 1e-12. A sweep over the number
of spiral parameters differentiated (the first k of the flattened MLP) shows where
forward mode stops paying against jacrev.

Run: python benchmarks/bench_forward.py [--rounds N]
"""

import argparse
import dataclasses
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _problems import (  # noqa: E402
    OdeProblem,
    jadjoint_solve,
    lotka_volterra,
    neural_spiral,
)
from _timing import interleaved_medians  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jadjoint as ja  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8


def diffrax_states(problem: OdeProblem, adjoint, rtol, atol):
    def states(p, x0):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, x, p: problem.vector_field(x, p, t)),
            problem.solver,
            0.0,
            problem.t1,
            None,
            x0,
            args=p,
            saveat=diffrax.SaveAt(ts=problem.saveat),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            adjoint=adjoint,
            max_steps=problem.max_steps,
        )
        return solution.ys

    return states


def jadjoint_states(problem: OdeProblem, rtol, atol):
    solve = jadjoint_solve(problem, ja.InterpolatingAdjoint(), rtol, atol)
    return lambda p, x0: solve(p, x0).xs


def flat(states, p, x0):
    """`θ ↦ states(p(θ), x0)` flattened, θ the flattened parameters."""
    theta, unravel = ravel_pytree(p)
    return theta, lambda theta: states(unravel(theta), x0).ravel()


def jacobians(problem, p, x0, subset: int | None = None):
    """The compiled Jacobian functions, each of θ (or of its first `subset`)."""
    fns = {
        "jadjoint jacfwd": (jadjoint_states(problem, RTOL, ATOL), jax.jacfwd),
        "jadjoint jacrev": (jadjoint_states(problem, RTOL, ATOL), jax.jacrev),
        "diffrax ForwardMode jacfwd": (
            diffrax_states(problem, diffrax.ForwardMode(), RTOL, ATOL),
            jax.jacfwd,
        ),
    }
    theta, _ = ravel_pytree(p)
    compiled = {}
    for name, (states, jac) in fns.items():
        theta, of_theta = flat(states, p, x0)
        if subset is None:
            compiled[name] = jax.jit(jac(of_theta))
        else:
            rest = theta[subset:]
            part = lambda head, f=of_theta, rest=rest: f(jnp.concatenate([head, rest]))
            compiled[name] = jax.jit(jac(part))
    argument = theta if subset is None else theta[:subset]
    return compiled, argument


def reference(problem, p, x0):
    states = diffrax_states(problem, diffrax.ForwardMode(), 1e-12, 1e-12)
    theta, of_theta = flat(states, p, x0)
    return jax.jit(jax.jacfwd(of_theta))(theta)


def table(title, problem, p, x0, rounds):
    compiled, theta = jacobians(problem, p, x0)
    exact = reference(problem, p, x0)
    medians = interleaved_medians(compiled, theta, rounds)
    peer = medians["diffrax ForwardMode jacfwd"]
    print(f"\n{title}: {theta.size} parameters, {exact.shape[0]} outputs")
    print("| method | time (ms) | × diffrax ForwardMode | error |")
    print("|---|---|---|---|")
    for name, fn in compiled.items():
        error = float(jnp.max(jnp.abs(fn(theta) - exact)) / jnp.max(jnp.abs(exact)))
        print(
            f"| {name} | {1e3 * medians[name]:.2f} | {medians[name] / peer:.2f} "
            f"| {error:.1e} |"
        )


def sweep(problem, p, x0, rounds, sizes):
    print("\nspiral, the first k parameters: time (ms)")
    print("| k | jadjoint jacfwd | jadjoint jacrev | diffrax ForwardMode |")
    print("|---|---|---|---|")
    for k in sizes:
        compiled, head = jacobians(problem, p, x0, subset=k)
        medians = interleaved_medians(compiled, head, rounds)
        row = " | ".join(f"{1e3 * t:.2f}" for t in medians.values())
        print(f"| {k} | {row} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    problem, p, x0 = lotka_volterra()
    # The states alone: no running cost, which diffrax would not integrate.
    problem = dataclasses.replace(problem, f=None)
    table("Lotka–Volterra", problem, p, x0, args.rounds)
    spiral, params, y0 = neural_spiral(100)
    table("neural spiral", spiral, params, y0, args.rounds)
    sweep(spiral, params, y0, args.rounds, (4, 16, 64, 128))


if __name__ == "__main__":
    main()
