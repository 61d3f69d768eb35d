"""A solve with events, as pieces between them.

Each piece is an ordinary differentiable solve (the adjoint method's, as without
events) from where the last piece left off (`t_k`, `x_k⁺`) to the first event after
it, `τ*`, located by an undifferentiated solve with a `diffrax.Event` (optimistix's
Newton on the step's dense output). The event time is then made differentiable by
the implicit function theorem on `condition(x(τ), p, τ) = 0`, in `δ = τ − τ*` (a
value of zero carrying `dτ`); to first order:

    δ = −(condition(x(τ*), p, τ*) − its value) / ė,   ė = condition_t + condition_x ẋ
    x(τ⁻) = x(τ*) + ẋ δ,   ∫^τ f dt = ∫^{τ*} f dt + f δ,   x(τ⁺) = update(x(τ⁻), p, τ)

where `x(τ*)` is the piece's state at its (fixed) end, differentiable by its solve,
and the next piece starts at `τ` (its solve differentiates with respect to its
start time). Differentiating this composition gives the adjoint's jump conditions at
every event (`docs/how-it-works.md`), for every adjoint method and in forward mode,
without a rule of its own.

A loop of our own because diffrax's events only terminate: the pieces are a
`lax.scan` of `max_events + 1` pieces (one compilation whatever their number); a
piece after the solve has ended (reached `t1` or a terminating event) spans a few
rounding units past the end, and its outputs are masked out. Each piece keeps all
the save times, those outside it moved to its ends (the solve allows repeated save
times) and masked out: a piece's outputs have a fixed shape, whatever the events
do. The terms in `δ` are taken to second order, and `δ` by two chord steps, so that
second derivatives are exact too.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jaxtyping import Array, PyTree

from .._differentiation_mode import seen_inside_loop
from .._forward import integrate
from .._options import Options
from .._problem import BoundProblem
from .._results import RESULTS, failure_if, first_failure
from ._event import Event


class EventRecord(eqx.Module):
    """The events of a solve, in the order they occurred: their times `τ`, the
    states reaching them `x(τ⁻)` and which of the events each was (its index in
    `events`), `inf` (`-1`) past the last; and how many occurred."""

    times: Array
    states: PyTree
    indices: Array
    count: Array

    @classmethod
    def empty(cls, x0: PyTree, t0) -> "EventRecord":
        """The record of a solve without events."""
        return cls(
            times=jnp.zeros((0,), jnp.result_type(t0)),
            states=jtu.tree_map(lambda a: jnp.zeros((0,) + a.shape, a.dtype), x0),
            indices=jnp.zeros((0,), jnp.int32),
            count=jnp.zeros((), jnp.int32),
        )


def _stopped(tree: PyTree) -> PyTree:
    """`tree` with its arrays carrying no derivative."""
    arrays, rest = eqx.partition(tree, eqx.is_array)
    return eqx.combine(lax.stop_gradient(arrays), rest)


def _located(
    bound: BoundProblem, events: tuple[Event, ...], x, *, t0, t1, dt0, options
) -> tuple[Array, Array, RESULTS]:
    """`(τ*, which, result)`: the first event in `(t0, t1]` from `x` at `t0` and its
    index (`-1` if none occurs), undifferentiated."""
    bound, events, x, t0, t1 = _stopped((bound, events, x, t0, t1))
    xdot = bound.xdot(x, t0)
    # A zero within the root finder's tolerance of the start is the event just
    # handled (a dose at `t_d` seen again from `t_d`, a ball on the floor): there
    # the condition counts with the sign it takes on from the start.
    near = 10 * options.newton_tol * (1 + jnp.abs(t0))

    def condition(event: Event) -> Callable:
        def rate(x, t):
            return event.condition(x, bound.p, t)

        value, heading = jax.jvp(rate, (x, t0), (xdot, jnp.ones_like(t0)))
        tiny = jnp.finfo(jnp.result_type(value)).tiny
        at_zero = jnp.abs(value) <= near * jnp.abs(heading)
        start = jnp.where(at_zero, jnp.sign(heading) * (jnp.abs(value) + tiny), value)

        def cond_fn(t, y, args, **_):
            value = jnp.where(t == t0, start, event.condition(y[0], args.p, t))
            # In the default float dtype, as diffrax's root find assumes.
            return value.astype(jnp.result_type(float))

        return cond_fn

    finder = optx.Newton(rtol=options.newton_tol, atol=options.newton_tol)
    located = integrate(
        bound,
        x,
        t0=t0,
        t1=t1,
        ts=None,
        dt0=dt0,
        options=eqx.tree_at(
            lambda o: o.progress_meter, options, diffrax.NoProgressMeter()
        ),
        dense=False,
        # Nothing here is differentiated: diffrax's plain loop, which a
        # derivative of any order passes through (its default is a `custom_vjp`).
        adjoint=diffrax.ForwardMode(),
        event=diffrax.Event(
            [condition(event) for event in events],
            finder,
            direction=[event.direction for event in events],
        ),
    )
    fired = jnp.stack(located.event_mask)
    which = jnp.where(jnp.any(fired), jnp.argmax(fired), -1)
    return located.t_last, which, located.result


def _jumped(bound: BoundProblem, events, which, hit, x_end, tau_star, cost):
    """`(τ, x(τ⁻), x(τ⁺), cost)` at the end of a piece from its state `x_end` and
    cost at `τ*`: the module docstring's terms in `δ`, to second order, and the
    update of event `which` where `hit`; `(τ*, x_end, x_end, cost)` elsewhere."""
    one = jnp.ones_like(tau_star)
    xdot, xdot_linearised = jax.linearize(bound.xdot, x_end, tau_star)
    xddot = xdot_linearised(xdot, one)
    rate, rate_dot = jax.jvp(bound.cost_rate, (x_end, tau_star), (xdot, one))

    def moved(delta):
        """The state and the cost at `τ* + δ`, to second order in `δ`."""
        x = jtu.tree_map(
            lambda x, v, a: (
                x + (v + a * delta.astype(x.dtype) / 2) * delta.astype(x.dtype)
            ),
            x_end,
            xdot,
            xddot,
        )
        delta = delta.astype(cost.dtype)
        return x, cost + (rate + rate_dot * delta / 2) * delta

    def offset(event: Event):
        def residual(delta):
            return event.condition(moved(delta)[0], bound.p, tau_star + delta)

        zero = jnp.zeros_like(tau_star)
        value, crossing = jax.jvp(residual, (zero,), (one,))
        # Elsewhere `ė` may be zero: no NaN in the derivative of what is dropped.
        crossing = jnp.where(hit, lax.stop_gradient(crossing), 1)
        # Two chord steps from `δ = 0` on the located root (whose residual, the
        # root finder's tolerance, is taken off): `δ`'s first and second
        # derivatives exact, its value zero.
        delta = zero
        for _ in range(2):
            delta = delta - (residual(delta) - lax.stop_gradient(value)) / crossing
        return delta

    delta = lax.switch(jnp.maximum(which, 0), [lambda e=e: offset(e) for e in events])
    delta = jnp.where(hit, delta, 0)
    tau = tau_star + delta
    x_minus, cost = moved(delta)

    def updated(event: Event):
        if event.update is None:
            return x_minus
        return event.update(x_minus, bound.p, tau)

    x_plus = lax.switch(jnp.maximum(which, 0), [lambda e=e: updated(e) for e in events])
    x_plus = jtu.tree_map(lambda a, b: jnp.where(hit, a, b), x_plus, x_minus)
    return tau, x_minus, x_plus, cost


def solve_in_pieces(
    solve_piece: Callable,
    bound: BoundProblem,
    events: tuple[Event, ...],
    x0: PyTree,
    *,
    times,
    prior: RESULTS,
    dt0,
    options: Options,
    max_events: int,
) -> tuple:
    """`(cost, xs, stats, result, record)` of the solve from `x0` over `times = (t0,
    t1, ts)` with `events` (at most `max_events` of them; more is a failure,
    `too_many_events`). `solve_piece(x, times, prior) -> (cost, xs, stats, result)`
    is the differentiable solve of one piece; `bound` the ODE with its parameters,
    for the events' location and jumps."""
    t0, t1, ts = times
    terminates = jnp.asarray([event.terminate for event in events])

    def piece(carry, _):
        t_start, x_start, done, result = carry
        # A piece after the end spans a few rounding units: under `vmap` a member
        # whose solve has no length would run its batch's backward loops on a
        # dense output with no step, whose times are not finite.
        after_end = t_start + 16 * jnp.finfo(t_start.dtype).eps * jnp.maximum(
            jnp.abs(t_start), 1
        )
        t_end = jnp.where(done, after_end, t1)
        tau_star, which, located = _located(
            bound, events, x_start, t0=t_start, t1=t_end, dt0=dt0, options=options
        )
        hit = (which >= 0) & ~done
        tau_star = jnp.where(hit, tau_star, t_end)
        # The save times outside the piece, moved to its ends, are masked out below.
        outside = lax.stop_gradient(jnp.clip(ts, t_start, tau_star))
        inside = (ts >= t_start) & jnp.where(hit, ts < tau_star, ts <= tau_star)
        inside = inside & ~done
        saves = jnp.concatenate([jnp.where(inside, ts, outside), tau_star[None]])
        result = first_failure(result, failure_if(~done, located))
        cost, xs, stats, result = solve_piece(
            x_start, (t_start, tau_star, saves), result
        )
        x_end = jtu.tree_map(lambda a: a[-1], xs)
        xs = jtu.tree_map(lambda a: a[:-1], xs)
        tau, x_minus, x_plus, cost = _jumped(
            bound, events, which, hit, x_end, tau_star, cost
        )
        ended = done | ~hit | terminates[jnp.maximum(which, 0)]
        outputs = dict(
            cost=cost,
            xs=xs,
            inside=inside,
            tau=tau,
            x_minus=x_minus,
            hit=hit,
            which=which,
            stats={key: jnp.where(done, 0, value) for key, value in stats.items()},
        )
        return (tau, x_plus, ended, result), outputs

    start = (t0, x0, jnp.asarray(False), prior)
    with seen_inside_loop():
        (_, _, _, result), pieces = lax.scan(piece, start, None, length=max_events + 1)
    result = first_failure(
        result, failure_if(pieces["hit"][-1], RESULTS.too_many_events)
    )

    def saved(a):
        inside = pieces["inside"].reshape(pieces["inside"].shape + (1,) * (a.ndim - 2))
        kept = jnp.sum(jnp.where(inside, a, 0), axis=0)
        return jnp.where(jnp.any(inside, axis=0), kept, jnp.inf).astype(a.dtype)

    hit = pieces["hit"][:max_events]

    def recorded(a):
        mask = hit.reshape(hit.shape + (1,) * (a.ndim - 1))
        return jnp.where(mask, a[:max_events], jnp.inf)

    record = EventRecord(
        times=recorded(pieces["tau"]),
        states=jtu.tree_map(recorded, pieces["x_minus"]),
        indices=jnp.where(hit, pieces["which"][:max_events], -1).astype(jnp.int32),
        count=jnp.sum(hit, dtype=jnp.int32),
    )
    stats = {key: jnp.sum(value, axis=0) for key, value in pieces["stats"].items()}
    cost = jnp.sum(pieces["cost"], axis=0)
    return cost, jtu.tree_map(saved, pieces["xs"]), stats, result, record
