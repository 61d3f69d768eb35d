"""The backward solves of the adjoint over a segment, on diffrax, and the adjoint's
rates along a forward dense interpolation: the backward pass of solvers other than
explicit Runge–Kutta ones, whose forward steps `_along_steps.py` follows.

A segment is integrated by one diffrax solve per interval between the save times
inside it, `w` jumping at each (`_jumps.py`); the step size is carried from one
solve to the next.
"""

import abc
import functools
from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._differentiation_mode import inner_adjoint, loop_kind
from .._errors import raise_or_nan
from .._forward import Segments
from .._numerics import dense_output, gauss_legendre, over_batches
from .._options import Options
from .._solvers import applied
from ._integrator import AbstractBackwardIntegrator
from ._jumps import SavedCotangents
from ._system import AdjointSystem


def unpreconditioned(preconditioner, t, y, args, c):
    """No preconditioning: a solve whose state the preconditioner does not see."""
    return None


def solve_backwards(
    rates,
    y_right: PyTree,
    *,
    t_right,
    t_left,
    dt0,
    args,
    options: Options,
    linear: bool,
    carries_q: bool = True,
    dense: bool = False,
    approximate_inverse: Callable = unpreconditioned,
):
    """`y(t_left)` from `y(t_right)`, `t_left ≤ t_right`, by one diffrax solve in
    reversed time, and the number of accepted steps; with `dense`, also the diffrax
    solution (of the flat state) and the function that unflattens its values. A
    failed solve that does not raise (`throw=False`) gives NaN.

    With `carries_q`, `y` is a tuple ending with the parameter integral `q`, which the
    error control ignores. `linear`: `rates` is affine in `y` (the adjoint with
    `x(t)` read from the forward solution), so an implicit solver's stages are one
    linear solve each (`Options.configured_solver`). diffrax steps a flat copy of
    `y`: a Runge–Kutta step then costs a few array operations, not a few per leaf
    of `y` (a neural network's parameters in `q` have many leaves, and on CPU each
    operation in the loop carries a fixed cost). `approximate_inverse`: how a
    BDF's preconditioner applies (`BDF.with_tolerances`; by default not at all)."""
    flat_right, unravel = jax.flatten_util.ravel_pytree(y_right)
    controlled = None
    if carries_q:
        controlled = (
            flat_right.size - jax.flatten_util.ravel_pytree(y_right[-1])[0].size
        )

    def flat_rates(t, y, args):
        return jax.flatten_util.ravel_pytree(rates(t, unravel(y), args))[0]

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(flat_rates),
        options.configured_solver(
            controlled,
            linear=linear,
            approximate_inverse=approximate_inverse,
        ),
        t_right,
        t_left,
        -dt0,
        flat_right,
        args=args,
        saveat=diffrax.SaveAt(t1=True, dense=dense),
        stepsize_controller=options.controller(controlled),
        max_steps=options.max_steps,
        adjoint=inner_adjoint(),
        throw=False,
        progress_meter=options.progress_meter,
    )
    flat_left = solution.ys[-1]
    y_left = unravel(raise_or_nan(solution.result, flat_left, options.throw))
    steps = solution.stats["num_accepted_steps"]
    if not dense:
        return y_left, steps
    return y_left, steps, solution, unravel


def adjoint_preconditioning(preconditioner, t, y, args, c):
    """A BDF's preconditioner in the backward solves that read `x(t)` from the
    forward dense output (`args = (system, dense)`), on flat `w`: the adjoint's
    iteration matrix is `(I − c ∂ẋ/∂x)ᵀ` at `x(t)` (time runs backwards, so the
    solve's `t` is `−t`), so `Pᵀ` with `P = preconditioner(x(t), p, t, c)`."""
    system, dense = args
    t = -t
    x = dense_output.evaluate(dense, t)[0]
    operator = preconditioner(x, system.bound().p, t, c)
    return applied(operator, x, transposed=True)


