"""Which way the solve is being differentiated, and the diffrax adjoint of the inner
solves that allows it.

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

import contextlib
import contextvars
from collections.abc import Iterator

import diffrax
import jax.extend.core
from jax.interpreters import ad

_forward_mode_outside: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jadjoint_forward_mode_outside", default=False
)


def under_forward_mode() -> bool:
    """Whether the code being traced is differentiated in forward mode: a `jax.jvp`
    (`jax.jacfwd`, `jax.hessian`) encloses it.

    JAX shows the enclosing transformations through the current trace
    (`jax.extend.core.take_current_trace`) and each trace's `parent_trace`. It cannot
    see through a `jax.jit` boundary, so `jax.hessian(jax.jit(F))` fails where
    `jax.jit(jax.hessian(F))` works. `tests/test_differentiation_mode.py` fails if
    JAX stops exposing this. Nor can it see into a loop's body, which JAX traces
    on its own: there `seen_inside_loop` carries it in."""
    if _forward_mode_outside.get():
        return True
    with jax.extend.core.take_current_trace() as trace:
        while trace is not None:
            if isinstance(trace, ad.JVPTrace):
                return True
            trace = getattr(trace, "parent_trace", None)
    return False


@contextlib.contextmanager
def seen_inside_loop() -> Iterator[None]:
    """Around a `lax.scan` whose body holds solves: the differentiation mode of the
    scan, which JAX applies to the body after tracing it on its own (within the
    same call), seen by `under_forward_mode` inside the body too."""
    token = _forward_mode_outside.set(under_forward_mode())
    try:
        yield
    finally:
        _forward_mode_outside.reset(token)


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


@contextlib.contextmanager
def outside_linearisation() -> Iterator[None]:
    """Runs what it encloses in the reverse mode around a linearisation, when a
    `custom_jvp` rule runs inside one that is itself differentiated in reverse mode
    (`jax.grad` of a gradient).

    `jax.linearize` (and so `jax.grad`) runs a `custom_jvp` rule inside a partial
    evaluation (a `JaxprTrace`), which passes whatever depends on the primals alone
    on to the enclosing trace. A computation of primals alone can run there
    directly, with the same result. Through the partial evaluation, the constants
    of equinox's checkpointed loops reach their reverse rule as Python scalars,
    which it cannot take, when an enclosing reverse mode (a `LinearizeTrace`)
    differentiates the loop. Only then: run so under `jax.jit` with a first
    derivative, a computation left constants that a second call of the compiled
    function did not pass. `tests/test_differentiation_mode.py` fails if JAX stops
    naming the traces so."""
    with jax.extend.core.take_current_trace() as trace:
        pass
    parent = getattr(trace, "parent_trace", None)
    if (
        type(trace).__name__ == "JaxprTrace"
        and type(parent).__name__ == "LinearizeTrace"
    ):
        with jax.extend.core.set_current_trace(parent):
            yield
    else:
        yield
