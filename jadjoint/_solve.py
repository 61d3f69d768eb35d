"""`solve`: the inputs checked once, the problem reduced to an ODE where it is a DAE,
the ODE solved by the adjoint method's differentiable solve, and the outcome
reported: each stage's result accumulated, the first failure reported with NaN
outputs or, with `throw`, raised. The inputs and the initial condition are checked
before the integration starts (a non-finite `p` or an `x0` that fails `g` would
otherwise surface as some solve's failure inside it); the integration's failures are
raised once, at the end."""

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import diffrax
import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, PyTree, Real

from ._adjoint import AbstractAdjointMethod, InterpolatingAdjoint
from ._errors import raise_failure
from ._events import Event, EventRecord, as_events, check_events, solve_in_pieces
from ._forward import consistent_initial_state
from ._inputs import parameter_arrays, state_arrays
from ._options import Options
from ._problem import (
    AbstractDAE,
    BoundProblem,
    Problem,
    StateSpaceForm,
    consistent_initialisation,
)
from ._results import RESULTS, failure_if, first_failure
from ._validation import (
    check_inputs,
    check_max_events,
    check_max_step,
    check_problem,
    check_progress_meter,
    finite_inputs,
)


class Solution(eqx.Module):
    """What [`jadjoint.solve`][] returns.

    - `cost`: `F(p) = ∫_{t0}^{t1} f(x, p, t) dt` (zero without `f`). Differentiable.
    - `ts`: the save times.
    - `xs`: the states at `ts`, each leaf with a leading axis of `len(ts)`.
        Differentiable.
    - `x0`: the initial state used: the solution of `g(x0, p) = 0` when the problem
        has `g`, else the `x0` given. Differentiable.
    - `stats`: forward-solve statistics from diffrax (`num_steps`,
        `num_accepted_steps`, `num_rejected_steps`).
    - `event_times`: with `events`, the times of the events that occurred, in
        order, `inf` past the last (shape `(max_events,)`; `(0,)` without
        events). Differentiable.
    - `event_states`: the states reaching them, `x(τ⁻)`, each leaf with a leading
        axis of `max_events`, `inf` past the last. Differentiable.
    - `event_indices`: which of `events` each was (its index), `-1` past the last.
    - `num_events`: how many events occurred.
    - `result`: a [`jadjoint.RESULTS`][]: `successful`, or the first failure of the
        solve (a non-finite `p` or `x0`; `g`; the forward integration, or a Newton
        solve in it; locating an event, or more than `max_events` of them; a
        non-finite cost or state; a DAE's algebraic solve). With `throw=True` (the
        default) a failure raises instead, so it is always `successful`; with
        `throw=False` a failed solve's `cost`, `xs`, `x0`, `event_times` and
        `event_states` are NaN, and so are their gradients.
    """

    cost: Array
    ts: Array
    xs: PyTree
    x0: PyTree
    stats: dict
    result: RESULTS
    event_times: Array
    event_states: PyTree
    event_indices: Array
    num_events: Array


_method_override: contextvars.ContextVar[tuple | None] = contextvars.ContextVar(
    "jadjoint_method_override", default=None
)


@contextlib.contextmanager
def differentiated_by(method: AbstractAdjointMethod) -> Iterator[list]:
    """Inside, every `solve` traced is differentiated by `method` whatever its
    `adjoint` argument (how [`jadjoint.check_grad`][] computes its reference);
    yields the list of the problems so solved, which stays empty for a function
    whose trace was cached."""
    solved = []
    token = _method_override.set((method, solved))
    try:
        yield solved
    finally:
        _method_override.reset(token)


def _method(adjoint: AbstractAdjointMethod, problem: Problem) -> AbstractAdjointMethod:
    override = _method_override.get()
    if override is None:
        return adjoint
    method, solved = override
    solved.append(problem)
    return method


def _diagnosed(result: RESULTS, outcome_at_last: RESULTS) -> RESULTS:
    """The integration's result, with the cause named: when it failed (non-finite
    outputs included, `Forward.reported`) and `ẋ` cannot be found where it stopped,
    that failure."""
    failed = result != RESULTS.successful
    return first_failure(failure_if(failed, outcome_at_last), result)


def _raised_early(value: PyTree, result: RESULTS, throw: bool):
    """`(value, result)` of a stage before the integration, its failure raised at
    run time with `throw`."""
    if throw:
        value = raise_failure(result, value)
    return value, result


def _nan_if(failed, tree: PyTree) -> PyTree:
    """`tree`, NaN where `failed`, its derivative unchanged (so that the cotangents
    reach the adjoint, which makes the gradient NaN too)."""
    poison = jnp.where(failed, jnp.nan, 0.0)
    return jtu.tree_map(lambda a: a + poison.astype(a.dtype), tree)


