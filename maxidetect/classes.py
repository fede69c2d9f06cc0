"""The registry of contaminant classes: the one place every module reads.

A class has an abbreviation, a full name, a FLAG_IMAGE bit code, the
proportion it had in the pretrained network's training set, and MaxiMask
1.4.1's default new prior and threshold. Order matters: it is the order of
the network's output channels and of MaxiMask's three config files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxidetect.errors import ConfigError

__all__ = [
    "ContaminantClass",
    "CLASSES",
    "CLASS_NAMES",
    "N_CLASSES",
    "ClassConfig",
    "class_index",
    "parse_class_list",
    "read_config_file",
    "write_config_file",
]


@dataclass(frozen=True)
class ContaminantClass:
    """One contaminant class of the MaxiMask network."""

    abbr: str
    name: str
    bit: int
    training_prior: float
    prior: float
    threshold: float
    #: Default WEIGHT_IMAGE policy: "zero" (weight 0: never detected) or
    #: "flag" (FLAG_IMAGE bit only) or "none". Classes that cover real
    #: sources flag, or whole bright stars would vanish from catalogues.
    weight_action: str
    #: Threshold on the network's raw probability for the maps of the
    #: catalogue pipeline (``ClassConfig.catalogue()``), and the growth of
    #: its zero-weight pixels [pix]; tuned on simulated truth (seeds
    #: 1000-1002, benchmarks/results/tuning.md), validated on other seeds.
    map_threshold: float = 0.5
    map_grow: int = 0


CLASSES: tuple[ContaminantClass, ...] = (
    ContaminantClass("CR", "cosmic rays", 1, 0.010, 5e-4, 0.43, "zero", 0.85, 0),
    ContaminantClass("HCL", "hot columns/lines", 2, 0.009, 1e-5, 0.60, "zero", 0.5, 0),
    ContaminantClass("DCL", "dead columns/lines/clusters", 4, 0.036, 1e-4, 0.74, "zero", 0.9, 0),
    ContaminantClass("HP", "hot pixels", 8, 0.001, 1e-6, 0.43, "zero", 0.5, 0),
    ContaminantClass("DP", "dead pixels", 16, 0.001, 1e-6, 0.99, "zero", 0.9, 0),
    ContaminantClass("P", "persistence", 32, 0.010, 1e-3, 0.65, "zero", 0.95, 0),
    ContaminantClass("TRL", "satellite trails", 64, 0.103, 1e-3, 0.28, "zero", 0.3, 2),
    ContaminantClass("FR", "fringes", 128, 0.126, 1e-3, 0.76, "flag", 0.5, 0),
    ContaminantClass("NEB", "nebulosities", 256, 0.171, 1e-3, 0.56, "flag", 0.5, 0),
    ContaminantClass("SAT", "saturated pixels", 512, 0.002, 1e-3, 0.81, "flag", 0.5, 0),
    ContaminantClass("SP", "diffraction spikes", 1024, 0.044, 5e-3, 0.54, "flag", 0.5, 0),
    ContaminantClass("OV", "overscan", 2048, 0.118, 5e-3, 0.55, "zero", 0.9, 0),
    ContaminantClass("BBG", "bright background", 4096, 0.126, 0.1, 0.44, "flag", 0.5, 0),
    ContaminantClass("BG", "background", 0, 0.395, 0.9, 0.27, "none", 0.5, 0),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.abbr for c in CLASSES)
N_CLASSES = len(CLASSES)
_INDEX = {c.abbr: i for i, c in enumerate(CLASSES)}


def class_index(abbr: str) -> int:
    """Return the channel index of class ``abbr`` (case-insensitive)."""
    try:
        return _INDEX[abbr.strip().upper()]
    except KeyError:
        raise ValueError(
            f"unknown contaminant class {abbr!r}; known: {', '.join(CLASS_NAMES)}"
        ) from None


def parse_class_list(spec: str | list[str] | None) -> np.ndarray:
    """Turn ``"CR,TRL"`` (or a list of names, or None for all) into a boolean
    selection of shape ``(N_CLASSES,)``."""
    sel = np.zeros(N_CLASSES, dtype=bool)
    if spec is None:
        sel[:] = True
        return sel
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    for name in names:
        if name.strip():
            sel[class_index(name)] = True
    if not sel.any():
        raise ValueError("class selection is empty")
    return sel


@dataclass
class ClassConfig:
    """Per-class selection, priors and thresholds, each of shape ``(N_CLASSES,)``.

    Defaults are MaxiMask 1.4.1's shipped ``classes.flags/priors/thresh``.
    """

    selected: np.ndarray
    priors: np.ndarray
    thresholds: np.ndarray

    @classmethod
    def default(cls) -> ClassConfig:
        return cls(
            selected=np.ones(N_CLASSES, dtype=bool),
            priors=np.array([c.prior for c in CLASSES], dtype=np.float64),
            thresholds=np.array([c.threshold for c in CLASSES], dtype=np.float64),
        )

    @classmethod
    def catalogue(cls) -> ClassConfig:
        """The maps' default: no prior change (priors = training proportions)
        and the registry's ``map_threshold`` per class."""
        return cls(
            selected=np.ones(N_CLASSES, dtype=bool),
            priors=np.array([c.training_prior for c in CLASSES], dtype=np.float64),
            thresholds=np.array([c.map_threshold for c in CLASSES], dtype=np.float64),
        )

    @classmethod
    def from_dir(cls, config_dir: str | os.PathLike) -> ClassConfig:
        """Read MaxiMask's ``classes.flags``, ``classes.priors`` and
        ``classes.thresh`` from ``config_dir``; a missing file keeps defaults."""
        cfg = cls.default()
        d = Path(config_dir)
        if not d.is_dir():
            raise ConfigError(f"{d}: config directory does not exist")
        for fname, attr in (
            ("classes.flags", "selected"),
            ("classes.priors", "priors"),
            ("classes.thresh", "thresholds"),
        ):
            p = d / fname
            if p.exists():
                values = read_config_file(p)
                setattr(cfg, attr, values.astype(bool) if attr == "selected" else values)
                try:
                    cfg.validate()
                except ValueError as exc:
                    raise ConfigError(f"{p}: {exc}") from None
        return cfg

    def to_dir(self, config_dir: str | os.PathLike) -> None:
        """Write the three MaxiMask config files into ``config_dir``."""
        d = Path(config_dir)
        d.mkdir(parents=True, exist_ok=True)
        write_config_file(d / "classes.flags", self.selected.astype(int))
        write_config_file(d / "classes.priors", self.priors)
        write_config_file(d / "classes.thresh", self.thresholds)

    def validate(self) -> None:
        for attr in ("selected", "priors", "thresholds"):
            arr = np.asarray(getattr(self, attr))
            if arr.shape != (N_CLASSES,):
                raise ValueError(f"{attr} must have shape ({N_CLASSES},), got {arr.shape}")
        for name, values, bad, rule in (
                ("prior", self.priors, (self.priors <= 0) | (self.priors >= 1), "strictly between 0 and 1"),
                ("threshold", self.thresholds, (self.thresholds < 0) | (self.thresholds > 1), "in [0, 1]")):
            if np.any(bad | ~np.isfinite(values)):
                i = int(np.flatnonzero(bad | ~np.isfinite(values))[0])
                raise ConfigError(f"class {CLASS_NAMES[i]}: {name} {float(values[i])!r} must lie {rule}")


