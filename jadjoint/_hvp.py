"""Hessian-vector products through the adjoint: forward over reverse.

`jax.jvp` of `jax.grad(F)` differentiates the adjoint pass itself in forward mode:
the tangent of the backward solve along `v` is the second-order adjoint (the
tangent-linear model of the adjoint equations; Wang, Navon, Le Dimet & Zou, "The
second order adjoint analysis", Math. Program. 55, 1992), integrated alongside it in
one sweep, and the tangent of the forward solve alongside that. No `n_p × n_p`
matrix is formed: one product costs a small multiple of one gradient, whatever the
size of `p`, so that `jax.scipy.sparse.linalg.cg` can run Newton–CG on it.
"""

from collections.abc import Callable

import jax
from jaxtyping import PyTree


def hvp(fun: Callable, p: PyTree, v: PyTree, *args) -> PyTree:
    """`∇²F(p) v` for a scalar `F = fun(p, *args)` built on [`jadjoint.solve`][],
    by forward-mode differentiation of the adjoint gradient (`jax.jvp` of
    `jax.grad`).

    **Arguments:**

    - `fun`: `fun(p, *args) -> scalar`. Not `jax.jit`-compiled itself: JAX cannot
        see a forward-mode transformation through a `jit` boundary; wrap the `hvp`
        call in `jax.jit` instead.
    - `p`: the point, a pytree of floating-point arrays.
    - `v`: the direction, a pytree like `p`.
    - `args`: further arguments of `fun`, not differentiated.

    **Returns:** the product, a pytree like `p`.

    !!! cite "Reference"

        the tangent of the adjoint pass is the second-order adjoint of Wang, Navon, Le
        Dimet & Zou, "The second order adjoint analysis: theory and applications", Math.
        Program. 55, 1992.
    """
    gradient = jax.grad(lambda p: fun(p, *args))
    return jax.jvp(gradient, (p,), (v,))[1]
