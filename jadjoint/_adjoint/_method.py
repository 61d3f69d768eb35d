"""The adjoint methods' bases: how [`jadjoint.solve`][] is differentiated.

A continuous adjoint method (`AbstractContinuousAdjoint`) is a pair: a storage (what
the forward pass keeps, the segments the backward pass goes through and the forward
solution on each; `jadjoint/_forward/_storage.py`) and a backward integrator (how the
adjoint is integrated over a segment; `jadjoint/_backward/`), chosen once per backward
pass; the solve's derivatives (`_derivatives.py`) and the backward sweep
(`jadjoint/_backward/_sweep.py`) do the rest. [`jadjoint.DiscretiseThenOptimise`][]
instead differentiates through diffrax's steps.
"""

import abc

import equinox as eqx
from jaxtyping import PyTree

from .._backward import AbstractBackwardIntegrator
from .._forward import AbstractStorage
from ._derivatives import adjoint_solve


class AbstractAdjointMethod(eqx.Module):
    """The type of [`jadjoint.solve`][]'s `adjoint` argument: how a solve is
    differentiated. Its subclasses are the methods above; its contract is
    internal to jadjoint, not a base to subclass outside it."""

    @abc.abstractmethod
    def differentiable_solve(
        self, problem, p: PyTree, x0: PyTree, *, times, prior, dt0, options
    ) -> tuple:
        """`(cost, xs, stats, result, (t_last, x_last))` of the ODE `problem` (its
        callables closure-converted) from `x0` over `times = (t0, t1, ts)`,
        differentiable by this method; `result` the first failure of `prior` (the
        result of what came before) and the solve's. Nothing raises."""


class AbstractContinuousAdjoint(AbstractAdjointMethod):
    """A method that integrates [the adjoint ODE][the-adjoint-equations] backwards: the
    transpose of the solve's forward sensitivities, segment by segment."""

    def differentiable_solve(self, problem, p, x0, *, times, prior, dt0, options):
        return adjoint_solve((p, x0, problem, times), prior, dt0, options, self)

    @abc.abstractmethod
    def storage(self) -> AbstractStorage:
        """What the forward pass keeps for the backward one, and how the backward
        pass goes through it."""

    @abc.abstractmethod
    def backward_integrator(
        self, *, t0, ts, xbar: PyTree | None, options
    ) -> AbstractBackwardIntegrator:
        """How the backward pass integrates each segment, the cotangents `xbar` of
        the states saved at `ts` (in `[t0, T]`) entering in its own way; chosen once
        per backward pass."""
