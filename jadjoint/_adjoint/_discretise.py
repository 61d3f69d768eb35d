"""`DiscretiseThenOptimise`: the forward solve differentiated through diffrax's own
steps, the discrete derivative, which is the honest baseline for the continuous
adjoint methods and `check_grad`'s independent reference."""

import diffrax
import equinox as eqx

from .._forward import integrate
from .._problem import BoundProblem
from ._method import AbstractAdjointMethod


class DiscretiseThenOptimise(AbstractAdjointMethod):
    """Differentiates the same forward solve through the solver's steps by diffrax's
    `adjoint` (default `diffrax.RecursiveCheckpointAdjoint()`, RCA): the exact
    derivative of the discretised solution, where the continuous methods integrate
    the adjoint ODE under error control of its own.

    **Arguments:**

    - `adjoint`: a diffrax adjoint. RCA allows reverse mode (also reverse over
        reverse); `diffrax.DirectAdjoint()` also forward mode (`jax.hessian`), at a
        cost that grows with `max_steps`.

    Stiff modes stepped at a solver's stability limit can make this derivative
    wrong by orders of magnitude while the solution is right (see the benchmarks'
    reaction–diffusion problem): use it as a reference where the steps are well
    inside the stability region, and at a tight tolerance.

    !!! cite "Reference"

        Kidger, "On neural differential equations", DPhil thesis, University of Oxford,
        2021 (discretise-then-optimise and optimise-then-discretise compared; RCA is
        diffrax's).
    """

    adjoint: diffrax.AbstractAdjoint = eqx.field(
        default_factory=diffrax.RecursiveCheckpointAdjoint
    )

    def differentiable_solve(self, problem, p, x0, *, times, prior, dt0, options):
        t0, t1, ts = times
        forward = integrate(
            BoundProblem.prepare(problem, p, x0, options),
            x0,
            t0=t0,
            t1=t1,
            ts=ts,
            dt0=dt0,
            options=options,
            dense=False,
            adjoint=self.adjoint,
        )
        return forward.reported(prior).outputs()
