"""Which way the solve is being differentiated: the diffrax adjoint of the inner
solves that allows it, and a clear error for forward mode of the `custom_vjp`.

The forward and backward solves of the adjoint are themselves differentiated when a
gradient is differentiated again, and diffrax's adjoints differ in what they allow:
`RecursiveCheckpointAdjoint` (its default) reverse mode only, `ForwardMode` forward
mode only. So the inner solves use `ForwardMode` under a `jax.jvp`
(forward-over-reverse: `jax.hessian`, `jax.jvp(jax.grad(F))`, [`jadjoint.hvp`][])
and `RecursiveCheckpointAdjoint` otherwise (reverse over reverse; and in a first
derivative, where they are not differentiated, both run the same `lax.while_loop`).
`DirectAdjoint` allows both, but its cost grows with `max_steps` whatever the steps
taken.
"""

from collections.abc import Callable

import diffrax
import jax.extend.core
import jax.tree_util as jtu
from jax.interpreters import ad
from jaxtyping import PyTree


def under_forward_mode() -> bool:
    """Whether the code being traced is differentiated in forward mode: a `jax.jvp`
    (`jax.jacfwd`, `jax.hessian`) encloses it.

    JAX shows the enclosing transformations through the current trace
    (`jax.extend.core.take_current_trace`) and each trace's `parent_trace`. It cannot
    see through a `jax.jit` boundary, so `jax.hessian(jax.jit(F))` fails where
    `jax.jit(jax.hessian(F))` works. `tests/test_differentiation_mode.py` fails if
    JAX stops exposing this."""
    with jax.extend.core.take_current_trace() as trace:
        while trace is not None:
            if isinstance(trace, ad.JVPTrace):
                return True
            trace = getattr(trace, "parent_trace", None)
    return False


def loop_kind() -> str:
    """The kind of `equinox.internal.while_loop` of a loop that the derivative goes
    through: `"lax"` under forward mode, which allows no other; else
    `"checkpointed"`, which reverse mode (reverse over reverse) allows."""
    return "lax" if under_forward_mode() else "checkpointed"


def inner_adjoint() -> diffrax.AbstractAdjoint:
    """The diffrax adjoint of an inner solve: see the module docstring."""
    if under_forward_mode():
        return diffrax.ForwardMode()
    return diffrax.RecursiveCheckpointAdjoint()


FORWARD_MODE = (
    "jadjoint.solve is differentiated in reverse mode: its derivative is the adjoint "
    "(a `custom_vjp`), so `jax.jvp` and `jax.jacfwd` of a function of its outputs "
    "are not supported; use `jax.grad`, `jax.vjp` or `jax.jacrev`. Second "
    "derivatives work forward over reverse (`jax.hessian(f)`, "
    "`jax.jvp(jax.grad(f), ...)`, `jadjoint.hvp(f, p, v)`) and reverse over reverse "
    "(`jax.jacrev(jax.grad(f))`). If this came from `jax.hessian` or `jadjoint.hvp` "
    "of a `jax.jit`-compiled function, apply `jax.jit` outside instead "
    "(`jax.jit(jax.hessian(f))`): a forward-mode transformation cannot be seen "
    "through a `jit` boundary."
)

# What JAX's error says when a `custom_vjp` is differentiated in forward mode with
# no JVP tracer among its inputs (under `vmap`, say).
# `tests/test_differentiation_mode.py` fails if JAX's message no longer says it.
JAX_FORWARD_MODE_ERROR = "forward-mode autodiff"


def reverse_mode_only(fn: Callable, inputs: PyTree):
    """`fn(inputs)`, with the `TypeError` `FORWARD_MODE` in place of JAX's error when
    it is differentiated in forward mode (its derivative is a `custom_vjp`)."""
    try:
        return fn(inputs)
    except (TypeError, ValueError) as error:
        jvp_input = any(isinstance(x, ad.JVPTracer) for x in jtu.tree_leaves(inputs))
        if jvp_input or JAX_FORWARD_MODE_ERROR in str(error):
            raise TypeError(FORWARD_MODE) from error
        raise
