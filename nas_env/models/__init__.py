"""Child network builders."""

from nas_env.models.cnn import ChildCNN, build_model

__all__ = ["ChildCNN", "build_model"]
