"""Every failure kind, both ways: with `throw=True` it raises its message; with
`throw=False` `Solution.result` names it and the outputs (and gradients) are NaN,
never a finite-looking value."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jadjoint as ja

RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)

# ẋ² + 1 = 0 has no real root: Newton for ẋ cannot converge anywhere.
no_rate = ja.Problem(lambda x, xdot, p, t: xdot**2 + 1.0, f=lambda x, p, t: x.sum())
# A mass matrix that is singular everywhere, given as a function (not split).
singular_mass = ja.Problem.mass_matrix(
    lambda x, p, t: jnp.zeros((2, 2)), lambda x, p, t: -x, f=lambda x, p, t: x.sum()
)
# g(x0) = x0³ − 2 x0 + 2: Newton from 0 cycles 0 → 1 → 0 (the example).
cycling_g = ja.Problem.explicit(
    lambda x, p, t: -p * x,
    f=lambda x, p, t: jnp.sum(x**2),
    g=lambda x0, p: x0**3 - 2 * x0 + 2,
)
# b has a root z = y before t = 0.5 and none after: `a` does not need z, so the
# integration succeeds and z fails at the save time 0.75.
lost_root = ja.Problem.semi_explicit(
    lambda y, z, p, t: -p * y,
    lambda y, z, p, t: jnp.where(t < 0.5, z - y, z**2 + 1.0),
)

decay = ja.Problem.explicit(lambda x, p, t: -p * x, f=lambda x, p, t: x.sum())

CASES = {
    "nonfinite_parameters": (decay, jnp.nan, jnp.ones(2), "`p` or `x0` contains NaN"),
    "newton_failed": (no_rate, 1.0, jnp.ones(2), "Newton's method for ẋ"),
    "singular_mass_matrix": (singular_mass, 1.0, jnp.ones(2), "mass matrix M is"),
    "initialisation_failed": (cycling_g, 1.0, jnp.zeros(1), "initial condition"),
    "algebraic_failed": (
        lost_root,
        1.0,
        (jnp.ones(1), jnp.ones(1)),
        "algebraic variables z.*at a save time",
    ),
}


def run(case, throw):
    problem, p, x0, _ = CASES[case]

    def outputs(p):
        solution = ja.solve(
            problem,
            p,
            0.0,
            1.0,
            x0,
            saveat=jnp.array([0.25, 0.75]),
            max_steps=16,
            throw=throw,
        )
        return solution.cost, solution.xs, solution.x0, solution.result

    return jax.jit(outputs)(p)


@pytest.mark.parametrize("case", list(CASES))
def test_failure_raises_its_message(case):
    with pytest.raises(RUNTIME_ERRORS, match=CASES[case][3]):
        run(case, throw=True)


@pytest.mark.parametrize("case", list(CASES))
def test_failure_without_throw_is_named_and_nan(case):
    cost, xs, x0, result = run(case, throw=False)
    assert result == getattr(ja.RESULTS, case)
    assert jnp.isnan(cost)
    for leaf in jax.tree_util.tree_leaves((xs, x0)):
        assert jnp.all(jnp.isnan(leaf))


def test_failed_initialisation_gives_nan_gradient():
    problem, _, x0, _ = CASES["initialisation_failed"]
    cost = lambda p: ja.solve(problem, p, 0.0, 1.0, x0, throw=False).cost
    assert jnp.isnan(jax.jit(jax.grad(cost))(1.0))


def test_max_steps_without_throw():
    decay = ja.Problem.explicit(lambda x, k, t: -k * x, f=lambda x, k, t: x.sum())

    def outputs(k):
        solution = ja.solve(decay, k, 0.0, 1.0, jnp.ones(2), max_steps=8, throw=False)
        return solution.cost, solution.result

    solve = jax.jit(outputs)
    cost, result = solve(1e4)
    assert result == ja.RESULTS.max_steps_reached
    assert jnp.isnan(cost)
    cost, result = solve(0.5)
    assert result == ja.RESULTS.successful
    assert jnp.isfinite(cost)
    gradient = jax.jit(jax.grad(lambda k: outputs(k)[0]))(1e4)
    assert jnp.isnan(gradient)
