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
    `throw`, NaN instead, so that the failure is not silent."""
    return checked_outcome(value, solve_failed, message, throw, RESULTS.successful)[0]


def checked_outcome(
    value: PyTree, solve_failed, message: str, throw: bool, failure: RESULTS
) -> tuple[PyTree, RESULTS]:
    """`checked_solve`'s value, and `failure` where the solve failed (else
    `successful`)."""
    failed = solve_failed | not_all_finite(value)
    if throw:
        value = eqx.error_if(value, failed, message)
    else:
        value = jtu.tree_map(lambda v: jnp.where(failed, jnp.nan, v), value)
    return value, failure_if(failed, failure)


def raise_if_failed(result: diffrax.RESULTS, value: PyTree) -> PyTree:
    """`value`, raising diffrax's message for `result` at run time if the solve
    failed. The solves run with diffrax's `throw=False` and raise here instead: with
    `throw=True` diffrax passes the whole solution, dense-output buffers of
    `max_steps` rows included, through a host callback, which made a forward solve
    with dense output 3× slower (64 states, `max_steps` 4096, CPU)."""
    return result.error_if(value, result != diffrax.RESULTS.successful)


def raise_or_nan(result: diffrax.RESULTS, value: PyTree, throw: bool) -> PyTree:
    """`value` from a solve whose outcome is `result`: if it failed, raising
    diffrax's message at run time (`throw`, `raise_if_failed`) or NaN."""
    if throw:
        return raise_if_failed(result, value)
    failed = result != diffrax.RESULTS.successful
    return jtu.tree_map(lambda v: jnp.where(failed, jnp.nan, v), value)


def check_finite_outputs(outputs: PyTree) -> PyTree:
    message = (
        "The forward solve produced a non-finite cost or state (NaN or inf): the "
        "solution may blow up on [t0, t1], or `f`, `h` may be undefined there."
    )
    return eqx.error_if(outputs, not_all_finite(outputs), message)


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
