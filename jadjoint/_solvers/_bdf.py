"""A variable-order, variable-step BDF solver for `diffrax.diffeqsolve`.

diffrax has no backward differentiation formula, the workhorse of stiff kinetics and
DAEs (CVODES, IDAS, MATLAB's `ode15s`, scipy's `BDF`), so this is a solver of our
own on diffrax's public solver interface: it steps inside `diffeqsolve`, saves,
interpolates and restarts like any diffrax solver, and jadjoint's forward and
backward passes use it unchanged.

The method is the NDF family of Shampine & Reichelt ("The MATLAB ODE suite", SIAM
J. Sci. Comput. 18(1), 1997) in the quasi-constant step form: the state keeps the
backward differences `D_j = ∇^j y_n` (`j = 0 … MAX_ORDER + 2`) at spacing `h`,
rescaled when the step changes. A step of order `k` from `t_n` to `t_{n+1} = t_n + h`
predicts `y⁰ = Σ_{j≤k} D_j` and solves

    y − c f(t_{n+1}, y) = y⁰ − ψ,   c = h / α_k,   ψ = Σ_{j=1}^{k} γ_j D_j / α_k,

with `γ_j = Σ_{i≤j} 1/i`, `α_k = (1 − κ_k) γ_k`, by a simplified Newton iteration on
`d = y − y⁰` with the iteration matrix `I − c J`. Its error estimate is
`E_k = (κ_k γ_k + 1/(k+1)) d`; the order moves by at most one after `k + 1` steps at
the same step size, to the neighbour whose error estimate allows the longest step.

The iteration matrix is reused across steps as SUNDIALS does (Hindmarsh et al.,
"SUNDIALS", ACM TOMS 31(3), 2005): its LU factors are kept until `c` has changed by
more than `REFACTOR_RATIO`, until they are `FACTORS_AGE` accepted steps old, or
until Newton fails to converge with factors from an earlier step (then retried once
with new ones); a correction computed with stale factors is scaled by
`2 / (1 + c / c_lu)`. The factors are `jax.lax.linalg.lu`'s, kept with the row
permutation, and solved with by two triangular solves: lineax's LU keeps the
pivots and rebuilds the permutation from them on every solve (a loop of `n`
iterations, several times the solve's own work). (The derivative of the step,
below, is a lineax solve.) Unlike SUNDIALS, the Jacobian `J = ∂f/∂y` (by
`jax.jacfwd`) is evaluated afresh for each factorisation rather than kept: in a
compiled loop an `n × n` array carried from step to step is copied on every step,
and keeping `J` made a step at 128 states 2.4× slower than evaluating it when needed.

For large systems the Newton corrections may be found matrix-free instead
(`linear_solver`: lineax's `BiCGStab` or `GMRES`): each step linearises `f` at its
prediction (`jax.linearize`) and solves `(I − c J) Δ = r` by Krylov iterations on
Jacobian-vector products with the step's own `c`. No `n × n` array is formed or
kept, so nothing is factorised or reused; the price is a Jacobian-vector product per
Krylov iteration, where the dense path pays `n` of them and an `O(n³)` factorisation
only now and then. A user's `preconditioner`, an approximation `P` of the iteration
matrix's inverse (`_preconditioner.py`), is built once a step at the prediction and
applied in each Krylov iteration.

The step is differentiable: the Newton iteration runs on values without
derivatives, and `jax.lax.custom_root` gives its solution the derivative of the
equation it solves (the implicit function theorem: one linear solve with
`I − c J(y_{n+1})`). Forward-mode derivatives and `DiscretiseThenOptimise` go
through the steps so; the step-size and order decisions have no derivative.

One decision, two owners. diffrax's step-size controllers see only the solver's error
estimate, while order and step size here are one choice made from the difference
table. So the solver makes it, from its own tolerances (`rtol`, `atol`, `norm`, set
by jadjoint from `solve`'s), and reports it as its error estimate (`StepDecision`),
which `BDFStepSize`, the controller to use with it, obeys.
"""

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, PyTree

