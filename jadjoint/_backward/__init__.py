"""The backward pass: the adjoint system, integrated from `T` back to `t0` over the
segments of the forward solution, along the forward steps where the observations are
injected and by diffrax solves between the save times elsewhere."""

from ._along_steps import integrate_along_steps as integrate_along_steps
from ._diffrax_solves import (
    rates_along as rates_along,
    solve_across_saves as solve_across_saves,
    solve_backwards as solve_backwards,
)
from ._injection import (
    injected_observations as injected_observations,
    injects_through as injects_through,
)
from ._jumps import Jumps as Jumps, SavedCotangents as SavedCotangents
from ._sweep import backward_sweep as backward_sweep
from ._system import (
    AdjointSystem as AdjointSystem,
    Params as Params,
    time_gradients as time_gradients,
)
