"""`check_grad` finds right gradients right and wrong gradients wrong."""

import jax
import jax.numpy as jnp
import pytest

import jadjoint as ja

problem = ja.Problem.explicit(
    lambda x, p, t: -p["k"] * x + p["b"], f=lambda x, p, t: jnp.sum(x**2)
)
P = {"k": jnp.array(0.7), "b": jnp.array([0.1, 0.2, 0.3])}


def loss(p, x0):
    ts = jnp.linspace(0.5, 2.0, 4)
    solution = ja.solve(problem, p, 0.0, 2.0, x0, saveat=ts, rtol=1e-10, atol=1e-10)
    return solution.cost + jnp.sum(solution.xs**2)


@jax.custom_vjp
def doubled_gradient(x):
    return x


doubled_gradient.defvjp(lambda x: (x, None), lambda _, g: (2 * g,))


def test_report_for_a_correct_gradient():
    """Solves at 1e-10: adjoint vs RCA ~1e-10; finite differences ~1e-8."""
    report = ja.check_grad(loss, P, jnp.ones(3), tol=1e-6)
    assert set(report.finite_difference) == {"['b']", "['k']"}
    assert max(report.reference.values()) < 1e-8
    assert "worst" in str(report)


def test_wrong_gradient_is_caught():
    wrong = lambda p, x0: loss(jax.tree.map(doubled_gradient, p), x0)
    with pytest.raises(AssertionError, match="gradient check failed"):
        ja.check_grad(wrong, P, jnp.ones(3), tol=1e-4)


def test_reference_unavailable_for_a_cached_jitted_function():
    jitted = jax.jit(loss)
    report = ja.check_grad(jitted, P, jnp.ones(3), argnums=1)
    assert report.reference is None
    assert report.worst[1] < 1e-6
