"""The save-time jumps of the adjoint, applied where the backward solve reaches them.

`w` jumps at every save time, `w(t_i⁻) = w(t_i⁺) − x̄_i` ([the adjoint
equations][the-adjoint-equations]). Where the observations are not injected through
the forward steps (`_injection.py`), the backward pass ends a diffrax solve at each
save time and applies the jump to `w` itself
(`_diffrax_solves.solve_across_saves`).

Why not fold the jumps into one continuous variable `v = w + Σ_{t_i > t} x̄_i` and
solve across them in one go: `v` then carries the sum of the cotangents still ahead,
which can be orders of magnitude larger than `w` (a loss that weights a small state
by 1e4). Its error control then measures `w` against the size of `v`, and `w = v − o`
loses those digits to cancellation; an implicit solver's Newton iteration on `v` can
no longer converge to its tolerance, and on stiff kinetics (Robertson with a loss on
its saved states) the backward solve stalled at `max_steps`.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


class SavedCotangents(eqx.Module):
    """The cotangents `xbar` of the states saved at `ts` (rows of each leaf; `None`
    when the saved states are not differentiated), for a backward pass from `T` to
    `t0`: injected through the steps of each backward segment's forward re-solve
    (`in_segment`, `_injection.py`), or jumped at where a diffrax solve arrives
    (`inside`, `jump`, `jump_at_t0`)."""

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

    def inside(self, t_left, t_right) -> tuple[Array, Array]:
        """`(first, end)`: the save times in `(t_left, t_right]` are
        `ts[first:end]`. A save time at a boundary between two backward solves
        belongs to the one on its left, where the solve from the right arrives."""
        first = jnp.searchsorted(self.ts, t_left, side="right")
        end = jnp.searchsorted(self.ts, t_right, side="right")
        return first, end

    def jump(self, w: PyTree, i) -> PyTree:
        """`w(t_i⁻) = w(t_i⁺) − x̄_i`."""
        return jtu.tree_map(lambda a, rows: a - rows[i], w, self.xbar)

    def jump_at_t0(self, w: PyTree) -> PyTree:
        """`w(t0)` after the jumps of the save times at `t0`, which no solve
        arriving from the right reaches."""
        if self.xbar is None:
            return w
        at_start = self.ts == self.t0
        return jtu.tree_map(
            lambda a, rows: a - jnp.tensordot(at_start.astype(rows.dtype), rows, 1),
            w,
            self.xbar,
        )


def rows_where(keep: Array, tree: PyTree) -> PyTree:
    """`tree` with the rows (leading index) of every leaf zeroed where `keep` is
    false."""

    def leaf(a):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0)

    return jtu.tree_map(leaf, tree)
