"""Compile time of the stiff gradients of `bench_stiff.py`: jadjoint's BDF (by its
continuous adjoint and through its steps) and Kvaerno5 against diffrax's
`RecursiveCheckpointAdjoint` with Kvaerno5, on Robertson with the integral cost and
with 40 saved states.

Trace + lower + compile of the jitted gradient, each in a fresh Python process with
one thread (JAX's caches would hide every later compile), the processes interleaved
over the repeats; medians (range) in seconds, and the ratio to RCA.

Run: python benchmarks/bench_stiff_compile.py [--repeats N]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _timing import in_fresh_process

METHODS = {
    "jadjoint BDF": "bdf",
    "jadjoint BDF, DiscretiseThenOptimise": "bdf-discretise",
    "jadjoint Kvaerno5": "kvaerno5",
    "diffrax RCA + Kvaerno5": "rca",
}
KINDS = {"1e4 ∫ y2 dt": "cost", "40 saved states": "observations"}


def measure_one(method: str, kind: str) -> float:
    """In this (fresh) process: the seconds to lower and compile the gradient."""
    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_stiff
    from _problems import kvaerno5

    import jadjoint as ja

    gradients = {
        "bdf": lambda: bench_stiff.jadjoint_gradient(ja.BDF(), kind),
        "bdf-discretise": lambda: bench_stiff.jadjoint_gradient(
            ja.BDF(), kind, "ode", ja.DiscretiseThenOptimise()
        ),
        "kvaerno5": lambda: bench_stiff.jadjoint_gradient(kvaerno5(1e-10), kind),
        "rca": lambda: bench_stiff.diffrax_gradient(kind),
    }
    gradient = gradients[method]()
    start = time.perf_counter()
    gradient.lower(bench_stiff.LOG_K).compile()
    return time.perf_counter() - start


def main(repeats: int) -> None:
    print("| method | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    runs = {(m, k): [] for m in METHODS.values() for k in KINDS.values()}
    for _ in range(repeats):
        for method in METHODS.values():
            for kind in KINDS.values():
                runs[method, kind].append(in_fresh_process(__file__, method, kind))
    medians = {key: statistics.median(times) for key, times in runs.items()}
    for name, method in METHODS.items():
        cells = []
        for kind in KINDS.values():
            times = runs[method, kind]
            ratio = medians[method, kind] / medians["rca", kind]
            cells.append(
                f"{medians[method, kind]:.1f} ({min(times):.1f}–{max(times):.1f}), "
                f"{ratio:.2f}×"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one)))
    else:
        main(args.repeats)
