"""`check_grad`: the adjoint gradient against central finite differences and against
[`jadjoint.DiscretiseThenOptimise`][] (diffrax's `RecursiveCheckpointAdjoint`)."""

import dataclasses

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._adjoint import DiscretiseThenOptimise
from ._solve import differentiated_by


@dataclasses.dataclass(frozen=True)
class GradCheck:
    """The report of [`jadjoint.check_grad`][]: the relative error of the adjoint
    gradient for each leaf (named by its path), against finite differences along
    random directions and, when available, against the discretise-then-optimise
    gradient."""

    finite_difference: dict[str, float]
    reference: dict[str, float] | None

    @property
    def worst(self) -> tuple[str, float]:
        """`(leaf, error)` with the largest error over both comparisons."""
        errors = dict(self.finite_difference)
        for leaf, error in (self.reference or {}).items():
            errors[leaf] = max(errors.get(leaf, 0.0), error)
        leaf = max(errors, key=errors.get)
        return leaf, errors[leaf]

    def __str__(self) -> str:
        lines = ["leaf | vs finite differences | vs RecursiveCheckpointAdjoint"]
        for leaf, error in self.finite_difference.items():
            reference = "n/a" if self.reference is None else self.reference[leaf]
            reference = reference if isinstance(reference, str) else f"{reference:.1e}"
            lines.append(f"{leaf or '(argument)'} | {error:.1e} | {reference}")
        leaf, error = self.worst
        lines.append(f"worst: {leaf or '(argument)'} at {error:.1e}")
        return "\n".join(lines)


def _relative(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), np.finfo(float).tiny)
    return float(np.max(np.abs(a - b)) / scale)


def check_grad(
    fun,
    *args,
    argnums: int = 0,
    tol: float | None = None,
    directions: int = 2,
    seed: int = 0,
) -> GradCheck:
    """Check `jax.grad(fun, argnums)(*args)` for a scalar `fun` built on
    [`jadjoint.solve`][].

    - Finite differences: for each floating-point leaf of `args[argnums]` and each of
        `directions` random directions `v` in it, the central difference
        `(F(x + ε v) − F(x − ε v)) / 2ε` against `∇F · v`, with
        `ε = eps^{1/3} max(1, max |x|)` (balancing truncation against rounding).
    - Reference: the gradient with every `solve` inside `fun` differentiated by
        [`jadjoint.DiscretiseThenOptimise`][] (through diffrax's solver steps by
        `RecursiveCheckpointAdjoint`), an independent
        derivative of the same discretised problem. Unavailable (`None`) when `fun`
        calls no `solve` while being traced, e.g. when it is already `jax.jit`-compiled
        and cached: pass the un-jitted function.

    **Arguments:**

    - `fun`: scalar function of `args`.
    - `args`: its arguments.
    - `argnums`: which argument to differentiate.
    - `tol`: if given, raise `AssertionError` with the report when the worst relative
        error exceeds it.
    - `directions`: random directions per leaf for the finite differences.
    - `seed`: seed of the random directions.

    **Returns:** a `GradCheck` report; `print` it for a table.
    """
    value = args[argnums]

    def of_argument(x):
        return fun(*args[:argnums], x, *args[argnums + 1 :])

    gradient = jax.jit(jax.grad(of_argument))(value)
    with differentiated_by(DiscretiseThenOptimise()) as calls:
        reference = jax.jit(jax.grad(of_argument))(value)
    evaluate = jax.jit(of_argument)

    leaves_with_paths, treedef = jtu.tree_flatten_with_path(value)
    gradient_leaves = treedef.flatten_up_to(gradient)
    reference_leaves = treedef.flatten_up_to(reference)
    leaves = [leaf for _, leaf in leaves_with_paths]
    rng = np.random.default_rng(seed)
    finite_difference, against_reference = {}, {}
    for i, (path, leaf) in enumerate(leaves_with_paths):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        name = jtu.keystr(path)
        leaf = jnp.asarray(leaf)
        eps = float(jnp.finfo(leaf.dtype).eps)
        step = eps ** (1 / 3) * max(1.0, float(jnp.max(jnp.abs(leaf))))
        errors = []
        for _ in range(directions):
            direction = rng.standard_normal(leaf.shape).astype(leaf.dtype)
            direction /= max(np.max(np.abs(direction)), 1e-30)

            values = []
            for sign in (1.0, -1.0):
                moved = list(leaves)
                moved[i] = leaf + sign * step * direction
                values.append(float(evaluate(jtu.tree_unflatten(treedef, moved))))
            difference = (values[0] - values[1]) / (2 * step)
            directional = float(jnp.sum(gradient_leaves[i] * direction))
            errors.append(_relative(directional, difference))
        finite_difference[name] = max(errors)
        against_reference[name] = _relative(gradient_leaves[i], reference_leaves[i])
    report = GradCheck(finite_difference, against_reference if calls else None)
    if tol is not None and report.worst[1] > tol:
        raise AssertionError(f"gradient check failed (tolerance {tol:.1e}):\n{report}")
    return report
