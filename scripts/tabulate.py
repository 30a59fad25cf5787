"""Make or describe a NASRL-Bench table (``nasrl-tabulate``): all logic lives in :mod:`agents.tabulate`."""

from __future__ import annotations

from agents.tabulate import main

if __name__ == "__main__":
    main()
