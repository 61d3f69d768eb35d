"""Timing shared by the benchmark scripts: medians after a warm-up (compile) call."""

import statistics
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
