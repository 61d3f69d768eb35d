"""A general implicit `h(x, ẋ, p, t) = 0` with `h_ẋ` nonsingular.

`ẋ` is found by Newton's method (optimistix) and `λ = h_ẋ^{-ᵀ} w` by a transposed solve
with the Jacobian operator `h_ẋ` (lineax): dense LU for small states, matrix-free GMRES
for large ones, so that no `n × n` matrix is formed when `n` is large.
"""

from collections.abc import Callable

import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jax.flatten_util import ravel_pytree

from .._errors import check_returns_like_state, checked_solve, not_all_finite
from .._results import NEWTON_FAILED, RESULTS, SINGULAR_TRANSPOSE, failure_if
from ._dynamics import AbstractODE, Solving, closure_converted

# Above this many state components, solves with `h_ẋ` are matrix-free (GMRES).
DENSE_LIMIT = 128


def _linear_solver(x, tol: float) -> lx.AbstractLinearSolver:
    if ravel_pytree(x)[0].size <= DENSE_LIMIT:
        return lx.AutoLinearSolver(well_posed=True)
    return lx.GMRES(rtol=tol, atol=tol)


class ImplicitDynamics(AbstractODE):
    """`h(x, ẋ, p, t) = 0`, solved for `ẋ` by Newton at every evaluation."""

    h: Callable

    def __call__(self, x, xdot, p, t):
        return self.h(x, xdot, p, t)

    def check_outputs(self, x0, p, t0):
        check_returns_like_state(
            self.h,
            (x0, x0, p, t0),
            x0,
            "`h(x, xdot, p, t)`",
            "a residual shaped like `x0`",
        )

    def closure_converted(self, x, p, t):
        return ImplicitDynamics(closure_converted(self.h, x, x, p, t))

    def prepare(self, x, tol, throw):
        return Solving(tol, throw)

    def _newton(self, x, p, t, tol: float, guess: Callable | None):
        """`(ẋ, failed)` by Newton from `guess()` (default `ẋ = 0`)."""
        start = jtu.tree_map(jnp.zeros_like, x) if guess is None else guess()
        linear_solver = _linear_solver(x, tol)
        newton = optx.Newton(rtol=tol, atol=tol, linear_solver=linear_solver)
        # Where a forward step is differentiated (the injection's step VJPs,
        # `_backward/_injection.py`; `DiscretiseThenOptimise`), by the implicit
        # function theorem with the same solver: matrix-free too.
        solution = optx.root_find(
            lambda xdot, _: self.h(x, xdot, p, t),
            newton,
            start,
            throw=False,
            adjoint=optx.ImplicitAdjoint(linear_solver=linear_solver),
        )
        return solution.value, solution.result != optx.RESULTS.successful

    def xdot(self, x, p, t, solving, guess=None):
        xdot, failed = self._newton(x, p, t, solving.tol, guess)
        return checked_solve(xdot, failed, NEWTON_FAILED, solving.throw)

    def adjoint_cotangent(self, x, w, p, t, solving, guess=None):
        xdot = self.xdot(x, p, t, solving, guess)
        operator = lx.JacobianLinearOperator(lambda v, _: self.h(x, v, p, t), xdot)
        solver = _linear_solver(x, solving.tol)
        solution = lx.linear_solve(operator.T, w, solver, throw=False)
        failed = solution.result != lx.RESULTS.successful
        lam = checked_solve(solution.value, failed, SINGULAR_TRANSPOSE, solving.throw)
        return xdot, lam

    def linearised(self, x, xdot, p, t):
        return self.h(x, xdot, p, t)

    def outcome_at(self, x, p, t, tol):
        xdot, failed = self._newton(x, p, t, tol, None)
        return failure_if(failed | not_all_finite(xdot), RESULTS.newton_failed)
