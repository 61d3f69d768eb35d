"""Adjoint gradients against independent references: closed forms, diffrax's
discretise-then-optimise gradient at tight tolerance, and central differences.

Tolerance: the solves run at rtol=atol=1e-9 and gradients must agree to 1e-6
relative (the adjoint's own discretisation error is ~1e-9 relative here; 1e-6 leaves
room for the reference's error and for the accumulation over save intervals)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import optimistix as optx
import pytest
from helpers import (
    ADJOINTS,
    ALL_ADJOINTS,
    central_difference,
    max_relative_error,
    reference_solve,
)

import jadjoint as ja

TOL = 1e-9
GRAD_RTOL = 1e-6


# --- x' = −k x, F = ∫ x² dt: F = |x0|² (1 − e^{−2kT}) / (2k) -------------------------

T_DECAY = 2.0
decay = ja.Problem.explicit(
    lambda x, p, t: -p["k"] * x, f=lambda x, p, t: jnp.sum(x**2)
)


def decay_cost_exact(p, x0):
    k = p["k"]
    return jnp.sum(x0**2) * (1 - jnp.exp(-2 * k * T_DECAY)) / (2 * k)


@ADJOINTS
def test_decay_cost_gradient_matches_closed_form(adjoint):
    def cost(p, x0):
        solution = ja.solve(
            decay, p, 0.0, T_DECAY, x0, adjoint=adjoint, rtol=TOL, atol=TOL
        )
        return solution.cost

    p, x0 = {"k": jnp.array(0.7)}, jnp.array([1.0, -2.0])
    assert float(cost(p, x0)) == pytest.approx(float(decay_cost_exact(p, x0)), rel=1e-8)
    grads = jax.jit(jax.grad(cost, argnums=(0, 1)))(p, x0)
    expected = jax.grad(decay_cost_exact, argnums=(0, 1))(p, x0)
    assert max_relative_error(grads, expected) < GRAD_RTOL


# --- x' = A x, observations Σ cᵢ·x(tᵢ): x(t) = expm(A t) x0 ---

LINEAR_TS = jnp.array([0.0, 0.3, 0.9, 1.4, 2.0])
linear = ja.Problem.explicit(lambda x, A, t: A @ x)
WEIGHTS = jnp.arange(1.0, 1.0 + 3 * len(LINEAR_TS)).reshape(len(LINEAR_TS), 3) / 10


def linear_observations_exact(A, x0):
    xs = jax.vmap(lambda t: jsl.expm(A * t) @ x0)(LINEAR_TS)
    return jnp.sum(WEIGHTS * jnp.sin(xs))


@ADJOINTS
def test_linear_observations_match_matrix_exponential(adjoint):
    """Save times include t0 and t1: jumps at both ends of the interval."""

    def observed(A, x0):
        solution = ja.solve(
            linear,
            A,
            0.0,
            2.0,
            x0,
            saveat=LINEAR_TS,
            adjoint=adjoint,
            rtol=TOL,
            atol=TOL,
        )
        return jnp.sum(WEIGHTS * jnp.sin(solution.xs))

    A = jnp.array([[-0.5, 1.0, 0.0], [-1.0, -0.2, 0.3], [0.1, 0.0, -0.4]])
    x0 = jnp.array([1.0, 0.5, -0.3])
    grads = jax.jit(jax.grad(observed, argnums=(0, 1)))(A, x0)
    expected = jax.grad(linear_observations_exact, argnums=(0, 1))(A, x0)
    assert max_relative_error(grads, expected) < GRAD_RTOL


# --- Lotka–Volterra, integral cost, 25 observations, nonlinear g ----------------------


def lotka_volterra(x, p, t):
    prey, predator = x
    return jnp.stack(
        [
            p["alpha"] * prey - p["beta"] * prey * predator,
            p["delta"] * prey * predator - p["gamma"] * predator,
        ]
    )


def lv_cost(x, p, t):
    return p["weight"] * jnp.sum((x - 1.0) ** 2)


def lv_initial(x0, p):
    """x0³ + x0 − q = 0 componentwise: a nonlinear initial condition."""
    return x0**3 + x0 - p["q"]


LV_TS = jnp.linspace(0.4, 6.0, 25)
LV_DATA = jnp.stack([1.5 + jnp.sin(LV_TS), 1.0 + 0.5 * jnp.cos(LV_TS)], axis=-1)
LV_P = {
    "alpha": jnp.array(1.1),
    "beta": jnp.array(0.4),
    "delta": jnp.array(0.1),
    "gamma": jnp.array(0.4),
    "weight": jnp.array(0.3),
    "q": jnp.array([10.0, 2.0]),
}
lv_problem = ja.Problem.explicit(lotka_volterra, f=lv_cost, g=lv_initial)


def lv_loss(p, adjoint, tol=TOL, solver=diffrax.Tsit5()):
    solution = ja.solve(
        lv_problem,
        p,
        0.0,
        6.0,
        jnp.ones(2),
        saveat=LV_TS,
        adjoint=adjoint,
        solver=solver,
        rtol=tol,
        atol=tol,
    )
    return solution.cost + jnp.sum((solution.xs - LV_DATA) ** 2)


lv_grad = jax.jit(jax.grad(lv_loss), static_argnums=(1, 2, 3))


@jax.jit
@jax.grad
def lv_reference_grad(p):
    x0 = optx.root_find(
        lambda x, p: lv_initial(x, p), optx.Newton(1e-13, 1e-13), jnp.ones(2), args=p
    ).value
    cost, xs = reference_solve(lotka_volterra, lv_cost, p, 0.0, 6.0, x0, LV_TS)
    return cost + jnp.sum((xs - LV_DATA) ** 2)


@ALL_ADJOINTS
def test_lotka_volterra_matches_recursive_checkpoint(adjoint):
    grads = lv_grad(LV_P, adjoint, TOL)
    assert max_relative_error(grads, lv_reference_grad(LV_P)) < GRAD_RTOL


def test_lotka_volterra_matches_central_differences():
    """Step 1e-5: truncation ~1e-10, solver noise ~1e-12/1e-5 = 1e-7; so 1e-5."""
    loss = jax.jit(lambda p: lv_loss(p, ja.InterpolatingAdjoint(), 1e-12))
    grads = lv_grad(LV_P, ja.InterpolatingAdjoint(), 1e-12)
    assert max_relative_error(grads, central_difference(loss, LV_P)) < 1e-5


def test_initial_condition_is_solved():
    solution = ja.solve(lv_problem, LV_P, 0.0, 1.0, jnp.ones(2))
    assert jnp.allclose(lv_initial(solution.x0, LV_P), 0.0, atol=1e-10)


# --- neural vector field closed over by a lambda -------------------------------------

MLP_TS = jnp.linspace(0.1, 1.0, 10)
MLP_X0 = jnp.array([1.0, -0.5])


def make_mlp():
    return eqx.nn.MLP(2, 2, 16, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))


def mlp_loss(model, adjoint):
    problem = ja.Problem.explicit(
        lambda x, p, t: model(x), f=lambda x, p, t: jnp.sum(jnp.sin(x))
    )
    solution = ja.solve(
        problem,
        None,
        0.0,
        1.0,
        MLP_X0,
        saveat=MLP_TS,
        adjoint=adjoint,
        rtol=TOL,
        atol=TOL,
    )
    return solution.cost + jnp.sum(solution.xs**2)


def mlp_reference(model):
    vector_field = lambda x, p, t: model(x)
    f = lambda x, p, t: jnp.sum(jnp.sin(x))
    cost, xs = reference_solve(vector_field, f, None, 0.0, 1.0, MLP_X0, MLP_TS)
    return cost + jnp.sum(xs**2)


# Compiled once for the MLP tests below (a fresh `filter_grad` would compile again).
MLP_REFERENCE_GRAD = eqx.filter_jit(eqx.filter_grad(mlp_reference))


@ALL_ADJOINTS
def test_closed_over_mlp_matches_recursive_checkpoint(adjoint):
    model = make_mlp()
    grads = eqx.filter_jit(eqx.filter_grad(mlp_loss))(model, adjoint)
    expected = MLP_REFERENCE_GRAD(model)
    assert max_relative_error(grads, expected) < GRAD_RTOL


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(recompute_stages=True),
        ja.QuadratureAdjoint(recompute_stages=True),
    ],
    ids=["interpolating", "quadrature"],
)
def test_recomputed_stages_give_the_same_gradient(adjoint):
    """The steps' linearisations without their intermediates (recomputed when
    transposed): the cost and the saved states of the MLP against RCA. The option
    reaches the steps: their stages are recomputed (`remat2`, with its policy), which
    the default does not do."""
    model = make_mlp()
    policy = "policy=DotsSaveable"
    traced = lambda adjoint: str(
        eqx.filter_make_jaxpr(eqx.filter_grad(mlp_loss))(model, adjoint)[0]
    )
    assert policy in traced(adjoint)
    assert policy not in traced(type(adjoint)())
    grads = eqx.filter_jit(eqx.filter_grad(mlp_loss))(model, adjoint)
    expected = MLP_REFERENCE_GRAD(model)
    assert max_relative_error(grads, expected) < GRAD_RTOL


def test_recompute_stages_must_be_a_bool():
    with pytest.raises(ValueError, match="`recompute_stages` must be True or False"):
        ja.InterpolatingAdjoint(recompute_stages="yes")


def test_methods_agree_with_each_other():
    interpolating = lv_grad(LV_P, ja.InterpolatingAdjoint(), TOL)
    backsolve = lv_grad(LV_P, ja.BacksolveAdjoint(), TOL)
    assert max_relative_error(backsolve, interpolating) < GRAD_RTOL


def test_solver_choice_is_respected():
    """Dopri5 instead of the default Tsit5 gives the same gradient."""
    grads = lv_grad(LV_P, ja.InterpolatingAdjoint(), TOL, diffrax.Dopri5())
    assert max_relative_error(grads, lv_reference_grad(LV_P)) < GRAD_RTOL


# --- gradients with respect to t0, t1 and the save times -----------------------------


@ADJOINTS
def test_time_gradients_match_closed_form(adjoint):
    """x = x0 e^{−k(t − t0)}: F = |x0|² (1 − e^{−2k(T − t0)}) / (2k) plus
    Σ sin(x(tᵢ)), differentiated with respect to t0, T and every tᵢ."""
    k, x0 = 0.7, jnp.array([1.0, -2.0])

    def loss(t0, t1, ts):
        solution = ja.solve(
            decay, {"k": k}, t0, t1, x0, saveat=ts, adjoint=adjoint, rtol=TOL, atol=TOL
        )
        return solution.cost + jnp.sum(jnp.sin(solution.xs))

    def exact(t0, t1, ts):
        cost = jnp.sum(x0**2) * (1 - jnp.exp(-2 * k * (t1 - t0))) / (2 * k)
        xs = x0 * jnp.exp(-k * (ts - t0))[:, None]
        return cost + jnp.sum(jnp.sin(xs))

    times = (jnp.array(0.2), jnp.array(2.0), jnp.array([0.5, 1.1, 2.0]))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*times)
    expected = jax.grad(exact, argnums=(0, 1, 2))(*times)
    assert max_relative_error(grads, expected) < GRAD_RTOL
