"""The linearly implicit `M ẋ = φ(x, p, t)`, `M` acting on the flattened state.

With `M` nonsingular (a constant array, or a function `M(x, p, t)`) it is an ODE:
`ẋ = M^{-1} φ` and `λ = M^{-ᵀ} w` by LU (lineax), a constant `M` being factorised once
per pass. A constant singular `M` makes an index-1 DAE, solved in the coordinates of
its SVD (`_dae.py`).
"""

from collections.abc import Callable

import jax
import jax.tree_util as jtu
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._errors import check_returns_like_state, checked_solve, not_all_finite
from .._results import RESULTS, SINGULAR_MASS, failure_if
from ._dae import IndexOneDAE, MassSplit
from ._dynamics import AbstractDAE, AbstractODE, Solving, closure_converted


def _residual(mass, vector_field, x, xdot, p, t):
    matrix = mass(x, p, t) if callable(mass) else mass
    xdot_flat, unravel = ravel_pytree(xdot)
    rate_flat, _ = ravel_pytree(vector_field(x, p, t))
    return unravel(matrix @ xdot_flat - rate_flat)


def _check_outputs(mass, vector_field, x0, p, t0) -> None:
    """`vector_field` shaped like `x0`; `M` (or `M(x, p, t)`) `n × n`, `n` the number
    of state components."""
    check_returns_like_state(
        vector_field,
        (x0, p, t0),
        x0,
        "`vector_field(x, p, t)`",
        "a pytree shaped like `x0`",
    )
    n = sum(int(np.prod(leaf.shape)) for leaf in jtu.tree_leaves(x0))
    out = jax.eval_shape(mass, x0, p, t0) if callable(mass) else mass
    if out.shape != (n, n):
        raise ValueError(
            f"The mass matrix `M` must have shape ({n}, {n}) for a state with {n} "
            f"components, got shape {out.shape}."
        )


class MassMatrixDynamics(AbstractODE):
    """`M ẋ = φ(x, p, t)` with `M` (an array, or `M(x, p, t)`) nonsingular."""

    mass: Array | Callable
    vector_field: Callable

    def __call__(self, x, xdot, p, t):
        return _residual(self.mass, self.vector_field, x, xdot, p, t)

    def check_outputs(self, x0, p, t0):
        _check_outputs(self.mass, self.vector_field, x0, p, t0)

    def closure_converted(self, x, p, t):
        mass = self.mass
        if callable(mass):
            mass = closure_converted(mass, x, p, t)
        return MassMatrixDynamics(mass, closure_converted(self.vector_field, x, p, t))

    def prepare(self, x, tol, throw):
        if callable(self.mass):
            return Solving(tol, throw)
        return Solving(tol, throw, lx.LU().init(lx.MatrixLinearOperator(self.mass), {}))

    def _solve(self, x, p, t, vector, factors, *, transpose: bool):
        """`(M^{-1} vector, failed)`, or `M^{-ᵀ} vector` with `transpose`; `factors`
        the LU of a constant `M` (`None`: factorised here)."""
        flat, unravel = ravel_pytree(vector)
        matrix = self.mass(x, p, t) if callable(self.mass) else self.mass
        operator = lx.MatrixLinearOperator(matrix)
        state = lx.LU().init(operator, {}) if factors is None else factors
        if transpose:
            operator = operator.T
            state, _ = lx.LU().transpose(state, {})
        solution = lx.linear_solve(operator, flat, lx.LU(), state=state, throw=False)
        return unravel(solution.value), solution.result != lx.RESULTS.successful

    def xdot(self, x, p, t, solving, guess=None):
        rate = self.vector_field(x, p, t)
        xdot, failed = self._solve(x, p, t, rate, solving.factors, transpose=False)
        return checked_solve(xdot, failed, SINGULAR_MASS, solving.throw)

    def adjoint_cotangent(self, x, w, p, t, solving, guess=None):
        xdot = self.xdot(x, p, t, solving)
        lam, failed = self._solve(x, p, t, w, solving.factors, transpose=True)
        return xdot, checked_solve(lam, failed, SINGULAR_MASS, solving.throw)

    def linearised(self, x, xdot, p, t):
        return self(x, xdot, p, t)

    def outcome_at(self, x, p, t, tol):
        rate = self.vector_field(x, p, t)
        xdot, failed = self._solve(x, p, t, rate, None, transpose=False)
        return failure_if(failed | not_all_finite(xdot), RESULTS.singular_mass_matrix)


class SingularMassMatrixDynamics(AbstractDAE):
    """`M ẋ = φ(x, p, t)` with a constant singular `M`: an index-1 DAE in the
    coordinates `x = V (y, z)` of `split`, the SVD `M = U S Vᵀ`."""

    mass: Array
    vector_field: Callable
    split: MassSplit

    def __call__(self, x, xdot, p, t):
        return _residual(self.mass, self.vector_field, x, xdot, p, t)

    def check_outputs(self, x0, p, t0):
        _check_outputs(self.mass, self.vector_field, x0, p, t0)

    def index_one(self, f, g, x0):
        return IndexOneDAE.of_mass_split(self.split, self.vector_field, f, g, x0)
