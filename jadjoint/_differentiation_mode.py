"""Which way the adjoint's own solves are being differentiated, and the diffrax
adjoint that allows it: their derivatives are second derivatives of the objective."""

import diffrax
from jax._src import core as jax_core
from jax.interpreters import ad


def under_forward_mode() -> bool:
    """Whether the code being traced is differentiated in forward mode: a `jax.jvp`
    (`jax.jacfwd`, `jax.hessian`) encloses it.

    The forward and backward solves of the adjoint are themselves differentiated
    when a gradient is differentiated again, and diffrax's adjoints differ in what
    they allow: `RecursiveCheckpointAdjoint` (its default) reverse mode only,
    `ForwardMode` forward mode only. So the inner solves use `ForwardMode` under a
    `jax.jvp` (forward-over-reverse: `jax.hessian`, `jax.jvp(jax.grad(F))`,
    [`jadjoint.hvp`][]) and `RecursiveCheckpointAdjoint` otherwise (reverse over
    reverse; and in a first derivative, where they are not differentiated, both run
    the same `lax.while_loop`). `DirectAdjoint` allows both, but its cost grows with
    `max_steps` whatever the steps taken. JAX exposes the enclosing transformations
    only through its tracing context (`jax._src.core.trace_ctx`), read here; it
    cannot see through a `jax.jit` boundary, so `jax.hessian(jax.jit(F))` fails
    where `jax.jit(jax.hessian(F))` works."""
    trace = jax_core.trace_ctx.trace
    while trace is not None:
        if isinstance(trace, ad.JVPTrace):
            return True
        trace = getattr(trace, "parent_trace", None)
    return False


def inner_adjoint() -> diffrax.AbstractAdjoint:
    """The diffrax adjoint of an inner solve: see `under_forward_mode`."""
    if under_forward_mode():
        return diffrax.ForwardMode()
    return diffrax.RecursiveCheckpointAdjoint()
