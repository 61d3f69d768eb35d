"""Implicit dynamics h(x, ẋ, p, t) = 0 and mass matrices, against independent
references. Tolerances as in test_gradients.py: solves at 1e-9, gradients to 1e-6."""

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx
import pytest
from helpers import max_relative_error, reference_solve

import jadjoint as ja
import jadjoint._problem._implicit

TOL = 1e-9
GRAD_RTOL = 1e-6
TS = jnp.linspace(0.2, 2.0, 10)

# --- ẋ + c ẋ³ + k x = 0: nonlinear in ẋ -------------------------------------------


def cubic_h(x, xdot, p, t):
    return xdot + p["c"] * xdot**3 + p["k"] * x


def cubic_cost(x, p, t):
    return jnp.sum(x**2)


CUBIC_P = {"c": jnp.array(0.5), "k": jnp.array(1.3)}
CUBIC_X0 = jnp.array([1.0, -0.6])


def cubic_xdot_by_newton(x, p, t):
    """The reference resolves ẋ with its own Newton, differentiated by optimistix."""
    newton = optx.Newton(rtol=1e-13, atol=1e-13)
    residual = lambda xdot, _: cubic_h(x, xdot, p, t)
    return optx.root_find(residual, newton, jnp.zeros_like(x)).value


@jax.jit
@jax.grad
def cubic_reference(p):
    cost, xs = reference_solve(
        cubic_xdot_by_newton, cubic_cost, p, 0.0, 2.0, CUBIC_X0, TS
    )
    return cost + jnp.sum(jnp.sin(xs))


@pytest.mark.parametrize(
    "adjoint", [ja.InterpolatingAdjoint(), ja.QuadratureAdjoint()], ids=type
)
def test_cubic_implicit_matches_newton_reference(adjoint):
    problem = ja.Problem(cubic_h, f=cubic_cost)

    def loss(p):
        solution = ja.solve(
            problem,
            p,
            0.0,
            2.0,
            CUBIC_X0,
            saveat=TS,
            adjoint=adjoint,
            rtol=TOL,
            atol=TOL,
        )
        return solution.cost + jnp.sum(jnp.sin(solution.xs))

    grads = jax.jit(jax.grad(loss))(CUBIC_P)
    assert max_relative_error(grads, cubic_reference(CUBIC_P)) < GRAD_RTOL


# --- M(x, p, t) ẋ = φ(x, p, t) with observations ---


def oscillator(x, p, t):
    return jnp.stack([x[1], -p["k"] * x[0] - 0.1 * x[1]])


def mass(x, p, t):
    return jnp.array([[1.0 + p["m"], 0.2], [0.0, 2.0 + jnp.sin(x[0])]])


MASS_P = {"k": jnp.array(2.0), "m": jnp.array(0.3)}
MASS_X0 = jnp.array([1.0, 0.0])


def mass_loss(problem, adjoint):
    def loss(p):
        solution = ja.solve(
            problem,
            p,
            0.0,
            2.0,
            MASS_X0,
            saveat=TS,
            adjoint=adjoint,
            rtol=TOL,
            atol=TOL,
        )
        return solution.cost + jnp.sum(solution.xs**2)

    return loss


def test_state_dependent_mass_matrix_matches_inverse_form():
    problem = ja.Problem.mass_matrix(mass, oscillator, f=cubic_cost)
    adjoint = ja.InterpolatingAdjoint()
    grads = jax.jit(jax.grad(mass_loss(problem, adjoint)))(MASS_P)

    def reference(p):
        rate = lambda x, p, t: jnp.linalg.solve(mass(x, p, t), oscillator(x, p, t))
        cost, xs = reference_solve(rate, cubic_cost, p, 0.0, 2.0, MASS_X0, TS)
        return cost + jnp.sum(xs**2)

    expected = jax.jit(jax.grad(reference))(MASS_P)
    assert max_relative_error(grads, expected) < GRAD_RTOL


def test_constant_mass_matrix_gets_a_gradient():
    """A constant M is an input like any other: dJ/dM against ẋ = M⁻¹ φ."""

    def loss(p, M):
        problem = ja.Problem.mass_matrix(M, oscillator, f=cubic_cost)
        return mass_loss(problem, ja.InterpolatingAdjoint())(p)

    def reference(p, M):
        rate = lambda x, p, t: jnp.linalg.solve(M, oscillator(x, p, t))
        cost, xs = reference_solve(rate, cubic_cost, p, 0.0, 2.0, MASS_X0, TS)
        return cost + jnp.sum(xs**2)

    M = jnp.array([[2.0, 0.5], [0.1, 1.0]])
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(MASS_P, M)
    expected = jax.jit(jax.grad(reference, argnums=(0, 1)))(MASS_P, M)
    assert max_relative_error(grads, expected) < GRAD_RTOL


# --- implicit forms of an explicit ODE give the explicit gradient ---------------------

B = jnp.array([[2.0, 0.3], [-0.4, 1.0]])


def van_der_pol(x, mu, t):
    return jnp.stack([x[1], mu * (1 - x[0] ** 2) * x[1] - x[0]])


def first_component_cost(x, mu, t):
    return x[0] ** 2


