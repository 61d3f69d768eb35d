"""How to integrate: the solver, tolerances and limits shared by the forward and the
backward solves, and the step-size controller built from them."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.lax as lax
import optimistix as optx

from ._differentiation_mode import under_forward_mode
from ._solvers import BDF, AffineRootFinder, BDFStepSize


class LeadingSeminorm(eqx.Module):
    """RMS norm of the first `size` entries of a flat backward state. The rest is the
    parameter integral `q`, which feeds back into nothing, so its error is not
    controlled (the seminorm of Kidger, Chen & Lyons, "'Hey, that's not an ODE':
    faster ODE adjoints via seminorms", ICML 2021)."""

    size: int = eqx.field(static=True)

    def __call__(self, y):
        return optx.rms_norm(y[: self.size])


class UndifferentiatedNorm(eqx.Module):
    """`norm`, its value carrying no derivative: a solve differentiated by `jax.jvp`
    under a controller with this norm takes its steps as if they were given (their
    sizes depend on the state only through the error norm)."""

    norm: Callable

    def __call__(self, y):
        return lax.stop_gradient(self.norm(y))


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
    hold_steps: bool = eqx.field(default=False, static=True)

    def controller(
        self, controlled: int | None = None
    ) -> diffrax.AbstractStepSizeController:
        """The step-size controller (steps at most `dtmax` long): diffrax's
        `PIDController`, or the BDF's own; with `controlled`, its error norm sees
        only the first `controlled` entries of a flat state. With `hold_steps` the
        norm carries no derivative, so neither do the step sizes."""
        norm = optx.rms_norm if controlled is None else LeadingSeminorm(controlled)
        if self.hold_steps:
            norm = UndifferentiatedNorm(norm)
        if isinstance(self.solver, BDF):
            return BDFStepSize(
                rtol=self.rtol, atol=self.atol, norm=norm, dtmax=self.dtmax
            )
        return diffrax.PIDController(
            rtol=self.rtol, atol=self.atol, dtmax=self.dtmax, norm=norm
        )

    def configured_solver(
        self,
        controlled: int | None = None,
        *,
        linear: bool = False,
        approximate_inverse: Callable | None = None,
    ) -> diffrax.AbstractSolver:
        """The solver as a solve under `controller(controlled)` runs it. The entries
        past the first `controlled` of a flat backward state are the parameter
        integral, a quadrature (no rate depends on it), so they are no unknowns of
        an implicit solver's Newton iteration or linear solves. A BDF, which
        controls its own steps, is given the controller's tolerances and norm. With
        `linear` (the vector field is affine in the state, as the adjoint's is), an
        implicit Runge–Kutta solver's stages are each one linear solve
        (`AffineRootFinder`, with the user's root finder's linear solver).
        `approximate_inverse`: how a BDF's preconditioner applies to the solve's
        state (`BDF.with_tolerances`)."""
        if linear and isinstance(self.solver, diffrax.AbstractImplicitSolver):
            finder = self.solver.root_finder
            linear_solver = getattr(finder, "linear_solver", None)
            affine = AffineRootFinder(implicit_size=controlled)
            if linear_solver is not None:
                affine = AffineRootFinder(linear_solver, implicit_size=controlled)
            return eqx.tree_at(lambda s: s.root_finder, self.solver, affine)
        if not isinstance(self.solver, BDF):
            return self.solver
        controller = self.controller(controlled)
        return self.solver.with_tolerances(
            controller.rtol,
            controller.atol,
            controller.norm,
            controlled,
            approximate_inverse,
        )

    def stepping_solver(
        self, approximate_inverse: Callable | None = None
    ) -> diffrax.AbstractSolver:
        """The solver as `diffeqsolve` runs it under `controller()`, for steps taken
        with `solver.step` outside it: under forward mode a Runge–Kutta solver's
        stages in a plain loop (as diffrax's `ForwardMode` sets them: its default
        loop is a `custom_vjp`); an implicit solver's root finder given the
        controller's `rtol`, `atol` and `norm` where it defers to them (diffrax's
        default, a placeholder that is neither a number nor a norm); a BDF as
        `configured_solver(approximate_inverse=approximate_inverse)` gives it."""
        solver = self.configured_solver(approximate_inverse=approximate_inverse)
        if (
            under_forward_mode()
            and isinstance(solver, diffrax.AbstractRungeKutta)
            and solver.scan_kind is None
        ):
            solver = eqx.tree_at(
                lambda s: s.scan_kind, solver, "lax", is_leaf=lambda x: x is None
            )
        if not isinstance(solver, diffrax.AbstractImplicitSolver):
            return solver
        controller = self.controller()
        finder = solver.root_finder
        settled = {"rtol": _is_number, "atol": _is_number, "norm": callable}
        deferred = [
            name for name, test in settled.items() if not test(getattr(finder, name))
        ]
        return eqx.tree_at(
            lambda s: [getattr(s.root_finder, name) for name in deferred],
            solver,
            [getattr(controller, name) for name in deferred],
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) or eqx.is_array(value)
