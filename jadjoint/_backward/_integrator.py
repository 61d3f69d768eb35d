"""How the backward pass integrates the adjoint over one segment: a strategy chosen
once per backward pass, by the adjoint method, from the solver and what is
differentiated."""

import abc

import diffrax
import equinox as eqx
from jaxtyping import Array, PyTree

from .._forward import Segments
from .._options import Options
from ._system import AdjointSystem


class AbstractBackwardIntegrator(eqx.Module):
    """Integrates `(w, q)` back over one segment, the save-time cotangents entering
    in its own way."""

    @abc.abstractmethod
    def integrate(
        self,
        system: AdjointSystem,
        segment: Segments,
        dense: diffrax.DenseInterpolation | None,
        *,
        w: PyTree,
        q: PyTree,
        dt0,
        options: Options,
    ) -> tuple[PyTree, PyTree, Array]:
        """`(w, q)` at `segment.t_left` from their values at `segment.t_right`, and
        the number of accepted steps; `dense` is the forward solution's dense output
        over the segment (`None` where the storage keeps none)."""

    @abc.abstractmethod
    def w_at_start(self, w: PyTree) -> PyTree:
        """`w(t0)` from `w` where the last segment arrived, after any jump at `t0`."""
