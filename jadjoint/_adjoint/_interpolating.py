"""`InterpolatingAdjoint`, and the base of the methods that read `x(t)` from the
forward solve's dense output, stored in segments."""

import equinox as eqx

from .._backward import (
    AlongForwardSteps,
    BetweenSaveTimes,
    CarriedIntegral,
    SavedCotangents,
    injects_through,
)
from .._forward import SegmentedStorage
from ._method import AbstractContinuousAdjoint

# The default `segment_steps`: too short, and a solve spans several segments, all but
# the last regenerated; too long, and under `vmap` every step selects over a dense
# buffer that no longer fits in cache (the measurements: `docs/choosing.md`).
SEGMENT_STEPS = 128


class AbstractSegmentedAdjoint(AbstractContinuousAdjoint):
    """A method that reads `x(t)` from the forward solve's dense output, stored in
    segments of at most `segment_steps` steps and regenerated one at a time
    (`jadjoint/_forward/_restarts.py`), and injects the observations through each
    segment's steps where it can (`jadjoint/_backward/_injection.py`)."""

    segment_steps: eqx.AbstractVar[int]
    recompute_stages: eqx.AbstractVar[bool]

    def __check_init__(self):
        if not isinstance(self.recompute_stages, bool):
            raise ValueError(
                f"`recompute_stages` must be True or False, got "
                f"{self.recompute_stages!r}."
            )
        if not isinstance(self.segment_steps, int) or self.segment_steps < 4:
            # A segment restarts at its last accepted step, not at the controller's
            # proposal (not part of diffrax's saved state): with one or two steps a
            # segment, the step size could hardly grow.
            raise ValueError(
                f"`segment_steps` must be an integer of at least 4, got "
                f"{self.segment_steps!r}."
            )

    def storage(self):
        return SegmentedStorage(self.segment_steps)


class InterpolatingAdjoint(AbstractSegmentedAdjoint):
    """Integrates `(w, ∫ p̄)` backwards, with `x(t)` read from a dense interpolant of
    the forward solution. Stable on stiff and dissipative problems.

    **Arguments:**

    - `segment_steps`: the forward solve runs in segments of at most this many
        steps (default 128) and stores the solver's state at the start of each; the
        backward pass regenerates one segment's dense output at a time from it
        ([how it works][the-forward-solution-in-the-backward-pass]). Memory is
        `⌈max_steps / segment_steps⌉` stored states plus `segment_steps` dense
        steps, whatever the steps taken; a solve of at most `segment_steps` steps
        recomputes nothing, a longer one recomputes all but its last segment once
        (at most one extra forward solve). Above 4096 steps (`max_steps`) the stored
        states are thinned instead, to `⌈4096 / segment_steps⌉` and one span of
        segments: memory no longer grows with `max_steps`, and a solve that has
        taken over 4096 steps pays a second extra forward solve.
    - `recompute_stages`: where saved states are differentiated with an explicit
        Runge–Kutta solver, the backward pass linearises each forward step; with
        `True` that linearisation keeps only the results of matrix products, and
        the vector field's other intermediates are computed again when it is
        transposed (`jax.checkpoint` with `jax.checkpoint_policies.dots_saveable`
        around each stage). It pays where the vector field's VJP keeps much more
        than it computes, as a normalising flow's exact Jacobian trace does, and
        costs elsewhere: measurements in [choosing a method][recomputing-the-stages].
        Default `False`.

    The gradient is as accurate as the interpolant (of the solver's order). With an
    explicit Runge–Kutta solver the backward pass follows the forward steps, one
    segment at a time, by a loop of jadjoint's own: where saved states are
    differentiated, their cotangents are injected through the forward steps'
    interpolants and the adjoint is carried across each forward step by the step's
    own derivative (one VJP a step), guarded by the adjoint's embedded error
    estimate, a step that fails it integrated by the continuous adjoint under its
    own error control; otherwise the continuous adjoint is integrated along the
    forward steps. With other solvers, by one diffrax solve per interval between
    save times ([how it works][the-jumps-at-the-save-times]).

    !!! cite "References"

        Chen, Rubanova, Bettencourt & Duvenaud, "Neural ordinary differential
        equations", NeurIPS 2018 (the adjoint); Serban & Hindmarsh, "CVODES: the
        sensitivity-enabled ODE solver in SUNDIALS", ACM TOMS 2005 (the checkpoints
        every few steps).
    """

    segment_steps: int = eqx.field(static=True, default=SEGMENT_STEPS)
    recompute_stages: bool = eqx.field(static=True, default=False)

    def backward_integrator(self, *, t0, ts, xbar, options):
        cotangents = SavedCotangents(t0, ts, xbar)
        if injects_through(options.solver):
            return AlongForwardSteps(cotangents, recompute_stages=self.recompute_stages)
        return BetweenSaveTimes(cotangents, CarriedIntegral())
