"""Import a file of ``scripts/`` (not part of the installed package) as a module, for the tests that check it.

Only the named file is loaded (and registered in ``sys.modules``, where a script's own imports of its
siblings find it): putting ``scripts/`` on ``sys.path`` would let a script shadow a library of the same name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``name`` (loaded once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and sibling imports look their module up there
    spec.loader.exec_module(module)
    return module
