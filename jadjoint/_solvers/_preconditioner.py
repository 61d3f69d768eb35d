"""Preconditioners for the BDF's matrix-free Newton–Krylov corrections.

A user's preconditioner is a lineax operator `P ≈ (I − c ∂ẋ/∂x)⁻¹`, lineax's own
convention for a Krylov solver's `preconditioner`: the user builds it (SUNDIALS'
"setup": a tridiagonal or block-diagonal approximation of the iteration matrix,
factorised) and its `mv` applies it (SUNDIALS' "solve"). The adjoint's iteration
matrix is the transpose of the forward's at the same `x(t)` and `c`, so the backward
solves apply `Pᵀ` (lineax transposes the operator)."""

from collections.abc import Callable

import jax.flatten_util
import lineax as lx
from jaxtyping import Array, PyTree


def applied(
    operator: lx.AbstractLinearOperator, like: PyTree, *, transposed: bool = False
) -> Callable[[Array], Array]:
    """`v ↦ P v` (`Pᵀ v` when `transposed`) for the operator `P` on pytrees shaped
    as `like`, as a map of flat arrays."""
    if transposed:
        operator = operator.transpose()
    _, unravel = jax.flatten_util.ravel_pytree(like)

    def flat_mv(vector: Array) -> Array:
        return jax.flatten_util.ravel_pytree(operator.mv(unravel(vector)))[0]

    return flat_mv