from ._preconditioner import applied

MAX_ORDER = 5
NEWTON_MAX_ITERATIONS = 4
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
REFACTOR_RATIO = 0.3
FACTORS_AGE = 50

# The NDF coefficients of Shampine & Reichelt (κ_k; κ = 0 gives the BDFs), indexed
# by order 0 … MAX_ORDER.
_KAPPA = np.array([0.0, -0.1850, -1 / 9, -0.0823, -0.0415, 0.0])
_GAMMA = np.concatenate([[0.0], np.cumsum(1 / np.arange(1, MAX_ORDER + 1))])
_ROWS = MAX_ORDER + 3


def _rescaling(order, factor):
    """The matrix `RU` with `D_new[:k+1] = (RU)ᵀ D[:k+1]` when the step changes by
    `factor` at order `k` (the identity beyond row `k`): the differences of the same
    interpolating polynomial at the new spacing."""
    index = jnp.arange(_ROWS)

    def r_matrix(f):
        i = index[:, None].astype(jnp.result_type(f))
        j = index[None, :].astype(jnp.result_type(f))
        m = jnp.where(i >= 1, (i - 1 - f * j) / jnp.maximum(i, 1), 1.0)
        m = jnp.where((i >= 1) & (j == 0), 0.0, m)
        inside = (index[:, None] <= order) & (index[None, :] <= order)
        return jnp.where(inside, jnp.cumprod(m, axis=0), 0.0)

    product = r_matrix(factor) @ r_matrix(jnp.ones_like(factor))
    beyond = (index[:, None] > order) | (index[None, :] > order)
    return jnp.where(beyond, jnp.eye(_ROWS, dtype=product.dtype), product)


def _without_derivatives(tree: PyTree) -> PyTree:
    """`tree` with `jax.lax.stop_gradient` on its arrays."""
    return jtu.tree_map(
        lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, tree
    )


def _lu_solve(factors, b):
    """`x` with `A x = b`, from `A`'s LU factors and row permutation."""
    lu, permutation = factors
    x = b[permutation][:, None]
    x = jax.lax.linalg.triangular_solve(
        lu, x, left_side=True, lower=True, unit_diagonal=True
    )
    return jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)[:, 0]


def _rescaled(differences, order, factor):
    return _rescaling(order, factor).T @ differences


class BDFState(eqx.Module):
    """The solver's state between steps: the differences `D` (`MAX_ORDER + 3` rows,
    flat), scaled to the step `h`; the `order` and the steps taken at `h` and that
    order (`equal_steps`); the LU factors of the iteration matrix `I − c_lu J` and
    their age in accepted steps; and counts, over the accepted steps (diffrax keeps a
    rejected step's state from nothing), of the vector field's evaluations in Newton
    iterations and of factorisations (each with a Jacobian). Matrix-free, there
    are no factors (empty arrays) and no factorisations."""

    differences: Array
    h: Array
    order: Array
    equal_steps: Array
    factors: tuple[Array, Array]
    c_lu: Array
    factors_age: Array
    evaluations: Array
    factorisations: Array


class StepDecision(eqx.Module):
    """The solver's verdict on a step, in place of an error estimate: whether it is
    rejected (1.0) or accepted (0.0), and the length of the next step."""

    rejected: Array
    next_dt: Array


class BDFInterpolation(diffrax.AbstractLocalInterpolation):
    """The dense output of a step `[t0, t1]` of order `k`: the polynomial through
    `y(t1 − m h)`, `m = 0 … k`, `h = t1 − t0`, in Newton form,
    `y(t) = D_0 + Σ_{j=1}^{k} D_j Π_{m=0}^{j−1} (t − t1 + m h) / ((m + 1) h)`."""

    t0: Array
    t1: Array
    differences: PyTree
    order: Array

    def evaluate(self, t0, t1=None, left: bool = True) -> PyTree:
        del left
        if t1 is not None:
            return jtu.tree_map(jnp.subtract, self.evaluate(t1), self.evaluate(t0))
        h = self.t1 - self.t0
        m = jnp.arange(MAX_ORDER, dtype=jnp.result_type(h))
        products = jnp.cumprod((t0 - self.t1 + m * h) / ((m + 1) * h))
        weights = jnp.where(jnp.arange(1, MAX_ORDER + 1) <= self.order, products, 0)
        weights = jnp.concatenate([jnp.ones(1, weights.dtype), weights])
        return jtu.tree_map(
            lambda d: jnp.tensordot(weights.astype(d.dtype), d, axes=1),
            self.differences,
        )


