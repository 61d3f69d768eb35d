"""Stiff Robertson kinetics against SUNDIALS: jadjoint's BDF beside Kvaerno5 and
diffrax, with CVODES and IDAS (through CasADi) as the peers.

    ẏ1 = −k1 y1 + k3 y2 y3,  ẏ2 = k1 y1 − k2 y2² − k3 y2 y3,  ẏ3 = k2 y2²,
    k = (0.04, 3e7, 1e4),  y(0) = (1, 0, 0),  t ∈ [0, 100],

the gradient with respect to `log k` of the integral cost `1e4 ∫ y2 dt` and of a loss
on 40 saved states `Σ_i (y1 + 1e4 y2 + y3)(t_i)`; and the same kinetics as the
index-1 DAE with `y3 = 1 − y1 − y2` (jadjoint's singular mass matrix, IDAS). rtol
1e-8, atol 1e-10 everywhere; float64; one thread. Reported: the median wall time of
a jitted gradient (after one call to compile), interleaved, its ratio to the SUNDIALS
peer measured in the same run, and the relative error against diffrax
`RecursiveCheckpointAdjoint` with Kvaerno5 at rtol 1e-11 (Newton to 1e-13), which
agrees with central differences of itself to 4e-9 (the cost) and 2e-6 (the saved
states: the differences' own truncation error); the DAE's reference is the ODE's,
the two being the same kinetics.

CasADi's `integrator` with `ca.gradient` runs the forward solve and CVodeB / IDASolveB
for the adjoint. Needs `pip install casadi`; without it the SUNDIALS rows are left out.

Van der Pol (μ = 1000, its slow phase) follows, against CVODES, with its own reference
(the same diffrax gradient at rtol 1e-11), then the stiff Brusselator with N = 64
cells (rtol 1e-6, its reference at 1e-10), where CVODES runs with CasADi's default
sparse QR (the ratios' base) and with a dense LU as jadjoint's; and, first, the
forward solve's work on Robertson (steps, evaluations, Jacobians, LU factorisations)
beside CVODES's. jadjoint runs `InterpolatingAdjoint()` unless a row names
`DiscretiseThenOptimise()`.

Last, the Brusselator swept over N = 64, 256, 1024 and 4096 cells with the BDF's
matrix-free Newton–Krylov option (lineax GMRES and BiCGStab on Jacobian-vector
products), preconditioned by the tridiagonal part of the iteration matrix (the
diffusion and the reaction's diagonal, `brusselator_preconditioner`) and without,
beside its dense LU and CVODES's sparse QR; there the error column is the relative
difference from CVODES's gradient (no tight reference is affordable at 8192
states). `--sweep` runs that section alone.

Run: python benchmarks/bench_stiff.py [--repeats N] [--sweep]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
from _problems import kvaerno5, robertson_vf  # noqa: E402

import jadjoint as ja  # noqa: E402

RTOL, ATOL = 1e-8, 1e-10
T1 = 100.0
LOG_K = jnp.log(jnp.array([0.04, 3e7, 1e4]))
Y0 = jnp.array([1.0, 0.0, 0.0])
TS = jnp.linspace(2.5, T1, 40)
WEIGHTS = jnp.array([1.0, 1e4, 1.0])


def cost_rate(y, log_k, t):
    return 1e4 * y[1]


INTERPOLATING = ja.InterpolatingAdjoint()


def jadjoint_gradient(solver, kind: str, form: str = "ode", adjoint=INTERPOLATING):
    if form == "ode":
        problem = ja.Problem.explicit(
            robertson_vf, f=cost_rate if kind == "cost" else None
        )
    else:
        problem = ja.Problem.mass_matrix(
            jnp.diag(jnp.array([1.0, 1.0, 0.0])),
            lambda y, log_k, t: robertson_vf(y, log_k, t).at[2].set(jnp.sum(y) - 1),
            f=cost_rate if kind == "cost" else None,
        )

    def loss(log_k):
        solution = ja.solve(
            problem,
            log_k,
            0.0,
            T1,
            Y0,
            saveat=None if kind == "cost" else TS,
            solver=solver,
            adjoint=adjoint,
            rtol=RTOL,
            atol=ATOL,
            max_steps=100_000,
        )
        return solution.cost if kind == "cost" else jnp.sum(solution.xs @ WEIGHTS)

    return jax.jit(jax.grad(loss))


def diffrax_gradient(kind: str, rtol=RTOL, atol=ATOL, newton_tol=1e-10):
    def rates(t, y, log_k):
        x, _ = y
        return robertson_vf(x, log_k, t), cost_rate(x, log_k, t)

    def loss(log_k):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(rates),
            kvaerno5(newton_tol),
            0.0,
            T1,
            None,
            (Y0, jnp.zeros(())),
            args=log_k,
            saveat=diffrax.SaveAt(t1=True) if kind == "cost" else diffrax.SaveAt(ts=TS),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
        )
        xs, costs = solution.ys
        return costs[-1] if kind == "cost" else jnp.sum(xs @ WEIGHTS)

    return jax.jit(jax.grad(loss))


def sundials_gradient(kind: str, form: str):
    """CasADi's reverse-mode gradient through CVODES (`form="ode"`) or IDAS."""
    import casadi as ca

    log_k = ca.SX.sym("log_k", 3)
    k = ca.exp(log_k)
    options = dict(abstol=ATOL, reltol=RTOL, max_num_steps=100_000)
    grid = [T1] if kind == "cost" else [float(t) for t in TS]
    if form == "ode":
        y = ca.SX.sym("y", 3)
        rates = ca.vertcat(
            -k[0] * y[0] + k[2] * y[1] * y[2],
            k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2],
            k[1] * y[1] ** 2,
        )
        dae = dict(x=y, p=log_k, ode=rates, quad=1e4 * y[1])
        plugin, initial = "cvodes", dict(x0=np.array(Y0))
        states = lambda result: result["xf"]  # noqa: E731
    else:
        y, z = ca.SX.sym("y", 2), ca.SX.sym("z")
        rates = ca.vertcat(
            -k[0] * y[0] + k[2] * y[1] * z,
            k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * z,
        )
        dae = dict(
            x=y, z=z, p=log_k, ode=rates, alg=y[0] + y[1] + z - 1, quad=1e4 * y[1]
        )
        plugin, initial = "idas", dict(x0=np.array(Y0[:2]), z0=0.0)
        states = lambda result: ca.vertcat(result["xf"], result["zf"])  # noqa: E731
    integrator = ca.integrator("F", plugin, dae, 0.0, grid, options)
    p = ca.MX.sym("p", 3)
    result = integrator(p=p, **initial)
    if kind == "cost":
        loss = result["qf"]
    else:
        loss = ca.sum2(ca.mtimes(ca.DM(np.array(WEIGHTS)).T, states(result)))
    gradient = ca.Function("gradient", [p], [ca.gradient(loss, p)])
    return lambda log_k: np.asarray(gradient(np.asarray(log_k))).ravel()


