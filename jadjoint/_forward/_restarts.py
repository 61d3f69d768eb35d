"""Two-level storage (`docs/how-it-works.md`): the forward solve in segments of at
most `B = segment_steps` steps with a restartable solver state stored at the start of
each, and one segment's dense output regenerated at a time on the backward pass.

diffrax's dense output is a buffer of `max_steps` rows whatever the steps taken, and
under `jax.vmap` each step of the loop selects over all of it for every member. Here
the forward pass runs `diffeqsolve` once per segment, `max_steps = B`, restarting
each from where the last stopped (its time, state and step size): memory is
`⌈max_steps / B⌉` restart rows (a state, two numbers and the segment's `B + 1` step
times each) plus one segment's `B` dense rows. A solve of at most `B` steps keeps its
dense output and recomputes nothing; a longer one recomputes every segment but the
last once, on the backward pass (CVODES's and diffsol's scheme), retaking its stored
steps with `solver.step` (`_retaken_dense`): no step-size control, no rejected steps,
and none of `diffeqsolve`'s machinery compiled a second time.

So that the rows do not grow with `max_steps` either, a solve that may take more than
`THINNING_STEPS` steps keeps `R = ⌈THINNING_STEPS / B⌉` rows: when they are full,
every other row goes and a row stands for twice as many segments from then on
(`stride`). The backward pass solves each such span again from its row, storing its
segments' restart states in a buffer of one span's rows, and goes through them as
above. Memory is then `R` rows, one span's rows and one segment's dense output,
and a solve that was thinned pays one more forward solve.

A segment restarts with its first step at the length of the last accepted one: the
step-size proposal is not part of diffrax's saved state. The restart state being
stored, a re-solve of a span takes the very same steps.
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
from .._solvers import BDF
from ._integrate import (
    STATISTICS,
    Forward,
    augmented_rates,
    cost_dtype,
    forward_preconditioning,
)
from ._restart_state import (
    Restarts,
    following_restart,
    solve_from,
    solved,
    storage_rows,
    stored,
)


def _initial(bound, x0, *, t0, t1, dt0, options, segment_steps) -> Restarts:
    """The restart state at `t0`, with the step-size controller's first step (its
    estimate when `dt0` is `None`), as `diffeqsolve` gets it itself
    (`stepsize_controller.init`, public)."""
    y0 = (x0, jnp.zeros((), cost_dtype(x0)))
    terms = diffrax.ODETerm(augmented_rates)
    solver = options.configured_solver(approximate_inverse=forward_preconditioning)
    t_next, _ = options.controller().init(
        terms, t0, t1, y0, dt0, bound, solver.func, solver.error_order(terms)
    )
    t_next = jnp.minimum(t_next, t1)
    solver_state = None
    if keeps_solver_state(solver):
        solver_state = solver.init(terms, t0, t_next, y0, bound)
    return Restarts(
        t=t0,
        y=y0,
        # A solve of no length takes no step, whatever its first step's length.
        dt=jnp.where(t1 > t0, t_next - t0, 1),
        step_times=jnp.full(segment_steps + 1, jnp.inf, jnp.result_type(t0)),
        count=jnp.zeros((), jnp.int32),
        solver_state=solver_state,
    )


def keeps_solver_state(solver: diffrax.AbstractSolver) -> bool:
    """Whether a restart keeps the solver's state: for a solver whose state is its
    history (`Restarts`)."""
    return isinstance(solver, BDF)


def _blank(shape: jax.ShapeDtypeStruct, rows: int | None = None) -> Array:
    """An unused buffer: `inf` (as diffrax fills them), zero if integer; with
    `rows`, that many rows."""
    if rows is not None:
        shape = jax.ShapeDtypeStruct((rows,) + shape.shape[1:], shape.dtype)
    if jnp.issubdtype(shape.dtype, jnp.inexact):
        return jnp.full(shape.shape, jnp.inf, shape.dtype)
    return jnp.zeros(shape.shape, shape.dtype)


def _rows_where(keep: Array, new: PyTree, old: PyTree) -> PyTree:
    def leaf(a, b):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jtu.tree_map(leaf, new, old)


def integrate_in_segments(
    bound, x0: PyTree, *, t0, t1, ts, dt0, options: Options, segment_steps: int
) -> Forward:
    """The forward solve of `_forward.integrate`, in segments of at most
    `segment_steps` steps: its `restarts` hold the state at each segment's start and
    the segment's step times, its `dense` the last segment's dense output. The solve
    may take `max_steps` steps in all."""
    rows, span = storage_rows(options.max_steps, segment_steps)
    first = _initial(
        bound, x0, t0=t0, t1=t1, dt0=dt0, options=options, segment_steps=segment_steps
    )
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
        restarts=(
            first.blank(rows)
            if span is None
            else first.without_step_times().blank(rows, jnp.ones((), first.count.dtype))
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
            restarts=stored(state["restarts"], r, solved(restart, solution)),
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
        dense=state["dense"],
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
        t=first.t,
        y=first.y,
        dt=first.dt,
        step_times=jnp.full(segment_steps + 1, jnp.inf, first.t.dtype),
        count=jnp.zeros_like(first.count),
        solver_state=first.solver_state,
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
        restarts = restarts.with_row(restart.count, solved(restart, solution))
        return following, restarts, short, result

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
    segment, regenerated from its restart state for the others by retaking its
    stored steps (`_retaken_dense`). A regeneration that fails raises
    (`options.throw`) or gives NaN."""
    restart = segment.restart
    # Only the last segment ends where the solve stopped.
    kept = segment.t_right == forward.t_last

    def regenerated():
        # Under `vmap` both branches run: there the kept segment retakes no step.
        return _retaken_dense(bound, restart, forward.dense, skip=kept, options=options)

    def kept_dense():
        return forward.dense, diffrax.RESULTS.successful

    dense, result = jax.lax.cond(kept, kept_dense, regenerated)
    infos = raise_or_nan(result, dense.infos, options.throw)
    return eqx.tree_at(lambda d: d.infos, dense, infos)


