"""Where the files maxidetect ships live: the model manifest and weights
(the repository's ``weights/``) and the SExtractor configuration
(``sextractor_configs/``). Both folders are installed inside the package as
``maxidetect/weights`` and ``maxidetect/sextractor_configs``; a source
checkout (editable install, or no install) has them beside the package."""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_HERE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder ``name`` ("weights" or "sextractor_configs")."""
    installed = _HERE / name
    return installed if installed.is_dir() else _HERE.parent / name
