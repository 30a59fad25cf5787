"""Run a neural architecture search: ``python scripts/search.py --env NASRL-Digits-v0`` (same as ``nasrl-search``).

All logic lives in :mod:`agents.experiment.runner`; see ``--help`` for the flags.
"""

from __future__ import annotations

from agents.experiment.runner import main

if __name__ == "__main__":
    main()
