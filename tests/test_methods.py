"""The adjoint methods' own contracts: checkpointing stores O(save times + K) states;
checkpointed and quadrature methods agree with the dense method to solver
tolerance."""

import re

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import pytest
from helpers import ALL_ADJOINTS, max_relative_error, reference_solve

import jadjoint as ja

MAX_STEPS = 1000


def lotka_volterra(x, p, t):
    return jnp.stack(
        [p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]]
    )


problem = ja.Problem.explicit(lotka_volterra, f=lambda x, p, t: jnp.sum(x**2))
P = jnp.array([1.1, 0.4, 0.1, 0.4])
TS = jnp.linspace(0.5, 10.0, 7)


def loss(p, adjoint, max_steps=MAX_STEPS):
    solution = ja.solve(
        problem,
        p,
        0.0,
        10.0,
        jnp.array([2.0, 1.0]),
        saveat=TS,
        adjoint=adjoint,
        rtol=1e-9,
        atol=1e-9,
        max_steps=max_steps,
    )
    return solution.cost + jnp.sum(jnp.sin(solution.xs))


grad = jax.jit(jax.grad(loss), static_argnums=1)


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(checkpoints=1),
        ja.InterpolatingAdjoint(checkpoints=3),
        ja.InterpolatingAdjoint(checkpoints=40),
        ja.QuadratureAdjoint(),
        ja.QuadratureAdjoint(nodes=5),
        ja.DiscretiseThenOptimise(),
    ],
    ids=["k1", "k3", "k40", "quadrature", "quadrature-5", "discretise"],
)
def test_methods_agree_with_dense_interpolation(adjoint):
    """Re-solved intervals or quadrature change the steps, not the gradient beyond the
    solver tolerance (solves at 1e-9; agreement to 1e-7)."""
    dense = grad(P, ja.InterpolatingAdjoint())
    assert max_relative_error(grad(P, adjoint), dense) < 1e-7


def test_discretise_then_optimise_is_diffrax_rca_of_the_same_solve():
    """The same diffrax solve (Tsit5, PID at 1e-9, the cost integrated alongside)
    differentiated by RCA here and in an independent diffrax script: equal to
    rounding (1e-10, far below the 1e-9 solves)."""

    def reference_loss(p):
        cost, xs = reference_solve(
            lotka_volterra, problem.f, p, 0.0, 10.0, jnp.array([2.0, 1.0]), TS, 1e-9
        )
        return cost + jnp.sum(jnp.sin(xs))

    expected = jax.jit(jax.grad(reference_loss))(P)
    discrete = grad(P, ja.DiscretiseThenOptimise())
    assert max_relative_error(discrete, expected) < 1e-10


def saved_residual_shapes(adjoint, capsys):
    jax.ad_checkpoint.print_saved_residuals(lambda p: loss(p, adjoint), P)
    shapes = re.findall(r"\[([\d,]*)\]", capsys.readouterr().out)
    return [tuple(int(d) for d in shape.split(",") if d) for shape in shapes]


def test_checkpointed_residuals_are_o_of_k(capsys):
    """Dense: arrays sized by max_steps. Checkpointed: (save times + K − 1) stored
    rows (the K − 1 checkpoints inside (t0, T)) and the final state."""
    dense = saved_residual_shapes(ja.InterpolatingAdjoint(), capsys)
    assert any(MAX_STEPS in shape for shape in dense)
    for k in (4, 12):
        shapes = saved_residual_shapes(ja.InterpolatingAdjoint(checkpoints=k), capsys)
        assert all(max(shape, default=0) < MAX_STEPS for shape in shapes)
        assert (len(TS) + k - 1, 2) in shapes


def test_checkpoints_must_be_positive():
    with pytest.raises(ValueError, match="`checkpoints` must be a positive integer"):
        ja.InterpolatingAdjoint(checkpoints=0)


DECAY_RATES = jnp.array([0.5, 2.0])
MANY_TS = jnp.linspace(0.0, 3.0, 301)


def many_saves_loss(rates, adjoint):
    """`Σ_i x_i(t_i)` for `ẋ = −k ⊙ x`, `x(0) = 1`: `x_j(t) = exp(−k_j t)`."""
    solution = ja.solve(
        ja.Problem.explicit(lambda x, k, t: -k * x),
        rates,
        0.0,
        3.0,
        jnp.ones(2),
        saveat=MANY_TS,
        adjoint=adjoint,
        rtol=1e-10,
        atol=1e-10,
        max_steps=200,
    )
    return jnp.sum(solution.xs)


@ALL_ADJOINTS
def test_many_save_times_within_one_forward_step(adjoint):
    """301 save times, far more than the forward steps (and than `max_steps`): every
    jump of `w` lands where it should. Analytic: `d/dk_j Σ_i exp(−k_j t_i) =
    −Σ_i t_i exp(−k_j t_i)`; agreement to 1e-7 at rtol 1e-10."""
    expected = -jnp.sum(MANY_TS[:, None] * jnp.exp(-MANY_TS[:, None] * DECAY_RATES), 0)
    actual = jax.grad(many_saves_loss)(DECAY_RATES, adjoint)
    assert max_relative_error(actual, expected) < 1e-7


def compiled_gradient_memory(adjoint, max_steps):
    """Bytes of temporaries XLA allocates for the jitted gradient (what the forward and
    backward solves' buffers take; deterministic, unlike a measured peak)."""

    gradient = jax.grad(lambda p: loss(p, adjoint, max_steps))
    compiled = jax.jit(gradient).lower(P).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_segment_steps_bound_memory_independently_of_max_steps():
    """With `segment_steps`, raising `max_steps` 100× leaves the gradient's buffers
    unchanged (≤ 1.5×); the dense method's grow with it (the test can fail)."""
    bounded = ja.InterpolatingAdjoint(checkpoints=8, segment_steps=200)
    small, large = (compiled_gradient_memory(bounded, n) for n in (1000, 100_000))
    assert large <= 1.5 * small
    dense = [
        compiled_gradient_memory(ja.InterpolatingAdjoint(), n) for n in (1000, 100_000)
    ]
    assert dense[1] > 10 * dense[0]


def test_segment_steps_need_checkpoints():
    with pytest.raises(ValueError, match="`segment_steps` must be a positive integer"):
        ja.InterpolatingAdjoint(segment_steps=100)
