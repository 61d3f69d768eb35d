"""The restartable solver state of segmented forward storage (`_restarts.py`), one
segment's solve from it, and how the states are stored: one row per segment, or,
thinned, one row per `stride` segments (`docs/how-it-works.md`)."""

from dataclasses import fields

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._differentiation_mode import inner_adjoint
from .._numerics import dense_output
from ._integrate import augmented_rates, forward_preconditioning

# The restart rows are thinned only in a solve that may take more steps than this
# (diffrax's default `max_steps`): up to it, storage is as it was without thinning,
# whatever `segment_steps`, and so is the compiled code.
THINNING_STEPS = 4096


def storage_rows(max_steps: int, segment_steps: int) -> tuple[int, int | None]:
    """`(rows, span)`: the restart rows of a solve of at most `max_steps` steps in
    segments of `segment_steps`, and, when they are thinned, the most segments one
    row may come to stand for (a power of two; `None` when never thinned). Thinning
    keeps `⌈THINNING_STEPS / segment_steps⌉` rows (an even number) however large
    `max_steps` is."""
    segments = -(-max_steps // segment_steps)
    rows = -(-THINNING_STEPS // segment_steps)
    rows += rows % 2
    if segments <= rows:
        return segments, None
    span = 1
    while rows * span < segments:
        span *= 2
    return rows, span


class Restarts(eqx.Module):
    """The solver's state at the start of each forward segment (a leading axis of
    rows; `count` are used): the time `t`, the state `y = (x, ∫ f dt)` and the
    first step's length `dt`, so that `diffeqsolve` retakes the segment's steps;
    and `step_times`, the times of the segment's accepted steps from `t` (`inf`
    past its last, as diffrax pads; all `inf` until the segment is solved), so that
    the backward pass retakes them without step-size control. Thinned rows keep no
    step times (an empty axis): the backward pass solves their spans again, and
    records them then.

    The solver's state (`solver_state`) is kept only for a solver whose state is
    its history (`BDF`'s difference table: a restart from the state alone would
    start again at order one). A one-step solver evaluates its first stage afresh
    (one evaluation of the vector field, where a first-same-as-last solver would
    have reused the last stage of the segment before; a stored one would double the
    row). The step-size controller's state is not kept: the `PIDController` of
    `Options.controller` is an integral controller (diffrax's default
    coefficients), whose proposal depends on the current error only."""

    t: Array
    y: PyTree
    dt: Array
    step_times: Array
    count: Array
    stride: Array | None = None
    solver_state: PyTree = None

    def _rows(self) -> dict:
        names = [f.name for f in fields(self) if f.name not in ("count", "stride")]
        return {name: getattr(self, name) for name in names}

    def _with_rows(self, rows: dict) -> "Restarts":
        return Restarts(**rows, count=self.count, stride=self.stride)

    def blank(self, rows: int, stride: Array | None = None) -> "Restarts":
        """`rows` unused rows shaped like this one state, no segment counted; with
        `stride` (thinned storage), its first value."""
        rows = jtu.tree_map(
            lambda a: jnp.zeros((rows,) + a.shape, a.dtype), self._rows()
        )
        return Restarts(**rows, count=jnp.zeros_like(self.count), stride=stride)

    @property
    def used(self) -> Array:
        """The rows in use: one per segment, or, thinned, one per `stride`
        segments."""
        if self.stride is None:
            return self.count
        return -(-self.count // self.stride)

    def row(self, r) -> "Restarts":
        """Row `r` (`count` and `stride` unchanged)."""
        return self._with_rows(jtu.tree_map(lambda a: a[r], self._rows()))

    def with_row(self, r, row: "Restarts") -> "Restarts":
        """Row `r` set to `row`; nothing when `r` is past the last row."""
        rows = jtu.tree_map(
            lambda a, v: a.at[r].set(v, mode="drop"), self._rows(), row._rows()
        )
        return self._with_rows(rows)

    def without_step_times(self) -> "Restarts":
        """The same states with no step times, as thinned rows keep them."""
        return eqx.tree_at(lambda r: r.step_times, self, self.step_times[..., :0])

    def thinned(self) -> "Restarts":
        """Every other row kept, in the first half of the rows, and `stride`
        doubled."""
        rows = jtu.tree_map(
            lambda a: a[jnp.minimum(2 * jnp.arange(a.shape[0]), a.shape[0] - 1)],
            self._rows(),
        )
        return Restarts(**rows, count=self.count, stride=2 * self.stride)


def solve_from(bound, restart: Restarts, *, t1, saveat, max_steps, options):
    """One `diffeqsolve` of `augmented_rates` (its `args`: `bound`, a
    `BoundProblem`) from `restart` towards `t1`, at most `max_steps` steps; from
    the stored solver state and saving the final one, where one is kept."""
    keeps_state = restart.solver_state is not None
    return diffrax.diffeqsolve(
        diffrax.ODETerm(augmented_rates),
        options.configured_solver(approximate_inverse=forward_preconditioning),
        restart.t,
        t1,
        restart.dt,
        restart.y,
        args=bound,
        saveat=eqx.tree_at(lambda s: s.solver_state, saveat, keeps_state),
        solver_state=restart.solver_state,
        stepsize_controller=options.controller(),
        max_steps=max_steps,
        adjoint=inner_adjoint(),
        throw=False,
    )


def following_restart(solution: diffrax.Solution, restart: Restarts, t1):
    """After the segment `solution` (dense output saved) from `restart`: the restart
    state of the next segment, whether the segment stopped short of `t1` (at its
    step limit), and its outcome."""
    dense = solution.interpolation
    accepted = dense.ts_size - 1
    # Where the segment stopped: diffrax saves `t1` only when it gets there, so
    # elsewhere from the dense output's last step; where it took none (a solve of
    # no length, whose dense output diffrax places at other times), where it began.
    stepped = accepted >= 1
    t_end = jnp.where(stepped, dense.ts[accepted], restart.t)
    last_dt = dense.ts[accepted] - dense.ts[jnp.maximum(accepted - 1, 0)]
    short = (solution.result == diffrax.RESULTS.max_steps_reached) & (t_end < t1)
    result = diffrax.RESULTS.where(
        short, diffrax.RESULTS.max_steps_reached, solution.result
    )
    following = Restarts(
        t=t_end,
        y=jtu.tree_map(
            lambda a, b: jnp.where(stepped, a, b),
            dense_output.evaluate(dense, t_end),
            restart.y,
        ),
        # The first step of the next segment: the last accepted one; after a
        # segment that accepted none, a quarter of its first (diffrax's proposal
        # after a rejection is not saved).
        dt=jnp.where(stepped, last_dt, restart.dt / 4),
        step_times=jnp.full_like(restart.step_times, jnp.inf),
        count=restart.count + 1,
        solver_state=None if restart.solver_state is None else solution.solver_state,
    )
    return following, short, result


def solved(restart: Restarts, solution: diffrax.Solution) -> Restarts:
    """`restart` with the step times of its segment, `solution` (dense output
    saved)."""
    return eqx.tree_at(lambda r: r.step_times, restart, solution.interpolation.ts)


def stored(restarts: Restarts, r, restart: Restarts) -> Restarts:
    """`restarts` with the start of segment `r`. Thinned storage (`stride` not
    `None`) keeps the start of every `stride`-th segment; when its rows are full,
    every other row goes and `stride` doubles."""
    if restarts.stride is None:
        return restarts.with_row(r, restart)
    restart = restart.without_step_times()
    rows = restarts.t.shape[0]
    full = r == rows * restarts.stride
    restarts = jax.lax.cond(full, Restarts.thinned, lambda r: r, restarts)
    kept = r % restarts.stride == 0
    return restarts.with_row(jnp.where(kept, r // restarts.stride, rows), restart)
