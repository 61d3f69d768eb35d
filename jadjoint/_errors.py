"""Input checks, and the messages users see when an input is wrong.

Checks on shapes and structures run at trace time (`jax.eval_shape`, no FLOPs); checks
on values run eagerly when the values are concrete and, where they can only be known at
run time, through `eqx.error_if` so that they also work under `jit` and `vmap`.
"""

from collections.abc import Callable

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


def _describe(tree: PyTree) -> str:
    shapes = jtu.tree_map(lambda a: f"{jnp.dtype(a.dtype).name}{list(a.shape)}", tree)
    return str(shapes)


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


def _check_like(out: PyTree, like: PyTree, what: str, expected: str) -> None:
    out_struct = jtu.tree_structure(out)
    like_struct = jtu.tree_structure(like)
    shapes_match = out_struct == like_struct and all(
        o.shape == x.shape
        for o, x in zip(jtu.tree_leaves(out), jtu.tree_leaves(like), strict=True)
    )
    if not shapes_match:
        raise ValueError(
            f"{what} must return {expected}: expected {_describe(like)}, got "
            f"{_describe(out)}."
        )


def check_problem_outputs(problem, p: PyTree, t0, x0: PyTree) -> None:
    """Trace `f`, `h` (or `vector_field`) and `g` once on abstract inputs and check
    that each returns what the contract of [`jadjoint.Problem`][] says."""
    x = jax.eval_shape(lambda: x0)
    if problem.differential is not None:
        _check_pair(x0)
    elif problem.vector_field is not None:
        out = jax.eval_shape(problem.vector_field, x0, p, t0)
        _check_like(out, x, "`vector_field(x, p, t)`", "a pytree shaped like `x0`")
    else:
        out = jax.eval_shape(problem.h, x0, x0, p, t0)
        _check_like(out, x, "`h(x, xdot, p, t)`", "a residual shaped like `x0`")
    if problem.mass is not None:
        check_mass_matrix(problem.mass, x0, p, t0)
    if problem.f is not None:
        out = jax.eval_shape(problem.f, x0, p, t0)
        leaves = jtu.tree_leaves(out)
        if len(leaves) != 1 or leaves[0].shape != ():
            raise ValueError(
                f"`f(x, p, t)` must return a scalar, got {_describe(out)}. Sum the "
                "running cost with `jnp.sum` if it has several terms."
            )
    if problem.g is not None and not problem.is_dae:
        out = jax.eval_shape(problem.g, x0, p)
        _check_like(out, x, "`g(x0, p)`", "a residual shaped like `x0`")


def _check_pair(x0: PyTree) -> None:
    if not (isinstance(x0, (tuple, list)) and len(x0) == 2):
        raise ValueError(
            "`x0` of a `Problem.semi_explicit` DAE must be the pair `(y0, z0_guess)` "
            f"of differential and algebraic states, got {type(x0).__name__}."
        )


def check_dae_outputs(dae, x0: PyTree, p: PyTree, t0) -> None:
    """The parts of an index-1 DAE (`_dae.IndexOneDAE`) in its coordinates `(y, z)`:
    `a` shaped like `y`, `b` like `z`, `g` like `y`."""
    y, z = jax.eval_shape(dae.split, x0)
    out = jax.eval_shape(dae.a, y, z, p, t0)
    _check_like(out, y, "`a(y, z, p, t)`", "a rate shaped like `y`")
    out = jax.eval_shape(dae.b, y, z, p, t0)
    _check_like(out, z, "`b(y, z, p, t)`", "a residual shaped like `z`")
    if dae.g is not None:
        out = jax.eval_shape(dae.g, y, z, p)
        _check_like(
            out,
            y,
            "`g(x0, p)` of a DAE",
            "a residual for the differential part (shaped like `y0`; with a singular "
            "mass matrix, rank(M) components)",
        )


