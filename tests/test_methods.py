"""The adjoint methods' own contracts: the forward solve stored in segments keeps
buffers sized by the segment, not by `max_steps`; regenerated segments and
quadrature agree with the solve kept whole to solver tolerance."""

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
        ja.InterpolatingAdjoint(segment_steps=4),
        ja.InterpolatingAdjoint(segment_steps=7),
        ja.InterpolatingAdjoint(),
        ja.QuadratureAdjoint(segment_steps=7),
        ja.QuadratureAdjoint(nodes=5),
        ja.DiscretiseThenOptimise(),
    ],
    ids=["b4", "b7", "default", "quadrature-b7", "quadrature-5", "discretise"],
)
def test_methods_agree_with_the_solve_kept_whole(adjoint):
    """Segments regenerated on the backward pass (or quadrature) change the
    adjoint's steps and the forward's at the segment starts, not the gradient beyond
    the solver tolerance (solves at 1e-9; agreement to 1e-7). The reference keeps
    the whole forward solve as one segment."""
    whole = grad(P, ja.InterpolatingAdjoint(segment_steps=MAX_STEPS))
    assert max_relative_error(grad(P, adjoint), whole) < 1e-7


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


@pytest.mark.parametrize("steps", [16, 100])
def test_residuals_are_sized_by_the_segment(steps, capsys):
    """What the forward pass keeps for the backward one: ⌈max_steps / B⌉ restart
    rows (with the segment's B + 1 step times each) and B dense rows, nothing with
    `max_steps` rows."""
    shapes = saved_residual_shapes(ja.InterpolatingAdjoint(segment_steps=steps), capsys)
    rows = -(-MAX_STEPS // steps)
    assert all(MAX_STEPS not in shape for shape in shapes)
    assert (rows, 2) in shapes
    assert (rows, steps + 1) in shapes
    assert any(shape[:1] == (steps,) for shape in shapes)


@pytest.mark.parametrize("steps", [0, 3, 4.5])
def test_segment_steps_must_be_a_positive_integer(steps):
    with pytest.raises(
        ValueError, match="`segment_steps` must be an integer of at least 4"
    ):
        ja.InterpolatingAdjoint(segment_steps=steps)


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


def test_memory_does_not_grow_with_max_steps():
    """Raising `max_steps` 100× (1000 to 100 000) adds only restart rows to the
    gradient's buffers: 16 rows of 64-step segments, with their 65 step times each,
    become 64 thinned rows without step times and a buffer of 33 rows with them for
    the segments of one span. 1.27× here, on a two-state problem, where the step
    times are most of a row; < 1.3× asserted. Unthinned rows (1563 of them) made it
    2.5×, and diffrax's dense output, which the method once kept whole, 10×."""
    segmented = ja.InterpolatingAdjoint(segment_steps=64)
    small, large = (compiled_gradient_memory(segmented, n) for n in (1000, 100_000))
    assert large < 1.3 * small
