"""Python numbers, NumPy scalars and 0-d arrays as inputs: the same solve and the
same derivatives as arrays, under `grad`, `jit(grad)`, `vmap(grad)`, `hessian` and
`ja.hvp`. References are the closed form of the decay `ẋ = −k x + c`, differentiated
by JAX (an independent formula, not the solver)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jadjoint as ja

T = 2.0
problem = ja.Problem.explicit(
    lambda x, p, t: -p[0] * x + p[1], f=lambda x, p, t: jnp.sum(x**2)
)


def closed_form(k, x0, c=0.0):
    """`∫_0^T x² dt + x(T)` for `x = c/k + (x0 − c/k) e^{−kt}`."""
    a, b = c / k, x0 - c / k
    integral = (
        a**2 * T
        + 2 * a * b * (1 - jnp.exp(-k * T)) / k
        + b**2 * (1 - jnp.exp(-2 * k * T)) / (2 * k)
    )
    return integral + a + b * jnp.exp(-k * T)


def loss(p, x0=1.0):
    """`p` is `k` (with `c = 0`) or the pair `(k, c)`."""
    pair = p if isinstance(p, tuple) else (p, 0.0)
    solution = ja.solve(problem, pair, 0.0, T, x0, rtol=1e-10, atol=1e-10)
    return solution.cost + solution.xs[-1]


def reference(p, x0=1.0):
    return closed_form(p[0], x0, p[1]) if isinstance(p, tuple) else closed_form(p, x0)


KINDS = pytest.mark.parametrize(
    "p",
    [0.7, np.float64(0.7), jnp.array(0.7), (0.7, 0.2)],
    ids=["float", "numpy-scalar", "0d-array", "tuple-of-floats"],
)
# The solve is at rtol 1e-10; its gradient is accurate to about the same, relative.
RTOL = 1e-7
# Compiled once per module: kinds with the same abstract type (a NumPy scalar and a
# 0-d array) share the compiled code, which keeps the suite's compile time down.
JIT_GRAD = jax.jit(jax.grad(loss))
VMAP_GRAD = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))
HESSIAN = jax.jit(jax.hessian(loss))


def assert_tree_close(actual, expected):
    for a, e in zip(
        jax.tree_util.tree_leaves(actual),
        jax.tree_util.tree_leaves(expected),
        strict=True,
    ):
        np.testing.assert_allclose(a, e, rtol=RTOL)


@KINDS
def test_grad(p):
    assert_tree_close(jax.grad(loss)(p), jax.grad(reference)(p))


@KINDS
def test_jit_grad(p):
    assert_tree_close(JIT_GRAD(p), jax.grad(reference)(p))


@KINDS
def test_vmap_grad(p):
    x0s = jnp.array([0.5, 1.0, 2.0])
    expected = jax.vmap(jax.grad(reference), in_axes=(None, 0))(p, x0s)
    assert_tree_close(VMAP_GRAD(p, x0s), expected)


@KINDS
def test_hessian(p):
    assert_tree_close(HESSIAN(p), jax.hessian(reference)(p))


def test_hvp_of_a_python_float():
    hvp = jax.jit(lambda k, v: ja.hvp(loss, k, v))
    np.testing.assert_allclose(hvp(0.7, 1.0), jax.hessian(reference)(0.7), rtol=RTOL)


def test_integers():
    """An integer leaf that is not differentiated is passed through; differentiating
    one is JAX's own error; integer times and states are floating-point values."""
    np.testing.assert_allclose(jax.jit(loss)((1, 0)), reference((1.0, 0.0)), RTOL)
    with pytest.raises(TypeError, match="grad requires real- or complex-valued"):
        jax.grad(loss)(1)
    counted = ja.Problem.explicit(lambda x, p, t: -p["k"] * x ** p["n"])
    xs = lambda k: ja.solve(counted, {"k": k, "n": 1}, 0, 2, 1, saveat=[1, 2]).xs
    value, grad = jax.jit(jax.value_and_grad(lambda k: xs(k)[-1]))(0.7)
    np.testing.assert_allclose(value, np.exp(-1.4), rtol=1e-5)
    np.testing.assert_allclose(grad, -2 * np.exp(-1.4), rtol=1e-5)


def test_python_numbers_for_state_and_times():
    """`x0`, `t1` and `saveat` as Python numbers and lists, differentiated."""

    def final_state(x0, t1):
        return ja.solve(problem, (0.7, 0.0), 0, t1, x0, saveat=[0.5, t1]).xs[-1]

    grads = jax.grad(final_state, argnums=(0, 1))(1.0, 2.0)
    np.testing.assert_allclose(grads, [np.exp(-1.4), -0.7 * np.exp(-1.4)], rtol=1e-5)