def reference(kind: str) -> np.ndarray:
    return np.asarray(diffrax_gradient(kind, 1e-11, 1e-13, 1e-13)(LOG_K))


# Van der Pol in its slow phase: `ẏ1 = y2`, `ẏ2 = μ (1 − y1²) y2 − y1`, μ = 1000,
# `y(0) = (2, 0)`, `t ∈ [0, 700]` (the first relaxation jump is near 807), the
# gradient of `Σ_i y1(t_i)` at 60 save times with respect to `(μ, y(0))`; rtol 1e-7,
# atol 1e-9.
VDP_POINT = jnp.array([1000.0, 2.0, 0.0])
VDP_TS = jnp.linspace(700.0 / 60, 700.0, 60)
VDP_RTOL, VDP_ATOL = 1e-7, 1e-9


def van_der_pol_vf(y, mu, t):
    return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def van_der_pol_jadjoint(solver, adjoint=INTERPOLATING):
    problem = ja.Problem.explicit(van_der_pol_vf)

    def loss(point):
        solution = ja.solve(
            problem,
            point[0],
            0.0,
            700.0,
            point[1:],
            saveat=VDP_TS,
            solver=solver,
            adjoint=adjoint,
            rtol=VDP_RTOL,
            atol=VDP_ATOL,
            max_steps=100_000,
        )
        return jnp.sum(solution.xs[:, 0])

    return jax.jit(jax.grad(loss))