def next_step_guess(dt, length, steps):
    """The backward step size carried into the next solve: the mean accepted step
    of this one when it took several; when it took one, that step was accepted, so the
    guess is at least the length solved over."""
    several = length / jnp.maximum(steps, 1)
    return jnp.where(steps >= 2, several, jnp.maximum(dt, length))


def solve_across_saves(
    solve: Callable, y: tuple, *, w_at: int, cotangents: SavedCotangents, segment, dt0
):
    """`y(t_left)` from `y(t_right)` over `segment = [t_left, t_right]`, and the
    number of accepted steps: one `solve(y, *, t_right, t_left, dt0) -> (y, steps)` per
    interval between the save times in `(t_left, t_right]`, and the jump of
    `w = y[w_at]` at each save time where a solve arrives. A save time at `t_right`
    is jumped at before any solve; one at `t_left` belongs to the next segment to
    the left.

    The loop runs once per save time inside and once more to `t_left` (a solve of
    zero length where a save time sits on `t_right`); its kind follows the
    differentiation mode, as in `_sweep.py`."""
    t_left, t_right = segment.t_left, segment.t_right
    first, end = cotangents.inside(t_left, t_right)

    def body(carry):
        i, t, y, dt, steps = carry
        saves = i >= first
        t_to = jnp.where(saves, cotangents.ts[jnp.maximum(i, 0)], t_left)
        y, taken = solve(y, t_right=t, t_left=t_to, dt0=dt)
        w = cotangents.jump(y[w_at], jnp.maximum(i, 0))
        w = jtu.tree_map(lambda a, b: jnp.where(saves, a, b), w, y[w_at])
        y = (*y[:w_at], w, *y[w_at + 1 :])
        dt = jnp.where(taken > 0, next_step_guess(dt, t - t_to, taken), dt)
        return i - 1, t_to, y, dt, steps + taken

    def cond(carry):
        i, t, *_ = carry
        return (i >= first) | (t > t_left)

    if cotangents.xbar is None:
        return solve(y, t_right=t_right, t_left=t_left, dt0=dt0)
    _, _, y, _, steps = eqxi.while_loop(
        cond,
        body,
        (end - 1, t_right, y, dt0, jnp.zeros((), jnp.int32)),
        max_steps=cotangents.ts.shape[0] + 1,
        kind=loop_kind(),
    )
    return y, steps


def rates_along(
    system: AdjointSystem, interpolation: diffrax.DenseInterpolation, w: PyTree, t
):
    """`(ẋ, ẇ, q̇)` at `t` with `x(t)` from the forward dense `interpolation` (its
    derivative starts Newton for an implicit `h`)."""
    x = dense_output.evaluate(interpolation, t)[0]
    guess = lambda: dense_output.derivative(interpolation, t)[0]
    return system.rates(x, w, t, guess)


STEPS_PER_BATCH = 16


def _integral_over_steps(system, dense, backward, unravel, nodes: int) -> PyTree:
    """`∫ q̇ dt` over the backward solve's accepted steps, by `nodes`-point
    Gauss–Legendre quadrature on each step (exact for polynomials of degree
    `2 nodes − 1`), with `w` from the backward dense output. The solve ends at the
    jumps of `w`, so `w` is smooth on each step. The steps are taken
    `STEPS_PER_BATCH` at a time, all their nodes through one vmapped VJP."""
    fractions, weights = gauss_legendre(nodes)
    interpolation = backward.interpolation
    step_times = interpolation.ts * interpolation.direction

    def qdot(t):
        return rates_along(system, dense, unravel(backward.evaluate(t)), t)[2]

    def batch(k, real, total):
        k = jnp.where(real, k, 0)
        a, b = step_times[k][:, None], step_times[k + 1][:, None]
        ts = (a + (b - a) * fractions).reshape(-1)
        scale = jnp.abs(b - a) * jnp.asarray(weights, step_times.dtype)
        scale = jnp.where(real[:, None], scale, 0).reshape(-1)
        values = jax.vmap(qdot)(ts)
        return jtu.tree_map(
            lambda s, v: s + jnp.tensordot(scale, v, axes=1), total, values
        )

    zero = jtu.tree_map(jnp.zeros_like, system.diff)
    steps = interpolation.ts_size - 1
    return over_batches(batch, zero, steps, step_times.shape[0] - 1, STEPS_PER_BATCH)


