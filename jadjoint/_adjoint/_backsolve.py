"""`BacksolveAdjoint`: the state integrated backwards along with the adjoint."""

import functools

from .._backward import Jumps, solve_across_saves, solve_backwards
from .._forward import Segment, Storage
from ._method import AbstractContinuousAdjoint


def _backsolve_rates(t, y, system):
    x, w, _ = y
    return system.rates(x, w, t)


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
        return Jumps(t0, ts, xbar)

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
