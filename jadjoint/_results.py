"""The outcome of a solve: diffrax's `RESULTS`, extended with the failures of the
Newton and linear solves that jadjoint adds around diffrax's integration.

The result is the forward pass's one channel: each stage reports its outcome as a
`RESULTS` value, [`jadjoint.solve`][] keeps the first failure and raises it once
(with `throw`), and the backward rule raises the failure of the forward pass it
differentiates. Run-time checks with no result to report to (inside the vector
field diffrax integrates, and in the backward pass) raise where they are."""

import diffrax

_SINGULAR = (
    "is singular or the solve failed. Problem(h) and Problem.mass_matrix with "
    "M(x, p, t) need h_ẋ (M) nonsingular along the solution. A differential-algebraic "
    "system (singular h_ẋ) is supported in the index-1 DAE forms: "
    "Problem.semi_explicit(a, b) (ẏ = a(y, z, p, t), 0 = b(y, z, p, t)) and "
    "Problem.mass_matrix with a constant singular M (concrete when the Problem is "
    "built, i.e. outside jax.jit)."
)
NEWTON_FAILED = "Newton's method for ẋ in h(x, ẋ, p, t) = 0 did not converge: h_ẋ " + (
    _SINGULAR
)
SINGULAR_MASS = "The mass matrix M " + _SINGULAR
SINGULAR_TRANSPOSE = "The transposed solve h_ẋᵀ λ = w in the adjoint: h_ẋ " + _SINGULAR
ALGEBRAIC_FAILED = (
    "Newton's method for the algebraic variables z in b(y, z, p, t) = 0 did not "
    "converge (at a save time, or where the integration stopped). An index-1 DAE "
    "needs b_z nonsingular along the solution and a root z near the starting guess "
    "(the z of x0 at t0, then the consistent z(t0))."
)
INITIALISATION_FAILED = (
    "The initial condition could not be solved for: Newton's method for x0 in "
    "g(x0, p) = 0 (for a DAE: (y0, z0) in g(x0, p) = 0, b(y0, z0, p, t0) = 0, or z0 "
    "in b(y0, z0, p, t0) = 0) did not converge from the x0 given. Give a better "
    "starting guess x0; g must have as many equations as x0 (for a DAE, as y0) has "
    "components, with g_x0 (and b_z) nonsingular."
)

NONFINITE_PARAMETERS = "`p` or `x0` contains NaN or inf."
NONFINITE_OUTPUT = (
    "The forward solve produced a non-finite cost or state (NaN or inf): the "
    "solution may blow up on [t0, t1], or `f`, `h` may be undefined there."
)
TOO_MANY_EVENTS = (
    "More events occurred than `max_events` allows: raise `max_events` in "
    "jadjoint.solve (or check that an event does not fire again at once, at the "
    "start of the next piece: give it a `direction`)."
)


class RESULTS(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """What [`jadjoint.Solution`][]`.result` can be: every outcome of
    `diffrax.RESULTS` (`successful`, `max_steps_reached`, …) and:

    - `newton_failed`: Newton's method for `ẋ` in `h(x, ẋ, p, t) = 0` did not
        converge (`h_ẋ` singular, or no root near the guess);
    - `singular_mass_matrix`: the mass matrix `M` of `Problem.mass_matrix` is
        singular where the solve needed it;
    - `initialisation_failed`: `g(x0, p) = 0` (or a DAE's consistent initialisation)
        could not be solved from the `x0` given;
    - `algebraic_failed`: Newton's method for a DAE's algebraic variables `z` in
        `b(y, z, p, t) = 0` did not converge;
    - `nonfinite_parameters`: `p` or `x0` holds a NaN or an infinity;
    - `nonfinite_output`: the forward solve gave a non-finite cost or state;
    - `too_many_events`: more events occurred than `max_events`.

    Compare with `==`, e.g. `solution.result == jadjoint.RESULTS.successful`; a
    `diffrax.RESULTS` item converts with `jadjoint.RESULTS.promote(item)`.
    """

    newton_failed = NEWTON_FAILED
    singular_mass_matrix = SINGULAR_MASS
    initialisation_failed = INITIALISATION_FAILED
    algebraic_failed = ALGEBRAIC_FAILED
    nonfinite_parameters = NONFINITE_PARAMETERS
    nonfinite_output = NONFINITE_OUTPUT
    too_many_events = TOO_MANY_EVENTS


def failure_if(failed, failure: RESULTS) -> RESULTS:
    """`failure` where `failed`, else `successful`."""
    return RESULTS.where(failed, failure, RESULTS.successful)


def first_failure(*results: RESULTS) -> RESULTS:
    """The first of `results` that is not `successful` (in the order the solve meets
    them), or `successful`."""
    outcome = RESULTS.successful
    for result in reversed(results):
        outcome = RESULTS.where(result != RESULTS.successful, result, outcome)
    return outcome
