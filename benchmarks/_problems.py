"""The benchmark problems and the same loss of each for every library and method.

A problem is `ẋ = vector_field(x, p, t)` on `[0, t1]` from `x0`, with an optional
running cost `f(x, p, t)` and optional observation times `saveat`. Its loss is

    L(p, x0) = ∫₀^t1 f(x, p, t) dt + Σᵢ |x(tᵢ)|²    (tᵢ in `saveat`)

with either term absent when the problem lacks it. jadjoint computes it through
`Problem.explicit(vector_field, f=f)` and `Solution.cost`; diffrax and
`jax.experimental.ode.odeint` integrate the cost as an extra state component. jadjoint's
forward solve carries the cost the same way, so every library's error control sees the
same augmented state `(x, ∫ f dt)`.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jax.experimental.ode import odeint

import jadjoint as ja


@dataclasses.dataclass(frozen=True)
class OdeProblem:
    """`ẋ = vector_field(x, p, t)` on `[0, t1]`, its running cost `f(x, p, t)` and
    observation times, and how every method integrates it."""

    vector_field: Callable
    t1: float
    f: Callable | None = None
    saveat: jax.Array | None = None
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    max_steps: int = 4096


def _loss(problem: OdeProblem, cost, xs):
    if problem.saveat is None:
        return cost
    return cost + jnp.sum(xs**2)


def _augmented(problem: OdeProblem):
    """`(ẋ, ċ)` with `ċ = f(x, p, t)` (zero without `f`), in diffrax's signature."""

    def rates(t, y, p):
        x, _ = y
        cost_rate = 0.0 if problem.f is None else problem.f(x, p, t)
        return problem.vector_field(x, p, t), jnp.asarray(cost_rate, x.dtype)

    return rates


def jadjoint_solve(problem: OdeProblem, adjoint, rtol: float, atol: float):
    """`(p, x0) ↦ jadjoint.solve(...)`: the `jadjoint.Solution`."""
    explicit = ja.Problem.explicit(problem.vector_field, f=problem.f)

    def solve(p, x0):
        return ja.solve(
            explicit,
            p,
            0.0,
            problem.t1,
            x0,
            saveat=problem.saveat,
            adjoint=adjoint,
            solver=problem.solver,
            rtol=rtol,
            atol=atol,
            max_steps=problem.max_steps,
        )

    return solve


def jadjoint_loss(problem: OdeProblem, adjoint, rtol: float, atol: float):
    """`L(p, x0)` by `jadjoint.solve` with the given adjoint method."""
    solve = jadjoint_solve(problem, adjoint, rtol, atol)

    def loss(p, x0):
        solution = solve(p, x0)
        return _loss(problem, solution.cost, solution.xs)

    return loss


def diffrax_loss(problem: OdeProblem, adjoint, rtol: float, atol: float):
    """`L(p, x0)` by `diffrax.diffeqsolve` with the given diffrax adjoint."""
    if problem.saveat is None:
        saveat = diffrax.SaveAt(t1=True)
    else:
        saveat = diffrax.SaveAt(ts=problem.saveat, t1=True)

    def loss(p, x0):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(_augmented(problem)),
            problem.solver,
            0.0,
            problem.t1,
            None,
            (x0, jnp.zeros((), x0.dtype)),
            args=p,
            saveat=saveat,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            adjoint=adjoint,
            max_steps=problem.max_steps,
        )
        xs, costs = solution.ys
        return _loss(problem, costs[-1], xs[:-1])

    return loss


def odeint_loss(problem: OdeProblem, rtol: float, atol: float):
    """`L(p, x0)` by `jax.experimental.ode.odeint` (Dormand–Prince 5(4), whatever
    `problem.solver` is), differentiated by its own continuous adjoint."""
    saveat = jnp.array([problem.t1]) if problem.saveat is None else problem.saveat
    times = jnp.concatenate([jnp.zeros(1), saveat])
    rates = _augmented(problem)

    def loss(p, x0):
        xs, costs = odeint(
            lambda y, t, p: rates(t, y, p),
            (x0, jnp.zeros((), x0.dtype)),
            times,
            p,
            rtol=rtol,
            atol=atol,
        )
        return _loss(problem, costs[-1], xs[1:])

    return loss


