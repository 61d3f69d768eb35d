"""The backward pass's steps (`_stepwise.py`): each forward step tried whole, so that
the adjoint's discretisation stays consistent with the forward solution's."""

import jax
import jax.numpy as jnp
import pytest

import jadjoint as ja
import jadjoint._methods as methods

T = 350.0  # 55 periods


def oscillator(x, omega, t):
    return jnp.stack([x[1], -(omega**2) * x[0]])


PROBLEM = ja.Problem.explicit(oscillator, f=lambda x, omega, t: x[0] ** 2)


def cost(omega, adjoint):
    solution = ja.solve(
        PROBLEM,
        omega,
        0.0,
        T,
        jnp.array([1.0, 0.0]),
        adjoint=adjoint,
        rtol=1e-6,
        atol=1e-6,
    )
    return solution.cost


def exact_gradient(omega):
    """`C(ω) = ∫_0^T cos²(ωt) dt = T/2 + sin(2ωT)/(4ω)`, differentiated."""
    return T * jnp.cos(2 * omega * T) / (2 * omega) - jnp.sin(2 * omega * T) / (
        4 * omega**2
    )


@pytest.mark.parametrize(
    "adjoint",
    [ja.InterpolatingAdjoint(), ja.QuadratureAdjoint()],
    ids=["interpolating", "quadrature"],
)
def test_a_gradient_that_cancels_over_many_oscillations(adjoint, monkeypatch):
    """`dC/dω` is a few hundred, the sum of oscillating contributions of `T` over 55
    periods, so a phase error between the forward solution and the adjoint shows.
    At rtol 1e-6 it is within 1e-3 of the closed form (it is about 1e-4; with the
    adjoint's steps of its own, twice the forward's, it was 1.4e-2 off), and the
    backward pass takes the forward's steps."""
    recorded = []
    integrate = methods.integrate_along_steps

    def recording(*args, **kwargs):
        w, q, steps = integrate(*args, **kwargs)
        jax.debug.callback(lambda s: recorded.append(int(s)), steps)
        return w, q, steps

    monkeypatch.setattr(methods, "integrate_along_steps", recording)
    omega = jnp.array(1.0)
    gradient = jax.jit(jax.grad(cost), static_argnums=1)(omega, adjoint)
    jax.effects_barrier()
    expected = exact_gradient(omega)
    assert abs(gradient - expected) < 1e-3 * abs(expected)
    forward = jax.jit(
        lambda omega: ja.solve(
            PROBLEM,
            omega,
            0.0,
            T,
            jnp.array([1.0, 0.0]),
            rtol=1e-6,
            atol=1e-6,
        ).stats["num_accepted_steps"]
    )(omega)
    assert sum(recorded) <= 1.05 * int(forward)
