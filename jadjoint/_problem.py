"""The problem statement: running cost `f`, dynamics `h` and initial condition `g`.

F(p) = ∫_{t0}^{T} f(x, p, t) dt,   h(x, ẋ, p, t) = 0,   g(x(t0), p) = 0.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._dae import MassSplit
from ._errors import check_callable, concrete_value


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
    Differential-algebraic systems (singular `h_ẋ`) are supported in the index-1
    forms [`jadjoint.Problem.semi_explicit`][] and `Problem.mass_matrix` with a
    constant singular `M`.
    """

    h: Callable | None
    f: Callable | None = None
    g: Callable | None = None
    vector_field: Callable | None = None
    mass: Array | Callable | None = None
    differential: Callable | None = None
    algebraic: Callable | None = None
    mass_split: MassSplit | None = None

    def __check_init__(self):
        has_parts = self.vector_field is not None or self.differential is not None
        check_callable(self.h, "h", optional=has_parts)
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

        - `M`: the mass matrix, `n × n` with `n` the number of state components
            (acting on the flattened state): a constant array, factorised once per
            solve, or a nonsingular function `M(x, p, t) -> array`. A constant
            singular `M` (e.g. `diag(1, 1, 0)`) makes an index-1 DAE, solved in the
            coordinates `x = V (y, z)` of the SVD `M = U S Vᵀ` (see
            [`jadjoint.Problem.semi_explicit`][]); it must be concrete here (build
            the problem outside `jax.jit`).
        - `vector_field`: `vector_field(x, p, t)`, shaped like `x`.
        - `f`: as for [`jadjoint.Problem`][].
        - `g`: as for [`jadjoint.Problem`][]; with a singular `M`, it constrains the
            differential part: its residual has `rank(M)` components, and the
            algebraic part of `x0` follows from the algebraic equations.
        """
        check_callable(vector_field, "vector_field")
        mass_split = None
        if not callable(M):
            M = jnp.asarray(M)
            concrete = concrete_value(M)
            if concrete is not None and concrete.ndim == 2:
                mass_split = MassSplit.of(concrete.astype(np.float64))
        return cls(
            h=_MassMatrixResidual(M, vector_field),
            f=f,
            g=g,
            vector_field=vector_field,
            mass=M,
            mass_split=mass_split,
        )

    @classmethod
    def semi_explicit(
        cls,
        a: Callable,
        b: Callable,
        f: Callable | None = None,
        g: Callable | None = None,
    ) -> "Problem":
        """The semi-explicit index-1 DAE `ẏ = a(y, z, p, t)`, `0 = b(y, z, p, t)`
        with `b_z` nonsingular: the state is the pair `x = (y, z)`.

        **Arguments:**

        - `a`: `a(y, z, p, t) -> ẏ`, shaped like `y`.
        - `b`: `b(y, z, p, t) -> residual`, shaped like `z`.
        - `f`: the running cost `f(x, p, t) -> scalar`, `x = (y, z)`.
        - `g`: the initial condition `g(x0, p) -> residual shaped like y0`: it
            constrains the differential part; `(y0, z0)` solve `g = 0` and `b = 0`
            together. Without `g`, `y0` is given and `z0` solves `b(y0, z0) = 0`.

        [`jadjoint.solve`][] takes `x0 = (y0, z0_guess)` and returns `xs = (ys, zs)`
        and the consistent `x0`. `z` is resolved from `b = 0` by Newton's method
        wherever it is needed (the state-space form; see `_dae.py` for why), and the
        adjoint is the adjoint DAE of Cao, Li, Petzold & Serban (2003).
        """
        check_callable(a, "a")
        check_callable(b, "b")
        return cls(h=None, f=f, g=g, differential=a, algebraic=b)

    @property
    def is_dae(self) -> bool:
        """Whether the problem is an index-1 DAE (solved in its state-space form)."""
        return self.differential is not None or self.mass_split is not None

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
