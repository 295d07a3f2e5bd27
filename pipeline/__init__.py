"""SRGAN training pipeline: data loading, models, DDP training, evaluation."""
