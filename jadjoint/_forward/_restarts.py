"""Two-level storage (`docs/how-it-works.md`): the forward solve in segments of at
most `B = segment_steps` steps with a restartable solver state stored at the start of
each, and one segment's dense output regenerated at a time on the backward pass.

diffrax's dense output is a buffer of `max_steps` rows whatever the steps taken, and
under `jax.vmap` each step of the loop selects over all of it for every member. Here
the forward pass runs `diffeqsolve` once per segment, `max_steps = B`, restarting
each from where the last stopped (its time, state and step size): memory is
`⌈max_steps / B⌉` restart rows (a state and two numbers each) plus one segment's `B`
dense rows. A solve of at most `B` steps keeps its dense output and recomputes
nothing; a longer one recomputes every segment but the last once, on the backward
pass (CVODES's and diffsol's scheme).

So that the rows do not grow with `max_steps` either, a solve that may take more than
`THINNING_STEPS` steps keeps `R = ⌈THINNING_STEPS / B⌉` rows: when they are full,
every other row goes and a row stands for twice as many segments from then on
(`stride`). The backward pass solves each such span again from its row, storing its
segments' restart states in a buffer of one span's rows, and goes through them as
above. Memory is then `R` rows, one span's rows and one segment's dense output,
and a solve that was thinned pays one more forward solve.

A segment restarts with its first step at the length of the last accepted one: the
step-size proposal is not part of diffrax's saved state. The restart state being
stored, the backward pass retakes the very same steps.
"""

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._differentiation_mode import loop_kind
from .._errors import raise_or_nan
from .._options import Options
from .._results import RESULTS
from ._integrate import STATISTICS, Forward, augmented_rates, cost_dtype
from ._restart_state import (
    Restarts,
    following_restart,
    solve_from,
    storage_rows,
    stored,
)

# A regenerated segment may take this many more steps than the forward one did:
# the same steps, but compiled in another place, rounding may differ in the last bit.
REGENERATION_SLACK = 4


def _initial(bound, x0, *, t0, t1, dt0, options) -> Restarts:
    """The restart state at `t0`, with the step-size controller's first step (its
    estimate when `dt0` is `None`), as `diffeqsolve` gets it itself
    (`stepsize_controller.init`, public)."""
    y0 = (x0, jnp.zeros((), cost_dtype(x0)))
    terms = diffrax.ODETerm(augmented_rates)
    solver = options.solver
    t_next, _ = options.controller().init(
        terms, t0, t1, y0, dt0, bound, solver.func, solver.error_order(terms)
    )
    t_next = jnp.minimum(t_next, t1)
    return Restarts(
        t=t0,
        y=y0,
        dt=t_next - t0,
        count=jnp.zeros((), jnp.int32),
    )


def _blank(shape: jax.ShapeDtypeStruct, rows: int | None = None) -> Array:
    """An unused buffer: `inf` (as diffrax fills them), zero if integer; with
    `rows`, that many rows."""
    if rows is not None:
        shape = jax.ShapeDtypeStruct((rows,) + shape.shape[1:], shape.dtype)
    if jnp.issubdtype(shape.dtype, jnp.inexact):
        return jnp.full(shape.shape, jnp.inf, shape.dtype)
    return jnp.zeros(shape.shape, shape.dtype)


def _pad(dense: diffrax.DenseInterpolation, rows: int) -> diffrax.DenseInterpolation:
    """`dense` with unused rows up to `rows` steps."""

    def pad(a, size):
        filler = _blank(jax.ShapeDtypeStruct(a.shape, a.dtype), size - a.shape[0])
        return jnp.concatenate([a, filler])

    return eqx.tree_at(
        lambda d: (d.ts, d.infos),
        dense,
        (pad(dense.ts, rows + 1), jtu.tree_map(lambda a: pad(a, rows), dense.infos)),
    )


def _rows_where(keep: Array, new: PyTree, old: PyTree) -> PyTree:
    def leaf(a, b):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jtu.tree_map(leaf, new, old)


