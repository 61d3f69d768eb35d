"""The forward solve on diffrax: `g(x0, p) = 0` for `x0`, then `ẋ` from `h = 0`
integrated together with the running cost `c(t) = ∫_{t0}^{t} f dt`."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jaxtyping import PyTree

from ._differentiation_mode import inner_adjoint
from ._errors import checked_outcome
from ._implicit import ImplicitSolves
from ._results import INITIALISATION_FAILED, RESULTS


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


def _augmented_rates(t, y, args):
    """`(ẋ, ċ)` with `ċ = f(x, p, t)`: the cost integral rides along with the state."""
    problem, p, solves = args
    x, _ = y
    cost_rate = 0.0 if problem.f is None else problem.f(x, p, t)
    xdot = solves.xdot(problem, x, p, t)
    return xdot, jnp.asarray(cost_rate, _cost_dtype(x))


def _cost_dtype(x: PyTree):
    return jnp.result_type(*jtu.tree_leaves(x))


def integrate(
    problem,
    p: PyTree,
    x0: PyTree,
    t0,
    t1,
    ts,
    dt0,
    options: Options,
    *,
    dense: bool,
) -> diffrax.Solution:
    """Solve from `t0` to `t1`, saving `(x, c)` at `ts` and at `t1` (and the dense
    interpolant when `dense`). Newton for an implicit `h` starts from `ẋ = 0`."""
    y0 = (x0, jnp.zeros((), _cost_dtype(x0)))
    solves = ImplicitSolves.prepare(problem, x0, options.newton_tol, options.throw)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(_augmented_rates),
        options.solver,
        t0,
        t1,
        dt0,
        y0,
        args=(problem, p, solves),
        saveat=diffrax.SaveAt(ts=ts, t1=True, dense=dense),
        stepsize_controller=options.controller(),
        max_steps=options.max_steps,
        adjoint=inner_adjoint(),
        throw=False,
        progress_meter=options.progress_meter,
    )
    if not options.throw:
        return solution
    return eqx.tree_at(
        lambda s: s.ys, solution, raise_if_failed(solution.result, solution.ys)
    )


def raise_if_failed(result: diffrax.RESULTS, value: PyTree) -> PyTree:
    """`value`, raising diffrax's message for `result` at run time if the solve
    failed. The solves run with diffrax's `throw=False` and raise here instead: with
    `throw=True` diffrax passes the whole solution, dense-output buffers of
    `max_steps` rows included, through a host callback, which made a forward solve
    with dense output 3× slower (64 states, `max_steps` 4096, CPU)."""
    return result.error_if(value, result != diffrax.RESULTS.successful)


def consistent_initial_state(
    g, x0_guess: PyTree, p: PyTree, tol: float, throw: bool
) -> tuple[PyTree, RESULTS]:
    """`(x0, result)` with `g(x0, p) = 0`, by Newton from `x0_guess`.

    Differentiated by optimistix's implicit-function rule, which is DESIGN.md §2's:
    with `w(t0)` the adjoint at `t0`, `g_{x0}ᵀ μ = w(t0)` is solved (by lineax) and
    `μᵀ g_p` added to the gradient of `p`. If Newton fails, `result` is
    `initialisation_failed` and `x0` raises at run time (`throw`) or is NaN."""
    solution = optx.root_find(
        lambda x, p: g(x, p),
        optx.Newton(rtol=tol, atol=tol),
        x0_guess,
        args=p,
        throw=False,
    )
    failed = solution.result != optx.RESULTS.successful
    return checked_outcome(
        solution.value,
        failed,
        INITIALISATION_FAILED,
        throw,
        RESULTS.initialisation_failed,
    )
