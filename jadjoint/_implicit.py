"""Solving with `h_ẋ`: `ẋ` from `h(x, ẋ, p, t) = 0`, and `λ = h_ẋ^{-ᵀ} w`.

- explicit ODE: `ẋ = φ`, `λ = w`;
- mass matrix: `ẋ = M^{-1} φ`, `λ = M^{-ᵀ} w` by LU (lineax), a constant `M` being
  factorised once per solve;
- general `h`: `ẋ` by Newton's method (optimistix), `λ` by a transposed solve with the
  Jacobian operator `h_ẋ` (lineax): dense LU for small states, matrix-free GMRES for
  large ones, so that no `n × n` matrix is formed when `n` is large.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

from ._errors import checked_solve

# Above this many state components, solves with `h_ẋ` are matrix-free (GMRES).
DENSE_LIMIT = 128

_SINGULAR = (
    "is singular or the solve failed. Problem(h) and Problem.mass_matrix with "
    "M(x, p, t) need h_ẋ (M) nonsingular along the solution. A differential-algebraic "
    "system (singular h_ẋ) is supported in the index-1 DAE forms: "
    "Problem.semi_explicit(a, b) (ẏ = a(y, z, p, t), 0 = b(y, z, p, t)) and "
    "Problem.mass_matrix with a constant singular M (concrete when the Problem is "
    "built, i.e. outside jax.jit)."
)
NEWTON_FAILED = "Newton's method for ẋ in h(x, ẋ, p, t) = 0 did not converge: h_ẋ " + (
    _SINGULAR
)
SINGULAR_MASS = "The mass matrix M " + _SINGULAR
SINGULAR_TRANSPOSE = "The transposed solve h_ẋᵀ λ = w in the adjoint: h_ẋ " + _SINGULAR


class ImplicitSolves(eqx.Module):
    """The solves with `h_ẋ` of one problem, prepared once per forward or backward
    pass (`tol` for Newton and GMRES; `mass_lu` the LU factors of a constant `M`)."""

    tol: float = eqx.field(static=True)
    size: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    mass_lu: PyTree | None

    @classmethod
    def prepare(cls, problem, x: PyTree, tol: float, throw: bool) -> "ImplicitSolves":
        size = ravel_pytree(x)[0].size
        mass_lu = None
        if problem.mass is not None and not callable(problem.mass):
            mass_lu = lx.LU().init(lx.MatrixLinearOperator(problem.mass), {})
        return cls(tol=tol, size=size, throw=throw, mass_lu=mass_lu)

    def _linear_solver(self):
        if self.size <= DENSE_LIMIT:
            return lx.AutoLinearSolver(well_posed=True)
        return lx.GMRES(rtol=self.tol, atol=self.tol)

    def _mass_solve(self, problem, x, p, t, vector: PyTree, transpose: bool):
        flat, unravel = ravel_pytree(vector)
        if self.mass_lu is None:
            operator = lx.MatrixLinearOperator(problem.mass(x, p, t))
            state = lx.LU().init(operator, {})
        else:
            operator = lx.MatrixLinearOperator(problem.mass)
            state = self.mass_lu
        if transpose:
            operator = operator.T
            state, _ = lx.LU().transpose(state, {})
        solution = lx.linear_solve(operator, flat, lx.LU(), state=state, throw=False)
        failed = solution.result != lx.RESULTS.successful
        return checked_solve(unravel(solution.value), failed, SINGULAR_MASS, self.throw)

    def xdot(self, problem, x: PyTree, p: PyTree, t, guess: PyTree | None = None):
        """`ẋ` with `h(x, ẋ, p, t) = 0`; `guess` starts Newton (default `ẋ = 0`)."""
        if problem.is_explicit:
            return problem.vector_field(x, p, t)
        if problem.mass is not None:
            rate = problem.vector_field(x, p, t)
            return self._mass_solve(problem, x, p, t, rate, transpose=False)
        if guess is None:
            guess = jtu.tree_map(jnp.zeros_like, x)
        newton = optx.Newton(
            rtol=self.tol, atol=self.tol, linear_solver=self._linear_solver()
        )
        solution = optx.root_find(
            lambda xdot, _: problem.h(x, xdot, p, t), newton, guess, throw=False
        )
        failed = solution.result != optx.RESULTS.successful
        return checked_solve(solution.value, failed, NEWTON_FAILED, self.throw)

    def lam(self, problem, x: PyTree, xdot: PyTree, p: PyTree, t, w: PyTree):
        """`λ = h_ẋ^{-ᵀ} w`."""
        if problem.is_explicit:
            return w
        if problem.mass is not None:
            return self._mass_solve(problem, x, p, t, w, transpose=True)
        operator = lx.JacobianLinearOperator(lambda v, _: problem.h(x, v, p, t), xdot)
        solution = lx.linear_solve(operator.T, w, self._linear_solver(), throw=False)
        failed = solution.result != lx.RESULTS.successful
        return checked_solve(solution.value, failed, SINGULAR_TRANSPOSE, self.throw)
