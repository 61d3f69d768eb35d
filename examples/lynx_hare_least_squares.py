"""Least-squares fit of the lynx–hare model with optimistix: Levenberg–Marquardt and
Gauss–Newton, default options, on forward-mode Jacobians.

The model and data are `lynx_hare.py`'s: Lotka–Volterra rates and 1900 populations in
log space, θ (6 numbers), and the residuals

    r(θ) = log x(t_i; θ) − log data_i,    42 of them (hare and lynx, 1900–1920),

so that `lynx_hare.py`'s loss is |r|²/42. `optimistix.least_squares` with its default
options linearises `r` forwards (`jax.linearize`): through `jadjoint.solve` that is
the forward sensitivities, six tangents carried by one solve. Each solver starts where
`lynx_hare_newton.py` starts. Writes `lynx_hare_least_squares.png`: the data and both
fits.

Run: python examples/lynx_hare_least_squares.py [--quick] [--out FOLDER]
"""

import argparse
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optimistix as optx  # noqa: E402
from lynx_hare import load_pelts, trajectory  # noqa: E402
from lynx_hare_newton import FLAT_START, UNFLATTEN  # noqa: E402


def residuals(theta, data):
    """`log x(t_i; θ) − log data_i` at the observation years."""
    years, pelts = data
    return (jnp.log(trajectory(UNFLATTEN(theta), years)) - jnp.log(pelts)).ravel()


def fit(solver, years, pelts, max_steps: int):
    """`(θ, steps, converged)` by `optimistix.least_squares` with its default
    options (`throw=False`: a run cut short at `max_steps` says so)."""

    @jax.jit
    def solve(theta):
        solution = optx.least_squares(
            residuals,
            solver,
            theta,
            args=(years, pelts),
            max_steps=max_steps,
            throw=False,
        )
        converged = solution.result == optx.RESULTS.successful
        return solution.value, solution.stats["num_steps"], converged

    theta, steps, converged = solve(FLAT_START)
    return theta, int(steps), bool(converged)


def loss(theta, years, pelts):
    return float(jnp.mean(residuals(theta, (years, pelts)) ** 2))


def plot(fits, years, pelts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = jnp.linspace(0.0, years[-1], 400)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    for column, (name, colour) in enumerate([("hare", "C0"), ("lynx", "C3")]):
        axes.plot(1900 + years, pelts[:, column], "o", color=colour, label=name)
    for (label, theta), style in zip(fits.items(), ["-", "--"], strict=True):
        fitted = trajectory(UNFLATTEN(theta), fine)
        for column, colour in enumerate(["C0", "C3"]):
            axes.plot(
                1900 + fine,
                fitted[:, column],
                style,
                color=colour,
                alpha=0.8,
                label=label if column == 0 else None,
            )
    axes.set_xlabel("year")
    axes.set_ylabel("pelts (thousands)")
    axes.set_title("Lotka–Volterra by least squares on forward-mode Jacobians")
    axes.legend(ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(max_steps: int = 100, out: str = ".") -> dict:
    """Fit with both solvers, print each loss, write the figure; return the losses
    by solver."""
    years, pelts = load_pelts()
    start = loss(FLAT_START, years, pelts)
    solvers = {
        "Levenberg–Marquardt": optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8),
        "Gauss–Newton": optx.GaussNewton(rtol=1e-8, atol=1e-8),
    }
    fits, losses = {}, {}
    for name, solver in solvers.items():
        began = time.perf_counter()
        theta, steps, converged = fit(solver, years, pelts, max_steps)
        seconds = time.perf_counter() - began
        fits[name], losses[name] = theta, loss(theta, years, pelts)
        print(
            f"{name}: loss {start:.4f} -> {losses[name]:.4f} in {steps} steps, "
            f"{'converged' if converged else 'not converged'} "
            f"({seconds:.1f} s with compilation)"
        )
        alpha, beta, gamma, delta = jnp.exp(theta[:4])
        print(
            f"  alpha {alpha:.3f}  beta {beta:.4f}  gamma {gamma:.3f}  "
            f"delta {delta:.4f}"
        )
    path = pathlib.Path(out) / "lynx_hare_least_squares.png"
    plot(fits, years, pelts, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 8 steps")
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    main(max_steps=8 if arguments.quick else 100, out=arguments.out)
