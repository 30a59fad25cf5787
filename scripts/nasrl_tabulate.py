"""Make or describe a NASRL-Bench table (``nasrl-tabulate``): all logic lives in :mod:`agents.experiment.tabulate`.

Not named tabulate.py: run as a script, that name would shadow the PyPI ``tabulate`` module torch imports.
"""

from __future__ import annotations

from agents.experiment.tabulate import main

if __name__ == "__main__":
    main()