VDP_FORMS = {
    "explicit": ja.Problem.explicit(van_der_pol, f=first_component_cost),
    "h = ẋ − φ": ja.Problem(
        lambda x, xdot, mu, t: xdot - van_der_pol(x, mu, t), f=first_component_cost
    ),
    "h = B (ẋ − φ)": ja.Problem(
        lambda x, xdot, mu, t: B @ (xdot - van_der_pol(x, mu, t)),
        f=first_component_cost,
    ),
    "M = B": ja.Problem.mass_matrix(
        B, lambda x, mu, t: B @ van_der_pol(x, mu, t), f=first_component_cost
    ),
}
VDP_TS = jnp.linspace(0.5, 5.0, 10)


def vdp_grad(problem, adjoint, solver=diffrax.Tsit5(), tol=TOL):
    def loss(mu):
        solution = ja.solve(
            problem,
            mu,
            0.0,
            5.0,
            jnp.array([2.0, 0.0]),
            saveat=VDP_TS,
            adjoint=adjoint,
            solver=solver,
            rtol=tol,
            atol=tol,
        )
        return solution.cost + jnp.sum(solution.xs**2)

    return jax.jit(jax.grad(loss))(jnp.array(3.0))


@pytest.fixture(scope="module")
def vdp_explicit_gradient():
    return vdp_grad(VDP_FORMS["explicit"], ja.InterpolatingAdjoint())


IMPLICIT_FORMS = ["h = ẋ − φ", "h = B (ẋ − φ)", "M = B"]
FORMS_AND_METHODS = [(form, ja.InterpolatingAdjoint()) for form in IMPLICIT_FORMS] + [
    ("h = B (ẋ − φ)", ja.InterpolatingAdjoint(segment_steps=4)),
    ("h = B (ẋ − φ)", ja.BacksolveAdjoint()),
    ("M = B", ja.BacksolveAdjoint()),
]


@pytest.mark.parametrize(
    "form, adjoint",
    FORMS_AND_METHODS,
    ids=[f"{form}-{adjoint}" for form, adjoint in FORMS_AND_METHODS],
)
def test_implicit_forms_equal_explicit(form, adjoint, vdp_explicit_gradient):
    """Every implicit form with the default method, and the others on the general
    and the mass-matrix forms (each combination is a separate compile)."""
    grads = vdp_grad(VDP_FORMS[form], adjoint)
    assert max_relative_error(grads, vdp_explicit_gradient) < GRAD_RTOL


def test_stiff_solver_on_implicit_h(vdp_explicit_gradient):
    """Kvaerno5 forwards and backwards, its own Newton iterating on the resolved
    vector field. Kvaerno5's dense output is a cubic Hermite: at rtol 1e-9 the
    gradient agrees with the Tsit5 one to 1e-5."""
    grads = vdp_grad(
        VDP_FORMS["h = B (ẋ − φ)"], ja.InterpolatingAdjoint(), diffrax.Kvaerno5()
    )
    assert max_relative_error(grads, vdp_explicit_gradient) < 1e-5


def test_vmap_over_parameters_of_implicit_problem():
    problem = ja.Problem(cubic_h, f=cubic_cost)
    loss = lambda k: (
        ja.solve(
            problem, {"c": CUBIC_P["c"], "k": k}, 0.0, 2.0, CUBIC_X0, rtol=TOL, atol=TOL
        ).cost
    )
    ks = jnp.array([0.5, 1.3, 2.0])
    batched = jax.jit(jax.vmap(jax.grad(loss)))(ks)
    looped = jnp.stack([jax.jit(jax.grad(loss))(k) for k in ks])
    assert max_relative_error(batched, looped) < 1e-12


# --- large states: matrix-free solves with h_ẋ --------------------------------------

LARGE_N = 2 * jadjoint._problem._implicit.DENSE_LIMIT


def large_h(x, xdot, p, t):
    """h_ẋ = I + 0.1 diag(sech²(ẋ)): nonsingular, never formed on this path."""
    rate = -p * x + 0.1 * jnp.roll(jnp.tanh(x), 1)
    return xdot + 0.1 * jnp.tanh(xdot) - rate


def large_loss(p):
    x0 = jnp.linspace(-1.0, 1.0, LARGE_N)
    problem = ja.Problem(large_h, f=lambda x, p, t: jnp.sum(x**2))
    return ja.solve(problem, p, 0.0, 1.0, x0, rtol=1e-8, atol=1e-8).cost


def test_large_state_is_matrix_free(monkeypatch):
    """No n×n array appears in the gradient computation, and the gradient equals
    the one from dense solves (DENSE_LIMIT raised) to GMRES tolerance."""
    shape = f"f64[{LARGE_N},{LARGE_N}]"
    assert shape not in str(jax.make_jaxpr(jax.grad(large_loss))(0.5))
    matrix_free = jax.jit(jax.grad(large_loss))(0.5)
    monkeypatch.setattr(jadjoint._problem._implicit, "DENSE_LIMIT", 10 * LARGE_N)
    assert shape in str(jax.make_jaxpr(jax.grad(large_loss))(0.5))
    dense = jax.jit(jax.grad(large_loss))(0.5)
    assert float(matrix_free) == pytest.approx(float(dense), rel=1e-6)
