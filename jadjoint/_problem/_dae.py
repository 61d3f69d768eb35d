"""Index-1 differential-algebraic equations, solved in their state-space form.

A semi-explicit index-1 DAE, `x = (y, z)`,

    ẏ = a(y, z, p, t),    0 = b(y, z, p, t),    b_z nonsingular,

defines `z = z(y, p, t)` by the implicit function theorem, and so the ODE
`ẏ = a(y, z(y, p, t), p, t)` (its state-space form; Hairer & Wanner, "Solving
ordinary differential equations II", §VI.1). jadjoint solves that ODE with the
explicit-ODE machinery and resolves `z` by Newton's method (optimistix) wherever `a`,
`f` or a saved state needs it.

Why this form rather than a DAE integrator: diffrax has none, and the state-space
form keeps every diffrax solver, step-size controller and adjoint method usable as
they are; `z` satisfies `b = 0` to the Newton tolerance at every evaluation instead of
drifting, and the error control sees only `y`, the components that carry errors.
The price is a small Newton solve per evaluation (warm-started from the consistent
`z(t0)`), which is cheap when `z` is small, as in most index-1 models.

The adjoint is the adjoint DAE of `docs/how-it-works.md`, obtained by composition.
Differentiating `z(y, p, t)` by optimistix's implicit-function rule gives
`z_y = −b_z^{-1} b_y` and
`z_p = −b_z^{-1} b_p` as VJPs with one lineax solve with `b_zᵀ`, so the explicit
adjoint of the state-space ODE is

    λ̇_a = −(a_y + a_z z_y)ᵀ λ_a − c̄ (f_y + f_z z_y)ᵀ,

which is Cao, Li, Petzold & Serban's `λ̇_a = −a_yᵀ λ_a + b_yᵀ λ_b + c̄ f_yᵀ` with
`λ_b = b_z^{-ᵀ}(a_zᵀ λ_a − c̄ f_zᵀ)` eliminated (with that page's sign of `λ`). A
cotangent `z̄_i` on a saved `z(t_i) = z(y(t_i), p, t_i)` reaches `y(t_i)` and `p`
through the same rule: it is the point multiplier `ν_i = −b_z^{-ᵀ} z̄_i`, adding
`b_yᵀ ν_i` to the jump of `λ_a` and `b_pᵀ ν_i` to `dJ/dp`. Consistent
initialisation, `g(x0, p) = 0` with `b(y0, z0, p, t0) = 0`, is differentiated by the
same rule, which is the `g_{y0}ᵀ μ = λ_a(t0)` term.

A linearly implicit `M ẋ = φ(x, p, t)` with a constant singular `M` is brought to
this form by the SVD `M = U S Vᵀ` (rank `r`): with `x = V (y, z)`, the first `r`
rows of `Uᵀ(M ẋ − φ) = 0` give `ẏ = S_r^{-1} U_rᵀ φ` and the others
`0 = U_aᵀ φ`. For `M = diag(1, …, 1, 0, …, 0)`, `V` and `U` are the identity.

Reference: Cao, Li, Petzold & Serban, "Adjoint sensitivity analysis for
differential-algebraic equations", SIAM J. Sci. Comput. 24(3), 2003.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

from .._errors import check_like, checked_solve, not_all_finite, outcome
from .._results import ALGEBRAIC_FAILED, RESULTS, failure_if
from ._dynamics import AbstractDAE


class MassSplit(eqx.Module):
    """The coordinates `x = V (y, z)` that split `M ẋ = φ` with a constant singular
    `M = U S Vᵀ` (SVD, rank `r`) into `ẏ = S_r^{-1} U_rᵀ φ` and `0 = U_aᵀ φ`."""

    right: np.ndarray
    left: np.ndarray
    singular_values: np.ndarray
    rank: int = eqx.field(static=True)

    @classmethod
    def of(cls, mass: np.ndarray) -> "MassSplit | None":
        """The split of a concrete `M`; `None` when `M` is nonsingular (an ODE)."""
        left, singular_values, right_t = np.linalg.svd(mass)
        cutoff = singular_values[0] * mass.shape[0] * np.finfo(mass.dtype).eps
        rank = int(np.sum(singular_values > cutoff))
        if rank == mass.shape[0]:
            return None
        if rank == 0:
            raise ValueError(
                "The mass matrix `M` is zero: `Problem.mass_matrix` needs at least one "
                "differential equation (a nonzero row of M)."
            )
        return cls(right_t.T, left, singular_values[:rank], rank)


class IndexOneDAE(eqx.Module):
    """A semi-explicit index-1 DAE in its coordinates `(y, z)`, with the maps to and
    from the user's state `x`: `a`, `b`, and `f`, `g` re-expressed in `(y, z)`."""

    a: Callable
    b: Callable
    f: Callable | None
    g: Callable | None
    split: Callable
    join: Callable

    @classmethod
    def of_semi_explicit(cls, a, b, f, g) -> "IndexOneDAE":
        """`ẏ = a(y, z, p, t)`, `0 = b(y, z, p, t)` as given, `x = (y, z)`."""
        return cls(
            a=a,
            b=b,
            f=None if f is None else lambda y, z, p, t: f((y, z), p, t),
            g=None if g is None else lambda y, z, p: g((y, z), p),
            split=lambda x: (x[0], x[1]),
            join=lambda y, z: (y, z),
        )

    @classmethod
    def of_mass_split(cls, split: MassSplit, vector_field, f, g, x0) -> "IndexOneDAE":
        """`M ẋ = vector_field(x, p, t)` with a singular constant `M` in its split
        coordinates `x = V (y, z)` (on the flattened state, shaped like `x0`)."""
        rank, right = split.rank, split.right
        _, unravel = ravel_pytree(x0)

        def join(y, z):
            return unravel(right @ jnp.concatenate([y, z]))

        def to_coordinates(x):
            coordinates = right.T @ ravel_pytree(x)[0]
            return coordinates[:rank], coordinates[rank:]

        def projected_rates(y, z, p, t):
            rates = ravel_pytree(vector_field(join(y, z), p, t))[0]
            return split.left.T @ rates

        return cls(
            a=lambda y, z, p, t: (
                projected_rates(y, z, p, t)[:rank] / split.singular_values
            ),
            b=lambda y, z, p, t: projected_rates(y, z, p, t)[rank:],
            f=None if f is None else lambda y, z, p, t: f(join(y, z), p, t),
            g=None if g is None else lambda y, z, p: ravel_pytree(g(join(y, z), p))[0],
            split=to_coordinates,
            join=join,
        )

    def check_outputs(self, x0: PyTree, p: PyTree, t0) -> None:
        """`a` shaped like `y`, `b` like `z`, `g` like `y`."""
        y, z = jax.eval_shape(self.split, x0)
        out = jax.eval_shape(self.a, y, z, p, t0)
        check_like(out, y, "`a(y, z, p, t)`", "a rate shaped like `y`")
        out = jax.eval_shape(self.b, y, z, p, t0)
        check_like(out, z, "`b(y, z, p, t)`", "a residual shaped like `z`")
        if self.g is not None:
            out = jax.eval_shape(self.g, y, z, p)
            check_like(
                out,
                y,
                "`g(x0, p)` of a DAE",
                "a residual for the differential part (shaped like `y0`; with a "
                "singular mass matrix, rank(M) components)",
            )


