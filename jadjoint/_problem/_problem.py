"""The problem statement: running cost `f`, dynamics `h` and initial condition `g`.

F(p) = ∫_{t0}^{T} f(x, p, t) dt,   h(x, ẋ, p, t) = 0,   g(x(t0), p) = 0.

`h` is held as one of the dynamics of `_dynamics.py`, whichever constructor built it.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from .._errors import check_callable, check_returns_like_state, concrete_value, describe
from ._dae import MassSplit, SemiExplicitDynamics
from ._dynamics import (
    AbstractDynamics,
    AbstractODE,
    ExplicitDynamics,
    closure_converted,
)
from ._implicit import ImplicitDynamics
from ._mass_matrix import MassMatrixDynamics, SingularMassMatrixDynamics


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
    constant singular `M`. Whichever built it, `problem.h(x, xdot, p, t)` is the
    residual.
    """

    h: AbstractDynamics
    f: Callable | None
    g: Callable | None

    def __init__(
        self,
        h: Callable | AbstractDynamics,
        f: Callable | None = None,
        g: Callable | None = None,
    ):
        if not isinstance(h, AbstractDynamics):
            check_callable(h, "h")
            h = ImplicitDynamics(h)
        check_callable(f, "f", optional=True)
        check_callable(g, "g", optional=True)
        self.h, self.f, self.g = h, f, g

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
        return cls(ExplicitDynamics(vector_field), f, g)

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
        if not callable(M):
            M = jnp.asarray(M)
            concrete = concrete_value(M)
            if concrete is not None and concrete.ndim == 2:
                split = MassSplit.of(concrete.astype(np.float64))
                if split is not None:
                    dae = SingularMassMatrixDynamics(M, vector_field, split)
                    return cls(dae, f, g)
        return cls(MassMatrixDynamics(M, vector_field), f, g)

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
        wherever it is needed (the state-space form: Hairer & Wanner, "Solving
        ordinary differential equations II", §VI.1), and the adjoint is the adjoint
        DAE of Cao, Li, Petzold & Serban, "Adjoint sensitivity analysis for
        differential-algebraic equations", SIAM J. Sci. Comput. 24(3), 2003.
        """
        check_callable(a, "a")
        check_callable(b, "b")
        return cls(SemiExplicitDynamics(a, b), f, g)

    def check_outputs(self, p: PyTree, t0, x0: PyTree) -> None:
        """Trace `f`, `h` and (for an ODE) `g` once on abstract inputs and check that
        each returns what the contract above says."""
        self.h.check_outputs(x0, p, t0)
        if self.f is not None:
            out = jax.eval_shape(self.f, x0, p, t0)
            leaves = jtu.tree_leaves(out)
            if len(leaves) != 1 or leaves[0].shape != ():
                raise ValueError(
                    f"`f(x, p, t)` must return a scalar, got {describe(out)}. Sum the "
                    "running cost with `jnp.sum` if it has several terms."
                )
        if self.g is not None and isinstance(self.h, AbstractODE):
            check_returns_like_state(
                self.g, (x0, p), x0, "`g(x0, p)`", "a residual shaped like `x0`"
            )

    def with_static_parameters(self, static: PyTree) -> "Problem":
        """The problem whose callables take the array leaves of the parameters and
        call the user's functions with `eqx.combine(p, static)`: `static` holds the
        parameters' other leaves (an equinox model's activation functions), which
        then travel inside the problem, not through the solve's `custom_jvp`, as
        `eqx.filter_grad` and `eqx.filter_jit` treat them. Each callable field is
        wrapped whole (one that is itself a module, too)."""
        if not jtu.tree_leaves(static):
            return self

        def wrapped(fn, position: int):
            if not callable(fn):
                return fn

            def with_static(*args):
                args = list(args)
                args[position] = eqx.combine(args[position], static)
                return fn(*args)

            return with_static

        dynamics = self.h
        for field in dataclasses.fields(dynamics):
            value = getattr(dynamics, field.name)
            if callable(value):
                # Every dynamics callable takes `(…, p, t)`.
                dynamics = eqx.tree_at(
                    lambda d, name=field.name: getattr(d, name),
                    dynamics,
                    wrapped(value, -2),
                )
        f = None if self.f is None else wrapped(self.f, -2)
        g = None if self.g is None else wrapped(self.g, -1)
        return Problem(dynamics, f, g)

    def closure_converted(self, x: PyTree, p: PyTree, t) -> "Problem":
        """The ODE and its cost with every callable closure-converted at `(x, p, t)`,
        so that the arrays they close over become pytree leaves: inputs of the
        `custom_jvp` that receive derivatives. `g` is left out, being solved (and
        differentiated) before the ODE by optimistix."""
        return Problem(
            self.h.closure_converted(x, p, t), closure_converted(self.f, x, p, t)
        )