class BDF(diffrax.AbstractAdaptiveSolver):
    """A variable-order (1–5), variable-step BDF for stiff ODEs: the numerical
    differentiation formulas of MATLAB's `ode15s` (`ndf=True`) or the classic BDFs.

    Use it with [`jadjoint.solve`][] (`solver=jadjoint.BDF()`), which sets its
    tolerances from `solve`'s `rtol` and `atol`. With `diffrax.diffeqsolve` directly,
    set `rtol` and `atol` here and pass `stepsize_controller=jadjoint.BDFStepSize()`.

    **Arguments:**

    - `rtol`, `atol`: the tolerances of the error estimate.
    - `norm`: the norm of a flattened scaled error (RMS by default).
    - `ndf`: the NDFs (`True`) or the BDFs (`False`).
    - `linear_solver`: `None` (default) for dense LU factors of `I − c J`, kept
        across steps; or a lineax solver that needs only matrix-vector products
        (`lineax.BiCGStab(rtol=1e-2, atol=1e-4)`, say) for matrix-free Newton–Krylov
        corrections on Jacobian-vector products, for systems too large for a dense
        matrix. Its tolerances are those of each linear solve, in the units of the
        error test (each component divided by `atol + rtol |y|`, in which Newton
        stops at corrections below about `min(0.03, √rtol)`); a solve stopped by
        its `max_steps` still gives a correction, and Newton's own tests judge it
        as with LU. lineax's `BiCGStab` is faster than its `GMRES` where it works,
        but breaks down (NaN) where a half-step happens to solve exactly: on small
        diagonal-dominant systems the step is then retried shorter, on and on, and
        through the steps (`DiscretiseThenOptimise`, forward mode) a zero
        cotangent stops the derivative with lineax's error. `GMRES` does neither.
    - `preconditioner`: with a matrix-free `linear_solver`, a function
        `(x, p, t, c) -> P` giving a lineax operator `P ≈ (I − c ∂ẋ/∂x)⁻¹`, the
        inverse of the iteration matrix at the state `x`, the parameters `p`, the
        time `t`, for the step's `c > 0`, in `x`'s structure (lineax's own
        convention for a Krylov solver's `preconditioner`): for example a
        `lineax.FunctionLinearOperator` that solves with the stiff part of the
        iteration matrix (a diffusion stencil's tridiagonal by
        `jax.lax.linalg.tridiagonal_solve`; the blocks of a block-diagonal one,
        factorised in the function and solved with in the operator). Solve with
        `jax.lax.linalg` there, not `lineax.linear_solve`, whose transposed solve
        raises on the NaN a Krylov solver that broke down passes on. `P` is built
        once a step, at the prediction, and applied in each Krylov iteration,
        which then take far fewer; where BiCGStab breaks down, the correction is
        `P r` instead, `r` Newton's residual (Newton's tests judge it). jadjoint's
        backward solves apply `Pᵀ` (lineax transposes `P`), at the forward
        `x(t)`; `BacksolveAdjoint`'s, which re-integrate `x` with the adjoint,
        are not preconditioned. With `diffrax.diffeqsolve` directly the arguments are
        `(y, args, t, c)`, in the solve's time (`t` negated for a solve backwards
        in time).
    - `implicit_size`: how many leading entries of the flattened state Newton solves
        for (default: all). The others are quadratures, as CVODES has them: no rate
        depends on them, so they are no unknowns of Newton and no part of its
        Jacobian; each step gives them the same formula, explicitly, with the rates
        at Newton's last iterate. jadjoint's backward solves so carry the
        parameter integral (`n_p` entries that would otherwise make the iteration
        matrix `(n + n_p) × (n + n_p)`).

    The step is differentiable: its Newton solution by the implicit function
    theorem (one linear solve with the Jacobian at the solution), the rest
    directly; the step-size and order decisions are not differentiated. So it
    serves the continuous adjoints (which never differentiate it), forward-mode
    derivatives and `DiscretiseThenOptimise`.
    """

    rtol: float | None = None
    atol: float | None = None
    norm: Callable = optx.rms_norm
    ndf: bool = eqx.field(static=True, default=True)
    linear_solver: lx.AbstractLinearSolver | None = None
    implicit_size: int | None = eqx.field(static=True, default=None)
    preconditioner: Callable | None = None
    approximate_inverse: Callable | None = None

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = BDFInterpolation

    def __check_init__(self):
        if self.preconditioner is not None and self.linear_solver is None:
            raise ValueError(
                "`BDF(preconditioner=...)` preconditions matrix-free Newton-Krylov "
                "corrections: give a matrix-free `linear_solver` too (for example "
                "`lineax.GMRES(rtol=1e-2, atol=1e-4)`)."
            )

    def order(self, terms):
        return 1

    def with_tolerances(
        self,
        rtol,
        atol,
        norm: Callable,
        implicit_size: int | None = None,
        approximate_inverse: Callable | None = None,
    ) -> "BDF":
        """This solver with the given error tolerances and norm, Newton's
        unknowns the first `implicit_size` entries (all by default), and, for a
        `preconditioner`, the function `approximate_inverse(preconditioner, t, y,
        args, c)` that applies it as a map of flat vectors of Newton's unknowns,
        `y` the solve's state (by default `preconditioner(y, args, t, c)` on the
        whole flattened state), or gives `None` for no preconditioning."""
        return BDF(
            rtol=rtol,
            atol=atol,
            norm=norm,
            ndf=self.ndf,
            linear_solver=self.linear_solver,
            implicit_size=implicit_size,
            preconditioner=self.preconditioner,
            approximate_inverse=approximate_inverse,
        )

    def _preconditioning(self, t, y, args, c) -> Callable | None:
        """`v ↦ P v` on flat vectors of Newton's unknowns, `P` the
        preconditioner's approximation of the iteration matrix's inverse at
        `(t, y)`; `None` without a preconditioner."""
        if self.preconditioner is None:
            return None
        if self.approximate_inverse is not None:
            return self.approximate_inverse(self.preconditioner, t, y, args, c)
        return applied(self.preconditioner(y, args, t, c), y)

    def _unknowns(self, size: int) -> int:
        """How many leading entries of a flat state of `size` Newton solves for."""
        return size if self.implicit_size is None else self.implicit_size

    def _implicit_rate(self, rate, t, flat):
        """`f` at `t` as a function of Newton's unknowns (the leading
        `implicit_size` entries of `flat`, the rest held), and those unknowns."""
        size = self._unknowns(flat.size)

        def implicit_rate(unknowns):
            return rate(t, jnp.concatenate([unknowns, flat[size:]]))[:size]

        return implicit_rate, flat[:size]

    def _implicit_jacobian(self, rate, t, flat):
        """`∂f/∂y` at `(t, flat)` over Newton's unknowns."""
        implicit_rate, unknowns = self._implicit_rate(rate, t, flat)
        return jax.jacfwd(implicit_rate)(unknowns)

    def _coefficients(self, dtype):
        kappa = _KAPPA if self.ndf else np.zeros_like(_KAPPA)
        alpha = (1 - kappa) * _GAMMA
        error = kappa * _GAMMA + 1 / np.arange(1, MAX_ORDER + 2)
        return (
            jnp.asarray(alpha, dtype),
            jnp.asarray(_GAMMA, dtype),
            jnp.asarray(error, dtype),
        )

    def _flat_rate(self, terms, t0, t1, y_like, args):
        """`(t, y) ↦ f(t, y)` on flat `y`: the vector field in diffrax's normalised
        time (forwards even when the solve runs backwards)."""
        _, unravel = jax.flatten_util.ravel_pytree(y_like)
        control = terms.contr(t0, t1)
        h = t1 - t0
        h = jnp.where(h == 0, 1, h)

        def rate(t, y):
            increment = terms.vf_prod(t, unravel(y), args, control)
            flat = jax.flatten_util.ravel_pytree(increment)[0]
            return flat / h.astype(flat.dtype)

        return rate

    def _factorised(self, jacobian, c):
        """The LU factors of `I − c J` (one matrix, `L` below its diagonal) and the
        row permutation."""
        lu, _, permutation = jax.lax.linalg.lu(
            jnp.eye(jacobian.shape[0], dtype=jacobian.dtype) - c * jacobian
        )
        return lu, permutation

    def init(self, terms, t0, t1, y0, args) -> BDFState:
        flat, _ = jax.flatten_util.ravel_pytree(y0)
        rate = self._flat_rate(terms, t0, t1, y0, args)
        h = jnp.asarray(t1 - t0, flat.dtype)
        differences = jnp.zeros((_ROWS, flat.size), flat.dtype)
        differences = differences.at[0].set(flat).at[1].set(h * rate(t0, flat))
        alpha, _, _ = self._coefficients(flat.dtype)
        c = h / alpha[1]
        zero = jnp.zeros((), jnp.int32)
        if self.linear_solver is None:
            factors = self._factorised(self._implicit_jacobian(rate, t0, flat), c)
            factorisations = jnp.ones((), jnp.int32)
        else:
            factors = (jnp.zeros((0, 0), flat.dtype), jnp.zeros(0, jnp.int32))
            factorisations = zero
        return BDFState(
            differences=differences,
            h=h,
            order=jnp.ones((), jnp.int32),
            equal_steps=zero,
            factors=factors,
            c_lu=c,
            factors_age=zero,
            evaluations=jnp.ones((), jnp.int32),
            factorisations=factorisations,
        )

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state: BDFState, made_jump):
        # A jump in the vector field would need a restart at order one; jadjoint
        # solves make none.
        del made_jump
        state = solver_state
        flat0, unravel = jax.flatten_util.ravel_pytree(y0)
        dtype = flat0.dtype
        rate = self._flat_rate(terms, t0, t1, y0, args)
        alpha, gamma, error_constant = self._coefficients(dtype)
        eps = jnp.finfo(dtype).eps
        newton_tol = jnp.maximum(
            10 * eps / self.rtol, jnp.minimum(0.03, jnp.sqrt(self.rtol))
        )

        h = jnp.asarray(t1 - t0, dtype)
        # A solve of zero length starts with `h = 0` (and never steps, though under
        # `vmap` its discarded steps are computed): keep them finite.
        factor = h / jnp.where(state.h == 0, 1, state.h)
        order = state.order
        differences = _rescaled(state.differences, order, factor)
        changed = jnp.abs(factor - 1) > 100 * eps
        equal_steps = jnp.where(changed, 0, state.equal_steps)

        rows = jnp.arange(_ROWS)
        used = (rows <= order)[:, None]
        predicted = jnp.sum(jnp.where(used, differences, 0), axis=0)
        weights = jnp.where(
            (rows >= 1) & (rows <= order), gamma[jnp.minimum(rows, 5)], 0
        )
        psi = weights @ differences / alpha[order]
        c = h / alpha[order]
        n_predicted, n_psi, n_c, n_t1 = jax.lax.stop_gradient((predicted, psi, c, t1))
        n_times = jax.lax.stop_gradient((t0, t1))
        n_args = _without_derivatives(args)
        n_rate = self._flat_rate(terms, *n_times, y0, n_args)
        n_state = _without_derivatives(state)
        size = self._unknowns(flat0.size)
        full_scale = self.atol + self.rtol * jnp.abs(n_predicted)
        scale = full_scale[:size]

        preconditioning = self._preconditioning(n_t1, unravel(n_predicted), n_args, n_c)

        def newton(correction):
            """The simplified Newton iteration from `predicted`, each correction
            `correction(residual) -> Δ`: whether it converged, its
            iterations and `d = y − predicted` (scipy's tests of convergence and
            divergence), the quadratures' entries of `d` from the rates at the last
            iterate."""

            def body(carry):
                i, d, norm_old, _, _, _ = carry
                f = n_rate(n_t1, n_predicted + d)
                residual = (n_c * f - n_psi - d)[:size]
                dy = correction(residual)
                dy_norm = self.norm(dy / scale)
                ratio = dy_norm / norm_old
                first = i == 0
                finite = jnp.all(jnp.isfinite(f)) & jnp.isfinite(dy_norm)
                remaining = (NEWTON_MAX_ITERATIONS - i).astype(dtype)
                diverging = ~first & (
                    (ratio >= 1)
                    | (ratio**remaining / (1 - ratio) * dy_norm > newton_tol)
                )
                stop = ~finite | diverging
                d = jnp.where(stop, d, d.at[:size].add(dy))
                settled = ~first & (ratio / (1 - ratio) * dy_norm < newton_tol)
                converged = ~stop & ((dy_norm == 0) | settled)
                return i + 1, d, dy_norm, converged, stop | converged, f

            carry = (
                jnp.zeros((), jnp.int32),
                jnp.zeros_like(n_predicted),
                jnp.asarray(jnp.inf, dtype),
                jnp.asarray(False),
                jnp.asarray(False),
                jnp.zeros_like(n_predicted),
            )
            i, d, _, converged, _, f = jax.lax.while_loop(
                lambda carry: ~carry[4] & (carry[0] < NEWTON_MAX_ITERATIONS),
                body,
                carry,
            )
            d = d.at[size:].set((n_c * f - n_psi)[size:])
            return converged, i, d

        def renewed(factors, c_lu, age, factorisations, stale):
            """The factors of `I − c J`, `J` the Jacobian at the prediction, when
            `stale` or when `c` has moved too far from `c_lu`; else the same."""
            renew = stale | (jnp.abs(n_c / c_lu - 1) > REFACTOR_RATIO)

            def new():
                jacobian = self._implicit_jacobian(n_rate, n_t1, n_predicted)
                return self._factorised(jacobian, n_c), n_c

            factors, c_lu = jax.lax.cond(renew, new, lambda: (factors, c_lu))
            return factors, c_lu, jnp.where(renew, 0, age), factorisations + renew

        def lu_correction(factors, c_lu):
            """Newton's correction from LU factors of `I − c_lu J`, scaled by
            `2 / (1 + c / c_lu)` for the step's `c`."""
            relaxation = 2 / (1 + n_c / jnp.where(c_lu == 0, n_c, c_lu))
            return lambda residual: _lu_solve(factors, residual) * relaxation

        def iterate():
            """`d` with `c f(t1, y⁰ + d) − ψ − d = 0` by the simplified Newton
            iteration, and what it did."""
            if self.linear_solver is not None:
                return iterate_matrix_free()
            setup = renewed(
                n_state.factors,
                n_state.c_lu,
                n_state.factors_age,
                n_state.factorisations,
                n_state.factors_age >= FACTORS_AGE,
            )
            converged, iterations, d = newton(lu_correction(setup[0], setup[1]))
            # Failed with factors from an earlier step: once more with new ones.
            retry = ~converged & (setup[2] > 0)
            setup = renewed(*setup, retry)
            first_iterations = iterations
            converged, iterations, d = jax.lax.cond(
                retry,
                lambda: newton(lu_correction(setup[0], setup[1])),
                lambda: (converged, iterations, d),
            )
            evaluations = iterations + jnp.where(retry, first_iterations, 0)
            return d, (converged, iterations, evaluations, *setup)

        def scaled_solve(linear, b, weights):
            """`x` with `linear(x) = b` by `linear_solver`, in the units of the
            error test (`x = weights z`, the equations divided by `weights`), so
            that its tolerances mean the same for every component however small
            (an absolute tolerance there is one relative to Newton's own, and
            Newton's late corrections need no more); preconditioned, in the same
            units, by `preconditioning`."""
            structure = jax.eval_shape(lambda: b)
            operator = lx.FunctionLinearOperator(
                lambda z: linear(weights * z) / weights, structure
            )
            options = {}
            if preconditioning is not None:

                def preconditioned(v):
                    # The unknowns preconditioned, the quadratures (in the
                    # implicit function's solve) left as they are.
                    return jnp.concatenate([preconditioning(v[:size]), v[size:]])

                options["preconditioner"] = lx.FunctionLinearOperator(
                    lambda z: preconditioned(weights * z) / weights, structure
                )
            solution = lx.linear_solve(
                operator, b / weights, self.linear_solver, options=options, throw=False
            )
            return weights * solution.value

        def iterate_matrix_free():
            """As `iterate`, each correction by `linear_solver` on the operator
            `Δ ↦ Δ − c J Δ`, `J` linearised at the prediction."""
            _, jvp = jax.linearize(*self._implicit_rate(n_rate, n_t1, n_predicted))

            def correction(residual):
                """`0` for a zero residual without a solve (lineax's BiCGStab
                would divide zero by zero). A Krylov solve stopped short of its
                tolerance still gives a correction: Newton's own tests judge it
                (an inexact Newton step). So does the preconditioned residual
                `P r` where the solve broke down (lineax's BiCGStab gives NaN
                when a half-step solves exactly, which a good preconditioner
                makes likely)."""
                zero = jnp.all(residual == 0)
                rhs = jnp.where(zero, 1, residual)
                step = scaled_solve(lambda v: v - n_c * jvp(v), rhs, scale)
                if preconditioning is not None:
                    broke_down = ~jnp.all(jnp.isfinite(step))
                    step = jnp.where(broke_down, preconditioning(rhs), step)
                return jnp.where(zero, 0, step)

            converged, iterations, d = newton(correction)
            setup = (n_state.factors, n_c, n_state.factors_age, n_state.factorisations)
            return d, (converged, iterations, iterations, *setup)

        def tangent_solve(linearised, b):
            """`(I − c J) x = b` with the Jacobian at the solution (the implicit
            function theorem): by LU on its matrix built from `linearised`, or
            matrix-free by `linear_solver` (lineax)."""
            if self.linear_solver is not None:
                return scaled_solve(linearised, b, full_scale)
            operator = lx.FunctionLinearOperator(linearised, jax.eval_shape(lambda: b))
            return lx.linear_solve(operator, b, lx.LU()).value

        # The iteration runs on values without derivatives; the derivative of the
        # step is that of the solution of its equation (the implicit function
        # theorem), attached by `jax.lax.custom_root` (public) around the solution
        # found. So the step may be differentiated (forward mode; reverse mode
        # through diffrax's `RecursiveCheckpointAdjoint`); the factors and the
        # step-size decisions it carries on have no derivative.
        d_found, (converged, iterations, evaluations, *setup) = iterate()
        d = jax.lax.custom_root(
            lambda d: c * rate(t1, predicted + d) - psi - d,
            d_found,
            lambda _, found: found,
            tangent_solve,
        )
        factors, c_lu, age, factorisations = setup

        y1 = predicted + d
        safety = (
            0.9
            * (2 * NEWTON_MAX_ITERATIONS + 1)
            / (2 * NEWTON_MAX_ITERATIONS + iterations).astype(dtype)
        )
        scale = self.atol + self.rtol * jnp.abs(y1)
        error_norm = self.norm(error_constant[order] * d / scale)
        error_norm = jnp.where(converged, error_norm, jnp.inf)
        accepted = error_norm <= 1

        # The differences after an accepted step: D_{k+2} = d − D_{k+1},
        # D_{k+1} = d, D_j ← Σ_{i=j}^{k} D_i + d for j ≤ k.
        below = jnp.where(used, differences, 0)
        suffix = jnp.flip(jnp.cumsum(jnp.flip(below, 0), axis=0), 0)
        updated = jnp.where(used, suffix + d, differences)
        updated = jnp.where((rows == order + 1)[:, None], d, updated)
        updated = jnp.where(
            (rows == order + 2)[:, None],
            d - differences[jnp.minimum(order + 1, _ROWS - 1)],
            updated,
        )

        # Order selection, after `k + 1` steps at this step size and order.
        equal_steps = equal_steps + 1
        select = equal_steps >= order + 1
        lower = jnp.where(
            order > 1,
            self.norm(
                error_constant[jnp.maximum(order - 1, 0)] * updated[order] / scale
            ),
            jnp.inf,
        )
        higher = jnp.where(
            order < MAX_ORDER,
            self.norm(
                error_constant[jnp.minimum(order + 1, MAX_ORDER)]
                * updated[jnp.minimum(order + 2, _ROWS - 1)]
                / scale
            ),
            jnp.inf,
        )
        norms = jnp.stack([lower, error_norm, higher])
        exponents = -1 / (order + jnp.arange(3)).astype(dtype)
        factors_by_order = jnp.where(norms > 0, norms**exponents, MAX_FACTOR)
        change = jnp.argmax(factors_by_order) - 1
        selected_factor = jnp.minimum(MAX_FACTOR, safety * jnp.max(factors_by_order))
        next_order = jnp.where(select, order + change, order)
        accepted_factor = jnp.where(select, selected_factor, 1.0)

        rejected_factor = jnp.where(
            converged,
            jnp.maximum(
                MIN_FACTOR, safety * error_norm ** (-1 / (order + 1).astype(dtype))
            ),
            0.5,
        )
        next_dt = h * jnp.where(accepted, accepted_factor, rejected_factor)

        new_state = BDFState(
            differences=updated,
            h=h,
            order=next_order.astype(jnp.int32),
            equal_steps=jnp.where(select, 0, equal_steps).astype(jnp.int32),
            factors=factors,
            c_lu=c_lu,
            factors_age=age + 1,
            evaluations=n_state.evaluations + evaluations,
            factorisations=factorisations,
        )
        decision = StepDecision(
            rejected=jnp.where(accepted, 0.0, 1.0).astype(dtype),
            next_dt=jax.lax.stop_gradient(next_dt),
        )
        # The order as a float: diffrax fills unused rows of dense output with inf.
        dense_info = dict(
            differences=jax.vmap(unravel)(updated[: MAX_ORDER + 1]),
            order=order.astype(dtype),
        )
        return unravel(y1), decision, dense_info, new_state, diffrax.RESULTS.successful


