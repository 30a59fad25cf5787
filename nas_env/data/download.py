"""Fetching data files: the data root, downloads checked by MD5, and why files could not be put in place."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

DATA_ROOT_ENV = "NASRL_DATA_ROOT"


class ChecksumError(RuntimeError, ValueError):
    """A downloaded file does not have the expected MD5: corrupted, truncated or not the official file.

    Also a ValueError: damaged data, which :func:`nas_env.cli.cli_entry` reports as one line."""


def default_data_root() -> Path:
    """``$NASRL_DATA_ROOT`` if set and non-empty, else ``~/.cache/nasrl/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nasrl" / "data"


def data_root_path(data_root: str | Path | None) -> Path:
    """``data_root`` as a path (``~`` expanded), or :func:`default_data_root` when it is None."""
    return default_data_root() if data_root is None else Path(data_root).expanduser()


def all_files(folder: Path, names: Sequence[str]) -> bool:
    """Whether ``folder`` holds every file of ``names``."""
    return all((folder / name).is_file() for name in names)


def md5_of(path: Path) -> str:
    """The MD5 hex digest of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest``: torchvision's downloader for http(s), plain urllib for other schemes.

    torchvision 0.29's ``download_url`` fails on ``file://`` URLs (its progress bar reads
    ``response.length``, which file responses lack: ``AttributeError``, leaving an empty file), so
    those are copied with urllib. A failed transfer never leaves a partial file behind.
    """
    try:
        if url.startswith(("http://", "https://")):
            from torchvision.datasets.utils import download_url

            download_url(url, str(dest.parent), dest.name)  # md5 checked by the caller, with a clearer error
        else:
            with urllib.request.urlopen(url) as response, open(dest, "wb") as out:
                shutil.copyfileobj(response, out)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def fetch_checked(url: str, dest: Path, md5: str | None, what: str) -> None:
    """``dest`` with MD5 ``md5`` (None: any): kept if already there, else fetched from ``url``; another MD5 removes
    it and raises :class:`ChecksumError` (``what``: the file it should be), network failures raise ``OSError``."""
    if dest.is_file() and (md5 is None or md5_of(dest) == md5):
        return
    fetch(url, dest)
    if not dest.is_file():
        raise OSError(f"downloading {url} produced no file at {dest}")
    if md5 is not None and (actual := md5_of(dest)) != md5:
        dest.unlink()
        raise ChecksumError(f"MD5 mismatch for {url}: expected {md5}, got {actual}; the download is corrupted or "
                            f"not {what} (removed it)")


def why_missing(present: Callable[[], bool], download: Callable[[], object] | None, source: str,
                failures: tuple[type[BaseException], ...] = (OSError,),
                incomplete: str = "the download did not produce them") -> str | None:
    """None when the files are ``present``, after ``download`` (None: not allowed) if they were not; else why not.

    ``source`` names the download (a URL); ``failures`` are its errors that are reasons (others propagate).
    """
    if present():
        return None
    if download is None:
        return "download=False"
    try:
        download()
    except failures as err:
        return f"downloading {source} failed: {type(err).__name__}: {str(err).strip()[:300]}"
    return None if present() else incomplete