def _newton(tol: float) -> optx.Newton:
    return optx.Newton(
        rtol=tol, atol=tol, linear_solver=lx.AutoLinearSolver(well_posed=True)
    )


class StateSpaceForm(eqx.Module):
    """The ODE `ẏ = a(y, z(y, p, t), p, t)` and running cost `f(y, z(y, p, t), p, t)`
    of an index-1 DAE, `z(y, p, t)` by Newton from `z_guess` (no gradient flows to
    it: optimistix differentiates the root, not the iteration)."""

    dae: IndexOneDAE
    z_guess: PyTree
    tol: float = eqx.field(static=True)

    def algebraic(self, y, p, t):
        """`(z, failed)` with `b(y, z, p, t) = 0`; `failed` when Newton did not
        converge (a non-finite `z` is caught by `checked_solve`)."""
        solution = optx.root_find(
            lambda z, args: self.dae.b(args[0], z, args[1], args[2]),
            _newton(self.tol),
            self.z_guess,
            args=(y, p, t),
            throw=False,
        )
        return solution.value, solution.result != optx.RESULTS.successful

    def z(self, y, p, t):
        """`z(y, p, t)`; NaN where Newton fails, which makes diffrax reject the
        step (a trial step far off the solution may leave Newton's basin)."""
        z, failed = self.algebraic(y, p, t)
        return checked_solve(z, failed, ALGEBRAIC_FAILED, throw=False)

    def vector_field(self, y, p, t):
        return self.dae.a(y, self.z(y, p, t), p, t)

    def cost(self, y, p, t):
        return self.dae.f(y, self.z(y, p, t), p, t)

    def outcome_at(self, y, p, t) -> RESULTS:
        """`algebraic_failed` if `z` cannot be found at `(y, t)`: evaluated where a
        failed forward solve stopped, to name the cause of its failure."""
        z, failed = self.algebraic(y, p, t)
        return failure_if(failed | not_all_finite(z), RESULTS.algebraic_failed)

    def states(self, ys: PyTree, ts, p) -> tuple[PyTree, RESULTS]:
        """The user's states `x(t_i) = join(y_i, z(y_i, p, t_i))` at the save times,
        and `algebraic_failed` if Newton fails at one of them."""
        zs, failed = jax.vmap(self.algebraic, in_axes=(0, None, 0))(ys, p, ts)
        result = outcome(zs, jnp.any(failed), RESULTS.algebraic_failed)
        return jax.vmap(self.dae.join)(ys, zs), result