def check_mass_matrix(mass, x0: PyTree, p: PyTree, t0) -> None:
    """`M` (or `M(x, p, t)`) must be `n × n`, `n` the number of state components."""
    n = sum(int(np.prod(leaf.shape)) for leaf in jtu.tree_leaves(x0))
    out = jax.eval_shape(mass, x0, p, t0) if callable(mass) else mass
    if out.shape != (n, n):
        raise ValueError(
            f"The mass matrix `M` must have shape ({n}, {n}) for a state with {n} "
            f"components, got shape {out.shape}."
        )


def concrete_value(value) -> np.ndarray | None:
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


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


def check_inputs(problem, p, t0, t1, x0, saveat, dt0, adjoint, solver):
    """Every trace-time check of [`jadjoint.solve`][]'s arguments; returns `t0`, `t1`,
    the save times and `dt0` as arrays of one floating time dtype."""
    from ._methods import AbstractAdjointMethod
    from ._problem import Problem

    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a jadjoint.Problem, got {problem!r}.")
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
    saveat = None if saveat is None else jnp.asarray(saveat)
    time_dtype = jnp.result_type(t0, t1, float if saveat is None else saveat, float)
    t0 = jnp.asarray(t0, time_dtype)
    t1 = jnp.asarray(t1, time_dtype)
    ts = t1[None] if saveat is None else jnp.asarray(saveat, time_dtype)
    ts = check_saveat(ts, t0, t1)
    if dt0 is not None:
        dt0 = jnp.asarray(dt0, time_dtype)
    check_problem_outputs(problem, p, t0, x0)
    return t0, t1, ts, dt0


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


def check_finite_inputs(p: PyTree, x0: PyTree) -> PyTree:
    """`x0`, raising at run time if `p` or `x0` holds a NaN or an infinity."""
    bad = not_all_finite((eqx.filter(p, eqx.is_inexact_array), x0))
    return eqx.error_if(x0, bad, "`p` or `x0` contains NaN or inf.")


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
    """Checked at every evaluation: a NaN there would otherwise make the backward
    solve reject steps until `max_steps`, hiding the cause."""
    message = (
        "The adjoint ODE's right-hand side is non-finite (NaN or inf): `f` or `h` has "
        "a non-finite derivative along the solution, so the gradient would be "
        "non-finite."
    )
    return eqx.error_if(rates, not_all_finite(rates), message)


FORWARD_MODE = (
    "jadjoint.solve is differentiated in reverse mode: its derivative is the adjoint "
    "(a `custom_vjp`), so `jax.jvp` and `jax.jacfwd` of a function of its outputs "
    "are not supported; use `jax.grad`, `jax.vjp` or `jax.jacrev`. Second "
    "derivatives work forward over reverse (`jax.hessian(f)`, "
    "`jax.jvp(jax.grad(f), ...)`, `jadjoint.hvp(f, p, v)`) and reverse over reverse "
    "(`jax.jacrev(jax.grad(f))`). If this came from `jax.hessian` or `jadjoint.hvp` "
    "of a `jax.jit`-compiled function, apply `jax.jit` outside instead "
    "(`jax.jit(jax.hessian(f))`): a forward-mode transformation cannot be seen "
    "through a `jit` boundary."
)


def reverse_mode_only(fn: Callable, inputs: PyTree):
    """`fn(inputs)`, with the `TypeError` `FORWARD_MODE` in place of JAX's error when
    it is differentiated in forward mode (its derivative is a `custom_vjp`)."""
    try:
        return fn(inputs)
    except (TypeError, ValueError) as error:
        if is_forward_mode(error, inputs):
            raise TypeError(FORWARD_MODE) from error
        raise


def is_forward_mode(error: Exception, inputs: PyTree) -> bool:
    """Whether `error` came from forward-mode differentiation of the `custom_vjp`:
    JAX's own message, or any input being a forward-mode (JVP) tracer."""
    if "forward-mode autodiff" in str(error):
        return True
    jvp_tracer = jax.interpreters.ad.JVPTracer
    return any(isinstance(leaf, jvp_tracer) for leaf in jtu.tree_leaves(inputs))
