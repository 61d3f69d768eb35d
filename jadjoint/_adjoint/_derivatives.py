"""The derivatives of an ODE solve: forward sensitivities in forward mode, the
continuous adjoint in reverse mode.

The solve is a `custom_jvp` whose tangent is the forward sensitivities
(`jadjoint/_forward/_sensitivities.py`), and the map from the inputs' tangents to the
outputs' is a primitive (`solve_tangents_p`) whose transpose is the continuous
adjoint. So `jax.jvp`, `jax.jacfwd` and `jax.linearize` integrate the sensitivities
with the state, while `jax.grad` and `jax.vjp` (a linearisation, then its transpose)
never evaluate them: they transpose the primitive, which sweeps the adjoint
backwards. A `jax.custom_vjp` would give the second and refuse the first;
`jax.custom_derivatives.linear_call` allows neither `vmap` nor a derivative of its
residuals, which a Hessian-vector product differentiates.

The inputs are `(p, x0, problem, (t0, t1, ts))` with `problem` closure-converted,
and the result of what came before the integration (`prior`); the outputs the cost,
the saved states, the statistics, the forward pass's result and where the solve
stopped (the last three carry no tangent). Nothing raises for a failed forward pass:
the result reports it (`jadjoint/_results.py`), and the adjoint, whose gradient would
come from it, raises it.

The rule solves through the adjoint method's storage, which the transpose sweeps
backwards. It does so under `jax.jvp` too: it cannot tell a linearisation from a
`jvp` (under `jax.jit` JAX traces the rule once for both). Evaluated, the map
integrates the state again with all the tangents (one solve for a `jax.jacfwd`), so
forward mode costs one solve more than the sensitivities alone
(`benchmarks/results/forward_cpu.md`).

Inside a transformation JAX may pass a primal that was a Python number as one (a
`float` subclass), which equinox's filtered transformations take for a static value:
each rule converts its inputs to arrays again.
"""

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.interpreters import ad, batching
from jaxtyping import PyTree

from .._backward import AdjointSystem, backward_sweep, time_gradients
from .._differentiation_mode import outside_linearisation
from .._errors import check_finite_gradients
from .._forward import forward_sensitivities, integrate
from .._inputs import parameter_arrays
from .._problem import BoundProblem
from .._results import RESULTS


@eqx.filter_custom_jvp
def adjoint_solve(inputs, prior, dt0, options, method):
    """`(cost, xs, stats, result, (t_last, x_last))` of the ODE solve, differentiable
    by forward sensitivities and by `method`'s continuous adjoint; `result` the first
    failure of `prior` and the solve's."""
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


def _output_tangents(outputs: tuple, cost_xs_dot: tuple) -> tuple:
    """The tangents of all outputs: `(Ċ, ẋs)`, and none (`None`) for the rest."""
    _, _, *rest = outputs
    return (*cost_xs_dot, *jtu.tree_map(lambda _: None, rest))


@adjoint_solve.def_jvp
def _adjoint_solve_jvp(primals, tangents, **kwargs):
    del kwargs
    inputs, prior, dt0, options, method = primals
    inputs, prior, dt0 = parameter_arrays((inputs, prior, dt0))
    inputs_dot = tangents[0]
    p, x0, problem, (t0, t1, ts) = inputs
    with outside_linearisation():
        bound = BoundProblem.prepare(problem, p, x0, options)
        forward = method.storage().forward(
            bound, x0, t0=t0, t1=t1, ts=ts, dt0=dt0, options=options
        )
        forward = forward.reported(prior)
    cost_xs_dot = eqxi.filter_primitive_bind(
        solve_tangents_p, inputs_dot, (forward, bound, inputs, dt0, options, method)
    )
    outputs = forward.outputs()
    return outputs, _output_tangents(outputs, cost_xs_dot)


def _tangents(inputs_dot, residuals):
    """`(Ċ, ẋs)` along `inputs_dot` by the forward sensitivities."""
    _, bound, inputs, dt0, options, _ = residuals
    _, cost_xs_dot = forward_sensitivities(
        bound, inputs, inputs_dot, dt0=dt0, options=options
    )
    return cost_xs_dot


@eqxi.filter_primitive_def
def _tangents_abstract(inputs_dot, residuals):
    """Shaped as the cost and the saved states, which the residuals hold (read off
    them: tracing the sensitivities for their shapes would add a solve's trace to
    every gradient's compilation)."""
    del inputs_dot
    forward = residuals[0]
    return jtu.tree_map(
        lambda a: jax.core.ShapedArray(a.shape, a.dtype), (forward.cost, forward.xs)
    )


@eqxi.filter_primitive_jvp
def _tangents_jvp(primals, tangents):
    """Differentiated again forwards (`jax.jacfwd(jax.jacfwd(F))`): the
    sensitivities' own tangent."""
    return eqx.filter_jvp(_tangents, primals, tangents)


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


def _tangents_transpose(cotangents, *dynamic, **params):
    """JAX may hand a scalar residual back as a Python number (a `float`
    subclass), which equinox's filtered rule would count as static: each is an
    array again, as it was bound."""
    dynamic = [
        x if ad.is_undefined_primal(x) or eqx.is_array(x) else jnp.asarray(x)
        for x in dynamic
    ]
    return _adjoint_of_tangents(cotangents, *dynamic, **params)


@eqxi.filter_primitive_transpose
def _adjoint_of_tangents(inputs, cotangents):
    """The continuous adjoint: the transpose of the sensitivities' map."""
    inputs_dot, residuals = inputs
    forward, bound, inputs, _, options, method = residuals
    cbar, xbar = cotangents
    _, x0, _, (t0, t1, ts) = inputs
    perturbed = jtu.tree_map(
        lambda _, t: isinstance(t, ad.UndefinedPrimal),
        inputs,
        inputs_dot,
    )
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
    inputs_bar = jtu.tree_map(
        lambda on, bar: bar if on else None,
        perturbed,
        (p_grad, x0_grad, problem_grad, times_grad),
    )
    return inputs_bar, jtu.tree_map(lambda _: None, residuals)


solve_tangents_p = eqxi.create_vprim(
    "jadjoint_solve_tangents",
    eqxi.filter_primitive_def(_tangents),
    _tangents_abstract,
    _tangents_jvp,
    _tangents_transpose,
)
_batch_each_member = batching.fancy_primitive_batchers[solve_tangents_p]


def _batch_rule(axis_data, inputs, batch_axes, **params):
    """equinox's rule (the rules above under `vmap`), with every tangent batched:
    the transpose of a batched call gives each member's cotangent, which for a
    tangent shared by the members (a `p` outside the `vmap`) must be summed, and
    the broadcast's transpose is that sum. The tangents are the first inputs."""
    inputs, batch_axes = list(inputs), list(batch_axes)
    if any(axis is not None for axis in batch_axes):
        tangents = jtu.treedef_children(params["treedef"])[0].num_leaves
        for i in range(tangents):
            if batch_axes[i] is None:
                shape = (axis_data.size, *jnp.shape(inputs[i]))
                inputs[i], batch_axes[i] = jnp.broadcast_to(inputs[i], shape), 0
    return _batch_each_member(axis_data, tuple(inputs), tuple(batch_axes), **params)


batching.fancy_primitive_batchers[solve_tangents_p] = _batch_rule
