"""`jadjoint.odeint` against the cases of jax's own `tests/ode_test.py` for
`jax.experimental.ode.odeint`, with jax's tolerances (1e-3 in float64): values
against scipy's LSODA where scipy is installed, gradients by
`jax.test_util.check_grads`, which compares them with finite differences. jax checks
every case to second order (reverse over reverse); here the pendulum, in all its
arguments, the times included, is checked to second order and the other cases to
first: each second-order check compiles reverse-over-reverse programs for about a
minute of test time, and reverse over reverse is also checked against closed forms
(`tests/test_compose.py`, `tests/test_second_order.py`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jadjoint as ja

TOL = 1e-3


def check_against_scipy(fun, y0, ts, *args, tol=TOL):
    integrate = pytest.importorskip("scipy.integrate")
    expected = integrate.odeint(
        functools.partial(fun, np), np.asarray(y0), np.asarray(ts), args
    )
    actual = ja.odeint(functools.partial(fun, jnp), jnp.asarray(y0), ts, *args)
    np.testing.assert_allclose(actual, expected, atol=tol, rtol=tol)


def pendulum(np_, y, t, m, g):
    theta, omega = y
    return np_.stack([omega, -m * omega - g * np_.sin(theta)])


def test_pendulum_gradients():
    y0 = [jnp.pi - 0.1, 0.0]
    ts = jnp.linspace(0.0, 1.0, 11)
    args = (0.25, 9.8)
    check_against_scipy(pendulum, y0, ts, *args)

    def field(y, t, m, g):  # a list state, as in jax's test
        theta, omega = y
        return [omega, -m * omega - g * jnp.sin(theta)]

    integrate = functools.partial(ja.odeint, field)
    check_grads(integrate, (y0, ts, *args), modes=["rev"], order=2, atol=TOL, rtol=TOL)


def test_pytree_state():
    y0 = (jnp.array(-0.1), jnp.array([[[0.1]]]))
    integrate = functools.partial(
        ja.odeint, lambda y, t: jax.tree_util.tree_map(jnp.negative, y)
    )
    ts = jnp.linspace(0.0, 1.0, 11)
    check_grads(integrate, (y0, ts), modes=["rev"], order=1, atol=TOL, rtol=TOL)


def test_weird_time_pendulum_gradients():
    """The dynamics depend on `t`."""

    def dynamics(np_, y, t):
        return np_.array([y[1] * -t, -1 * y[1] - 9.8 * np_.sin(y[0])])

    y0 = [jnp.pi - 0.1, 0.0]
    ts = jnp.linspace(0.0, 1.0, 11)
    check_against_scipy(dynamics, y0, ts)
    integrate = functools.partial(ja.odeint, functools.partial(dynamics, jnp))
    check_grads(
        integrate, (jnp.array(y0), ts), modes=["rev"], order=1, atol=TOL, rtol=TOL
    )


def test_decay():
    def decay(np_, y, t, arg1, arg2):
        return -np_.sqrt(t) - y + arg1 - np_.mean((y + arg2) ** 2)

    rng = np.random.RandomState(0)
    args = (rng.randn(3), rng.randn(3))
    y0 = rng.randn(3)
    ts = jnp.linspace(0.1, 0.2, 4)
    check_against_scipy(decay, y0, ts, *args)
    integrate = functools.partial(ja.odeint, functools.partial(decay, jnp))
    check_grads(integrate, (y0, ts, *args), modes=["rev"], order=1, atol=TOL, rtol=TOL)


def test_swoop():
    def swoop(np_, y, t, arg1, arg2):
        return np_.array(y - np_.sin(t) - np_.cos(t) * arg1 + arg2)

    integrate = functools.partial(ja.odeint, functools.partial(swoop, jnp))
    ts = jnp.array([0.1, 0.2])
    cases = [
        (jnp.linspace(0.1, 0.9, 10), (0.1, 0.2)),
        (jnp.linspace(1.1, 10.9, 10), (0.1, 0.3)),
    ]
    for y0, args in cases:
        check_against_scipy(swoop, y0, ts, *args)
        check_grads(
            integrate, (y0, ts, *args), modes=["rev"], order=1, atol=TOL, rtol=TOL
        )


def test_vmap_grad():
    """jax issue 2531: `grad` of a `vmap` over initial states."""

    def dx_dt(x, *args):
        return 0.1 * x

    t = jnp.array([0.0, 5.0])

    def one(x, y):
        return ja.odeint(dx_dt, jnp.array([x, y]), t)[-1].sum()

    def both(x):
        y0s = jnp.array([[x, 0.1], [x, 0.2]])
        return jax.vmap(lambda y0: ja.odeint(dx_dt, y0, t))(y0s)[:, -1].sum()

    actual = jax.jit(jax.grad(both))(2.0)
    grad_one = jax.jit(jax.grad(one))
    expected = grad_one(2.0, 0.1) + grad_one(2.0, 0.2)
    np.testing.assert_allclose(actual, expected, atol=5e-15, rtol=2e-15)
    # And against the closed form: d/dx (2 x e^{0.5}).
    np.testing.assert_allclose(actual, 2 * np.exp(0.5), rtol=1e-7)


def test_gradient_of_closed_over_value():
    """jax issue 2718: `func` closes over the differentiated value."""

    def experiment(x):
        history = ja.odeint(lambda y, t: -x * y, 1.0, np.arange(0.0, 10.0, 0.1))
        return history[-1]

    check_grads(experiment, (0.01,), modes=["rev"], order=1)


def test_gradient_of_closed_over_value_under_vmap():
    @jax.jit
    def experiment(x):
        history = ja.odeint(lambda y, t: -x * y, 1.0, np.arange(0.0, 10.0, 0.1))
        return history[-1]

    x = np.arange(0.0, 1.0, 0.01)
    values, grads = jax.vmap(jax.value_and_grad(experiment))(x)
    # y(9.9) = exp(-9.9 x): the closed form, where jax compares with a forward
    # difference at 1e-2.
    np.testing.assert_allclose(values, np.exp(-9.9 * x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads, -9.9 * np.exp(-9.9 * x), rtol=1e-5, atol=1e-8)


def test_closure_not_differentiated():
    """jax issue 3584."""

    def loss(z):
        ys = ja.odeint(lambda z, t: jnp.stack([z[0], z[1]]), z, jnp.arange(10.0))
        return jnp.sum(ys)

    # ∑_k e^{t_k} per component, d/dz of it.
    expected = np.sum(np.exp(np.arange(10.0)))
    np.testing.assert_allclose(jax.grad(loss)(jnp.ones(2)), expected, rtol=1e-6)


def test_forward_mode():
    """jax issue 3558: `jax.jacfwd` of an `odeint` solution, y = e^{kt},
    Σ_t dy/dk = Σ t e^{kt}, by the forward sensitivities (to the tolerance)."""
    t = jnp.linspace(0.0, 1.0, 50)

    def f(k):
        return ja.odeint(lambda x, t: k * x, 1.0, t).sum()

    np.testing.assert_allclose(
        jax.jacfwd(f)(3.0), jnp.sum(t * jnp.exp(3.0 * t)), rtol=1e-6
    )


def test_hessian_forward_over_reverse():
    """`jax.hessian` (forward over reverse) of y(1) = y0 e^{−k}: ∂²/∂k² = y0 e^{−k}."""

    def final(k):
        return ja.odeint(lambda y, t, k: -k * y, 2.0, jnp.array([0.0, 1.0]), k)[-1]

    # The solve is at rtol 1.4e-8; its second derivative is good to about 1e-7.
    hessian = jax.jit(jax.hessian(final))(0.5)
    np.testing.assert_allclose(hessian, 2 * np.exp(-0.5), rtol=1e-6)


def test_hmax():
    """The step-size cap lets a solve see a pulse that a free one steps over."""

    def rhs(y, t):
        return jnp.piecewise(
            t,
            [t <= 2.0, (t >= 5.0) & (t <= 7.0)],
            [
                lambda s: jnp.array(1.0),
                lambda s: jnp.array(-1.0),
                lambda s: jnp.array(0.0),
            ],
        )

    ys = ja.odeint(rhs, jnp.array(0.0), jnp.array([0.0, 5.0, 10.0]), hmax=1.0)
    assert jnp.abs(ys[1] - 2.0) < 1e-4
    assert jnp.abs(ys[2]) < 1e-4
