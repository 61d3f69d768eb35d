"""Swing a pendulum up to the inverted position with a bounded torque.

    θ'' = −sin θ − c θ' + u(t),    |u(t)| ≤ u_max = 0.35,    θ(0) = θ'(0) = 0,

in units where the small-swing frequency is 1 (c = 0.1): θ = 0 hangs down, θ = ±π is
upright. The torque alone holds the pendulum no further than 20° from the bottom, so it
has to pump energy in over several swings. The open-loop control is a saturated sum of
16 Gaussian bumps in time, u(t) = u_max tanh(Σₖ aₖ exp(−(t − tₖ)² / 2σ²)), and the bump
weights a minimise, over T = 15,

    J(a) = ∫₀ᵀ e(x) + ρ u² dt + 100 e(x(T)),    e(x) = 1 + cos θ + 0.3 θ'²,  ρ = 0.1,

where e, zero only upright and at rest, wraps the angle (1 + cos θ = 1 − cos(θ − π)).
The integrand is the problem's running cost `f`, so the integral is
`jadjoint.solve(...).cost`; the terminal penalty reads x(T) from `solution.xs[-1]`.
Optax's Adam descends the continuous-adjoint gradient of J from small random weights
(u = 0 would leave the pendulum hanging, where the gradient vanishes). Writes
`inverted_pendulum.png`: θ, θ' and u of the initial and the optimised control.

Run: python examples/inverted_pendulum.py [--quick] [--out FOLDER]
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from progress_bar import with_latest_loss  # noqa: E402

import jadjoint as ja  # noqa: E402

HORIZON = 15.0
MAX_TORQUE = 0.35
DAMPING = 0.1
CONTROL_WEIGHT = 0.1
TERMINAL_WEIGHT = 100.0
BUMP_CENTRES = jnp.linspace(0.0, HORIZON, 16)
BUMP_WIDTH = BUMP_CENTRES[1] - BUMP_CENTRES[0]
# The save times: the figure's grid, ending at T for the terminal penalty, so that one
# compiled solve serves both (the backward pass stops at each: cheap here).
TIMES = jnp.linspace(0.0, HORIZON, 151)


def initial_weights():
    """Small random bump weights, from a fixed seed."""
    return 0.1 * jax.random.normal(jax.random.PRNGKey(0), BUMP_CENTRES.shape)


def torque(weights, t):
    """The bounded control u(t) for the bump weights."""
    bumps = jnp.exp(-0.5 * ((t - BUMP_CENTRES) / BUMP_WIDTH) ** 2)
    return MAX_TORQUE * jnp.tanh(bumps @ weights)


def pendulum(x, weights, t):
    angle, velocity = x
    acceleration = -jnp.sin(angle) - DAMPING * velocity + torque(weights, t)
    return jnp.stack([velocity, acceleration])


def state_error(x):
    """Zero exactly when the pendulum is upright and at rest."""
    angle, velocity = x
    return 1 + jnp.cos(angle) + 0.3 * velocity**2


def running_cost(x, weights, t):
    return state_error(x) + CONTROL_WEIGHT * torque(weights, t) ** 2


problem = ja.Problem.explicit(pendulum, f=running_cost)


def loss(weights):
    """The running cost plus the terminal penalty on the state at T; and the states
    (θ, θ') at `TIMES`, for the figure."""
    solution = ja.solve(
        problem, weights, 0.0, HORIZON, jnp.zeros(2), saveat=TIMES, rtol=1e-6, atol=1e-6
    )
    return solution.cost + TERMINAL_WEIGHT * state_error(solution.xs[-1]), solution.xs


def optimise(steps: int, learning_rate: float = 0.1):
    """Adam from `initial_weights()`; returns the optimised weights, the losses, and
    the trajectories of the initial and the optimised control."""
    weights = initial_weights()
    optimiser = optax.adam(learning_rate)
    state = optimiser.init(weights)

    @jax.jit
    def step(weights, state):
        (value, states), grad = jax.value_and_grad(loss, has_aux=True)(weights)
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(weights, updates), state, value, states

    losses, trajectories = [], []
    for i in with_latest_loss(range(steps), losses, "cost"):
        weights, state, value, states = step(weights, state)
        losses.append(float(value))
        if i == 0:
            trajectories.append(states)  # of the initial weights
    _, _, value, states = step(weights, state)  # evaluates the result; update unused
    losses.append(float(value))
    return weights, losses, trajectories + [states]


def plot(weights, trajectories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(7, 6.5), sharex=True)
    for name, style, controls, states in [
        ("initial", ":", initial_weights(), trajectories[0]),
        ("optimised", "-", weights, trajectories[-1]),
    ]:
        axes[0].plot(TIMES, states[:, 0], style, color="C0", label=name)
        axes[1].plot(TIMES, states[:, 1], style, color="C1")
        axes[2].plot(TIMES, torque(controls, TIMES[:, None]), style, color="C2")
    for level in (jnp.pi, -jnp.pi):
        axes[0].axhline(level, color="grey", linewidth=0.8)
    for level in (MAX_TORQUE, -MAX_TORQUE):
        axes[2].axhline(level, color="grey", linewidth=0.8)
    axes[0].set_ylabel("θ (rad)")
    axes[1].set_ylabel("θ' (rad/s)")
    axes[2].set_ylabel("torque u")
    axes[2].set_xlabel("t")
    axes[0].set_title("Pendulum swing-up optimised through the continuous adjoint")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(steps: int = 800, out: str = ".") -> list[float]:
    """Optimise the control, print the final state, write the figure; return the
    costs."""
    weights, losses, trajectories = optimise(steps)
    angle, velocity = trajectories[-1][-1]
    from_upright = jnp.degrees(jnp.abs(jnp.mod(angle, 2 * jnp.pi) - jnp.pi))
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {steps} Adam steps")
    print(
        f"final angle {angle:.3f} rad ({from_upright:.1f}° from upright), "
        f"velocity {velocity:.3f} rad/s: "
        + ("upright" if from_upright < 5 and abs(velocity) < 0.1 else "not upright")
    )
    path = pathlib.Path(out) / "inverted_pendulum.png"
    plot(weights, trajectories, path)
    print(f"wrote {path}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 steps")
    parser.add_argument("--out", default=".", help="folder for the figure")
    arguments = parser.parse_args()
    main(steps=50 if arguments.quick else 800, out=arguments.out)
