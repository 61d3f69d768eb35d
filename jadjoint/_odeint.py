"""`odeint`: `jax.experimental.ode.odeint`'s interface, solved by [`jadjoint.solve`][].

`func(y, t, *args)`, `t[0]` the initial time, the states at every `t` returned with
a leading axis; gradients with respect to `y0`, `args`, `t` and what `func` closes
over, by the continuous adjoint (the method of jax's own `odeint`: Chen, Rubanova,
Bettencourt & Duvenaud 2018), now with diffrax's solvers, stiff ones included.
"""

import math
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import ArrayLike, PyTree, Real

from ._adjoint import AbstractAdjointMethod, InterpolatingAdjoint
from ._differentiation_mode import under_forward_mode
from ._inputs import parameter_arrays, state_arrays
from ._problem import Problem
from ._solve import solve


def odeint(
    func: Callable,
    y0: PyTree,
    t: Real[ArrayLike, " N"],
    *args: PyTree,
    rtol: float = 1.4e-8,
    atol: float = 1.4e-8,
    mxstep: int = 4096,
    hmax: float = math.inf,
    solver: diffrax.AbstractSolver = diffrax.Dopri5(),
    adjoint: AbstractAdjointMethod = InterpolatingAdjoint(),
    throw: bool = True,
) -> PyTree:
    """Solve `dy/dt = func(y, t, *args)` from `y(t[0]) = y0` and return `y` at every
    time in `t`: a drop-in for `jax.experimental.ode.odeint`, with the same
    arguments, defaults and results, built on [`jadjoint.solve`][].

    **Arguments:**

    - `func`: `func(y, t, *args) -> dy/dt`, shaped like `y`.
    - `y0`: the initial state at `t[0]`: an array, a Python number or a pytree of
        them.
    - `t`: strictly increasing times; `t[0]` is the initial time.
    - `args`: further arguments of `func`: arrays, Python numbers or pytrees of
        them. Differentiable, as are `y0`, `t` and the arrays `func` closes over.
    - `rtol`, `atol`: the tolerances (forward and adjoint solves).
    - `mxstep`: the most steps the whole solve may take (jax's `odeint` counts them
        per interval of `t`). Exceeding it raises (with `throw`), where jax's
        `odeint` returns `inf`.
    - `hmax`: the longest step allowed.
    - `solver`: any diffrax solver; the default, `diffrax.Dopri5()`, is jax's
        Dormand–Prince 5(4). Pass `diffrax.Kvaerno5()` for a stiff problem.
    - `adjoint`: the adjoint method (see [`jadjoint.solve`][]).
    - `throw`: as for [`jadjoint.solve`][]: with `False` a failed solve gives NaN
        instead of raising.

    **Returns:** `y` at the times `t`, shaped like `y0` with a leading axis of
    `len(t)`; the first row is `y0`.
    """
    t = jnp.asarray(t)
    if t.ndim != 1 or not jnp.issubdtype(t.dtype, jnp.floating):
        raise TypeError(
            f"`t` must be a 1-D array of floating-point times, got {t.dtype} of shape "
            f"{t.shape}."
        )
    if not isinstance(mxstep, int) or mxstep < 1:
        raise ValueError(
            "`mxstep` must be a positive integer: the most steps of the whole solve "
            f"(jax's `odeint` default of inf is not supported), got {mxstep!r}."
        )
    y0, args = state_arrays(y0), parameter_arrays(args)
    if t.shape[0] == 1:
        return jtu.tree_map(lambda y: y[None], y0)
    converted, consts = jax.closure_convert(func, y0, t[0], *args)
    options = (rtol, atol, mxstep, None if math.isinf(hmax) else hmax)
    inputs = (converted, y0, t, (*args, *consts), options, solver, adjoint, throw)
    # Compiled once per closure-converted `func` (jax caches the conversion), as
    # jax's own `odeint` is; but traced inline under a forward-mode transformation,
    # which the solve must see to be differentiated to second order (see
    # `under_forward_mode`): `jax.jit(jax.hessian(F))` still compiles it.
    if under_forward_mode():
        return _odeint(*inputs)
    return _compiled_odeint(*inputs)


def _odeint(converted, y0, t, args, options, solver, adjoint, throw):
    rtol, atol, mxstep, hmax = options
    problem = Problem.explicit(lambda y, args, t: converted(y, t, *args))
    solution = solve(
        problem,
        args,
        t[0],
        t[-1],
        y0,
        saveat=t,
        adjoint=adjoint,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dtmax=hmax,
        max_steps=mxstep,
        throw=throw,
    )
    return solution.xs


_compiled_odeint = eqx.filter_jit(_odeint)
