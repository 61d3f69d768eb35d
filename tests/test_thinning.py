"""Thinned restart storage: a solve that may take more than `THINNING_STEPS` steps
keeps a fixed number of restart rows, every other one dropped when they fill up; the
backward pass solves each span between kept rows again to recover its segments."""

import jax
import jax.numpy as jnp
import pytest
from helpers import max_relative_error
from test_methods import P, loss, problem

import jadjoint as ja
import jadjoint._forward._restart_state as restart_state


def members_gradients(adjoint):
    """Gradients of three members whose solves take different numbers of steps,
    by `vmap`."""
    members = P * jnp.array([[1.0], [0.8], [1.3]])
    return members, jax.jit(
        jax.vmap(jax.grad(loss), in_axes=(0, None)), static_argnums=1
    )(members, adjoint)


@pytest.mark.parametrize(
    "adjoint",
    [ja.InterpolatingAdjoint(segment_steps=4), ja.QuadratureAdjoint(segment_steps=5)],
    ids=["interpolating", "quadrature"],
)
def test_thinned_storage_gives_the_gradient_of_the_same_steps(adjoint, monkeypatch):
    """With thinning from 16 steps on (4 rows of 4- or 5-step segments: the 110–153
    steps of the three members thin them three or four times, to one row per 8 or 16
    segments), the forward segments are the ones stored unthinned, so the gradient
    is the same to rounding (1e-9, far below the 1e-9 solves), member by member
    under `vmap`."""
    members, unthinned = members_gradients(adjoint)
    monkeypatch.setattr(restart_state, "THINNING_STEPS", 16)
    assert restart_state.storage_rows(1000, 4) == (4, 64)
    _, thinned = members_gradients(adjoint)
    assert max_relative_error(thinned, unthinned) < 1e-9
    # The steps taken, under `vmap`, differ between members.
    steps = jax.vmap(
        lambda p: ja.solve(
            problem, p, 0.0, 10.0, jnp.array([2.0, 1.0]), rtol=1e-9, atol=1e-9
        ).stats["num_accepted_steps"]
    )(members)
    assert len(set(steps.tolist())) == 3 and int(steps.min()) > 16 * 4


def forced_decay(x, a, t):
    return -a * x + jnp.sin(t)


def long_loss(a, adjoint):
    """`∫ x² dt` of `ẋ = −a x + sin t` over 300 periods: about 8000 steps at rtol
    1e-8, a well-conditioned gradient (no phase to drift)."""
    solution = ja.solve(
        ja.Problem.explicit(forced_decay, f=lambda x, a, t: jnp.sum(x**2)),
        a,
        0.0,
        600 * jnp.pi,
        jnp.ones(1),
        adjoint=adjoint,
        rtol=1e-8,
        atol=1e-8,
        max_steps=16384,
    )
    return solution.cost


def test_a_solve_longer_than_the_thinning_threshold():
    """The default storage (32 rows of 128 steps from `max_steps` 16384) on a solve
    of about 8000 steps, thinned once, against the solve kept whole as one segment:
    the segment starts move the forward steps by the tolerance, 1e-8; agreement to
    1e-6."""
    a = jnp.array(0.7)
    assert restart_state.storage_rows(16384, 128) == (32, 4)
    thinned = jax.jit(jax.grad(long_loss), static_argnums=1)(
        a, ja.InterpolatingAdjoint()
    )
    whole = jax.jit(jax.grad(long_loss), static_argnums=1)(
        a, ja.InterpolatingAdjoint(segment_steps=16384)
    )
    assert max_relative_error(thinned, whole) < 1e-6
