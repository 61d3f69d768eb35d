"""Events: state resets, terminations and time-triggered doses, differentiated through
the jump conditions, against closed forms, central differences and diffrax.

References and tolerances (every solve at rtol = atol = 1e-10, each event located to
Newton's tolerance, 1e-13, so values and derivatives are within about 1e-9 of the
exact ones):
- a bouncing ball with restitution (`ḣ = v`, `v̇ = −g`, `v⁺ = −r v⁻` where `h`
  crosses zero downwards): the impact times, the heights at the save times, their
  Jacobian with respect to `(g, r, h0)` and a Hessian-vector product against the
  closed form differentiated by JAX; under `vmap` over drop heights with 2 to 5
  impacts, to 1e-7;
- the time for `ẋ = a x` to reach a threshold `θ` (a terminating event whose
  condition depends on `θ`, written as an implicit `h`): `τ = ln(θ/x0)/a` and
  `∫_0^τ x dt = (θ − x0)/a`, their derivatives in closed form (reverse and forward
  mode), and diffrax's terminating event differentiated by
  `RecursiveCheckpointAdjoint`, to 1e-7;
- a dose at a parameter-dependent time (mass-matrix form, `V ċ = −CL c`, `c += D/V`
  at `t_d`): the concentrations, the area under the curve and the gradient of a
  weighting of them in closed form, to 1e-7;
- a threshold-triggered dosing model with several doses, observations and an
  integral cost, every adjoint method against central differences (step 1e-6
  relative: truncation 1e-12, the solve's error 1e-10 divided by the step, so
  1e-5).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from helpers import central_difference, max_relative_error

import jadjoint as ja

TOL = dict(rtol=1e-10, atol=1e-10)

# The bouncing ball: `θ = (g, r, h0)`.
T_BALL = 2.6
TS_BALL = jnp.array([0.3, 1.0, 2.0, 2.6])
BALL_EVENTS = 6


def falling(x, p, t):
    return jnp.stack([x[1], -p[0] * jnp.ones_like(x[1])])


BOUNCE = ja.Event(
    lambda x, p, t: x[0],
    lambda x, p, t: jnp.stack([x[0], -p[1] * x[1]]),
    direction=False,
)
BALL = ja.Problem.explicit(falling)


def ball(theta):
    """The impact times (`inf` past the last) and the heights at `TS_BALL`."""
    solution = ja.solve(
        BALL,
        theta[:2],
        0.0,
        T_BALL,
        jnp.stack([theta[2], 0.0]),
        saveat=TS_BALL,
        events=BOUNCE,
        max_events=BALL_EVENTS,
        **TOL,
    )
    return solution.event_times, solution.xs[:, 0], solution.num_events


def ball_closed_form(theta):
    """The same, exactly: the ball falls `h0` in `√(2 h0 / g)`, then each flight
    starts at the speed `r^k √(2 g h0)` and lasts twice that over `g`."""
    g, r, h0 = theta
    speed = jnp.sqrt(2 * g * h0)
    impacts, launch_speeds = [speed / g], [0.0]
    for k in range(1, BALL_EVENTS):
        launch_speeds.append(r**k * speed)
        impacts.append(impacts[-1] + 2 * launch_speeds[-1] / g)
    impacts = jnp.stack(impacts)
    starts = jnp.concatenate([jnp.zeros(1), impacts[:-1]])
    heights = []
    for t in TS_BALL:
        k = jnp.sum(impacts <= t)
        s = t - starts[k]
        start_height = jnp.where(k == 0, h0, 0.0)
        heights.append(start_height + jnp.stack(launch_speeds)[k] * s - g * s**2 / 2)
    occurred = impacts <= T_BALL
    return jnp.where(occurred, impacts, jnp.inf), jnp.stack(heights), jnp.sum(occurred)


def finite_part(tree):
    return jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), tree)


# Weights of the ball's outputs (six impact times, four heights) in a scalar loss.
BALL_WEIGHTS = jnp.linspace(0.5, 1.5, BALL_EVENTS + TS_BALL.size)


def ball_loss(outputs):
    times, heights, _ = outputs
    return jnp.dot(BALL_WEIGHTS, jnp.concatenate([finite_part(times), heights]))


def test_bouncing_ball_under_vmap_against_closed_form():
    """Drop heights with 5, 3 and 2 impacts in one batch: the impact times, heights
    and the gradient of a weighting of them with respect to `(g, r, h0)`."""
    thetas = jnp.array([[9.81, 0.8, 1.0], [9.81, 0.8, 2.0], [9.0, 0.7, 4.0]])

    def member(theta):
        def loss(theta):
            outputs = ball(theta)
            return ball_loss(outputs), outputs

        (_, (times, heights, count)), gradient = jax.value_and_grad(loss, has_aux=True)(
            theta
        )
        return times, heights, count, gradient

    times, heights, counts, gradients = jax.jit(jax.vmap(member))(thetas)
    for i, theta in enumerate(thetas):
        exact_times, exact_heights, exact_count = ball_closed_form(theta)
        assert counts[i] == exact_count
        assert (
            max_relative_error(finite_part(times[i]), finite_part(exact_times)) < 1e-8
        )
        assert max_relative_error(heights[i], exact_heights) < 1e-8
        exact_gradient = jax.grad(lambda th: ball_loss(ball_closed_form(th)))(theta)
        assert max_relative_error(gradients[i], exact_gradient) < 1e-7
    assert list(counts) == [5, 3, 2]


def test_bouncing_ball_hessian_against_closed_form():
    """Forward over reverse through the events: the second-order terms of the event
    time's offset (`jadjoint/_events/_pieces.py`) make it exact."""
    theta = jnp.array([9.81, 0.8, 2.0])
    v = jnp.array([0.3, -1.0, 0.5])

    def loss(outputs):
        times, heights, _ = outputs
        return jnp.sum(finite_part(times) ** 2) + jnp.sum(heights**2)

    hvp = jax.jit(lambda th: ja.hvp(lambda th: loss(ball(th)), th, v))(theta)
    expected = jax.jvp(jax.grad(lambda th: loss(ball_closed_form(th))), (theta,), (v,))[
        1
    ]
    assert max_relative_error(hvp, expected) < 1e-6


