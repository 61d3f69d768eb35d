"""The problem statement: running cost `f`, dynamics `h` and initial condition `g`.

F(p) = ∫_{t0}^{T} f(x, p, t) dt,   h(x, ẋ, p, t) = 0,   g(x(t0), p) = 0.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._errors import check_callable


class _ExplicitResidual(eqx.Module):
    """`h(x, ẋ, p, t) = ẋ − vector_field(x, p, t)`, leaf by leaf."""

    vector_field: Callable

    def __call__(self, x, xdot, p, t):
        return jtu.tree_map(jnp.subtract, xdot, self.vector_field(x, p, t))


class _MassMatrixResidual(eqx.Module):
    """`h(x, ẋ, p, t) = M ẋ − vector_field(x, p, t)`, with `M` acting on the
    flattened state."""

    mass: Array | Callable
    vector_field: Callable

    def __call__(self, x, xdot, p, t):
        mass = self.mass(x, p, t) if callable(self.mass) else self.mass
        xdot_flat, unravel = ravel_pytree(xdot)
        rate_flat, _ = ravel_pytree(self.vector_field(x, p, t))
        return unravel(mass @ xdot_flat - rate_flat)


class Problem(eqx.Module):
    """An objective `F(p) = ∫ f(x, p, t) dt` constrained by `h(x, ẋ, p, t) = 0` on
    `[t0, T]` and `g(x(t0), p) = 0`.

    **Arguments:**

    - `h`: the dynamics in implicit form, `h(x, xdot, p, t) -> residual shaped like x`,
        with `h_ẋ` nonsingular along the solution: `ẋ` is found by Newton's method.
    - `f`: the running cost, `f(x, p, t) -> scalar`. `None` means `F = 0` (only the
        saved states matter).
    - `g`: the initial condition, `g(x0, p) -> residual shaped like x0`. With `g`,
        the `x0` given to [`jadjoint.solve`][] is the starting guess of a Newton solve
        of `g(x0, p) = 0`; without it, `x0` is the initial state itself.

    Two special forms skip the Newton solve for `ẋ`:
    [`jadjoint.Problem.explicit`][] for `ẋ = vector_field(x, p, t)` and
    [`jadjoint.Problem.mass_matrix`][] for `M ẋ = vector_field(x, p, t)`.
    """

    h: Callable | None
    f: Callable | None = None
    g: Callable | None = None
    vector_field: Callable | None = None
    mass: Array | Callable | None = None

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

    @classmethod
    def mass_matrix(
        cls,
        M: Array | Callable,
        vector_field: Callable,
        f: Callable | None = None,
        g: Callable | None = None,
    ) -> "Problem":
        """The linearly implicit ODE `M ẋ = vector_field(x, p, t)`, i.e.
        `h = M ẋ − vector_field`: one linear solve per evaluation, no Newton.

        **Arguments:**

        - `M`: the nonsingular mass matrix, `n × n` with `n` the number of state
            components (acting on the flattened state): a constant array, factorised
            once per solve, or a function `M(x, p, t) -> array`.
        - `vector_field`: `vector_field(x, p, t)`, shaped like `x`.
        - `f`, `g`: as for [`jadjoint.Problem`][].
        """
        check_callable(vector_field, "vector_field")
        if not callable(M):
            M = jnp.asarray(M)
        return cls(
            h=_MassMatrixResidual(M, vector_field),
            f=f,
            g=g,
            vector_field=vector_field,
            mass=M,
        )

    @property
    def is_explicit(self) -> bool:
        return self.vector_field is not None and self.mass is None

    def residual(self, x: PyTree, xdot: PyTree, p: PyTree, t) -> PyTree:
        """`h(x, ẋ, p, t)`, built from the parts for the special forms."""
        if self.vector_field is None:
            return self.h(x, xdot, p, t)
        if self.mass is None:
            return _ExplicitResidual(self.vector_field)(x, xdot, p, t)
        return _MassMatrixResidual(self.mass, self.vector_field)(x, xdot, p, t)

    def closure_converted(self, x: PyTree, p: PyTree, t) -> "Problem":
        """The same problem with every callable the solve uses closure-converted
        (`eqx.filter_closure_convert`), so that arrays they close over become pytree
        leaves: inputs of the `custom_vjp` that receive gradients.

        `g` is left out, being solved (and differentiated) before the ODE by
        optimistix; so is `h` of the special forms, which is rebuilt from their parts
        by [`jadjoint.Problem.residual`][] (each closed-over array appears once)."""
        convert = lambda fn, *args: (
            None if fn is None else eqx.filter_closure_convert(fn, *args)
        )
        if self.vector_field is None:
            return dataclasses.replace(
                self, h=convert(self.h, x, x, p, t), g=None, f=convert(self.f, x, p, t)
            )
        mass = convert(self.mass, x, p, t) if callable(self.mass) else self.mass
        return dataclasses.replace(
            self,
            h=None,
            g=None,
            f=convert(self.f, x, p, t),
            vector_field=convert(self.vector_field, x, p, t),
            mass=mass,
        )
