"""The benchmark suite: jadjoint's adjoint methods against diffrax and jax's odeint.

For each problem every method computes the gradient of the same loss (`_problems.py`:
a running cost `∫ f dt` plus the sum of squares of the saved states) with the same
solver and tolerances, in float64 on one CPU thread. Measured, in the same run:

- gradient time: the median wall time of a compiled `jax.jit(jax.grad(L))` over up
  to 7 calls after a first one, as many as fit in about a second (a call slower than
  that: the first call's time), and its ratio to diffrax's
  `RecursiveCheckpointAdjoint` (RCA);
- forward time: the median of the compiled loss alone, and gradient ÷ forward. A
  library's forward computation does not depend on its adjoint method (that only
  changes the reverse pass), so it is compiled and timed once per library;
- compile time: the wall time of `jax.jit(fn).lower(*args)` (tracing, in the main
  thread) plus `.compile()` (XLA, in a worker thread). The suite is mostly
  compilation: it compiles two functions at once while it traces the next, so on two
  cores these times are somewhat inflated by the sharing, alike for every method;
- gradient error: ‖g − g_ref‖₂ / ‖g_ref‖₂ against diffrax RCA at a tight tolerance,
  itself cross-checked against jadjoint's `InterpolatingAdjoint` at that tolerance;
- memory: `temp + output` bytes of the compiled gradient's `memory_analysis()`, XLA's
  static buffer assignment (compiled, not run).

Problems: Lotka–Volterra (and work–precision over tolerances), a neural-ODE spiral (one
trajectory and a `vmap`ped batch), stiff Robertson kinetics with Kvaerno5, a size sweep
over a Fisher–KPP lattice with one parameter per cell, and memory against the number of
steps on an oscillator. The report goes to `benchmarks/results/suite_cpu.md`.

Run: python benchmarks/run.py [--quick]   (--quick: a smoke run with fewer methods,
sizes and repeats, printed but not written)
"""

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
from _problems import (  # noqa: E402
    BACKSOLVE,
    CHECKPOINTED,
    DIFFRAX_BACKSOLVE,
    DISCRETISE,
    FORWARD,
    INTERPOLATING,
    ODEINT,
    QUADRATURE,
    RCA,
    Method,
    fisher_kpp,
    jadjoint_solve,
    kvaerno5,
    lotka_volterra,
    neural_spiral,
    oscillator,
    relative_error,
    robertson,
    spiral_batch,
    training_batch,
    training_mlp,
)
from _timing import median_time  # noqa: E402

import jadjoint as ja  # noqa: E402

# A failing method raises from a callback, which jax also logs with a traceback; the
# tables report the failure.
logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)

