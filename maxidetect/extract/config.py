"""SExtractor configuration: ``.sex`` files, ``-KEY VALUE`` overrides,
``.param`` lists and ``.conv`` filter kernels.

One :class:`SexConfig` drives both engines: it is passed to the real binary
as arguments and read by the SEP engine with SExtractor's names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from maxidetect.errors import ConfigError, SExtractorError
from maxidetect.resources import data_dir

__all__ = [
    "SexConfig",
    "CONFIG_DIR",
    "split_sextractor_args",
    "read_param_file",
    "read_conv_file",
    "resolve_aux_file",
]

#: The project's own SExtractor configuration files.
CONFIG_DIR = data_dir("sextractor_configs")
#: Where Debian's ``source-extractor`` installs its filters and network.
SYSTEM_DIRS = (Path("/usr/share/source-extractor"), Path("/usr/share/sextractor"), Path("/usr/local/share/sextractor"))
#: Keys naming auxiliary files that SExtractor opens relative to the cwd.
FILE_KEYS = ("PARAMETERS_NAME", "FILTER_NAME", "STARNNW_NAME")


def split_sextractor_args(args: list[str]) -> tuple[str | None, dict[str, str]]:
    """``["-c", "f.sex", "-DETECT_THRESH", "3"]`` -> ("f.sex", {"DETECT_THRESH": "3"})."""
    config = None
    over: dict[str, str] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("-") or len(tok) < 2:
            raise ConfigError(f"SExtractor argument {tok!r}: expected -c FILE or -KEY VALUE")
        if i + 1 >= len(args):
            raise ConfigError(f"SExtractor argument {tok} has no value")
        if tok == "-c":
            config = args[i + 1]
        else:
            over[tok[1:].upper()] = args[i + 1]
        i += 2
    return config, over


class SexConfig:
    """A SExtractor configuration: a ``.sex`` file plus overrides.

    Parameters
    ----------
    path : path-like or None
        The ``.sex`` file (``-c``); None uses ``sextractor_configs/default.sex``.
    overrides : dict
        ``{KEY: value}`` from ``-KEY VALUE`` arguments (they win).
    """

    def __init__(self, path=None, overrides: dict | None = None):
        self.user_file = path is not None
        self.path = Path(path) if path is not None else CONFIG_DIR / "default.sex"
        self.file_values = self._read(self.path)
        self.overrides = {k.upper(): str(v) for k, v in (overrides or {}).items()}

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read SExtractor configuration ({exc.strerror})") from None
        values = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 1)
            values[parts[0].upper()] = parts[1].strip() if len(parts) > 1 else ""
        return values

    def user_set(self, key: str) -> bool:
        """True if the user chose ``key`` (on the command line or in their own file)."""
        key = key.upper()
        return key in self.overrides or (self.user_file and key in self.file_values)

    def get(self, key: str, default=None) -> str | None:
        key = key.upper()
        if key in self.overrides:
            return self.overrides[key]
        return self.file_values.get(key, default)

    def get_list(self, key: str, default=None) -> list[str]:
        v = self.get(key)
        if v is None:
            return list(default or [])
        return [x.strip() for x in v.replace(",", " ").split() if x.strip()]

    def get_float(self, key: str, default: float) -> float:
        v = self.get(key)
        if v is None or v == "":
            return default
        try:
            return float(v.split(",")[0])
        except ValueError:
            raise ConfigError(f"{self.path}: {key} = {v!r} is not a number") from None

    def get_floats(self, key: str, default: list[float]) -> list[float]:
        try:
            return [float(x) for x in self.get_list(key, default)]
        except ValueError:
            raise ConfigError(f"{self.path}: {key} = {self.get(key)!r} is not a list of numbers") from None

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is None:
            return default
        return v.strip().upper().startswith("Y")

    def resolve(self, key: str, default: str | None = None) -> Path | None:
        """Absolute path of an auxiliary file named by ``key``."""
        name = self.get(key, default)
        if not name:
            return None
        return resolve_aux_file(name, self.path.parent)


def resolve_aux_file(name: str, config_dir: Path | None = None) -> Path:
    """Find an auxiliary file the way a user means it.

    SExtractor opens FILTER_NAME etc. relative to the working directory;
    we look there first (same result as running ``sex`` there), then beside
    the ``.sex`` file, then in ``sextractor_configs/``, then the system's
    SExtractor data directory.
    """
    p = Path(name).expanduser()
    if p.is_absolute():
        if p.exists():
            return p
        raise ConfigError(f"{p}: file does not exist")
    candidates = [Path.cwd() / p]
    if config_dir is not None:
        candidates.append(config_dir / p)
    candidates.append(CONFIG_DIR / p)
    candidates += [d / p for d in SYSTEM_DIRS]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise ConfigError(
        f"{name}: not found in the working directory, beside the configuration, "
        f"in {CONFIG_DIR} or in {', '.join(map(str, SYSTEM_DIRS))}"
    )


def read_param_file(path) -> list[str]:
    """Catalogue parameters of a ``.param`` file (commented lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read parameter file ({exc.strerror})") from None
    params = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            params.append(line.split()[0])
    return params


def read_conv_file(path) -> np.ndarray:
    """Read a SExtractor ``.conv`` filter: ``CONV NORM|NONORM`` then rows.

    A NORM kernel is divided by the sum of its absolute values, as SExtractor does.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read filter ({exc.strerror})") from None
    norm = True
    rows = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.upper().startswith("CONV"):
            norm = "NONORM" not in s.upper()
            continue
        try:
            rows.append([float(x) for x in s.split()])
        except ValueError:
            raise ConfigError(f"{path}: bad filter row {s!r}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise ConfigError(f"{path}: filter rows missing or of unequal length")
    k = np.array(rows, dtype=np.float32)
    if norm and np.abs(k).sum() > 0:
        k = k / np.abs(k).sum()
    return k


def find_binary(explicit: str | None = None) -> str:
    """The SExtractor executable: ``explicit``, else ``source-extractor`` or ``sex`` on PATH."""

    if explicit:
        p = shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
        if not p:
            raise SExtractorError(f"{explicit}: SExtractor binary not found or not executable")
        return p
    for name in ("source-extractor", "sex"):
        p = shutil.which(name)
        if p:
            return p
    raise SExtractorError(
        "SExtractor not found on PATH (looked for 'source-extractor' and 'sex'): install it with "
        "'sudo apt-get install source-extractor' (Debian/Ubuntu), 'conda install -c conda-forge "
        "astromatic-source-extractor', or pass --sex-binary PATH"
    )
