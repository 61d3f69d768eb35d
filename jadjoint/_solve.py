"""`solve`: the `custom_vjp` that ties the forward solve and the adjoint together."""

import diffrax
import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, PyTree, Real

from ._adjoint import AdjointSystem, Params, time_gradients
from ._check_grad import reference_mode_calls
from ._dae import IndexOneDAE, StateSpaceForm, consistent_initialisation
from ._errors import (
    check_dae_outputs,
    check_finite_gradients,
    check_finite_inputs,
    check_finite_outputs,
    check_inputs,
    check_max_step,
    check_progress_meter,
    not_all_finite,
    reverse_mode_only,
)
from ._forward import Options, consistent_initial_state, integrate
from ._implicit import ImplicitSolves
from ._inputs import parameter_arrays, state_arrays
from ._jumps import Jumps
from ._methods import AbstractAdjointMethod, InterpolatingAdjoint, backward_sweep
from ._problem import Problem
from ._results import RESULTS, failure_if, first_failure


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
    - `result`: a [`jadjoint.RESULTS`][]: `successful`, or the first failure of the
        solve (of `g`, of the forward integration, of a Newton solve in it). With
        `throw=True` (the default) a failure raises instead, so it is always
        `successful`; with `throw=False` a failed solve's `cost`, `xs` and `x0` are
        NaN, and so are their gradients.
    """

    cost: Array
    ts: Array
    xs: PyTree
    x0: PyTree
    stats: dict
    result: RESULTS


def _stored_times(ts, method, t0, t1):
    """The times at which the forward pass stores `x` for the method: the save times,
    merged with the method's checkpoint times if it has any; and the positions among
    them of the save times and of the checkpoints (`None` and `None` when there are no
    checkpoints: the stored times are the save times)."""
    extra = method.checkpoint_times(t0, t1)
    if extra is None:
        return ts, None, None
    merged = jnp.concatenate([ts, extra])
    order = jnp.argsort(merged, stable=True)
    rank = jnp.argsort(order)
    return merged[order], rank[: ts.shape[0]], rank[ts.shape[0] :]


def _outputs(forward: diffrax.Solution, options: Options, save_positions=None):
    xs_and_final, costs = forward.ys
    cost, xs = costs[-1], jtu.tree_map(lambda a: a[:-1], xs_and_final)
    if save_positions is not None:
        xs = jtu.tree_map(lambda a: a[save_positions], xs)
    if options.throw:
        cost, xs = check_finite_outputs((cost, xs))
    stats = {
        key: forward.stats[key]
        for key in ("num_steps", "num_accepted_steps", "num_rejected_steps")
    }
    # Where the solve stopped (`t1`, or where it failed): the state saved "at t1" is
    # diffrax's final state.
    last = (forward.ts[-1], jtu.tree_map(lambda a: a[-1], xs_and_final))
    return cost, xs, stats, RESULTS.promote(forward.result), last


# Inside a `custom_vjp` JAX may pass a primal that was a Python number as one (a
# `float` subclass), which equinox's filtered transformations take for a static
# value: each rule converts its inputs to arrays again.
@eqx.filter_custom_vjp
def _solve_ode(inputs, dt0, options, method):
    p, x0, problem, (t0, t1, ts) = parameter_arrays(inputs)
    forward = integrate(problem, p, x0, t0, t1, ts, dt0, options, dense=False)
    return _outputs(forward, options)


@_solve_ode.def_fwd
def _solve_ode_fwd(perturbed, inputs, dt0, options, method):
    del perturbed
    p, x0, problem, (t0, t1, ts) = parameter_arrays(inputs)
    stored, save_positions, _ = _stored_times(ts, method, t0, t1)
    dense = method.keeps_dense_output
    forward = integrate(problem, p, x0, t0, t1, stored, dt0, options, dense=dense)
    return _outputs(forward, options, save_positions), forward


def _materialise(cotangent: PyTree, like: PyTree) -> PyTree | None:
    """Cotangents arrive with `None` for symbolic zeros; `None` overall when all are."""
    if all(leaf is None for leaf in jtu.tree_leaves(cotangent, is_leaf=_is_none)):
        return None
    return jtu.tree_map(
        lambda ct, x: jnp.zeros_like(x) if ct is None else ct,
        cotangent,
        like,
        is_leaf=_is_none,
    )


def _is_none(x) -> bool:
    return x is None


def _segments(method, t0, t1, ts, x0, xs, x_final, stored, x_stored, positions):
    """The backward pass's segment ends `t0 < … < T` (at the method's checkpoints,
    whose `positions` among the stored times are given, or at the save times) and the
    forward states there."""
    times, middle = ts[:0], jtu.tree_map(lambda a: a[:0], xs)
    if method.restarts_at_save_times:
        times, middle = ts, xs
    elif positions is not None:
        times = stored[positions]
        middle = jtu.tree_map(lambda a: a[positions], x_stored)
    times = jnp.concatenate([t0[None], times, t1[None]])
    states = jtu.tree_map(
        lambda first, rows, last: jnp.concatenate([first[None], rows, last[None]]),
        x0,
        middle,
        x_final,
    )
    return times, states


@_solve_ode.def_bwd
def _solve_ode_bwd(forward, cotangents, perturbed, inputs, dt0, options, method):
    cbar, xbar, _, _, _ = cotangents
    p, x0, problem, (t0, t1, ts) = parameter_arrays(inputs)
    p_perturbed, x0_perturbed, problem_perturbed, times_perturbed = perturbed
    if problem.f is None:
        cbar = None
    stored, save_positions, checkpoint_positions = _stored_times(ts, method, t0, t1)
    x_stored_and_final, _ = forward.ys
    x_stored = jtu.tree_map(lambda a: a[:-1], x_stored_and_final)
    x_final = jtu.tree_map(lambda a: a[-1], x_stored_and_final)
    xs = x_stored
    if save_positions is not None:
        xs = jtu.tree_map(lambda a: a[save_positions], x_stored)
    xbar = _materialise(xbar, xs)
    boundaries, x_boundaries = _segments(
        method, t0, t1, ts, x0, xs, x_final, stored, x_stored, checkpoint_positions
    )
    diff, static = eqx.partition((p, problem), (p_perturbed, problem_perturbed))
    steps = jnp.maximum(forward.stats["num_accepted_steps"], 1)
    solves = ImplicitSolves.prepare(problem, x0, options.newton_tol, options.throw)
    system = AdjointSystem(Params(diff, static), solves, cbar)
    w0, q0 = backward_sweep(
        method,
        system,
        forward,
        Jumps.from_cotangents(ts, xbar),
        boundaries,
        x_boundaries,
        (t1 - t0) / steps,
        options,
    )
    if options.throw:
        w0, q0 = check_finite_gradients((w0, q0))
    else:
        failed = forward.result != diffrax.RESULTS.successful
        w0, q0 = jtu.tree_map(lambda a: jnp.where(failed, jnp.nan, a), (w0, q0))
    p_grad, problem_grad = jtu.tree_map(jnp.negative, q0)
    x0_grad = jtu.tree_map(lambda w, on: -w if on else None, w0, x0_perturbed)
    times_grad = time_gradients(
        problem,
        solves,
        p,
        (t0, t1, ts),
        times_perturbed,
        x0,
        x_final,
        xs,
        w0,
        xbar,
        cbar,
    )
    return p_grad, x0_grad, problem_grad, times_grad


def _solve_ode_problem(problem, p, t0, t1, x0, ts, dt0, options, adjoint):
    """The ODE (explicit, mass-matrix or implicit `h`) from a given `x0`: the
    differentiable `(cost, xs)`, the statistics, the integration's result (with the
    cause of a failure named where it is a Newton solve), and where it stopped."""
    converted = problem.closure_converted(x0, p, t0)
    reference_calls = reference_mode_calls()
    if reference_calls is not None:
        reference_calls.append(problem)
        forward = integrate(converted, p, x0, t0, t1, ts, dt0, options, dense=False)
        return _outputs(forward, options)
    inputs = (p, x0, converted, (t0, t1, ts))
    return reverse_mode_only(lambda i: _solve_ode(i, dt0, options, adjoint), inputs)


def _diagnosed(result: RESULTS, outputs: PyTree, outcome_at_last: RESULTS) -> RESULTS:
    """The integration's result, with the cause named: when it failed (or gave
    non-finite outputs) and `ẋ` cannot be found where it stopped, that failure."""
    suspect = (result != RESULTS.successful) | not_all_finite(outputs)
    return first_failure(failure_if(suspect, outcome_at_last), result)


def _nan_if(failed, tree: PyTree) -> PyTree:
    """`tree`, NaN where `failed`, its derivative unchanged (so that the cotangents
    reach the adjoint, which makes the gradient NaN too)."""
    poison = jnp.where(failed, jnp.nan, 0.0)
    return jtu.tree_map(lambda a: a + poison.astype(a.dtype), tree)


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
) -> Solution:
    """Solve `h(x, ẋ, p, t) = 0` on `[t0, t1]` from the initial condition, and return
    the cost `∫ f dt` and the states at `saveat`, differentiable by the continuous
    adjoint method.

    **Arguments:**

    - `problem`: a [`jadjoint.Problem`][].
    - `p`: the parameters: any pytree of floating-point arrays or Python numbers (or
        `None`). Integer leaves are passed through and not differentiated.
    - `t0`, `t1`: the time interval, `t0 < t1`.
    - `x0`: the initial state (a pytree of floating-point arrays or Python numbers);
        with `problem.g`, the initial guess of the Newton solve of `g(x0, p) = 0`.
    - `saveat`: increasing times in `[t0, t1]` at which to return the state.
        Default: `[t1]`.
    - `adjoint`: how the adjoint is integrated backwards.
    - `solver`: any diffrax solver, used forwards and backwards.
    - `rtol`, `atol`: tolerances of the `diffrax.PIDController` (forward and
        backward solves); Newton (for `g`, and for `ẋ` of an implicit `h`) converges
        to 1e-3 of the tighter of them.
    - `dt0`: the initial step of the forward solve; `None` picks it automatically.
    - `dtmax`: the longest step the forward and backward solves may take; `None`
        (default) for no limit.
    - `max_steps`: the most steps any one solve may take (a backward solve: plus one
        per save time, at each of which it ends a step). The forward solution's dense
        output, which the default adjoint keeps, is allocated at this size: a value
        near what the solve needs is faster for large states.
    - `throw`: raise at run time (under `jit` and `vmap` too) when a solve fails
        (`max_steps` reached, Newton not converging) or produces non-finite states,
        cost or gradients, and when `p` or `x0` is not finite. With `False`, nothing
        raises: `Solution.result` says what failed, and the outputs of a failed
        solve and their gradients are NaN.
    - `progress_meter`: a diffrax progress meter, e.g. `diffrax.TqdmProgressMeter()`
        (needs tqdm): a bar for the forward solve and one for each backward solve.

    **Returns:** a [`jadjoint.Solution`][].

    Gradients flow to `p`, to `x0` (without `g`) and to the arrays that `f`, `h`, `g`
    close over. Wrap the function that calls `solve` in `jax.jit`.
    """
    p, x0 = parameter_arrays(p), state_arrays(x0)
    t0, t1, ts, dt0 = check_inputs(problem, p, t0, t1, x0, saveat, dt0, adjoint, solver)
    check_max_step(dtmax)
    check_progress_meter(progress_meter)
    if throw:
        x0 = check_finite_inputs(p, x0)
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
    if problem.is_dae:
        dae = IndexOneDAE.of(problem, x0)
        check_dae_outputs(dae, x0, p, t0)
        (y0, z0), initialised = consistent_initialisation(
            dae, x0, p, t0, newton_tol, throw
        )
        state_space = StateSpaceForm(dae, lax.stop_gradient(z0), newton_tol)
        reduced = Problem.explicit(
            state_space.vector_field, f=None if dae.f is None else state_space.cost
        )
        cost, ys, stats, integrated, (t_last, y_last) = _solve_ode_problem(
            reduced, p, t0, t1, y0, ts, dt0, options, adjoint
        )
        xs, saved = state_space.states(ys, ts, p, throw)
        x0 = dae.join(y0, z0)
        if not throw:
            outcome_at_last = state_space.outcome_at(y_last, p, t_last)
            integrated = _diagnosed(integrated, (cost, ys), outcome_at_last)
        result = first_failure(initialised, integrated, saved)
    else:
        initialised = RESULTS.successful
        if problem.g is not None:
            x0, initialised = consistent_initial_state(
                problem.g, x0, p, newton_tol, throw
            )
        cost, xs, stats, integrated, (t_last, x_last) = _solve_ode_problem(
            problem, p, t0, t1, x0, ts, dt0, options, adjoint
        )
        if not throw:
            solves = ImplicitSolves.prepare(problem, x0, newton_tol, throw)
            outcome_at_last = solves.outcome_at(problem, x_last, p, t_last)
            integrated = _diagnosed(integrated, (cost, xs), outcome_at_last)
        result = first_failure(initialised, integrated)
    if not throw:
        cost, xs, x0 = _nan_if(result != RESULTS.successful, (cost, xs, x0))
    return Solution(cost=cost, ts=ts, xs=xs, x0=x0, stats=stats, result=result)
