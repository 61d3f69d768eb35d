"""Stiff Robertson kinetics with Kvaerno5 and with jadjoint's BDF: the adjoint
methods stay accurate with an integral cost and with a loss on the saved states, and
the backward re-integration of BacksolveAdjoint fails loudly rather than returning a
wrong gradient.

    ẏ1 = −k1 y1 + k3 y2 y3,  ẏ2 = k1 y1 − k2 y2² − k3 y2 y3,  ẏ3 = k2 y2²,
    k = (0.04, 3e7, 1e4),  gradient with respect to log k, of
    F = 1e4 ∫₀¹⁰⁰ y2 dt,  or  L = Σ_i (y1 + 1e4 y2 + y3)(t_i).

Reference: diffrax RecursiveCheckpointAdjoint with Kvaerno5 (Newton root finder) at
rtol 1e-11, which agrees with the same at 1e-10 to 1.3e-9 (the cost) and 7e-8 (40
save times), and with central differences of itself to 4e-9 and 2e-6 (the
differences' own truncation error). Target: 1e-5 relative at rtol 1e-8 (observed:
2.8e-7 for the cost; 2.5e-7 to 1.1e-6 for the saved states). The cost's solve runs
Kvaerno5 with a Newton root finder: with diffrax's default (VeryChord) the same
gradient is accurate to 6e-9 but needs over 4096 steps (10× the time). The saved
states' solves run diffrax's default Kvaerno5, as a new user would."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
import pytest
from helpers import max_relative_error, reference_solve
from jax.flatten_util import ravel_pytree

import jadjoint as ja


def robertson(y, log_k, t):
    k1, k2, k3 = jnp.exp(log_k)
    return jnp.stack(
        [
            -k1 * y[0] + k3 * y[1] * y[2],
            k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2],
            k2 * y[1] ** 2,
        ]
    )


def cost(y, log_k, t):
    return 1e4 * y[1]


LOG_K = jnp.log(jnp.array([0.04, 3e7, 1e4]))
Y0 = jnp.array([1.0, 0.0, 0.0])
problem = ja.Problem.explicit(robertson, f=cost)


def loss(log_k, adjoint):
    solution = ja.solve(
        problem,
        log_k,
        0.0,
        100.0,
        Y0,
        adjoint=adjoint,
        solver=diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-10, atol=1e-10)),
        rtol=1e-8,
        atol=1e-10,
    )
    return solution.cost


@jax.jit
@jax.grad
def reference(log_k):
    solver = diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-13, atol=1e-13))
    ts = jnp.array([100.0])
    value, _ = reference_solve(
        robertson, cost, log_k, 0.0, 100.0, Y0, ts, tol=1e-11, atol=1e-13, solver=solver
    )
    return value


def test_default_adjoint_is_accurate_on_stiff_robertson():
    grads = jax.jit(jax.grad(loss), static_argnums=1)(LOG_K, ja.InterpolatingAdjoint())
    assert max_relative_error(grads, reference(LOG_K)) < 1e-5


def test_backsolve_fails_loudly_on_stiff_robertson():
    errors = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
    with pytest.raises(errors, match="maximum number of solver steps"):
        jax.jit(jax.grad(loss), static_argnums=1)(LOG_K, ja.BacksolveAdjoint())


# The saved states' loss, as a new user writes it: diffrax's default Kvaerno5, 40
# log-spaced save times (the last at T) or T alone, y2 weighted to the others' size.
# Folding the jumps of `w` at the save times into one backward solve made it stall
# at `max_steps` here (see `jadjoint/_backward/_jumps.py`).
WEIGHTS = jnp.array([1.0, 1e4, 1.0])
OBSERVED = ja.Problem.explicit(robertson)
SAVE_TIMES = {"40 times": jnp.logspace(-3, 2, 40), "T only": jnp.array([100.0])}


def weighted_loss(log_k, problem, adjoint, saveat, solver, x0=Y0):
    """The problem's cost (none for `OBSERVED`) plus the weighted states at
    `saveat` (a semi-explicit DAE's `(y, z)` side by side), solved at rtol 1e-8."""
    solution = ja.solve(
        problem,
        log_k,
        0.0,
        100.0,
        x0,
        saveat=saveat,
        adjoint=adjoint,
        solver=solver,
        rtol=1e-8,
        atol=1e-10,
    )
    states = jnp.concatenate(jax.tree_util.tree_leaves(solution.xs), axis=-1)
    return solution.cost + jnp.sum(states * WEIGHTS)


def observation_loss(log_k, adjoint, saveat):
    return weighted_loss(log_k, OBSERVED, adjoint, saveat, diffrax.Kvaerno5())


observation_grad = jax.jit(jax.grad(observation_loss), static_argnums=1)


@jax.jit
@jax.grad
def observation_reference(log_k, saveat):
    solver = diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-13, atol=1e-13))
    _, xs = reference_solve(
        robertson,
        None,
        log_k,
        0.0,
        100.0,
        Y0,
        saveat,
        tol=1e-11,
        atol=1e-13,
        solver=solver,
    )
    return jnp.sum(xs * WEIGHTS)