class AbstractIntervalSolve(eqx.Module):
    """How a diffrax solve between two save times carries `(w, q)`, and where it
    reads `x(t)`: the backward state `y` (with `w = y[w_at]`), built from `(w, q)`
    at a segment's right end and read back at its left."""

    w_at: ClassVar[int] = 0

    def start(self, segment: Segments, w: PyTree, q: PyTree) -> tuple:
        return (w, q)

    def end(self, y: tuple) -> tuple[PyTree, PyTree]:
        return y

    @abc.abstractmethod
    def solve(
        self, system, dense, y: tuple, *, t_right, t_left, dt0, options
    ) -> tuple[tuple, Array]:
        """`y(t_left)` from `y(t_right)` by one diffrax solve (`solve_backwards`,
        which takes the keywords), and its number of accepted steps."""


def _carried_rates(t, y, args):
    system, dense = args
    w, _ = y
    _, wdot, qdot = rates_along(system, dense, w, t)
    return wdot, qdot


def _w_rates(t, w, args):
    return rates_along(*args, w, t)[1]


def _reintegrated_rates(t, y, system):
    x, w, _ = y
    return system.rates(x, w, t)


class CarriedIntegral(AbstractIntervalSolve):
    """`(w, q)` stepped together, `x(t)` from the forward dense output; the error
    control ignores `q`."""

    def solve(self, system, dense, y, **interval):
        return solve_backwards(
            _carried_rates,
            y,
            args=(system, dense),
            linear=True,
            approximate_inverse=adjoint_preconditioning,
            **interval,
        )


class QuadratureIntegral(AbstractIntervalSolve):
    """`w` stepped alone, `x(t)` from the forward dense output; `q` by
    `nodes`-point Gauss–Legendre quadrature over the solve's accepted steps."""

    nodes: int = eqx.field(static=True)

    def solve(self, system, dense, y, **interval):
        w, q = y
        w, steps, backward, unravel = solve_backwards(
            _w_rates,
            w,
            args=(system, dense),
            carries_q=False,
            linear=True,
            dense=True,
            approximate_inverse=adjoint_preconditioning,
            **interval,
        )
        integral = _integral_over_steps(system, dense, backward, unravel, self.nodes)
        return (w, jtu.tree_map(jnp.subtract, q, integral)), steps


class ReintegratedState(AbstractIntervalSolve):
    """`(x, w, q)` stepped together: the state re-integrated backwards from the
    forward's at the segment's right end (no dense output)."""

    w_at: ClassVar[int] = 1

    def start(self, segment, w, q):
        return (segment.x_right, w, q)

    def end(self, y):
        return y[1], y[2]

    def solve(self, system, dense, y, **interval):
        return solve_backwards(
            _reintegrated_rates, y, args=system, linear=False, **interval
        )


class BetweenSaveTimes(AbstractBackwardIntegrator):
    """One diffrax solve per interval between the save times in a segment
    (`solve_across_saves`), `w` jumping where each arrives; `interval` says what
    each solve carries."""

    cotangents: SavedCotangents
    interval: AbstractIntervalSolve

    def integrate(self, system, segment, dense, *, w, q, dt0, options):
        solve = functools.partial(self.interval.solve, system, dense, options=options)
        y, steps = solve_across_saves(
            solve,
            self.interval.start(segment, w, q),
            w_at=self.interval.w_at,
            cotangents=self.cotangents,
            segment=segment,
            dt0=dt0,
        )
        return (*self.interval.end(y), steps)

    def w_at_start(self, w):
        return self.cotangents.jump_at_t0(w)
