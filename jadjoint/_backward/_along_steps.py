"""The adjoint integrated backwards along the forward steps of an explicit Runge–Kutta
solve, by a loop of our own (`docs/how-it-works.md`).

On each forward step `[t_k, t_{k+1}]`, last first, `w` is carried by the step map's
own derivative. One linearisation of the step's dense information `D_k = D(x_k, p)`
(`_forward.step_dense_info`, the step size held fixed; the controller is never
differentiated) is transposed at once, batched, for three cotangents:

- `(w(t_{k+1}), −c̄)` on `(x_{k+1}, C_{k+1})`, the step's end and its cost integral:
  `(∂x_{k+1}/∂x_k)ᵀ w(t_{k+1}) − c̄ (∂C_{k+1}/∂x_k)ᵀ`, and from the parameters the
  step's increment of `q`;
- the same weighted by the embedded pair's `b_error` on the stages `k_j`: the
  embedded difference `e = Σ_j b_error_j k_j` is linear in the stages, so this is
  `(∂e/∂x_k)ᵀ (w, −c̄)`, the adjoint's own error estimate on the step;
- `−D̄_k`, the step's observations (`_injection.py`): the jump `−x̄_k` of `w` and
  the observations' share of `q` (left out when nothing saved is differentiated).

That is one linearisation per step, RCA's cost of a step, where a step of the
continuous adjoint costs about one VJP per stage. The step is kept when the error
estimate, divided by `GUARD_SLACK`, passes diffrax's `PIDController` test on `w` (in
the reversed time `τ = −t`). Otherwise, on that step only, the continuous adjoint is
integrated across it under its own error control (the solver's tableau, `x(t)` from
the step's polynomial), from the step size the controller proposes. On a forward step
far outside the adjoint's stability region (a fast mode at its equilibrium, which the
forward solution does not move in), the discrete derivative is unstable, its error
estimate is of the size of the unstable stability function, and the step falls back.

Reading `x(t)` from a forward step's polynomial and jumping only where a forward step
starts is what the injection makes possible; `diffeqsolve` would look `t` up in the
whole dense output at every stage and stop at each forward step start.
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
from .._numerics import Stages, dense_output, gauss_legendre
from .._options import Options
from ._injection import ObservedSteps, observed_steps
from ._integrator import AbstractBackwardIntegrator
from ._jumps import SavedCotangents
from ._system import AdjointSystem

# A forward step carries the adjoint by its own derivative when the adjoint's
# embedded error estimate is within this factor of the tolerance. A step on which
# the discrete derivative is unstable has an estimate of about `1/rtol` times the
# tolerance and falls back; at the tolerance itself most steps of smooth problems
# fell back, and alternating between the two adjoints lost accuracy. The
# measurements behind the factor are in `docs/choosing.md`.
GUARD_SLACK = 100.0


def integrate_along_steps(
    system: AdjointSystem,
    dense: diffrax.DenseInterpolation,
    observed: ObservedSteps,
    *,
    w: PyTree,
    q: PyTree,
    options: Options,
    quadrature_nodes: int | None = None,
) -> tuple[PyTree, PyTree, Array, Array]:
    """`(w(t0), q(t0))` from `(w, q)` at the end of the forward solve whose dense
    output is `dense` (an explicit Runge–Kutta solve of `options.solver`), the
    observations of `observed` injected; the number of backward steps (one per
    forward step carried by its own derivative, and the accepted steps of the
    continuous adjoint where a step fell back) and the number of forward steps that
    fell back. A failed solve raises (`options.throw`) or gives NaN.

    Where a step falls back, `q` is accumulated with the tableau's weights from the
    stages' VJPs; with `quadrature_nodes`, by Gauss–Legendre quadrature on each
    accepted step instead, `w` at the nodes read from the step's own dense output
    (the stages then differentiate with respect to `x` only)."""
    controller = options.controller()
    error_order = options.solver.error_order(diffrax.ODETerm(lambda t, y, a: y))
    last = dense.ts_size - 2
    butcher = Stages(options.solver.tableau)
    dtype = jnp.result_type(*jtu.tree_leaves(w))
    a, b, b_error = (
        jnp.asarray(weights, dtype)
        for weights in (butcher.a, butcher.b, butcher.b_error)
    )
    c = jnp.asarray(butcher.c, dense.ts.dtype)
    cost_cotangent = jnp.zeros((), dtype) if system.cbar is None else -system.cbar

    def step_vjps(k, w, infobar):
        """For forward step `k`: `(x̄, p̄)` of the step's map for the incoming
        `(w, −c̄)`, the adjoint's error estimate, and `(x̄, p̄)` of the step's
        observations (`None` without `infobar`). One linearisation of the map,
        transposed for the two or three cotangents at once."""
        info, t0, t1 = dense_output.step(dense, k)
        x, cost = info["y0"]

        def dense_info(x, diff):
            return step_dense_info(
                system.bound(diff), x, cost, t0=t0, t1=t1, options=options
            )

        _, vjp = jax.vjp(dense_info, x, system.diff)
        zero = jtu.tree_map(jnp.zeros_like, info)
        incoming = (w, cost_cotangent.astype(cost.dtype))

        def error_weighted(v):
            """`v` on each stage, weighted by the error estimate's `b_error`."""
            return b_error.astype(v.dtype).reshape((-1,) + (1,) * v.ndim) * v

        cotangents = [
            dict(zero, y1=incoming),
            dict(zero, k=jtu.tree_map(error_weighted, incoming)),
        ]
        if infobar is not None:
            cotangents.append(jtu.tree_map(jnp.negative, infobar))
        stacked = jtu.tree_map(lambda *leaves: jnp.stack(leaves), *cotangents)
        out = jax.vmap(vjp)(stacked)

        def row(i):
            return jtu.tree_map(lambda a: a[i], out)

        return row(0), row(1)[0], None if infobar is None else row(2)

    def adjoint_rates(polynomial, t, w):
        x = polynomial.evaluate(t)[0]
        _, wdot, qdot = system.rates(x, w, t, lambda: polynomial.derivative(t)[0])
        return wdot, None if quadrature_nodes else qdot

    def weighted(weights, ks):
        return jtu.tree_map(lambda K: jnp.tensordot(weights, K, axes=1), ks)

    if quadrature_nodes:
        fractions, gauss_weights = gauss_legendre(quadrature_nodes)
        fractions = jnp.asarray(fractions, dense.ts.dtype)
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
            x = polynomial.evaluate(s)[0]
            w_at = interpolation.evaluate(s)
            return system.rates(x, w_at, s, lambda: polynomial.derivative(s)[0])[2]

        values = jax.vmap(qdot)(fractions)
        return jtu.tree_map(
            lambda v: h * jnp.tensordot(gauss_weights, v, axes=1), values
        )

    def attempt(polynomial, t, w, h):
        """One Runge–Kutta step of the continuous adjoint `(w, q)` from `t` by
        `h < 0`: `w` there, its error estimate and the increment of `q`. The stages
        are a `lax.scan` (compiled once, not once per stage), which every
        differentiation mode allows."""
        wdot, qdot = adjoint_rates(polynomial, t, w)
        ks = jtu.tree_map(
            lambda f: jnp.zeros((butcher.count,) + f.shape, f.dtype).at[0].set(f),
            wdot,
        )
        increment = jtu.tree_map(lambda v: h * b[0] * v, qdot)

        def stage(carry, j):
            ks, increment = carry
            y = jtu.tree_map(lambda w, K: w + h * jnp.tensordot(a[j], K, axes=1), w, ks)
            kj, qj = adjoint_rates(polynomial, t + c[j] * h, y)
            ks = jtu.tree_map(lambda K, v: K.at[j].set(v), ks, kj)
            increment = jtu.tree_map(lambda acc, v: acc + h * b[j] * v, increment, qj)
            return (ks, increment), None

        (ks, increment), _ = jax.lax.scan(
            stage, (ks, increment), jnp.arange(1, butcher.count)
        )
        w_next = jtu.tree_map(lambda w, d: w + h * d, w, weighted(b, ks))
        error = jtu.tree_map(lambda d: h * d, weighted(b_error, ks))
        if quadrature_nodes:
            increment = quadrature(polynomial, t, h, w, w_next, ks)
        return w_next, error, increment

    def across_step(k, w, q, dt, pid, active):
        """The continuous adjoint from `t_{k+1}` to `t_k` under its own error
        control, the first step `dt` long (where not `active`, nothing: a loop
        of no iterations, also under `vmap`)."""
        polynomial = dense_output.polynomial(dense, k)
        t_k = dense.ts[k]

        def body(state):
            t, w, q, dt, pid, steps = state
            t_next = jnp.where(t - dt <= t_k, t_k, t - dt)
            w_next, error, increment = attempt(polynomial, t, w, t_next - t)
            keep, tau0, tau1, _, pid, _ = controller.adapt_step_size(
                -t, -t_next, w, w_next, None, error, error_order, pid
            )
            t = jnp.where(keep, t_next, t)
            w = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), w_next, w)
            q = jtu.tree_map(lambda a, d: jnp.where(keep, a + d, a), q, increment)
            return t, w, q, tau1 - tau0, pid, steps + keep

        start = jnp.where(active, dense.ts[k + 1], t_k)
        t, w, q, _, pid, steps = eqxi.while_loop(
            lambda state: state[0] > t_k,
            body,
            (start, w, q, dt, pid, jnp.zeros((), jnp.int32)),
            max_steps=options.max_steps,
            kind=loop_kind(),
        )
        return w, q, pid, steps, t > t_k

    def body(state):
        k, slot, w, q, pid, steps, fallbacks, failed = state
        # Under `vmap` a member that has finished (`k = −1`) runs on, its updates
        # discarded: it reads the first step, not a row past the end.
        k = jnp.maximum(k, 0)
        holds = (slot >= 0) & (observed.steps[jnp.maximum(slot, 0)] == k)
        infobar = jtu.tree_map(
            lambda a: jnp.where(holds, a[jnp.maximum(slot, 0)], 0), observed.infobar
        )
        (w_step, q_step), error, injection = step_vjps(k, w, infobar)
        t_k, t_next = dense.ts[k], dense.ts[k + 1]
        keep, tau0, tau1, _, pid, _ = controller.adapt_step_size(
            -t_next,
            -t_k,
            w,
            w_step,
            None,
            jtu.tree_map(lambda e: e / GUARD_SLACK, error),
            error_order,
            pid,
        )
        w_across, q_across, pid, across_steps, stuck = across_step(
            k, w, q, tau1 - tau0, pid, ~keep
        )
        w = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), w_step, w_across)
        q = jtu.tree_map(lambda q, d, b: jnp.where(keep, q + d, b), q, q_step, q_across)
        if injection is not None:
            w = jtu.tree_map(jnp.add, w, injection[0])
            q = jtu.tree_map(jnp.add, q, injection[1])
        steps = steps + jnp.where(keep, 1, across_steps)
        return (
            k - 1,
            jnp.where(holds, slot - 1, slot),
            w,
            q,
            pid,
            steps,
            fallbacks + ~keep,
            failed | stuck,
        )

    # The controller's state starts from the last forward step.
    dt = dense.ts[last + 1] - dense.ts[jnp.maximum(last, 0)]
    _, pid = controller.init(
        None, -dense.ts[last + 1], -dense.ts[0], w, dt, None, None, error_order
    )
    zero = jnp.zeros((), jnp.int32)
    state = (last, observed.count - 1, w, q, pid, zero, zero, jnp.asarray(False))
    k, _, w, q, _, steps, fallbacks, failed = eqxi.while_loop(
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
    return w, q, steps, fallbacks


class AlongForwardSteps(AbstractBackwardIntegrator):
    """The adjoint carried along each segment's forward steps
    (`integrate_along_steps`), the cotangents of the saves in the segment injected
    through their steps (`_injection.py`); with `quadrature_nodes`, `q` by
    Gauss–Legendre quadrature on each accepted step of a step that falls back. For
    explicit Runge–Kutta solvers."""

    cotangents: SavedCotangents
    quadrature_nodes: int | None = eqx.field(static=True, default=None)

    def integrate(self, system, segment, dense, *, w, q, dt0, options):
        ts, xbar = self.cotangents.in_segment(segment.t_left, segment.t_right)
        w, q, steps, _ = integrate_along_steps(
            system,
            dense,
            observed_steps(dense, ts, xbar),
            w=w,
            q=q,
            options=options,
            quadrature_nodes=self.quadrature_nodes,
        )
        return w, q, steps

    def w_at_start(self, w):
        # Every segment has injected its save times, those at `t0` included.
        return w
