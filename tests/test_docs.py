"""The documentation site's code runs as written, and it covers the package: every
public name in the API reference, every example with a page and its figure. (`mkdocs
build --strict` in `.ci/run` checks the links and cross-references.)"""

import pathlib
import re

import jax.numpy as jnp

import jadjoint as ja

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"


def snippets(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_getting_started_snippet_runs_and_fits():
    """The seed problem of the front page, with 5 Adam steps instead of 200: the
    gradient check passes and the cost goes down."""
    snippet = snippets("index.md")[0].replace("range(200)", "range(5)")
    namespace = {}
    exec(snippet, namespace)
    F, p = namespace["F"], namespace["p"]
    assert float(F(p)) < float(F({"w": 1.0, "c": 0.5, "q": 0.5}))


def test_odeint_snippet_runs():
    namespace = {}
    exec(snippets("coming-from.md")[0], namespace)
    # y' = −k y with k = 0.5: y(t) = e^{−t/2}.
    expected = jnp.exp(-0.5 * jnp.linspace(0.0, 1.0, 11))
    assert jnp.allclose(namespace["ys"], expected, rtol=1e-7)


def test_every_public_name_is_in_the_api_reference():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: jadjoint\.(\w+)", page.read_text(), re.M))
    public = {name for name in dir(ja) if not name.startswith("_")} - {"__version__"}
    assert public - documented == set()


def test_every_example_has_a_page_and_a_figure():
    nav = (ROOT / "mkdocs.yml").read_text()
    for example in (ROOT / "examples").glob("*.py"):
        if example.stem == "progress_bar":  # prints a bar, draws nothing
            continue
        assert f"examples/{example.stem}.md" in nav
        figure = DOCS / "examples" / "figures" / f"{example.stem}.png"
        assert figure.stat().st_size > 10_000, figure