def read_config_file(path: str | os.PathLike) -> np.ndarray:
    """Read a MaxiMask class config file: 14 rows ``ABBR value`` in registry order.

    Returns a float64 array of shape ``(N_CLASSES,)``. Rows must name the
    classes in the registry's order, because MaxiMask reads them by position.
    """
    path = Path(path)
    rows = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected 'CLASS value' rows)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{lineno}: expected 'CLASS value', got {line!r}")
        try:
            rows.append((parts[0].upper(), float(parts[1])))
        except ValueError:
            raise ConfigError(f"{path}:{lineno}: {parts[1]!r} is not a number") from None
    if len(rows) != N_CLASSES:
        raise ConfigError(f"{path}: expected {N_CLASSES} rows, found {len(rows)}")
    for i, (abbr, _) in enumerate(rows):
        if abbr != CLASS_NAMES[i]:
            raise ConfigError(f"{path}: row {i + 1} is {abbr!r}, expected {CLASS_NAMES[i]!r} (order matters)")
    return np.array([v for _, v in rows], dtype=np.float64)


def write_config_file(path: str | os.PathLike, values) -> None:
    """Write a MaxiMask class config file; values at full precision (``repr``)."""
    values = np.asarray(values)
    if values.shape != (N_CLASSES,):
        raise ValueError(f"expected {N_CLASSES} values, got shape {values.shape}")
    lines = []
    for abbr, v in zip(CLASS_NAMES, values.tolist(), strict=True):
        text = str(int(v)) if float(v).is_integer() and abs(v) < 2 else repr(float(v))
        lines.append(f"{abbr:<4}{text}\n")
    Path(path).write_text("".join(lines))
