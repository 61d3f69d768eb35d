"""The problem statement: running cost `f`, dynamics `h` and initial condition `g`.

F(p) = ∫_{t0}^{T} f(x, p, t) dt,   h(x, ẋ, p, t) = 0,   g(x(t0), p) = 0.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax.tree_util as jtu
from jaxtyping import PyTree

from ._errors import check_callable


class _ExplicitResidual(eqx.Module):
    """`h(x, ẋ, p, t) = ẋ − vector_field(x, p, t)`, leaf by leaf."""

    vector_field: Callable

    def __call__(self, x, xdot, p, t):
        return jtu.tree_map(lambda d, v: d - v, xdot, self.vector_field(x, p, t))


class Problem(eqx.Module):
    """An objective `F(p) = ∫ f(x, p, t) dt` constrained by `h(x, ẋ, p, t) = 0` on
    `[t0, T]` and `g(x(t0), p) = 0`.

    **Arguments:**

    - `h`: the dynamics in implicit form, `h(x, xdot, p, t) -> residual shaped like x`.
    - `f`: the running cost, `f(x, p, t) -> scalar`. `None` means `F = 0` (only the
        saved states matter).
    - `g`: the initial condition, `g(x0, p) -> residual shaped like x0`. With `g`,
        the `x0` given to [`jadjoint.solve`][] is the starting guess of a Newton solve
        of `g(x0, p) = 0`; without it, `x0` is the initial state itself.

    Use [`jadjoint.Problem.explicit`][] when the dynamics are `ẋ = vector_field(x, p,
    t)`: that form needs no solve for `ẋ` and takes the fast path of the adjoint.
    """

    h: Callable
    f: Callable | None = None
    g: Callable | None = None
    vector_field: Callable | None = None

    def __check_init__(self):
        check_callable(self.h, "h", optional=self.vector_field is not None)
        check_callable(self.f, "f", optional=True)
        check_callable(self.g, "g", optional=True)
        check_callable(self.vector_field, "vector_field", optional=True)

    @classmethod
    def explicit(
        cls,
        vector_field: Callable,
        f: Callable | None = None,
        g: Callable | None = None,
    ) -> "Problem":
        """The explicit ODE `ẋ = vector_field(x, p, t)`, i.e. `h = ẋ − vector_field`.

        **Arguments:**

        - `vector_field`: `vector_field(x, p, t) -> ẋ`, shaped like `x`.
        - `f`, `g`: as for [`jadjoint.Problem`][].
        """
        check_callable(vector_field, "vector_field")
        return cls(
            h=_ExplicitResidual(vector_field), f=f, g=g, vector_field=vector_field
        )

    @property
    def is_explicit(self) -> bool:
        return self.vector_field is not None

    def closure_converted(self, x: PyTree, p: PyTree, t) -> "Problem":
        """The same problem with every callable the solve uses closure-converted
        (`eqx.filter_closure_convert`), so that arrays they close over become pytree
        leaves: inputs of the `custom_vjp` that receive gradients. `g` is left out,
        being solved (and differentiated) before the ODE by optimistix; so is `h` of an
        explicit problem, which the fast path never calls."""
        convert = lambda fn, *args: (
            None if fn is None else eqx.filter_closure_convert(fn, *args)
        )
        if self.is_explicit:
            return dataclasses.replace(
                self,
                h=None,
                g=None,
                f=convert(self.f, x, p, t),
                vector_field=convert(self.vector_field, x, p, t),
            )
        return dataclasses.replace(
            self, h=convert(self.h, x, x, p, t), g=None, f=convert(self.f, x, p, t)
        )
