"""Trained generators for use: the one loader (checkpoint, run folder, released weights file,
MLflow URI), tiled inference, the released weights format, the models shipped in models/, and
the MLflow model that `mlflow models serve` answers HTTP with."""

from pipeline.serving.generators import LOAD_ERRORS, Generator, load_generator, super_resolve

__all__ = ["LOAD_ERRORS", "Generator", "load_generator", "super_resolve"]