@pytest.mark.parametrize(
    "adjoint, saves",
    [
        (ja.InterpolatingAdjoint(), "40 times"),
        (ja.QuadratureAdjoint(), "40 times"),
        (ja.DiscretiseThenOptimise(), "40 times"),
        (ja.InterpolatingAdjoint(), "T only"),
        (ja.InterpolatingAdjoint(segment_steps=16), "40 times"),
    ],
    ids=[
        "interpolating",
        "quadrature",
        "discretise",
        "interpolating-T-only",
        # Every segment but the last regenerated: a regeneration that solved again
        # under step-size control took more steps than the forward segment here
        # and stopped at its limit; retaking the stored steps cannot.
        "regenerated-segments",
    ],
)
def test_observations_of_stiff_robertson(adjoint, saves):
    saveat = SAVE_TIMES[saves]
    grads = observation_grad(LOG_K, adjoint, saveat)
    assert max_relative_error(grads, observation_reference(LOG_K, saveat)) < 1e-5


def test_backsolve_fails_loudly_on_observations_of_stiff_robertson():
    errors = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
    with pytest.raises(errors, match="maximum number of solver steps"):
        observation_grad(LOG_K, ja.BacksolveAdjoint(), SAVE_TIMES["40 times"])


# jadjoint's BDF on the same problems, against the same references: the integral
# cost and the 40 saved states in one loss (one compile), for every method and for
# every implicit and DAE form (the saved states alone where every segment but the
# last is regenerated), each built to have Robertson's solution (the
# gradient of the sum is the sum of the references; observed for the state-dependent
# mass matrix and the semi-explicit DAE: 3.8e-7 and 6.2e-7); members of a batch; a
# solve long enough that every segment but the last is regenerated from the BDF's
# stored state. Target 1e-5 relative, as above
# (observed at rtol 1e-8: 1.6e-7 to 2.5e-7 for the cost, 1.8e-6 to 8e-6 for the
# saved states, where CVODES's adjoint is off by 1.0e-5 in
# `benchmarks/bench_stiff.py`).
DENSE_BDF = ja.BDF()


def bdf_loss(log_k, problem, adjoint, saveat, x0=Y0, solver=DENSE_BDF):
    return weighted_loss(log_k, problem, adjoint, saveat, solver, x0)


bdf_grad = eqx.filter_jit(jax.grad(bdf_loss))


def conserving(y, log_k, t):
    """Robertson with the third equation replaced by mass conservation."""
    return robertson(y, log_k, t).at[2].set(jnp.sum(y) - 1)


BDF_PROBLEMS = {
    "cost": problem,
    "saved states": OBSERVED,
    "implicit h": ja.Problem(lambda y, ydot, k, t: ydot - robertson(y, k, t), f=cost),
    "singular mass matrix": ja.Problem.mass_matrix(
        jnp.diag(jnp.array([1.0, 1.0, 0.0])), conserving, f=cost
    ),
    # `M(y) ẏ = M(y) f(y)`, `M(y) = diag(1 + y)`: Robertson's solution.
    "state-dependent mass matrix": ja.Problem.mass_matrix(
        lambda y, k, t: jnp.diag(1 + y),
        lambda y, k, t: (1 + y) * robertson(y, k, t),
        f=cost,
    ),
    # `y = (y1, y2)`, `z = (y3,)`: the singular mass matrix's DAE, semi-explicit.
    "semi-explicit DAE": ja.Problem.semi_explicit(
        lambda y, z, k, t: robertson(jnp.concatenate([y, z]), k, t)[:2],
        lambda y, z, k, t: jnp.sum(y) + z - 1,
        f=lambda x, k, t: cost(jnp.concatenate(x), k, t),
    ),
}
BDF_X0 = {"semi-explicit DAE": (Y0[:2], Y0[2:])}


