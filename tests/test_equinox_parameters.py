"""An equinox model as the parameters themselves: its non-array leaves (activation
functions) pass through `solve` untouched, as `eqx.filter_grad`, `eqx.filter_jit`
and `eqx.filter_vmap` treat them, and the gradient is the one of the same model
closed over."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from helpers import max_relative_error, reference_solve

import jadjoint as ja

MODEL = eqx.nn.MLP(2, 2, 8, 2, activation=jax.nn.softplus, key=jax.random.PRNGKey(0))
SAVE_TIMES = jnp.array([0.5, 1.0, 1.5])
TOL = 1e-8


def cost_rate(x, p, t):
    return jnp.sum(x**2)


def loss(solution):
    return solution.cost + jnp.sum(solution.xs**2)


EXPLICIT = ja.Problem.explicit(lambda x, model, t: model(x), f=cost_rate)


@eqx.filter_jit
@eqx.filter_grad
def gradient_as_parameters(model, x0):
    return loss(
        ja.solve(EXPLICIT, model, 0.0, 1.5, x0, saveat=SAVE_TIMES, rtol=TOL, atol=TOL)
    )


@eqx.filter_jit
@eqx.filter_grad
def gradient_closed_over(model, x0):
    problem = ja.Problem.explicit(lambda x, _, t: model(x), f=cost_rate)
    return loss(
        ja.solve(problem, None, 0.0, 1.5, x0, saveat=SAVE_TIMES, rtol=TOL, atol=TOL)
    )


@eqx.filter_jit
@eqx.filter_grad
def gradient_rca(model, x0):
    """diffrax `RecursiveCheckpointAdjoint` at rtol 1e-12."""
    cost, xs = reference_solve(
        lambda x, model, t: model(x), cost_rate, model, 0.0, 1.5, x0, SAVE_TIMES, 1e-12
    )
    return cost + jnp.sum(xs**2)


def relative_error(actual, expected) -> float:
    """`max_relative_error` over the array leaves (the activation function is the
    same object in both)."""
    return max_relative_error(
        *(eqx.filter(g, eqx.is_array) for g in (actual, expected))
    )


def test_model_as_parameters_matches_closed_over_and_rca():
    """With the cost and observations: the same gradient as the model closed over
    (the same computation: 1e-12), and within 1e-6 of diffrax RCA at rtol 1e-12
    (the adjoint at rtol 1e-8 is accurate to about 1e-7)."""
    x0 = jnp.array([1.0, -0.5])
    grads = gradient_as_parameters(MODEL, x0)
    assert relative_error(grads, gradient_closed_over(MODEL, x0)) < 1e-12
    assert relative_error(grads, gradient_rca(MODEL, x0)) < 1e-6


def test_model_as_parameters_under_vmap():
    """`eqx.filter_vmap` over initial states with the model shared: each member's
    gradient is the one computed alone (1e-10: the same steps, batched)."""
    x0s = jnp.array([[1.0, -0.5], [0.3, 0.8]])
    batched = eqx.filter_vmap(gradient_as_parameters, in_axes=(None, 0))(MODEL, x0s)
    for i, x0 in enumerate(x0s):
        member = jtu.tree_map(lambda a, i=i: a[i], eqx.filter(batched, eqx.is_array))
        assert relative_error(member, gradient_as_parameters(MODEL, x0)) < 1e-10


def test_model_as_parameters_of_implicit_form_with_initial_condition():
    """`h(x, ẋ, p, t) = ẋ − model(x)` with `g(x0, p) = x0 − p["x0"]`, `p` a dict of
    the model and the initial state: the non-array leaves reach `h` and `g`, and the
    gradient, the initial state's included, is the explicit form's within 1e-6 (two
    discretisations at rtol 1e-8)."""
    problem = ja.Problem(
        lambda x, xdot, p, t: xdot - p["model"](x),
        f=cost_rate,
        g=lambda x0, p: x0 - p["x0"],
    )

    @eqx.filter_jit
    @eqx.filter_grad
    def implicit_gradient(p):
        solution = ja.solve(
            problem, p, 0.0, 1.5, jnp.zeros(2), saveat=SAVE_TIMES, rtol=TOL, atol=TOL
        )
        return loss(solution)

    x0 = jnp.array([1.0, -0.5])
    grads = implicit_gradient({"model": MODEL, "x0": x0})
    explicit = gradient_as_parameters(MODEL, x0)
    assert relative_error(grads["model"], explicit) < 1e-6
    assert relative_error(grads["x0"], explicit_x0_gradient(x0)) < 1e-6


@jax.jit
@jax.grad
def explicit_x0_gradient(x0):
    """The explicit form's gradient with respect to `x0`, the model as `p`."""
    return loss(
        ja.solve(EXPLICIT, MODEL, 0.0, 1.5, x0, saveat=SAVE_TIMES, rtol=TOL, atol=TOL)
    )


def test_model_as_parameters_of_semi_explicit_dae():
    """`ẏ = model(y)`, `0 = z − Σ y` with the cost `∫ z² dt` and observations of
    `y` and `z`, the model as `p`: the non-array leaves reach `a`, `b` and `f` of the
    DAE form, and the gradient is the explicit form's with `z = Σ y` substituted,
    within 1e-6 (two discretisations at rtol 1e-8)."""
    dae = ja.Problem.semi_explicit(
        lambda y, z, model, t: model(y),
        lambda y, z, model, t: z - jnp.sum(y, keepdims=True),
        f=lambda x, model, t: jnp.sum(x[1] ** 2),
    )
    explicit = ja.Problem.explicit(
        lambda y, model, t: model(y), f=lambda y, model, t: jnp.sum(y) ** 2
    )
    y0 = jnp.array([1.0, -0.5])

    @eqx.filter_jit
    @eqx.filter_grad
    def dae_gradient(model):
        solution = ja.solve(
            dae,
            model,
            0.0,
            1.5,
            (y0, jnp.zeros(1)),
            saveat=SAVE_TIMES,
            rtol=TOL,
            atol=TOL,
        )
        ys, zs = solution.xs
        return solution.cost + jnp.sum(ys**2) + jnp.sum(zs**2)

    @eqx.filter_jit
    @eqx.filter_grad
    def explicit_gradient(model):
        solution = ja.solve(
            explicit, model, 0.0, 1.5, y0, saveat=SAVE_TIMES, rtol=TOL, atol=TOL
        )
        ys = solution.xs
        return solution.cost + jnp.sum(ys**2) + jnp.sum(jnp.sum(ys, axis=1) ** 2)

    assert relative_error(dae_gradient(MODEL), explicit_gradient(MODEL)) < 1e-6
