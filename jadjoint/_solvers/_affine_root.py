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
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import Array, PyTree


class _Solved(eqx.Module):
    done: Array
    result: optx.RESULTS


class AffineRootFinder(optx.AbstractRootFinder):
    """The root `y` of an affine `F(y) = A y + b`: `y⁰ − A⁻¹ F(y⁰)`, with
    `A = ∂F/∂y` at the starting point `y⁰`, in one step.

    **Arguments:**

    - `linear_solver`: the lineax solver of `A x = F(y⁰)` (default: LU for square
        `A`).

    `rtol`, `atol` and `norm` are unused (nothing is iterated), present because
    optimistix's root finders declare them.
    """

    rtol: float = 0.0
    atol: float = 0.0
    norm: Callable = optx.max_norm
    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=None)

    def init(self, fn, y, args, options: dict[str, Any], f_struct, aux_struct, tags):
        del fn, y, args, options, f_struct, aux_struct, tags
        return _Solved(jnp.array(False), optx.RESULTS.successful)

    def step(self, fn, y: PyTree, args, options, state: _Solved, tags):
        del options, state
        value, linear, aux = jax.linearize(lambda z: fn(z, args), y, has_aux=True)
        operator = lx.FunctionLinearOperator(
            linear, jax.eval_shape(lambda: y), tags=tags
        )
        solution = lx.linear_solve(operator, value, self.linear_solver, throw=False)
        root = jtu.tree_map(lambda a, b: a - b, y, solution.value)
        result = optx.RESULTS.promote(solution.result)
        return root, _Solved(jnp.array(True), result), aux

    def terminate(self, fn, y, args, options, state: _Solved, tags):
        del fn, y, args, options, tags
        return state.done, state.result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        del fn, args, options, state, tags, result
        return y, aux, {}
