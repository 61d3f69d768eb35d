"""The save-time jumps of the adjoint, folded into a continuous variable.

`w` jumps at every save time, `w(t_i⁻) = w(t_i⁺) − x̄_i` (DESIGN.md §2). Stopping the
backward solve at each save time to apply the jump costs a whole `diffeqsolve` per save
interval. Instead the backward solves integrate

    v(t) = w(t) + o(t),   o(t) = Σ_{t_i > t} x̄_i,

which is continuous (the jump of `w` and that of `o` cancel) and obeys the adjoint ODE
with `w = v − o(t)` substituted: a vector field that is discontinuous in `t` only, at
known times. diffrax integrates such fields across the jumps in one solve when the
times are given to `diffrax.ClipStepSizeController(jump_ts=...)`: it ends a step at
`prevbefore(t_i)` and starts the next at `nextafter(t_i)` (re-evaluating the vector
field of an FSAL solver), so every evaluation sees `o` on the correct side.
"""

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


class Jumps(eqx.Module):
    """The save times `t_i` and the suffix sums `s_k = Σ_{i ≥ k} x̄_i` (`s_N = 0`), so
    that `o(t) = s_k` with `k` the number of save times `≤ t`. `suffix` is `None` when
    the saved states are not differentiated: then `v = w`."""

    ts: Array
    suffix: PyTree | None

    @classmethod
    def from_cotangents(cls, ts: Array, xbar: PyTree | None) -> "Jumps":
        if xbar is None:
            return cls(ts, None)

        def suffix_sums(rows):
            sums = jnp.cumsum(rows[::-1], axis=0)[::-1]
            return jnp.concatenate([sums, jnp.zeros_like(rows[:1])])

        return cls(ts, jtu.tree_map(suffix_sums, xbar))

    def w(self, v: PyTree, t) -> PyTree:
        """`w(t) = v(t) − o(t)`."""
        if self.suffix is None:
            return v
        k = jnp.searchsorted(self.ts, t, side="right")
        return jtu.tree_map(lambda a, s: a - s[k], v, self.suffix)

    def w_at_start(self, v0: PyTree) -> PyTree:
        """`w(t0)` after every jump, save times at `t0` included: `v(t0) − s_0`."""
        if self.suffix is None:
            return v0
        return jtu.tree_map(lambda a, s: a - s[0], v0, self.suffix)

    @property
    def count(self) -> int:
        return 0 if self.suffix is None else self.ts.shape[0]

    def controller(
        self, controller: diffrax.PIDController, t_left, t_right
    ) -> diffrax.AbstractStepSizeController:
        """`controller`, made to step exactly to the save times strictly inside
        `(t_left, t_right)`; the others are moved to infinity, where they never
        clip a step."""
        if self.suffix is None:
            return controller
        inside = (self.ts > t_left) & (self.ts < t_right)
        jump_ts = jnp.where(inside, self.ts, jnp.inf)
        return diffrax.ClipStepSizeController(controller, jump_ts=jump_ts)


class StepJumps(eqx.Module):
    """Jumps of `w` at forward step starts (the injected observations of
    `_injection.py`): slot `i < count` holds the `x̄` (rows of `xbar`; `None` when
    the saved states are not differentiated) subtracted at the start of forward step
    `steps[i]`, in increasing order."""

    steps: Array
    xbar: PyTree | None
    count: Array

    def w_at_start(self, w: PyTree) -> PyTree:
        """`w(t0)`: integrated along the steps, every jump is applied already."""
        return w


class SavedCotangents(eqx.Module):
    """The cotangents `xbar` of the states saved at `ts`, kept for injection through
    the steps of each backward segment's forward re-solve (`_injection.py`), once
    that segment is regenerated. A save time on a segment boundary belongs to the
    segment on its left; one at `t0`, to the first segment."""

    t0: Array
    ts: Array
    xbar: PyTree | None

    def in_segment(self, t_left, t_right) -> tuple[Array, PyTree | None]:
        """The save times clipped into `[t_left, t_right]` and the cotangents of
        those that belong to that segment (zero for the others, whose clipped times
        only keep the interpolant evaluations finite)."""
        ts = jnp.clip(self.ts, t_left, t_right)
        if self.xbar is None:
            return ts, None
        inside = (self.ts <= t_right) & (
            (self.ts > t_left) | ((self.ts == t_left) & (t_left == self.t0))
        )
        return ts, rows_where(inside, self.xbar)

    def w_at_start(self, w: PyTree) -> PyTree:
        """`w(t0)`: every segment has applied its jumps already."""
        return w


def rows_where(keep: Array, tree: PyTree) -> PyTree:
    """`tree` with the rows (leading index) of every leaf zeroed where `keep` is
    false."""

    def leaf(a):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0)

    return jtu.tree_map(leaf, tree)


def below(t: jax.Array) -> jax.Array:
    """The float just below `t`, where a backward solve from a save time `t` starts:
    the side on which that save time's jump has been applied. Its derivative is 1
    (equinox's `prevbefore`), so that the solve's start moves with `t` when the
    gradient is differentiated with respect to the times."""
    return eqxi.prevbefore(t)
