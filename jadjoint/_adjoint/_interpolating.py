"""`InterpolatingAdjoint`, and the base of the methods that read `x(t)` from the
forward solve's dense output, stored in segments."""

import functools

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu

from .._backward import (
    Jumps,
    SavedCotangents,
    injected_observations,
    injects_through,
    integrate_along_steps,
    rates_along,
    solve_across_saves,
    solve_backwards,
)
from .._forward import Segment, Storage, segment_dense, span_restarts, storage_rows
from ._method import AbstractContinuousAdjoint

# The default `segment_steps`: too short, and a solve spans several segments, all but
# the last regenerated; too long, and under `vmap` every step selects over a dense
# buffer that no longer fits in cache (the measurements: `docs/choosing.md`).
SEGMENT_STEPS = 128


def _interpolating_rates(t, y, args):
    system, dense = args
    w, _ = y
    _, wdot, qdot = rates_along(system, dense, w, t)
    return wdot, qdot


def _solve_args(system) -> tuple:
    """The `args` of the forward solve's `augmented_rates`."""
    p, problem = system.params.combined()
    return problem, p, system.solving


class AbstractSegmentedAdjoint(AbstractContinuousAdjoint):
    """A method that reads `x(t)` from the forward solve's dense output, stored in
    segments of at most `segment_steps` steps and regenerated one at a time
    (`jadjoint/_forward/_restarts.py`), and injects the observations through each
    segment's steps where it can (`jadjoint/_backward/_injection.py`)."""

    segment_steps: eqx.AbstractVar[int]

    def __check_init__(self):
        if not isinstance(self.segment_steps, int) or self.segment_steps < 4:
            # A segment restarts at its last accepted step, not at the controller's
            # proposal (not part of diffrax's saved state): with one or two steps a
            # segment, the step size could hardly grow.
            raise ValueError(
                f"`segment_steps` must be an integer of at least 4, got "
                f"{self.segment_steps!r}."
            )

    def storage(self, t0, t1, ts):
        return Storage(ts, self.segment_steps)

    def segments(self, storage, forward, *, t0, t1, x0, xs):
        return Segment.from_restarts(forward.restarts, forward.t_last, forward.x_last)

    def observations(self, *, system, forward, t0, ts, xbar, times, options):
        if not injects_through(options.solver, times):
            return Jumps(t0, ts, xbar)
        # Injected through each segment's steps, once it is regenerated.
        return SavedCotangents(t0, ts, xbar)

    def segment_dense(self, system, forward, segment, options):
        """The dense output of the forward steps of `segment`."""
        return segment_dense(
            _solve_args(system),
            forward,
            segment,
            options=options,
            steps=self.segment_steps,
        )

    def span_segments(self, system, span: Segment, options) -> Segment:
        """The forward segments of a row of thinned storage, `span`, their restart
        states recovered by solving it again."""
        _, span_segments = storage_rows(options.max_steps, self.segment_steps)
        restarts = span_restarts(
            _solve_args(system),
            span,
            options=options,
            steps=self.segment_steps,
            span_segments=span_segments,
        )
        return Segment.from_restarts(restarts, span.t_right, span.x_right)


def integrate_injected(
    system, dense, jumps: SavedCotangents, segment, *, v, q, options, nodes=None
):
    """`(v, q)` integrated back over `segment` along the forward steps of `dense`,
    the cotangents of the saves in it injected at their steps' starts, and the
    number of accepted steps (`jadjoint/_backward/_along_steps.py`; with `nodes`, `q`
    by quadrature)."""
    ts, xbar = jumps.in_segment(segment.t_left, segment.t_right)
    step_jumps, direct = injected_observations(system, dense, ts, xbar, options)
    v, q, steps = integrate_along_steps(
        system,
        dense,
        step_jumps,
        w=v,
        q=q,
        options=options,
        quadrature_nodes=nodes,
    )
    if direct is not None:
        q = jtu.tree_map(jnp.subtract, q, direct)
    return v, q, steps


class InterpolatingAdjoint(AbstractSegmentedAdjoint):
    """Integrates `(w, ∫ p̄)` backwards, with `x(t)` read from a dense interpolant of
    the forward solution. Stable on stiff and dissipative problems.

    **Arguments:**

    - `segment_steps`: the forward solve runs in segments of at most this many
        steps (default 128) and stores the solver's state at the start of each; the
        backward pass regenerates one segment's dense output at a time from it
        ([how it works][the-forward-solution-in-the-backward-pass]). Memory is
        `⌈max_steps / segment_steps⌉` stored states plus `segment_steps` dense
        steps, whatever the steps taken; a solve of at most `segment_steps` steps
        recomputes nothing, a longer one recomputes all but its last segment once
        (at most one extra forward solve). Above 4096 steps (`max_steps`) the stored
        states are thinned instead, to `⌈4096 / segment_steps⌉` and one span of
        segments: memory no longer grows with `max_steps`, and a solve that has
        taken over 4096 steps pays a second extra forward solve.

    The gradient is as accurate as the interpolant (of the solver's order). With an
    explicit Runge–Kutta solver (and the times not differentiated), the save-time
    cotangents are injected through the forward steps' interpolants, one segment at
    a time, and the adjoint is integrated along the forward steps by a loop of
    jadjoint's own; otherwise by one diffrax solve per interval between save times
    ([how it works][the-jumps-at-the-save-times]).

    !!! cite "References"

        Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
        equations", NeurIPS 2018 (the adjoint); Serban & Hindmarsh, "CVODES: the
        sensitivity-enabled ODE solver in SUNDIALS", ACM TOMS 2005 (the checkpoints
        every few steps).
    """

    segment_steps: int = eqx.field(static=True, default=SEGMENT_STEPS)

    def integrate_segment(self, *, system, forward, jumps, segment, v, q, dt0, options):
        dense = self.segment_dense(system, forward, segment, options)
        if isinstance(jumps, SavedCotangents):
            return integrate_injected(
                system, dense, jumps, segment, v=v, q=q, options=options
            )
        solve = functools.partial(
            solve_backwards, _interpolating_rates, args=(system, dense), options=options
        )

        (v, q), steps = solve_across_saves(
            solve,
            (v, q),
            w_at=0,
            jumps=jumps,
            segment=segment,
            dt0=dt0,
        )
        return v, q, steps
