"""The segments `[t_left, t_right]` that the backward pass integrates one after the
other, from `T` back to `t0`, with the forward states at their right ends
(`_storage.py` lays them out).
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


class Segments(eqx.Module):
    """Backward segments `[t_left, t_right]` and the forward states at their right
    ends, batched (a leading axis on every field): `count` of the rows are used.
    `restart`: the forward solver's state at each `t_left` when the forward pass ran
    in segments (`_restarts.Restarts`), else `None`. `row(r)` is one segment, of the
    same type without the leading axis."""

    t_left: Array
    t_right: Array
    x_right: PyTree
    count: Array
    restart: PyTree = None

    @classmethod
    def between(cls, t0, t1, x0: PyTree, x1: PyTree, inner=None) -> "Segments":
        """The segments between `t0`, the times of `inner = (times, states)` (none
        when `None`) and `t1`, from the states `x0` and `x1` at the ends."""
        if inner is None:
            inner = (jnp.zeros((0,), t0.dtype), jtu.tree_map(lambda a: a[None][:0], x0))
        times, states = inner
        times = jnp.concatenate([t0[None], times, t1[None]])
        states = jtu.tree_map(
            lambda first, rows, last: jnp.concatenate([first[None], rows, last[None]]),
            x0,
            states,
            x1,
        )
        right = jtu.tree_map(lambda a: a[1:], states)
        count = jnp.asarray(times.shape[0] - 1)
        return cls(times[:-1], times[1:], right, count)

    @classmethod
    def from_restarts(cls, restarts, t_last, x_last: PyTree) -> "Segments":
        """The forward solve's own segments, from its `restarts` (`_restarts.py`)
        to where it stopped, `(t_last, x_last)`: one per row in use, which thinned
        storage makes a span of several segments."""
        rows = restarts.t.shape[0]
        following = jnp.arange(1, rows + 1) < restarts.used

        def next_row(starts, last):
            shifted = jnp.concatenate([starts[1:], starts[-1:]])
            where = following.reshape((-1,) + (1,) * (starts.ndim - 1))
            return jnp.where(where, shifted, last)

        return cls(
            restarts.t,
            next_row(restarts.t, t_last),
            jtu.tree_map(next_row, restarts.y[0], x_last),
            restarts.used,
            restarts,
        )

    @property
    def spans(self) -> bool:
        """Whether a row may stand for several forward segments (thinned storage),
        whose restart states the backward pass recovers by solving it again."""
        return self.restart is not None and self.restart.stride is not None

    def row(self, r) -> "Segments":
        """Segment `r`, with its restart state (if any)."""
        restart = None if self.restart is None else self.restart.row(r)
        rows = jtu.tree_map(lambda a: a[r], (self.t_left, self.t_right, self.x_right))
        return Segments(*rows, self.count, restart)
