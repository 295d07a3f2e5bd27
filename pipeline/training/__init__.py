"""Training: the run's configuration, the SRResNet and SRGAN steps (losses, EMA, learning-rate
schedule) and the Trainer that loops them with checkpoints, evaluation and tracking."""

from pipeline.training.config import TrainConfig, load_config
from pipeline.training.steps import SRGANModel
from pipeline.training.trainer import Trainer, TrainingError

__all__ = ["SRGANModel", "TrainConfig", "Trainer", "TrainingError", "load_config"]
