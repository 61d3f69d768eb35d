"""The save-time cotangents injected through the forward step's interpolant
(`docs/how-it-works.md`, "The jumps"), so that the backward pass jumps at forward
step starts only.

A saved state is the interpolant of the forward step `k = [t_k, t_{k+1}]` that holds
its time, `x(t_i) = I(D_k; t_i)`, and the step's dense information `D_k = D(x_k, p)`
is a differentiable function of the step's start (`_forward.step_dense_info`; the
step size held fixed). So

    D̄_k = Σ_{t_i in step k} (∂I/∂D)ᵀ x̄_i           (interpolant VJPs, summed per step)
    (x̄_k, p̄_k) = (∂D/∂(x_k, p))ᵀ D̄_k              (a step VJP per step with data)
    w(t_k⁻) = w(t_k⁺) − x̄_k,   dJ/dp += p̄_k

None of it depends on `w`: it is computed for every step before the backward sweep,
which then integrates the continuous adjoint under its own error control and jumps
only at the `t_k`. A continuous adjoint that ended a step at every save time paid one
s-stage step per observation instead. The within-step derivative is the forward
step's discrete one, consistent to the solver's order.
"""

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._forward import step_dense_info
from .._numerics import dense_output, over_batches
from .._options import Options
from ._jumps import StepJumps, rows_where
from ._system import AdjointSystem

# The step VJPs are taken this many at a time, padded: under `vmap` every member runs
# as many batches as the member with the most steps holding data. On the training
# step of the benchmarks (4–5 such steps per member) 4 was 15 % faster overall than
# 8 and no slower than 2; on the spiral (18 steps) 4 and 8 were alike.
STEPS_PER_BATCH = 4


def injects_through(solver: diffrax.AbstractSolver) -> bool:
    """Whether the observations are injected: for explicit Runge–Kutta solvers.
    Elsewhere the jumps stay at the save times: an implicit solver's interpolant is
    built from its stage derivatives `h f(stage)`, so its derivative with respect to
    `x_k` carries `h f_x`, huge on the stiff modes that the implicit step damps (on
    Robertson with Kvaerno5 the injected jump was 2·10⁶ against save cotangents of
    10⁴, and the backward solve then ran out of steps resolving the transient).

    The times may be differentiated: their gradients (`_system.time_gradients`) need
    `w(t0)`, `ẋ` and the cotangents only, and the second derivatives through the
    injection agree with finite differences of the gradient (`tests/test_odeint.py`
    differentiates jax's pendulum to second order in its times)."""
    return isinstance(solver, diffrax.AbstractERK)


def _per_step(dense: diffrax.DenseInterpolation, ts: Array, xbar: PyTree):
    """For each step holding save times (a slot each, in order; `count` of the
    `len(ts)` slots used): its index and `D̄_k`."""
    steps = dense.ts_size - 1
    last = jnp.maximum(steps - 1, 0)
    step_of = jnp.clip(jnp.searchsorted(dense.ts, ts, side="right") - 1, 0, last)

    def info_cotangent(k, t, cotangent):
        info, t0, t1 = dense_output.step(dense, k)

        def saved_state(info):
            return dense.interpolation_cls(t0=t0, t1=t1, **info).evaluate(t)[0]

        return jax.vjp(saved_state, info)[1](cotangent)[0]

    per_save = jax.vmap(info_cotangent)(step_of, ts, xbar)
    first_in_step = jnp.concatenate([jnp.ones(1, bool), step_of[1:] != step_of[:-1]])
    slot = jnp.cumsum(first_in_step) - 1
    n = ts.shape[0]
    slot_step = jnp.zeros(n, step_of.dtype).at[slot].set(step_of)
    per_slot = jtu.tree_map(
        lambda c: jax.ops.segment_sum(c, slot, num_segments=n), per_save
    )
    return slot_step, per_slot, slot[-1] + 1


def injected_observations(
    system: AdjointSystem,
    dense: diffrax.DenseInterpolation,
    ts: Array,
    xbar: PyTree | None,
    options: Options,
) -> tuple[StepJumps, PyTree | None]:
    """The jumps of `w` at the starts of the forward steps that hold save times,
    and the direct contribution `Σ p̄_k` to the gradient of `system.diff`;
    no jumps and `None` when the saved states are not differentiated."""
    if xbar is None:
        # One unused slot, so that the slot lookups stay in bounds.
        slots = jnp.zeros(1, jnp.int32)
        return StepJumps(slots, None, jnp.zeros((), jnp.int32)), None
    slot_step, per_slot, count = _per_step(dense, ts, xbar)

    def start(k):
        # An explicit Runge–Kutta step's dense information holds its start: read,
        # not evaluated from the step's polynomial.
        return jtu.tree_map(lambda a: a[k], dense.infos["y0"])

    def step_vjps(ks, cotangents):
        """`(x̄_k, Σ p̄_k)` for the steps `ks`: one VJP of the batched step map, so
        that the parameter cotangents are summed inside it rather than kept per
        step (a neural network's weights, once per step)."""
        starts = jax.vmap(start)(ks)

        def dense_infos(xs, diff):
            bound = system.bound(diff)

            def one(k, x, cost):
                _, t0, t1 = dense_output.step(dense, k)
                return step_dense_info(bound, x, cost, t0=t0, t1=t1, options=options)

            return jax.vmap(one)(ks, xs, starts[1])

        return jax.vjp(dense_infos, starts[0], system.diff)[1](cotangents)

    def batch(slots, real, carry):
        jumps, direct = carry
        slots_in = jnp.where(real, slots, 0)
        cotangents = rows_where(real, jtu.tree_map(lambda c: c[slots_in], per_slot))
        x_bars, diff_bar = step_vjps(slot_step[slots_in], cotangents)
        jumps = jtu.tree_map(
            lambda acc, v: acc.at[slots].set(v, mode="drop"),
            jumps,
            rows_where(real, x_bars),
        )
        direct = jtu.tree_map(jnp.add, direct, diff_bar)
        return jumps, direct

    zero = (
        jtu.tree_map(jnp.zeros_like, xbar),
        jtu.tree_map(jnp.zeros_like, system.diff),
    )
    n = ts.shape[0]
    jumps, direct = over_batches(batch, zero, count, n, min(STEPS_PER_BATCH, n))
    return StepJumps(slot_step, jumps, count), direct