def _solve_ode(problem, p, x0, times, prior, dt0, options, adjoint):
    """The ODE `problem` from `x0`: `(cost, xs)` differentiable by the method, the
    statistics, and the first failure of `prior` and the integration, with the cause
    of a failure named where it is a Newton (or linear) solve for `ẋ`."""
    t0 = times[0]
    converted = problem.closure_converted(x0, p, t0)
    method = _method(adjoint, problem)
    cost, xs, stats, result, (t_last, x_last) = method.differentiable_solve(
        converted, p, x0, times=times, prior=prior, dt0=dt0, options=options
    )
    if not options.throw:
        outcome = problem.h.outcome_at(x_last, p, t_last, options.newton_tol)
        result = first_failure(prior, _diagnosed(result, outcome))
    return cost, xs, stats, result


def _solve_with_events(
    problem, p, x0, times, prior, dt0, options, adjoint, events, max_events
):
    """The ODE `problem` from `x0` with `events` (at most `max_events`), as
    pieces between them (`jadjoint/_events/_pieces.py`): `(cost, xs, stats, result,
    record)`."""
    t0 = times[0]
    events = tuple(event.closure_converted(x0, p, t0) for event in events)
    bound = BoundProblem.prepare(problem.closure_converted(x0, p, t0), p, x0, options)

    def solve_piece(x, piece_times, prior):
        return _solve_ode(problem, p, x, piece_times, prior, dt0, options, adjoint)

    return solve_in_pieces(
        solve_piece,
        bound,
        events,
        x0,
        times=times,
        prior=prior,
        dt0=dt0,
        options=options,
        max_events=max_events,
    )


def _solve_dae(problem, p, x0, times, prior, dt0, options, adjoint):
    """An index-1 DAE: consistent `(y0, z0)`, the state-space ODE in `y` solved as
    an ODE, and the user's states `x = (y, z(y))` at the save times."""
    t0, _, ts = times
    dae = problem.h.index_one(problem.f, problem.g, x0)
    dae.check_outputs(x0, p, t0)
    (y0, z0), initialised = _raised_early(
        *consistent_initialisation(dae, x0, p, t0, options.newton_tol), options.throw
    )
    prior = first_failure(prior, initialised)
    state_space = StateSpaceForm(dae, lax.stop_gradient(z0), options.newton_tol)
    reduced = Problem.explicit(
        state_space.vector_field, f=None if dae.f is None else state_space.cost
    )
    converted = reduced.closure_converted(y0, p, t0)
    method = _method(adjoint, problem)
    cost, ys, stats, integrated, (t_last, y_last) = method.differentiable_solve(
        converted,
        p,
        y0,
        times=times,
        prior=prior,
        dt0=dt0,
        options=options,
    )
    xs, saved = state_space.states(ys, ts, p)
    if not options.throw:
        outcome = state_space.outcome_at(y_last, p, t_last)
        integrated = first_failure(prior, _diagnosed(integrated, outcome))
    return (
        cost,
        xs,
        dae.join(y0, z0),
        stats,
        first_failure(integrated, saved),
    )


