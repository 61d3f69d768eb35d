"""The checks of [`jadjoint.solve`][]'s arguments, run once per call.

Checks on shapes and structures run at trace time; checks on values run eagerly when
the values are concrete and otherwise at run time through `eqx.error_if`, so that
they also work under `jit` and `vmap`.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from ._adjoint import AbstractAdjointMethod
from ._errors import concrete_value, not_all_finite
from ._problem import Problem
from ._results import RESULTS, failure_if


def check_floating(tree: PyTree, name: str) -> None:
    """Every array leaf of `tree` must be a real floating-point array."""
    for leaf in jtu.tree_leaves(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"`{name}` must contain only real floating-point arrays, got a leaf of "
                f"dtype {dtype}. Convert it with `jnp.asarray(..., dtype=float)`."
            )


def check_parameters(p: PyTree) -> None:
    """Array leaves of `p` must be real: floating-point (differentiable) or integer
    and boolean (passed through, not differentiated)."""
    for leaf in jtu.tree_leaves(p):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            raise TypeError(
                "`p` must contain only real floating-point arrays (or integer ones, "
                f"which are not differentiated), got a leaf of dtype {leaf.dtype}."
            )


def check_interval(t0, t1) -> None:
    for name, t in (("t0", t0), ("t1", t1)):
        if jnp.shape(t) != ():
            raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(t)}.")
    a, b = concrete_value(t0), concrete_value(t1)
    if a is not None and b is not None and not b > a:
        raise ValueError(f"`t1` must be greater than `t0`, got t0={a}, t1={b}.")


def check_saveat(ts, t0, t1) -> jax.Array:
    """`ts` must be 1-D, strictly increasing and inside `[t0, t1]`; checked eagerly
    when concrete, otherwise at run time with `eqx.error_if`."""
    if jnp.ndim(ts) != 1 or jnp.shape(ts)[0] == 0:
        raise ValueError(
            f"`saveat` must be a non-empty 1-D array of times, got shape "
            f"{jnp.shape(ts)}."
        )
    message = (
        "`saveat` must be strictly increasing and lie inside [t0, t1]; "
        "sort it and drop duplicates with `jnp.unique`."
    )
    bad = jnp.any(jnp.diff(ts) <= 0) | (ts[0] < t0) | (ts[-1] > t1)
    concrete = concrete_value(bad)
    if concrete is not None:
        if concrete:
            raise ValueError(f"{message} Got {np.asarray(ts)}.")
        return ts
    return eqx.error_if(ts, bad, message)


def check_options(**options: Callable) -> None:
    for name, value in options.items():
        if value is not None and not isinstance(value, eqx.Module):
            raise TypeError(
                f"`{name}` must be an instance (e.g. `{name}=diffrax.Tsit5()`), got "
                f"{value!r}."
            )


def check_progress_meter(progress_meter) -> None:
    if not isinstance(progress_meter, diffrax.AbstractProgressMeter):
        raise TypeError(
            "`progress_meter` must be a diffrax progress meter such as "
            f"`diffrax.TqdmProgressMeter()`, got {progress_meter!r}."
        )


def check_auto_sharding(tree: PyTree) -> None:
    """Arrays sharded over a mesh must use its `Auto` axes: diffrax's and equinox's
    loops do not support JAX's explicit sharding (`AxisType.Explicit`, the default
    of `jax.make_mesh` since JAX 0.7), and would fail deep inside with a message
    about a missing mesh axis."""
    for leaf in jtu.tree_leaves(tree):
        sharding = getattr(jax.typeof(leaf), "sharding", None)
        axis_types = getattr(getattr(sharding, "mesh", None), "axis_types", ())
        if jax.sharding.AxisType.Explicit in axis_types:
            raise ValueError(
                "`p` or `x0` is sharded over a mesh with explicit axes "
                f"({sharding}); jadjoint.solve needs automatic sharding: build the "
                "mesh with `jax.make_mesh(shape, names, axis_types=(jax.sharding."
                "AxisType.Auto,) * len(shape))`."
            )


def check_max_step(dtmax) -> None:
    if dtmax is None:
        return
    value = concrete_value(dtmax)
    if jnp.shape(dtmax) != () or (value is not None and not value > 0):
        raise ValueError(f"`dtmax` must be a positive scalar or None, got {dtmax}.")


def check_max_events(max_events) -> None:
    if (
        isinstance(max_events, bool)
        or not isinstance(max_events, int)
        or max_events < 1
    ):
        raise ValueError(
            f"`max_events` must be a positive Python int, got {max_events!r}."
        )


def check_problem(problem) -> None:
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a jadjoint.Problem, got {problem!r}.")


def check_inputs(problem, p, t0, t1, x0, saveat, dt0, adjoint, solver):
    """Every trace-time check of [`jadjoint.solve`][]'s arguments; returns `t0`, `t1`,
    the save times and `dt0` as arrays of one floating time dtype: that of the times
    and the state together, under JAX's promotion, so that Python numbers as times
    take the state's precision (a float32 state under `jax_enable_x64` keeps float32
    times). `problem` has been checked by `check_problem`."""
    if not isinstance(adjoint, AbstractAdjointMethod):
        raise TypeError(
            "`adjoint` must be a jadjoint adjoint method such as "
            f"`jadjoint.InterpolatingAdjoint()`, got {adjoint!r}."
        )
    check_options(solver=solver)
    check_parameters(p)
    check_floating(x0, "x0")
    check_auto_sharding((p, x0))
    check_interval(t0, t1)
    # Save times given as Python numbers are weakly typed, as `t0` and `t1` are.
    saveat_dtype = getattr(saveat, "dtype", float)
    saveat = None if saveat is None else jnp.asarray(saveat)
    time_dtype = jnp.result_type(t0, t1, saveat_dtype, float, *jtu.tree_leaves(x0))
    t0 = jnp.asarray(t0, time_dtype)
    t1 = jnp.asarray(t1, time_dtype)
    ts = t1[None] if saveat is None else jnp.asarray(saveat, time_dtype)
    ts = check_saveat(ts, t0, t1)
    if dt0 is not None:
        dt0 = jnp.asarray(dt0, time_dtype)
    problem.check_outputs(p, t0, x0)
    return t0, t1, ts, dt0


def finite_inputs(p: PyTree, x0: PyTree) -> RESULTS:
    """`nonfinite_parameters` if `p` or `x0` holds a NaN or an infinity, else
    `successful` (a run-time check, reported through the solve's result)."""
    bad = not_all_finite((eqx.filter(p, eqx.is_inexact_array), x0))
    return failure_if(bad, RESULTS.nonfinite_parameters)
