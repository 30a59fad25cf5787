"""The store's fingerprint: a changed result-deciding source, version, torch or data is never served old rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import nas_env
from nas_env import fingerprint
from nas_env.data import load_digits_data
from nas_env.evaluators import TrainingEvaluator
from nas_env.evaluators.cached import CachedEvaluator
from nas_env.spaces.cnn import cnn_space
from nas_env.store import ResultStore
from nas_env.training.image_trainer import TrainConfig

SPACE = cnn_space("v1", num_layers=2, num_filters=(4, 8))
ARCH = SPACE.decode([0] * len(SPACE.tokens()))
CONFIG = TrainConfig(epochs=1, batch_size=32)


def evaluator(**data_kwargs: int) -> TrainingEvaluator:
    return TrainingEvaluator(load_digits_data(train_subset=64, val_subset=32, **data_kwargs), CONFIG, "cpu")


def test_every_listed_source_exists_and_is_hashed() -> None:
    for kind, modules in fingerprint.RESULT_SOURCES.items():
        version = fingerprint.code_version(kind)
        assert version.startswith(nas_env.__version__ + "+") and len(version.split("+")[1]) == 16
        assert "nas_env.fingerprint" in modules
    with pytest.raises(ValueError, match="kind must be one of"):
        fingerprint.code_version("tabular")


def test_a_changed_result_source_is_not_served_old_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "result_deciding_module.py"
    module.write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(fingerprint.RESULT_SOURCES, "image",
                        (*fingerprint.RESULT_SOURCES["image"], "result_deciding_module"))
    store = ResultStore(tmp_path / "s.sqlite")
    before = CachedEvaluator(evaluator(), store)
    before(ARCH, seed=0)
    assert before(ARCH, seed=1).metrics["cache_hit"]  # same code: served

    module.write_text("SCALE = 2.0  # a changed line in a source that decides results\n")
    after = CachedEvaluator(evaluator(), store)
    assert after.fingerprint() != before.fingerprint()
    result = after(ARCH, seed=1)
    assert not result.metrics["cache_hit"] and after.misses == 1 and len(store) == 2  # retrained, stored anew
    sys.modules.pop("result_deciding_module", None)


def test_the_package_and_torch_versions_are_in_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    base = evaluator().fingerprint()
    assert evaluator().fingerprint() == base  # deterministic
    monkeypatch.setattr(nas_env, "__version__", "99.0.0")
    bumped = evaluator().fingerprint()
    assert bumped != base
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert evaluator().fingerprint() not in (base, bumped)


def test_data_of_the_same_size_but_other_content_changes_the_fingerprint() -> None:
    same_size_other_images = evaluator(split_seed=1)  # 64 / 32 images, drawn from another split
    assert evaluator().fingerprint() != same_size_other_images.fingerprint()
    a, b = torch.zeros(4, dtype=torch.uint8), torch.zeros(4, dtype=torch.uint8)
    assert fingerprint.tensor_digest([a]) == fingerprint.tensor_digest([b])
    b[3] = 1
    assert fingerprint.tensor_digest([a]) != fingerprint.tensor_digest([b])
    assert fingerprint.tensor_digest([a]) != fingerprint.tensor_digest([a.to(torch.int64)])  # dtype counts


def test_the_language_model_evaluator_hashes_its_corpus() -> None:
    from nas_env.data.ptb import TextData
    from nas_env.evaluators.lm import LMTrainingEvaluator

    def lm(tokens: list[int]) -> str:
        data = TextData("toy", torch.tensor(tokens), torch.tensor([0, 1, 2]), ("a", "b", "c"))
        return LMTrainingEvaluator(data, device="cpu").fingerprint()

    assert lm([0, 1, 2, 1]) == lm([0, 1, 2, 1]) != lm([0, 2, 2, 1])
