"""The adjoint integrated backwards along the forward steps of an explicit Runge–Kutta
solve whose saved states are not differentiated (`docs/how-it-works.md`): the
continuous adjoint, by a loop of our own (`_adjoint_steps.py`) that

- tries each forward step whole, backwards, and keeps it when the adjoint's error
  estimate is within `WHOLE_STEP_SLACK` of the tolerance; otherwise divides it under
  the error control. On the forward's own steps the adjoint's discretisation errors
  stay consistent with the forward solution's: with steps of its own the backward
  pass took about twice the forward's steps, each forward step as a full step and a
  short remainder, and a gradient that cancels over many oscillations lost two
  orders of accuracy;
- switches to the previous step's polynomial at each forward step start `t_k`.

Where saved states are differentiated, the adjoint is carried by the forward steps'
own derivatives instead (`_step_derivatives.py`), which the observations' injection
needs anyway. Without observations the continuous adjoint is the cheaper: its step
costs about one VJP per stage, the step's derivative a transposition of the whole
step and another for its error estimate.
"""

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._differentiation_mode import loop_kind
from .._errors import raise_or_nan
from .._numerics import dense_output
from .._options import Options
from ._adjoint_steps import AdjointSteps
from ._injection import observed_steps
from ._integrator import AbstractBackwardIntegrator
from ._jumps import SavedCotangents
from ._step_derivatives import carry_by_step_derivatives
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
    *,
    w: PyTree,
    q: PyTree,
    options: Options,
    quadrature_nodes: int | None = None,
) -> tuple[PyTree, PyTree, Array]:
    """`(w(t0), q(t0))` from `(w, q)` at the end of the forward solve whose dense
    output is `dense` (an explicit Runge–Kutta solve of `options.solver`), and the
    number of accepted backward steps. A failed solve raises (`options.throw`) or
    gives NaN. `quadrature_nodes`: as `AdjointSteps`.

    Each forward step is tried whole first; where it is divided, the first part's
    size is the proposal from the whole step's error estimate."""
    steps = AdjointSteps(system, options, w, quadrature_nodes)
    last = dense.ts_size - 2
    t_start, t_end = dense.ts[0], dense.ts[last + 1]

    def body(state):
        k, t, w, q, first, dt, pid, whole, accepted = state
        # Under `vmap` a member that has finished (`k = −1`) runs on, its updates
        # discarded: it reads the first step's polynomial, not a row past the end.
        k = jnp.maximum(k, 0)
        # Looked up once per attempt, not once per stage.
        polynomial = dense_output.polynomial(dense, k)
        if not steps.fsal:
            first = steps.rates(polynomial, t, w)
        t_k = dense.ts[k]
        # The step lands on `t_k`: tried whole, or shorter than the proposal from there.
        lands = whole | (t - dt <= t_k)
        t_next = jnp.where(lands, t_k, t - dt)
        w_next, error, increment, last_stage = steps.attempt(
            polynomial, t, w, first, t_next - t
        )
        keep, dt, pid = steps.control(t, t_next, w, w_next, error, pid)
        within_slack = steps.control(
            t, t_next, w, w_next, error, pid, WHOLE_STEP_SLACK
        )[0]
        keep = jnp.where(whole, within_slack, keep)
        t = jnp.where(keep, t_next, t)
        w = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), w_next, w)
        q = jtu.tree_map(lambda a, d: jnp.where(keep, a + d, a), q, increment)
        if steps.fsal:
            first = jtu.tree_map(lambda a, b: jnp.where(keep, a, b), last_stage, first)
        crossed = keep & lands
        # The next forward step is tried whole; `dt` is read only within a divided
        # one.
        return (
            jnp.where(crossed, k - 1, k),
            t,
            w,
            q,
            first,
            dt,
            pid,
            crossed,
            accepted + keep,
        )

    # The first attempt is the last forward step, whole.
    dt = t_end - dense.ts[jnp.maximum(last, 0)]
    pid = steps.init_control(t_start, t_end, w, dt)
    # Without first same as last, every step evaluates its first stage: `(w, q)`
    # only gives the carry its structure.
    if steps.fsal:
        first = steps.rates(
            dense_output.polynomial(dense, jnp.maximum(last, 0)), t_end, w
        )
    else:
        first = (w, None if quadrature_nodes else q)
    state = (last, t_end, w, q, first, dt, pid, jnp.asarray(True), 0)
    # As many attempted steps as the forward solve may take, plus one per forward
    # step start at which a step is shortened.
    k, _, w, q, _, _, _, _, accepted = eqxi.while_loop(
        lambda state: state[0] >= 0,
        body,
        state,
        max_steps=2 * options.max_steps,
        kind=loop_kind(),
    )
    result = diffrax.RESULTS.where(
        k >= 0, diffrax.RESULTS.max_steps_reached, diffrax.RESULTS.successful
    )
    w, q = raise_or_nan(result, (w, q), options.throw)
    return w, q, accepted


class AlongForwardSteps(AbstractBackwardIntegrator):
    """The adjoint along each segment's forward steps, for explicit Runge–Kutta
    solvers: with the cotangents of the saves in the segment injected through their
    steps and carried by the steps' derivatives (`_step_derivatives.py`), or, where
    no saved state is differentiated, integrated along them (`integrate_along_steps`).
    With `quadrature_nodes`, `q` by Gauss–Legendre quadrature on each accepted step
    of the continuous adjoint. With `recompute_stages`, the steps' linearisations
    keep only their matrix products (`_forward.step_dense_info`)."""

    cotangents: SavedCotangents
    quadrature_nodes: int | None = eqx.field(static=True, default=None)
    recompute_stages: bool = eqx.field(static=True, default=False)

    def integrate(self, system, segment, dense, *, w, q, dt0, options):
        ts, xbar = self.cotangents.in_segment(segment.t_left, segment.t_right)
        if xbar is None:
            return integrate_along_steps(
                system,
                dense,
                w=w,
                q=q,
                options=options,
                quadrature_nodes=self.quadrature_nodes,
            )
        w, q, steps = carry_by_step_derivatives(
            system,
            dense,
            observed_steps(dense, ts, xbar),
            w=w,
            q=q,
            options=options,
            quadrature_nodes=self.quadrature_nodes,
            recompute_stages=self.recompute_stages,
        )
        return w, q, steps.accepted

    def w_at_start(self, w):
        # Every segment has injected its save times, those at `t0` included.
        return w
