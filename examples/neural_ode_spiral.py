"""Learn the dynamics of a spiral with a neural ODE (torchdiffeq's `ode_demo`).

The data are 1000 states on t ∈ [0, 25] of

    y' = y³ A,    A = [[−0.1, 2], [−2, −0.1]],    y(0) = (2, 0),

cubes taken componentwise. The model is `y' = MLP(y³)`, an equinox MLP with two
hidden tanh layers of 32: the true field is linear in y³, so fed the cubes the network
need not learn them, and two hidden layers followed the long slow tail of the spiral
better than one in trials (mean squared error of the whole trajectory 0.007 against
0.05 after 1000 steps). Each Adam step draws 20 random segments of 10 consecutive
observations, solves the model from the observed state at each segment's first time
with `jadjoint.solve(..., saveat=segment_times)`, `jax.vmap`ped over the segments,
and differentiates the mean squared error by the continuous adjoint; the parameters
`p` are the MLP's arrays. The loss reported before and after training is on 20
segments spread evenly over the trajectory; the mean squared error of the whole
learned trajectory from y(0) is printed too. Writes `neural_ode_spiral.png` (phase
portrait and time series, true and learned).

Run: python examples/neural_ode_spiral.py [--quick] [--out FOLDER]
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from progress_bar import with_latest_loss  # noqa: E402

import jadjoint as ja  # noqa: E402

TIMES = jnp.linspace(0.0, 25.0, 1000)
Y0 = jnp.array([2.0, 0.0])
TRUE_MATRIX = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])
SEGMENT_LENGTH = 10
BATCH_SIZE = 20
LAST_START = TIMES.size - SEGMENT_LENGTH
TOLERANCES = {"rtol": 1e-6, "atol": 1e-6}

# The MLP split into its float arrays (the parameters `p`) and the rest.
INITIAL_PARAMS, STATIC = eqx.partition(
    eqx.nn.MLP(2, 2, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0)),
    eqx.is_inexact_array,
)


def true_spiral(y, matrix, t):
    return (y**3) @ matrix


def neural_field(y, params, t):
    return eqx.combine(params, STATIC)(y**3)


true_problem = ja.Problem.explicit(true_spiral)
neural_problem = ja.Problem.explicit(neural_field)


def observe(problem, p, times, y_start, max_steps=4096):
    """The states at `times`, solved from `y_start` at `times[0]`."""
    solution = ja.solve(
        problem,
        p,
        times[0],
        times[-1],
        y_start,
        saveat=times,
        max_steps=max_steps,
        **TOLERANCES,
    )
    return solution.xs


def segment_loss(params, data, starts):
    """Mean squared error over the segments beginning at the indices `starts`."""

    def one_segment(start):
        times = jax.lax.dynamic_slice_in_dim(TIMES, start, SEGMENT_LENGTH)
        observed = jax.lax.dynamic_slice_in_dim(data, start, SEGMENT_LENGTH)
        # A few steps forwards, about one per save time backwards: small buffers.
        predicted = observe(neural_problem, params, times, observed[0], max_steps=256)
        return jnp.mean((predicted - observed) ** 2)

    return jnp.mean(jax.vmap(one_segment)(starts))


def fit(data, steps: int, learning_rate: float = 0.03):
    """Adam (cosine-decayed learning rate) on random batches of segments. Returns the
    parameters and the losses: on the evenly spread segments before training, of
    each step's batch, and on the evenly spread segments after."""
    optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    params = INITIAL_PARAMS
    state = optimiser.init(params)
    loss_and_grad = jax.jit(jax.value_and_grad(segment_loss))

    @jax.jit
    def update(params, state, grad):
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(params, updates), state

    # As many segments as a batch, so that `loss_and_grad` is compiled only once.
    spread = jnp.linspace(0, LAST_START, BATCH_SIZE).astype(int)
    losses = [float(loss_and_grad(params, data, spread)[0])]
    keys = jax.random.split(jax.random.PRNGKey(1), steps)
    for key in with_latest_loss(keys, losses, spec=".2e"):
        starts = jax.random.randint(key, (BATCH_SIZE,), 0, LAST_START + 1)
        value, grad = loss_and_grad(params, data, starts)
        params, state = update(params, state, grad)
        losses.append(float(value))
    losses.append(float(loss_and_grad(params, data, spread)[0]))
    return params, losses


def plot(data, learned, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (phase, series) = plt.subplots(1, 2, figsize=(10, 4))
    phase.plot(data[:, 0], data[:, 1], "k-", label="true")
    phase.plot(learned[:, 0], learned[:, 1], "C1--", label="learned")
    phase.set_xlabel("y1")
    phase.set_ylabel("y2")
    phase.set_title("phase portrait")
    phase.legend()
    for column, colour in enumerate(["C0", "C3"]):
        series.plot(TIMES, data[:, column], "-", color=colour, label=f"y{column + 1}")
        series.plot(TIMES, learned[:, column], "--", color=colour, alpha=0.8)
    series.set_xlabel("t")
    series.set_title("true (solid) and learned (dashed) from y(0)")
    series.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(steps: int = 1000, out: str = ".") -> list[float]:
    """Train, print the losses, write the figure; return the losses."""
    data = observe(true_problem, TRUE_MATRIX, TIMES, Y0)
    params, losses = fit(data, steps)
    learned = observe(neural_problem, params, TIMES, Y0)
    print(f"loss {losses[0]:.3e} -> {losses[-1]:.3e} after {steps} Adam steps")
    whole_error = jnp.mean((learned - data) ** 2)
    print(f"whole trajectory from y(0): mean squared error {whole_error:.3e}")
    path = pathlib.Path(out) / "neural_ode_spiral.png"
    plot(data, learned, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 steps")
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    main(steps=60 if arguments.quick else 1000, out=arguments.out)
