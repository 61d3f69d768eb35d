"""Python numbers and NumPy values as inputs: converted to JAX arrays on entry.

Inside a transformation JAX may hand a Python number on as a Python number (under
`jax.grad(F)(1.0)` the primal inside a `custom_vjp` is a Python `float` subclass),
which equinox's filtered transformations treat as static, not as an array. So every
numeric leaf becomes a JAX array before anything else sees it: then `1.0`,
`np.float64(1.0)` and `jnp.array(1.0)` give the same solve and the same gradients.
"""

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

_NUMERIC = (bool, int, float, complex, np.ndarray, np.generic)


def _is_numeric(leaf) -> bool:
    return isinstance(leaf, _NUMERIC)


def parameter_arrays(p: PyTree) -> PyTree:
    """`p` with every Python number and NumPy value as a JAX array (of its own
    dtype: an integer stays an integer, which is not differentiated). Other leaves
    (JAX arrays, functions, …) are kept."""
    return jtu.tree_map(lambda a: jnp.asarray(a) if _is_numeric(a) else a, p)


def state_arrays(x0: PyTree) -> PyTree:
    """`x0` with every Python number as a JAX array of the default floating-point
    dtype (`1` is the state `1.0`), and NumPy values as JAX arrays."""

    def convert(leaf):
        if isinstance(leaf, (bool, int, float)):
            return jnp.asarray(leaf, dtype=float)
        return jnp.asarray(leaf) if _is_numeric(leaf) else leaf

    return jtu.tree_map(convert, x0)
