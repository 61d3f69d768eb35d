"""A loop over a traced number of items, a fixed batch of them per iteration, that
every differentiation mode allows."""

from collections.abc import Callable

import equinox.internal as eqxi
import jax.numpy as jnp
from jaxtyping import PyTree

from .._differentiation_mode import loop_kind


def over_batches(
    body: Callable, carry: PyTree, count, capacity: int, batch: int
) -> PyTree:
    """`carry` after `body(indices, real, carry)` for each batch of item indices
    `b · batch + [0, …, batch)`, `b < ⌈count / batch⌉`, `real` marking those below
    `count` (the traced number of items; at most `capacity`).

    A batch vmapped inside one iteration costs less in loop overhead than an
    iteration per item on small problems. The trip count is traced: a
    `lax.while_loop` (and `fori_loop` with a traced bound) cannot be
    reverse-differentiated, which a gradient of the gradient needs, and equinox's
    checkpointed loop cannot be forward-differentiated, which a Hessian-vector
    product needs; so the kind follows the mode, as for the inner diffrax solves
    (`_differentiation_mode.py`). Undifferentiated, both run as one
    `lax.while_loop`."""
    batches = -(-count // batch)
    kind = loop_kind()

    def step(state):
        b, carry = state
        indices = b * batch + jnp.arange(batch)
        return b + 1, body(indices, indices < count, carry)

    _, carry = eqxi.while_loop(
        lambda state: state[0] < batches,
        step,
        (jnp.zeros((), jnp.result_type(batches)), carry),
        max_steps=max(-(-capacity // batch), 1),
        kind=kind,
    )
    return carry
