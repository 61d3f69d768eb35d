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

from ._errors import checked_solve, not_all_finite
from ._results import (
    NEWTON_FAILED,
    RESULTS,
    SINGULAR_MASS,
    SINGULAR_TRANSPOSE,
    failure_if,
)

# Above this many state components, solves with `h_ẋ` are matrix-free (GMRES).
DENSE_LIMIT = 128


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
        """`(M^{-1} vector, failed)`, or `M^{-ᵀ} vector` with `transpose`."""
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
        return unravel(solution.value), failed

    def _solve_xdot(self, problem, x, p, t, guess):
        """`(ẋ, failed)` for a mass matrix or a general `h`."""
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
        return solution.value, solution.result != optx.RESULTS.successful

    def xdot(self, problem, x: PyTree, p: PyTree, t, guess: PyTree | None = None):
        """`ẋ` with `h(x, ẋ, p, t) = 0`; `guess` starts Newton (default `ẋ = 0`).
        A failure raises with `throw`, and gives NaN without."""
        if problem.is_explicit:
            return problem.vector_field(x, p, t)
        xdot, failed = self._solve_xdot(problem, x, p, t, guess)
        message = NEWTON_FAILED if problem.mass is None else SINGULAR_MASS
        return checked_solve(xdot, failed, message, self.throw)

    def outcome_at(self, problem, x: PyTree, p: PyTree, t) -> RESULTS:
        """Whether `ẋ` can be found at `(x, t)`: `newton_failed` (or
        `singular_mass_matrix`) if not. Evaluated where a failed forward solve
        stopped, to name the cause of its failure."""
        if problem.is_explicit:
            return RESULTS.successful
        xdot, failed = self._solve_xdot(problem, x, p, t, None)
        failure = RESULTS.newton_failed
        if problem.mass is not None:
            failure = RESULTS.singular_mass_matrix
        return failure_if(failed | not_all_finite(xdot), failure)

    def lam(self, problem, x: PyTree, xdot: PyTree, p: PyTree, t, w: PyTree):
        """`λ = h_ẋ^{-ᵀ} w`."""
        if problem.is_explicit:
            return w
        if problem.mass is not None:
            lam, failed = self._mass_solve(problem, x, p, t, w, transpose=True)
            return checked_solve(lam, failed, SINGULAR_MASS, self.throw)
        operator = lx.JacobianLinearOperator(lambda v, _: problem.h(x, v, p, t), xdot)
        solution = lx.linear_solve(operator.T, w, self._linear_solver(), throw=False)
        failed = solution.result != lx.RESULTS.successful
        return checked_solve(solution.value, failed, SINGULAR_TRANSPOSE, self.throw)
