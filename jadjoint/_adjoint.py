"""The adjoint system of DESIGN.md §2, built from one `jax.vjp` of `h` and `f`.

With outputs `C = ∫ f dt` and `x(t_i)` at save times `t0 ≤ t_1 < … < t_N ≤ T`, and
their cotangents `c̄` and `x̄_i`, the reverse rule differentiates

    J(p) = c̄ ∫ f dt + Σ_i x̄_iᵀ x(t_i).

With `w := h_ẋᵀ λ`, integrated backwards in time from `w(T) = 0`:

    ẇ = h_xᵀ λ + c̄ f_xᵀ,       λ = h_ẋ^{-ᵀ} w,
    w(t_i⁻) = w(t_i⁺) − x̄_i                       (jump at each save time),
    dJ/dp = ∫ (c̄ f_p + λᵀ h_p) dt,   dJ/dx0 = −w(t0).

The parameter integral is carried as `q` with `q̇ = c̄ f_pᵀ + h_pᵀ λ`, `q(T) = 0`, so
that `dJ/dp = −q(t0)`. For an explicit ODE, `h = ẋ − φ`, `h_ẋ = I` and `λ = w`, and
the products `λᵀ h_x = −λᵀ φ_x`, `λᵀ h_p = −λᵀ φ_p` come from a VJP of `φ` itself.
No Jacobian is formed.

References: Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018; Cao, Li, Petzold & Serban, "Adjoint sensitivity analysis
for differential-algebraic equations", SIAM J. Sci. Comput. 24(3), 2003.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree


class Params(eqx.Module):
    """What the gradient is taken with respect to: the parameters `p` and the
    problem's closure-converted callables (whose leaves are the arrays they close
    over), split into the perturbed leaves `diff` and everything else `static`."""

    diff: PyTree
    static: PyTree

    def combined(self, diff: PyTree | None = None):
        return eqx.combine(self.diff if diff is None else diff, self.static)


def adjoint_rates(
    params: Params, x: PyTree, w: PyTree, t, cbar
) -> tuple[PyTree, PyTree, PyTree]:
    """`(ẋ, ẇ, q̇)` at `(x, w, t)` for an explicit ODE, by one VJP of `(φ, f)`:
    `ẇ = −φ_xᵀ w + c̄ f_xᵀ`, `q̇ = −φ_pᵀ w + c̄ f_pᵀ`.

    `cbar` is the cotangent of the cost, or `None` when the cost is not
    differentiated (then `f` is not evaluated)."""

    def dynamics(x, diff):
        p, problem = params.combined(diff)
        cost_rate = None if cbar is None else problem.f(x, p, t)
        return problem.vector_field(x, p, t), cost_rate

    (xdot, _), vjp = jax.vjp(dynamics, x, params.diff)
    wdot, qdot = vjp((jtu.tree_map(jnp.negative, w), cbar))
    return xdot, wdot, qdot


def jump(w: PyTree, xbar_i: PyTree | None) -> PyTree:
    """`w(t_i⁻) = w(t_i⁺) − x̄_i` at a save time."""
    if xbar_i is None:
        return w
    return jtu.tree_map(jnp.subtract, w, xbar_i)


def time_gradients(
    problem, p, times, perturbed, x0, x_final, xs, w0, xbar, cbar
) -> tuple:
    """Gradients with respect to `(t0, t1, ts)`, each `None` unless perturbed:

        dJ/dt_i = x̄_iᵀ ẋ(t_i),   dJ/dT = c̄ f(x(T), p, T),
        dJ/dt0 = −c̄ f(x0, p, t0) + w(t0)ᵀ ẋ(t0)

    (moving `t0` shifts the whole trajectory by `−ẋ(t0) δt0`, whose cost is
    `(dJ/dx0)ᵀ(−ẋ(t0)) = w(t0)ᵀ ẋ(t0)`, and trims the integral)."""
    t0, t1, ts = times
    t0_on, t1_on, ts_on = perturbed

    def running_cost(x, t):
        return 0.0 if cbar is None else cbar * problem.f(x, p, t)

    def dot(a, b):
        pairs = zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)
        return sum(jnp.sum(u * v) for u, v in pairs)

    t0_grad = t1_grad = ts_grad = None
    if t0_on:
        t0_grad = dot(w0, problem.vector_field(x0, p, t0)) - running_cost(x0, t0)
        t0_grad = jnp.asarray(t0_grad, t0.dtype)
    if t1_on:
        t1_grad = jnp.asarray(running_cost(x_final, t1), t1.dtype)
    if ts_on:
        if xbar is None:
            ts_grad = jnp.zeros_like(ts)
        else:
            rate = jax.vmap(problem.vector_field, (0, None, 0))(xs, p, ts)
            ts_grad = jax.vmap(dot)(xbar, rate).astype(ts.dtype)
    return t0_grad, t1_grad, ts_grad
