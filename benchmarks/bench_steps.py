"""Accepted steps of the backward (adjoint) pass against the forward solve's, and the
forward steps on which the adjoint left the step's own derivative for the continuous
adjoint under its own error control (fell back), for the default
`InterpolatingAdjoint()` on the suite's explicit problems (one trajectory each; the
training step's first member).

The backward pass's step count is internal to the reverse rule, so this script
records it by wrapping jadjoint's backward loop for observed solves
(`carry_by_step_derivatives`, as `jadjoint._backward._along_steps` calls it) with a
`jax.debug.callback`: instrumentation for a measurement, not an API. The
forward count is `Solution.stats["num_accepted_steps"]`.

Run: python benchmarks/bench_steps.py   (writes benchmarks/results/steps_cpu.md)
"""

import os
from pathlib import Path

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _problems import (  # noqa: E402
    jadjoint_loss,
    jadjoint_solve,
    lotka_volterra,
    neural_spiral,
    training_batch,
    training_mlp,
)

import jadjoint as ja  # noqa: E402
import jadjoint._backward._along_steps as along_steps  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "steps_cpu.md"
recorded: list[tuple[int, int]] = []


def _recording(carry):
    def wrapped(*args, **kwargs):
        w, q, steps = carry(*args, **kwargs)
        jax.debug.callback(
            lambda s, f: recorded.append((int(s), int(f))),
            steps.accepted,
            steps.fell_back,
        )
        return w, q, steps

    return wrapped


along_steps.carry_by_step_derivatives = _recording(
    along_steps.carry_by_step_derivatives
)


def counts(problem, p, x0, tol) -> tuple[int, int, int]:
    """`(forward accepted steps, backward accepted steps, forward steps fallen back)`
    of one gradient."""
    solve = jax.jit(jadjoint_solve(problem, ja.InterpolatingAdjoint(), *tol))
    forward = int(solve(p, x0).stats["num_accepted_steps"])
    recorded.clear()
    grad = jax.jit(jax.grad(jadjoint_loss(problem, ja.InterpolatingAdjoint(), *tol)))
    jax.block_until_ready(grad(p, x0))
    jax.effects_barrier()
    return forward, sum(s for s, _ in recorded), sum(f for _, f in recorded)


def main():
    lotka, lotka_p, lotka_x0 = lotka_volterra()
    spiral, spiral_p, spiral_x0 = neural_spiral()
    training, training_p = training_mlp()
    rows = [
        ("Lotka–Volterra, 100 observations + ∫ cost", lotka, lotka_p, lotka_x0),
        ("neural spiral, 1000 save times", spiral, spiral_p, spiral_x0),
    ]
    lines = [
        "# Backward steps against forward steps (InterpolatingAdjoint, Tsit5)",
        "",
        "| problem | rtol, atol | forward accepted | backward accepted | ratio "
        "| fell back |",
        "|---|---|---|---|---|---|",
    ]
    cases = [(*row, (1e-6, 1e-6)) for row in rows]
    cases.append(
        (
            "training step, first member (100 save times)",
            training,
            training_p,
            training_batch(1)[0],
            (1e-3, 1e-6),
        )
    )
    for label, problem, p, x0, tol in cases:
        forward, backward, fell_back = counts(problem, p, jnp.asarray(x0), tol)
        lines.append(
            f"| {label} | {tol[0]:.0e}, {tol[1]:.0e} | {forward} | {backward} | "
            f"{backward / forward:.2f} | {fell_back} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.write_text(report)


if __name__ == "__main__":
    main()
