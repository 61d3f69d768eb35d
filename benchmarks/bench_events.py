"""Events: gradient time against the forward solve, central finite differences and
diffrax's terminating events differentiated by `RecursiveCheckpointAdjoint` (RCA).

- The bouncing ball (`ḣ = v`, `v̇ = −g`, `v⁺ = −r v⁻` at `h = 0` going down), `θ =
  (g, r, h0)`, over `[0, 2.6]` (three impacts), 20 save times; the loss sums the
  impact times and the squared heights.
- Its terminating variant, the drop to the first impact, which diffrax supports:
  the loss is the impact time plus the squared heights at the 10 save times before
  it. jadjoint's terminating `Event` against `diffrax.Event` (optimistix Newton,
  the same tolerance), both Tsit5.
- Threshold dosing (`ċ = −k c`, a dose whenever `c` falls to `c_min`), three doses
  over `[0, 10]`, 12 observations and `∫ c² dt`, gradient with respect to `(k, D,
  c_min)`.

Tsit5 at rtol = atol = 1e-8, float64, one thread. Times are medians of interleaved
calls in one process (each after its compile). Finite differences are central: two
forward solves per parameter, timed as such (`2 n_θ × forward`). Gradient errors
are relative to the closed form (the ball) or to central differences at rtol 1e-12
(dosing).

Run: python benchmarks/bench_events.py [--rounds N]
"""

import argparse
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optimistix as optx  # noqa: E402
from _timing import interleaved_medians  # noqa: E402

import jadjoint as ja  # noqa: E402

TOL = dict(rtol=1e-8, atol=1e-8)
T_BALL = 2.6
TS_BALL = jnp.linspace(0.05, 2.55, 20)
TS_DROP = jnp.linspace(0.05, 0.6, 10)
THETA_BALL = jnp.array([9.81, 0.8, 2.0])


def falling(x, p, t):
    return jnp.stack([x[1], -p[0] * jnp.ones_like(x[1])])


def ball_solution(theta, saveat, event, max_events):
    return ja.solve(
        ja.Problem.explicit(falling),
        theta[:2],
        0.0,
        T_BALL,
        jnp.stack([theta[2], 0.0]),
        saveat=saveat,
        events=event,
        max_events=max_events,
        **TOL,
    )


def ball_loss(theta):
    bounce = ja.Event(
        lambda x, p, t: x[0],
        lambda x, p, t: jnp.stack([x[0], -p[1] * x[1]]),
        direction=False,
    )
    solution = ball_solution(theta, TS_BALL, bounce, max_events=4)
    times = jnp.where(jnp.isfinite(solution.event_times), solution.event_times, 0.0)
    return jnp.sum(times) + jnp.sum(solution.xs[:, 0] ** 2)


def drop_loss_jadjoint(theta):
    impact = ja.Event(lambda x, p, t: x[0], terminate=True)
    solution = ball_solution(theta, TS_DROP, impact, max_events=1)
    return solution.event_times[0] + jnp.sum(solution.xs[:, 0] ** 2)


def drop_loss_diffrax(theta):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, x, p: falling(x, p, t)),
        diffrax.Tsit5(),
        0.0,
        T_BALL,
        None,
        jnp.stack([theta[2], 0.0]),
        args=theta[:2],
        saveat=diffrax.SaveAt(ts=TS_DROP, t1=True),
        stepsize_controller=diffrax.PIDController(**TOL),
        event=diffrax.Event(lambda t, y, args, **_: y[0], optx.Newton(1e-10, 1e-10)),
        adjoint=diffrax.RecursiveCheckpointAdjoint(),
    )
    return solution.ts[-1] + jnp.sum(solution.ys[:-1, 0] ** 2)


def ball_closed_form(theta):
    """`ball_loss` exactly (three impacts before `T_BALL`)."""
    g, r, h0 = theta
    speed = jnp.sqrt(2 * g * h0)
    impacts, launch = [speed / g], [0.0]
    for k in range(1, 4):
        launch.append(r**k * speed)
        impacts.append(impacts[-1] + 2 * launch[-1] / g)
    impacts = jnp.stack(impacts)
    starts = jnp.concatenate([jnp.zeros(1), impacts[:-1]])
    k = jnp.sum(impacts[None, :] <= TS_BALL[:, None], axis=1)
    s = TS_BALL - starts[k]
    heights = jnp.where(k == 0, h0, 0.0) + jnp.stack(launch)[k] * s - g * s**2 / 2
    return jnp.sum(jnp.where(impacts <= T_BALL, impacts, 0.0)) + jnp.sum(heights**2)


