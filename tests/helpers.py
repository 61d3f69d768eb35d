"""Independent references for the tests: closed forms live in the tests; here are
central finite differences and diffrax's discretise-then-optimise gradient."""

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jadjoint as ja


def central_difference(fun, x, step=1e-5):
    """Gradient of the scalar `fun` at the pytree `x` by central differences, with a
    step relative to each component's size (float64: truncation error ~ step²)."""
    flat, unravel = ravel_pytree(x)
    flat = np.asarray(flat)
    grad = np.zeros_like(flat)
    for i in range(flat.size):
        h = step * max(1.0, abs(flat[i]))
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (fun(unravel(jnp.asarray(up))) - fun(unravel(jnp.asarray(down)))) / (
            2 * h
        )
    return unravel(jnp.asarray(grad))


def max_relative_error(actual, expected):
    """max |a − e| / max |e| over each leaf, then over leaves."""
    errors = jtu.tree_map(
        lambda a, e: float(jnp.max(jnp.abs(a - e)) / jnp.max(jnp.abs(e))),
        actual,
        expected,
    )
    return max(jtu.tree_leaves(errors))


def reference_solve(
    vector_field, f, p, t0, t1, x0, ts, tol=1e-10, atol=None, solver=diffrax.Tsit5()
):
    """`(∫ f dt, x(ts))` by diffrax, differentiated by `RecursiveCheckpointAdjoint`
    (discretise-then-optimise: exact derivative of the discrete solve)."""

    def rates(t, y, args):
        x, _ = y
        cost_rate = 0.0 if f is None else f(x, p, t)
        return vector_field(x, p, t), jnp.asarray(cost_rate, float)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(rates),
        solver,
        t0,
        t1,
        None,
        (x0, jnp.zeros(())),
        saveat=diffrax.SaveAt(ts=ts, t1=True),
        stepsize_controller=diffrax.PIDController(
            rtol=tol, atol=tol if atol is None else atol
        ),
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
        max_steps=100_000,
    )
    xs, costs = solution.ys
    return costs[-1], jtu.tree_map(lambda a: a[:-1], xs)


ADJOINTS = pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(),
        ja.InterpolatingAdjoint(segment_steps=8),
        ja.BacksolveAdjoint(),
    ],
    ids=["interpolating", "segmented", "backsolve"],
)

# Every method, for the tests that every method must pass without re-running the
# whole parametrised suite (QuadratureAdjoint on the reference problems).
ALL_ADJOINTS = pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(),
        ja.InterpolatingAdjoint(segment_steps=8),
        ja.BacksolveAdjoint(),
        ja.QuadratureAdjoint(),
    ],
    ids=["interpolating", "segmented", "backsolve", "quadrature"],
)
