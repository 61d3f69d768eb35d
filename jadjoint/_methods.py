"""The adjoint methods: how [`jadjoint.solve`][] is differentiated.

A continuous adjoint method (`AbstractContinuousAdjoint`) owns its plan: what the
forward pass stores (`storage`), the segments the backward pass integrates one
after the other (`segments`), and how it integrates `(v, q)` over one of them
(`integrate_segment`), knowing `x(t)` in its own way; the `custom_vjp` (`_core.py`)
and the sweep (`_sweep.py`) do the rest. [`jadjoint.DiscretiseThenOptimise`][]
instead differentiates through diffrax's steps.
"""

import abc
import dataclasses

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from ._backward import rates_along, solve_backwards
from ._core import adjoint_solve
from ._differentiation_mode import reverse_mode_only
from ._forward import Forward, integrate
from ._injection import injected_observations, injects_through
from ._jumps import Jumps, SavedCotangents, StepJumps
from ._segments import Segment, Storage
from ._stepwise import integrate_along_steps


class AbstractAdjointMethod(eqx.Module):
    """Base class of the adjoint methods: how a solve is differentiated."""

    @abc.abstractmethod
    def differentiable_solve(
        self, problem, p: PyTree, x0: PyTree, *, times, dt0, options
    ) -> tuple:
        """`(cost, xs, stats, result, (t_last, x_last))` of the ODE `problem` (its
        callables closure-converted) from `x0` over `times = (t0, t1, ts)`,
        differentiable by this method."""


class AbstractContinuousAdjoint(AbstractAdjointMethod):
    """A method that integrates the adjoint ODE of DESIGN.md §2 backwards: the
    reverse rule of a `custom_vjp`, segment by segment."""

    def differentiable_solve(self, problem, p, x0, *, times, dt0, options):
        inputs = (p, x0, problem, times)
        return reverse_mode_only(lambda i: adjoint_solve(i, dt0, options, self), inputs)

    @abc.abstractmethod
    def storage(self, t0, t1, ts) -> Storage:
        """What the forward pass keeps for the backward one, given the save times."""

    @abc.abstractmethod
    def segments(
        self, storage: Storage, forward: Forward, *, t0, t1, x0: PyTree, xs: PyTree
    ) -> Segment:
        """The backward segments (batched, from `t0` to `T`) and the forward states
        at their ends, from what the forward pass stored (`xs`: at the save times)."""

    @abc.abstractmethod
    def observations(
        self, *, system, forward: Forward, t0, ts, xbar: PyTree | None, times, options
    ) -> tuple[Jumps | StepJumps | SavedCotangents, PyTree | None]:
        """How the cotangents `xbar` of the states saved at `ts` (in `[t0, T]`)
        enter the backward pass: the jumps of `w`, and a direct contribution to the
        gradient of `system.params.diff` (`None` if none). `times`: whether `t0`,
        `t1` or `ts` are differentiated."""

    @abc.abstractmethod
    def integrate_segment(
        self, *, system, forward: Forward, jumps, segment: Segment, v, q, dt0, options
    ) -> tuple[PyTree, PyTree, jnp.ndarray]:
        """Integrate `(v, q)` from `segment.t_right` back to `segment.t_left`; return
        them there and the number of accepted steps."""


def _interpolating_rates(t, y, args):
    v, _ = y
    _, wdot, qdot = rates_along(*args, v, t)
    return wdot, qdot


def _backsolve_rates(t, y, args):
    system, jumps = args
    x, v, q = y
    return system.rates(x, jumps.w(v, t), t)


