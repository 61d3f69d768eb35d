"""The seed problem: minimise F(p) = ∫ f(x, p, t) dt subject to h(x, ẋ, p, t) = 0
and g(x(t0), p) = 0.

Here: a damped nonlinear pendulum x = (angle, angular velocity),

    h = ẋ − (x₂, −ω² sin x₁ − c x₂),
    g = (x0₁³ + x0₁ − q, x0₂)      (a nonlinear condition on the release angle),
    f = |x − r(t)|² + 10⁻³ (ω² + c² + q²),

with r(t) a target swing e^{−0.15 t} (cos 1.4t, −1.4 sin 1.4t). The parameters
p = (ω, c, q) are fitted by optax's Adam with gradients from the continuous adjoint.
The adjoint gradient is first checked with `jadjoint.check_grad` against central
finite differences and against diffrax's discretise-then-optimise gradient. Writes
`seed_problem.png`: the swing before and after the fit, against the target.

Run: python examples/seed_problem.py [--quick] [--out FOLDER]
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jadjoint as ja  # noqa: E402


def pendulum(x, p, t):
    angle, velocity = x
    return jnp.stack(
        [velocity, -(p["omega"] ** 2) * jnp.sin(angle) - p["damping"] * velocity]
    )


def target(t):
    decay = jnp.exp(-0.15 * t)
    return decay * jnp.stack([jnp.cos(1.4 * t), -1.4 * jnp.sin(1.4 * t)])


def running_cost(x, p, t):
    regulariser = p["omega"] ** 2 + p["damping"] ** 2 + p["q"] ** 2
    return jnp.sum((x - target(t)) ** 2) + 1e-3 * regulariser


def initial_condition(x0, p):
    return jnp.stack([x0[0] ** 3 + x0[0] - p["q"], x0[1]])


problem = ja.Problem.explicit(pendulum, f=running_cost, g=initial_condition)


def objective(p):
    return ja.solve(problem, p, 0.0, 10.0, jnp.zeros(2), rtol=1e-8, atol=1e-8).cost


def swing(p, ts):
    """The angle and angular velocity at the times `ts`."""
    return ja.solve(
        problem, p, 0.0, 10.0, jnp.zeros(2), saveat=ts, rtol=1e-8, atol=1e-8
    ).xs


def plot(initial, fitted, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = jnp.linspace(0.0, 10.0, 300)
    reference = jax.vmap(target)(ts)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
    labels = ("angle x₁ (rad)", "angular velocity x₂ (rad/s)")
    for column, (axis, label) in enumerate(zip(axes, labels, strict=True)):
        axis.plot(ts, reference[:, column], "k--", label="target r(t)")
        axis.plot(ts, swing(initial, ts)[:, column], color="C7", label="initial p")
        axis.plot(ts, swing(fitted, ts)[:, column], color="C0", label="fitted p")
        axis.set_xlabel("t")
        axis.set_ylabel(label)
    axes[0].legend()
    figure.suptitle("The seed problem: a pendulum fitted by the continuous adjoint")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(steps: int = 200, out: str | None = None) -> tuple[float, list[float]]:
    """Check the gradient, then fit; return the check's worst gap and the losses.
    With `out`, write the figure there."""
    p = {"omega": jnp.array(1.0), "damping": jnp.array(0.5), "q": jnp.array(0.5)}
    initial = p
    print("Gradient check (relative errors of the adjoint gradient):")
    report = ja.check_grad(objective, p)
    print(report)
    worst = report.worst[1]

    optimiser = optax.adam(0.03)
    state = optimiser.init(p)

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(objective)(p)
        updates, state = optimiser.update(grads, state)
        return optax.apply_updates(p, updates), state, value

    losses = []
    for i in range(steps):
        p, state, value = step(p, state)
        losses.append(float(value))
        if i % max(1, steps // 10) == 0 or i == steps - 1:
            print(f"step {i:4d}  F(p) = {value:.6f}")
    print("fitted:", {k: round(float(v), 4) for k, v in p.items()})
    if out is not None:
        path = pathlib.Path(out) / "seed_problem.png"
        plot(initial, p, path)
        print(f"wrote {path}")
    return worst, losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps, for CI")
    parser.add_argument("--out", default=".", help="folder for the figure")
    args = parser.parse_args()
    main(steps=20 if args.quick else 200, out=args.out)
