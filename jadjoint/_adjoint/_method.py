"""The adjoint methods' bases: how [`jadjoint.solve`][] is differentiated.

A continuous adjoint method (`AbstractContinuousAdjoint`) owns its plan: what the
forward pass stores (`storage`), the segments the backward pass integrates one
after the other (`segments`), and how it integrates `(w, q)` over one of them
(`integrate_segment`), knowing `x(t)` in its own way; the `custom_vjp`
(`_custom_vjp.py`) and the backward sweep (`jadjoint/_backward/_sweep.py`) do the
rest. [`jadjoint.DiscretiseThenOptimise`][] instead differentiates through diffrax's
steps.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import PyTree

from .._backward import Jumps, SavedCotangents
from .._differentiation_mode import reverse_mode_only
from .._forward import Forward, Segment, Storage
from ._custom_vjp import adjoint_solve


class AbstractAdjointMethod(eqx.Module):
    """The type of [`jadjoint.solve`][]'s `adjoint` argument: how a solve is
    differentiated. Its subclasses are the methods above; its contract is
    internal to jadjoint, not a base to subclass outside it."""

    @abc.abstractmethod
    def differentiable_solve(
        self, problem, p: PyTree, x0: PyTree, *, times, dt0, options
    ) -> tuple:
        """`(cost, xs, stats, result, (t_last, x_last))` of the ODE `problem` (its
        callables closure-converted) from `x0` over `times = (t0, t1, ts)`,
        differentiable by this method."""


class AbstractContinuousAdjoint(AbstractAdjointMethod):
    """A method that integrates [the adjoint ODE][the-adjoint-equations] backwards: the
    reverse rule of a `custom_vjp`, segment by segment."""

    def differentiable_solve(self, problem, p, x0, *, times, dt0, options):
        inputs = (p, x0, problem, times)
        return reverse_mode_only(lambda i: adjoint_solve(i, dt0, options, self), inputs)

    @abc.abstractmethod
    def storage(self, t0, t1, ts) -> Storage:
        """What the forward pass keeps for the backward one, given the save times."""

    @abc.abstractmethod
    def segments(
        self, storage: Storage, forward: Forward, *, t0, t1, x0: PyTree, xs: PyTree
    ) -> Segment:
        """The backward segments (batched, from `t0` to `T`) and the forward states
        at their ends, from what the forward pass stored (`xs`: at the save times)."""

    @abc.abstractmethod
    def observations(
        self, *, system, forward: Forward, t0, ts, xbar: PyTree | None, times, options
    ) -> Jumps | SavedCotangents:
        """How the cotangents `xbar` of the states saved at `ts` (in `[t0, T]`)
        enter the backward pass. `times`: whether `t0`, `t1` or `ts` are
        differentiated."""

    @abc.abstractmethod
    def integrate_segment(
        self, *, system, forward: Forward, jumps, segment: Segment, v, q, dt0, options
    ) -> tuple[PyTree, PyTree, jnp.ndarray]:
        """Integrate `(v, q)` from `segment.t_right` back to `segment.t_left`; return
        them there and the number of accepted steps."""
