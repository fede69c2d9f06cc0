"""SExtractor configuration: ``.sex`` files, ``-KEY VALUE`` overrides,
``.param`` lists and ``.conv`` filter kernels.

One :class:`SexConfig` drives both engines: it is passed to the real binary
as arguments and read by the SEP engine with SExtractor's names.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import numpy as np

from maxidetect.errors import ConfigError, SExtractorError
from maxidetect.resources import data_dir

__all__ = [
    "SexConfig",
    "KEYWORDS",
    "check_value",
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


# SExtractor 2.25's configuration keywords: (value type, how many values,
# allowed words). Types: int, float, bool (Y/N), word (one of the allowed),
# str (free text, e.g. a FITS keyword), file. Counts: 1, 2 (one or two), or
# 0 (any number, one per image or aperture). From `source-extractor -dd` and
# the manual; a key outside this table is refused before any work.
_CHECK_TYPES = ("NONE", "IDENTICAL", "BACKGROUND", "BACKGROUND_RMS", "MINIBACKGROUND", "MINIBACK_RMS", "-BACKGROUND",
                "FILTERED", "OBJECTS", "-OBJECTS", "SEGMENTATION", "APERTURES", "PSF_PROTOS", "-PSF_PROTOS",
                "PC_CONVOLVED", "PC_PROTOS", "MAP_SOM", "OTHER", "ASSOC", "-ASSOC")
KEYWORDS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "CATALOG_NAME": ("file", 1, ()),
    "CATALOG_TYPE": ("word", 1, ("NONE", "ASCII", "ASCII_HEAD", "ASCII_SKYCAT", "ASCII_VOTABLE", "FITS_1.0",
                                 "FITS_LDAC")),
    "PARAMETERS_NAME": ("file", 1, ()),
    "DETECT_TYPE": ("word", 2, ("CCD", "PHOTO")),
    "DETECT_MINAREA": ("int", 1, ()),
    "DETECT_MAXAREA": ("int", 1, ()),
    "THRESH_TYPE": ("word", 2, ("RELATIVE", "ABSOLUTE")),
    "DETECT_THRESH": ("float", 2, ()),
    "ANALYSIS_THRESH": ("float", 2, ()),
    "FILTER": ("bool", 1, ()),
    "FILTER_NAME": ("file", 1, ()),
    "FILTER_THRESH": ("float", 2, ()),
    "DEBLEND_NTHRESH": ("int", 1, ()),
    "DEBLEND_MINCONT": ("float", 1, ()),
    "CLEAN": ("bool", 1, ()),
    "CLEAN_PARAM": ("float", 1, ()),
    "MASK_TYPE": ("word", 1, ("NONE", "BLANK", "CORRECT")),
    "WEIGHT_TYPE": ("word", 2, ("NONE", "BACKGROUND", "MAP_RMS", "MAP_VAR", "MAP_WEIGHT")),
    "RESCALE_WEIGHTS": ("bool", 2, ()),
    "WEIGHT_IMAGE": ("file", 2, ()),
    "WEIGHT_GAIN": ("bool", 2, ()),
    "WEIGHT_THRESH": ("float", 2, ()),
    "FLAG_IMAGE": ("file", 0, ()),
    "FLAG_TYPE": ("word", 0, ("OR", "AND", "MIN", "MAX", "MOST")),
    "DGEO_TYPE": ("word", 1, ("NONE", "PIXEL")),
    "DGEO_IMAGE": ("file", 1, ()),
    "PHOT_APERTURES": ("float", 0, ()),
    "PHOT_AUTOPARAMS": ("float", 2, ()),
    "PHOT_PETROPARAMS": ("float", 2, ()),
    "PHOT_AUTOAPERS": ("float", 2, ()),
    "PHOT_FLUXFRAC": ("float", 0, ()),
    "SATUR_LEVEL": ("float", 1, ()),
    "SATUR_KEY": ("str", 1, ()),
    "MAG_ZEROPOINT": ("float", 1, ()),
    "MAG_GAMMA": ("float", 1, ()),
    "GAIN": ("float", 1, ()),
    "GAIN_KEY": ("str", 1, ()),
    "PIXEL_SCALE": ("float", 1, ()),
    "SEEING_FWHM": ("float", 1, ()),
    "STARNNW_NAME": ("file", 1, ()),
    "BACK_TYPE": ("word", 2, ("AUTO", "MANUAL")),
    "BACK_VALUE": ("float", 2, ()),
    "BACK_SIZE": ("int", 2, ()),
    "BACK_FILTERSIZE": ("int", 2, ()),
    "BACKPHOTO_TYPE": ("word", 1, ("GLOBAL", "LOCAL")),
    "BACKPHOTO_THICK": ("int", 1, ()),
    "BACK_FILTTHRESH": ("float", 1, ()),
    "CHECKIMAGE_TYPE": ("word", 0, _CHECK_TYPES),
    "CHECKIMAGE_NAME": ("file", 0, ()),
    "MEMORY_OBJSTACK": ("int", 1, ()),
    "MEMORY_PIXSTACK": ("int", 1, ()),
    "MEMORY_BUFSIZE": ("int", 1, ()),
    "ASSOC_NAME": ("file", 1, ()),
    "ASSOC_DATA": ("int", 0, ()),
    "ASSOC_PARAMS": ("int", 0, ()),
    "ASSOCCOORD_TYPE": ("word", 1, ("PIXEL", "WORLD")),
    "ASSOC_RADIUS": ("float", 1, ()),
    "ASSOC_TYPE": ("word", 1, ("FIRST", "NEAREST", "MEAN", "MAG_MEAN", "SUM", "MAG_SUM", "MIN", "MAX")),
    "ASSOCSELEC_TYPE": ("word", 1, ("ALL", "MATCHED", "-MATCHED")),
    "VERBOSE_TYPE": ("word", 1, ("QUIET", "NORMAL", "LOG", "WARN", "FULL")),
    "HEADER_SUFFIX": ("str", 1, ()),
    "WRITE_XML": ("bool", 1, ()),
    "XML_NAME": ("file", 1, ()),
    "XSL_URL": ("str", 1, ()),
    "NTHREADS": ("int", 1, ()),
    "FITS_UNSIGNED": ("bool", 1, ()),
    "INTERP_MAXXLAG": ("int", 2, ()),
    "INTERP_MAXYLAG": ("int", 2, ()),
    "INTERP_TYPE": ("word", 2, ("NONE", "VAR_ONLY", "ALL")),
    "PSF_NAME": ("file", 0, ()),
    "PSF_NMAX": ("int", 1, ()),
    "PATTERN_TYPE": ("word", 1, ("RINGS-QUADPOLE", "RINGS-OCTOPOLE", "RINGS-HARMONIC", "GAUSS-LAGUERRE")),
    "SOM_NAME": ("file", 1, ()),
}


def check_value(key: str, value: str, where: str = "") -> None:
    """Raise ConfigError unless ``value`` suits SExtractor keyword ``key``."""
    prefix = f"{where}: " if where else ""
    if key not in KEYWORDS:
        near = difflib.get_close_matches(key, KEYWORDS, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"{prefix}{key}: not a SExtractor keyword{hint}")
    kind, count, words = KEYWORDS[key]
    items = [x for x in value.replace(",", " ").split() if x] if kind not in ("str", "file") or count != 1 else \
        [value.strip()]
    if kind in ("str", "file") and count == 1:
        return
    if not items:
        if kind in ("float", "int") and key in ("FILTER_THRESH", "WEIGHT_THRESH"):
            return  # SExtractor's default for these is empty
        raise ConfigError(f"{prefix}{key}: no value")
    if count and len(items) > count:
        raise ConfigError(f"{prefix}{key} = {value!r}: at most {count} value(s)")
    for x in items:
        try:
            if kind == "int":
                int(x)
            elif kind == "float":
                float(x)
            elif kind == "bool" and x.upper() not in ("Y", "N"):
                raise ValueError
            elif kind == "word" and x.upper() not in words:
                raise ValueError
        except ValueError:
            what = {"int": "an integer", "float": "a number", "bool": "Y or N"}.get(kind, "one of " + ", ".join(words))
            raise ConfigError(f"{prefix}{key} = {value!r}: {x!r} is not {what}") from None


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
        for key, value in self.file_values.items():
            check_value(key, value, str(self.path))
        for key, value in self.overrides.items():
            check_value(key, value, "command line")

    def with_overrides(self, overrides: dict) -> SexConfig:
        """The same file with these ``-KEY VALUE`` overrides instead."""
        return SexConfig(self.path if self.user_file else None, overrides)

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
