"""jadjoint: gradients of ODE-constrained objectives by the continuous adjoint."""

from importlib.metadata import version as _version

from ._adjoint import (
    AbstractAdjointMethod as AbstractAdjointMethod,
    BacksolveAdjoint as BacksolveAdjoint,
    DiscretiseThenOptimise as DiscretiseThenOptimise,
    InterpolatingAdjoint as InterpolatingAdjoint,
    QuadratureAdjoint as QuadratureAdjoint,
)
from ._check_grad import GradCheck as GradCheck, check_grad as check_grad
from ._events import Event as Event
from ._hvp import hvp as hvp
from ._odeint import odeint as odeint
from ._problem import Problem as Problem
from ._results import RESULTS as RESULTS
from ._solve import Solution as Solution, solve as solve
from ._solvers import BDF as BDF, BDFStepSize as BDFStepSize

__version__ = _version("jadjoint")
