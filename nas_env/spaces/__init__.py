"""Search spaces: fixed token sequences and their codecs."""

from nas_env.spaces.base import Architecture, SearchSpace, TokenSpec
from nas_env.spaces.cnn import VARIANTS, CNNArchitecture, CNNSearchSpace, ConvLayer, cnn_space

__all__ = ["VARIANTS", "Architecture", "CNNArchitecture", "CNNSearchSpace", "ConvLayer", "SearchSpace", "TokenSpec",
           "cnn_space"]
