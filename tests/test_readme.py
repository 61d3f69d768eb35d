"""The README's usage snippet runs as written."""

import pathlib
import re

import jax.numpy as jnp
import jax.tree_util as jtu

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_usage_snippet_runs():
    snippet = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace = {}
    exec(snippet, namespace)
    grads = namespace["grads"]
    assert set(grads) == {"a", "b", "c", "d", "x0"}
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jtu.tree_leaves(grads))