def growth_to_threshold(theta, *, implicit: bool = True):
    """`ẋ = a x` from `x0` until `x = θ` (`theta = (a, θ, x0)`), as an implicit
    `h` (or explicitly): the event time, the state there and `∫_0^τ x dt`."""
    cost = lambda x, p, t: jnp.sum(x)
    problem = ja.Problem.explicit(lambda x, p, t: p[0] * x, f=cost)
    if implicit:
        problem = ja.Problem(lambda x, xdot, p, t: xdot - p[0] * x, f=cost)
    reached = ja.Event(lambda x, p, t: x[0] - p[1], terminate=True)
    solution = ja.solve(
        problem,
        theta[:2],
        0.0,
        10.0,
        theta[2:],
        saveat=jnp.array([0.5, 10.0]),
        events=reached,
        max_events=1,
        **TOL,
    )
    return jnp.stack(
        [solution.event_times[0], solution.event_states[0, 0], solution.cost]
    ), solution.xs


def threshold_closed_form(theta):
    """`(τ, x(τ), ∫_0^τ x dt)` of `growth_to_threshold`."""
    a, threshold, x0 = theta
    return jnp.stack([jnp.log(threshold / x0) / a, threshold, (threshold - x0) / a])


def test_terminating_event_with_parameter_dependent_condition():
    theta = jnp.array([0.7, 3.0, 1.2])
    a, threshold, x0 = theta
    weights = jnp.array([1.0, 0.5, 2.0])

    def loss(theta):
        outputs, xs = growth_to_threshold(theta)
        return jnp.dot(weights, outputs), (outputs, xs)

    (_, (outputs, xs)), gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        theta
    )

    assert max_relative_error(outputs, threshold_closed_form(theta)) < 1e-8
    exact_gradient = jax.grad(lambda th: jnp.dot(weights, threshold_closed_form(th)))(
        theta
    )
    assert max_relative_error(gradient, exact_gradient) < 1e-7
    # Saved before the event, and `inf` after it.
    assert np.isclose(xs[0, 0], x0 * np.exp(0.5 * a), rtol=1e-8)
    assert np.isinf(xs[1, 0])

    # diffrax's terminating event (the event time through optimistix's implicit
    # function theorem), differentiated through its steps.
    def diffrax_time(theta):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, x, p: p[0] * x),
            diffrax.Tsit5(),
            0.0,
            10.0,
            None,
            theta[2:],
            args=theta[:2],
            stepsize_controller=diffrax.PIDController(**TOL),
            event=diffrax.Event(
                lambda t, y, args, **_: y[0] - args[1], optx.Newton(1e-12, 1e-12)
            ),
        )
        return solution.ts[-1]

    # Our event time's part of the gradient, the rest taken off by the closed form.
    rest = jax.grad(lambda th: jnp.dot(weights[1:], threshold_closed_form(th)[1:]))(
        theta
    )
    time_gradient = (gradient - rest) / weights[0]
    assert max_relative_error(time_gradient, jax.grad(diffrax_time)(theta)) < 1e-7