def solve(
    problem: Problem,
    p: PyTree,
    t0: Real[ArrayLike, ""],
    t1: Real[ArrayLike, ""],
    x0: PyTree,
    *,
    saveat: Real[ArrayLike, " N"] | None = None,
    adjoint: AbstractAdjointMethod = InterpolatingAdjoint(),
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dt0: Real[ArrayLike, ""] | None = None,
    dtmax: Real[ArrayLike, ""] | None = None,
    max_steps: int = 4096,
    throw: bool = True,
    progress_meter: diffrax.AbstractProgressMeter = diffrax.NoProgressMeter(),
    events: Event | Sequence[Event] | None = None,
    max_events: int = 16,
) -> Solution:
    """Solve `h(x, ẋ, p, t) = 0` on `[t0, t1]` from the initial condition, and return
    the cost `∫ f dt` and the states at `saveat`, differentiable by the continuous
    adjoint method.

    **Arguments:**

    - `problem`: a [`jadjoint.Problem`][].
    - `p`: the parameters: any pytree of floating-point arrays or Python numbers (or
        `None`). Integer leaves are passed through and not differentiated; other
        leaves (functions, …) are passed to the problem's functions as they are, so
        that an equinox model can be `p` (differentiated by `eqx.filter_grad`).
    - `t0`, `t1`: the time interval, `t0 < t1`.
    - `x0`: the initial state (a pytree of floating-point arrays or Python numbers);
        with `problem.g`, the initial guess of the Newton solve of `g(x0, p) = 0`.
    - `saveat`: increasing times in `[t0, t1]` at which to return the state.
        Default: `[t1]`.
    - `adjoint`: how the solve is differentiated: a continuous adjoint method
        ([`jadjoint.InterpolatingAdjoint`][], the default;
        [`jadjoint.QuadratureAdjoint`][]; [`jadjoint.BacksolveAdjoint`][]), or
        [`jadjoint.DiscretiseThenOptimise`][] through diffrax's steps.
    - `solver`: any diffrax solver, used forwards and backwards, or
        [`jadjoint.BDF`][] for stiff problems.
    - `rtol`, `atol`: tolerances of the `diffrax.PIDController` (forward and
        backward solves); Newton (for `g`, and for `ẋ` of an implicit `h`) converges
        to 1e-3 of the tighter of them.
    - `dt0`: the initial step of the forward solve; `None` picks it automatically.
    - `dtmax`: the longest step the forward and backward solves may take; `None`
        (default) for no limit.
    - `max_steps`: the most steps any one solve may take (a backward solve: plus one
        per save time, at each of which it ends a step). The default adjoint stores
        `⌈max_steps / segment_steps⌉` restart states and one segment's dense output
        ([`jadjoint.InterpolatingAdjoint`][]): memory grows little with it.
    - `throw`: raise at run time (under `jit` and `vmap` too) when a solve fails
        (`max_steps` reached, Newton not converging) or produces non-finite states,
        cost or gradients, and when `p` or `x0` is not finite. With `False`, nothing
        raises: `Solution.result` says what failed, and the outputs of a failed
        solve and their gradients are NaN.
    - `progress_meter`: a diffrax progress meter, e.g. `diffrax.TqdmProgressMeter()`
        (needs tqdm): a bar for the forward solve and one for the backward pass
        (with events: for each piece between them).
    - `events`: a [`jadjoint.Event`][] or a sequence of them: zero crossings of a
        condition that reset the state or end the solve, differentiable (their
        times too). A save time equal to an event's time gets the state after the
        event, `x(τ⁺)`. Not for the DAE forms.
    - `max_events`: the most events the solve may meet; one more is a failure
        (`too_many_events`). Each allowed event costs one more piece of solve (an
        empty one when it does not occur), compiled once.

    **Returns:** a [`jadjoint.Solution`][].

    Gradients flow to `p`, to `x0` (without `g`) and to the arrays that `f`, `h`, `g`
    close over. Wrap the function that calls `solve` in `jax.jit`.

    !!! cite "References"

        - The adjoint of an ODE-constrained objective and its jumps at the save times:
            Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
            equations", NeurIPS 2018.
        - For an implicit `h` and index-1 DAEs (the adjoint `w = h_ẋᵀ λ`): Cao, Li,
            Petzold & Serban, "Adjoint sensitivity analysis for differential-algebraic
            equations: the adjoint DAE system and its numerical solution", SIAM J. Sci.
            Comput. 24(3), 2003.
        - The backward error control that ignores the parameter integral: Kidger, Chen
            & Lyons, "'Hey, that's not an ODE': faster ODE adjoints via seminorms", ICML
            2021.
    """
    p, x0 = parameter_arrays(p), state_arrays(x0)
    check_problem(problem)
    events = as_events(events)
    check_max_events(max_events)
    # Leaves of `p` that are not arrays (an equinox model's activation functions)
    # travel inside the problem; the solve sees the arrays.
    p, static = eqx.partition(p, eqx.is_array)
    problem = problem.with_static_parameters(static)
    events = tuple(event.with_static_parameters(static) for event in events)
    t0, t1, ts, dt0 = check_inputs(problem, p, t0, t1, x0, saveat, dt0, adjoint, solver)
    # Times wider than the state widen it, as `diffeqsolve` does to its `y0`.
    x0 = jtu.tree_map(lambda leaf: leaf.astype(jnp.result_type(leaf, t0)), x0)
    check_max_step(dtmax)
    check_progress_meter(progress_meter)
    x0, result = _raised_early(x0, finite_inputs(p, x0), throw)
    dtype = jnp.result_type(*jtu.tree_leaves(x0))
    newton_tol = max(1e-3 * min(rtol, atol), 100 * float(jnp.finfo(dtype).eps))
    options = Options(
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        newton_tol=newton_tol,
        throw=throw,
        progress_meter=progress_meter,
        dtmax=dtmax,
    )
    times = (t0, t1, ts)
    record = EventRecord.empty(x0, t0)
    if events:
        if isinstance(problem.h, AbstractDAE):
            raise ValueError(
                "`events` are not supported for the DAE forms "
                "(Problem.semi_explicit, a singular mass matrix)."
            )
        check_events(events, x0, p, t0)
    if isinstance(problem.h, AbstractDAE):
        cost, xs, x0, stats, result = _solve_dae(
            problem, p, x0, times, result, dt0, options, adjoint
        )
    else:
        if problem.g is not None:
            x0, initialised = _raised_early(
                *consistent_initial_state(problem.g, x0, p, newton_tol), throw
            )
            result = first_failure(result, initialised)
        if events:
            cost, xs, stats, result, record = _solve_with_events(
                problem, p, x0, times, result, dt0, options, adjoint, events, max_events
            )
        else:
            cost, xs, stats, result = _solve_ode(
                problem, p, x0, times, result, dt0, options, adjoint
            )
    outputs = (cost, xs, x0, record.times, record.states)
    if throw:
        outputs = raise_failure(result, outputs)
    else:
        outputs = _nan_if(result != RESULTS.successful, outputs)
    cost, xs, x0, event_times, event_states = outputs
    return Solution(
        cost=cost,
        ts=ts,
        xs=xs,
        x0=x0,
        stats=stats,
        result=result,
        event_times=event_times,
        event_states=event_states,
        event_indices=record.indices,
        num_events=record.count,
    )
