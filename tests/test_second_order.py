"""Second derivatives through the adjoint: `jax.hessian` (forward over reverse),
`jadjoint.hvp`, and reverse over reverse.

References:
- closed forms: `x' = −k x`, `F = ∫₀ᵀ |x|² dt = |x0|² (1 − e^{−2kT}) / (2k)`, and the
  same decay written as an implicit `h`, with a mass matrix, and as both DAE forms;
  Hessians with respect to `(k, x0)` by `jax.hessian` of the closed form. Solves at
  rtol 1e-10: Hessians to 1e-7 relative (observed ~2e-10).
- Lotka–Volterra (integral cost + observations): the Hessian-vector product against
  central differences of the adjoint gradient along `v` (step 1e-5: truncation 1e-10,
  gradient noise 1e-10 / 1e-5; so 1e-5) and against `jax.hessian` through diffrax's
  `DirectAdjoint` at rtol 1e-12 (discretise-then-optimise, an independent derivative;
  1e-6).
- A damped pendulum: `jax.test_util.check_grads(..., order=2, modes=["rev"])`
  (odeint's second-order check: finite differences of the gradient and of its VJP).
"""

import diffrax
import jax
import jax.numpy as jnp
import pytest
from helpers import max_relative_error
from jax.test_util import check_grads

import jadjoint as ja

T = 1.5
TOL = dict(rtol=1e-10, atol=1e-10)
K, X0 = jnp.array(0.8), jnp.array([1.0, 2.0])
squared = lambda x, k, t: jnp.sum(x**2)


def decay_closed_form(k, x0, rate=1.0):
    return jnp.sum(x0**2) * (1 - jnp.exp(-2 * rate * k * T)) / (2 * rate * k)


DECAY = ja.Problem.explicit(lambda x, k, t: -k * x, f=squared)


@pytest.fixture(scope="module")
def closed_form_hessian():
    return jax.hessian(decay_closed_form, argnums=(0, 1))(K, X0)


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(),
        ja.InterpolatingAdjoint(segment_steps=4),
        ja.QuadratureAdjoint(),
        ja.BacksolveAdjoint(),
    ],
    ids=str,
)
def test_hessian_matches_closed_form_for_every_method(adjoint, closed_form_hessian):
    cost = lambda k, x0: ja.solve(DECAY, k, 0.0, T, x0, adjoint=adjoint, **TOL).cost
    hessian = jax.jit(jax.hessian(cost, argnums=(0, 1)))(K, X0)
    assert max_relative_error(hessian, closed_form_hessian) < 1e-7


def decay_forms():
    """`x' = −k x` as an implicit `h`, with `M = diag(2, 1)`; and `y' = −k y + z`,
    `0 = z − 0.1 k y` (so `y' = −0.9 k y`) in both DAE forms."""
    mass = jnp.diag(jnp.array([2.0, 1.0]))
    scaled = lambda x, k, t: -k * jnp.array([2.0, 1.0]) * x
    dae_rates = lambda x, k, t: jnp.concatenate(
        [-k * x[:2] + x[2:], x[2:] - 0.1 * k * x[:2]]
    )
    return {
        "implicit": (
            ja.Problem(lambda x, xdot, k, t: xdot + k * x, f=squared),
            X0,
            1.0,
        ),
        "mass matrix": (ja.Problem.mass_matrix(mass, scaled, f=squared), X0, 1.0),
        "semi-explicit DAE": (
            ja.Problem.semi_explicit(
                lambda y, z, k, t: -k * y + z,
                lambda y, z, k, t: z - 0.1 * k * y,
                f=lambda x, k, t: jnp.sum(x[0] ** 2),
            ),
            (X0, jnp.zeros(2)),
            0.9,
        ),
        "singular mass matrix DAE": (
            ja.Problem.mass_matrix(
                jnp.diag(jnp.array([1.0, 1.0, 0.0, 0.0])),
                dae_rates,
                f=lambda x, k, t: jnp.sum(x[:2] ** 2),
            ),
            jnp.concatenate([X0, jnp.zeros(2)]),
            0.9,
        ),
    }


