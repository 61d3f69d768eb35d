"""Save-time cotangents injected through the forward step's interpolant
(`jadjoint/_backward/_injection.py`): the backward pass jumps at forward step starts
only.

References: diffrax's `RecursiveCheckpointAdjoint` through `DiscretiseThenOptimise`
at a tight tolerance, and the same method with the jumps left at the save times
(what it does for implicit solvers).
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import max_relative_error

import jadjoint as ja
import jadjoint._adjoint._interpolating as interpolating

RNG = np.random.default_rng(0)
WEIGHTS = {
    "W1": jnp.asarray(0.5 * RNG.standard_normal((8, 2))),
    "b1": jnp.asarray(0.1 * RNG.standard_normal(8)),
    "W2": jnp.asarray(0.5 * RNG.standard_normal((2, 8))),
}
# Many save times per forward step: 200 in [0, 4].
TS = jnp.linspace(0.05, 4.0, 200)
TARGET = jnp.sin(TS)[:, None] * jnp.array([1.0, -0.5])


def mlp(x, p, t):
    return jnp.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T - 0.1 * x


PROBLEM = ja.Problem.explicit(mlp, f=lambda x, p, t: 0.1 * jnp.sum(x**2))


def loss(p, ts, adjoint, tol, solver=diffrax.Tsit5()):
    solution = ja.solve(
        PROBLEM,
        p,
        0.0,
        4.0,
        jnp.array([1.0, 0.0]),
        saveat=ts,
        adjoint=adjoint,
        solver=solver,
        rtol=tol,
        atol=tol,
    )
    return solution.cost + jnp.sum((solution.xs - TARGET) ** 2)


grad_p = jax.jit(jax.grad(loss), static_argnums=(2, 3, 4))
grad_p_and_ts = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=(2, 3, 4))


@pytest.fixture(scope="module")
def reference():
    return grad_p(WEIGHTS, TS, ja.DiscretiseThenOptimise(), 1e-12)


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(),
        ja.InterpolatingAdjoint(segment_steps=4),
        ja.QuadratureAdjoint(),
    ],
    ids=["interpolating", "segmented", "quadrature"],
)
def test_injected_gradient_matches_the_discrete_reference(adjoint, reference):
    """At rtol 1e-8 the injected gradient is within 1e-6 of RCA's at 1e-12 (both
    solves' errors are ~1e-8 relative; the tolerance leaves 100×)."""
    assert max_relative_error(grad_p(WEIGHTS, TS, adjoint, 1e-8), reference) < 1e-6


def test_injection_agrees_with_jumps_at_the_save_times(monkeypatch):
    """The same method with its jumps left at the save times (what it does for
    implicit solvers; chosen here by patching `injects_through`), the save times
    differentiated too: the parameter and save-time gradients agree to the solver
    tolerance (1e-8 solves, agreement to 1e-6)."""
    injected = grad_p_and_ts(WEIGHTS, TS, ja.InterpolatingAdjoint(), 1e-8)
    monkeypatch.setattr(interpolating, "injects_through", lambda solver: False)
    at_save_times = jax.jit(  # a new function: not the cached trace above
        jax.grad(loss, argnums=(0, 1)), static_argnums=(2, 3, 4)
    )(WEIGHTS, TS, ja.InterpolatingAdjoint(), 1e-8)
    assert max_relative_error(injected, at_save_times) < 1e-6


def test_injection_with_an_other_explicit_solver(reference):
    """Dopri5's interpolant (another tableau and interpolation class)."""
    dopri = grad_p(WEIGHTS, TS, ja.InterpolatingAdjoint(), 1e-8, diffrax.Dopri5())
    assert max_relative_error(dopri, reference) < 1e-6


def test_injection_with_a_solver_whose_first_stage_is_not_the_last(reference):
    """Heun's tableau is not first-same-as-last: the backward loop evaluates every
    step's first stage afresh. A second-order solve at rtol 1e-7 has a relative
    error near 1e-5 here; 1e-4 leaves 10×."""
    heun = grad_p(WEIGHTS, TS, ja.InterpolatingAdjoint(), 1e-7, diffrax.Heun())
    assert max_relative_error(heun, reference) < 1e-4


def test_batch_whose_members_take_different_steps_matches_each_alone():
    """Under `vmap` the backward loop runs until the last member ends, the others
    masked: each member's gradient is its own (to rounding, 1e-10)."""
    scales = jnp.array([0.5, 1.0, 3.0])

    def scaled(scale):
        p = {**WEIGHTS, "W2": scale * WEIGHTS["W2"]}
        return loss(p, TS, ja.InterpolatingAdjoint(), 1e-6)

    batched = jax.jit(jax.vmap(jax.grad(scaled)))(scales)
    alone = jnp.stack([jax.jit(jax.grad(scaled))(s) for s in scales])
    assert max_relative_error(batched, alone) < 1e-10


DECAY = ja.Problem.explicit(lambda x, k, t: -k * x)
# Save times at t0 and T, where the first and the last segment start and end.
DECAY_TS = jnp.array([0.0, 0.25, 0.5, 1.0])


def decay_loss(k, x0, adjoint):
    solution = ja.solve(
        DECAY, k, 0.0, 1.0, x0, saveat=DECAY_TS, adjoint=adjoint, rtol=1e-10, atol=1e-10
    )
    return jnp.sum(solution.xs**2)


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(segment_steps=4),
        ja.InterpolatingAdjoint(segment_steps=5),
        ja.QuadratureAdjoint(segment_steps=4),
    ],
    ids=["segment-steps-4", "segment-steps-5", "quadrature"],
)
def test_save_times_on_segment_boundaries_are_injected_once(adjoint):
    """Saves at `t0` and `T`, and inside segments of four or five steps, each enter
    the gradient once (a save on a boundary belongs to one segment only). Closed
    form: `x(t) = x0 e^{−k t}`, `L = Σ x(tᵢ)²`, so `∂L/∂k = −2 Σ tᵢ x(tᵢ)²` and
    `∂L/∂x0 = 2 Σ x(tᵢ)² / x0`; solves at 1e-10, agreement to 1e-7."""
    k, x0 = jnp.array(0.7), jnp.array([1.5])
    xs = x0 * jnp.exp(-k * DECAY_TS)
    expected = (-2 * jnp.sum(DECAY_TS * xs**2), 2 * jnp.sum(xs**2) / x0)
    got = jax.jit(jax.grad(decay_loss, argnums=(0, 1)), static_argnums=2)(
        k, x0, adjoint
    )
    assert max_relative_error(got, expected) < 1e-7