def bdf_expected(case: str, saveat):
    observed = observation_reference(LOG_K, saveat)
    return observed if case == "saved states" else observed + reference(LOG_K)


@pytest.mark.parametrize(
    "case, adjoint",
    [
        ("cost", ja.InterpolatingAdjoint()),
        ("saved states", ja.InterpolatingAdjoint(segment_steps=16)),
        ("cost", ja.QuadratureAdjoint()),
        ("cost", ja.DiscretiseThenOptimise()),
        ("implicit h", ja.InterpolatingAdjoint()),
        ("singular mass matrix", ja.InterpolatingAdjoint()),
        ("state-dependent mass matrix", ja.InterpolatingAdjoint()),
        ("semi-explicit DAE", ja.QuadratureAdjoint()),
    ],
    ids=[
        "cost-and-saved-interpolating",
        "saved-regenerated-segments",
        "cost-and-saved-quadrature",
        # Through the BDF's steps, the Newton solution differentiated implicitly.
        "cost-and-saved-discretise",
        "implicit-h",
        "singular-mass-matrix",
        "state-dependent-mass-matrix",
        "semi-explicit-dae",
    ],
)
def test_bdf_on_stiff_robertson(case, adjoint):
    saveat = SAVE_TIMES["40 times"]
    x0 = BDF_X0.get(case, Y0)
    grads = bdf_grad(LOG_K, BDF_PROBLEMS[case], adjoint, saveat, x0)
    assert max_relative_error(grads, bdf_expected(case, saveat)) < 1e-5


# Newton–Krylov: the BDF's corrections by GMRES on Jacobian-vector products, forwards
# and in the backward solves, against the same references to the same 1e-5 (for
# three states GMRES is exact after three iterations; observed 4.4e-7 by the
# continuous adjoint and 3.5e-7 through the steps, the dense BDF's 3.8e-7 and
# 4.5e-7; on the hybrid neural ODE below 2.1e-6 against 2.2e-6).
MATRIX_FREE_BDF = ja.BDF(linear_solver=lx.GMRES(rtol=1e-10, atol=1e-12))


@pytest.mark.parametrize(
    "adjoint",
    [ja.InterpolatingAdjoint(), ja.DiscretiseThenOptimise()],
    ids=["interpolating", "discretise"],
)
def test_matrix_free_bdf_on_stiff_robertson(adjoint):
    saveat = SAVE_TIMES["40 times"]
    rest = (problem, adjoint, saveat, Y0)
    grads = bdf_grad(LOG_K, *rest, MATRIX_FREE_BDF)
    assert max_relative_error(grads, bdf_expected("cost", saveat)) < 1e-5
    # No factorisation anywhere: the option reached the forward and backward steps.
    # (The dense BDF's gradient has eight.)
    traced = jax.make_jaxpr(lambda k: jax.grad(bdf_loss)(k, *rest, MATRIX_FREE_BDF))
    assert "= lu " not in str(traced(LOG_K))


# A preconditioned Newton–Krylov BDF on a stiff reaction–diffusion system: the 1-D
# Brusselator with 8 cells (16 states) and diffusion `α (N + 1)² = 81` (eigenvalues
# down to about −320 over `t ∈ [0, 5]`), states laid out `(u, v)`. The
# preconditioner is the tridiagonal part of the iteration matrix: the diffusion and
# the reaction's diagonal, without the `u`–`v` coupling. Loss: `∫ mean(u²) dt` plus
# weighted states at 10 save times; gradient with respect to `(A, B, α)`.
# Reference: diffrax RCA with Kvaerno5 at rtol 1e-11. Bound 1e-6 at rtol 1e-8
# (observed 2.0e-8 by the continuous adjoint, 8.1e-8 through the steps; 2.0e-8
# unpreconditioned). The preconditioner changes how fast the Krylov solves converge,
# not what they converge to: its transpose, which the backward solves apply, is
# checked on its own by `test_preconditioner_transposed`.
CELLS = 8
CELL_CENTRES = jnp.arange(1, CELLS + 1) / (CELLS + 1)
BRUSSELATOR_Y0 = jnp.concatenate(
    [1 + jnp.sin(2 * jnp.pi * CELL_CENTRES), jnp.full(CELLS, 3.0)]
)
BRUSSELATOR_P = jnp.array([1.0, 3.0, 1.0])
BRUSSELATOR_TS = jnp.linspace(0.5, 5.0, 10)
BRUSSELATOR_WEIGHTS = jnp.linspace(0.5, 1.5, 2 * CELLS)


