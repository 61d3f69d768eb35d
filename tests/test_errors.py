"""Bad input gets an error naming the argument; failed solves raise, never return."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jadjoint as ja

decay = ja.Problem.explicit(lambda x, k, t: -k * x, f=lambda x, k, t: jnp.sum(x**2))
X0 = jnp.ones(2)
# Under `jax.jit` an `eqx.error_if` surfaces as JAX's runtime error; eagerly or under
# `eqx.filter_jit`, as equinox's.
RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)


def test_non_callable_functions():
    with pytest.raises(TypeError, match="`vector_field` must be a callable"):
        ja.Problem.explicit(3.0)
    with pytest.raises(TypeError, match="`f` must be a callable"):
        ja.Problem.explicit(lambda x, p, t: x, f="cost")
    with pytest.raises(TypeError, match="`h` must be a callable"):
        ja.Problem(None)


def test_vector_field_wrong_shape():
    problem = ja.Problem.explicit(lambda x, p, t: jnp.sum(x))
    with pytest.raises(ValueError, match=r"`vector_field\(x, p, t\)` must return"):
        ja.solve(problem, None, 0.0, 1.0, X0)


def test_cost_not_scalar():
    problem = ja.Problem.explicit(lambda x, p, t: -x, f=lambda x, p, t: x**2)
    with pytest.raises(ValueError, match=r"`f\(x, p, t\)` must return a scalar"):
        ja.solve(problem, None, 0.0, 1.0, X0)


def test_initial_condition_wrong_shape():
    problem = ja.Problem.explicit(lambda x, p, t: -x, g=lambda x0, p: x0[0])
    with pytest.raises(ValueError, match=r"`g\(x0, p\)` must return"):
        ja.solve(problem, None, 0.0, 1.0, X0)


def test_integer_state():
    """Integer leaves of `p` pass through (tests/test_inputs.py); an integer state
    array is an error."""
    with pytest.raises(TypeError, match="`x0` must contain only real floating-point"):
        ja.solve(decay, 0.5, 0.0, 1.0, jnp.ones(2, dtype=int))


def test_interval_must_increase():
    with pytest.raises(ValueError, match="`t1` must be greater than `t0`"):
        ja.solve(decay, 0.5, 1.0, 1.0, X0)


@pytest.mark.parametrize(
    "saveat",
    [jnp.array([0.5, 0.2]), jnp.array([0.5, 0.5]), jnp.array([0.5, 2.0]), -jnp.ones(1)],
    ids=["decreasing", "repeated", "after-t1", "before-t0"],
)
def test_saveat_sorted_inside_interval(saveat):
    with pytest.raises(ValueError, match="`saveat` must be strictly increasing"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, saveat=saveat)


def test_saveat_checked_at_run_time_under_jit():
    solve = jax.jit(lambda ts: ja.solve(decay, 0.5, 0.0, 1.0, X0, saveat=ts).xs)
    with pytest.raises(RUNTIME_ERRORS, match="strictly increasing"):
        solve(jnp.array([0.5, 0.2]))


def test_saveat_must_be_one_dimensional():
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, saveat=jnp.ones((2, 2)))


def test_options_must_be_instances():
    with pytest.raises(TypeError, match="`solver` must be an instance"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, solver=diffrax.Tsit5)
    with pytest.raises(TypeError, match="`adjoint` must be a jadjoint adjoint method"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, adjoint=diffrax.BacksolveAdjoint())
    with pytest.raises(TypeError, match="`progress_meter` must be a diffrax progress"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, progress_meter=True)


def test_max_steps_raises_under_jit_and_grad():
    stiff = ja.Problem.explicit(lambda x, k, t: -k * x)
    loss = lambda k: ja.solve(stiff, k, 0.0, 1.0, X0, max_steps=8).xs.sum()
    with pytest.raises(RUNTIME_ERRORS, match="maximum number of solver steps"):
        jax.jit(loss)(1e4)
    with pytest.raises(RUNTIME_ERRORS, match="maximum number of solver steps"):
        jax.jit(jax.grad(loss))(1e4)


def test_newton_failure_for_g_raises():
    problem = ja.Problem.explicit(lambda x, p, t: -x, g=lambda x0, p: x0**2 + 1.0)
    with pytest.raises(RUNTIME_ERRORS):
        jax.jit(lambda x0: ja.solve(problem, None, 0.0, 1.0, x0).xs)(X0)


def test_unknown_keyword_and_complex_parameters():
    with pytest.raises(TypeError, match="unexpected keyword argument 'rtoll'"):
        ja.solve(decay, 0.5, 0.0, 1.0, X0, rtoll=1e-3)
    with pytest.raises(TypeError, match="`p` must contain only real floating-point"):
        ja.solve(decay, jnp.array(0.5 + 0j), 0.0, 1.0, X0)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nan_parameters_raise(jit):
    cost = lambda k: ja.solve(decay, k, 0.0, 1.0, X0).cost
    grad = jax.grad(cost)
    with pytest.raises(RUNTIME_ERRORS, match="`p` or `x0` contains NaN"):
        (jax.jit(grad) if jit else grad)(jnp.nan)


def test_nan_in_one_batch_element_raises_under_vmap():
    cost = lambda k: ja.solve(decay, k, 0.0, 1.0, X0).cost
    with pytest.raises(RUNTIME_ERRORS, match="`p` or `x0` contains NaN"):
        jax.jit(jax.vmap(jax.grad(cost)))(jnp.array([0.5, jnp.nan, 1.0]))


@jax.custom_jvp
def decay_with_stiff_derivative(x):
    """x' = −x forwards; its derivative claims −10⁵, so only the adjoint is stiff."""
    return -x


