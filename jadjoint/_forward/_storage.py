"""What the forward pass keeps for the backward pass, and how the backward pass goes
through it: a storage runs the forward solve, lays out the segments that the
backward pass integrates one after the other (from `T` back to `t0`), and gives
each segment's forward solution."""

import abc

import diffrax
import equinox as eqx
from jaxtyping import PyTree

from .._options import Options
from .._problem import BoundProblem
from ._integrate import Forward, integrate
from ._restart_state import storage_rows
from ._restarts import integrate_in_segments, segment_dense, span_restarts
from ._segments import Segments


class AbstractStorage(eqx.Module):
    """How the forward solution is kept for the backward pass. `bound` below is the
    forward solve's problem, parameters and prepared solves."""

    @abc.abstractmethod
    def forward(
        self, bound: BoundProblem, x0, *, t0, t1, ts, dt0, options: Options
    ) -> Forward:
        """The forward solve of the ODE `bound.problem` from `x0`, keeping what this
        storage needs."""

    @abc.abstractmethod
    def segments(self, forward: Forward, *, t0, t1, ts, x0: PyTree) -> Segments:
        """The backward segments (batched, from `t0` to `T`) and the forward states
        at their right ends, for the solve from `x0` over `[t0, t1]` saving at
        `ts`."""

    def dense(
        self, bound: BoundProblem, forward: Forward, segment: Segments, options: Options
    ) -> diffrax.DenseInterpolation | None:
        """The forward solution's dense output over `segment`; `None` when this
        storage keeps none."""
        return None

    def span_segments(
        self, bound: BoundProblem, span: Segments, options: Options
    ) -> Segments:
        """The segments that a row of thinned storage (`span`) stands for."""
        raise NotImplementedError(f"{type(self).__name__} is never thinned.")


class SegmentedStorage(AbstractStorage):
    """The forward solve in segments of at most `segment_steps` steps, the solver's
    state at each segment's start stored and one segment's dense output regenerated
    at a time on the backward pass (`_restarts.py`); thinned above `max_steps`
    4096."""

    segment_steps: int = eqx.field(static=True)

    def forward(self, bound, x0, *, t0, t1, ts, dt0, options):
        return integrate_in_segments(
            bound,
            x0,
            t0=t0,
            t1=t1,
            ts=ts,
            dt0=dt0,
            options=options,
            segment_steps=self.segment_steps,
        )

    def segments(self, forward, *, t0, t1, ts, x0):
        return Segments.from_restarts(forward.restarts, forward.t_last, forward.x_last)

    def dense(self, bound, forward, segment, options):
        return segment_dense(
            bound, forward, segment, options=options, segment_steps=self.segment_steps
        )

    def span_segments(self, bound, span, options):
        _, span_segments = storage_rows(options.max_steps, self.segment_steps)
        restarts = span_restarts(
            bound,
            span,
            options=options,
            segment_steps=self.segment_steps,
            span_segments=span_segments,
        )
        return Segments.from_restarts(restarts, span.t_right, span.x_right)


class SaveTimeStorage(AbstractStorage):
    """The states at the save times only: the backward segments are the intervals
    between them, and the backward pass re-integrates the state over each from its
    right end."""

    def forward(self, bound, x0, *, t0, t1, ts, dt0, options):
        return integrate(
            bound,
            x0,
            t0=t0,
            t1=t1,
            ts=ts,
            dt0=dt0,
            options=options,
            dense=False,
        )

    def segments(self, forward, *, t0, t1, ts, x0):
        return Segments.between(t0, t1, x0, forward.x_last, (ts, forward.xs))
