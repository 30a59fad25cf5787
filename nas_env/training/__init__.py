"""Child trainers."""

from nas_env.training.image_trainer import PAPER_TRAIN_CONFIG, DeviceData, TrainConfig, TrainOutcome, train_child

__all__ = ["PAPER_TRAIN_CONFIG", "DeviceData", "TrainConfig", "TrainOutcome", "train_child"]
