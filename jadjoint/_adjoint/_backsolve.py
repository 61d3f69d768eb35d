"""`BacksolveAdjoint`: the state integrated backwards along with the adjoint."""

from .._backward import BetweenSaveTimes, ReintegratedState, SavedCotangents
from .._forward import SaveTimeStorage
from ._method import AbstractContinuousAdjoint


class BacksolveAdjoint(AbstractContinuousAdjoint):
    """Integrates `(x, w, ∫ p̄)` backwards, re-integrating the state `x` from its stored
    forward value at the end of each save interval (one solve per interval). Memory
    O(save times), but the backward re-integration of `x` is unstable on stiff or
    dissipative problems: there its gradients can be badly wrong. Prefer
    [`jadjoint.InterpolatingAdjoint`][].

    !!! cite "Reference"

        Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
        equations", NeurIPS 2018.
    """

    def storage(self):
        return SaveTimeStorage()

    def backward_integrator(self, *, t0, ts, xbar, options):
        return BetweenSaveTimes(SavedCotangents(t0, ts, xbar), ReintegratedState())
