"""The backward pass's steps along the forward steps: without observations each
forward step tried whole by the continuous adjoint
(`jadjoint/_backward/_along_steps.py`), with observations carried by the step's own
derivative unless the adjoint's error estimate sends it to the continuous adjoint
(`jadjoint/_backward/_step_derivatives.py`), so that the adjoint's discretisation
stays consistent with the forward solution's."""

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
# `p = (target, rate)`.
FAST_MODE = ja.Problem.explicit(
    lambda x, p, t: jnp.stack([-p[1] * (x[0] - p[0]), -0.2 * x[1] + x[0]]),
    f=lambda x, p, t: x[1] ** 2,
)


def fast_mode_solve(target, rate):
    return ja.solve(
        FAST_MODE,
        jnp.stack([target, rate]),
        0.0,
        10.0,
        jnp.array([1.0, 0.0]),
        saveat=SAVE_TIMES,
        rtol=1e-6,
        atol=1e-6,
    )


def fast_mode_gradient(rate: float) -> float:
    """`dL/dp` at `p = 1` of `L = ∫_0^10 b² dt + Σ_i |x(t_i)|²` for `ȧ = −λ(a − p)`,
    `ḃ = −0.2 b + a`, `x(0) = (1, 0)`. At `p = 1`, `a ≡ 1` and `b = 5(1 − e^{−0.2t})`;
    the sensitivities are `∂a/∂p = 1 − e^{−λt}` and `s = ∂b/∂p = 5(1 − e^{−0.2t}) −
    (e^{−0.2t} − e^{−λt})/(λ − 0.2)`. So `dL/dp = ∫ 2 b s dt + Σ_i [2(1 − e^{−λt_i})
    + 2 b(t_i) s(t_i)]`, the integral by Gauss–Legendre quadrature (100 nodes on
    [0, 0.2], where the transient is, and 100 on [0.2, 10]; exact to rounding)."""

    def b(t):
        return 5 * (1 - np.exp(-0.2 * t))

    def s(t):
        return b(t) - (np.exp(-0.2 * t) - np.exp(-rate * t)) / (rate - 0.2)

    def integral(start, end):
        nodes, weights = np.polynomial.legendre.leggauss(100)
        t = start + (nodes + 1) / 2 * (end - start)
        return (end - start) / 2 * np.sum(weights * 2 * b(t) * s(t))

    ts = np.asarray(SAVE_TIMES)
    saved = np.sum(2 * (1 - np.exp(-rate * ts)) + 2 * b(ts) * s(ts))
    return integral(0.0, 0.2) + integral(0.2, 10.0) + saved


def test_forward_steps_unstable_for_the_adjoint_fall_back(monkeypatch):
    """With `λ = 100` the fast mode sits at its equilibrium, so the forward solution
    does not move in it and the forward takes 15 steps of about 0.7 (`h·λ ≈ −70`,
    far outside Tsit5's stability region): exact for the solution, unstable for any
    perturbation. The discrete derivative through those steps (diffrax RCA at rtol
    1e-6) is 10¹⁰⁵ times the gradient, and so is the adjoint carried by them. Their
    adjoint's error estimate is of the size of the unstable stability function, far
    beyond the guard, so those steps must fall back to the continuous adjoint under
    its own error control: the gradient is within the requested rtol, 1e-6, of the
    closed form (measured 3e-8). With `λ = 0.5` the mode is not fast and few steps
    fall back. The two are one `vmap`, its members taking different paths through
    the backward loop, each as accurate as alone."""
    recorded = []
    carry = along_steps.carry_by_step_derivatives

    def recording(*args, **kwargs):
        w, q, steps = carry(*args, **kwargs)
        jax.debug.callback(lambda f: recorded.extend(np.ravel(f)), steps.fell_back)
        return w, q, steps

    monkeypatch.setattr(along_steps, "carry_by_step_derivatives", recording)
    target = jnp.array(1.0)
    forward_steps = jax.jit(
        lambda target: fast_mode_solve(target, RATE).stats["num_accepted_steps"]
    )(target)
    assert int(forward_steps) <= 30

    def loss(target, rate):
        solution = fast_mode_solve(target, rate)
        return solution.cost + jnp.sum(solution.xs**2)

    rates = jnp.array([RATE, 0.5])
    gradients = jax.jit(jax.vmap(jax.grad(loss), (None, 0)))(target, rates)
    jax.effects_barrier()
    for gradient, rate in zip(gradients, rates, strict=True):
        expected = fast_mode_gradient(float(rate))
        assert abs(float(gradient) - expected) < 1e-6 * abs(expected)
    # Per member, the forward steps that fell back: 13 and 3 when measured.
    assert max(recorded) >= 10 and min(recorded) <= 5