class InterpolatingAdjoint(AbstractContinuousAdjoint):
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

    The gradient is as accurate as the interpolant (of the solver's order). With an
    explicit Runge–Kutta solver (and the times not differentiated), the save-time
    cotangents are injected through the forward steps' interpolants (with
    `checkpoints`, through those of each segment's re-solve) and the adjoint is
    integrated along the forward steps by a loop of jadjoint's own (`_injection.py`,
    `_stepwise.py`); otherwise by one diffrax solve per segment with a step end at
    every save time.

    Reference: Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
    equations", NeurIPS 2018 (the adjoint); SciMLSensitivity's `InterpolatingAdjoint`
    (the name and the checkpointing)."""

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

    def storage(self, t0, t1, ts):
        if self.checkpoints is None:
            return Storage.at_save_times(ts, dense=True)
        checkpoints = jnp.linspace(t0, t1, self.checkpoints + 1)[1:-1]
        return Storage.with_checkpoints(ts, checkpoints)

    def segments(self, storage, forward, *, t0, t1, x0, xs):
        inner = None
        if self.checkpoints is not None:
            inner = storage.at_checkpoint_rows(forward.xs)
        return Segment.between(t0, t1, x0, forward.x_last, inner)

    def observations(self, *, system, forward, t0, ts, xbar, times, options):
        if not injects_through(options.solver, times):
            return Jumps.from_cotangents(ts, xbar), None
        if self.checkpoints is None:
            return injected_observations(system, forward.dense, ts, xbar, options)
        # Injected through each segment's re-solve, once it is regenerated.
        return SavedCotangents(t0, ts, xbar), None

    def integrate_segment(self, *, system, forward, jumps, segment, v, q, dt0, options):
        dense = forward.dense
        if isinstance(jumps, StepJumps):
            return integrate_along_steps(
                system, dense, jumps, w=v, q=q, dt0=dt0, options=options
            )
        if self.checkpoints is not None:
            p, problem = system.params.combined()
            if self.segment_steps is not None:
                options = dataclasses.replace(options, max_steps=self.segment_steps)
            dense = integrate(
                problem,
                p,
                segment.x_left,
                t0=segment.t_left,
                t1=segment.t_right,
                ts=segment.t_right[None],
                dt0=None,
                options=options,
                dense=True,
            ).dense
        if isinstance(jumps, SavedCotangents):
            ts, xbar = jumps.in_segment(segment.t_left, segment.t_right)
            step_jumps, direct = injected_observations(system, dense, ts, xbar, options)
            v, q, steps = integrate_along_steps(
                system, dense, step_jumps, w=v, q=q, dt0=dt0, options=options
            )
            if direct is not None:
                q = jtu.tree_map(jnp.subtract, q, direct)
            return v, q, steps
        (v, q), steps = solve_backwards(
            _interpolating_rates,
            (v, q),
            t_right=segment.t_right,
            t_left=segment.t_left,
            dt0=dt0,
            args=(system, dense, jumps),
            options=options,
            jumps=jumps,
        )
        return v, q, steps


class BacksolveAdjoint(AbstractContinuousAdjoint):
    """Integrates `(x, w, ∫ p̄)` backwards, re-integrating the state `x` from its stored
    forward value at the end of each save interval (one solve per interval). Memory
    O(save times), but the backward re-integration of `x` is unstable on stiff or
    dissipative problems: there its gradients can be badly wrong. Prefer
    [`jadjoint.InterpolatingAdjoint`][].

    Reference: Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
    equations", NeurIPS 2018."""

    def storage(self, t0, t1, ts):
        return Storage.at_save_times(ts, dense=False)

    def segments(self, storage, forward, *, t0, t1, x0, xs):
        return Segment.between(t0, t1, x0, forward.x_last, (storage.times, xs))

    def observations(self, *, system, forward, t0, ts, xbar, times, options):
        return Jumps.from_cotangents(ts, xbar), None

    def integrate_segment(self, *, system, forward, jumps, segment, v, q, dt0, options):
        (_, v, q), steps = solve_backwards(
            _backsolve_rates,
            (segment.x_right, v, q),
            t_right=segment.t_right,
            t_left=segment.t_left,
            dt0=dt0,
            args=(system, jumps),
            options=options,
            jumps=jumps,
        )
        return v, q, steps
