"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.fixture
def my_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The README's image folder: two classes of small real-looking PNGs, in a working directory of its own."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "my_images" / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(80 + 90 * k, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "my_images" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)  # run folders go here too
    return tmp_path / "my_images"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str], my_images: Path) -> None:
    exec(compile(BLOCKS[index], f"README.md:python-block-{index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # every example prints its result
