"""maxidetect's errors and its warning class, in one place.

Every message names what it is about: ``file[hdu]: problem`` for inputs,
the file and key for configurations, the model for weights.
"""

from __future__ import annotations

__all__ = ["MaxidetectError", "InputError", "ConfigError", "SExtractorError", "WeightsError", "MaxidetectWarning"]


class MaxidetectError(Exception):
    """Base class: an error the command line reports in one line."""


class InputError(MaxidetectError, ValueError):
    """Bad input: the message names the file, the HDU and the problem."""


class ConfigError(MaxidetectError, ValueError):
    """An unreadable or invalid configuration (SExtractor keys, class files, options)."""


class SExtractorError(MaxidetectError, RuntimeError):
    """SExtractor is missing or failed; the message carries its own error."""


class WeightsError(MaxidetectError, RuntimeError):
    """The weights of a model cannot be found, converted or verified."""


class MaxidetectWarning(UserWarning):
    """Something in the input or the run that the user should know about."""
