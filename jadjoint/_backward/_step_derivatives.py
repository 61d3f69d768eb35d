"""The adjoint carried backwards across the forward steps of an explicit Runge–Kutta
solve by the steps' own derivatives, where saved states are differentiated
(`docs/how-it-works.md`).

The observations' injection (`_injection.py`) needs, on each forward step `k` that
holds save times, one linearisation of the step's dense information `D_k = D(x_k, p)`
(`_forward.step_dense_info`, the step size held fixed; the controller is never
differentiated). That linearisation is transposed for

- `(w(t_{k+1}), −c̄)` on `(x_{k+1}, C_{k+1})`, the step's end and its cost integral,
  together with `−D̄_k`, the step's observations (the VJP is linear): `w(t_k)` with
  the observations' jump `−x̄_k` in it, and from the parameters the step's increment
  of `q`;
- the same `(w, −c̄)` weighted by the embedded pair's `b_error` on the stages `k_j`:
  the embedded difference `e = Σ_j b_error_j k_j` is linear in the stages, so this
  is `(∂e/∂x_k)ᵀ (w, −c̄)`, the adjoint's own error estimate on the step. Only its
  `x` part is used, so it is a transposition of its own, whose parameter part XLA
  drops (batched with the first, it computed a parameter cotangent per batch
  member: a normalising flow's gradient took twice as long).

So a step costs about 1.5 transpositions of one linearisation, where RCA's costs
one, and the continuous adjoint's step about one VJP per stage on top of the
injection's. Steps without observations are carried the same way, so that the loop
takes one forward step per iteration, as `vmap` wants.

The step is kept when the error estimate, divided by `STEP_DERIVATIVE_SLACK`, passes
diffrax's `PIDController` test on `w` (in the reversed time `τ = −t`). Otherwise, on
that step only, the continuous adjoint is integrated across it under its own error
control (`_adjoint_steps.py`), from the step size the controller proposes, and the
observations' jump (their transposition alone) applied at `t_k`. On a forward step
far outside the adjoint's stability region (a fast mode at its equilibrium, which the
forward solution does not move in), the discrete derivative is unstable, its error
estimate is of the size of the unstable stability function, and the step falls back.
"""

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._differentiation_mode import loop_kind
from .._errors import raise_or_nan
from .._forward import step_dense_info
from .._numerics import dense_output
from .._options import Options
from ._adjoint_steps import AdjointSteps
from ._injection import ObservedSteps
from ._system import AdjointSystem

# A forward step carries `w` by its own derivative when the adjoint's embedded error
# estimate through it is within this factor of the tolerance. An unstable step's
# estimate is about `1/rtol` times the tolerance and falls back; at the tolerance
# itself most steps of smooth problems fell back, and alternating between the two
# adjoints lost accuracy. The measurements behind the factor are in
# `docs/choosing.md`.
STEP_DERIVATIVE_SLACK = 100.0


def only_where(run, compute):
    """`compute()` where `run`, zeros elsewhere: a loop of at most one iteration,
    so that under `vmap` it runs only when some member needs it (`lax.cond` would
    run it for all, always)."""
    zeros = jtu.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(compute))
    return eqxi.while_loop(
        lambda carry: carry[0],
        lambda carry: (jnp.asarray(False), compute()),
        (jnp.asarray(run), zeros),
        max_steps=1,
        kind=loop_kind(),
    )[1]


class BackwardSteps(eqx.Module):
    """What the backward pass took: `accepted` steps (a forward step carried by its
    derivative counts one, one that fell back its continuous adjoint's accepted
    steps) and the forward steps that `fell_back`."""

    accepted: Array
    fell_back: Array