def test_terminating_event_in_forward_mode():
    """`jax.jacfwd` through a terminating event (the forward sensitivities, then
    the event time's tangent), on the explicit form."""
    theta = jnp.array([0.7, 3.0, 1.2])
    outputs = lambda th: growth_to_threshold(th, implicit=False)[0]
    forward = jax.jit(jax.jacfwd(outputs))(theta)
    assert max_relative_error(forward, jax.jacfwd(threshold_closed_form)(theta)) < 1e-7


def test_dose_at_a_parameter_dependent_time():
    """`V ċ = −CL c` (a mass matrix), a dose `D` at `t_d`: `c(t) = c0 e^{−kt} +
    (D/V) e^{−k(t − t_d)}` from `t_d` on, `k = CL/V`; `∫_0^T c dt` likewise. A save
    time at `t_d` gets the state after the dose (and its derivative from that side)."""
    theta = jnp.array([0.6, 2.0, 3.0, 1.2, 0.5])
    ts = jnp.array([0.5, float(theta[3]), 2.5, 4.0])  # one at the dose time
    horizon = 4.0

    def model(theta):
        clearance, volume, dose, t_dose, c0 = theta
        problem = ja.Problem.mass_matrix(
            lambda x, p, t: p[1] * jnp.eye(1),
            lambda x, p, t: -p[0] * x,
            f=lambda x, p, t: x[0],
        )
        dosed = ja.Event(
            lambda x, p, t: t - p[3],
            lambda x, p, t: x + p[2] / p[1],
            direction=True,
        )
        solution = ja.solve(
            problem,
            theta[:4],
            0.0,
            horizon,
            theta[4:],
            saveat=ts,
            events=dosed,
            max_events=1,
            **TOL,
        )
        return jnp.concatenate([solution.xs[:, 0], solution.cost[None]])

    def exact(theta):
        clearance, volume, dose, t_dose, c0 = theta
        k = clearance / volume
        after = jnp.where(ts >= t_dose, jnp.exp(-k * (ts - t_dose)), 0.0)
        concentrations = c0 * jnp.exp(-k * ts) + dose / volume * after
        area = (c0 * (1 - jnp.exp(-k * horizon))) / k + dose / volume * (
            1 - jnp.exp(-k * (horizon - t_dose))
        ) / k
        return jnp.concatenate([concentrations, area[None]])

    weights = jnp.linspace(1.0, 2.0, ts.size + 1)

    def loss(theta):
        outputs = model(theta)
        return jnp.dot(weights, outputs), outputs

    (_, outputs), gradient = jax.jit(jax.value_and_grad(loss, has_aux=True))(theta)
    assert max_relative_error(outputs, exact(theta)) < 1e-8
    exact_gradient = jax.grad(lambda th: jnp.dot(weights, exact(th)))(theta)
    assert max_relative_error(gradient, exact_gradient) < 1e-7