class Method(NamedTuple):
    """An adjoint method: `loss(problem, rtol, atol)` builds `L(p, x0)`. Methods of one
    `library` share the same forward computation."""

    label: str
    short: str
    library: str
    loss: Callable


def jadjoint_method(label: str, short: str, adjoint) -> Method:
    def loss(problem, rtol, atol):
        return jadjoint_loss(problem, adjoint, rtol, atol)

    return Method(f"jadjoint {label}", short, "jadjoint", loss)


def diffrax_method(label: str, short: str, adjoint) -> Method:
    def loss(problem, rtol, atol):
        return diffrax_loss(problem, adjoint, rtol, atol)

    return Method(f"diffrax {label}", short, "diffrax", loss)


INTERPOLATING = jadjoint_method(
    "InterpolatingAdjoint()", "Interpolating", ja.InterpolatingAdjoint()
)
QUADRATURE = jadjoint_method(
    "QuadratureAdjoint()", "Quadrature", ja.QuadratureAdjoint()
)
BACKSOLVE = jadjoint_method("BacksolveAdjoint()", "Backsolve", ja.BacksolveAdjoint())
# Short segments: every segment but the last regenerated on the backward pass.
CHECKPOINTED = jadjoint_method(
    "InterpolatingAdjoint(segment_steps=16)",
    "Interpolating(16)",
    ja.InterpolatingAdjoint(segment_steps=16),
)
DISCRETISE = jadjoint_method(
    "DiscretiseThenOptimise()", "DtO", ja.DiscretiseThenOptimise()
)
RCA = diffrax_method(
    "RecursiveCheckpointAdjoint()", "RCA", diffrax.RecursiveCheckpointAdjoint()
)
DIFFRAX_BACKSOLVE = diffrax_method(
    "BacksolveAdjoint()", "diffrax Backsolve", diffrax.BacksolveAdjoint()
)
ODEINT = Method("jax odeint (Dormand–Prince)", "odeint", "odeint", odeint_loss)

# The forward computation (the loss without its gradient) of each library does not
# depend on the adjoint method: one representative method per library.
FORWARD = {"jadjoint": INTERPOLATING, "diffrax": RCA, "odeint": ODEINT}


def relative_error(grad, reference) -> float:
    """‖grad − reference‖₂ / ‖reference‖₂ over all leaves together."""
    pairs = zip(*map(jtu.tree_leaves, (grad, reference)), strict=True)
    num = sum(float(jnp.sum((a - b) ** 2)) for a, b in pairs)
    den = sum(float(jnp.sum(b**2)) for b in jtu.tree_leaves(reference))
    return (num / den) ** 0.5


# The problems: each returns `(problem, p, x0)`.


def lotka_volterra_vf(x, p, t):
    prey, predator = x
    return jnp.stack(
        [
            p["a"] * prey - p["b"] * prey * predator,
            p["c"] * prey * predator - p["d"] * predator,
        ]
    )


def lotka_volterra():
    """Lotka–Volterra on [0, 20]: running cost x1² + x2² and 100 observations."""
    problem = OdeProblem(
        lotka_volterra_vf,
        20.0,
        f=lambda x, p, t: jnp.sum(x**2),
        saveat=jnp.linspace(0.2, 20.0, 100),
    )
    p = {k: jnp.array(v) for k, v in dict(a=1.1, b=0.4, c=0.1, d=0.4).items()}
    return problem, p, jnp.array([10.0, 5.0])


