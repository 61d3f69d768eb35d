"""How the adjoint ODE is integrated backwards: the adjoint methods.

Every method sweeps the save intervals `[b_k, b_{k+1}]` of
`t0 = b_0 ≤ t_1 < … < t_N ≤ b_{N+1} = T` from the last to the first, integrating
`(w, q)` backwards over each with diffrax and applying the jump `w ← w − x̄_k` at each
save time (DESIGN.md §2). They differ in how they know `x(t)` during the sweep.
"""

import abc
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from . import _dense_output as dense_output
from ._adjoint import AdjointSystem, jump
from ._forward import Options


class AbstractAdjointMethod(eqx.Module):
    """Base class of the adjoint methods. A method integrates `(w, q)` backwards over
    one save interval, given the state `x` at its right end."""

    keeps_dense_output: ClassVar[bool]

    @abc.abstractmethod
    def integrate_interval(
        self,
        system: AdjointSystem,
        forward: diffrax.Solution,
        t_right,
        t_left,
        x_right: PyTree,
        w: PyTree,
        q: PyTree,
        dt0,
        options: Options,
    ) -> tuple[PyTree, PyTree, jax.Array]:
        """Integrate from `t_right` back to `t_left`; return `(w, q)` at `t_left` and
        the number of accepted steps."""


def _solve_backwards(rates, y_right, t_right, t_left, dt0, args, options: Options):
    """`y(t_left)` from `y(t_right)`, `t_left ≤ t_right`: diffrax in reversed time.
    A failed solve that does not raise (`throw=False`) gives NaN."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(rates),
        options.solver,
        t_right,
        t_left,
        -dt0,
        y_right,
        args=args,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=options.backward_controller,
        max_steps=options.max_steps,
        throw=options.throw,
    )
    failed = solution.result != diffrax.RESULTS.successful
    y_left = jtu.tree_map(lambda a: jnp.where(failed, jnp.nan, a[-1]), solution.ys)
    return y_left, solution.stats["num_accepted_steps"]


def _interpolating_rates(t, y, args):
    system, forward = args
    w, q = y
    x, _ = dense_output.evaluate(forward, t)
    xdot_guess = None if system.is_explicit else dense_output.derivative(forward, t)[0]
    _, wdot, qdot = system.rates(x, w, t, xdot_guess)
    return wdot, qdot


def _backsolve_rates(t, y, system):
    x, w, q = y
    return system.rates(x, w, t)


class InterpolatingAdjoint(AbstractAdjointMethod):
    """Integrates `(w, ∫ p̄)` backwards, with `x(t)` read from the dense output of the
    forward solve. Stable on stiff and dissipative problems; memory proportional to the
    number of forward steps.

    The state at time `t` comes from diffrax's dense interpolant of the forward solve,
    so the gradient is as accurate as that interpolant (of the solver's order)."""

    keeps_dense_output: ClassVar[bool] = True

    def integrate_interval(
        self, system, forward, t_right, t_left, x_right, w, q, dt0, options
    ):
        del x_right
        (w, q), steps = _solve_backwards(
            _interpolating_rates,
            (w, q),
            t_right,
            t_left,
            dt0,
            (system, forward),
            options,
        )
        return w, q, steps


class BacksolveAdjoint(AbstractAdjointMethod):
    """Integrates `(x, w, ∫ p̄)` backwards, re-integrating the state `x` from its stored
    forward value at the end of each save interval. Memory O(save times), but the
    backward re-integration of `x` is unstable on stiff or dissipative problems: there
    its gradients can be badly wrong. Prefer [`jadjoint.InterpolatingAdjoint`][]."""

    keeps_dense_output: ClassVar[bool] = False

    def integrate_interval(
        self, system, forward, t_right, t_left, x_right, w, q, dt0, options
    ):
        del forward
        (_, w, q), steps = _solve_backwards(
            _backsolve_rates,
            (x_right, w, q),
            t_right,
            t_left,
            dt0,
            system,
            options,
        )
        return w, q, steps


def _next_step_guess(dt, length, steps):
    """The backward step size carried into the next interval: the mean accepted step
    of this one when it took several; when it took one, that step (clipped to the
    interval) was accepted, so the guess is at least the interval length."""
    several = length / jnp.maximum(steps, 1)
    return jnp.where(steps >= 2, several, jnp.maximum(dt, length))


def backward_sweep(
    method: AbstractAdjointMethod,
    system: AdjointSystem,
    forward: diffrax.Solution,
    boundaries: jax.Array,
    x_right: PyTree,
    xbar: PyTree | None,
    dt_guess,
    options: Options,
) -> tuple[PyTree, PyTree]:
    """`(w(t0), q(t0))` from `w(T) = 0`, `q(T) = 0`.

    `boundaries` holds `b_0 … b_{N+1}`; `x_right[k]` the forward state at `b_{k+1}`;
    `xbar[k]` the cotangent of `x(t_{k+1})`, or `None` when the saved states are not
    differentiated."""
    x_like = jtu.tree_map(lambda a: a[0], x_right)
    w = jtu.tree_map(jnp.zeros_like, x_like)
    q = jtu.tree_map(jnp.zeros_like, system.params.diff)
    if xbar is not None:
        zero_row = jtu.tree_map(lambda a: jnp.zeros_like(a[:1]), xbar)
        xbar = jtu.tree_map(lambda z, a: jnp.concatenate([z, a]), zero_row, xbar)

    def interval(carry, inputs):
        w, q, dt = carry
        t_left, t_right, x_end, xbar_left = inputs
        w, q, steps = method.integrate_interval(
            system, forward, t_right, t_left, x_end, w, q, dt, options
        )
        w = jump(w, xbar_left)
        dt = _next_step_guess(dt, t_right - t_left, steps)
        return (w, q, dt), None

    inputs = (boundaries[:-1], boundaries[1:], x_right, xbar)
    (w, q, _), _ = jax.lax.scan(interval, (w, q, dt_guess), inputs, reverse=True)
    return w, q
