"""The documentation site stays whole: its examples run, every page is in the nav, every API page's module exists.

The strict MkDocs build (``.ci/run``) checks links and docstrings; these checks need no MkDocs and fail first.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from test_readme import BLOCKS as README_BLOCKS
from test_readme import my_images  # noqa: F401  (the fixture the image-folder examples need)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE_PAGES = ("getting-started.md", "data.md", "agents.md", "bench.md")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


# The pages' runnable examples, each once (those the README shares run in tests/test_readme.py).
EXAMPLES = {f"{name}:{i}": block for name in EXAMPLE_PAGES for i, block in enumerate(python_blocks(DOCS / name))}
EXAMPLES = {key: block for key, block in EXAMPLES.items() if block not in README_BLOCKS}


def test_pages_have_examples_beyond_the_readme() -> None:
    assert len(EXAMPLES) >= 2, sorted(EXAMPLES)


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_docs_example_runs(key: str, capsys: pytest.CaptureFixture[str], my_images: Path) -> None:  # noqa: F811
    exec(compile(EXAMPLES[key], f"docs/{key}", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip()  # every example prints its result


def test_every_page_is_in_the_nav() -> None:
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries without a page"


API_MODULES = sorted({m for page in (DOCS / "api").glob("*.md")
                      for m in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), flags=re.M)})


def test_api_pages_cover_the_package_areas() -> None:
    for module in ("nas_env.envs.nas_env", "nas_env.evaluators", "nas_env.store", "agents.reinforce",
                   "agents.experiment.search", "agents.experiment.distributed"):
        assert module in API_MODULES


@pytest.mark.parametrize("module", API_MODULES)
def test_api_page_module_exists(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"docs/api names {module}, which does not exist"


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    first_screen = "\n".join(text.splitlines()[:30])
    search = "bash scripts/setup.sh && .venv/bin/nasrl-search --env NASRL-Digits-v1"
    tests = "bash scripts/setup.sh && .venv/bin/python -m pytest"
    assert search in first_screen and tests in first_screen
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # CI runs the README's command


def test_setup_reads_the_one_version() -> None:
    import nas_env

    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert not re.search(r"version\s*=\s*['\"]", setup), "setup.py must read the version from nas_env/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", nas_env.__version__)
