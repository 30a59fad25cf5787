"""Tests of the scikit-learn digits loader: shapes, the fixed split and the subset options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from nas_env.data import ImageData, load_dataset, load_digits_data


@pytest.fixture(scope="module")
def digits() -> ImageData:
    """The default digits split, loaded once for the module."""
    return load_digits_data()


def test_shapes_dtypes_and_metadata(digits: ImageData) -> None:
    assert digits.name == "digits"
    assert digits.train_x.shape == (1500, 1, 8, 8) and digits.val_x.shape == (297, 1, 8, 8)
    assert digits.train_x.dtype == torch.uint8 and digits.val_x.dtype == torch.uint8
    assert digits.train_y.dtype == torch.int64 and digits.val_y.dtype == torch.int64
    assert len(digits.train_x) + len(digits.val_x) == 1797
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.augment is False
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0


def test_labels_cover_zero_to_nine(digits: ImageData) -> None:
    for y in (digits.train_y, digits.val_y):
        assert set(y.tolist()) == set(range(10))


def test_split_matches_seeded_permutation_and_is_disjoint(digits: ImageData) -> None:
    bunch = load_digits()
    images = np.rint(bunch.data * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    perm = np.random.default_rng(0).permutation(1797)
    val_idx, train_idx = perm[:297], perm[297:]
    assert np.array_equal(digits.val_x.numpy(), images[val_idx])
    assert np.array_equal(digits.train_x.numpy(), images[train_idx])
    assert np.array_equal(digits.train_y.numpy(), bunch.target[train_idx])
    assert np.array_equal(digits.val_y.numpy(), bunch.target[val_idx])
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1797))


def test_split_is_deterministic_and_seed_dependent(digits: ImageData) -> None:
    again = load_digits_data()
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.val_y, digits.val_y)
    other = load_digits_data(split_seed=1)
    assert not torch.equal(other.val_x, digits.val_x)


def test_stats_are_those_of_the_train_split(digits: ImageData) -> None:
    x = digits.train_x.double()
    assert digits.mean[0] == pytest.approx(float(x.mean()))
    assert digits.std[0] == pytest.approx(float(x.std()))


def test_val_size_and_subsets(digits: ImageData) -> None:
    small = load_digits_data(val_size=100, train_subset=50, val_subset=20)
    assert len(small.train_x) == 50 and len(small.val_x) == 20
    full = load_digits_data(val_size=100)
    assert torch.equal(small.train_x, full.train_x[:50]) and torch.equal(small.val_x, full.val_x[:20])
    assert load_digits_data(train_subset=1500).train_x.shape[0] == 1500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_size": 0}, r"val_size must be an int in 1\.\.1796"),
        ({"val_size": 1797}, r"val_size must be an int in 1\.\.1796.*1797"),
        ({"val_size": 2.5}, r"val_size"),
        ({"train_subset": 0}, r"train_subset must be None or an integer >= 1, got 0"),
        ({"train_subset": 1501}, r"train_subset=1501 is larger than the 1500"),
        ({"val_subset": 298}, r"val_subset=298 is larger than the 297"),
        ({"val_subset": True}, r"val_subset must be None or an integer >= 1, got True"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_digits_data(**kwargs)  # type: ignore[arg-type]


def test_load_dataset_dispatch() -> None:
    assert load_dataset("digits", val_subset=10).val_x.shape == (10, 1, 8, 8)
    with pytest.raises(ValueError, match="allowed: cifar10, cifar100, digits"):
        load_dataset("imagenet")