RESULTS = Path(__file__).parent / "results" / "suite_cpu.md"
ALL_METHODS = (
    RCA,
    DIFFRAX_BACKSOLVE,
    ODEINT,
    INTERPOLATING,
    QUADRATURE,
    BACKSOLVE,
    CHECKPOINTED,
    DISCRETISE,
)
REFERENCE_MAX_STEPS = 10_000
# XLA compiles this many functions at once while the main thread traces the next: the
# suite is mostly compilation, and two keep both cores of a 2-core machine busy.
COMPILE_WORKERS = 2


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run: the full suite by default, `QUICK` for a smoke run."""

    repeats: int = 7
    budget_s: float = 1.0  # a timed function runs about this long at most
    methods: tuple[Method, ...] = ALL_METHODS
    save_times: int = 1000  # spiral
    batch: int = 16  # spiral initial conditions
    training_batch: int = 32
    training_methods: tuple[Method, ...] = (RCA, INTERPOLATING, QUADRATURE, DISCRETISE)
    sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    sweep_methods: tuple[Method, ...] = (RCA, INTERPOLATING, QUADRATURE)
    tolerances: tuple[float, ...] = (1e-4, 1e-6, 1e-8, 1e-10)
    precision_methods: tuple[Method, ...] = (RCA, INTERPOLATING, QUADRATURE)
    forward: bool = True  # time the loss alone too
    cross_check: bool = True  # the reference against jadjoint at its tolerance
    memory_methods: tuple[Method, ...] = (
        RCA,
        DIFFRAX_BACKSOLVE,
        INTERPOLATING,
        CHECKPOINTED,
        QUADRATURE,
        BACKSOLVE,
    )


QUICK = Config(
    repeats=3,
    budget_s=0.3,
    methods=(RCA, INTERPOLATING),
    save_times=100,
    batch=4,
    training_batch=4,
    training_methods=(RCA, INTERPOLATING),
    sizes=(32, 64),
    sweep_methods=(RCA, INTERPOLATING),
    tolerances=(1e-6, 1e-8),
    precision_methods=(INTERPOLATING,),
    forward=False,
    cross_check=False,
    memory_methods=(INTERPOLATING,),
)


def failure(error: Exception) -> str:
    """`failed: <reason>`: the message of the runtime error raised inside the
    compiled function (equinox's, wrapped in a callback traceback) if there is one,
    else the first line of the error's message; shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if "RuntimeError: " in line]
    if raised:
        reason = raised[-1].split("RuntimeError: ", 1)[1]
    else:
        reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return f"failed: {reason[:90]}"


class Built(NamedTuple):
    call: Callable | None
    compile_s: float
    memory: int  # bytes: temp + output
    error: str | None


def _compile(lowered):
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def compile_all(jobs: dict[Any, tuple[Callable, tuple]]) -> dict[Any, Built]:
    """Compile each `fn` of `{key: (fn, args)}` for its `args`: trace and lower in this
    thread, compile in `COMPILE_WORKERS` worker threads while the next is traced."""
    start_all = time.perf_counter()
    built, pending = {}, {}
    with ThreadPoolExecutor(max_workers=COMPILE_WORKERS) as pool:
        for key, (fn, args) in jobs.items():
            start = time.perf_counter()
            try:
                lowered = jax.jit(fn).lower(*args)
            except Exception as error:
                built[key] = Built(None, math.nan, 0, failure(error))
                continue
            pending[key] = time.perf_counter() - start, pool.submit(_compile, lowered)
        for key, (lower_s, future) in pending.items():
            try:
                compiled, compile_s = future.result()
            except Exception as error:
                built[key] = Built(None, math.nan, 0, failure(error))
                continue
            memory = compiled.memory_analysis()
            size = memory.temp_size_in_bytes + memory.output_size_in_bytes
            built[key] = Built(compiled, lower_s + compile_s, size, None)
    elapsed = time.perf_counter() - start_all
    print(f"(compiled {len(jobs)} functions in {elapsed:.0f} s)", file=sys.stderr)
    return built


class Measured(NamedTuple):
    value: Any
    seconds: float
    error: str | None


def measure(built: Built, args: tuple, config: Config) -> Measured:
    """The value of a first call, then the median time of up to `config.repeats` calls
    (as many as fit in `config.budget_s`); a first call slower than that is the
    time."""
    if built.error is not None:
        return Measured(None, math.nan, built.error)

    def call(args):
        return built.call(*args)

    try:
        start = time.perf_counter()
        value = jax.block_until_ready(call(args))
        first = time.perf_counter() - start
        repeats = min(config.repeats, int(config.budget_s / first))
        if repeats == 0:
            return Measured(value, first, None)
        return Measured(value, median_time(call, args, repeats, warmup=False), None)
    except Exception as error:
        return Measured(None, math.nan, failure(error))


def ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{1e3 * seconds:.2f}"


def ratio(a: float, b: float) -> str:
    return "—" if math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# The comparisons of all methods on one problem.


def batched(loss):
    """The loss summed over a batch of initial conditions (`x0s` rows), by `vmap`."""

    def total(p, x0s):
        return jnp.sum(jax.vmap(loss, in_axes=(None, 0))(p, x0s))

    return total


def comparison_jobs(tag, problem, methods, tol, args, config, wrap=None):
    """The gradient of each method and (unless `config` skips it) the forward of each
    library, keyed by `tag`."""
    wrap = wrap or (lambda loss: loss)
    jobs = {}
    for method in methods:
        loss = wrap(method.loss(problem, *tol))
        jobs[tag, "grad", method.label] = jax.grad(loss), args
    if config.forward:
        for library in dict.fromkeys(method.library for method in methods):
            loss = wrap(FORWARD[library].loss(problem, *tol))
            jobs[tag, "forward", library] = loss, args
    return jobs


def reference_jobs(tag, problem, tol, args, config):
    """The gradient of diffrax RCA at the reference tolerances `tol`, and that of
    jadjoint Interpolating to check it (unless `config` skips the check)."""
    methods = {"reference": RCA}
    if config.cross_check:
        methods["check"] = INTERPOLATING
    return {
        (tag, kind): (jax.grad(method.loss(problem, *tol)), args)
        for kind, method in methods.items()
    }


def reference_gradients(built, tag, p, x0s):
    """The reference gradient summed over initial conditions `x0s` (rows), and the
    relative gap of the check gradient from it (`None` without a check, or why the
    check failed)."""

    def total(kind):
        grads = [built[tag, kind].call(p, x0) for x0 in x0s]
        return jtu.tree_map(lambda *g: sum(g), *grads)

    reference = total("reference")
    if (tag, "check") not in built:
        return reference, None
    try:
        return reference, relative_error(total("check"), reference)
    except Exception as error:
        return reference, failure(error)


def comparison(built, tag, methods, args, reference, config):
    """The comparison table, and the measured gradients by method label."""
    libraries = dict.fromkeys(method.library for method in methods)
    libraries = [lib for lib in libraries if (tag, "forward", lib) in built]
    forward = {
        lib: measure(built[tag, "forward", lib], args, config) for lib in libraries
    }
    no_forward = Measured(None, math.nan, None)
    results = {
        m.label: measure(built[tag, "grad", m.label], args, config) for m in methods
    }
    baseline = results[RCA.label].seconds
    rows = []
    for method in methods:
        result = results[method.label]
        compile_s = f"{built[tag, 'grad', method.label].compile_s:.1f}"
        if result.error is not None:
            rows.append([method.label, "—", "—", "—", "—", compile_s, result.error])
            continue
        seconds = result.seconds
        fwd = forward.get(method.library, no_forward).seconds
        rows.append(
            [
                method.label,
                ms(seconds),
                ratio(seconds, baseline),
                ms(fwd),
                ratio(seconds, fwd),
                compile_s,
                f"{relative_error(result.value, reference):.1e}",
            ]
        )
    header = [
        "method",
        "gradient ms",
        "÷ RCA",
        "forward ms",
        "gradient ÷ forward",
        "compile s",
        "gradient rel. error",
    ]
    lines = table(header, rows)
    if libraries:
        compiles = ", ".join(
            f"{lib} {built[tag, 'forward', lib].compile_s:.1f} s" for lib in libraries
        )
        lines += ["", f"Forward (loss only) compile: {compiles}."]
    return lines, results


def reference_line(what: str, gap: float | str | None) -> str:
    if gap is None:
        return f"Reference: {what} (not cross-checked in this run)."
    gap = gap if isinstance(gap, str) else f"differs from it by {gap:.1e}"
    return (
        f"Reference: {what}. jadjoint InterpolatingAdjoint() at the same tolerance "
        f"{gap}."
    )


# The sections.

NON_STIFF = (1e-6, 1e-6)
TIGHT = (1e-12, 1e-12)


def lotka_volterra_section(config: Config) -> list[str]:
    problem, p, x0 = lotka_volterra()
    args = (p, x0)
    tight = dataclasses.replace(problem, max_steps=REFERENCE_MAX_STEPS)
    jobs = reference_jobs("lv", tight, TIGHT, args, config)
    jobs |= comparison_jobs("lv", problem, config.methods, NON_STIFF, args, config)
    for tol in config.tolerances:
        for method in config.precision_methods:
            key = "lv", "grad", method.label
            if tol != NON_STIFF[0] or key not in jobs:
                loss = method.loss(problem, tol, tol)
                jobs["precision", tol, method.label] = jax.grad(loss), args
    built = compile_all(jobs)
    reference, gap = reference_gradients(built, "lv", p, x0[None])
    lines = [
        "## Lotka–Volterra",
        "",
        "t ∈ [0, 20], x0 = (10, 5), loss ∫ (x1² + x2²) dt + Σ |x(tᵢ)|² over 100 "
        "observation times; gradient with respect to (a, b, c, d). Tsit5 (odeint: "
        "Dormand–Prince), rtol = atol = 1e-6.",
        "",
        reference_line("diffrax RCA, Tsit5, rtol = atol = 1e-12", gap),
        "",
    ]
    comparison_lines, results = comparison(
        built, "lv", config.methods, args, reference, config
    )
    lines += comparison_lines
    rows = []
    for tol in config.tolerances:
        row = [f"{tol:.0e}"]
        for method in config.precision_methods:
            if tol == NON_STIFF[0] and method.label in results:
                result = results[method.label]
            else:
                result = measure(built["precision", tol, method.label], args, config)
            error = result.error or f"{relative_error(result.value, reference):.1e}"
            row += [ms(result.seconds), error]
        rows.append(row)
    header = ["rtol = atol"]
    for method in config.precision_methods:
        header += [f"{method.short} ms", f"{method.short} error"]
    lines += [
        "",
        "## Work–precision (Lotka–Volterra)",
        "",
        "The same loss over tolerances: gradient time against gradient relative "
        "error (same reference).",
        "",
        *table(header, rows),
    ]
    return lines


def spiral_section(config: Config) -> list[str]:
    problem, p, x0 = neural_spiral(config.save_times)
    x0s = spiral_batch(config.batch)
    single, batch = (p, x0), (p, x0s)
    tight = dataclasses.replace(problem, max_steps=REFERENCE_MAX_STEPS)
    jobs = reference_jobs("spiral", tight, TIGHT, single, config)
    for tag, args, wrap in (("spiral", single, None), ("batch", batch, batched)):
        jobs |= comparison_jobs(
            tag, problem, config.methods, NON_STIFF, args, config, wrap
        )
    built = compile_all(jobs)
    reference, gap = reference_gradients(built, "spiral", p, x0[None])
    batch_reference, batch_gap = reference_gradients(built, "spiral", p, x0s)
    description = "diffrax RCA, Tsit5, rtol = atol = 1e-12"
    size = sum(leaf.size for leaf in jtu.tree_leaves(p))
    single_lines, _ = comparison(
        built, "spiral", config.methods, single, reference, config
    )
    batch_lines, _ = comparison(
        built, "batch", config.methods, batch, batch_reference, config
    )
    return [
        "## Neural ODE spiral",
        "",
        f"ẏ = MLP(y³), MLP 2 → 50 → 2 (tanh, {size} parameters), t ∈ [0, 25], loss "
        f"Σ |y(tᵢ)|² over {config.save_times} save times; gradient with respect to "
        "the MLP. Tsit5 (odeint: Dormand–Prince), rtol = atol = 1e-6.",
        "",
        "### One trajectory, y0 = (2, 0)",
        "",
        reference_line(description, gap),
        "",
        *single_lines,
        "",
        f"### A batch of {config.batch} initial conditions (radius 2): `jax.vmap` of "
        "the solve inside the loss, summed",
        "",
        reference_line(f"the sum over the batch of {description}", batch_gap),
        "",
        *batch_lines,
    ]


TRAINING = (1e-3, 1e-6)


def training_section(config: Config) -> list[str]:
    problem, p = training_mlp()
    x0s = training_batch(config.training_batch)
    args = (p, x0s)
    tight = dataclasses.replace(problem, max_steps=REFERENCE_MAX_STEPS)
    reference_loss = batched(RCA.loss(tight, *TIGHT))
    jobs = {("training", "reference"): (jax.grad(reference_loss), args)}
    methods = config.training_methods
    jobs |= comparison_jobs(
        "training", problem, methods, TRAINING, args, config, batched
    )
    built = compile_all(jobs)
    reference = built["training", "reference"].call(*args)
    size = sum(leaf.size for leaf in jtu.tree_leaves(p))
    lines, _ = comparison(built, "training", methods, args, reference, config)
    return [
        "## A batched neural-ODE training step",
        "",
        f"The workload of diffrax's neural-ODE example: ẏ = MLP(y), MLP 2 → 64 → 64 → "
        f"2 (softplus, {size} parameters), t ∈ [0, 10], a batch of "
        f"{config.training_batch} initial conditions in [−0.6, 1]² by `jax.vmap`, "
        "100 save times each; loss Σ |y(tᵢ)|² summed over the batch (the misfit to "
        "data has the same cotangents); gradient with respect to the MLP. Tsit5, "
        "rtol = 1e-3, atol = 1e-6. The optimiser's update, a few array operations, "
        "is left out.",
        "",
        "Reference: diffrax RCA, Tsit5, rtol = atol = 1e-12 (not cross-checked).",
        "",
        *lines,
    ]


def robertson_section(config: Config) -> list[str]:
    problem, p, y0 = robertson()
    args = (p, y0)
    rtol, atol = 1e-8, 1e-10
    reference_tol = 1e-11, 1e-13
    methods = tuple(method for method in config.methods if method is not ODEINT)
    # Newton's tolerance no tighter than rtol: with a tighter one (1e-12 at rtol
    # 1e-10) jadjoint's backward Kvaerno5 solve stalls and reaches max_steps.
    tight = dataclasses.replace(
        problem, solver=kvaerno5(1e-11), max_steps=REFERENCE_MAX_STEPS
    )
    jobs = reference_jobs("robertson", tight, reference_tol, args, config)
    jobs |= comparison_jobs("robertson", problem, methods, (rtol, atol), args, config)
    built = compile_all(jobs)
    reference, gap = reference_gradients(built, "robertson", p, y0[None])
    lines = [
        "## Stiff Robertson kinetics",
        "",
        "k = (0.04, 3e7, 1e4), y0 = (1, 0, 0), t ∈ [0, 100], loss 1e4 ∫ y2 dt; "
        "gradient with respect to log k. Kvaerno5 with a Newton root finder "
        f"(tolerance 1e-10), rtol = {rtol:.0e}, atol = {atol:.0e}, max_steps "
        f"{problem.max_steps}. No odeint (explicit only).",
        "",
        reference_line(
            "diffrax RCA, Kvaerno5 (Newton tolerance 1e-11), rtol = 1e-11, "
            "atol = 1e-13",
            gap,
        ),
        "",
    ]
    table_lines, _ = comparison(built, "robertson", methods, args, reference, config)
    return lines + table_lines


def size_sweep_section(config: Config) -> list[str]:
    tol = 1e-6
    setups = {n: fisher_kpp(n) for n in config.sizes}
    jobs = {
        (n, method.label): (jax.grad(method.loss(problem, tol, tol)), (k, u0))
        for n, (problem, k, u0) in setups.items()
        for method in config.sweep_methods
    }
    built = compile_all(jobs)
    others = [method for method in config.sweep_methods if method is not RCA]
    rows = []
    for n, (_, k, u0) in setups.items():
        results = {
            method.label: measure(built[n, method.label], (k, u0), config)
            for method in config.sweep_methods
        }
        baseline = results[RCA.label]
        row = [str(n), baseline.error or ms(baseline.seconds)]
        for method in others:
            result = results[method.label]
            if result.error is not None:
                row += [result.error, "—", "—"]
                continue
            gap = "—"
            if baseline.error is None:
                gap = f"{relative_error(result.value, baseline.value):.1e}"
            row += [ms(result.seconds), ratio(result.seconds, baseline.seconds), gap]
        rows.append(row)
    header = ["N", "RCA ms"]
    for method in others:
        header += [f"{method.short} ms", "÷ RCA", "vs RCA"]
    return [
        "## Size sweep: Fisher–KPP lattice",
        "",
        "N cells, u̇ᵢ = ½ (uᵢ₋₁ − 2uᵢ + uᵢ₊₁) + kᵢ uᵢ (1 − uᵢ) (zero flux at the ends), "
        "t ∈ [0, 10], loss ∫ mean(u²) dt; gradient with respect to the N growth rates "
        f"kᵢ. Tsit5, rtol = atol = {tol:.0e}, max_steps 4096 (both libraries' "
        "default); the forward solve takes about 20 steps. 'vs RCA': relative "
        "difference of the gradient from diffrax RCA's at the same tolerance.",
        "",
        *table(header, rows),
    ]


MEMORY_TOL = 1e-6
MEMORY_SPANS = (350.0, 35_000.0)  # ~1e3 and ~1e5 steps at MEMORY_TOL
MEMORY_PROBE_STEPS = 1_000_000


def forward_steps(t1):
    """The forward solve's number of steps on the oscillator over [0, t1]."""
    problem, p, x0 = oscillator(t1, MEMORY_PROBE_STEPS)
    solve = jadjoint_solve(problem, ja.InterpolatingAdjoint(), MEMORY_TOL, MEMORY_TOL)
    return solve(p, x0).stats["num_steps"]


MAX_STEPS_SWEEP = (4096, 65536)


def memory_section(config: Config) -> list[str]:
    steps_of = jax.jit(forward_steps)
    steps = [int(steps_of(t1)) for t1 in MEMORY_SPANS]
    setups = [oscillator(t1, 2 * n) for t1, n in zip(MEMORY_SPANS, steps, strict=True)]
    # The shorter solve again, at fixed steps, with `max_steps` raised.
    setups += [oscillator(MEMORY_SPANS[0], n) for n in MAX_STEPS_SWEEP]
    jobs = {
        (i, method.label): (
            jax.grad(method.loss(problem, MEMORY_TOL, MEMORY_TOL)),
            (p, x0),
        )
        for i, (problem, p, x0) in enumerate(setups)
        for method in config.memory_methods
    }
    built = compile_all(jobs)
    rows = []
    for method in config.memory_methods:
        row = [method.label]
        for small, large in ((0, 1), (2, 3)):
            small, large = built[small, method.label], built[large, method.label]
            if small.error or large.error:
                row += [small.error or "", large.error or "", "—"]
                continue
            row += [
                f"{small.memory / 1e6:.3f}",
                f"{large.memory / 1e6:.3f}",
                f"{large.memory / small.memory:.2f}",
            ]
        rows.append(row)
    header = [
        "method",
        f"MB, {steps[0]} steps",
        f"MB, {steps[1]} steps",
        "ratio",
        f"MB, max_steps {MAX_STEPS_SWEEP[0]}",
        f"MB, max_steps {MAX_STEPS_SWEEP[1]}",
        "ratio",
    ]
    return [
        "## Memory against the number of steps and against max_steps",
        "",
        "ẋ = (x2, −ω² x1 − ζ x2), ω = 1, ζ = 1e-4, x0 = (1, 0), loss ∫ x1² dt + "
        f"Σ |x(tᵢ)|² over 10 times, on [0, {MEMORY_SPANS[0]:g}] and "
        f"[0, {MEMORY_SPANS[1]:g}]: Tsit5 at rtol = atol = {MEMORY_TOL:.0e} takes the "
        "forward steps in the header, and every method gets max_steps = twice that; "
        f"then the solve on [0, {MEMORY_SPANS[0]:g}] again with max_steps "
        f"{MAX_STEPS_SWEEP[0]} and {MAX_STEPS_SWEEP[1]}. jadjoint's segmented "
        "methods keep ⌈max_steps / segment_steps⌉ restart rows and one segment's "
        "dense output; with max_steps over 4096, ⌈4096 / segment_steps⌉ thinned "
        "rows and a buffer for the segments of one row's span. Memory: temp + "
        "output bytes of the compiled gradient's "
        "`memory_analysis()` (XLA's buffer assignment; nothing is run).",
        "",
        *table(header, rows),
    ]


SECTIONS = (
    lotka_volterra_section,
    spiral_section,
    training_section,
    robertson_section,
    size_sweep_section,
    memory_section,
)


def main(quick: bool = False) -> None:
    config = QUICK if quick else Config()
    start = time.perf_counter()
    lines = [
        f"# Benchmark suite{' (--quick)' if quick else ''}",
        "",
        f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, diffrax "
        f"{diffrax.__version__}, jadjoint {ja.__version__}; float64, one thread; "
        f"medians of up to {config.repeats} repeats (fewer for calls over "
        f"{config.budget_s:g} s); times in ms, compile times in s.",
    ]
    print("\n".join(lines), flush=True)
    timings = []
    for section in SECTIONS:
        section_start = time.perf_counter()
        new = ["", *section(config)]
        timings.append(
            f"{section.__name__} {time.perf_counter() - section_start:.0f} s"
        )
        print("\n".join(new), flush=True)
        lines += new
    total = (
        f"Total run time: {time.perf_counter() - start:.0f} s ({', '.join(timings)})."
    )
    print(f"\n{total}")
    if not quick:
        RESULTS.write_text("\n".join([*lines, "", total]) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer methods, sizes and repeats; printed, not written",
    )
    main(parser.parse_args().quick)
