"""Fit Lotka–Volterra to the Hudson's Bay Company lynx and snowshoe-hare pelt records.

    hare' = α hare − β hare lynx,    lynx' = δ hare lynx − γ lynx,

with the rates (α, β, γ, δ) and the 1900 populations fitted, all in log space, to the
21 yearly observations 1900–1920 (thousands of pelts; `examples/data/lynx_hare.csv`,
source in its header). The loss is the squared error of the log populations at the
observation years (the log-normal noise model of Carpenter's Stan case study), read
from `jadjoint.solve(..., saveat=years)` and differentiated by the continuous adjoint;
optax's Adam minimises it. Writes `lynx_hare.png` (data against fitted trajectories).

Run: python examples/lynx_hare.py [--quick] [--out FOLDER]
"""

import argparse
import csv
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from progress_bar import with_latest_loss  # noqa: E402

import jadjoint as ja  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data" / "lynx_hare.csv"


def load_pelts() -> tuple[jax.Array, jax.Array]:
    """Years since 1900 and the (hare, lynx) pelts in thousands, one row per year."""
    with open(DATA) as file:
        rows = list(csv.DictReader(line for line in file if not line.startswith("#")))
    years = jnp.array([float(row["year"]) - 1900 for row in rows])
    pelts = jnp.array([[float(row["hare"]), float(row["lynx"])] for row in rows])
    return years, pelts


def lotka_volterra(x, log_rates, t):
    alpha, beta, gamma, delta = jnp.exp(log_rates)
    hare, lynx = x
    return jnp.stack(
        [alpha * hare - beta * hare * lynx, delta * hare * lynx - gamma * lynx]
    )


problem = ja.Problem.explicit(lotka_volterra)


def trajectory(params, times):
    """The populations at `times` (from 0) for `params = (log rates, log x(0))`."""
    solution = ja.solve(
        problem,
        params["log_rates"],
        0.0,
        times[-1],
        jnp.exp(params["log_x0"]),
        saveat=times,
        rtol=1e-7,
        atol=1e-7,
    )
    return solution.xs


def loss(params, years, pelts):
    """Mean squared error of the log populations at the observation years."""
    return jnp.mean((jnp.log(trajectory(params, years)) - jnp.log(pelts)) ** 2)


def fit(years, pelts, steps: int, learning_rate: float = 0.02):
    """Adam from a rough guess; returns the fitted parameters and the losses."""
    params = {
        "log_rates": jnp.log(jnp.array([0.8, 0.04, 0.6, 0.02])),
        "log_x0": jnp.log(pelts[0]),
    }
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(params)

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params, years, pelts)
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for _ in with_latest_loss(range(steps), losses):
        params, state, value = step(params, state)
        losses.append(float(value))
    losses.append(float(loss(params, years, pelts)))
    return params, losses


def plot(params, years, pelts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = jnp.linspace(0.0, years[-1], 400)
    fitted = trajectory(params, fine)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    for column, (name, colour) in enumerate([("hare", "C0"), ("lynx", "C3")]):
        axes.plot(1900 + years, pelts[:, column], "o", color=colour, label=f"{name}")
        axes.plot(1900 + fine, fitted[:, column], "-", color=colour, alpha=0.8)
    axes.set_xlabel("year")
    axes.set_ylabel("pelts (thousands)")
    axes.set_title("Lotka–Volterra fitted by the continuous adjoint")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(steps: int = 1500, out: str = ".") -> list[float]:
    """Fit, print the parameters, write the figure; return the losses."""
    years, pelts = load_pelts()
    params, losses = fit(years, pelts, steps)
    alpha, beta, gamma, delta = jnp.exp(params["log_rates"])
    hare0, lynx0 = jnp.exp(params["log_x0"])
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {steps} Adam steps")
    print(
        f"alpha {alpha:.3f}  beta {beta:.4f}  gamma {gamma:.3f}  delta {delta:.4f}  "
        f"hare(1900) {hare0:.1f}  lynx(1900) {lynx0:.1f}"
    )
    path = pathlib.Path(out) / "lynx_hare.png"
    plot(params, years, pelts, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steps")
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    main(steps=100 if arguments.quick else 1500, out=arguments.out)
