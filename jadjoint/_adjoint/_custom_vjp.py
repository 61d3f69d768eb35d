"""The `custom_vjp` of an ODE solve whose reverse rule is the continuous adjoint.

Its inputs are `(p, x0, problem, (t0, t1, ts))` with `problem` closure-converted,
and the result of what came before the integration (`prior`); its outputs the cost,
the saved states, the statistics, the forward pass's result and where the solve
stopped. Neither rule raises for a failed forward pass: the result reports it
(`jadjoint/_results.py`), and the reverse rule, whose gradient would come from it,
raises it. The forward rule binds the problem to its parameters and prepares its solves
once (`BoundProblem`), solves through the adjoint method's storage and keeps the
bound problem in the residuals; the reverse rule builds the adjoint system of
`jadjoint/_backward/_system.py` on it and sweeps the method's segments backwards
(`jadjoint/_backward/_sweep.py`).

Inside a `custom_vjp` JAX may pass a primal that was a Python number as one (a
`float` subclass), which equinox's filtered transformations take for a static value:
each rule converts its inputs to arrays again.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._backward import AdjointSystem, backward_sweep, time_gradients
from .._errors import check_finite_gradients
from .._forward import integrate
from .._inputs import parameter_arrays
from .._problem import BoundProblem
from .._results import RESULTS


@eqx.filter_custom_vjp
def adjoint_solve(inputs, prior, dt0, options, method):
    """`(cost, xs, stats, result, (t_last, x_last))` of the ODE solve, differentiable
    by `method`'s continuous adjoint; `result` the first failure of `prior` and the
    solve's."""
    p, x0, problem, (t0, t1, ts) = parameter_arrays(inputs)
    forward = integrate(
        BoundProblem.prepare(problem, p, x0, options),
        x0,
        t0=t0,
        t1=t1,
        ts=ts,
        dt0=dt0,
        options=options,
        dense=False,
    )
    return forward.reported(prior).outputs()


@adjoint_solve.def_fwd
def _adjoint_solve_fwd(perturbed, inputs, prior, dt0, options, method):
    del perturbed
    p, x0, problem, (t0, t1, ts) = parameter_arrays(inputs)
    bound = BoundProblem.prepare(problem, p, x0, options)
    forward = method.storage().forward(
        bound, x0, t0=t0, t1=t1, ts=ts, dt0=dt0, options=options
    )
    forward = forward.reported(prior)
    return forward.outputs(), (forward, bound)


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


@adjoint_solve.def_bwd
def _adjoint_solve_bwd(
    residuals, cotangents, perturbed, inputs, prior, dt0, options, method
):
    forward, bound = residuals
    cbar, xbar, _, _, _ = cotangents
    _, x0, _, (t0, t1, ts) = parameter_arrays(inputs)
    p_perturbed, x0_perturbed, problem_perturbed, times_perturbed = perturbed
    if bound.problem.f is None:
        cbar = None
    storage = method.storage()
    xs = forward.xs
    xbar = _materialise(xbar, xs)
    system = AdjointSystem.partitioned(bound, p_perturbed, problem_perturbed, cbar)
    steps = jnp.maximum(forward.stats["num_accepted_steps"], 1)
    dt_guess = (t1 - t0) / steps
    failed = forward.result != RESULTS.successful
    if options.throw:
        # The forward pass's failure, raised here: under `jax.grad` its outputs,
        # where `solve` raises it, are not computed.
        dt_guess = forward.result.error_if(dt_guess, failed)
    integrator = method.backward_integrator(t0=t0, ts=ts, xbar=xbar, options=options)
    w0, q0 = backward_sweep(
        storage,
        integrator,
        system=system,
        forward=forward,
        segments=storage.segments(forward, t0=t0, t1=t1, ts=ts, x0=x0),
        dt_guess=dt_guess,
        options=options,
    )
    if options.throw:
        w0, q0 = check_finite_gradients((w0, q0))
    else:
        w0, q0 = jtu.tree_map(lambda a: jnp.where(failed, jnp.nan, a), (w0, q0))
    q0 = jtu.tree_map(jnp.negative, q0)
    p_grad, problem_grad = q0.p, q0.problem
    x0_grad = jtu.tree_map(lambda w, on: -w if on else None, w0, x0_perturbed)
    times_grad = time_gradients(
        bound,
        times=(t0, t1, ts),
        perturbed=times_perturbed,
        x0=x0,
        x_final=forward.x_last,
        xs=xs,
        w0=w0,
        xbar=xbar,
        cbar=cbar,
    )
    return p_grad, x0_grad, problem_grad, times_grad
