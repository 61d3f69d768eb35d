"""How to integrate: the solver, tolerances and limits shared by the forward and the
backward solves, and the step-size controller built from them."""

import diffrax
import equinox as eqx
import optimistix as optx


class LeadingSeminorm(eqx.Module):
    """RMS norm of the first `size` entries of a flat backward state. The rest is the
    parameter integral `q`, which feeds back into nothing, so its error is not
    controlled (the seminorm of Kidger, Chen & Lyons, "'Hey, that's not an ODE':
    faster ODE adjoints via seminorms", ICML 2021)."""

    size: int = eqx.field(static=True)

    def __call__(self, y):
        return optx.rms_norm(y[: self.size])


class Options(eqx.Module):
    """How to integrate: shared by the forward and the backward solves."""

    solver: diffrax.AbstractSolver
    rtol: float
    atol: float
    max_steps: int = eqx.field(static=True)
    newton_tol: float = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    progress_meter: diffrax.AbstractProgressMeter = diffrax.NoProgressMeter()
    dtmax: float | None = None

    def controller(self, controlled: int | None = None) -> diffrax.PIDController:
        """The step-size controller (steps at most `dtmax` long); with `controlled`,
        its error norm sees only the first `controlled` entries of a flat state."""
        norm = optx.rms_norm if controlled is None else LeadingSeminorm(controlled)
        return diffrax.PIDController(
            rtol=self.rtol, atol=self.atol, dtmax=self.dtmax, norm=norm
        )
