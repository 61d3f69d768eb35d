"""The save-time cotangents injected through the forward step's interpolant
(`docs/how-it-works.md`, "The jumps"), so that the backward pass jumps at forward
step starts only.

A saved state is the interpolant of the forward step `k = [t_k, t_{k+1}]` that holds
its time, `x(t_i) = I(D_k; t_i)`, and the step's dense information `D_k = D(x_k, p)`
is a differentiable function of the step's start (`_forward.step_dense_info`; the
step size held fixed). So

    D̄_k = Σ_{t_i in step k} (∂I/∂D)ᵀ x̄_i           (interpolant VJPs, summed per step)
    (x̄_k, p̄_k) = (∂D/∂(x_k, p))ᵀ D̄_k              (the step's VJP)
    w(t_k⁻) = w(t_k⁺) − x̄_k,   dJ/dp += p̄_k

The `D̄_k` depend on nothing but the forward solution and are computed for every step
before the backward loop (`observed_steps`), which folds them into the VJP of each
step's map that carries `w` across it (`_step_derivatives.py`). A continuous adjoint
that ended a step at every save time paid one s-stage step per observation instead. The
within-step derivative is the forward step's discrete one, consistent to the
solver's order.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._numerics import dense_output


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


class ObservedSteps(eqx.Module):
    """The forward steps that hold save times, in increasing order: slot `i < count`
    holds step `steps[i]` and the cotangent `D̄` of its dense information (rows of
    `infobar`, the structure of `dense.infos`; `None` when the saved states are not
    differentiated)."""

    steps: Array
    infobar: PyTree | None
    count: Array


def observed_steps(
    dense: diffrax.DenseInterpolation, ts: Array, xbar: PyTree | None
) -> ObservedSteps:
    """The forward steps of `dense` that hold the save times `ts` (sorted) and the
    cotangents `D̄_k` of their dense information from the saved states' cotangents
    `xbar`, one slot per step; none when `xbar` is `None`."""
    if xbar is None:
        # One unused slot, so that the slot lookups stay in bounds.
        return ObservedSteps(jnp.zeros(1, jnp.int32), None, jnp.zeros((), jnp.int32))
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
    return ObservedSteps(slot_step, per_slot, slot[-1] + 1)
