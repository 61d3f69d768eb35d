"""The forward solve, and what it keeps for the backward pass (a storage): the
solver's state at each segment's start, each segment's dense output regenerated
from it; or the states at the save times only."""

from ._integrate import (
    Forward as Forward,
    consistent_initial_state as consistent_initial_state,
    integrate as integrate,
    step_dense_info as step_dense_info,
)
from ._segments import Segments as Segments
from ._sensitivities import forward_sensitivities as forward_sensitivities
from ._storage import (
    AbstractStorage as AbstractStorage,
    SaveTimeStorage as SaveTimeStorage,
    SegmentedStorage as SegmentedStorage,
)