def brusselator(y, p, t):
    a, b, alpha = p
    u, v = y[:CELLS], y[CELLS:]
    diffusion = alpha * (CELLS + 1) ** 2
    u_ends = jnp.concatenate([jnp.ones(1), u, jnp.ones(1)])
    v_ends = jnp.concatenate([jnp.full(1, 3.0), v, jnp.full(1, 3.0)])
    du = a + u**2 * v - (b + 1) * u + diffusion * jnp.diff(u_ends, 2)
    dv = b * u - u**2 * v + diffusion * jnp.diff(v_ends, 2)
    return jnp.concatenate([du, dv])


def brusselator_cost(y, p, t):
    return jnp.mean(y[:CELLS] ** 2)


def tridiagonal_inverse(diagonal, lower, upper, like):
    """The operator `r ↦ A⁻¹ r`, `A` tridiagonal, by `jax.lax.linalg`'s solve (which
    never raises, and transposes)."""
    zero = jnp.zeros(1, diagonal.dtype)
    lower, upper = jnp.concatenate([zero, lower]), jnp.concatenate([upper, zero])
    return lx.FunctionLinearOperator(
        lambda r: jax.lax.linalg.tridiagonal_solve(lower, diagonal, upper, r[:, None])[
            :, 0
        ],
        jax.eval_shape(lambda: like),
    )


def tridiagonal_preconditioner(y, p, t, c):
    """`(I − c T)⁻¹`, `T` the Jacobian's tridiagonal part (no `u`–`v` coupling)."""
    a, b, alpha = p
    u, v = y[:CELLS], y[CELLS:]
    diffusion = alpha * (CELLS + 1) ** 2
    reaction = jnp.concatenate([2 * u * v - (b + 1), -(u**2)])
    diagonal = 1 - c * (reaction - 2 * diffusion)
    coupling = jnp.full(2 * CELLS - 1, -c * diffusion).at[CELLS - 1].set(0.0)
    return tridiagonal_inverse(diagonal, coupling, coupling, y)


PRECONDITIONED_BDF = ja.BDF(
    linear_solver=lx.GMRES(rtol=1e-10, atol=1e-12),
    preconditioner=tridiagonal_preconditioner,
)


def brusselator_loss(p, adjoint):
    solution = ja.solve(
        ja.Problem.explicit(brusselator, f=brusselator_cost),
        p,
        0.0,
        5.0,
        BRUSSELATOR_Y0,
        saveat=BRUSSELATOR_TS,
        adjoint=adjoint,
        solver=PRECONDITIONED_BDF,
        rtol=1e-8,
        atol=1e-10,
    )
    return solution.cost + jnp.sum(solution.xs * BRUSSELATOR_WEIGHTS)


def tight_reference(vector_field, cost_rate, p, t1, x0, ts):
    """`(∫ cost_rate dt, x(ts))` over `[0, t1]` by diffrax RCA with Kvaerno5 at
    rtol 1e-11 (Newton to 1e-13)."""
    solver = diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-13, atol=1e-13))
    return reference_solve(
        vector_field,
        cost_rate,
        p,
        0.0,
        t1,
        x0,
        ts,
        tol=1e-11,
        atol=1e-13,
        solver=solver,
    )


@jax.jit
@jax.grad
def brusselator_reference(p):
    cost, xs = tight_reference(
        brusselator, brusselator_cost, p, 5.0, BRUSSELATOR_Y0, BRUSSELATOR_TS
    )
    return cost + jnp.sum(xs * BRUSSELATOR_WEIGHTS)


@pytest.mark.parametrize(
    "adjoint",
    [ja.InterpolatingAdjoint(), ja.DiscretiseThenOptimise()],
    ids=["interpolating", "discretise"],
)
def test_preconditioned_bdf_on_stiff_brusselator(adjoint):
    grads = jax.jit(jax.grad(brusselator_loss), static_argnums=1)(
        BRUSSELATOR_P, adjoint
    )
    expected = brusselator_reference(BRUSSELATOR_P)
    assert max_relative_error(grads, expected) < 1e-6