def van_der_pol_diffrax(rtol=VDP_RTOL, atol=VDP_ATOL, newton_tol=1e-10):
    def loss(point):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, mu: van_der_pol_vf(y, mu, t)),
            kvaerno5(newton_tol),
            0.0,
            700.0,
            None,
            point[1:],
            args=point[0],
            saveat=diffrax.SaveAt(ts=VDP_TS),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
        )
        return jnp.sum(solution.ys[:, 0])

    return jax.jit(jax.grad(loss))


def van_der_pol_sundials():
    import casadi as ca

    y, mu = ca.SX.sym("y", 2), ca.SX.sym("mu")
    rates = ca.vertcat(y[1], mu * (1 - y[0] ** 2) * y[1] - y[0])
    options = dict(abstol=VDP_ATOL, reltol=VDP_RTOL, max_num_steps=100_000)
    grid = [float(t) for t in VDP_TS]
    integrator = ca.integrator(
        "F", "cvodes", dict(x=y, p=mu, ode=rates), 0, grid, options
    )
    point = ca.MX.sym("point", 3)
    result = integrator(x0=point[1:], p=point[0])
    loss = ca.sum2(result["xf"][0, :])
    gradient = ca.Function("gradient", [point], [ca.gradient(loss, point)])
    return lambda point: np.asarray(gradient(np.asarray(point))).ravel()


# The stiff 1-D Brusselator (Hairer & Wanner II, §IV.1): `N` cells, `u` and `v`
# with diffusion `α (N + 1)²` and fixed ends (u = 1, v = 3), `u(0) = 1 + sin 2πx`,
# `v(0) = 3`, `t ∈ [0, 10]`; the gradient of `∫ mean(u²) dt` with respect to
# `(A, B, α) = (1, 3, 1/50)`; rtol 1e-6, atol 1e-8. Reference: the RCA gradient at
# rtol 1e-10.
BRUSSELATOR_POINT = jnp.array([1.0, 3.0, 1 / 50])
BRUSSELATOR_RTOL, BRUSSELATOR_ATOL = 1e-6, 1e-8


def brusselator(n: int):
    """`(vector field, cost rate, y0)` of the Brusselator with `n` cells."""
    x = jnp.arange(1, n + 1) / (n + 1)
    y0 = jnp.concatenate([1 + jnp.sin(2 * jnp.pi * x), jnp.full(n, 3.0)])

    def vector_field(y, p, t):
        a, b, alpha = p
        u, v = y[:n], y[n:]
        diffusion = alpha * (n + 1) ** 2
        u_ends = jnp.concatenate([jnp.ones(1), u, jnp.ones(1)])
        v_ends = jnp.concatenate([jnp.full(1, 3.0), v, jnp.full(1, 3.0)])
        du = a + u**2 * v - (b + 1) * u + diffusion * jnp.diff(u_ends, 2)
        dv = b * u - u**2 * v + diffusion * jnp.diff(v_ends, 2)
        return jnp.concatenate([du, dv])

    return vector_field, lambda y, p, t: jnp.mean(y[:n] ** 2), y0


def brusselator_preconditioner(n: int):
    """`(y, p, t, c) ↦ (I − c T)⁻¹`, `T` the tridiagonal part of the Brusselator's
    Jacobian in its `(u, v)` layout: the diffusion and the reaction's diagonal,
    without the `u`–`v` coupling (which is not stiff); by `jax.lax.linalg`'s
    tridiagonal solve."""

    def preconditioner(y, p, t, c):
        a, b, alpha = p
        u, v = y[:n], y[n:]
        diffusion = alpha * (n + 1) ** 2
        reaction = jnp.concatenate([2 * u * v - (b + 1), -(u**2)])
        diagonal = 1 - c * (reaction - 2 * diffusion)
        coupling = jnp.full(2 * n - 1, -c * diffusion).at[n - 1].set(0.0)
        lower = jnp.concatenate([jnp.zeros(1), coupling])
        upper = jnp.concatenate([coupling, jnp.zeros(1)])
        return lx.FunctionLinearOperator(
            lambda r: jax.lax.linalg.tridiagonal_solve(
                lower, diagonal, upper, r[:, None]
            )[:, 0],
            jax.eval_shape(lambda: y),
        )

    return preconditioner


