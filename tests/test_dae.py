"""Index-1 DAEs: `Problem.semi_explicit` and `Problem.mass_matrix` with a constant
singular M, against independent references.

- A semi-explicit DAE whose algebraic variable can be eliminated by hand,
  `ẏ = −p1 y + z`, `0 = z − p2 y²`, against the ODE `ẏ = −p1 y + p2 y²`: cost,
  trajectory, consistent z and gradients (through cotangents on y and on z) agree to
  1e-8 relative, at rtol 1e-10 for both (each is exact to about 1e-9); every adjoint
  method, under `jit` and `vmap`.
- A nonlinear algebraic equation (`z + z³ = y1 p`) with `g` constraining `y0`:
  `ja.check_grad` against central finite differences and diffrax's
  discretise-then-optimise gradient, 1e-5 relative (the finite differences' error at
  the solve's rtol 1e-10).
- The Robertson kinetics as users write the DAE (`M = diag(1, 1, 0)`, third equation
  `y1 + y2 + y3 − 1 = 0`) against the Robertson ODE, Kvaerno5 on [0, 100]: the gradient
  of `1e4 ∫ y2 dt` plus observations of every component agrees to 1e-5 relative (the
  two solves take different steps at rtol 1e-8; observed 3e-6).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
import pytest
from helpers import max_relative_error

import jadjoint as ja

RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
TS = jnp.linspace(0.5, 2.0, 4)
WEIGHTS = jnp.arange(1.0, 5.0)[:, None]


def decay_with_algebraic_source():
    a = lambda y, z, p, t: -p[0] * y + z
    b = lambda y, z, p, t: z - p[1] * y**2
    f = lambda x, p, t: jnp.sum(x[0] ** 2) + jnp.sum(jnp.cos(t) * x[1])
    return ja.Problem.semi_explicit(a, b, f=f)


def reduced_ode():
    vector_field = lambda y, p, t: -p[0] * y + p[1] * y**2
    f = lambda y, p, t: jnp.sum(y**2) + jnp.sum(jnp.cos(t) * p[1] * y**2)
    return ja.Problem.explicit(vector_field, f=f)


DAE, ODE = decay_with_algebraic_source(), reduced_ode()
P = jnp.array([[1.0, 0.5], [0.7, 0.9]])
Y0 = jnp.array([[1.0, 0.7], [0.6, -0.4]])


def dae_outputs(p, y0, adjoint):
    solution = ja.solve(
        DAE, p, 0.0, 2.0, (y0, jnp.zeros(2)), saveat=TS, adjoint=adjoint, rtol=1e-10
    )
    ys, zs = solution.xs
    loss = solution.cost + jnp.sum(WEIGHTS * ys) + jnp.sum(jnp.sin(zs))
    return loss, (ys, zs, solution.x0[1])


def ode_outputs(p, y0, adjoint):
    solution = ja.solve(ODE, p, 0.0, 2.0, y0, saveat=TS, adjoint=adjoint, rtol=1e-10)
    ys, zs = solution.xs, p[1] * solution.xs**2
    loss = solution.cost + jnp.sum(WEIGHTS * ys) + jnp.sum(jnp.sin(zs))
    return loss, (ys, zs, p[1] * y0**2)


def batched_value_and_grad(outputs, *static):
    grad = jax.value_and_grad(outputs, argnums=(0, 1), has_aux=True)
    return jax.jit(jax.vmap(lambda p, y0: grad(p, y0, *static)))


@pytest.mark.parametrize(
    "adjoint",
    [ja.InterpolatingAdjoint(), ja.QuadratureAdjoint(), ja.BacksolveAdjoint()],
    ids=type,
)
def test_semi_explicit_matches_the_reduced_ode(adjoint):
    """The same method on the DAE and on its reduced ODE, solved at 1e-10: the same
    to 1e-8 (z by Newton to 1e-13)."""
    (loss, states), grads = batched_value_and_grad(dae_outputs, adjoint)(P, Y0)
    (loss_ref, states_ref), grads_ref = batched_value_and_grad(ode_outputs, adjoint)(
        P, Y0
    )
    assert max_relative_error(loss, loss_ref) < 1e-8
    assert max_relative_error(states, states_ref) < 1e-8
    assert max_relative_error(grads, grads_ref) < 1e-8


def cubic_constraint():
    """ẏ = (−p0 y1 + z, −y2 + y1 z), 0 = z + z³ − p1 y1, and y1(0) = p2 y2(0)."""
    a = lambda y, z, p, t: jnp.stack([-p[0] * y[0] + z[0], -y[1] + y[0] * z[0]])
    b = lambda y, z, p, t: z + z**3 - p[1] * y[0]
    g = lambda x, p: jnp.stack([x[0][0] - p[2] * x[0][1], x[0][1] - 0.5])
    f = lambda x, p, t: x[0][1] ** 2 + x[1][0] ** 2
    return ja.Problem.semi_explicit(a, b, f=f, g=g)


CUBIC = cubic_constraint()


def cubic_loss(p):
    x0_guess = (jnp.array([1.0, 1.0]), jnp.array([0.0]))
    solution = ja.solve(CUBIC, p, 0.0, 1.5, x0_guess, saveat=TS[:3], rtol=1e-10)
    ys, zs = solution.xs
    return solution.cost + jnp.sum(zs**2 * TS[:3, None]) + jnp.sum(ys[-1])


def test_algebraic_cotangents_and_g_match_finite_differences():
    p = jnp.array([0.8, 1.3, 2.0])
    report = ja.check_grad(cubic_loss, p, tol=1e-5)
    assert report.reference is not None


def test_consistent_initialisation_solves_g_and_b():
    p = jnp.array([0.8, 1.3, 2.0])
    x0_guess = (jnp.array([1.0, 1.0]), jnp.array([0.0]))
    (y0, z0) = ja.solve(CUBIC, p, 0.0, 0.1, x0_guess).x0
    assert jnp.allclose(y0, jnp.array([1.0, 0.5]), rtol=1e-12)
    assert jnp.allclose(z0 + z0**3, p[1] * y0[0], rtol=1e-12)


def robertson_rates(y, log_k):
    k1, k2, k3 = jnp.exp(log_k)
    return jnp.stack(
        [
            -k1 * y[0] + k3 * y[1] * y[2],
            k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2],
            k2 * y[1] ** 2,
        ]
    )


def robertson_conservation(y, log_k, t):
    rates = robertson_rates(y, log_k)
    return jnp.stack([rates[0], rates[1], y[0] + y[1] + y[2] - 1.0])


ROBERTSON_COST = lambda y, log_k, t: 1e4 * y[1]
ROBERTSON_ODE = ja.Problem.explicit(
    lambda y, log_k, t: robertson_rates(y, log_k), f=ROBERTSON_COST
)
ROBERTSON_DAE = ja.Problem.mass_matrix(
    jnp.diag(jnp.array([1.0, 1.0, 0.0])), robertson_conservation, f=ROBERTSON_COST
)


@jax.jit
def robertson_loss_and_grad(log_k):
    def loss(log_k, problem, x0):
        solution = ja.solve(
            problem,
            log_k,
            0.0,
            100.0,
            x0,
            saveat=jnp.array([1.0, 10.0, 100.0]),
            solver=diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-8, atol=1e-8)),
            rtol=1e-8,
            atol=1e-10,
        )
        observed = jnp.sum(solution.xs * jnp.array([1.0, 1e4, 1.0]))
        return solution.cost + observed, solution.x0

    grad = jax.value_and_grad(loss, has_aux=True)
    inconsistent_guess = jnp.array([1.0, 0.0, 0.3])
    return (
        grad(log_k, ROBERTSON_DAE, inconsistent_guess),
        grad(log_k, ROBERTSON_ODE, jnp.array([1.0, 0.0, 0.0])),
    )


def test_robertson_dae_matches_the_robertson_ode():
    log_k = jnp.log(jnp.array([0.04, 3e7, 1e4]))
    (dae_loss, dae_x0), dae_grad = robertson_loss_and_grad(log_k)[0]
    (ode_loss, _), ode_grad = robertson_loss_and_grad(log_k)[1]
    assert jnp.allclose(dae_x0, jnp.array([1.0, 0.0, 0.0]), rtol=0, atol=1e-15)
    assert max_relative_error(dae_loss, ode_loss) < 1e-6
    assert max_relative_error(dae_grad, ode_grad) < 1e-5


def test_semi_explicit_x0_must_be_a_pair():
    with pytest.raises(ValueError, match=r"`x0`.*pair `\(y0, z0_guess\)`"):
        ja.solve(DAE, P[0], 0.0, 1.0, jnp.ones(3))


def test_algebraic_residual_of_the_wrong_shape():
    bad = ja.Problem.semi_explicit(
        lambda y, z, p, t: -y, lambda y, z, p, t: jnp.sum(z) - y
    )
    with pytest.raises(ValueError, match=r"`b\(y, z, p, t\)`.*shaped like `z`"):
        ja.solve(bad, None, 0.0, 1.0, (jnp.ones(2), jnp.zeros(3)))


def test_initial_condition_of_the_wrong_size_for_a_dae():
    bad = ja.Problem.mass_matrix(
        jnp.diag(jnp.array([1.0, 0.0])),
        lambda x, p, t: jnp.stack([-x[0], x[1] - x[0]]),
        g=lambda x0, p: x0 - 1.0,
    )
    with pytest.raises(ValueError, match=r"`g\(x0, p\)` of a DAE.*rank\(M\)"):
        ja.solve(bad, None, 0.0, 1.0, jnp.ones(2))


def test_algebraic_equation_without_a_root_is_a_clear_error():
    no_root = ja.Problem.semi_explicit(
        lambda y, z, p, t: -y, lambda y, z, p, t: z**2 + 1.0
    )
    solve = jax.jit(lambda y0: ja.solve(no_root, None, 0.0, 1.0, (y0, y0)).xs)
    with pytest.raises(RUNTIME_ERRORS, match=r"z0 in b\(y0, z0, p, t0\) = 0"):
        solve(jnp.ones(1))


def test_zero_mass_matrix_is_rejected():
    with pytest.raises(ValueError, match="mass matrix `M` is zero"):
        ja.Problem.mass_matrix(jnp.zeros((2, 2)), lambda x, p, t: x)
