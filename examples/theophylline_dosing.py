"""Theophylline: a pharmacokinetic model fitted to a measured curve, then a dosing
schedule optimised through its dose events.

Data: subject 1 of the theophylline study of Boeckmann, Sheiner & Beal (1994), as R's
`datasets::Theoph`: 4.02 mg/kg of theophylline by mouth (79.6 kg, so 320 mg) and the
serum concentration at 11 times over 24 h (`examples/data/theophylline_subject1.csv`).

Model: one compartment with first-order absorption, the drug in the gut `A` (mg)
and its serum concentration `C` (mg/L),

    Ȧ = −k_a A,    Ċ = k_a A / V − k_e C,

1. Fit `(k_a, k_e, V)` to the curve by Levenberg–Marquardt (optimistix, on
   forward-mode Jacobians through `jadjoint.solve`), from `C(0)` = 0.74 mg/L.
2. With the fitted model, choose the first dose and when to give three more and how
   large (`t_k`, `D_k`) so that over two days the concentration stays in
   theophylline's therapeutic window, 10–20 mg/L: each later dose is a
   `jadjoint.Event` at `t_k` (`A += D_k`), and a rescue dose of 100 mg is given
   whenever `C` falls to 8 mg/L (an event triggered by the state). The loss,
   `∫ w(t) (max(10 − C, 0)² + max(C − 20, 0)²) dt / 48 h` (`w` ignoring the first
   4 h of absorption), is minimised by Adam: its gradient with respect to the dose
   times flows through the events' jump conditions.

Writes `theophylline_dosing.png`: the data and the fit; the schedule before and after.

Run: python examples/theophylline_dosing.py [--quick] [--out FOLDER]
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import optimistix as optx  # noqa: E402

import jadjoint as ja  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data" / "theophylline_subject1.csv"
DOSE_MG = 4.02 * 79.6
WINDOW = (10.0, 20.0)
HORIZON = 48.0
RESCUE_MG, RESCUE_AT = 100.0, 8.0
START_TIMES = jnp.array([8.0, 16.0, 24.0])
START_DOSES = jnp.full(3, DOSE_MG)


def load_curve():
    table = np.loadtxt(DATA, delimiter=",", skiprows=1)
    return jnp.asarray(table[:, 0]), jnp.asarray(table[:, 1])


def absorption(x, p, t):
    """`(Ȧ, Ċ)`; `p["log_rates"] = log(k_a, k_e, V)`."""
    k_a, k_e, volume = jnp.exp(p["log_rates"])
    gut, concentration = x
    return jnp.stack([-k_a * gut, k_a * gut / volume - k_e * concentration])


def concentrations(log_rates, times, c0):
    """`C` at `times` after one dose at 0."""
    problem = ja.Problem.explicit(absorption)
    solution = ja.solve(
        problem,
        {"log_rates": log_rates},
        0.0,
        times[-1],
        jnp.stack([DOSE_MG, c0]),
        saveat=times,
        rtol=1e-8,
        atol=1e-8,
    )
    return solution.xs[:, 1]


def fit(times, measured, max_steps):
    """`log(k_a, k_e, V)` by Levenberg–Marquardt, from `(1, 0.1, 30)`."""

    @jax.jit
    def solve(start):
        return optx.least_squares(
            lambda log_rates, _: (
                concentrations(log_rates, times[1:], measured[0]) - measured[1:]
            ),
            optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8),
            start,
            max_steps=max_steps,
            throw=False,
        ).value

    return solve(jnp.log(jnp.array([1.0, 0.1, 30.0])))


def outside_window(x, p, t):
    """The running loss: squared excursions out of the window, after 4 h."""
    low, high = WINDOW
    concentration = x[1]
    weight = jax.nn.sigmoid(4.0 * (t - 4.0))
    return weight * (
        jnp.maximum(low - concentration, 0.0) ** 2
        + jnp.maximum(concentration - high, 0.0) ** 2
    )


def schedule_events(count: int) -> list:
    """Dose `k` at `p["times"][k]` into the gut; the rescue dose when `C` falls
    to `RESCUE_AT`."""
    doses = [
        ja.Event(
            lambda x, p, t, k=k: t - p["times"][k],
            lambda x, p, t, k=k: x.at[0].add(p["doses"][k]),
            direction=True,
        )
        for k in range(count)
    ]
    rescue = ja.Event(
        lambda x, p, t: x[1] - RESCUE_AT,
        lambda x, p, t: x.at[0].add(RESCUE_MG),
        direction=False,
    )
    return [*doses, rescue]


def regimen(schedule, log_rates, saveat=None):
    """The solve over the horizon from the first dose at 0, with `schedule`'s."""
    problem = ja.Problem.explicit(absorption, f=outside_window)
    p = {**schedule, "log_rates": log_rates}
    return ja.solve(
        problem,
        p,
        0.0,
        HORIZON,
        jnp.stack([schedule["first"], 0.0]),
        saveat=saveat,
        events=schedule_events(schedule["times"].size),
        max_events=8,
        rtol=1e-7,
        atol=1e-7,
    )