def consistent_initialisation(dae: IndexOneDAE, x0: PyTree, p, t0, tol):
    """`((y0, z0), result)` with `b(y0, z0, p, t0) = 0` and, when the problem has
    `g`, `g(x0, p) = 0`, by Newton from the `x0` given; without `g`, `y0` is the `y`
    of `x0` and only `z0` is solved for. Differentiable (implicit-function rule). A
    failure is `initialisation_failed`."""
    y0, z_guess = dae.split(x0)
    if dae.g is None:
        z0, failed = StateSpaceForm(dae, z_guess, tol).algebraic(y0, p, t0)
        return (y0, z0), outcome(z0, failed, RESULTS.initialisation_failed)
    flat_guess, unravel = ravel_pytree((y0, z_guess))

    def joint_residual(flat, p):
        y, z = unravel(flat)
        return jnp.concatenate(
            [ravel_pytree(dae.g(y, z, p))[0], ravel_pytree(dae.b(y, z, p, t0))[0]]
        )

    solution = optx.root_find(
        joint_residual, _newton(tol), flat_guess, args=p, throw=False
    )
    failed = solution.result != optx.RESULTS.successful
    result = outcome(solution.value, failed, RESULTS.initialisation_failed)
    return unravel(solution.value), result


class SemiExplicitDynamics(AbstractDAE):
    """`ẏ = a(y, z, p, t)`, `0 = b(y, z, p, t)` with `b_z` nonsingular, `x = (y, z)`;
    its residual is `(ẏ − a, b)`."""

    a: Callable
    b: Callable

    def __call__(self, x, xdot, p, t):
        (y, z), (ydot, _) = x, xdot
        rate = self.a(y, z, p, t)
        return jax.tree.map(jnp.subtract, ydot, rate), self.b(y, z, p, t)

    def check_outputs(self, x0, p, t0):
        if not (isinstance(x0, (tuple, list)) and len(x0) == 2):
            raise ValueError(
                "`x0` of a `Problem.semi_explicit` DAE must be the pair "
                f"`(y0, z0_guess)` of differential and algebraic states, got "
                f"{type(x0).__name__}."
            )

    def index_one(self, f, g, x0):
        return IndexOneDAE.of_semi_explicit(self.a, self.b, f, g)
