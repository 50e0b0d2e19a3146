"""Errors that reach the user as one clear line.

Every problem caused by the user's input (a file, a value, an option) is raised as an
``EightbitError`` subclass whose message names the problem and the fix. The CLI prints
the message and exits 2; the Python API lets it propagate. Anything else is a bug.
"""

from __future__ import annotations


class EightbitError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class FixedPointError(EightbitError, ValueError):
    """A value or format the fixed-point core cannot represent exactly."""


class ModelError(EightbitError):
    """A model file that cannot be loaded, checked or normalized."""


class DataError(EightbitError):
    """Calibration or evaluation data that does not match the model."""


class ConfigError(EightbitError, ValueError):
    """An invalid option or configuration value."""
