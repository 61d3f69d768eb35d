"""Forward mode through `solve`: `jax.jacfwd`, `jax.jvp` and `jax.linearize` by the
forward sensitivities, on every problem form, each with an integral cost,
observations and (where the form has one) `g`, under `jit` and `vmap`.

References: `jax.jacrev` (the continuous adjoint, under its own error control) and
central differences of the outputs. Both solves run at rtol 1e-10, so the two
derivatives, each within about that of the exact one, agree to 1e-8. The
differences (step 1e-4 relative) carry the solve's error divided by the step, about
1e-6: they are checked to 1e-5, which still catches a wrong term.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from jax.flatten_util import ravel_pytree

import jadjoint as ja

TS = jnp.array([0.3, 0.8, 1.5])
TOL = dict(rtol=1e-10, atol=1e-10)


def lotka_volterra(x, p, t):
    return jnp.stack(
        [p[0] * x[0] - p[1] * x[0] * x[1], -p[2] * x[1] + p[3] * x[0] * x[1]]
    )


def explicit(theta):
    """`x0` differentiated directly (no `g`)."""
    p, x0 = theta[:4], theta[4:]
    problem = ja.Problem.explicit(lotka_volterra, f=lambda x, p, t: x[0] * x[1])
    return ja.solve(problem, p, 0.0, 1.5, x0, saveat=TS, **TOL)


def implicit(theta):
    """`h` nonlinear in `ẋ`, `g(x0, p) = x0 − θ[4:]`."""
    problem = ja.Problem(
        lambda x, xdot, p, t: xdot + 0.2 * jnp.tanh(xdot) - lotka_volterra(x, p, t),
        f=lambda x, p, t: jnp.sum(x**2),
        g=lambda x0, p: x0 - p[4:],
    )
    return ja.solve(problem, theta, 0.0, 1.5, jnp.ones(2), saveat=TS, **TOL)


def mass_matrix(theta):
    """`M(x, p, t) ẋ = v`, `M` nonsingular and state-dependent."""
    p, x0 = theta[:4], theta[4:]
    mass = lambda x, p, t: jnp.array([[1.0 + 0.1 * x[0] ** 2, 0.2], [0.0, 2.0]])
    problem = ja.Problem.mass_matrix(
        mass, lotka_volterra, f=lambda x, p, t: jnp.sin(t) * x[1]
    )
    return ja.solve(problem, p, 0.0, 1.5, x0, saveat=TS, **TOL)


def semi_explicit(theta):
    """`ẏ = a`, `0 = b` with `z` cubic, `g` on `y0`."""
    a = lambda y, z, p, t: jnp.stack([-p[0] * y[0] + z[0], -y[1] + y[0] * z[0]])
    b = lambda y, z, p, t: z + z**3 - p[1] * y[0]
    g = lambda x, p: jnp.stack([x[0][0] - p[2] * x[0][1], x[0][1] - p[3]])
    problem = ja.Problem.semi_explicit(
        a, b, f=lambda x, p, t: x[0][1] ** 2 + x[1][0] ** 2, g=g
    )
    x0 = (jnp.ones(2), jnp.zeros(1))
    return ja.solve(problem, theta, 0.0, 1.5, x0, saveat=TS, **TOL)


def algebraic_source(x, p, t):
    return jnp.stack([-p[0] * x[0] + x[1], x[1] - p[1] * x[0] ** 2])


# A constant singular `M` is split when the problem is built, outside `jit`.
SINGULAR = ja.Problem.mass_matrix(
    jnp.diag(jnp.array([1.0, 0.0])),
    algebraic_source,
    f=lambda x, p, t: x[0] ** 2 + jnp.cos(t) * x[1],
)


def singular_mass_matrix(theta):
    """A constant singular `M`: `ẏ = −p0 y + z`, `0 = z − p1 y²`."""
    p, y0 = theta[:2], theta[2:]
    x0 = jnp.stack([y0[0], 0.0])
    return ja.solve(SINGULAR, p, 0.0, 1.5, x0, saveat=TS, **TOL)


FORMS = {
    "explicit": (explicit, [0.8, 0.4, 0.6, 0.3, 1.2, 0.9]),
    "implicit": (implicit, [0.8, 0.4, 0.6, 0.3, 1.2, 0.9]),
    "mass_matrix": (mass_matrix, [0.8, 0.4, 0.6, 0.3, 1.2, 0.9]),
    "semi_explicit": (semi_explicit, [1.0, 0.5, 1.4, 0.6]),
}
# A constant singular `M` reaches the solve as the same state-space ODE as the
# semi-explicit form (`jadjoint/_problem/_dae.py`): its `jax.jacfwd` alone is checked,
# against central differences (`test_forward_mode_of_a_singular_mass_matrix`).


def outputs_of(solve):
    def outputs(theta):
        solution = solve(theta)
        xs, _ = ravel_pytree(solution.xs)
        return jnp.concatenate([solution.cost[None], xs])

    return outputs


def derivatives(outputs):
    """For one `θ` and direction `v`: `jacfwd`, `jacrev`, `jvp` and `linearize`
    along `v`; compiled once, over a batch of two."""

    def one(theta, v):
        _, along = jax.jvp(outputs, (theta,), (v,))
        _, linear = jax.linearize(outputs, theta)
        return jax.jacfwd(outputs)(theta), jax.jacrev(outputs)(theta), along, linear(v)

    return jax.jit(jax.vmap(one))


def relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("form", FORMS)
def test_forward_mode_matches_the_adjoint_and_differences(form):
    solve, theta = FORMS[form]
    outputs = outputs_of(solve)
    thetas = jnp.array([theta, [1.1 * t for t in theta]])
    directions = jnp.stack([jnp.linspace(1.0, -0.5, len(theta))] * 2)
    forward, reverse, along, linear = derivatives(outputs)(thetas, directions)
    assert relative(forward, reverse) < 1e-8
    for member in range(2):
        expected = reverse[member] @ directions[member]
        assert relative(along[member], expected) < 1e-8
        assert relative(linear[member], expected) < 1e-8
    compiled = jax.jit(outputs)
    step = 1e-4
    difference = (
        compiled(thetas[0] + step * directions[0])
        - compiled(thetas[0] - step * directions[0])
    ) / (2 * step)
    assert relative(along[0], difference) < 1e-5
    np.testing.assert_array_equal(np.isfinite(forward), True)


def test_forward_mode_of_a_singular_mass_matrix():
    theta = jnp.array([1.0, 0.5, 0.7])
    outputs = outputs_of(singular_mass_matrix)
    forward = jax.jit(jax.jacfwd(outputs))(theta)
    compiled = jax.jit(outputs)
    step = 1e-4
    for i in range(theta.size):
        e = jnp.zeros_like(theta).at[i].set(step)
        difference = (compiled(theta + e) - compiled(theta - e)) / (2 * step)
        assert relative(forward[:, i], difference) < 1e-5


def test_optimistix_least_squares_with_default_options():
    """Levenberg–Marquardt and Gauss–Newton with optimistix's default options (a
    forward-mode Jacobian, `jax.linearize`) recover the rate and initial state of
    `ẋ = −k x` from exact data at 1e-10: to 1e-6 (what the data pins down)."""
    truth = jnp.array([0.7, 2.0])
    decay = ja.Problem.explicit(lambda x, k, t: -k * x)

    def states(theta):
        return ja.solve(decay, theta[0], 0.0, 2.0, theta[1], saveat=TS, **TOL).xs

    data = jnp.exp(-truth[0] * TS) * truth[1]

    @jax.jit
    def fits(start):
        residuals = lambda theta, _: states(theta) - data
        return [
            optx.least_squares(residuals, solver, start).value
            for solver in (
                optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10),
                optx.GaussNewton(rtol=1e-10, atol=1e-10),
            )
        ]

    for fitted in fits(jnp.array([0.3, 1.0])):
        np.testing.assert_allclose(fitted, truth, rtol=1e-6)


def test_tangents_of_the_times():
    """`t0`, `t1` and the save times differentiated forwards (their tangents enter
    in closed form: `ẋ(tᵢ)`, `f(x(T))`, and `−ẋ(t0)` carried from `t0`) against the
    adjoint's time gradients, within 1e-8."""
    problem = ja.Problem.explicit(lotka_volterra, f=lambda x, p, t: x[0] * x[1])
    p = jnp.array([0.8, 0.4, 0.6, 0.3])

    def outputs(times):
        t0, t1, ts = times[0], times[1], times[2:]
        solution = ja.solve(problem, p, t0, t1, jnp.array([1.2, 0.9]), saveat=ts, **TOL)
        return jnp.concatenate([solution.cost[None], solution.xs.ravel()])

    times = jnp.array([0.1, 1.6, 0.3, 0.8, 1.5])
    forward, reverse = jax.jit(
        lambda t: (jax.jacfwd(outputs)(t), jax.jacrev(outputs)(t))
    )(times)
    assert relative(forward, reverse) < 1e-8
