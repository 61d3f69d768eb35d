"""How the adjoint ODE is integrated backwards: the adjoint methods.

The backward pass integrates `(v, q)` from `T` to `t0`, with `v = w + o(t)` the adjoint
with its save-time jumps folded in (`_jumps.py`), so that save times cost one step end
each rather than one solve each. It does so in one diffrax solve per segment between
the times at which the forward pass stored `x` for it: `t0`, a checkpointed method's
checkpoints, `T`. The methods differ in how they know `x(t)` during the sweep and in
how they accumulate `q` (in the stepped state, or by quadrature: `_quadrature.py`).
"""

import abc
import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from . import _dense_output as dense_output
from ._adjoint import AdjointSystem
from ._differentiation_mode import inner_adjoint
from ._forward import Options, integrate, raise_if_failed
from ._jumps import Jumps, below


class AbstractAdjointMethod(eqx.Module):
    """Base class of the adjoint methods. A method integrates `(v, q)` backwards over
    one segment between stored forward states, given the states at both its ends."""

    @property
    @abc.abstractmethod
    def keeps_dense_output(self) -> bool:
        """Whether the forward pass keeps diffrax's dense output for the backward."""

    def checkpoint_times(self, t0, t1) -> jax.Array | None:
        """Times inside `(t0, t1)` at which the forward pass also stores `x`; the
        backward segments end there."""
        return None

    @property
    def restarts_at_save_times(self) -> bool:
        """Whether the backward segments also end at the save times."""
        return False

    @abc.abstractmethod
    def integrate_segment(
        self,
        system: AdjointSystem,
        forward: diffrax.Solution,
        jumps: Jumps,
        t_right,
        t_left,
        x_left: PyTree,
        x_right: PyTree,
        v: PyTree,
        q: PyTree,
        dt0,
        options: Options,
    ) -> tuple[PyTree, PyTree, jax.Array]:
        """Integrate from `t_right` back to `t_left`; return `(v, q)` at `t_left` and
        the number of accepted steps."""


def solve_backwards(
    rates,
    y_right,
    t_right,
    t_left,
    dt0,
    args,
    options: Options,
    jumps: Jumps,
    *,
    carries_q: bool = True,
    dense: bool = False,
):
    """`y(t_left)` from `y(t_right)`, `t_left < t_right`, by one diffrax solve in
    reversed time that steps to every save time in between, and the number of accepted
    steps; with `dense`, also the diffrax solution (of the flat state) and the
    function that unflattens its values. A failed solve
    that does not raise (`throw=False`) gives NaN.

    With `carries_q`, `y` is a tuple ending with the parameter integral `q`, which the
    error control ignores. The solve may take `max_steps` steps plus one per save
    time. diffrax steps a flat copy of `y`: a Runge–Kutta step then costs a few array
    operations, not a few per leaf of `y` (a neural network's parameters in `q` have
    many leaves, and on CPU each operation in the loop carries a fixed cost)."""
    flat_right, unravel = jax.flatten_util.ravel_pytree(y_right)
    controlled = None
    if carries_q:
        controlled = (
            flat_right.size - jax.flatten_util.ravel_pytree(y_right[-1])[0].size
        )

    def flat_rates(t, y, args):
        return jax.flatten_util.ravel_pytree(rates(t, unravel(y), args))[0]

    controller = jumps.controller(options.controller(controlled), t_left, t_right)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(flat_rates),
        options.solver,
        jnp.maximum(below(t_right), t_left),
        t_left,
        -dt0,
        flat_right,
        args=args,
        saveat=diffrax.SaveAt(t1=True, dense=dense),
        stepsize_controller=controller,
        max_steps=options.max_steps + jumps.count,
        adjoint=inner_adjoint(),
        throw=False,
        progress_meter=options.progress_meter,
    )
    flat_left = solution.ys[-1]
    if options.throw:
        flat_left = raise_if_failed(solution.result, flat_left)
    failed = solution.result != diffrax.RESULTS.successful
    y_left = unravel(jnp.where(failed, jnp.nan, flat_left))
    steps = solution.stats["num_accepted_steps"]
    if not dense:
        return y_left, steps
    return y_left, steps, solution, unravel


def rates_along(system: AdjointSystem, forward: diffrax.Solution, jumps: Jumps, v, t):
    """`(ẋ, ẇ, q̇)` at `t` with `x(t)` from the forward dense output (its derivative
    starts Newton for an implicit `h`) and `w = v − o(t)`."""
    x, _ = dense_output.evaluate(forward, t)
    xdot_guess = None if system.is_explicit else dense_output.derivative(forward, t)[0]
    return system.rates(x, jumps.w(v, t), t, xdot_guess)


def _interpolating_rates(t, y, args):
    v, _ = y
    _, wdot, qdot = rates_along(*args, v, t)
    return wdot, qdot


def _backsolve_rates(t, y, args):
    system, jumps = args
    x, v, q = y
    return system.rates(x, jumps.w(v, t), t)