# Threshold dosing: `ċ = −k c`, a dose `D` whenever `c` falls to `c_min`, observed
# at 12 times, with `∫ c² dt`.
TS_DOSING = jnp.linspace(0.4, 9.5, 12)
DATA = jnp.linspace(1.0, 0.4, 12)
DOSING = ja.Problem.explicit(
    lambda x, p, t: -p["k"] * x, f=lambda x, p, t: 0.1 * jnp.sum(x**2)
)
REDOSE = ja.Event(
    lambda x, p, t: x[0] - p["c_min"],
    lambda x, p, t: x + p["dose"],
    direction=False,
)
DOSING_P = {"k": 0.5, "dose": 0.8, "c_min": 0.3}


def dosing_loss(p, adjoint):
    solution = ja.solve(
        DOSING,
        p,
        0.0,
        10.0,
        jnp.array([1.0]),
        saveat=TS_DOSING,
        adjoint=adjoint,
        events=REDOSE,
        max_events=6,
        **TOL,
    )
    return jnp.sum((solution.xs[:, 0] - DATA) ** 2) + solution.cost, solution


@pytest.fixture(scope="module")
def dosing_reference():
    """Central differences of the dosing loss (one compiled forward solve for every
    method: without a derivative the methods solve alike), and its solution."""
    forward = jax.jit(lambda p: dosing_loss(p, ja.InterpolatingAdjoint()))
    reference = central_difference(lambda p: forward(p)[0], DOSING_P, step=1e-6)
    return reference, forward(DOSING_P)[1]


@pytest.mark.parametrize(
    "adjoint",
    [
        ja.InterpolatingAdjoint(),
        ja.QuadratureAdjoint(),
        ja.BacksolveAdjoint(),
        ja.DiscretiseThenOptimise(),
    ],
    ids=lambda a: type(a).__name__,
)
def test_threshold_dosing_every_method_against_differences(adjoint, dosing_reference):
    reference, solution = dosing_reference
    gradient = jax.jit(jax.grad(lambda p: dosing_loss(p, adjoint)[0]))(DOSING_P)
    assert max_relative_error(gradient, reference) < 1e-5
    # `c` halves-ish between doses: 1 → 0.3 takes ln(1/0.3)/k ≈ 2.4, then
    # ln(1.1/0.3)/k ≈ 2.6 each.
    assert solution.num_events == 3
    assert np.all(np.diff(np.asarray(solution.event_times[:3])) > 0)


class Ball(eqx.Module):
    """The ball's constants as an equinox module, gravity a function of a leaf."""

    log_g: jax.Array
    restitution: jax.Array
    scale: float = eqx.field(static=True)

    def gravity(self):
        return self.scale * jnp.exp(self.log_g)


def test_pytree_state_module_parameters_float32():
    """A dict state, an equinox module as `p` differentiated by `eqx.filter_grad`,
    Python numbers for the times, in float32: the first two impact times against the
    closed form, to float32's accuracy (rtol 1e-6 solves; 1e-4)."""
    problem = ja.Problem.explicit(
        lambda x, p, t: {"h": x["v"], "v": -p.gravity() * jnp.ones_like(x["v"])}
    )
    bounce = ja.Event(
        lambda x, p, t: x["h"],
        lambda x, p, t: {"h": x["h"], "v": -p.restitution * x["v"]},
        direction=False,
    )
    model = Ball(jnp.log(jnp.float32(9.81)), jnp.float32(0.8), 1.0)

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def second_impact(model):
        solution = ja.solve(
            problem,
            model,
            0.0,
            2.0,
            {"h": jnp.float32(2.0), "v": jnp.float32(0.0)},
            events=bounce,
            max_events=3,
            rtol=1e-6,
            atol=1e-6,
        )
        return solution.event_times[1]

    time, grads = second_impact(model)
    assert time.dtype == jnp.float32
    exact = lambda th: ball_closed_form(jnp.stack([th[0], th[1], 2.0]))[0][1]
    g, r = 9.81, 0.8
    assert abs(time - exact(jnp.array([g, r]))) < 1e-4 * exact(jnp.array([g, r]))
    exact_grad = jax.grad(exact)(jnp.array([g, r]))
    # d/d log g = g d/dg.
    assert max_relative_error(grads.log_g, g * exact_grad[0]) < 1e-3
    assert max_relative_error(grads.restitution, exact_grad[1]) < 1e-3