# A preconditioner that is nearly exact makes lineax's BiCGStab break down (NaN, a
# half-step solving exactly, which float32's rounding makes happen): the heat
# equation `ẋ = D ∂²x/∂z² − k x²` on 20 cells, in float32, preconditioned by the
# diffusion. The BDF's correction is then the preconditioned residual; without
# that, the steps that broke down were retried shorter until `max_steps`. Loss:
# `∫ |x|² dt` plus the states at two save times, against RCA with Kvaerno5 in
# float64 at rtol 1e-11; bound 1e-3 at rtol 1e-4 in float32 (observed 7.2e-5, the
# dense BDF's 6.7e-5).
HEAT_X0 = jnp.sin(jnp.linspace(0.0, 3.0, 20))
HEAT_P = {"D": jnp.array(400.0), "k": jnp.array(1.0)}
HEAT_TS = jnp.array([0.1, 0.5])


def heat(x, p, t):
    ends = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
    return p["D"] * jnp.diff(ends, 2) - p["k"] * x**2


def heat_cost(x, p, t):
    return jnp.sum(x**2)


def diffusion_preconditioner(x, p, t, c):
    """`(I − c D ∂²/∂z²)⁻¹`, the reaction left out."""
    diagonal = jnp.full(x.shape, 1 + 2 * c * p["D"])
    off_diagonal = jnp.full(x.shape[0] - 1, -c * p["D"])
    return tridiagonal_inverse(diagonal, off_diagonal, off_diagonal, x)


@jax.jit
@jax.grad
def heat_loss(p):
    solver = ja.BDF(
        linear_solver=lx.BiCGStab(rtol=1e-2, atol=1e-4),
        preconditioner=diffusion_preconditioner,
    )
    solution = ja.solve(
        ja.Problem.explicit(heat, f=heat_cost),
        p,
        0.0,
        1.0,
        HEAT_X0.astype(jnp.float32),
        saveat=HEAT_TS.astype(jnp.float32),
        solver=solver,
        rtol=1e-4,
        atol=1e-6,
        max_steps=2048,
    )
    return solution.cost + jnp.sum(solution.xs)


@jax.jit
@jax.grad
def heat_reference(p):
    cost, xs = tight_reference(heat, heat_cost, p, 1.0, HEAT_X0, HEAT_TS)
    return cost + jnp.sum(xs)


def test_preconditioned_bicgstab_breakdown():
    grads = heat_loss(jtu.tree_map(lambda a: a.astype(jnp.float32), HEAT_P))
    assert max_relative_error(grads, heat_reference(HEAT_P)) < 1e-3


def test_preconditioner_transposed():
    """The preconditioner as the backward solves apply it: `Pᵀ v` (lineax's
    transpose of the user's operator), for a `P` solving with a tridiagonal that is
    not symmetric, against the dense inverse transposed, to rounding."""
    from jadjoint._solvers import applied

    diagonal, lower, upper = (
        jnp.linspace(2.0, 3.0, 6),
        jnp.full(5, -0.5),
        jnp.linspace(0.1, 0.9, 5),
    )
    dense = lx.TridiagonalLinearOperator(diagonal, lower, upper).as_matrix()
    assert not jnp.allclose(dense, dense.T)
    v = jnp.linspace(-1.0, 2.0, 6)
    operator = tridiagonal_inverse(diagonal, lower, upper, v)
    forwards = applied(operator, v)(v)
    transposed = applied(operator, v, transposed=True)(v)
    assert jnp.allclose(forwards, jnp.linalg.solve(dense, v), rtol=1e-12, atol=0)
    assert jnp.allclose(transposed, jnp.linalg.solve(dense.T, v), rtol=1e-12, atol=0)


def test_preconditioner_needs_a_matrix_free_solver():
    with pytest.raises(ValueError, match="linear_solver"):
        ja.BDF(preconditioner=tridiagonal_preconditioner)


def test_bdf_under_vmap():
    """Two members whose solves take different steps, each against its reference."""
    saveat = SAVE_TIMES["40 times"]
    batch = jnp.stack([LOG_K, LOG_K + jnp.array([0.3, -0.5, 0.2])])
    grads = eqx.filter_jit(jax.vmap(jax.grad(bdf_loss), in_axes=(0, None, None, None)))(
        batch, OBSERVED, ja.InterpolatingAdjoint(), saveat
    )
    for member, log_k in enumerate(batch):
        expected = observation_reference(log_k, saveat)
        assert max_relative_error(grads[member], expected) < 1e-5