def _retaken_dense(
    bound, restart: Restarts, like: diffrax.DenseInterpolation, *, skip, options
) -> tuple[diffrax.DenseInterpolation, diffrax.RESULTS]:
    """The dense output of the segment from `restart`, shaped like `like` (a
    segment's), by `solver.step` (public) from `restart.y` over the stored
    `restart.step_times`, and the steps' outcome; no step with `skip`.

    The steps are the forward segment's accepted ones, so nothing is rejected and no
    step-size controller runs: one step per accepted step, where a `diffeqsolve`
    from the restart state would retake the rejected ones too and compile its whole
    loop a second time. A loop of our own because diffrax has no solve over given
    steps that keeps the dense output of a solver with an error estimate (its
    `StepTo` controller would run that same loop)."""
    solver = options.stepping_solver(forward_preconditioning)
    terms = diffrax.ODETerm(augmented_rates)
    times = restart.step_times
    steps = jnp.where(skip, 0, jnp.sum(jnp.isfinite(times)) - 1)
    # The first stage of a first-same-as-last solver is evaluated afresh here, as
    # `diffeqsolve` does at a restart; a stored state is the forward segment's own.
    solver_state = restart.solver_state
    if solver_state is None:
        solver_state = solver.init(terms, times[0], times[1], restart.y, bound)
    infos = jtu.tree_map(jnp.zeros_like, like.infos)

    def body(carry):
        k, y, solver_state, infos, result = carry
        y, _, info, solver_state, step_result = solver.step(
            terms, times[k], times[k + 1], y, bound, solver_state, made_jump=False
        )
        infos = jtu.tree_map(lambda rows, row: rows.at[k].set(row), infos, info)
        result = diffrax.RESULTS.where(
            result == diffrax.RESULTS.successful, step_result, result
        )
        return k + 1, y, solver_state, infos, result

    carry = (0, restart.y, solver_state, infos, diffrax.RESULTS.successful)
    _, _, _, infos, result = eqxi.while_loop(
        lambda carry: carry[0] < steps,
        body,
        carry,
        max_steps=like.ts.shape[0] - 1,
        kind=loop_kind(),
    )
    dense = eqx.tree_at(
        lambda d: (d.ts, d.ts_size, d.infos, d.t0_if_trivial, d.y0_if_trivial),
        like,
        (times, steps + 1, infos, restart.t, restart.y),
    )
    return dense, result
