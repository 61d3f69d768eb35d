"""What the forward pass stores for an adjoint method, and the segments of the
backward pass between stored states.

A method's plan is a `Storage` (the times at which the forward pass keeps `x`: the save
times, merged with any checkpoints of its own; and whether it keeps the dense
interpolation) and the `Segment`s `[t_left, t_right]` that the backward pass
integrates one after the other, from `T` back to `t0`, with the forward states at
both ends.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


class Storage(eqx.Module):
    """The times `times` at which the forward pass keeps `x` (increasing), and
    whether it keeps its dense interpolation. With checkpoints, `save_rows` and
    `checkpoint_rows` are the rows of the save times and of the checkpoints among
    them; without, both are `None` and `times` are the save times."""

    times: Array
    save_rows: Array | None
    checkpoint_rows: Array | None
    dense: bool = eqx.field(static=True)

    @classmethod
    def at_save_times(cls, ts: Array, *, dense: bool) -> "Storage":
        return cls(ts, None, None, dense)

    @classmethod
    def with_checkpoints(cls, ts: Array, checkpoints: Array) -> "Storage":
        """The save times merged with the `checkpoints`; no dense interpolation."""
        merged = jnp.concatenate([ts, checkpoints])
        order = jnp.argsort(merged, stable=True)
        rank = jnp.argsort(order)
        n = ts.shape[0]
        return cls(merged[order], rank[:n], rank[n:], False)

    def at_save_rows(self, stored: PyTree) -> PyTree:
        """The states at the save times, from the stored ones."""
        if self.save_rows is None:
            return stored
        return jtu.tree_map(lambda a: a[self.save_rows], stored)

    def at_checkpoint_rows(self, stored: PyTree) -> tuple[Array, PyTree]:
        """The checkpoint times and the states there, from the stored ones."""
        rows = self.checkpoint_rows
        return self.times[rows], jtu.tree_map(lambda a: a[rows], stored)


class Segment(eqx.Module):
    """A backward segment `[t_left, t_right]` and the forward states at its ends;
    batched (a leading axis on every field) for the whole sweep."""

    t_left: Array
    t_right: Array
    x_left: PyTree
    x_right: PyTree

    @classmethod
    def between(cls, t0, t1, x0: PyTree, x1: PyTree, inner=None) -> "Segment":
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
        left = jtu.tree_map(lambda a: a[:-1], states)
        right = jtu.tree_map(lambda a: a[1:], states)
        return cls(times[:-1], times[1:], left, right)
