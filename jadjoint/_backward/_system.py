"""The adjoint system of `docs/how-it-works.md`, built from one `jax.vjp` of `h`
and `f`.

With outputs `C = ∫ f dt` and `x(t_i)` at save times `t0 ≤ t_1 < … < t_N ≤ T`, and
their cotangents `c̄` and `x̄_i`, the reverse rule differentiates

    J(p) = c̄ ∫ f dt + Σ_i x̄_iᵀ x(t_i).

With `w := h_ẋᵀ λ`, integrated backwards in time from `w(T) = 0`:

    ẇ = h_xᵀ λ + c̄ f_xᵀ,       λ = h_ẋ^{-ᵀ} w,
    w(t_i⁻) = w(t_i⁺) − x̄_i                       (jump at each save time),
    dJ/dp = ∫ (c̄ f_p + λᵀ h_p) dt,   dJ/dx0 = −w(t0).

The parameter integral is carried as `q` with `q̇ = c̄ f_pᵀ + h_pᵀ λ`, `q(T) = 0`, so
that `dJ/dp = −q(t0)`. `λᵀ h_x`, `λᵀ h_p` and `f_x`, `f_p` come from one VJP of
`(h, f)` at `(x, ẋ)`; only the solve with `h_ẋᵀ` (see
`jadjoint/_problem/_implicit.py`) involves `h_ẋ`, and it is matrix-free for large
states. For an explicit ODE, `h = ẋ − φ`, `h_ẋ = I`,
`λ = w`, and the VJP is of `φ` itself. Integrating `w` rather than `λ` needs `h_ẋ`
only pointwise: the `λ` form would need the extra term `−(d/dt h_ẋ)ᵀ λ`.

References: Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018; Cao, Li, Petzold & Serban, "Adjoint sensitivity analysis
for differential-algebraic equations", SIAM J. Sci. Comput. 24(3), 2003.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._errors import check_finite_adjoint_rates
from .._problem import BoundProblem


class AdjointSystem(eqx.Module):
    """The right-hand side of the adjoint ODE for given cotangents.

    What the gradient is taken with respect to is the bound problem's perturbed
    leaves, `diff` (of `p`, and of the problem's closure-converted callables: the
    arrays they close over); `static` holds the rest, the prepared solves included,
    so that `eqx.combine(diff, static)` is the forward pass's `BoundProblem`. `q`
    has the structure of `diff`.

    `cbar` is the cotangent of the cost, or `None` when the cost is not
    differentiated (then `f` is not evaluated)."""

    diff: BoundProblem
    static: BoundProblem
    cbar: PyTree | None

    @classmethod
    def partitioned(
        cls, bound: BoundProblem, p_perturbed, problem_perturbed, cbar
    ) -> "AdjointSystem":
        """The system of `bound`, differentiated with respect to the leaves of `p`
        and of the problem that are differentiated (the solve's tangents that are
        not zero)."""
        spec = bound.perturbed_filter(p_perturbed, problem_perturbed)
        return cls(*eqx.partition(bound, spec), cbar)

    def bound(self, diff: BoundProblem | None = None) -> BoundProblem:
        """The forward pass's bound problem; with `diff`, its perturbed leaves
        replaced (the function to differentiate)."""
        return eqx.combine(self.diff if diff is None else diff, self.static)

    def rates(
        self, x: PyTree, w: PyTree, t, xdot_guess: Callable | None = None
    ) -> tuple[PyTree, PyTree, PyTree]:
        """`(ẋ, ẇ, q̇)` at `(x, w, t)`: `ẇ = h_xᵀ λ + c̄ f_xᵀ`, `q̇ = h_pᵀ λ + c̄ f_pᵀ`
        with `λ = h_ẋ^{-ᵀ} w`, by one VJP of `(h, f)` at `(x, ẋ)` (of `(φ, f)` for an
        explicit ODE, which needs no separate evaluation of `ẋ = φ`). `xdot_guess()`
        starts Newton for an implicit `h`."""
        cbar = self.cbar
        bound = self.bound()
        solving = bound.solving
        xdot, cotangent = bound.problem.h.adjoint_cotangent(
            x, w, bound.p, t, solving, xdot_guess
        )

        def dynamics(x, diff):
            bound = self.bound(diff)
            p, problem = bound.p, bound.problem
            cost_rate = None if cbar is None else problem.f(x, p, t)
            return problem.h.linearised(x, xdot, p, t), cost_rate

        (out, _), vjp = jax.vjp(dynamics, x, self.diff)
        wdot, qdot = vjp((cotangent, cbar))
        if solving.throw:
            # `ẇ` only: a non-finite `q̇` (the size of `p`) feeds back into nothing
            # and is caught in the gradient at the end.
            wdot = check_finite_adjoint_rates(wdot)
        return (out if xdot is None else xdot), wdot, qdot


def time_gradients(
    bound: BoundProblem, *, times, perturbed, x0, x_final, xs, w0, xbar, cbar
) -> tuple:
    """Gradients with respect to `times = (t0, t1, ts)`, each `None` unless
    `perturbed`:

        dJ/dt_i = x̄_iᵀ ẋ(t_i),   dJ/dT = c̄ f(x(T), p, T),
        dJ/dt0 = −c̄ f(x0, p, t0) + w(t0)ᵀ ẋ(t0)

    (moving `t0` shifts the whole trajectory by `−ẋ(t0) δt0`, whose cost is
    `(dJ/dx0)ᵀ(−ẋ(t0)) = w(t0)ᵀ ẋ(t0)`, and trims the integral)."""
    t0, t1, ts = times
    t0_on, t1_on, ts_on = perturbed

    def running_cost(x, t):
        return 0.0 if cbar is None else cbar * bound.problem.f(x, bound.p, t)

    def dot(a, b):
        pairs = zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)
        return sum(jnp.sum(u * v) for u, v in pairs)

    xdot = bound.xdot

    t0_grad = t1_grad = ts_grad = None
    if t0_on:
        t0_grad = dot(w0, xdot(x0, t0)) - running_cost(x0, t0)
        t0_grad = jnp.asarray(t0_grad, t0.dtype)
    if t1_on:
        t1_grad = jnp.asarray(running_cost(x_final, t1), t1.dtype)
    if ts_on:
        if xbar is None:
            ts_grad = jnp.zeros_like(ts)
        else:
            rate = jax.vmap(xdot)(xs, ts)
            ts_grad = jax.vmap(dot)(xbar, rate).astype(ts.dtype)
    return t0_grad, t1_grad, ts_grad
