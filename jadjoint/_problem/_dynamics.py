"""The dynamics `h(x, ẋ, p, t) = 0` of a problem: one final class per form.

Every form is an `h` (calling it gives the residual); what the passes need from it
differs by form, and each final class implements just that:

- an ODE form (`AbstractODE`: `h_ẋ` nonsingular) gives `ẋ` to the forward solve, and
  to the adjoint (`docs/how-it-works.md`) the pair it differentiates: the function
  whose VJP gives `(ẇ, q̇)` and its cotangent, `λ = h_ẋ^{-ᵀ} w`;
  - `ExplicitDynamics`: `h = ẋ − φ(x, p, t)`; `ẋ = φ`, and the VJP is of `φ` with
    cotangent `−w` (`h_ẋ = I`, `λ = w`);
  - `ImplicitDynamics` (`_implicit.py`): a general `h`; `ẋ` by Newton, `λ` by a
    transposed linear solve;
  - `MassMatrixDynamics` (`_mass_matrix.py`): `h = M ẋ − φ`; `ẋ = M^{-1} φ`,
    `λ = M^{-ᵀ} w`;
- a DAE form (`AbstractDAE`: index 1, `h_ẋ` singular) reduces to an ODE in its own
  coordinates (`_dae.py`): `SemiExplicitDynamics`, `SingularMassMatrixDynamics`.

The forms are modelled on diffrax's `AbstractTerm` and lineax's operators: an
abstract base whose every method each final class implements.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._errors import check_returns_like_state
from .._results import RESULTS


def closure_converted(fn: Callable | None, *args) -> Callable | None:
    """`fn` closure-converted at `args` (`eqx.filter_closure_convert`): the arrays it
    closes over become pytree leaves, inputs of the solve's `custom_jvp` that
    receive derivatives. `None` stays `None`."""
    return None if fn is None else eqx.filter_closure_convert(fn, *args)


class Solving(eqx.Module):
    """How `ẋ` and `λ` are solved for in one pass: the tolerance of Newton and of
    iterative linear solves, whether a failure raises, and what the form prepared
    once per pass (the LU factors of a constant mass matrix; else `None`)."""

    tol: float = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    factors: PyTree = None


class AbstractDynamics(eqx.Module):
    """The dynamics of a [`jadjoint.Problem`][]: `h(x, ẋ, p, t) = 0`."""

    @abc.abstractmethod
    def __call__(self, x: PyTree, xdot: PyTree, p: PyTree, t) -> PyTree:
        """The residual `h(x, ẋ, p, t)`."""

    @abc.abstractmethod
    def check_outputs(self, x0: PyTree, p: PyTree, t0) -> None:
        """Trace the user's functions abstractly at `(x0, p, t0)` and raise a message
        naming the function when one returns the wrong shape."""


class AbstractODE(AbstractDynamics):
    """Dynamics with `h_ẋ` nonsingular along the solution: an ODE for diffrax."""

    @abc.abstractmethod
    def closure_converted(self, x: PyTree, p: PyTree, t) -> "AbstractODE":
        """The same dynamics with every callable closure-converted at `(x, p, t)`."""

    @abc.abstractmethod
    def prepare(self, x: PyTree, tol: float, throw: bool) -> Solving:
        """What the solves with `h_ẋ` of one pass need, prepared once."""

    @abc.abstractmethod
    def xdot(
        self, x: PyTree, p: PyTree, t, solving: Solving, guess: Callable | None = None
    ) -> PyTree:
        """`ẋ` with `h(x, ẋ, p, t) = 0`; `guess()`, where given, starts an iterative
        solve. A failed solve raises at run time (`solving.throw`) or gives NaN."""

    @abc.abstractmethod
    def adjoint_cotangent(
        self,
        x: PyTree,
        w: PyTree,
        p: PyTree,
        t,
        solving: Solving,
        guess: Callable | None = None,
    ) -> tuple[PyTree | None, PyTree]:
        """`(ẋ, c)` such that the VJP of `linearised` at `(x, ẋ, p, t)` with
        cotangent `c` is `(h_xᵀ λ, h_pᵀ λ)`, `λ = h_ẋ^{-ᵀ} w`; `ẋ` is `None` where
        `linearised` does not need it."""

    @abc.abstractmethod
    def linearised(self, x: PyTree, xdot: PyTree | None, p: PyTree, t) -> PyTree:
        """The function of `(x, p)` that the adjoint differentiates, evaluated: for
        an explicit ODE its vector field (which is `ẋ`), else the residual."""

    @abc.abstractmethod
    def outcome_at(self, x: PyTree, p: PyTree, t, tol: float) -> RESULTS:
        """Whether `ẋ` can be found at `(x, t)`: the failure if not. Evaluated where
        a failed forward solve stopped, to name its cause."""


class AbstractDAE(AbstractDynamics):
    """Index-1 differential-algebraic dynamics, solved in their state-space form."""

    @abc.abstractmethod
    def index_one(self, f: Callable | None, g: Callable | None, x0: PyTree):
        """The semi-explicit index-1 DAE `(_dae.IndexOneDAE)` in its coordinates
        `(y, z)`, with `f` and `g` expressed in them."""


class ExplicitDynamics(AbstractODE):
    """`ẋ = φ(x, p, t)`, i.e. `h = ẋ − φ`: no solve, and the adjoint's VJP is of `φ`
    itself with cotangent `−w`."""

    vector_field: Callable

    def __call__(self, x, xdot, p, t):
        return jtu.tree_map(jnp.subtract, xdot, self.vector_field(x, p, t))

    def check_outputs(self, x0, p, t0):
        check_returns_like_state(
            self.vector_field,
            (x0, p, t0),
            x0,
            "`vector_field(x, p, t)`",
            "a pytree shaped like `x0`",
        )

    def closure_converted(self, x, p, t):
        return ExplicitDynamics(closure_converted(self.vector_field, x, p, t))

    def prepare(self, x, tol, throw):
        return Solving(tol, throw)

    def xdot(self, x, p, t, solving, guess=None):
        return self.vector_field(x, p, t)

    def adjoint_cotangent(self, x, w, p, t, solving, guess=None):
        return None, jtu.tree_map(jnp.negative, w)

    def linearised(self, x, xdot, p, t):
        return self.vector_field(x, p, t)

    def outcome_at(self, x, p, t, tol):
        return RESULTS.successful
