"""``python -m agents.experiment.final``: the same as ``nasrl-train-final``."""

from agents.experiment.final.cli import main

main()
