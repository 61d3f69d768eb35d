"""The backward pass: the adjoint system, integrated from `T` back to `t0` over the
segments of the forward solution by a backward integrator: along the forward steps
where the observations are injected, by diffrax solves between the save times
elsewhere."""

from ._along_steps import AlongForwardSteps as AlongForwardSteps
from ._diffrax_solves import (
    BetweenSaveTimes as BetweenSaveTimes,
    CarriedIntegral as CarriedIntegral,
    QuadratureIntegral as QuadratureIntegral,
    ReintegratedState as ReintegratedState,
)
from ._injection import injects_through as injects_through
from ._integrator import AbstractBackwardIntegrator as AbstractBackwardIntegrator
from ._jumps import SavedCotangents as SavedCotangents
from ._sweep import backward_sweep as backward_sweep
from ._system import (
    AdjointSystem as AdjointSystem,
    time_gradients as time_gradients,
)
