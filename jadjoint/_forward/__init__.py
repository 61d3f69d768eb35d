"""The forward solve, and what it keeps for the backward pass: the solver's state at
each segment's start, each segment's dense output regenerated from it."""

from ._integrate import (
    Forward as Forward,
    consistent_initial_state as consistent_initial_state,
    integrate as integrate,
    step_dense_info as step_dense_info,
)
from ._restart_state import storage_rows as storage_rows
from ._restarts import (
    integrate_in_segments as integrate_in_segments,
    segment_dense as segment_dense,
    span_restarts as span_restarts,
)
from ._segments import Segment as Segment, Storage as Storage