def brusselator_jadjoint(n: int, solver, adjoint=INTERPOLATING):
    vector_field, cost, y0 = brusselator(n)
    problem = ja.Problem.explicit(vector_field, f=cost)

    def loss(p):
        solution = ja.solve(
            problem,
            p,
            0.0,
            10.0,
            y0,
            solver=solver,
            adjoint=adjoint,
            rtol=BRUSSELATOR_RTOL,
            atol=BRUSSELATOR_ATOL,
            max_steps=100_000,
        )
        return solution.cost

    return jax.jit(jax.grad(loss))


def brusselator_diffrax(
    n: int, rtol=BRUSSELATOR_RTOL, atol=BRUSSELATOR_ATOL, newton_tol=1e-8
):
    vector_field, cost, y0 = brusselator(n)

    def rates(t, y, p):
        return vector_field(y[0], p, t), cost(y[0], p, t)

    def loss(p):
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(rates),
            kvaerno5(newton_tol),
            0.0,
            10.0,
            None,
            (y0, jnp.zeros(())),
            args=p,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
        )
        return solution.ys[1][-1]

    return jax.jit(jax.grad(loss))


def brusselator_sundials(n: int, linear_solver: str = "qr"):
    """CVODES through CasADi, its Newton systems solved by `linear_solver`: CasADi's
    default, `"qr"` (a sparse QR on the Jacobian's sparsity pattern, about four
    nonzeros a row here), or `"lapacklu"` (dense, as jadjoint's)."""
    import casadi as ca

    y, p = ca.SX.sym("y", 2 * n), ca.SX.sym("p", 3)
    u, v = y[:n], y[n:]
    diffusion = p[2] * (n + 1) ** 2
    u_ends, v_ends = ca.vertcat(1, u, 1), ca.vertcat(3, v, 3)
    du = p[0] + u**2 * v - (p[1] + 1) * u
    du += diffusion * (u_ends[:-2] - 2 * u + u_ends[2:])
    dv = p[1] * u - u**2 * v + diffusion * (v_ends[:-2] - 2 * v + v_ends[2:])
    dae = dict(x=y, p=p, ode=ca.vertcat(du, dv), quad=ca.sumsqr(u) / n)
    options = dict(
        abstol=BRUSSELATOR_ATOL,
        reltol=BRUSSELATOR_RTOL,
        max_num_steps=100_000,
        linear_solver=linear_solver,
    )
    integrator = ca.integrator("F", "cvodes", dae, 0.0, [10.0], options)
    point = ca.MX.sym("point", 3)
    cost = integrator(x0=np.asarray(brusselator(n)[2]), p=point)["qf"]
    gradient = ca.Function("gradient", [point], [ca.gradient(cost, point)])
    return lambda point: np.asarray(gradient(np.asarray(point))).ravel()


