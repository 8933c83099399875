"""Exceptions raised by the training package, each with its cause and fix."""

from __future__ import annotations

__all__ = ["TrainingError", "ConfigError", "DataError"]


class TrainingError(Exception):
    """Base class of every error raised by :mod:`training`."""


class ConfigError(TrainingError, ValueError):
    """A training configuration file is missing, unreadable or has a bad value.

    Cause: the YAML/JSON file does not exist, does not parse, or a key has a value of
    the wrong type or range (the message names the key).
    Fix: compare with the examples in ``training/configs/`` and correct that key.
    """


class DataError(TrainingError, ValueError):
    """Training or evaluation data cannot be produced.

    Cause: a DICOM file cannot be decoded, a folder holds no slice of the requested
    modality, or phantom seeds overlap the held-out range.
    Fix: point the data source at readable DICOM of the right modality, or choose
    training seeds below ``training.data.HELD_OUT_PHANTOM_SEED``.
    """
