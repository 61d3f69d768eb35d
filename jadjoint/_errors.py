"""The checks every module shares, and the messages users see when they fail.

Checks on shapes and structures run at trace time (`jax.eval_shape`, no FLOPs); checks
on values run eagerly when the values are concrete and, where they can only be known at
run time, through `eqx.error_if` so that they also work under `jit` and `vmap`. The
checks of `solve`'s arguments are in `_validation.py`; each problem form checks its
own functions' outputs (`jadjoint/_problem/`).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from ._results import RESULTS, failure_if


def check_callable(fn, name: str, *, optional: bool = False) -> None:
    if fn is None and optional:
        return
    if not callable(fn):
        raise TypeError(f"`{name}` must be a callable, got {type(fn).__name__}.")


def describe(tree: PyTree) -> str:
    """The dtypes and shapes of `tree`'s leaves, for a message."""
    shapes = jtu.tree_map(lambda a: f"{jnp.dtype(a.dtype).name}{list(a.shape)}", tree)
    return str(shapes)


def check_like(out: PyTree, like: PyTree, what: str, expected: str) -> None:
    """`out` (abstract) must have the structure and shapes of `like`."""
    out_struct = jtu.tree_structure(out)
    like_struct = jtu.tree_structure(like)
    shapes_match = out_struct == like_struct and all(
        o.shape == x.shape
        for o, x in zip(jtu.tree_leaves(out), jtu.tree_leaves(like), strict=True)
    )
    if not shapes_match:
        raise ValueError(
            f"{what} must return {expected}: expected {describe(like)}, got "
            f"{describe(out)}."
        )


def check_returns_like_state(fn, args: tuple, x0: PyTree, what: str, expected: str):
    """`fn(*args)`, traced abstractly, must be shaped like the state `x0`."""
    check_like(jax.eval_shape(fn, *args), jax.eval_shape(lambda: x0), what, expected)


def concrete_value(value) -> np.ndarray | None:
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def not_all_finite(tree: PyTree):
    """Whether any leaf of `tree` holds a NaN or an infinity (traceable)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(tree)]
    return jnp.logical_not(jnp.all(jnp.stack(leaves))) if leaves else False


def checked_solve(value: PyTree, solve_failed, message: str, throw: bool) -> PyTree:
    """`value`, raising `message` at run time if the solve that gave it failed or it
    is not finite (an LU of a singular matrix "succeeds" with infinities). Without
    `throw`, NaN instead, so that the failure is not silent. For solves with no
    result to report to (inside the vector field that diffrax integrates)."""
    failed = solve_failed | not_all_finite(value)
    if throw:
        return eqx.error_if(value, failed, message)
    return jtu.tree_map(lambda v: jnp.where(failed, jnp.nan, v), value)


def outcome(value: PyTree, solve_failed, failure: RESULTS) -> RESULTS:
    """`failure` if the solve that gave `value` failed or `value` is not finite,
    else `successful`."""
    return failure_if(solve_failed | not_all_finite(value), failure)


def raise_failure(result: RESULTS, value: PyTree) -> PyTree:
    """`value`, raising `result`'s message at run time if it is a failure. `result`
    may come out of a differentiated computation (the solve's outputs): it is
    held constant, as `error_if` has no derivative rule for its index."""
    result = jtu.tree_map(jax.lax.stop_gradient, result)
    return result.error_if(value, result != RESULTS.successful)


def raise_or_nan(result: diffrax.RESULTS, value: PyTree, throw: bool) -> PyTree:
    """`value` from a solve of the backward pass (which has no result channel) whose
    outcome is `result`: if it failed, raising diffrax's message at run time
    (`throw`) or NaN. The solves run with diffrax's `throw=False` and raise here
    instead: with `throw=True` diffrax passes the whole solution, dense-output
    buffers of `max_steps` rows included, through a host callback, which made a
    solve with dense output 3× slower (64 states, `max_steps` 4096, CPU)."""
    failed = result != diffrax.RESULTS.successful
    if throw:
        return result.error_if(value, failed)
    return jtu.tree_map(lambda v: jnp.where(failed, jnp.nan, v), value)


def check_finite_gradients(gradients: PyTree) -> PyTree:
    message = (
        "The adjoint solve produced a non-finite gradient (NaN or inf). Check the "
        "cotangents, and whether `f`, `h` are differentiable along the solution."
    )
    return eqx.error_if(gradients, not_all_finite(gradients), message)


def check_finite_adjoint_rates(rates: PyTree) -> PyTree:
    """`ẇ`, checked at every evaluation: a NaN there would otherwise make the
    backward solve reject steps until `max_steps`, hiding the cause."""
    message = (
        "The adjoint ODE's right-hand side is non-finite (NaN or inf): `f` or `h` has "
        "a non-finite derivative along the solution, so the gradient would be "
        "non-finite."
    )
    return eqx.error_if(rates, not_all_finite(rates), message)