class InterpolatingAdjoint(AbstractAdjointMethod):
    """Integrates `(w, ∫ p̄)` backwards, with `x(t)` read from a dense interpolant of
    the forward solution. Stable on stiff and dissipative problems.

    **Arguments:**

    - `checkpoints`: `None` (default) keeps the forward solve's whole dense output:
        memory proportional to `max_steps`, no recomputation. An integer `K` stores
        only `x` at `K − 1` evenly spaced times inside `(t0, T)` (besides the save
        times, which are returned anyway); the backward pass re-solves each of the `K`
        segments between them forwards, with dense output, before integrating back
        over it: about one extra forward solve.
    - `segment_steps`: with `checkpoints`, the most steps the re-solve of one segment
        may take (default: `max_steps`). Its dense output is sized by it, so memory is
        O(save times + K) states plus `segment_steps` dense steps, independent of
        `max_steps`.

    The gradient is as accurate as the interpolant (of the solver's order)."""

    checkpoints: int | None = eqx.field(static=True, default=None)
    segment_steps: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.checkpoints is not None and self.checkpoints < 1:
            raise ValueError(
                f"`checkpoints` must be a positive integer or None, got "
                f"{self.checkpoints}."
            )
        if self.segment_steps is not None and (
            self.checkpoints is None or self.segment_steps < 1
        ):
            raise ValueError(
                f"`segment_steps` must be a positive integer, and is only used with "
                f"`checkpoints`; got segment_steps={self.segment_steps}, "
                f"checkpoints={self.checkpoints}."
            )

    @property
    def keeps_dense_output(self) -> bool:
        return self.checkpoints is None

    def checkpoint_times(self, t0, t1) -> jax.Array | None:
        if self.checkpoints is None:
            return None
        return jnp.linspace(t0, t1, self.checkpoints + 1)[1:-1]

    def integrate_segment(
        self,
        system,
        forward,
        jumps,
        t_right,
        t_left,
        x_left,
        x_right,
        v,
        q,
        dt0,
        options,
    ):
        if self.checkpoints is not None:
            p, problem = system.params.combined()
            resolve_options = options
            if self.segment_steps is not None:
                resolve_options = dataclasses.replace(
                    options, max_steps=self.segment_steps
                )
            forward = integrate(
                problem,
                p,
                x_left,
                t_left,
                t_right,
                t_right[None],
                None,
                resolve_options,
                dense=True,
            )
        (v, q), steps = solve_backwards(
            _interpolating_rates,
            (v, q),
            t_right,
            t_left,
            dt0,
            (system, forward, jumps),
            options,
            jumps,
        )
        return v, q, steps


class BacksolveAdjoint(AbstractAdjointMethod):
    """Integrates `(x, w, ∫ p̄)` backwards, re-integrating the state `x` from its stored
    forward value at the end of each save interval (one solve per interval). Memory
    O(save times), but the backward re-integration of `x` is unstable on stiff or
    dissipative problems: there its gradients can be badly wrong. Prefer
    [`jadjoint.InterpolatingAdjoint`][]."""

    @property
    def keeps_dense_output(self) -> bool:
        return False

    @property
    def restarts_at_save_times(self) -> bool:
        return True

    def integrate_segment(
        self,
        system,
        forward,
        jumps,
        t_right,
        t_left,
        x_left,
        x_right,
        v,
        q,
        dt0,
        options,
    ):
        del forward, x_left
        (_, v, q), steps = solve_backwards(
            _backsolve_rates,
            (x_right, v, q),
            t_right,
            t_left,
            dt0,
            (system, jumps),
            options,
            jumps,
        )
        return v, q, steps


def _next_step_guess(dt, length, steps):
    """The backward step size carried into the next segment: the mean accepted step
    of this one when it took several; when it took one, that step was accepted, so the
    guess is at least the segment length."""
    several = length / jnp.maximum(steps, 1)
    return jnp.where(steps >= 2, several, jnp.maximum(dt, length))


def backward_sweep(
    method: AbstractAdjointMethod,
    system: AdjointSystem,
    forward: diffrax.Solution,
    jumps: Jumps,
    boundaries: jax.Array,
    x_boundaries: PyTree,
    dt_guess,
    options: Options,
) -> tuple[PyTree, PyTree]:
    """`(w(t0), q(t0))` from `w(T⁺) = 0`, `q(T) = 0`.

    `boundaries` holds the segment ends `t0 = b_0 < … < b_K = T`, and `x_boundaries`
    the forward states there (a leading axis of `K + 1`)."""
    v = jtu.tree_map(lambda a: jnp.zeros_like(a[0]), x_boundaries)
    q = jtu.tree_map(jnp.zeros_like, system.params.diff)

    def segment(carry, inputs):
        v, q, dt = carry
        t_left, t_right, x_left, x_right = inputs
        v, q, steps = method.integrate_segment(
            system, forward, jumps, t_right, t_left, x_left, x_right, v, q, dt, options
        )
        dt = _next_step_guess(dt, t_right - t_left, steps)
        return (v, q, dt), None

    x_left = jtu.tree_map(lambda a: a[:-1], x_boundaries)
    x_right = jtu.tree_map(lambda a: a[1:], x_boundaries)
    inputs = (boundaries[:-1], boundaries[1:], x_left, x_right)
    (v, q, _), _ = jax.lax.scan(segment, (v, q, dt_guess), inputs, reverse=True)
    return jumps.w_at_start(v), q