def test_too_many_events_is_a_failure():
    solution = jax.jit(
        lambda theta: ja.solve(
            BALL,
            theta[:2],
            0.0,
            T_BALL,
            jnp.stack([theta[2], 0.0]),
            events=BOUNCE,
            max_events=2,
            throw=False,
        )
    )(jnp.array([9.81, 0.8, 2.0]))
    assert solution.result == ja.RESULTS.too_many_events
    assert np.all(np.isnan(solution.xs))
    assert np.all(np.isnan(solution.event_times))


def test_bad_events_are_refused():
    x0, p = jnp.array([1.0, 0.0]), jnp.array([9.81, 0.8])
    solve = lambda **kw: ja.solve(BALL, p, 0.0, 1.0, x0, **kw)
    with pytest.raises(ValueError, match="condition"):
        solve(events=ja.Event(lambda x, p, t: x))
    with pytest.raises(ValueError, match="update"):
        solve(events=ja.Event(lambda x, p, t: x[0], lambda x, p, t: x[0]))
    with pytest.raises(ValueError, match="terminate"):
        ja.Event(lambda x, p, t: x[0], lambda x, p, t: x, terminate=True)
    with pytest.raises(ValueError, match="direction"):
        ja.Event(lambda x, p, t: x[0], direction=1)
    with pytest.raises(ValueError, match="max_events"):
        solve(events=BOUNCE, max_events=0)
    with pytest.raises(TypeError, match="events"):
        solve(events=[BOUNCE, "bounce"])
    dae = ja.Problem.semi_explicit(
        lambda y, z, p, t: -y + z, lambda y, z, p, t: z - 0.5 * y
    )
    with pytest.raises(ValueError, match="DAE"):
        ja.solve(dae, None, 0.0, 1.0, (jnp.ones(1), jnp.ones(1)), events=BOUNCE)


def test_stiff_kinetics_with_a_feed_event_by_bdf():
    """Robertson kinetics with `log k` as parameters, a feed (`y1 += 0.1` whenever
    `y1` falls to 0.8; three feeds over `[0, 100]`), observations and an integral
    cost, by the BDF: the gradient against central differences of the same solve
    (step 1e-5 on `log k`; observed 2e-6, the solve's rtol 1e-8 divided by the
    step; so 1e-4)."""

    def robertson(x, p, t):
        k1, k2, k3 = jnp.exp(p)
        y1, y2, y3 = x
        return jnp.stack(
            [
                -k1 * y1 + k3 * y2 * y3,
                k1 * y1 - k2 * y2**2 - k3 * y2 * y3,
                k2 * y2**2,
            ]
        )

    problem = ja.Problem.explicit(robertson, f=lambda x, p, t: 1e4 * x[1])
    feed = ja.Event(
        lambda x, p, t: x[0] - 0.8, lambda x, p, t: x.at[0].add(0.1), direction=False
    )

    def loss(log_k):
        solution = ja.solve(
            problem,
            log_k,
            0.0,
            100.0,
            jnp.array([1.0, 0.0, 0.0]),
            saveat=jnp.array([1.0, 10.0, 50.0, 100.0]),
            solver=ja.BDF(),
            rtol=1e-8,
            atol=1e-10,
            events=feed,
            max_events=4,
        )
        observed = jnp.sum(solution.xs[:, 0]) + 1e3 * jnp.sum(solution.xs[:, 1])
        return observed + 1e-3 * solution.cost, solution.num_events

    log_k = jnp.log(jnp.array([0.04, 3e7, 1e4]))
    forward = jax.jit(loss)
    gradient = jax.jit(jax.grad(lambda p: loss(p)[0]))(log_k)
    reference = central_difference(lambda p: forward(p)[0], log_k)
    assert forward(log_k)[1] == 3
    assert max_relative_error(gradient, reference) < 1e-4