def test_bdf_forward_mode():
    """`jax.jacfwd` through the BDF: the forward sensitivities on its steps, the
    integral cost and the 40 saved states, against the reference, to 1e-5 as the
    adjoint above (observed 7.7e-8 against Kvaerno5 at rtol 1e-11)."""
    saveat = SAVE_TIMES["40 times"]
    loss = lambda log_k: bdf_loss(log_k, problem, ja.InterpolatingAdjoint(), saveat)
    gradient = jax.jit(jax.jacfwd(loss))(LOG_K)
    expected = observation_reference(LOG_K, saveat) + reference(LOG_K)
    assert max_relative_error(gradient, expected) < 1e-5


def test_bdf_hessian_vector_product():
    """Forward over reverse through the BDF's backward solve, against central
    differences (step 1e-3) of the reference gradient: observed 1.2e-6 relative,
    the differences' own accuracy (the reference gradient's error, 1e-9, over the
    step); target 1e-4."""
    v = jnp.array([1.0, -0.5, 0.3])
    saveat = SAVE_TIMES["T only"]

    def gradient(log_k):
        return jax.grad(bdf_loss)(log_k, problem, ja.InterpolatingAdjoint(), saveat)

    hvp = jax.jit(lambda k: jax.jvp(gradient, (k,), (v,))[1])(LOG_K)

    def expected(log_k):
        return reference(log_k) + observation_reference(log_k, saveat)

    step = 1e-3
    differences = (expected(LOG_K + step * v) - expected(LOG_K - step * v)) / (2 * step)
    assert max_relative_error(hvp, differences) < 1e-4


# A stiff hybrid neural ODE, `ẋ = −diag(1, 1000) x + MLP(x)`, the MLP an equinox
# module whose 82 arrays' entries are the parameters: the backward solves' parameter
# integral is a quadrature, no unknown of the BDF's Newton iteration or of the
# implicit stages' linear solves. Integral cost and 10 saved states, by the BDF
# (Kvaerno5's stages take the same block-triangular solve in every Kvaerno5 case
# above, with fewer parameters). Reference: diffrax RCA with Kvaerno5 at rtol 1e-10
# (Newton to 1e-12). Target 1e-5 relative to the largest entry (observed 2.2e-6 at
# rtol 1e-6; Kvaerno5 8.6e-8).
MLP = eqx.nn.MLP(2, 2, 16, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
MLP_PARAMS, MLP_STATIC = eqx.partition(MLP, eqx.is_array)
RELAXATION = jnp.array([1.0, 1000.0])
HYBRID_TIMES = jnp.linspace(0.5, 5.0, 10)
HYBRID_X0 = jnp.array([1.0, 0.5])


def hybrid(x, params, t):
    return -RELAXATION * x + eqx.combine(params, MLP_STATIC)(x)


def squared(x, params, t):
    return jnp.sum(x**2)


@eqx.filter_jit
def hybrid_grad(params, solver):
    def loss(params):
        problem = ja.Problem.explicit(hybrid, f=squared)
        solution = ja.solve(
            problem, params, 0.0, 5.0, HYBRID_X0, saveat=HYBRID_TIMES, solver=solver
        )
        return solution.cost + jnp.sum(solution.xs)

    return jax.grad(loss)(params)


@jax.jit
@jax.grad
def hybrid_reference(params):
    solver = diffrax.Kvaerno5(root_finder=optx.Newton(rtol=1e-12, atol=1e-12))
    integral, xs = reference_solve(
        hybrid, squared, params, 0.0, 5.0, HYBRID_X0, HYBRID_TIMES, solver=solver
    )
    return integral + jnp.sum(xs)


@pytest.mark.parametrize(
    "solver", [DENSE_BDF, MATRIX_FREE_BDF], ids=["dense-lu", "matrix-free"]
)
def test_stiff_neural_ode_with_mlp_parameters(solver):
    grads = ravel_pytree(hybrid_grad(MLP_PARAMS, solver))[0]
    expected = ravel_pytree(hybrid_reference(MLP_PARAMS))[0]
    assert jnp.max(jnp.abs(grads - expected)) < 1e-5 * jnp.max(jnp.abs(expected))
