"""The adjoint methods, each a way of differentiating a solve, and the solve's
`custom_jvp`: forward sensitivities forwards, the continuous adjoint in reverse."""

from ._backsolve import BacksolveAdjoint as BacksolveAdjoint
from ._discretise import DiscretiseThenOptimise as DiscretiseThenOptimise
from ._interpolating import InterpolatingAdjoint as InterpolatingAdjoint
from ._method import (
    AbstractAdjointMethod as AbstractAdjointMethod,
    AbstractContinuousAdjoint as AbstractContinuousAdjoint,
)
from ._quadrature import QuadratureAdjoint as QuadratureAdjoint
