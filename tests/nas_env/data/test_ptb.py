"""The Penn Treebank loader on the project's shared copy (byte-identical to the standard files), downloads included.

Downloads are exercised through ``file://`` URLs only: no test needs the network.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from shared_data import require_shared

from nas_env.data.download import ChecksumError
from nas_env.data.ptb import FILES, MD5S, TextData, load_ptb, load_ptb_test, unigram_perplexity

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
PTB = SHARED / "ptb"


@pytest.fixture(scope="module")
def ptb() -> TextData:
    require_shared(PTB / "ptb.train.txt")
    return load_ptb(SHARED, download=False)


def test_shared_files_counts_and_vocabulary(ptb: TextData) -> None:
    assert len(ptb.train) == 929_589 and len(ptb.valid) == 73_760
    assert len(load_ptb_test(PTB, download=False)) == 82_430
    assert ptb.vocab_size == 10_000 and len(set(ptb.vocab)) == 10_000
    assert ptb.vocab[:3] == ("the", "<unk>", "<eos>")  # most frequent first
    eos = ptb.vocab.index("<eos>")
    lines = (PTB / "ptb.train.txt").read_text().count("\n")
    assert int((ptb.train == eos).sum()) == lines == 42_068  # one <eos> per line
    assert ptb.train.dtype == torch.int64 and int(ptb.train.max()) == 9_999
    first = [*(PTB / "ptb.train.txt").read_text().split("\n")[0].split(), "<eos>"]
    assert [ptb.vocab[i] for i in ptb.train[: len(first)].tolist()] == first


def test_data_root_may_be_the_folder_itself(ptb: TextData) -> None:
    direct = load_ptb(PTB, download=False, val_subset=10)
    assert torch.equal(direct.train, ptb.train) and direct.vocab == ptb.vocab


def test_first_n_tokens_keep_the_full_vocabulary(ptb: TextData) -> None:
    small = load_ptb(SHARED, download=False, train_subset=5000, val_subset=300)
    assert torch.equal(small.train, ptb.train[:5000]) and torch.equal(small.valid, ptb.valid[:300])
    assert small.vocab == ptb.vocab


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_subset": 1}, r"train_subset must be an int >= 2 \(tokens\) or None, got 1"),
        ({"train_subset": 1.5}, r"train_subset must be an int >= 2"),
        ({"val_subset": 80_000}, r"val_subset=80000 is larger than the 73760 tokens available"),
    ],
)
def test_bad_subsets(kwargs: dict[str, object], match: str) -> None:
    require_shared(PTB)
    with pytest.raises(ValueError, match=match):
        load_ptb(SHARED, download=False, **kwargs)  # type: ignore[arg-type]


def test_unigram_perplexity(ptb: TextData) -> None:
    counts = torch.bincount(ptb.train, minlength=ptb.vocab_size).double() + 1
    expected = torch.exp(-torch.log(counts / counts.sum())[ptb.valid].mean())
    assert unigram_perplexity(ptb.train, ptb.valid, ptb.vocab_size) == pytest.approx(float(expected))
    assert 600 < float(expected) < 800


def test_download_from_file_url_with_md5(tmp_path: Path, ptb: TextData) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    for name in FILES.values():
        shutil.copy(PTB / name, src / name)
    root = tmp_path / "root"
    data = load_ptb(root, url=src.as_uri() + "/", val_subset=50)  # the standard files: the default md5s pass
    assert torch.equal(data.train, ptb.train) and data.vocab == ptb.vocab
    for name in ("ptb.train.txt", "ptb.valid.txt"):
        assert hashlib.md5((root / "ptb" / name).read_bytes(), usedforsecurity=False).hexdigest() == MD5S[name]
    assert not (root / "ptb" / "ptb.test.txt").exists()  # fetched only when the test split is asked for
    assert len(load_ptb_test(root, url=src.as_uri())) == 82_430


def test_md5_mismatch_removes_the_file(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "ptb.train.txt").write_text(" a b c \n a b \n")  # Mikolov's format, but not the standard file
    (src / "ptb.valid.txt").write_text(" a b \n")
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match=r"MD5 mismatch for file://.*ptb.train.txt: expected "
                                            r"f26c4b92c5fdc7b3f8c7cdcb991d8420"):
        load_ptb(root, url=src.as_uri())
    assert not (root / "ptb" / "ptb.train.txt").exists()
    # with their own md5s the same small files load: one <eos> a line, vocabulary from train
    md5s = {n: hashlib.md5((src / n).read_bytes(), usedforsecurity=False).hexdigest() for n in ("ptb.train.txt",
                                                                                             "ptb.valid.txt")}
    data = load_ptb(root, url=src.as_uri(), md5s=md5s)
    assert data.vocab == ("<eos>", "a", "b", "c")  # by count, ties alphabetical ("<" sorts before letters)
    assert data.train.tolist() == [1, 2, 3, 0, 1, 2, 0]


def test_absent_and_offline_error_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"expected ptb.train.txt, ptb.valid.txt in {tmp_path / 'ptb'} "
                                                r"\(downloading from file:///nonexistent/ failed: URLError"):
        load_ptb(tmp_path, url="file:///nonexistent/")
    with pytest.raises(FileNotFoundError, match=r"\(download=False\)\. Put Mikolov's files there"):
        load_ptb(tmp_path, download=False)


def test_unknown_word_without_unk_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text(" a b \n")
    (tmp_path / "ptb.valid.txt").write_text(" a z \n")
    (tmp_path / "ptb.test.txt").write_text(" a \n")
    with pytest.raises(ValueError, match=r"ptb.valid.txt: word 'z' is not in the training vocabulary"):
        load_ptb(tmp_path, download=False)