def neural_spiral(save_times: int = 1000):
    """`ẏ = MLP(y³)`, MLP 2→50→2 (tanh), on [0, 25] with `save_times` observations;
    the parameters `p` are the MLP's arrays."""
    model = eqx.nn.MLP(2, 2, 50, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    problem = OdeProblem(
        lambda y, p, t: eqx.combine(p, static)(y**3),
        25.0,
        saveat=jnp.linspace(0.0, 25.0, save_times + 1)[1:],
    )
    return problem, params, jnp.array([2.0, 0.0])


def spiral_batch(size: int):
    """`size` initial conditions on the circle of radius 2, the first one (2, 0)."""
    angles = 2 * jnp.pi * jnp.arange(size) / size
    return 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)


def training_mlp(save_times: int = 100):
    """The neural-ODE training workload of diffrax's documentation: `ẏ = MLP(y)`,
    MLP 2 → 64 → 64 → 2 (softplus), on [0, 10] with `save_times` observations."""
    model = eqx.nn.MLP(
        2, 2, 64, 2, activation=jax.nn.softplus, key=jax.random.PRNGKey(1)
    )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    problem = OdeProblem(
        lambda y, p, t: eqx.combine(p, static)(y),
        10.0,
        saveat=jnp.linspace(0.0, 10.0, save_times + 1)[1:],
    )
    return problem, params


def training_batch(size: int):
    """`size` initial conditions uniform in [−0.6, 1]², as diffrax's example."""
    return jax.random.uniform(jax.random.PRNGKey(2), (size, 2), minval=-0.6, maxval=1)


def robertson_vf(y, log_k, t):
    k1, k2, k3 = jnp.exp(log_k)
    return jnp.stack(
        [
            -k1 * y[0] + k3 * y[1] * y[2],
            k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2],
            k2 * y[1] ** 2,
        ]
    )


def kvaerno5(newton_tol: float) -> diffrax.Kvaerno5:
    """Kvaerno5 with a Newton root finder: diffrax's default (VeryChord) rejects about
    half its steps at tight tolerances."""
    return diffrax.Kvaerno5(root_finder=optx.Newton(rtol=newton_tol, atol=newton_tol))


def robertson():
    """Stiff Robertson kinetics on [0, 100], cost 1e4 ∫ y2 dt, `p = log k`."""
    problem = OdeProblem(
        robertson_vf, 100.0, f=lambda y, p, t: 1e4 * y[1], solver=kvaerno5(1e-10)
    )
    return problem, jnp.log(jnp.array([0.04, 3e7, 1e4])), jnp.array([1.0, 0.0, 0.0])


def fisher_kpp_vf(u, k, t):
    """A chain of cells with logistic growth at per-cell rates `k` and diffusive
    coupling between neighbours, zero flux at both ends."""
    padded = jnp.concatenate([u[:1], u, u[-1:]])
    coupling = padded[:-2] - 2 * u + padded[2:]
    return 0.5 * coupling + k * u * (1 - u)


def fisher_kpp(n: int):
    """`n` cells on [0, 10], cost ∫ mean(u²) dt, one growth rate per cell."""
    s = jnp.linspace(0.0, 1.0, n)
    problem = OdeProblem(fisher_kpp_vf, 10.0, f=lambda u, k, t: jnp.mean(u**2))
    k = 1.0 + 0.5 * jnp.sin(2 * jnp.pi * s)
    u0 = 0.05 + 0.9 * jnp.exp(-(((s - 0.3) / 0.05) ** 2))
    return problem, k, u0


def oscillator_vf(x, p, t):
    return jnp.stack([x[1], -(p["omega"] ** 2) * x[0] - p["zeta"] * x[1]])


def oscillator(t1: float, max_steps: int):
    """A lightly damped oscillator on [0, t1]: cost ∫ x1² dt and 10 observations; the
    number of steps grows in proportion to t1."""
    problem = OdeProblem(
        oscillator_vf,
        t1,
        f=lambda x, p, t: x[0] ** 2,
        saveat=jnp.linspace(t1 / 10, t1, 10),
        max_steps=max_steps,
    )
    p = {"omega": jnp.array(1.0), "zeta": jnp.array(1e-4)}
    return problem, p, jnp.array([1.0, 0.0])
