"""`solve` composes with jit, vmap, grad, pytrees and optax."""

import diffrax
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import max_relative_error, reference_solve

import jadjoint as ja

TOL = 1e-9
GRAD_RTOL = 1e-6

decay = ja.Problem.explicit(lambda x, k, t: -k * x, f=lambda x, k, t: jnp.sum(x**2))
DECAY_TS = jnp.array([0.5, 1.0, 1.5])
TARGET = jnp.array([0.6, 0.35, 0.2])


def decay_loss(k, x0):
    solution = ja.solve(decay, k, 0.0, 1.5, x0, saveat=DECAY_TS, rtol=TOL, atol=TOL)
    return 0.1 * solution.cost + jnp.sum((solution.xs[:, 0] - TARGET) ** 2)


decay_grad = jax.jit(jax.grad(decay_loss, argnums=(0, 1)))
KS = jnp.array([0.3, 0.7, 1.1, 1.6])
X0 = jnp.array([1.0, 0.5])


def test_vmap_of_grad_equals_loop_of_grads():
    batched = jax.jit(jax.vmap(jax.grad(decay_loss, argnums=(0, 1)), (0, None)))(KS, X0)
    looped = [decay_grad(k, X0) for k in KS]
    for i, (dk, dx0) in enumerate(looped):
        assert max_relative_error((batched[0][i], batched[1][i]), (dk, dx0)) < 1e-12


def test_grad_of_vmapped_loss_equals_sum_of_grads():
    batch_loss = lambda k, x0s: jnp.sum(jax.vmap(decay_loss, (None, 0))(k, x0s))
    x0s = jnp.stack([X0, 2 * X0, -X0])
    grad_k, grad_x0s = jax.jit(jax.grad(batch_loss, argnums=(0, 1)))(KS[1], x0s)
    looped = [decay_grad(KS[1], x0) for x0 in x0s]
    assert grad_k == pytest.approx(float(sum(g[0] for g in looped)), rel=1e-12)
    assert max_relative_error(grad_x0s, jnp.stack([g[1] for g in looped])) < 1e-12


@pytest.mark.parametrize("segment_steps", [128, 4])
def test_progress_meter_reports_both_passes_and_changes_nothing(segment_steps, capfd):
    """A progress meter only reports: the gradient is bit-for-bit the same, and the
    forward and the backward pass each reach 100% once, in one segment or in
    several (4 steps each)."""
    adjoint = ja.InterpolatingAdjoint(segment_steps=segment_steps)

    def loss_with_progress(k, x0, meter):
        solution = ja.solve(
            decay,
            k,
            0.0,
            1.5,
            x0,
            saveat=DECAY_TS,
            adjoint=adjoint,
            rtol=TOL,
            atol=TOL,
            progress_meter=meter,
        )
        return 0.1 * solution.cost + jnp.sum((solution.xs[:, 0] - TARGET) ** 2)

    gradient = jax.jit(jax.grad(loss_with_progress, argnums=(0, 1)), static_argnums=2)
    reported = gradient(KS[0], X0, diffrax.TextProgressMeter())
    jax.effects_barrier()
    assert capfd.readouterr().out.count("100.00%") == 2
    silent = gradient(KS[0], X0, diffrax.NoProgressMeter())
    assert max_relative_error(reported, silent) == 0


def test_reverse_over_reverse_matches_closed_form():
    """F(k) = |x0|² (1 − e^{−2kT}) / (2k); d/dk (F'(k)²) = 2 F' F''."""
    exact = lambda k: jnp.sum(X0**2) * (1 - jnp.exp(-2 * k * 1.5)) / (2 * k)
    cost = lambda k: ja.solve(decay, k, 0.0, 1.5, X0, rtol=1e-10, atol=1e-10).cost
    outer = lambda F: jax.grad(lambda k: jax.grad(F)(k) ** 2)
    actual = jax.jit(outer(cost))(0.8)
    assert float(actual) == pytest.approx(float(outer(exact)(0.8)), rel=1e-6)


