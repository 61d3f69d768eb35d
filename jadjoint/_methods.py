"""How the adjoint ODE is integrated backwards: the adjoint methods.

Every method sweeps the intervals `[b_k, b_{k+1}]` between the times at which the
forward pass stored `x` (the save times, plus checkpoints for a checkpointed method),
`t0 = b_0 ≤ … ≤ b_{N+1} = T`, from the last to the first. Over each it takes `(w, q)`
from the right end to the left with diffrax, then applies the jump `w ← w − x̄_k` at a
save time (DESIGN.md §2). The methods differ in how they know `x(t)` during the sweep
and in how they accumulate `q` (in the stepped state, or by quadrature:
`_quadrature.py`).
"""

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from . import _dense_output as dense_output
from ._adjoint import AdjointSystem, jump
from ._forward import Options, integrate


class AbstractAdjointMethod(eqx.Module):
    """Base class of the adjoint methods. A method integrates `(w, q)` backwards over
    one save interval, given the forward state at both its ends."""

    @property
    @abc.abstractmethod
    def keeps_dense_output(self) -> bool:
        """Whether the forward pass keeps diffrax's dense output for the backward."""

    def checkpoint_times(self, t0, t1) -> jax.Array | None:
        """Times, besides the save times, at which the forward pass stores `x`."""
        return None

    @abc.abstractmethod
    def integrate_interval(
        self,
        system: AdjointSystem,
        forward: diffrax.Solution,
        t_right,
        t_left,
        x_left: PyTree,
        x_right: PyTree,
        w: PyTree,
        q: PyTree,
        dt0,
        options: Options,
    ) -> tuple[PyTree, PyTree, jax.Array]:
        """Integrate from `t_right` back to `t_left`; return `(w, q)` at `t_left` and
        the number of accepted steps."""


def solve_backwards(
    rates,
    y_right,
    t_right,
    t_left,
    dt0,
    args,
    options: Options,
    *,
    carries_q: bool = True,
    dense: bool = False,
):
    """`y(t_left)` from `y(t_right)`, `t_left ≤ t_right`, by diffrax in reversed time,
    and the number of accepted steps; with `dense`, also the solution itself. A failed
    solve that does not raise (`throw=False`) gives NaN.

    With `carries_q`, `y` is a tuple ending with the parameter integral `q`, which the
    error control ignores (see `Options.backward_controller`)."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(rates),
        options.solver,
        t_right,
        t_left,
        -dt0,
        y_right,
        args=args,
        saveat=diffrax.SaveAt(t1=True, dense=dense),
        stepsize_controller=(
            options.backward_controller if carries_q else options.forward_controller
        ),
        max_steps=options.max_steps,
        throw=options.throw,
    )
    failed = solution.result != diffrax.RESULTS.successful
    y_left = jtu.tree_map(lambda a: jnp.where(failed, jnp.nan, a[-1]), solution.ys)
    steps = solution.stats["num_accepted_steps"]
    return (y_left, steps, solution) if dense else (y_left, steps)


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
    """Integrates `(w, ∫ p̄)` backwards, with `x(t)` read from a dense interpolant of
    the forward solution. Stable on stiff and dissipative problems.

    **Arguments:**

    - `checkpoints`: `None` (default) keeps the forward solve's whole dense output:
        memory proportional to `max_steps`, no recomputation. An integer `K` stores
        only `x` at the save times and at `K − 1` evenly spaced times in between; the
        backward pass re-solves each interval between consecutive stored times
        forwards, with dense output, before integrating back over it: memory
        O(save times + K) states plus one interval's dense output, for about one extra
        forward solve.

    The gradient is as accurate as the interpolant (of the solver's order)."""

    checkpoints: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.checkpoints is not None and self.checkpoints < 1:
            raise ValueError(
                f"`checkpoints` must be a positive integer or None, got "
                f"{self.checkpoints}."
            )

    @property
    def keeps_dense_output(self) -> bool:
        return self.checkpoints is None

    def checkpoint_times(self, t0, t1) -> jax.Array | None:
        if self.checkpoints is None:
            return None
        return jnp.linspace(t0, t1, self.checkpoints + 1)[1:-1]

    def integrate_interval(
        self, system, forward, t_right, t_left, x_left, x_right, w, q, dt0, options
    ):
        if self.checkpoints is not None:
            p, problem = system.params.combined()
            forward = integrate(
                problem,
                p,
                x_left,
                t_left,
                t_right,
                t_right[None],
                None,
                options,
                dense=True,
            )
        (w, q), steps = solve_backwards(
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

    @property
    def keeps_dense_output(self) -> bool:
        return False

    def integrate_interval(
        self, system, forward, t_right, t_left, x_left, x_right, w, q, dt0, options
    ):
        del forward, x_left
        (_, w, q), steps = solve_backwards(
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
    x0: PyTree,
    x_right: PyTree,
    xbar: PyTree | None,
    dt_guess,
    options: Options,
) -> tuple[PyTree, PyTree]:
    """`(w(t0), q(t0))` from `w(T) = 0`, `q(T) = 0`.

    `boundaries` holds `b_0 … b_{N+1}`; `x_right[k]` the forward state at `b_{k+1}`;
    `xbar[k]` the cotangent of `x(b_{k+1})`, or `None` when the saved states are not
    differentiated."""
    w = jtu.tree_map(jnp.zeros_like, x0)
    x_left = jtu.tree_map(
        lambda first, rows: jnp.concatenate([first[None], rows[:-1]]), x0, x_right
    )
    q = jtu.tree_map(jnp.zeros_like, system.params.diff)
    if xbar is not None:
        zero_row = jtu.tree_map(lambda a: jnp.zeros_like(a[:1]), xbar)
        xbar = jtu.tree_map(lambda z, a: jnp.concatenate([z, a]), zero_row, xbar)

    def interval(carry, inputs):
        w, q, dt = carry
        t_left, t_right, x_start, x_end, xbar_left = inputs
        w, q, steps = method.integrate_interval(
            system, forward, t_right, t_left, x_start, x_end, w, q, dt, options
        )
        w = jump(w, xbar_left)
        dt = _next_step_guess(dt, t_right - t_left, steps)
        return (w, q, dt), None

    inputs = (boundaries[:-1], boundaries[1:], x_left, x_right, xbar)
    (w, q, _), _ = jax.lax.scan(interval, (w, q, dt_guess), inputs, reverse=True)
    return w, q