class BDFStepSize(diffrax.AbstractStepSizeController):
    """The step-size controller of [`jadjoint.BDF`][]: it takes the step the solver
    chose (`StepDecision`), at most `dtmax` long. The first step, when `dt0` is
    `None`, is diffrax's `PIDController` estimate with `rtol`, `atol` and `norm`."""

    rtol: float
    atol: float
    norm: Callable = optx.rms_norm
    dtmax: float | None = None

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        if dt0 is None:
            pid = diffrax.PIDController(
                rtol=self.rtol, atol=self.atol, norm=self.norm, dtmax=self.dtmax
            )
            t_next, _ = pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
            return t_next, None
        if self.dtmax is not None:
            dt0 = jnp.minimum(dt0, self.dtmax)
        return t0 + dt0, None

    def adapt_step_size(
        self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state
    ):
        decision: StepDecision = y_error
        keep = decision.rejected == 0
        dt = decision.next_dt
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        next_t0 = jnp.where(keep, t1, t0)
        # A step that no longer moves the time is a failure, not a loop to
        # `max_steps`.
        stalled = ~(next_t0 + dt > next_t0) | ~jnp.isfinite(dt)
        result = diffrax.RESULTS.where(
            stalled, diffrax.RESULTS.dt_min_reached, diffrax.RESULTS.successful
        )
        return keep, next_t0, next_t0 + dt, False, None, result
