"""Any word-level corpus with train / valid / test files: WikiText-2's layout, plain names, PTB kept as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_env.data.ptb import LAYOUTS, find_corpus, load_ptb, load_ptb_test
from nas_env.envs.ptb_env import PTBNASEnv

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

# WikiText-2's look: blank lines, " = Heading = " lines, <unk> already in place
WIKI = {
    "train": " \n = Valkyria = \n \n the game is a game of <unk> . \n the game began in 2011 . \n",
    "valid": " \n = Tower = \n the tower is a game . \n",
    "test": " the <unk> began . \n",
}


def write(folder: Path, layout: str, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (folder / LAYOUTS[layout][split]).write_text(text, encoding="utf-8")
    return folder


def test_wikitext_layout_is_read_like_ptb(tmp_path: Path) -> None:
    folder = write(tmp_path / "wikitext-2", "wikitext", WIKI)
    data = load_ptb(folder, download=False)
    assert data.name == f"wikitext:{folder.resolve()}"
    words = WIKI["train"].replace("\n", " <eos> ").split()
    assert data.vocab[0] == "<eos>" and set(data.vocab) == set(words)
    assert [data.vocab[i] for i in data.train.tolist()] == words
    assert [data.vocab[i] for i in data.valid.tolist()] == [w if w in data.vocab else "<unk>" for w in
                                                            WIKI["valid"].replace("\n", " <eos> ").split()]
    test = load_ptb_test(folder, download=False)
    assert [data.vocab[i] for i in test.tolist()] == ["the", "<unk>", "began", ".", "<eos>"]


def test_plain_names_and_the_search_order(tmp_path: Path) -> None:
    write(tmp_path, "text", {"train": "a b a\n", "valid": "b a\n", "test": "a\n"})
    name, paths = find_corpus(tmp_path, ("train", "valid"))
    assert name == f"text:{tmp_path.resolve()}" and paths["train"] == tmp_path / "train.txt"
    assert load_ptb(tmp_path, download=False).vocab == ("a", "<eos>", "b")
    write(tmp_path, "ptb", {"train": "x y\n", "valid": "y\n"})  # PTB's names come first, and keep the name "ptb"
    assert find_corpus(tmp_path, ("train", "valid"))[0] == "ptb"
    assert find_corpus(tmp_path / "nowhere", ("train",)) is None
    with pytest.raises(FileNotFoundError, match=r"wiki\.train\.tokens/wiki\.valid\.tokens/wiki\.test\.tokens"):
        load_ptb(tmp_path / "nowhere", download=False)


def test_shared_ptb_keeps_its_name() -> None:
    if not (SHARED / "ptb" / "ptb.train.txt").is_file():
        pytest.skip("shared PTB copy not found")
    assert load_ptb(SHARED, download=False, train_subset=100, val_subset=100).name == "ptb"


def test_ptb_env_searches_a_wikitext_folder(tmp_path: Path) -> None:
    folder = write(tmp_path / "wiki", "wikitext", {k: v * 20 for k, v in WIKI.items()})
    env = PTBNASEnv(base=2, data_root=str(folder), download=False, device="cpu", train_subset=None, val_subset=None,
                    train_config={"hidden_size": 8, "embedding_size": 8, "batch_size": 4, "bptt": 5})
    _, info = env.reset(seed=0)
    while True:
        _, reward, terminated, truncated, info = env.step(int(info["action_mask"].argmax()))
        if terminated or truncated:
            break
    assert info["status"] == "ok" and reward > 0 and info["val_ppl"] > 1
