"""Property-based: random stable linear systems x' = A x + B u, quadratic running cost
xᵀ Q x, random save times and cotangents. The reference is analytic: x(t) from the
matrix exponential of the augmented system z = (x, u), ż = Ã z, and
∫₀ᵀ zᵀ Q̃ z dt = z0ᵀ (E₂₂ᵀ E₁₂) z0 with E = expm([[−Ãᵀ, Q̃], [0, Ã]] T) (Van Loan,
"Computing integrals involving the matrix exponential", IEEE TAC 23(3), 1978);
differentiated by JAX through `expm`.

Profiles: `ci` (default: few examples, derandomised) and `slow`
(HYPOTHESIS_PROFILE=slow).
Tolerance: solves at 1e-10, gradients to 1e-6 relative."""

import os

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from helpers import max_relative_error
from hypothesis import given, settings, strategies as st

import jadjoint as ja

settings.register_profile("ci", max_examples=3, deadline=None, derandomize=True)
settings.register_profile("slow", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

T = 2.0
TOL = 1e-10


def random_system(seed, n, m, k):
    rng = np.random.default_rng(seed)
    skew = rng.normal(size=(n, n))
    spread = rng.normal(size=(n, n)) / np.sqrt(n)
    A = 0.5 * (skew - skew.T) - spread @ spread.T - 0.1 * np.eye(n)
    B = rng.normal(size=(n, m))
    root = rng.normal(size=(n, n))
    Q = root @ root.T / n
    ts = np.sort(rng.uniform(0.05, T, size=k))
    ts = ts[np.concatenate([[True], np.diff(ts) > 1e-3])]
    weights = rng.normal(size=(len(ts), n))
    x0 = rng.normal(size=n)
    u = rng.normal(size=m)
    arrays = dict(A=A, B=B, Q=Q, ts=ts, weights=weights, x0=x0, u=u)
    return {name: jnp.asarray(value) for name, value in arrays.items()}


def analytic_loss(p, x0, system):
    A, B, Q, u = p["A"], p["B"], system["Q"], system["u"]
    n, m = B.shape
    augmented = jnp.block([[A, B], [jnp.zeros((m, n)), jnp.zeros((m, m))]])
    z0 = jnp.concatenate([x0, u])
    xs = jax.vmap(lambda t: (jsl.expm(augmented * t) @ z0)[:n])(system["ts"])
    weight = jnp.zeros((n + m, n + m)).at[:n, :n].set(Q)
    van_loan = jnp.block(
        [[-augmented.T, weight], [jnp.zeros_like(augmented), augmented]]
    )
    exponential = jsl.expm(van_loan * T)
    gramian = exponential[n + m :, n + m :].T @ exponential[: n + m, n + m :]
    return z0 @ gramian @ z0 + jnp.sum(system["weights"] * xs)


def adjoint_loss(p, x0, system, adjoint):
    problem = ja.Problem.explicit(
        lambda x, p, t: p["A"] @ x + p["B"] @ system["u"],
        f=lambda x, p, t: x @ system["Q"] @ x,
    )
    solution = ja.solve(
        problem, p, 0.0, T, x0, saveat=system["ts"], adjoint=adjoint, rtol=TOL, atol=TOL
    )
    return solution.cost + jnp.sum(system["weights"] * solution.xs)


analytic_grad = jax.jit(jax.grad(analytic_loss, argnums=(0, 1)))
adjoint_grad = jax.jit(jax.grad(adjoint_loss, argnums=(0, 1)), static_argnums=3)


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 6),
    m=st.integers(1, 2),
    k=st.integers(1, 5),
)
def test_linear_quadratic_gradients_match_analytic(seed, n, m, k):
    """The default method; each example's shapes compile anew, so the other methods
    are checked on fixed problems elsewhere."""
    adjoint = ja.InterpolatingAdjoint()
    system = random_system(seed, n, m, k)
    p = {"A": system["A"], "B": system["B"]}
    expected = analytic_grad(p, system["x0"], system)
    actual = adjoint_grad(p, system["x0"], system, adjoint)
    assert max_relative_error(actual, expected) < 1e-6