def test_pytree_parameters_and_state_without_g():
    """State a dict of a vector and a scalar; parameters a nested pytree."""

    def vector_field(x, p, t):
        return {
            "position": x["velocity"] * p["scale"]["position"],
            "velocity": -p["stiffness"] * jnp.sum(x["position"]) - 0.1 * x["velocity"],
        }

    f = lambda x, p, t: jnp.sum(x["position"] ** 2) + x["velocity"] ** 2
    problem = ja.Problem.explicit(vector_field, f=f)
    p = {"stiffness": jnp.array(2.0), "scale": {"position": jnp.array([1.0, 0.5])}}
    x0 = {"position": jnp.array([1.0, -1.0]), "velocity": jnp.array(0.3)}
    ts = jnp.linspace(0.2, 3.0, 8)

    def loss(p, x0):
        solution = ja.solve(problem, p, 0.0, 3.0, x0, saveat=ts, rtol=TOL, atol=TOL)
        return solution.cost + jnp.sum(solution.xs["velocity"] ** 2)

    def reference(p, x0):
        cost, xs = reference_solve(vector_field, f, p, 0.0, 3.0, x0, ts)
        return cost + jnp.sum(xs["velocity"] ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, x0)
    expected = jax.jit(jax.grad(reference, argnums=(0, 1)))(p, x0)
    assert max_relative_error(grads, expected) < GRAD_RTOL


def test_optax_loop_recovers_decay_rate():
    """Fit k of x' = −k x to exact observations e^{−0.9 t}: Adam must reach 0.9."""
    ts = jnp.linspace(0.25, 2.0, 8)
    data = jnp.exp(-0.9 * ts)

    def loss(p):
        solution = ja.solve(decay, p["k"], 0.0, 2.0, jnp.ones(1), saveat=ts)
        return jnp.sum((solution.xs[:, 0] - data) ** 2)

    optimiser = optax.adam(0.05)

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = optimiser.update(grads, state)
        return optax.apply_updates(p, updates), state, value

    p = {"k": jnp.array(0.2)}
    state = optimiser.init(p)
    first = None
    for _ in range(300):
        p, state, value = step(p, state)
        first = value if first is None else first
    assert float(value) < 1e-3 * float(first)
    assert float(p["k"]) == pytest.approx(0.9, abs=1e-3)


def test_float32_end_to_end():
    """Float32 inputs give float32 outputs and gradients within float32 accuracy of
    the float64 gradient (rtol 1e-5 solves; agreement to 1e-3)."""
    loss = lambda k, x0, t1: ja.solve(
        decay,
        k,
        0.0,
        t1,
        x0,
        saveat=jnp.linspace(0.5, 1.5, 3, dtype=t1.dtype),
        rtol=1e-5,
        atol=1e-5,
    ).xs.sum()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    single = grad(jnp.float32(0.7), X0.astype(jnp.float32), jnp.float32(1.5))
    double = grad(jnp.float64(0.7), X0, jnp.float64(1.5))
    assert single[0].dtype == jnp.float32 and single[1].dtype == jnp.float32
    assert max_relative_error(single, double) < 1e-3


def test_float32_state_with_python_number_times():
    """Under `jax_enable_x64`, Python numbers as `t0`, `t1` and the save times take a
    float32 state's precision (they once made the solve fail): float32 gradients,
    with an integral cost and observations, within float32 accuracy of the float64
    gradient (rtol 1e-5 solves; agreement to 1e-3)."""

    def loss(k, x0):
        solution = ja.solve(
            decay, k, 0.0, 1.5, x0, saveat=[0.5, 1.0, 1.5], rtol=1e-5, atol=1e-5
        )
        return solution.cost + jnp.sum(solution.xs**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    single = grad(jnp.float32(0.7), X0.astype(jnp.float32))
    double = grad(jnp.float64(0.7), X0)
    assert single[0].dtype == jnp.float32 and single[1].dtype == jnp.float32
    assert max_relative_error(single, double) < 1e-3


def test_solution_fields():
    solution = ja.solve(decay, 0.5, 0.0, 1.5, X0, saveat=DECAY_TS, rtol=TOL, atol=TOL)
    assert solution.ts.shape == (3,) and solution.xs.shape == (3, 2)
    assert jnp.allclose(solution.xs, jnp.exp(-0.5 * DECAY_TS)[:, None] * X0, rtol=1e-8)
    assert jnp.array_equal(solution.x0, X0)
    assert int(solution.stats["num_accepted_steps"]) > 0
    default = ja.solve(decay, 0.5, 0.0, 1.5, X0)
    assert default.ts.tolist() == [1.5] and default.xs.shape == (1, 2)
