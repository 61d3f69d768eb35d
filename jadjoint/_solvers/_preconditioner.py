"""Preconditioners for the BDF's matrix-free Newton–Krylov corrections.

A user approximates the iteration matrix, `A ≈ I − c ∂ẋ/∂x`, by a lineax operator
whose structure makes it cheap to solve with (tridiagonal, diagonal, triangular, or
small enough for dense LU); the Krylov solve is then preconditioned by `A⁻¹`, as
SUNDIALS' user preconditioners are (its "setup" builds `A`, its "solve" applies
`A⁻¹`). The adjoint's iteration matrix is the transpose of the forward's at the same
`x(t)` and `c`, so the backward solves use `A⁻ᵀ`."""

from collections.abc import Callable

import jax.flatten_util
import lineax as lx
from jaxtyping import Array, PyTree


def inverse_of(
    operator: lx.AbstractLinearOperator, *, transposed: bool = False
) -> Callable[[PyTree], PyTree]:
    """`v ↦ A⁻¹ v` (`A⁻ᵀ v` when `transposed`) for the operator `A`, by the solver
    lineax chooses for its structure (`lineax.AutoLinearSolver(well_posed=True)`),
    factorised once for all the vectors it is applied to."""
    solver = lx.AutoLinearSolver(well_posed=True)
    state = solver.init(operator, {})
    if transposed:
        state, _ = solver.transpose(state, {})
    return lambda vector: solver.compute(state, vector, {})[0]


def on_flat(inverse: Callable[[PyTree], PyTree], like: PyTree) -> Callable:
    """`inverse`, a map of pytrees shaped as `like`, as a map of flat arrays."""
    _, unravel = jax.flatten_util.ravel_pytree(like)

    def flat_inverse(vector: Array) -> Array:
        return jax.flatten_util.ravel_pytree(inverse(unravel(vector)))[0]

    return flat_inverse