def drop_closed_form(theta):
    g, _, h0 = theta
    return jnp.sqrt(2 * h0 / g) + jnp.sum((h0 - g * TS_DROP**2 / 2) ** 2)


DOSING_P = jnp.array([0.5, 0.8, 0.3])
TS_DOSING = jnp.linspace(0.4, 9.5, 12)


def dosing_loss(theta, tol=TOL):
    solution = ja.solve(
        ja.Problem.explicit(
            lambda x, p, t: -p[0] * x, f=lambda x, p, t: 0.1 * jnp.sum(x**2)
        ),
        theta,
        0.0,
        10.0,
        jnp.array([1.0]),
        saveat=TS_DOSING,
        events=ja.Event(
            lambda x, p, t: x[0] - p[2], lambda x, p, t: x + p[1], direction=False
        ),
        max_events=6,
        **tol,
    )
    return jnp.sum((solution.xs[:, 0] - jnp.linspace(1.0, 0.4, 12)) ** 2) + (
        solution.cost
    )


def central_differences(loss, theta, step=1e-6):
    rows = []
    for i in range(theta.size):
        h = step * max(1.0, abs(float(theta[i])))
        e = jnp.zeros_like(theta).at[i].set(h)
        rows.append((loss(theta + e) - loss(theta - e)) / (2 * h))
    return jnp.stack(rows)


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def timed(functions: dict, theta, rounds: int) -> dict:
    """Medians (ms) of interleaved calls."""
    medians = interleaved_medians(functions, theta, rounds)
    return {name: 1e3 * seconds for name, seconds in medians.items()}


def main(rounds: int):
    rows = []

    forward = jax.jit(ball_loss)
    gradient = jax.jit(jax.grad(ball_loss))
    times = timed({"forward": forward, "gradient": gradient}, THETA_BALL, rounds)
    error = relative_error(gradient(THETA_BALL), jax.grad(ball_closed_form)(THETA_BALL))
    rows.append(("bouncing ball (3 impacts, 20 saves)", "jadjoint", times, error, 3))

    jadjoint_drop = jax.grad(drop_loss_jadjoint)
    diffrax_drop = jax.grad(drop_loss_diffrax)
    functions = {
        "forward": jax.jit(drop_loss_jadjoint),
        "gradient": jax.jit(jadjoint_drop),
        "diffrax forward": jax.jit(drop_loss_diffrax),
        "diffrax gradient": jax.jit(diffrax_drop),
    }
    times = timed(functions, THETA_BALL, rounds)
    exact = jax.grad(drop_closed_form)(THETA_BALL)
    drop_errors = {
        "jadjoint": relative_error(functions["gradient"](THETA_BALL), exact),
        "diffrax": relative_error(functions["diffrax gradient"](THETA_BALL), exact),
    }
    rows.append(
        (
            "drop to the first impact (terminating)",
            "jadjoint",
            times,
            drop_errors["jadjoint"],
            3,
        )
    )

    forward = jax.jit(dosing_loss)
    gradient = jax.jit(jax.grad(dosing_loss))
    times = timed({"forward": forward, "gradient": gradient}, DOSING_P, rounds)
    tight = jax.jit(lambda th: dosing_loss(th, dict(rtol=1e-12, atol=1e-12)))
    error = relative_error(gradient(DOSING_P), central_differences(tight, DOSING_P))
    rows.append(("threshold dosing (3 doses, 12 obs + ∫)", "jadjoint", times, error, 3))

    print(
        "| problem | forward ms | gradient ms | gradient ÷ forward | central "
        "differences ms (2 n_θ forwards) | gradient error |"
    )
    print("|---|---|---|---|---|---|")
    for name, _, t, err, n in rows:
        print(
            f"| {name} | {t['forward']:.2f} | {t['gradient']:.2f} | "
            f"{t['gradient'] / t['forward']:.2f} | {2 * n * t['forward']:.2f} | "
            f"{err:.1e} |"
        )
    drop = rows[1][2]
    print()
    print("| drop to the first impact | forward ms | gradient ms | gradient error |")
    print("|---|---|---|---|")
    print(
        f"| jadjoint (terminating `Event`) | {drop['forward']:.2f} | "
        f"{drop['gradient']:.2f} | {drop_errors['jadjoint']:.1e} |"
    )
    print(
        f"| diffrax RCA (`diffrax.Event`) | {drop['diffrax forward']:.2f} | "
        f"{drop['diffrax gradient']:.2f} | {drop_errors['diffrax']:.1e} |"
    )
    print(
        f"| jadjoint ÷ diffrax | {drop['forward'] / drop['diffrax forward']:.2f} | "
        f"{drop['gradient'] / drop['diffrax gradient']:.2f} | |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    main(parser.parse_args().rounds)