def carry_by_step_derivatives(
    system: AdjointSystem,
    dense: diffrax.DenseInterpolation,
    observed: ObservedSteps,
    *,
    w: PyTree,
    q: PyTree,
    options: Options,
    quadrature_nodes: int | None = None,
    recompute_stages: bool = False,
) -> tuple[PyTree, PyTree, BackwardSteps]:
    """`(w(t0), q(t0))` from `(w, q)` at the end of the forward solve whose dense
    output is `dense` (an explicit Runge–Kutta solve of `options.solver`), the
    observations of `observed` injected, and the steps taken. A failed solve raises
    (`options.throw`) or gives NaN. `quadrature_nodes` applies to the steps that
    fall back (as `AdjointSteps`); `recompute_stages` to the steps' linearisation
    (`_forward.step_dense_info`)."""
    steps = AdjointSteps(system, options, w, quadrature_nodes)
    last = dense.ts_size - 2
    cost_cotangent = jnp.zeros((), steps.dtype) if system.cbar is None else -system.cbar

    def derivative(k, w, infobar):
        """For forward step `k`: `(x̄, p̄)` of the step's map for the incoming
        `(w, −c̄)` and the step's observations `infobar` (negated) together, the
        adjoint's error estimate, the map's VJP and the observations' cotangent.
        One linearisation of the map, transposed for both."""
        info, t0, t1 = dense_output.step(dense, k)
        x, cost = info["y0"]

        def dense_info(x, diff):
            return step_dense_info(
                system.bound(diff),
                x,
                cost,
                t0=t0,
                t1=t1,
                options=options,
                recompute_stages=recompute_stages,
            )

        _, vjp = jax.vjp(dense_info, x, system.diff)
        zero = jtu.tree_map(jnp.zeros_like, info)
        incoming = (w, cost_cotangent.astype(cost.dtype))

        def error_weighted(v):
            """`v` on each stage, weighted by the error estimate's `b_error`."""
            return steps.b_error.astype(v.dtype).reshape((-1,) + (1,) * v.ndim) * v

        observations = jtu.tree_map(jnp.negative, infobar)
        carried = dict(
            observations, y1=jtu.tree_map(jnp.add, observations["y1"], incoming)
        )
        error_row = dict(zero, k=jtu.tree_map(error_weighted, incoming))
        # The error estimate's parameter part is not needed: a VJP of its own, whose
        # parameter cotangent is dropped.
        return vjp(carried), vjp(error_row)[0], vjp, observations

    def across_step(k, w, q, dt, pid, active):
        """The continuous adjoint from `t_{k+1}` to `t_k` under its own error
        control, the first step `dt` long (where not `active`, nothing: a loop of no
        iterations, also under `vmap`)."""
        polynomial = dense_output.polynomial(dense, k)
        t_k = dense.ts[k]

        def body(state):
            t, w, q, dt, pid, accepted = state
            t_next = jnp.where(t - dt <= t_k, t_k, t - dt)
            first = steps.rates(polynomial, t, w)
            w_next, error, increment, _ = steps.attempt(
                polynomial, t, w, first, t_next - t
            )
            keep, dt, pid = steps.control(t, t_next, w, w_next, error, pid)
            t = jnp.where(keep, t_next, t)
            w = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), w_next, w)
            q = jtu.tree_map(lambda a, d: jnp.where(keep, a + d, a), q, increment)
            return t, w, q, dt, pid, accepted + keep

        start = jnp.where(active, dense.ts[k + 1], t_k)
        t, w, q, _, pid, accepted = eqxi.while_loop(
            lambda state: state[0] > t_k,
            body,
            (start, w, q, dt, pid, jnp.zeros((), jnp.int32)),
            max_steps=options.max_steps,
            kind=loop_kind(),
        )
        return w, q, pid, accepted, t > t_k

    def body(state):
        k, slot, w, q, pid, taken, failed = state
        # Under `vmap` a member that has finished (`k = −1`) runs on, its updates
        # discarded: it reads the first step, not a row past the end.
        k = jnp.maximum(k, 0)
        holds = (slot >= 0) & (observed.steps[jnp.maximum(slot, 0)] == k)
        infobar = jtu.tree_map(
            lambda a: jnp.where(holds, a[jnp.maximum(slot, 0)], 0), observed.infobar
        )
        (w_step, q_step), error, vjp, observations = derivative(k, w, infobar)
        t_k, t_after = dense.ts[k], dense.ts[k + 1]
        keep = steps.control(
            t_after, t_k, w, w_step, error, pid, STEP_DERIVATIVE_SLACK
        )[0]
        # Where the step falls back, its first part is proposed from the unscaled
        # estimate.
        _, dt, pid = steps.control(t_after, t_k, w, w_step, error, pid)
        w_across, q_across, pid, accepted, stuck = across_step(k, w, q, dt, pid, ~keep)
        jump, q_jump = only_where(~keep & holds, lambda: vjp(observations))
        w = jtu.tree_map(
            lambda a, b, j: jnp.where(keep, a, b + j), w_step, w_across, jump
        )
        q = jtu.tree_map(
            lambda q, d, b, j: jnp.where(keep, q + d, b + j),
            q,
            q_step,
            q_across,
            q_jump,
        )
        taken = BackwardSteps(
            taken.accepted + jnp.where(keep, 1, accepted), taken.fell_back + ~keep
        )
        return (
            k - 1,
            jnp.where(holds, slot - 1, slot),
            w,
            q,
            pid,
            taken,
            failed | stuck,
        )

    # The controller's state starts from the last forward step.
    dt = dense.ts[last + 1] - dense.ts[jnp.maximum(last, 0)]
    pid = steps.init_control(dense.ts[0], dense.ts[last + 1], w, dt)
    zero = jnp.zeros((), jnp.int32)
    state = (
        last,
        observed.count - 1,
        w,
        q,
        pid,
        BackwardSteps(zero, zero),
        jnp.asarray(False),
    )
    k, _, w, q, _, taken, failed = eqxi.while_loop(
        lambda state: state[0] >= 0,
        body,
        state,
        max_steps=options.max_steps,
        kind=loop_kind(),
    )
    result = diffrax.RESULTS.where(
        failed | (k >= 0),
        diffrax.RESULTS.max_steps_reached,
        diffrax.RESULTS.successful,
    )
    w, q = raise_or_nan(result, (w, q), options.throw)
    return w, q, taken