def integrate_in_segments(
    bound, x0: PyTree, *, t0, t1, ts, dt0, options: Options, segment_steps: int
) -> Forward:
    """The forward solve of `_forward.integrate`, in segments of at most
    `segment_steps` steps: its `restarts` hold the state at each segment's start, its
    `dense` the last segment's dense output (padded to `segment_steps +
    REGENERATION_SLACK` rows). The solve may take `max_steps` steps in all."""
    rows, span = storage_rows(options.max_steps, segment_steps)
    first = _initial(bound, x0, t0=t0, t1=t1, dt0=dt0, options=options)
    first = jtu.tree_map(jnp.asarray, first)

    def like_first(restart: Restarts) -> Restarts:
        """`restart` with the dtypes of `first`, as the loop's carry must keep."""
        return jtu.tree_map(lambda a, b: jnp.asarray(a, b.dtype), restart, first)

    def segment(restart: Restarts):
        saveat = diffrax.SaveAt(
            # diffrax wants the save times inside the solve; those before its start
            # were saved by an earlier segment, and are ignored.
            ts=jnp.clip(ts, restart.t, t1),
            t1=True,
            dense=True,
        )
        return solve_from(
            bound,
            restart,
            t1=t1,
            saveat=saveat,
            max_steps=segment_steps,
            options=options,
        )

    shapes = eqx.filter_eval_shape(segment, first)
    meter = options.progress_meter
    state = dict(
        restart=first,
        restarts=first.blank(
            rows, None if span is None else jnp.ones((), first.count.dtype)
        ),
        xs=jtu.tree_map(lambda s: _blank(s, s.shape[0] - 1), shapes.ys[0]),
        dense=jtu.tree_map(_blank, shapes.interpolation),
        stats={key: jnp.zeros_like(shapes.stats[key]) for key in STATISTICS},
        result=diffrax.RESULTS.successful,
        going=jnp.asarray(True),
        meter=meter.init(),
    )

    def body(state):
        restart = state["restart"]
        r = restart.count
        solution = segment(restart)
        following, short, result = following_restart(solution, restart, t1)
        t_end = following.t
        # A save time on a segment boundary was saved by the segment on its left.
        own = (ts <= t_end) & ((ts > restart.t) | (r == 0))
        stats = {key: state["stats"][key] + solution.stats[key] for key in STATISTICS}
        progress = (t_end - t0) / jnp.where(t1 > t0, t1 - t0, 1)
        states = solution.ys[0]
        return dict(
            restart=like_first(following),
            restarts=stored(state["restarts"], r, restart),
            xs=_rows_where(own, jtu.tree_map(lambda a: a[:-1], states), state["xs"]),
            dense=solution.interpolation,
            stats=stats,
            result=result,
            going=short & (stats["num_steps"] < options.max_steps),
            meter=meter.step(state["meter"], jnp.clip(progress, 0, 1)),
        )

    state = eqxi.while_loop(
        lambda state: state["going"],
        body,
        state,
        max_steps=-(-options.max_steps // segment_steps),
        kind=loop_kind(),
    )
    meter.close(state["meter"])
    end = state["restart"]
    (x_last, cost), xs, result = end.y, state["xs"], state["result"]
    return Forward(
        cost=cost,
        xs=xs,
        t_last=end.t,
        x_last=x_last,
        stats=state["stats"],
        result=RESULTS.promote(result),
        dense=_pad(state["dense"], segment_steps + REGENERATION_SLACK),
        restarts=eqx.tree_at(lambda r: r.count, state["restarts"], end.count),
    )


def span_restarts(
    bound, span, *, options: Options, segment_steps: int, span_segments: int
) -> Restarts:
    """The restart states of the segments of `span` (a row of
    `_segments.Segments.from_restarts` over thinned storage, standing for up to
    `span_segments` segments), by solving it again from its restart state in
    segments of `segment_steps` steps, as the forward pass did. A re-solve that does not
    reach the span's end raises (`options.throw`) or gives NaN."""
    first = span.restart
    rows = span_segments + 1
    first = Restarts(
        t=first.t, y=first.y, dt=first.dt, count=jnp.zeros_like(first.count)
    )
    saveat = diffrax.SaveAt(t1=True, dense=True)

    def body(state):
        restart, restarts, _, _ = state
        solution = solve_from(
            bound,
            restart,
            t1=span.t_right,
            saveat=saveat,
            max_steps=segment_steps,
            options=options,
        )
        following, short, result = following_restart(solution, restart, span.t_right)
        following = jtu.tree_map(lambda a, b: jnp.asarray(a, b.dtype), following, first)
        return following, restarts.with_row(restart.count, restart), short, result

    state = (first, first.blank(rows), jnp.asarray(True), diffrax.RESULTS.successful)
    end, restarts, short, result = eqxi.while_loop(
        lambda state: state[2] & (state[0].count < rows),
        body,
        state,
        max_steps=rows,
        kind=loop_kind(),
    )
    result = diffrax.RESULTS.where(short, diffrax.RESULTS.max_steps_reached, result)
    restarts = eqx.tree_at(lambda r: r.count, restarts, end.count)
    return restarts._with_rows(raise_or_nan(result, restarts._rows(), options.throw))


def segment_dense(
    bound, forward: Forward, segment, *, options: Options, segment_steps: int
) -> diffrax.DenseInterpolation:
    """The dense output of the forward solve's `segment` (a row of
    `_segments.Segments.from_restarts`; the solve of `augmented_rates` with `bound`,
    in segments of `segment_steps` steps): the one the forward pass kept for the last
    segment, regenerated from its restart state for the others. A regeneration that
    fails raises (`options.throw`) or gives NaN."""
    restart = segment.restart
    # Only the last segment ends where the solve stopped.
    kept = segment.t_right == forward.t_last

    def regenerated():
        solution = solve_from(
            bound,
            restart,
            # To the next segment's start, where the forward segment stopped. Under
            # `vmap` both branches run: there the kept segment is re-solved over zero
            # length (no step).
            t1=jnp.where(kept, restart.t, segment.t_right),
            saveat=diffrax.SaveAt(t1=True, dense=True),
            max_steps=segment_steps + REGENERATION_SLACK,
            options=options,
        )
        return solution.interpolation, solution.result

    def kept_dense():
        return forward.dense, diffrax.RESULTS.successful

    dense, result = jax.lax.cond(kept, kept_dense, regenerated)
    infos = raise_or_nan(result, dense.infos, options.throw)
    return eqx.tree_at(lambda d: d.infos, dense, infos)
