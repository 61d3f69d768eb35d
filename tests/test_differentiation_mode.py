"""What jadjoint reads of JAX's tracing: these fail loudly if JAX changes it.

`under_forward_mode` decides the diffrax adjoint of the inner solves (a wrong answer
breaks every second derivative).
"""

import diffrax
import jax
import jax.extend.core
import jax.numpy as jnp
import pytest

from jadjoint._differentiation_mode import inner_adjoint, under_forward_mode


def recording(seen: list):
    def f(x):
        seen.append(under_forward_mode())
        return jnp.sum(jnp.sin(x))

    return f


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lambda f: f, False),
        (jax.grad, False),
        (lambda f: jax.jit(jax.grad(f)), False),
        (lambda f: jax.vmap(jax.grad(f)), False),
        (lambda f: jax.jacrev(jax.grad(f)), False),
        (lambda f: lambda x: jax.jvp(f, (x,), (x,))[1], True),
        (jax.hessian, True),
        (lambda f: jax.jit(jax.hessian(f)), True),
        (lambda f: jax.vmap(jax.hessian(f)), True),
        (lambda f: jax.hessian(lambda x: jnp.sum(jax.vmap(f)(x))), True),
    ],
    ids=[
        "plain",
        "grad",
        "jit-grad",
        "vmap-grad",
        "jacrev-grad",
        "jvp",
        "hessian",
        "jit-hessian",
        "vmap-hessian",
        "hessian-vmap",
    ],
)
def test_forward_mode_is_seen(transform, expected):
    seen = []
    transform(recording(seen))(jnp.ones(2))
    assert seen and all(s == expected for s in seen), seen


def test_inner_adjoint_follows_the_mode():
    kinds = []

    def f(x):
        kinds.append(type(inner_adjoint()))
        return jnp.sin(x)

    jax.grad(f)(1.0)
    jax.jvp(f, (1.0,), (1.0,))
    assert kinds == [diffrax.RecursiveCheckpointAdjoint, diffrax.ForwardMode]


def test_a_linearised_custom_jvp_rule_runs_in_a_partial_evaluation():
    """`outside_linearisation` recognises the traces that `jax.grad` of a gradient
    runs a `custom_jvp` rule in by these names."""
    seen = []

    @jax.custom_jvp
    def f(x):
        return x**2

    @f.defjvp
    def rule(primals, tangents):
        with jax.extend.core.take_current_trace() as trace:
            seen.append((type(trace).__name__, type(trace.parent_trace).__name__))
        return primals[0] ** 2, 2 * primals[0] * tangents[0]

    jax.grad(jax.grad(f))(1.0)
    assert ("JaxprTrace", "LinearizeTrace") in seen, seen
