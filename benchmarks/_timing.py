"""Timing shared by the benchmark scripts: medians after a warm-up (compile) call,
and measurements in a fresh process (compile times, which JAX's caches would hide
in a process that compiled before)."""

import json
import os
import statistics
import subprocess
import sys
import time

import jax


def median_time(fn, p, repeats: int, *, warmup: bool = True) -> float:
    """Median wall time of `fn(p)` over `repeats` calls, after one call to compile
    (skipped with `warmup=False`, for a function already compiled and run)."""
    if warmup:
        jax.block_until_ready(fn(p))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(p))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(functions: dict, argument, rounds: int) -> dict:
    """Median wall time (s) of each of `functions` at `argument`, the calls
    interleaved over `rounds` rounds, each function compiled and run once first."""
    for fn in functions.values():
        jax.block_until_ready(fn(argument))
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(argument))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def in_fresh_process(script: str, *arguments: str):
    """Run `python script --one *arguments` with one thread and return the JSON
    value its last line prints."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    out = subprocess.run(
        [sys.executable, script, "--one", *arguments],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
