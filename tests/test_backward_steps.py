"""The backward pass's steps (`jadjoint/_backward/_along_steps.py`): each forward step
tried whole, so that the adjoint's discretisation stays consistent with the forward
solution's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jadjoint as ja
import jadjoint._backward._along_steps as along_steps

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
    integrate = along_steps.integrate_along_steps

    def recording(*args, **kwargs):
        w, q, steps = integrate(*args, **kwargs)
        jax.debug.callback(lambda s: recorded.append(int(s)), steps)
        return w, q, steps

    monkeypatch.setattr(along_steps, "integrate_along_steps", recording)
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


RATE = 100.0
SAVE_TIMES = jnp.linspace(0.5, 10.0, 20)
FAST_MODE = ja.Problem.explicit(
    lambda x, p, t: jnp.stack([-RATE * (x[0] - p), -0.2 * x[1] + x[0]]),
    f=lambda x, p, t: x[1] ** 2,
)


def fast_mode_solve(p):
    return ja.solve(
        FAST_MODE,
        p,
        0.0,
        10.0,
        jnp.array([1.0, 0.0]),
        saveat=SAVE_TIMES,
        rtol=1e-6,
        atol=1e-6,
    )


def fast_mode_gradient() -> float:
    """`dL/dp` at `p = 1` of `L = ∫_0^10 b² dt + Σ_i |x(t_i)|²` for `ȧ = −100(a − p)`,
    `ḃ = −0.2 b + a`, `x(0) = (1, 0)`. At `p = 1`, `a ≡ 1` and `b = 5(1 − e^{−0.2t})`;
    the sensitivities are `∂a/∂p = 1 − e^{−100t}` and `s = ∂b/∂p = 5(1 − e^{−0.2t}) −
    (e^{−0.2t} − e^{−100t})/99.8`. So `dL/dp = ∫ 2 b s dt + Σ_i [2(1 − e^{−100t_i}) +
    2 b(t_i) s(t_i)]`, the integral by Gauss–Legendre quadrature (100 nodes on
    [0, 0.2], where the transient is, and 100 on [0.2, 10]; exact to rounding)."""

    def b(t):
        return 5 * (1 - np.exp(-0.2 * t))

    def s(t):
        return b(t) - (np.exp(-0.2 * t) - np.exp(-RATE * t)) / (RATE - 0.2)

    def integral(start, end):
        nodes, weights = np.polynomial.legendre.leggauss(100)
        t = start + (nodes + 1) / 2 * (end - start)
        return (end - start) / 2 * np.sum(weights * 2 * b(t) * s(t))

    ts = np.asarray(SAVE_TIMES)
    saved = np.sum(2 * (1 - np.exp(-RATE * ts)) + 2 * b(ts) * s(ts))
    return integral(0.0, 0.2) + integral(0.2, 10.0) + saved


def test_forward_steps_unstable_for_the_adjoint_are_divided():
    """The fast mode sits at its equilibrium, so the forward solution does not move
    in it and the forward takes 15 steps of about 0.7 (`h·λ ≈ −70`, far outside
    Tsit5's stability region): exact for the solution, unstable for any
    perturbation. The discrete derivative through those steps (diffrax RCA at rtol
    1e-6) is 10¹⁰⁵ times the gradient; taking them whole, backwards, 10¹⁰³ times. The
    backward pass must divide them (the error estimate of a step unstable for the
    adjoint is far beyond the whole-step slack): the gradient is within the
    requested rtol, 1e-6, of the closed form (measured 6e-8)."""
    p = jnp.array(1.0)
    forward_steps = jax.jit(lambda p: fast_mode_solve(p).stats["num_accepted_steps"])(p)
    assert int(forward_steps) <= 30

    def loss(p):
        solution = fast_mode_solve(p)
        return solution.cost + jnp.sum(solution.xs**2)

    gradient = jax.jit(jax.grad(loss))(p)
    expected = fast_mode_gradient()
    assert abs(float(gradient) - expected) < 1e-6 * abs(expected)
