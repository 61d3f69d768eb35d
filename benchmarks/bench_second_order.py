"""Second derivatives: the cost of a Hessian-vector product against a gradient, and of
a full Hessian, for jadjoint and diffrax in the same run.

Problems (from `_problems.py`, same loss for every method): Lotka–Volterra (4
parameters, running cost and 100 observations) and the neural spiral (MLP 2→50→2,
202 parameters; 100 save times here, to keep the run short). For each method:

- gradient: `jax.grad` of the loss;
- HVP fwd-over-rev: `jax.jvp` of the gradient (`jadjoint.hvp`; for diffrax, through
  `DirectAdjoint`, the one diffrax adjoint differentiable forwards);
- HVP rev-over-rev: `jax.grad` of `⟨∇L, v⟩`;
- Hessian (Lotka–Volterra): `jax.hessian` (forward over reverse).

diffrax's `RecursiveCheckpointAdjoint` supports neither: its backward pass is a
`while_loop`, which JAX cannot reverse-differentiate, and its checkpointed loop
cannot be forward-differentiated; its row has the gradient only.

Median wall time after compiling (float64, one CPU thread), its ratio to the same
method's gradient, and the relative error of the HVP against diffrax `DirectAdjoint`
at rtol 1e-12. Tolerance rtol 1e-6, atol 1e-8 (the suite's).

Run: python benchmarks/bench_second_order.py [--repeats N]
"""

import argparse
import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
from _problems import (  # noqa: E402
    diffrax_loss,
    jadjoint_loss,
    lotka_volterra,
    neural_spiral,
    relative_error,
)
from _timing import median_time  # noqa: E402

import jadjoint as ja  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8


def products(loss):
    """The gradient and both Hessian-vector products of `loss(p)`, jitted."""
    gradient = jax.grad(loss)
    forward = lambda p, v: jax.jvp(gradient, (p,), (v,))[1]
    reverse = jax.grad(lambda p, v: jnp.vdot(*map(_flat, (gradient(p), v))))
    return jax.jit(gradient), jax.jit(forward), jax.jit(reverse)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jtu.tree_leaves(tree)])


def direction(p):
    keys = jax.random.split(jax.random.PRNGKey(1), len(jtu.tree_leaves(p)))
    leaves = [
        jax.random.normal(key, jnp.shape(leaf))
        for key, leaf in zip(keys, jtu.tree_leaves(p), strict=True)
    ]
    return jtu.tree_unflatten(jtu.tree_structure(p), leaves)


def run(name, problem, p, x0, repeats, hessian):
    v = direction(p)
    print(f"\n## {name}")
    reference_loss = diffrax_loss(problem, diffrax.DirectAdjoint(), 1e-12, 1e-12)
    reference = products(lambda p: reference_loss(p, x0))[1](p, v)
    methods = {
        "jadjoint InterpolatingAdjoint()": (
            jadjoint_loss(problem, ja.InterpolatingAdjoint(), RTOL, ATOL),
            True,
        ),
        "jadjoint QuadratureAdjoint()": (
            jadjoint_loss(problem, ja.QuadratureAdjoint(), RTOL, ATOL),
            True,
        ),
        "diffrax DirectAdjoint": (
            diffrax_loss(problem, diffrax.DirectAdjoint(), RTOL, ATOL),
            True,
        ),
        "diffrax RecursiveCheckpointAdjoint": (
            diffrax_loss(problem, diffrax.RecursiveCheckpointAdjoint(), RTOL, ATOL),
            False,
        ),
    }
    print(
        "| method | gradient ms | HVP fwd-over-rev ms (× gradient) "
        "| HVP rev-over-rev ms (× gradient) | HVP error |"
        + (" Hessian ms (× gradient) |" if hessian else "")
    )
    print("|---|---|---|---|---|" + ("---|" if hessian else ""))
    for label, (loss, second_order) in methods.items():
        of_p = lambda p, loss=loss: loss(p, x0)
        gradient, forward, reverse = products(of_p)
        t_grad = median_time(gradient, p, repeats)
        cells = [f"{1e3 * t_grad:.2f}"]
        if not second_order:
            unsupported = ["not supported"] * (4 if hessian else 3)
            print(f"| {label} | " + " | ".join(cells + unsupported) + " |")
            continue
        t_fwd = median_time(lambda p, fn=forward: fn(p, v), p, repeats)
        t_rev = median_time(lambda p, fn=reverse: fn(p, v), p, repeats)
        error = relative_error(forward(p, v), reference)
        cells += [
            f"{1e3 * t_fwd:.2f} ({t_fwd / t_grad:.1f}×)",
            f"{1e3 * t_rev:.2f} ({t_rev / t_grad:.1f}×)",
            f"{error:.1e}",
        ]
        if hessian:
            t_hess = median_time(jax.jit(jax.hessian(of_p)), p, repeats)
            cells.append(f"{1e3 * t_hess:.2f} ({t_hess / t_grad:.1f}×)")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main(repeats: int):
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"rtol {RTOL}, atol {ATOL}; medians of {repeats} calls")
    run("Lotka–Volterra (4 parameters)", *lotka_volterra(), repeats, hessian=True)
    run(
        "Neural spiral (MLP 2-50-2, 100 save times)",
        *neural_spiral(100),
        repeats,
        hessian=False,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
