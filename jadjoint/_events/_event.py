"""`Event`: a zero crossing of `condition(x, p, t)` that resets the state or ends
the solve."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._errors import check_callable, check_returns_like_state, describe
from .._problem import closure_converted


class Event(eqx.Module):
    """An event of [`jadjoint.solve`][]: the time `τ` where `condition(x, p, t)`
    crosses zero, located on the forward solve's dense output.

    At `τ` the state jumps to `update(x⁻, p, τ)` (`x⁻` the state reaching `τ`) and
    the solve goes on from there, or, with `terminate`, the solve ends at `τ`. An
    event without `update` or `terminate` only records its time.

    **Arguments:**

    - `condition`: `condition(x, p, t) -> scalar`, differentiable. It may depend on
        `p` and `t` as well as on the state: `τ` moves with all three, and its
        derivative comes from `condition(x(τ), p, τ) = 0`.
    - `update`: `update(x, p, t) -> x⁺`, shaped like the state: the state after the
        event (a bounce, a dose). `None`: the state does not jump.
    - `terminate`: end the solve at the event. The states saved at times after it
        are `inf` (as diffrax fills them), and so is the rest of the solution's
        event record; the cost is `∫_{t0}^{τ} f dt`.
    - `direction`: `None` for a crossing either way, `True` for an upcrossing only
        (`condition` going from `≤ 0` to `> 0`), `False` for a downcrossing only (as
        `diffrax.Event`). A state reset onto the zero set of `condition` (a ball
        bouncing off the floor at height 0) needs the direction that the reset
        leaves, or the next piece of the solve finds its event at its start.

    **Derivatives.** With `ė = condition_t + condition_x ẋ⁻` the rate at which the
    condition crosses zero, the event time moves by `dτ = −(condition_x dx⁻ +
    condition_p dp) / ė`, and the state after it by `dx⁺ = update_x (dx⁻ + ẋ⁻ dτ)
    + update_p dp + update_t dτ`, where `dx⁻` is the change of the state at the
    fixed time `τ`. In the adjoint these are the jump conditions of
    [How it works](../how-it-works.md#events), which the solve gets by
    differentiating the pieces between the events, for every adjoint method, in
    forward mode and to second order. A grazing crossing (`ė = 0`) has no
    derivative.
    """

    condition: Callable
    update: Callable | None = None
    terminate: bool = eqx.field(default=False, static=True)
    direction: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        check_callable(self.condition, "Event.condition")
        check_callable(self.update, "Event.update", optional=True)
        if self.terminate and self.update is not None:
            raise ValueError(
                "An `Event` with `terminate=True` ends the solve, so it takes no "
                "`update`."
            )
        if not (self.direction is None or isinstance(self.direction, bool)):
            raise ValueError(
                "`Event.direction` must be `None`, `True` (upcrossings) or `False` "
                f"(downcrossings), got {self.direction!r}."
            )

    def with_static_parameters(self, static: PyTree) -> "Event":
        """The event whose functions take the array leaves of the parameters and call
        the user's with `eqx.combine(p, static)` (as
        `Problem.with_static_parameters`)."""
        if not jtu.tree_leaves(static):
            return self

        def wrapped(fn):
            if fn is None:
                return None
            return lambda x, p, t: fn(x, eqx.combine(p, static), t)

        return Event(
            wrapped(self.condition),
            wrapped(self.update),
            self.terminate,
            self.direction,
        )

    def closure_converted(self, x: PyTree, p: PyTree, t) -> "Event":
        """The event with its functions closure-converted at `(x, p, t)`, so that the
        arrays they close over are leaves (which the location of the event, not
        differentiated, stops)."""
        return Event(
            closure_converted(self.condition, x, p, t),
            closure_converted(self.update, x, p, t),
            self.terminate,
            self.direction,
        )


def as_events(events: Event | Sequence[Event] | None) -> tuple[Event, ...]:
    """`solve`'s `events` argument as a tuple, checked."""
    if events is None:
        return ()
    if isinstance(events, Event):
        return (events,)
    events = tuple(events)
    for event in events:
        if not isinstance(event, Event):
            raise TypeError(
                "`events` must be a `jadjoint.Event` or a sequence of them, got an "
                f"element of type {type(event).__name__}."
            )
    return events


def check_events(events: tuple[Event, ...], x0: PyTree, p: PyTree, t0) -> None:
    """Trace each event's functions once on abstract inputs: `condition` must return
    a real scalar, `update` a state shaped like `x0`."""
    for event in events:
        out = jax.eval_shape(event.condition, x0, p, t0)
        leaves = jtu.tree_leaves(out)
        if len(leaves) != 1 or leaves[0].shape != () or leaves[0].dtype.kind != "f":
            raise ValueError(
                "`Event.condition(x, p, t)` must return a real floating-point "
                f"scalar, got {describe(out)}."
            )
        if event.update is not None:
            check_returns_like_state(
                event.update,
                (x0, p, t0),
                x0,
                "`Event.update(x, p, t)`",
                "the state after the event, shaped like `x0`",
            )
