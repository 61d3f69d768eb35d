"""Compile time of the gradient: jadjoint against diffrax and jax's `odeint`.

For each problem, the time to trace, lower and compile `jax.jit(jax.grad(L))` for
jadjoint's default method (`InterpolatingAdjoint()`), diffrax's
`RecursiveCheckpointAdjoint` (RCA) and `jax.experimental.ode.odeint`, each in a fresh
Python process with one thread (a process compiles a function once; JAX's caches
would hide every later compile), the processes interleaved over the repeats. The
table gives medians, the range over the repeats and the ratio to RCA.

Problems: those of `benchmarks/run.py` (the spiral batch and the training step under
`jax.vmap`), and the README's usage example (Lotka–Volterra with `g`, 20 save times
and a running cost).

Run: python benchmarks/bench_compile.py [--repeats N] [--quick]
     (writes benchmarks/results/compile_cpu.md; --quick: one repeat, no file)
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _timing import in_fresh_process

RESULTS = Path(__file__).parent / "results" / "compile_cpu.md"
LIBRARIES = ("jadjoint", "diffrax", "odeint")
PROBLEMS = (
    "README usage (Lotka–Volterra, g, 20 saves + cost)",
    "Lotka–Volterra (100 saves + cost)",
    "neural spiral (1000 saves)",
    "spiral batch of 16 (vmap)",
    "training step (batch 32, vmap)",
    "stiff Robertson (Kvaerno5)",
    "Fisher–KPP, N = 64",
)


def readme_problem():
    """The README's usage example, as `(loss(library), p)`."""
    import jax.numpy as jnp
    from _problems import OdeProblem, diffrax_loss, odeint_loss

    import jadjoint as ja

    def vector_field(x, p, t):
        prey, predator = x
        return jnp.stack(
            [
                p["a"] * prey - p["b"] * prey * predator,
                p["c"] * prey * predator - p["d"] * predator,
            ]
        )

    cost = lambda x, p, t: 1e-2 * jnp.sum(x**2)
    ts, data = jnp.linspace(0.5, 10.0, 20), jnp.ones((20, 2))
    p = {"a": 1.0, "b": 0.4, "c": 0.1, "d": 0.4, "x0": jnp.array([2.0, 1.0])}
    problem = ja.Problem.explicit(vector_field, f=cost, g=lambda x0, p: x0 - p["x0"])

    def jadjoint_loss(p):
        sol = ja.solve(problem, p, 0.0, 10.0, jnp.ones(2), saveat=ts)
        return sol.cost + jnp.sum((sol.xs - data) ** 2)

    # The peers have no `g`: `x0 = p["x0"]`, the same loss up to the data term.
    peer = OdeProblem(vector_field, 10.0, f=cost, saveat=ts)
    losses = {
        "jadjoint": jadjoint_loss,
        "diffrax": lambda p: diffrax_loss(peer, _rca(), 1e-6, 1e-8)(p, p["x0"]),
        "odeint": lambda p: odeint_loss(peer, 1e-6, 1e-8)(p, p["x0"]),
    }
    return losses, (p,)


def _rca():
    import diffrax

    return diffrax.RecursiveCheckpointAdjoint()


def suite_problem(name: str):
    """A problem of `benchmarks/run.py`, as `(losses by library, args)`."""
    from _problems import (
        INTERPOLATING,
        ODEINT,
        RCA,
        fisher_kpp,
        lotka_volterra,
        neural_spiral,
        robertson,
        spiral_batch,
        training_batch,
        training_mlp,
    )

    tolerances = (1e-6, 1e-6)
    wrap = None
    if name.startswith("Lotka"):
        problem, p, x0 = lotka_volterra()
    elif name.startswith("neural"):
        problem, p, x0 = neural_spiral()
    elif name.startswith("spiral batch"):
        problem, p, _ = neural_spiral(100)
        x0, wrap = spiral_batch(16), "batch"
    elif name.startswith("training"):
        problem, p = training_mlp()
        x0, wrap, tolerances = training_batch(32), "batch", (1e-3, 1e-6)
    elif name.startswith("stiff"):
        problem, p, x0 = robertson()
        tolerances = (1e-8, 1e-10)
    else:
        problem, p, x0 = fisher_kpp(64)
    methods = {"jadjoint": INTERPOLATING, "diffrax": RCA, "odeint": ODEINT}
    losses = {
        library: method.loss(problem, *tolerances)
        for library, method in methods.items()
    }
    if wrap == "batch":
        losses = {library: _batched(loss) for library, loss in losses.items()}
    return losses, (p, x0)


def _batched(loss):
    """The mean of `loss` over a batch of initial states (`jax.vmap`)."""
    import jax
    import jax.numpy as jnp

    return lambda p, x0s: jnp.mean(jax.vmap(loss, (None, 0))(p, x0s))


def measure_one(problem: str, library: str) -> dict:
    """In this (fresh) process: trace + lower, and compile, of the gradient."""
    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(Path(__file__).parent))
    if problem.startswith("README"):
        losses, args = readme_problem()
    else:
        losses, args = suite_problem(problem)
    if library == "odeint" and problem.startswith("stiff"):
        return {"skipped": "explicit solver on a stiff problem"}
    grad = jax.jit(jax.grad(losses[library]))
    start = time.perf_counter()
    lowered = grad.lower(*args)
    traced = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    return {"lower": traced - start, "compile": done - traced, "total": done - start}


def main(repeats: int, write: bool) -> None:
    runs = {(problem, library): [] for problem in PROBLEMS for library in LIBRARIES}
    for _ in range(repeats):
        for problem in PROBLEMS:
            for library in LIBRARIES:
                runs[problem, library].append(
                    in_fresh_process(__file__, problem, library)
                )
    lines = [
        "# Compile time of the gradient (trace + lower + compile)",
        "",
        f"`python benchmarks/bench_compile.py`: a fresh process per measurement, one "
        f"thread, float64; medians of {repeats} (range), seconds; ratio to RCA.",
        "",
        "| problem | jadjoint | diffrax RCA | jax odeint | jadjoint ÷ RCA |",
        "|---|---|---|---|---|",
    ]
    for problem in PROBLEMS:
        cells, medians = [], {}
        for library in LIBRARIES:
            results = runs[problem, library]
            if "skipped" in results[0]:
                cells.append("—")
                continue
            totals = [r["total"] for r in results]
            medians[library] = statistics.median(totals)
            cells.append(
                f"{medians[library]:.1f} ({min(totals):.1f}–{max(totals):.1f})"
            )
        ratio = medians["jadjoint"] / medians["diffrax"]
        lines.append(f"| {problem} | " + " | ".join(cells) + f" | {ratio:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(sys.argv[2], sys.argv[3])))
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    main(1 if arguments.quick else arguments.repeats, write=not arguments.quick)
