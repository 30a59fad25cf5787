"""Child network builders: the paper's CNN (:mod:`.cnn`), recurrent cells, NAS-Bench-201's network (:mod:`.nb201`)."""

from nas_env.models.cnn import ChildCNN, build_model
from nas_env.models.nb201 import NB201Network, build_nb201_model

__all__ = ["ChildCNN", "NB201Network", "build_model", "build_nb201_model"]
