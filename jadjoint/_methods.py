"""The adjoint methods: how [`jadjoint.solve`][] is differentiated.

A continuous adjoint method (`AbstractContinuousAdjoint`) owns its plan: what the
forward pass stores (`storage`), the segments the backward pass integrates one
after the other (`segments`), and how it integrates `(v, q)` over one of them
(`integrate_segment`), knowing `x(t)` in its own way; the `custom_vjp` (`_core.py`)
and the sweep (`_sweep.py`) do the rest. [`jadjoint.DiscretiseThenOptimise`][]
instead differentiates through diffrax's steps.
"""

import abc
import functools

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from ._backward import rates_along, solve_across_saves, solve_backwards
from ._core import adjoint_solve
from ._differentiation_mode import reverse_mode_only
from ._forward import Forward
from ._injection import injected_observations, injects_through
from ._jumps import Jumps, SavedCotangents
from ._restart_state import storage_rows
from ._restarts import segment_dense, span_restarts
from ._segments import Segment, Storage
from ._stepwise import integrate_along_steps

# The default `segment_steps`. Interleaved against diffrax RCA (Lotka–Volterra, about
# 70 attempted steps, `vmap` over 256 members, 1 thread): 64 steps 0.58×, 128 1.01×,
# 256 0.58× RCA's gradients per second. Too short, and the solve spans two segments
# (one regenerated); too long, and under `vmap` every step selects over a dense
# buffer that no longer fits in cache. Compiled memory from `max_steps` 4096 to
# 65536 (the oscillator of `benchmarks/run.py`): 1.86×, 1.26×, 1.07×.
SEGMENT_STEPS = 128


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
    """A method that integrates [the adjoint ODE][the-adjoint-equations] backwards: the
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
    ) -> tuple[Jumps | SavedCotangents, PyTree | None]:
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
    system, dense = args
    w, _ = y
    _, wdot, qdot = rates_along(system, dense, w, t)
    return wdot, qdot


def _backsolve_rates(t, y, system):
    x, w, _ = y
    return system.rates(x, w, t)


def _solve_args(system) -> tuple:
    """The `args` of the forward solve's `augmented_rates`."""
    p, problem = system.params.combined()
    return problem, p, system.solving


class AbstractSegmentedAdjoint(AbstractContinuousAdjoint):
    """A method that reads `x(t)` from the forward solve's dense output, stored in
    segments of at most `segment_steps` steps and regenerated one at a time
    (`_restarts.py`), and injects the observations through each segment's steps
    where it can (`_injection.py`)."""

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
            return Jumps(t0, ts, xbar), None
        # Injected through each segment's steps, once it is regenerated.
        return SavedCotangents(t0, ts, xbar), None

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
    number of accepted steps (`_stepwise.integrate_along_steps`; with `nodes`, `q`
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
    jadjoint's own (`_injection.py`, `_stepwise.py`); otherwise by one diffrax solve
    per segment with a step end at every save time.

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


class BacksolveAdjoint(AbstractContinuousAdjoint):
    """Integrates `(x, w, ∫ p̄)` backwards, re-integrating the state `x` from its stored
    forward value at the end of each save interval (one solve per interval). Memory
    O(save times), but the backward re-integration of `x` is unstable on stiff or
    dissipative problems: there its gradients can be badly wrong. Prefer
    [`jadjoint.InterpolatingAdjoint`][].

    !!! cite "Reference"

        Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
        equations", NeurIPS 2018.
    """

    def storage(self, t0, t1, ts):
        return Storage(ts)

    def segments(self, storage, forward, *, t0, t1, x0, xs):
        return Segment.between(t0, t1, x0, forward.x_last, (storage.times, xs))

    def observations(self, *, system, forward, t0, ts, xbar, times, options):
        return Jumps(t0, ts, xbar), None

    def integrate_segment(self, *, system, forward, jumps, segment, v, q, dt0, options):
        solve = functools.partial(
            solve_backwards, _backsolve_rates, args=system, options=options
        )

        (_, v, q), steps = solve_across_saves(
            solve,
            (segment.x_right, v, q),
            w_at=1,
            jumps=jumps,
            segment=segment,
            dt0=dt0,
        )
        return v, q, steps
