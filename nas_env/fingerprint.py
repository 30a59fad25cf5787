"""What a stored result depends on, as one hash: code version, torch version, data content, settings.

A result store key is ``(fingerprint, architecture)``. For a result served from the store to be
one that the current code would produce, the fingerprint holds:

* the package version and a digest of the *sources that decide a child's result* (the trainer,
  the model builder, the evaluator and the space's decoding, listed per evaluator kind in
  :data:`RESULT_SOURCES`): editing any of them, even a comment, retrains rather than risk a
  stale reward;
* the torch version (kernels and initialisations change between releases);
* a content digest of the data actually used (after subsetting), computed once per evaluator;
* the evaluator's settings and the device type.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from nas_env.checks import check_in


def _image_sources(family: str) -> tuple[str, ...]:
    return ("nas_env.evaluators.base", "nas_env.evaluators.train", "nas_env.training.image_trainer",
            f"nas_env.models.{family}", f"nas_env.spaces.{family}", "nas_env.spaces.base", "nas_env.data.base",
            "nas_env.fingerprint")


# The modules whose source decides a child's result, per evaluator kind. A new evaluator lists its own.
RESULT_SOURCES: dict[str, tuple[str, ...]] = {
    "image": _image_sources("cnn"),
    "nb201": _image_sources("nb201"),
    "lm": ("nas_env.evaluators.lm", "nas_env.training.lm_trainer", "nas_env.models.rnn_cell",
           "nas_env.spaces.rnn_cell", "nas_env.spaces.base", "nas_env.evaluators.base", "nas_env.fingerprint"),
    "shared": ("nas_env.evaluators.shared", *_image_sources("cnn")),
    "shared_nb201": ("nas_env.evaluators.shared", "nas_env.evaluators.shared_nb201", *_image_sources("nb201")),
}


def package_version() -> str:
    """The installed nasrl version (read at call time, so a test can change it)."""
    import nas_env

    return str(nas_env.__version__)


def source_digest(modules: Iterable[str]) -> str:
    """sha256 over the source bytes of ``modules`` (dotted names), in the given order."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"cannot find the source of module {name!r} to fingerprint it")
        with open(spec.origin, "rb") as f:
            data = f.read()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def code_version(kind: str) -> str:
    """``<package version>+<digest of the result-deciding sources of kind>``."""
    check_in("kind", kind, sorted(RESULT_SOURCES))
    return f"{package_version()}+{source_digest(RESULT_SOURCES[kind])}"


def tensor_digest(tensors: Sequence[torch.Tensor | np.ndarray]) -> str:
    """sha256 over the dtype, shape and bytes of each tensor: equal data, equal digest."""
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def make_fingerprint(kind: str, data_digest: str, settings: dict[str, Any]) -> str:
    """The store key of an evaluator: code and torch versions, data content and settings, hashed."""
    key = {"code": code_version(kind), "torch": torch.__version__, "data": data_digest, "settings": settings}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
