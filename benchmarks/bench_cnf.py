"""A continuous normalising flow (FFJORD-style) trained through jadjoint and diffrax.

Two-moons data in 2-D (noise 0.05), a batch of 256 points under `vmap`; each point
`x` flows forward as `ż = f(z, t)` with `z(0) = x` on `[0, 1]`, where `f` is an MLP
3 → 64 → 64 → 2 (`tanh`, `t` concatenated to `z`), and its log-density change
`ℓ̇ = tr ∂f/∂z` rides along (the exact trace of the 2 × 2 Jacobian, by `jax.jacfwd`):

    log p(x) = log N(z(1); 0, I) + ℓ(1),     loss = −mean log p(x).

Only the final state enters the loss. Tsit5, rtol = atol = 1e-3. Reported: the
gradient of the loss (one training step's work) by jadjoint's `InterpolatingAdjoint`
(by default, and with `recompute_stages=True`) and diffrax's
`RecursiveCheckpointAdjoint`, in float32 and float64: medians over calls
interleaved in one process after compiling, one thread; the range of the ratio over
the calls' rounds; each method's compile time (the first call, lowering and
compiling, after a warm-up compilation of every method on a batch of 8, which takes
the process's one-off costs out); and each gradient's relative difference to RCA's.
Results in
`benchmarks/results/cnf_cpu.md`.

Run: python benchmarks/bench_cnf.py [--repeats N]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
from _problems import relative_error  # noqa: E402

import jadjoint as ja  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "cnf_cpu.md"
BATCH = 256
WIDTH = 64
TOL = 1e-3


def two_moons(key, n: int):
    """`n` points of the two interleaved half circles, Gaussian noise 0.05."""
    angle_key, side_key, noise_key = jax.random.split(key, 3)
    angle = jax.random.uniform(angle_key, (n,)) * jnp.pi
    upper = jax.random.bernoulli(side_key, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(angle), 1 - jnp.cos(angle))
    y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
    points = jnp.stack([x, y], axis=-1) + 0.05 * jax.random.normal(noise_key, (n, 2))
    return points - jnp.array([0.5, 0.25])


def init_mlp(key):
    sizes = [(3, WIDTH), (WIDTH, WIDTH), (WIDTH, 2)]
    keys = jax.random.split(key, len(sizes))
    return [
        (jax.random.normal(k, shape) / jnp.sqrt(shape[0]), jnp.zeros(shape[1]))
        for k, shape in zip(keys, sizes, strict=True)
    ]


def velocity(z, params, t):
    h = jnp.concatenate([z, jnp.reshape(t, (1,)).astype(z.dtype)])
    for weight, bias in params[:-1]:
        h = jnp.tanh(h @ weight + bias)
    weight, bias = params[-1]
    return h @ weight + bias


def flow(state, params, t):
    """`(ż, ℓ̇)`: the velocity and the exact trace of its Jacobian."""
    z, _ = state
    jacobian = jax.jacfwd(velocity)(z, params, t)
    return velocity(z, params, t), jnp.trace(jacobian)


def log_likelihood(z, change):
    return -0.5 * jnp.sum(z**2) - jnp.log(2 * jnp.pi) + change


PROBLEM = ja.Problem.explicit(flow)


def jadjoint_point(adjoint):
    def point(params, x):
        t0, t1 = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
        y0 = (x, jnp.zeros((), x.dtype))
        solution = ja.solve(
            PROBLEM, params, t0, t1, y0, adjoint=adjoint, rtol=TOL, atol=TOL
        )
        z, change = solution.xs
        return log_likelihood(z[-1], change[-1])

    return point


def diffrax_point(params, x):
    # Times of the state's dtype: diffrax widens the state to its times' dtype.
    t0, t1 = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, params: flow(y, params, t)),
        diffrax.Tsit5(),
        t0,
        t1,
        None,
        (x, jnp.zeros((), x.dtype)),
        args=params,
        stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
    )
    z, change = solution.ys
    return log_likelihood(z[-1], change[-1])


def gradient(point):
    def loss(params, xs):
        return -jnp.mean(jax.vmap(point, in_axes=(None, 0))(params, xs))

    return jax.jit(jax.grad(loss))


JADJOINT = {
    "jadjoint Interpolating": ja.InterpolatingAdjoint(),
    "jadjoint Interpolating, recompute_stages": ja.InterpolatingAdjoint(
        recompute_stages=True
    ),
}


def measure(dtype, repeats: int, batch: int = BATCH) -> list[str]:
    key = jax.random.PRNGKey(0)
    params = jtu.tree_map(lambda a: a.astype(dtype), init_mlp(key))
    xs = two_moons(jax.random.PRNGKey(1), batch).astype(dtype)
    methods = {
        label: gradient(jadjoint_point(adjoint)) for label, adjoint in JADJOINT.items()
    }
    methods["diffrax RCA"] = gradient(diffrax_point)
    compile_seconds, grads = {}, {}
    for label, fn in methods.items():
        start = time.perf_counter()
        grads[label] = jax.block_until_ready(fn(params, xs))
        compile_seconds[label] = time.perf_counter() - start
    times = {label: [] for label in methods}
    for _ in range(repeats):
        for label, fn in methods.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params, xs))
            times[label].append(time.perf_counter() - start)
    rca_times, rca_compile = times["diffrax RCA"], compile_seconds["diffrax RCA"]
    rca_median = statistics.median(rca_times)
    name = jnp.dtype(dtype).name
    lines = []
    for label in methods:
        ratios = [a / b for a, b in zip(times[label], rca_times, strict=True)]
        median = statistics.median(times[label])
        gap = relative_error(grads[label], grads["diffrax RCA"])
        lines.append(
            f"| {name} | {label} | {1e3 * median:.1f} | {median / rca_median:.2f}× "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {compile_seconds[label]:.1f} | "
            f"{compile_seconds[label] / rca_compile:.2f}× | {gap:.1e} |"
        )
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    lines = [
        "## Continuous normalising flow (`benchmarks/bench_cnf.py`)",
        "",
        f"Gradient of the negative log-likelihood of a batch of {BATCH} two-moons "
        f"points under `vmap`, MLP 3→{WIDTH}→{WIDTH}→2, exact trace, Tsit5 at rtol = "
        f"atol = {TOL:.0e}, only the final state in the loss. One thread; medians of "
        f"{args.repeats} interleaved calls (the ratio's range over the rounds); "
        "compile time: the first call, after a warm-up compilation of a batch "
        "of 8. 'gap': relative difference to RCA's gradient.",
        "",
        "| dtype | method | ms | ÷ RCA | compile s | ÷ RCA | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    # The first compilation in a process pays for what every later one shares
    # (tracing caches); a small batch, compiled apart, takes that out of the table.
    measure(jnp.float32, repeats=1, batch=8)
    for dtype in (jnp.float32, jnp.float64):
        lines += measure(dtype, args.repeats)
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