@decay_with_stiff_derivative.defjvp
def _stiff_derivative(primals, tangents):
    (x,), (tx,) = primals, tangents
    return -x, -1e5 * tx


def test_backward_max_steps_raises_and_throw_false_gives_nan():
    problem = ja.Problem.explicit(lambda x, p, t: p * decay_with_stiff_derivative(x))

    def loss(p, throw=True):
        solution = ja.solve(problem, p, 0.0, 1.0, X0, max_steps=64, throw=throw)
        return solution.xs.sum()

    assert jnp.isfinite(jax.jit(loss)(1.0))
    with pytest.raises(RUNTIME_ERRORS, match="maximum number of solver steps"):
        jax.jit(jax.grad(loss))(1.0)
    assert jnp.isnan(jax.jit(jax.grad(lambda p: loss(p, throw=False)))(1.0))


@jax.custom_jvp
def square_with_nan_derivative(x):
    return x**2


@square_with_nan_derivative.defjvp
def _nan_derivative(primals, tangents):
    (x,), (tx,) = primals, tangents
    return x**2, jnp.nan * tx


def test_non_finite_gradient_raises():
    problem = ja.Problem.explicit(
        lambda x, p, t: -p * x, f=lambda x, p, t: jnp.sum(square_with_nan_derivative(x))
    )
    cost = lambda k: ja.solve(problem, k, 0.0, 1.0, X0).cost
    assert jnp.isfinite(jax.jit(cost)(0.5))
    with pytest.raises(RUNTIME_ERRORS, match="right-hand side is non-finite"):
        jax.jit(jax.grad(cost))(0.5)


def test_non_finite_state_raises():
    blow_up = ja.Problem.explicit(lambda x, p, t: x**2)
    solve = jax.jit(lambda x0: ja.solve(blow_up, None, 0.0, 2.0, x0).xs)
    with pytest.raises(
        RUNTIME_ERRORS, match="maximum number of solver steps|non-finite"
    ):
        solve(X0)


def test_singular_h_xdot_is_a_clear_error():
    """h = (ẋ₀ − x₁, x₀ + x₁): the second row has no ẋ (a DAE), so Newton fails."""
    dae = ja.Problem(lambda x, xdot, p, t: jnp.stack([xdot[0] - x[1], x[0] + x[1]]))
    solve = jax.jit(lambda x0: ja.solve(dae, None, 0.0, 1.0, x0).xs)
    supported = "h_ẋ is singular.*index-1 DAE forms.*Problem.semi_explicit"
    with pytest.raises(RUNTIME_ERRORS, match=supported):
        solve(jnp.array([1.0, -1.0]))


def test_singular_mass_function_at_run_time():
    singular = lambda x, p, t: jnp.diag(jnp.array([1.0, 0.0]))
    problem = ja.Problem.mass_matrix(singular, lambda x, p, t: -x)
    with pytest.raises(RUNTIME_ERRORS, match="mass matrix M is singular"):
        jax.jit(lambda x0: ja.solve(problem, None, 0.0, 1.0, x0).xs)(X0)


def test_mass_matrix_wrong_shape():
    problem = ja.Problem.mass_matrix(jnp.eye(3), lambda x, p, t: -x)
    with pytest.raises(ValueError, match=r"`M` must have shape \(2, 2\)"):
        ja.solve(problem, None, 0.0, 1.0, X0)
