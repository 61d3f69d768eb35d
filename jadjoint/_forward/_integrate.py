"""The forward solve on diffrax: `g(x0, p) = 0` for `x0`, then `ẋ` from `h = 0`
integrated together with the running cost `c(t) = ∫_{t0}^{t} f dt`."""

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jaxtyping import Array, PyTree

from .._differentiation_mode import inner_adjoint
from .._errors import outcome
from .._numerics import Stages
from .._options import Options
from .._problem import BoundProblem
from .._results import RESULTS, first_failure
from .._solvers import applied

STATISTICS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


class Forward(eqx.Module):
    """What a forward solve gives.

    - `cost`: `∫_{t0}^{T} f dt`;
    - `xs`: the states at the requested times (a leading axis of their number);
    - `t_last`, `x_last`: where the solve stopped, `T` unless it failed;
    - `stats`: diffrax's step counts (`STATISTICS`);
    - `result`: the forward pass's outcome so far (a [`jadjoint.RESULTS`][]):
        diffrax's; after `reported`, with what came before and a non-finite output;
    - `dense`: the dense interpolation (`diffrax.DenseInterpolation`), when asked
        for; else `None`. Solved in segments (`_restarts.py`), the last segment's;
    - `restarts`: then the solver state at each segment's start; else `None`;
    - `event_mask`: with an event, which of its conditions ended the solve (as
        `diffrax.Solution.event_mask`); else `None`."""

    cost: Array
    xs: PyTree
    t_last: Array
    x_last: PyTree
    stats: dict
    result: RESULTS
    dense: diffrax.DenseInterpolation | None
    restarts: PyTree = None
    event_mask: PyTree = None

    def reported(self, prior: RESULTS) -> "Forward":
        """This solve with `result` the first failure of `prior` (what came before
        the integration), the integration and a non-finite cost or saved state."""
        nonfinite = outcome((self.cost, self.xs), False, RESULTS.nonfinite_output)
        result = first_failure(prior, self.result, nonfinite)
        return eqx.tree_at(lambda forward: forward.result, self, result)

    def outputs(self) -> tuple:
        """`(cost, xs, stats, result, (t_last, x_last))`."""
        return self.cost, self.xs, self.stats, self.result, (self.t_last, self.x_last)


def augmented_rates(t, y, bound: BoundProblem):
    """`(ẋ, ċ)` with `ċ = f(x, p, t)`: the cost integral rides along with the state."""
    x, _ = y
    return bound.xdot(x, t), bound.cost_rate(x, t)


def forward_preconditioning(preconditioner, t, y, bound: BoundProblem, c):
    """A BDF's preconditioner in the forward solves (`BDF.with_tolerances`), on
    flat `(x, cost)`: `P = preconditioner(x, p, t, c)` on `x`, the identity on the
    cost (no rate depends on it)."""
    x, _ = y
    mv = applied(preconditioner(x, bound.p, t, c), x)
    size = jax.flatten_util.ravel_pytree(x)[0].size
    return lambda v: jnp.concatenate([mv(v[:size]), v[size:]])


def cost_dtype(x: PyTree):
    return jnp.result_type(*jtu.tree_leaves(x))


def integrate(
    bound: BoundProblem,
    x0: PyTree,
    *,
    t0,
    t1,
    ts,
    dt0,
    options: Options,
    dense: bool,
    adjoint: diffrax.AbstractAdjoint | None = None,
    event: diffrax.Event | None = None,
) -> Forward:
    """Solve the ODE `bound.problem` from `x0` at `t0` to `t1`, keeping the states at
    `ts` (none if `None`) and the dense interpolation when `dense`. Newton for an
    implicit `h` starts from `ẋ = 0`. `adjoint`: how diffrax differentiates the
    solve (default: as the differentiation mode allows; `_differentiation_mode.py`).
    `event`: a `diffrax.Event` (its conditions see the augmented state `(x, cost)`)
    that ends the solve where it occurs, which is then `t_last` and
    `successful`."""
    y0 = (x0, jnp.zeros((), cost_dtype(x0)))
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(augmented_rates),
        options.configured_solver(approximate_inverse=forward_preconditioning),
        t0,
        t1,
        dt0,
        y0,
        args=bound,
        saveat=diffrax.SaveAt(ts=ts, t1=True, dense=dense),
        stepsize_controller=options.controller(),
        max_steps=options.max_steps,
        adjoint=inner_adjoint() if adjoint is None else adjoint,
        throw=False,
        progress_meter=options.progress_meter,
        event=event,
    )
    states, costs = solution.ys
    result = diffrax.RESULTS.where(
        solution.result == diffrax.RESULTS.event_occurred,
        diffrax.RESULTS.successful,
        solution.result,
    )
    return Forward(
        cost=costs[-1],
        xs=jtu.tree_map(lambda a: a[:-1], states),
        # diffrax saves its final state "at t1", also when the solve failed.
        t_last=solution.ts[-1],
        x_last=jtu.tree_map(lambda a: a[-1], states),
        stats={key: solution.stats[key] for key in STATISTICS},
        result=RESULTS.promote(result),
        dense=solution.interpolation if dense else None,
        event_mask=solution.event_mask,
    )


