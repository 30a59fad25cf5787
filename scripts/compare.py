"""Compare search agents on one env: ``python scripts/compare.py --env NASRL-Digits-v0 --agents reinforce random``.

All logic lives in :mod:`agents.experiment.compare`; see ``--help`` for the flags.
"""

from __future__ import annotations

from agents.experiment.compare import main

if __name__ == "__main__":
    main()