@pytest.mark.parametrize("form", list(decay_forms()))
def test_hessian_matches_closed_form_for_every_form(form):
    problem, x0, rate = decay_forms()[form]
    cost = lambda k: ja.solve(problem, k, 0.0, T, x0, **TOL).cost
    hessian = jax.jit(jax.hessian(cost))(K)
    expected = jax.hessian(decay_closed_form)(K, X0, rate)
    assert max_relative_error(hessian, expected) < 1e-7


def lotka_volterra(x, p, t):
    prey, predator = x
    return jnp.stack(
        [
            p["a"] * prey - p["b"] * prey * predator,
            p["c"] * prey * predator - p["d"] * predator,
        ]
    )


LV_TS = jnp.linspace(0.5, 6.0, 12)
LV_DATA = jnp.stack([jnp.cos(LV_TS) + 2.0, jnp.sin(LV_TS) + 1.5], axis=1)
LV_P = {name: jnp.array(v) for name, v in dict(a=1.1, b=0.4, c=0.1, d=0.4).items()}
LV_V = {name: jnp.array(v) for name, v in dict(a=0.3, b=-1.0, c=0.5, d=0.2).items()}
LV_COST = lambda x, p, t: 0.1 * x[0] * x[1]
LV = ja.Problem.explicit(lotka_volterra, f=LV_COST)


def lv_loss(p):
    solution = ja.solve(LV, p, 0.0, 6.0, jnp.array([2.0, 1.0]), saveat=LV_TS, **TOL)
    return solution.cost + jnp.sum((solution.xs - LV_DATA) ** 2)


def lv_direct_loss(p):
    """The same loss by diffrax alone, differentiable in both modes."""

    def rates(t, y, args):
        return lotka_volterra(y[0], p, t), LV_COST(y[0], p, t)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(rates),
        diffrax.Tsit5(),
        0.0,
        6.0,
        None,
        (jnp.array([2.0, 1.0]), jnp.zeros(())),
        saveat=diffrax.SaveAt(ts=LV_TS, t1=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
        adjoint=diffrax.DirectAdjoint(),
        max_steps=2048,
    )
    xs, costs = solution.ys
    return costs[-1] + jnp.sum((xs[:-1] - LV_DATA) ** 2)


def test_hvp_matches_finite_differences_and_direct_adjoint_hessian():
    product = jax.jit(ja.hvp, static_argnums=0)(lv_loss, LV_P, LV_V)
    gradient = jax.jit(jax.grad(lv_loss))
    step = 1e-5
    moved = lambda sign: jax.tree.map(lambda p, v: p + sign * step * v, LV_P, LV_V)
    differences = jax.tree.map(
        lambda up, down: (up - down) / (2 * step),
        gradient(moved(1)),
        gradient(moved(-1)),
    )
    hessian = jax.jit(jax.hessian(lv_direct_loss))(LV_P)
    direct = {
        row: sum(hessian[row][column] * LV_V[column] for column in LV_V) for row in LV_P
    }
    assert max_relative_error(product, differences) < 1e-5
    assert max_relative_error(product, direct) < 1e-6


def test_pendulum_second_order_check_grads():
    """Reverse over reverse, through a `jax.jit`-compiled loss."""
    pendulum = ja.Problem.explicit(
        lambda x, p, t: jnp.stack([x[1], -p[0] * jnp.sin(x[0]) - p[1] * x[1]]),
        f=lambda x, p, t: x[0] ** 2,
    )

    @jax.jit
    def loss(p):
        ts = jnp.linspace(0.5, 3.0, 6)
        solution = ja.solve(
            pendulum, p, 0.0, 3.0, jnp.array([1.0, 0.0]), saveat=ts, **TOL
        )
        return solution.cost + jnp.sum(jnp.sin(solution.xs))

    check_grads(
        loss, (jnp.array([2.0, 0.3]),), order=2, modes=["rev"], atol=1e-5, rtol=1e-5
    )
