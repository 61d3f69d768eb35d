"""jadjoint: gradients of ODE-constrained objectives by the continuous adjoint."""

from importlib.metadata import version as _version

from ._check_grad import GradCheck as GradCheck, check_grad as check_grad
from ._discretise import DiscretiseThenOptimise as DiscretiseThenOptimise
from ._hvp import hvp as hvp
from ._methods import (
    AbstractAdjointMethod as AbstractAdjointMethod,
    AbstractContinuousAdjoint as AbstractContinuousAdjoint,
    BacksolveAdjoint as BacksolveAdjoint,
    InterpolatingAdjoint as InterpolatingAdjoint,
)
from ._odeint import odeint as odeint
from ._problem import Problem as Problem
from ._quadrature import QuadratureAdjoint as QuadratureAdjoint
from ._results import RESULTS as RESULTS
from ._solve import Solution as Solution, solve as solve

__version__ = _version("jadjoint")
