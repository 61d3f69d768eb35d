"""`QuadratureAdjoint`: only `w` is stepped backwards; the parameter gradient is a
Gauss–Legendre quadrature over the accepted backward steps."""

import equinox as eqx

from .._backward import (
    AlongForwardSteps,
    BetweenSaveTimes,
    QuadratureIntegral,
    SavedCotangents,
    injects_through,
)
from ._interpolating import SEGMENT_STEPS, AbstractSegmentedAdjoint


class QuadratureAdjoint(AbstractSegmentedAdjoint):
    """Integrates only `w` backwards under error control, with `x(t)` from the dense
    output of the forward solve; the parameter gradient `∫ (c̄ f_p + λᵀ h_p) dt` is
    accumulated by Gauss–Legendre quadrature on each accepted backward step, outside
    the error-controlled state, and the stages differentiate with respect to `x`
    only. With an explicit Runge–Kutta solver it runs on the default method's loops
    along the forward steps (`jadjoint/_backward/_along_steps.py`): there the
    default also steps only `w`, accumulating `q` from the stages' own VJPs, and the
    two cost about the same; where saved states are differentiated, both carry the
    adjoint and `q` across each forward step by the step's own derivative, and the
    quadrature applies to the steps that fall back to the continuous adjoint.
    Otherwise it runs one diffrax solve per save interval and a quadrature over each
    solve's dense output.

    **Arguments:**

    - `nodes`: Gauss–Legendre points per step (default 3: exact to degree 5, the
        order of Tsit5).
    - `segment_steps`: the forward solve's steps per stored segment, as for
        [`jadjoint.InterpolatingAdjoint`][].
    - `recompute_stages`: as for [`jadjoint.InterpolatingAdjoint`][].

    Reverse over reverse (a gradient of the gradient) works with explicit
    Runge–Kutta solvers only; use [`jadjoint.InterpolatingAdjoint`][] otherwise.

    !!! cite "Reference"

        SciMLSensitivity's `GaussAdjoint` (the same quadrature on the backward steps).
    """

    nodes: int = eqx.field(static=True, default=3)
    segment_steps: int = eqx.field(static=True, default=SEGMENT_STEPS)
    recompute_stages: bool = eqx.field(static=True, default=False)

    def backward_integrator(self, *, t0, ts, xbar, options):
        cotangents = SavedCotangents(t0, ts, xbar)
        if injects_through(options.solver):
            return AlongForwardSteps(
                cotangents,
                quadrature_nodes=self.nodes,
                recompute_stages=self.recompute_stages,
            )
        return BetweenSaveTimes(cotangents, QuadratureIntegral(self.nodes))