def step_dense_info(
    bound: BoundProblem,
    x: PyTree,
    cost,
    *,
    t0,
    t1,
    options: Options,
    recompute_stages: bool = False,
) -> dict:
    """The dense information `dict(y0, y1, k)` of the forward step `[t0, t1]` of an
    explicit Runge–Kutta solver from `(x, cost)`, as a differentiable function of `x`
    and of `bound`'s parameters and problem leaves; the step size held fixed.

    The stages are computed from the solver's public Butcher tableau (`k_j = h
    f(t0 + c_j h, y0 + Σ_l a_jl k_l)`, `y1 = y0 + Σ_j b_j k_j`), which reproduces
    `solver.step`'s dense information to rounding. `solver.step` itself loops over
    the stages with equinox's checkpointed loop, which is reverse-differentiable only
    once, and this function is differentiated once in a gradient and twice in a
    gradient of the gradient. The stages are a `lax.scan`, whose transpose is a
    scan: with the stages written out, XLA fused each stage's transpose with the
    stages before it and recomputed them, and the step VJP of a vector field with
    slices (a diffusion stencil) cost three times as much.

    `recompute_stages`: each stage under `jax.checkpoint`, keeping its matrix
    products' results only (`jax.checkpoint_policies.dots_saveable`): the
    step's transposition evaluates each stage's vector field again for the other
    intermediates, instead of reading them back from stored buffers."""
    stages = Stages(options.solver.tableau)
    y0 = (x, cost)
    h = t1 - t0
    c = jnp.asarray(stages.c, jnp.result_type(t0, h))

    def combine(weights, ks):
        return jtu.tree_map(
            lambda y, K: y + jnp.tensordot(jnp.asarray(weights, K.dtype), K, axes=1),
            y0,
            ks,
        )

    def stage(ks, j):
        rates = augmented_rates(
            t0 + c[j] * h, combine(jnp.asarray(stages.a)[j], ks), bound
        )
        ks = jtu.tree_map(lambda K, r: K.at[j].set((h * r).astype(K.dtype)), ks, rates)
        return ks, None

    ks = jtu.tree_map(
        lambda y: jnp.zeros((stages.count,) + jnp.shape(y), jnp.result_type(y)), y0
    )
    if recompute_stages:
        stage = jax.checkpoint(stage, policy=jax.checkpoint_policies.dots_saveable)
    ks, _ = jax.lax.scan(stage, ks, jnp.arange(stages.count))
    return dict(y0=y0, y1=combine(stages.b, ks), k=ks)


def consistent_initial_state(
    g, x0_guess: PyTree, p: PyTree, tol: float
) -> tuple[PyTree, RESULTS]:
    """`(x0, result)` with `g(x0, p) = 0`, by Newton from `x0_guess`.

    Differentiated by optimistix's implicit-function rule, which is the adjoint's
    (`docs/how-it-works.md`): with `w(t0)` the adjoint at `t0`, `g_{x0}ᵀ μ = w(t0)`
    is solved (by lineax) and `μᵀ g_p` added to the gradient of `p`. If Newton
    fails, `result` is `initialisation_failed` (and `x0` Newton's last iterate)."""
    solution = optx.root_find(
        lambda x, p: g(x, p),
        optx.Newton(rtol=tol, atol=tol),
        x0_guess,
        args=p,
        throw=False,
    )
    failed = solution.result != optx.RESULTS.successful
    return solution.value, outcome(
        solution.value, failed, RESULTS.initialisation_failed
    )
