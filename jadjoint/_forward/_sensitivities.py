"""Forward sensitivities: the tangent of the solve's outputs along a tangent of its
inputs, integrated with the state.

For the ODE `ẋ = v(x, p, t)` (every problem form reaches `solve` as one: an implicit
`h` through its solve for `ẋ`, a DAE through its state-space form) and a tangent
`(ṗ, ẋ0, ṫ0, ṫ1, ṫs)` of the inputs, the sensitivity `s = ∂x/∂(p, x0) · (ṗ, ẋ0)`
obeys

    ṡ = v_x s + v_p ṗ,    s(t0) = ẋ0 − v(x0, p, t0) ṫ0,

and the outputs' tangents are

    ẋ(t_i) = s(t_i) + v(x(t_i), p, t_i) ṫs_i,
    Ċ = ∫ (f_x s + f_p ṗ) dt + f(x(T), p, T) ṫ1 − f(x0, p, t0) ṫ0.

`s` is integrated by the same solver on the same steps as `x`: the forward solve is
differentiated by `jax.jvp` (diffrax's `ForwardMode`) with its step sizes held fixed
(`Options.hold_steps`: the controller's error norm carries no derivative). For a
Runge–Kutta method that is exactly the method applied to the sensitivity equations
above; the sensitivities do not enter the error control (CVODES's simultaneous
corrector with `errconS` off). A batch of tangents (`jax.jacfwd`'s `vmap`) leaves the
state, the step sizes and the loop unbatched: one solve carries `n_p` sensitivities.
The step size is never differentiated: its derivative is an artefact of the
controller, and on steps limited by stability it is what makes a discretised
derivative wrong (`docs/choosing.md`).
"""

import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._options import Options
from .._problem import BoundProblem
from ._integrate import Forward, integrate


def _materialised(tangent: PyTree, like: PyTree) -> PyTree:
    """`tangent` with zeros for its `None` leaves (symbolic zeros)."""
    if tangent is None:
        return jtu.tree_map(jnp.zeros_like, like)
    return jtu.tree_map(
        lambda x, t: jnp.zeros_like(x) if t is None else t, like, tangent
    )


def _dot_rate(rate: PyTree, tangent_time) -> PyTree:
    return jtu.tree_map(lambda r: r * tangent_time.astype(r.dtype), rate)


def forward_sensitivities(
    bound: BoundProblem, inputs: tuple, tangents: tuple, *, dt0, options: Options
) -> tuple[Forward, tuple]:
    """The forward solve of `inputs = (p, x0, problem, (t0, t1, ts))` and the
    tangents `(Ċ, ẋs)` of its cost and saved states along `tangents`, a tree like
    `inputs` with `None` for zero leaves. `bound`: `problem` bound to `p` and
    prepared for the pass, which gives the times' terms."""
    p, x0, problem, (t0, t1, ts) = inputs
    p_dot, x0_dot, problem_dot, (t0_dot, t1_dot, ts_dot) = tangents
    holding = dataclasses.replace(options, hold_steps=True)
    # `integrate` sees the times undifferentiated: their tangents enter below.
    t0, t1, ts = lax.stop_gradient((t0, t1, ts))

    def solved(p, x0, problem):
        bound = BoundProblem.prepare(problem, p, x0, holding)
        forward = integrate(
            bound,
            x0,
            t0=t0,
            t1=t1,
            ts=ts,
            dt0=dt0,
            options=holding,
            dense=False,
            adjoint=diffrax.ForwardMode(),
        )
        return forward

    if t0_dot is not None:
        rate = _dot_rate(bound.xdot(x0, t0), t0_dot)
        x0_dot = jtu.tree_map(jnp.subtract, _materialised(x0_dot, x0), rate)
    forward, forward_dot = eqx.filter_jvp(
        solved, (p, x0, problem), (p_dot, x0_dot, problem_dot)
    )
    cost_dot = _materialised(forward_dot.cost, forward.cost)
    xs_dot = _materialised(forward_dot.xs, forward.xs)
    if t0_dot is not None:
        cost_dot = cost_dot - bound.cost_rate(x0, t0) * t0_dot.astype(cost_dot.dtype)
    if t1_dot is not None:
        final = bound.cost_rate(forward.x_last, t1)
        cost_dot = cost_dot + final * t1_dot.astype(cost_dot.dtype)
    if ts_dot is not None:
        rates = jax.vmap(bound.xdot)(forward.xs, ts)
        xs_dot = jtu.tree_map(
            lambda s, r: s + r * ts_dot.reshape((-1,) + (1,) * (r.ndim - 1)),
            xs_dot,
            rates,
        )
    return forward, (cost_dot, xs_dot)
