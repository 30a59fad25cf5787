"""Final training of a found architecture: ``python scripts/train_final.py RUN_DIR`` (same as ``nasrl-train-final``).

All logic lives in :mod:`agents.experiment.final`; see ``--help`` for the flags.
"""

from __future__ import annotations

from agents.experiment.final import main

if __name__ == "__main__":
    main()