def forward_statistics(have_casadi: bool):
    """The forward solve of Robertson's ODE (rtol 1e-8, atol 1e-10, `[0, 100]`):
    steps taken and rejected, evaluations of the vector field in Newton iterations,
    Jacobians and factorisations, for the BDF and for CVODES (whose Jacobians are
    CasADi's exact ones, as jadjoint's are `jax.jacfwd`'s)."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, log_k: robertson_vf(y, log_k, t)),
        ja.BDF(rtol=RTOL, atol=ATOL),
        0.0,
        T1,
        None,
        Y0,
        args=LOG_K,
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
        stepsize_controller=ja.BDFStepSize(rtol=RTOL, atol=ATOL),
        max_steps=100_000,
    )
    state = solution.solver_state
    rows = {
        "jadjoint BDF": (
            solution.stats["num_accepted_steps"],
            solution.stats["num_rejected_steps"],
            state.evaluations,
            state.factorisations,  # a Jacobian for each
            state.factorisations,
        )
    }
    if have_casadi:
        import casadi as ca

        y, log_k = ca.SX.sym("y", 3), ca.SX.sym("log_k", 3)
        k = ca.exp(log_k)
        rates = ca.vertcat(
            -k[0] * y[0] + k[2] * y[1] * y[2],
            k[0] * y[0] - k[1] * y[1] ** 2 - k[2] * y[1] * y[2],
            k[1] * y[1] ** 2,
        )
        options = dict(abstol=ATOL, reltol=RTOL, max_num_steps=100_000)
        dae = dict(x=y, p=log_k, ode=rates)
        integrator = ca.integrator("F", "cvodes", dae, 0.0, [T1], options)
        integrator(x0=np.array(Y0), p=np.array(LOG_K))
        stats = integrator.stats()
        rows["SUNDIALS CVODES"] = tuple(
            stats.get(key, "?")
            for key in ("nsteps", "netfails", "nfevals", "n_call_jacF", "nlinsetups")
        )
    print("## Robertson ODE, the forward solve's work")
    print("| solver | steps | error-test failures | evaluations | Jacobians | LUs |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        print("| " + " | ".join([name, *(str(int(v)) for v in values)]) + " |")
    print(
        "\n(jadjoint's evaluations, Jacobians and factorisations over accepted steps "
        "only, a Jacobian for each factorisation; its steps are accepted ones.)\n"
    )


def timed(fn, point) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(point))
    return time.perf_counter() - start


def report(title: str, peer: str, methods: dict, truth, point, repeats: int):
    """One table: each method's median gradient time over `repeats` interleaved
    calls, its ratio to the SUNDIALS `peer` and its relative error against
    `truth`."""
    errors = {}
    for name, fn in list(methods.items()):
        try:
            grad = np.asarray(fn(point))
        except RuntimeError as error:  # a SUNDIALS failure, reported as such
            print(f"{name} failed: {str(error).splitlines()[-1]}")
            del methods[name]
            continue
        errors[name] = float(np.max(np.abs(grad - truth) / np.abs(truth)))
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn, point))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = next((m for n, m in medians.items() if "SUNDIALS" in n), None)
    print(f"## {title}")
    print(f"| method | median ms | ratio to {peer} | relative error |")
    print("|---|---|---|---|")
    for name in methods:
        ratio = "" if base is None else f"{medians[name] / base:.2f}"
        row = [name, f"{1e3 * medians[name]:.2f}", ratio, f"{errors[name]:.1e}"]
        print("| " + " | ".join(row) + " |")
    print()


# The matrix-free options: Krylov solves to 1e-2 relative, 1e-4 absolute in the
# error test's units (Newton stops at 1e-3 there at rtol 1e-6); GMRES restarted
# every 5 iterations (lineax's runs each cycle to its end).
MATRIX_FREE = {
    "GMRES": lx.GMRES(rtol=1e-2, atol=1e-4, restart=5, max_steps=200),
    "BiCGStab": lx.BiCGStab(rtol=1e-2, atol=1e-4, max_steps=500),
}
SWEEP_CELLS = (64, 256, 1024, 4096)
# The largest sizes each unpreconditioned variant runs at (beyond them a gradient
# takes from seconds to minutes).
LARGEST = {"dense LU": 256, "GMRES": 256, "BiCGStab": 1024}


def brusselator_sweep(have_casadi: bool, repeats: int):
    """The Brusselator's gradient at each of `SWEEP_CELLS`: the BDF matrix-free with
    the tridiagonal preconditioner (`brusselator_preconditioner`) and without, with
    its dense LU, and CVODES (sparse QR), the error column against CVODES's
    gradient."""
    if not have_casadi:
        print("(the sweep needs CasADi for its peer)")
        return
    for n in SWEEP_CELLS:
        preconditioner = brusselator_preconditioner(n)
        methods = {
            f"jadjoint BDF, {name} + tridiagonal preconditioner": brusselator_jadjoint(
                n, ja.BDF(linear_solver=s, preconditioner=preconditioner)
            )
            for name, s in MATRIX_FREE.items()
        }
        for name, s in MATRIX_FREE.items():
            if n <= LARGEST[name]:
                methods[f"jadjoint BDF, {name}"] = brusselator_jadjoint(
                    n, ja.BDF(linear_solver=s)
                )
        if n <= LARGEST["dense LU"]:
            methods["jadjoint BDF, dense LU"] = brusselator_jadjoint(n, ja.BDF())
        methods["SUNDIALS CVODES (CasADi)"] = brusselator_sundials(n)
        truth = methods["SUNDIALS CVODES (CasADi)"](BRUSSELATOR_POINT)
        title = f"Brusselator sweep, N = {n} ({2 * n} states), error against CVODES"
        report(title, "CVODES", methods, truth, BRUSSELATOR_POINT, repeats)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    try:
        import casadi  # noqa: F401

        have_casadi = True
    except ImportError:
        have_casadi = False
    if args.sweep:
        print(f"device: {jax.devices()[0].platform}, jax {jax.__version__}\n")
        brusselator_sweep(have_casadi, args.repeats)
        return

    cases = [
        ("Robertson ODE, 1e4 ∫ y2 dt", "cost", "ode", "CVODES"),
        ("Robertson ODE, 40 saved states", "observations", "ode", "CVODES"),
        ("Robertson DAE (singular M), 1e4 ∫ y2 dt", "cost", "dae", "IDAS"),
        ("Robertson DAE (singular M), 40 saved states", "observations", "dae", "IDAS"),
    ]
    print(f"device: {jax.devices()[0].platform}, jax {jax.__version__}\n")
    forward_statistics(have_casadi)
    for title, kind, form, peer in cases:
        methods = {
            "jadjoint BDF": jadjoint_gradient(ja.BDF(), kind, form),
            "jadjoint BDF, DiscretiseThenOptimise": jadjoint_gradient(
                ja.BDF(), kind, form, ja.DiscretiseThenOptimise()
            ),
            "jadjoint Kvaerno5": jadjoint_gradient(kvaerno5(1e-10), kind, form),
        }
        if form == "ode":
            methods["diffrax RCA + Kvaerno5"] = diffrax_gradient(kind)
        if have_casadi:
            methods[f"SUNDIALS {peer} (CasADi)"] = sundials_gradient(kind, form)
        report(title, peer, methods, reference(kind), LOG_K, args.repeats)

    methods = {
        "jadjoint BDF": van_der_pol_jadjoint(ja.BDF()),
        "jadjoint BDF, DiscretiseThenOptimise": van_der_pol_jadjoint(
            ja.BDF(), ja.DiscretiseThenOptimise()
        ),
        "jadjoint Kvaerno5": van_der_pol_jadjoint(kvaerno5(1e-10)),
        "diffrax RCA + Kvaerno5": van_der_pol_diffrax(),
    }
    if have_casadi:
        methods["SUNDIALS CVODES (CasADi)"] = van_der_pol_sundials()
    truth = np.asarray(van_der_pol_diffrax(1e-11, 1e-13, 1e-13)(VDP_POINT))
    title = "Van der Pol, μ = 1000, t ∈ [0, 700], 60 saved states, d/d(μ, y0)"
    report(title, "CVODES", methods, truth, VDP_POINT, args.repeats)

    n = 64
    methods = {
        "jadjoint BDF": brusselator_jadjoint(n, ja.BDF()),
        "jadjoint BDF, DiscretiseThenOptimise": brusselator_jadjoint(
            n, ja.BDF(), ja.DiscretiseThenOptimise()
        ),
        "jadjoint Kvaerno5": brusselator_jadjoint(n, kvaerno5(1e-8)),
        "diffrax RCA + Kvaerno5": brusselator_diffrax(n),
    }
    if have_casadi:
        methods["SUNDIALS CVODES (CasADi)"] = brusselator_sundials(n)
        methods["SUNDIALS CVODES, dense LU (CasADi)"] = brusselator_sundials(
            n, "lapacklu"
        )
    truth = np.asarray(brusselator_diffrax(n, 1e-10, 1e-12, 1e-12)(BRUSSELATOR_POINT))
    title = f"Brusselator, N = {n} (2N = {2 * n} states), ∫ mean(u²) dt, d/d(A, B, α)"
    report(title, "CVODES", methods, truth, BRUSSELATOR_POINT, args.repeats)
    brusselator_sweep(have_casadi, min(args.repeats, 5))


if __name__ == "__main__":
    main()