def optimise(log_rates, steps):
    """Adam on the dose times and the log doses; the loss at each step."""
    start = {
        "times": START_TIMES,
        "log_doses": jnp.log(START_DOSES),
        "log_first": jnp.log(DOSE_MG),
    }

    def loss(theta):
        return regimen(as_schedule(theta), log_rates).cost / HORIZON

    optimiser = optax.adam(0.05)

    @jax.jit
    def step(theta, state):
        value, gradient = jax.value_and_grad(loss)(theta)
        updates, state = optimiser.update(gradient, state)
        return optax.apply_updates(theta, updates), state, value

    theta, state = start, optimiser.init(start)
    losses = []
    for _ in range(steps):
        theta, state, value = step(theta, state)
        losses.append(float(value))
    # The loss at the last `theta`: one more step's value (its update dropped), so
    # that the loss alone is not compiled as well.
    losses.append(float(step(theta, state)[2]))
    return start, theta, losses


def as_schedule(theta):
    return {
        "times": theta["times"],
        "doses": jnp.exp(theta["log_doses"]),
        "first": jnp.exp(theta["log_first"]),
    }


def plot(curve, log_rates, schedules, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, measured = curve
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    fine = jnp.linspace(0.0, times[-1], 200)
    left.plot(times, measured, "o", label="subject 1 (Theoph)")
    left.plot(
        fine[1:], concentrations(log_rates, fine[1:], measured[0]), "-", label="fit"
    )
    left.set_xlabel("hours after the dose")
    left.set_ylabel("theophylline (mg/L)")
    left.set_title("One-compartment fit")
    left.legend()
    fine = jnp.linspace(0.0, HORIZON, 400)
    solve = jax.jit(lambda theta: regimen(as_schedule(theta), log_rates, saveat=fine))
    for (label, theta), style in zip(schedules.items(), ["--", "-"], strict=True):
        solution = solve(theta)
        (line,) = right.plot(fine, solution.xs[:, 1], style, label=label)
        given = np.asarray(solution.event_times[: int(solution.num_events)])
        right.plot(
            given, np.full_like(given, 1.0), "|", markersize=12, color=line.get_color()
        )
    right.axhspan(*WINDOW, color="C2", alpha=0.15, label="therapeutic window")
    right.set_xlabel("hours")
    right.set_title("Doses (ticks) scheduled through their events")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(fit_steps: int = 50, steps: int = 150, out: str = ".") -> list:
    """Fit, optimise, print both, write the figure; return the losses."""
    curve = load_curve()
    log_rates = fit(*curve, fit_steps)
    k_a, k_e, volume = np.exp(np.asarray(log_rates))
    times, measured = curve
    misfit = concentrations(log_rates, times[1:], measured[0]) - measured[1:]
    rms = float(jnp.sqrt(jnp.mean(misfit**2)))
    print(
        f"fit: k_a {k_a:.3f}/h  k_e {k_e:.4f}/h  V {volume:.1f} L  "
        f"(rms misfit {rms:.2f} mg/L)"
    )
    start, theta, losses = optimise(log_rates, steps)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    schedule = jax.tree.map(np.asarray, as_schedule(theta))
    print(f"  dose 1: {schedule['first']:.0f} mg at 0 h")
    for k, (t, dose) in enumerate(
        zip(schedule["times"], schedule["doses"], strict=True)
    ):
        print(f"  dose {k + 2}: {dose:.0f} mg at {t:.1f} h")
    path = pathlib.Path(out) / "theophylline_dosing.png"
    plot(curve, log_rates, {"start": start, "optimised": theta}, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 Adam steps")
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    main(steps=20 if arguments.quick else 150, out=arguments.out)
