"""A problem bound to its parameters, with the solves of `h` prepared for a pass."""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._options import Options
from ._dynamics import Solving
from ._problem import Problem


class BoundProblem(eqx.Module):
    """`problem` with the parameters `p` and what the solves with `h_ẋ` need,
    prepared once (`solving`: a constant mass matrix's LU factors, say).

    The one carrier of the three: the forward solve's vector field reads it (as
    diffrax's `args`), the forward rule prepares it and keeps it in the residuals,
    and the backward pass differentiates with respect to its perturbed leaves
    (`eqx.partition` keeps it one structure; `solving` is never differentiated:
    lineax differentiates a solve through its operator, not through prepared
    factors)."""

    problem: Problem
    p: PyTree
    solving: Solving

    @classmethod
    def prepare(
        cls, problem: Problem, p: PyTree, x: PyTree, options: Options
    ) -> "BoundProblem":
        """`problem` bound to `p`, its solves prepared at a state shaped like `x`
        with `options`' Newton tolerance; a failed solve raises at run time when
        `options.throw`."""
        return cls(problem, p, problem.h.prepare(x, options.newton_tol, options.throw))

    def xdot(self, x: PyTree, t, guess=None) -> PyTree:
        """`ẋ` with `h(x, ẋ, p, t) = 0` (`guess()` starts an iterative solve)."""
        return self.problem.h.xdot(x, self.p, t, self.solving, guess)

    def cost_rate(self, x: PyTree, t):
        """`f(x, p, t)` in the state's dtype; zero without a running cost."""
        dtype = jnp.result_type(*jtu.tree_leaves(x))
        rate = 0.0 if self.problem.f is None else self.problem.f(x, self.p, t)
        return jnp.asarray(rate, dtype)

    def perturbed_filter(self, p_perturbed: PyTree, problem_perturbed: PyTree):
        """The filter of `eqx.partition` that selects the leaves of `p` and of
        `problem` that are differentiated (`p_perturbed`, `problem_perturbed`: the
        `custom_vjp`'s flags), and none of `solving`."""
        never = jtu.tree_map(lambda _: False, self.solving)
        return BoundProblem(problem_perturbed, p_perturbed, never)
