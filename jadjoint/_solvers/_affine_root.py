"""The root of an affine function by one linear solve: the stage equations of an
implicit Runge–Kutta step of the linear adjoint.

The adjoint system is linear in its state `(w, q)` once `x(t)` is read from the
forward solution, so each stage equation of an implicit step,
`k − F(t_i, y_i + h γ k) = 0`, is affine in the stage `k`. One Newton step from any
point solves it exactly (to rounding): a linear solve with the stage matrix
`I − h γ ∂F/∂y`, which for the adjoint is the transposed stage matrix of the
forward problem at the stage's time. diffrax's root finders iterate to a
convergence test instead: its default `VeryChord` and `optimistix.Newton` take at
least two iterations (the second to see that the first converged), `VeryChord`
with a Jacobian from the step's first stage, which at later stage times is no
longer the exact one. The Jacobian here is the stage's own, so one iteration is
exact.

The parameter integral `q` is a quadrature: no rate depends on it, so the stage
equation's Jacobian is block triangular,

    [ A  0 ]  [δ_w]   [F_w]
    [ C  I ]  [δ_q] = [F_q],

and only `A` (`n × n`, not `(n + n_p) × (n + n_p)`) is solved with (formed and
factorised by a dense solver): `δ_w = A⁻¹ F_w`, then `δ_q = F_q − C δ_w` by one
Jacobian-vector product.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, PyTree


class _Solved(eqx.Module):
    done: Array
    result: optx.RESULTS


class AffineRootFinder(optx.AbstractRootFinder):
    """The root `y` of an affine `F(y) = J y + b`: `y⁰ − J⁻¹ F(y⁰)`, with
    `J = ∂F/∂y` at the starting point `y⁰`, in one step.

    **Arguments:**

    - `linear_solver`: the lineax solver of the linear system (default: LU).
    - `implicit_size`: with it, the leading `implicit_size` entries of the
        flattened `y` are the unknowns `w` and the rest quadratures `q`, whose
        equations are `q − G(w) = 0` (the block-triangular system above); without
        it, `J` is formed whole.

    `rtol`, `atol` and `norm` are unused (nothing is iterated), present because
    optimistix's root finders declare them.
    """

    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=None)
    implicit_size: int | None = eqx.field(static=True, default=None)
    rtol: float = 0.0
    atol: float = 0.0
    norm: Callable = optx.max_norm

    def init(self, fn, y, args, options: dict[str, Any], f_struct, aux_struct, tags):
        del fn, y, args, options, f_struct, aux_struct, tags
        return _Solved(jnp.array(False), optx.RESULTS.successful)

    def step(self, fn, y: PyTree, args, options, state: _Solved, tags):
        del options, state, tags
        flat, unravel = jax.flatten_util.ravel_pytree(y)

        def flat_fn(z):
            value, aux = fn(unravel(z), args)
            return jax.flatten_util.ravel_pytree(value)[0], aux

        value, linear, aux = jax.linearize(flat_fn, flat, has_aux=True)
        size = flat.size if self.implicit_size is None else self.implicit_size
        quadratures = jnp.zeros_like(flat[size:])

        def leading_block(v):
            """`A v`: the Jacobian's leading block, matrix-free (a dense solver forms
            it by `size` Jacobian-vector products, an iterative one never does)."""
            return linear(jnp.concatenate([v, quadratures]))[:size]

        operator = lx.FunctionLinearOperator(
            leading_block, jax.ShapeDtypeStruct((size,), flat.dtype)
        )
        solution = lx.linear_solve(
            operator, value[:size], self.linear_solver, throw=False
        )
        step = jnp.concatenate([solution.value, quadratures])
        step = step.at[size:].set(value[size:] - linear(step)[size:])
        result = optx.RESULTS.promote(solution.result)
        return unravel(flat - step), _Solved(jnp.array(True), result), aux

    def terminate(self, fn, y, args, options, state: _Solved, tags):
        del fn, y, args, options, tags
        return state.done, state.result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        del fn, args, options, state, tags, result
        return y, aux, {}
