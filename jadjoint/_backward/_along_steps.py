"""The adjoint integrated backwards along the forward steps, by a loop of our own over
an explicit Runge–Kutta tableau and diffrax's `PIDController` (`docs/how-it-works.md`).

With the observations injected at forward step starts (`_injection.py`), the backward
pass needs `x(t)` only through one forward step's polynomial at a time, and jumps only
where a forward step starts. `diffeqsolve` would look `t` up in the whole dense output
at every stage, stop at each forward step start through `ClipStepSizeController`
(losing the step-size proposal each time) and carry the parameter integral `q` as part
of the stepped state, stages and all: a neural network's weights, seven times per step.
This loop instead

- steps `w` only: `q` is accumulated as `q ← q + h Σ b_j q̇_j` on accepted steps, the
  `q̇_j` coming out of the same VJPs as the stages of `w` (its error is not controlled:
  the seminorm of `LeadingSeminorm`);
- tries each forward step whole, backwards, and keeps it when the adjoint's error
  estimate is within `WHOLE_STEP_SLACK` of the tolerance; otherwise divides it under
  the error control. On the forward's own steps the adjoint's discretisation errors
  stay consistent with the forward solution's: with steps of its own the backward
  pass took about twice the forward's steps, each forward step as a full step and a
  short remainder, and a gradient that cancels over many oscillations lost two
  orders of accuracy;
- switches to the previous step's polynomial at each forward step start `t_k`;
- applies the injected jump `w(t_k⁻) = w(t_k⁺) − x̄_k` there, re-evaluating the first
  stage only after a jump (first same as last otherwise).

The error control is `PIDController.adapt_step_size`, in the reversed time `τ = −t`,
on `w`; the stages are the solver's public Butcher tableau.
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
from .._numerics import Stages, dense_output, gauss_legendre
from .._options import Options
from ._injection import injected_observations
from ._integrator import AbstractBackwardIntegrator
from ._jumps import SavedCotangents, StepJumps
from ._system import AdjointSystem

# Each forward step is tried whole first, and kept when the adjoint's error estimate
# over it is within this factor of the tolerance: when the forward step is at most
# 10^(1/5) ≈ 1.6 times the step the adjoint's own control would take. Otherwise the
# step is divided under that control. Taking the forward's steps keeps the adjoint's
# discretisation consistent with the forward solution's; the guard divides a step on
# which the adjoint is unstable (its error estimate is then near `1/rtol` times the
# tolerance). The measurements behind the factor are in `docs/choosing.md`.
WHOLE_STEP_SLACK = 10.0


def integrate_along_steps(
    system: AdjointSystem,
    dense: diffrax.DenseInterpolation,
    jumps: StepJumps,
    *,
    w: PyTree,
    q: PyTree,
    options: Options,
    quadrature_nodes: int | None = None,
) -> tuple[PyTree, PyTree, Array]:
    """`(w(t0), q(t0))` from `(w, q)` at the end of the forward solve whose dense
    output is `dense` (an explicit Runge–Kutta solve of `options.solver`), and the
    number of accepted backward steps. A failed solve raises (`options.throw`) or
    gives NaN.

    `q` is accumulated with the tableau's weights from the stages' VJPs; with
    `quadrature_nodes`, by Gauss–Legendre quadrature on each accepted step instead,
    `w` at the nodes read from the step's own dense output (the stages then
    differentiate with respect to `x` only).

    Each forward step is tried whole first; where it is divided, the first part's
    size is the proposal from the whole step's error estimate."""
    tableau = options.solver.tableau
    fsal = tableau.fsal
    controller = options.controller()
    error_order = options.solver.error_order(diffrax.ODETerm(lambda t, y, a: y))
    last = dense.ts_size - 2
    t_start, t_end = dense.ts[0], dense.ts[last + 1]

    def adjoint_rates(polynomial, t, w):
        x = polynomial.evaluate(t)[0]
        _, wdot, qdot = system.rates(x, w, t, lambda: polynomial.derivative(t)[0])
        return wdot, qdot

    def rates(polynomial, t, w):
        """`(ẇ, q̇)` for the stages, with `x` from the forward step's `polynomial`;
        `q̇` is `None` (not computed) when `q` is accumulated by quadrature."""
        wdot, qdot = adjoint_rates(polynomial, t, w)
        return wdot, None if quadrature_nodes else qdot

    butcher = Stages(tableau)
    stages = butcher.count
    dtype = jnp.result_type(*jtu.tree_leaves(w))
    a, b, b_error = (
        jnp.asarray(weights, dtype)
        for weights in (butcher.a, butcher.b, butcher.b_error)
    )
    c = jnp.asarray(butcher.c, t_end.dtype)

    def weighted(weights, ks):
        return jtu.tree_map(lambda K: jnp.tensordot(weights, K, axes=1), ks)

    if quadrature_nodes:
        fractions, gauss_weights = gauss_legendre(quadrature_nodes)
        fractions = jnp.asarray(fractions, t_end.dtype)
        gauss_weights = jnp.asarray(gauss_weights, dtype)

    def quadrature(polynomial, t, h, w, w_next, ks):
        """`∫ q̇ dt` over the step from `t` by `h`, with `w` from the step's dense
        output (the solver's interpolation of its stages)."""
        increments = jtu.tree_map(lambda K: h * K, ks)
        interpolation = options.solver.interpolation_cls(
            t0=t, t1=t + h, y0=w, y1=w_next, k=increments
        )

        def qdot(fraction):
            s = t + fraction * h
            return adjoint_rates(polynomial, s, interpolation.evaluate(s))[1]

        values = jax.vmap(qdot)(fractions)
        return jtu.tree_map(
            lambda v: h * jnp.tensordot(gauss_weights, v, axes=1), values
        )

    def attempt(polynomial, t, w, first, h):
        """One Runge–Kutta step of `(w, q)` from `t` by `h < 0`: `w` there, its
        error estimate, the increment of `q` and the last stage. The stages are a
        `lax.scan` (compiled once, not once per stage), which every differentiation
        mode allows."""
        wdot, qdot = first
        ks = jtu.tree_map(
            lambda f: jnp.zeros((stages,) + f.shape, f.dtype).at[0].set(f), wdot
        )
        increment = jtu.tree_map(lambda v: h * b[0] * v, qdot)

        def stage(carry, j):
            ks, increment, _ = carry
            y = jtu.tree_map(lambda w, K: w + h * jnp.tensordot(a[j], K, axes=1), w, ks)
            kj, qj = rates(polynomial, t + c[j] * h, y)
            ks = jtu.tree_map(lambda K, v: K.at[j].set(v), ks, kj)
            increment = jtu.tree_map(lambda acc, v: acc + h * b[j] * v, increment, qj)
            return (ks, increment, qj), None

        (ks, increment, q_last), _ = jax.lax.scan(
            stage, (ks, increment, qdot), jnp.arange(1, stages)
        )
        w_next = jtu.tree_map(lambda w, d: w + h * d, w, weighted(b, ks))
        error = jtu.tree_map(lambda d: h * d, weighted(b_error, ks))
        if quadrature_nodes:
            increment = quadrature(polynomial, t, h, w, w_next, ks)
        last_stage = (jtu.tree_map(lambda K: K[-1], ks), q_last)
        return w_next, error, increment, last_stage

    def body(state):
        k, slot, t, w, q, first, dt, pid, jumped, whole, steps = state
        # Under `vmap` a member that has finished (`k = −1`) runs on, its updates
        # discarded: it reads the first step's polynomial, not a row past the end.
        k = jnp.maximum(k, 0)
        # Looked up once per attempt, not once per stage.
        polynomial = dense_output.polynomial(dense, k)
        if fsal:
            # After a jump the first stage is evaluated afresh (under `vmap` every
            # iteration pays for it). Correcting the last stage by linearity instead
            # (`ẇ_lin(x̄)` per slot before the loop, the `q̇` part by one batched VJP
            # after it) was measured: the two extra passes cost what they saved.
            first = jax.lax.cond(jumped, lambda: rates(polynomial, t, w), lambda: first)
        else:
            first = rates(polynomial, t, w)
        t_k = dense.ts[k]
        # The step lands on `t_k`: tried whole, or shorter than the proposal from there.
        lands = whole | (t - dt <= t_k)
        t_next = jnp.where(lands, t_k, t - dt)
        w_next, error, increment, last_stage = attempt(
            polynomial, t, w, first, t_next - t
        )
        keep, tau0, tau1, _, pid, _ = controller.adapt_step_size(
            -t, -t_next, w, w_next, None, error, error_order, pid
        )
        within_slack = controller.adapt_step_size(
            -t,
            -t_next,
            w,
            w_next,
            None,
            jtu.tree_map(lambda e: e / WHOLE_STEP_SLACK, error),
            error_order,
            pid,
        )[0]
        keep = jnp.where(whole, within_slack, keep)
        # Read only within a divided forward step: after landing on `t_k` the next
        # forward step is tried whole.
        dt = tau1 - tau0
        t = jnp.where(keep, t_next, t)
        w = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), w_next, w)
        q = jtu.tree_map(lambda a, d: jnp.where(keep, a + d, a), q, increment)
        if fsal:
            first = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), last_stage, first)
        crossed = keep & lands
        injects = crossed & (slot >= 0) & (jumps.steps[jnp.maximum(slot, 0)] == k)
        if jumps.xbar is not None:
            xbar = jtu.tree_map(lambda a: a[jnp.maximum(slot, 0)], jumps.xbar)
            w = jtu.tree_map(lambda a, b: jnp.where(injects, a - b, a), w, xbar)
        slot = jnp.where(injects, slot - 1, slot)
        k = jnp.where(crossed, k - 1, k)
        # The next forward step is tried whole.
        whole = crossed
        return k, slot, t, w, q, first, dt, pid, injects, whole, steps + keep

    # The first attempt is the last forward step, whole.
    dt = t_end - dense.ts[jnp.maximum(last, 0)]
    _, pid = controller.init(None, -t_end, -t_start, w, dt, None, None, error_order)
    # Without first same as last, every step evaluates its first stage: `(w, q)`
    # only gives the carry its structure.
    if fsal:
        first = rates(dense_output.polynomial(dense, jnp.maximum(last, 0)), t_end, w)
    else:
        first = (w, None if quadrature_nodes else q)
    state = (
        last,
        jumps.count - 1,
        t_end,
        w,
        q,
        first,
        dt,
        pid,
        False,
        jnp.asarray(True),
        0,
    )
    # As many attempted steps as the forward solve may take, plus one per forward
    # step start at which a step is shortened.
    state = eqxi.while_loop(
        lambda state: state[0] >= 0,
        body,
        state,
        max_steps=2 * options.max_steps,
        kind=loop_kind(),
    )
    k, _, _, w, q, _, _, _, _, _, steps = state
    failed = k >= 0
    result = diffrax.RESULTS.where(
        failed, diffrax.RESULTS.max_steps_reached, diffrax.RESULTS.successful
    )
    w, q = raise_or_nan(result, (w, q), options.throw)
    return w, q, steps


class AlongForwardSteps(AbstractBackwardIntegrator):
    """The adjoint integrated along each segment's forward steps
    (`integrate_along_steps`), the cotangents of the saves in the segment injected
    at their steps' starts (`_injection.py`); with `quadrature_nodes`, `q` by
    Gauss–Legendre quadrature on each accepted step. For explicit Runge–Kutta
    solvers."""

    cotangents: SavedCotangents
    quadrature_nodes: int | None = eqx.field(static=True, default=None)

    def integrate(self, system, segment, dense, *, w, q, dt0, options):
        ts, xbar = self.cotangents.in_segment(segment.t_left, segment.t_right)
        step_jumps, direct = injected_observations(system, dense, ts, xbar, options)
        w, q, steps = integrate_along_steps(
            system,
            dense,
            step_jumps,
            w=w,
            q=q,
            options=options,
            quadrature_nodes=self.quadrature_nodes,
        )
        if direct is not None:
            q = jtu.tree_map(jnp.subtract, q, direct)
        return w, q, steps

    def w_at_start(self, w):
        # Every segment has injected its save times, those at `t0` included.
        return w
