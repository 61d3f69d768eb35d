"""Events: zero crossings of a condition that reset the state or end the solve, and
the solve as pieces between them."""

from ._event import (
    Event as Event,
    as_events as as_events,
    check_events as check_events,
)
from ._pieces import EventRecord as EventRecord, solve_in_pieces as solve_in_pieces
