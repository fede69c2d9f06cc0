"""Every setting, declared once.

Each group of settings is a frozen dataclass whose fields carry their help
text, their command-line flag, the commands that offer them and how their
values are checked. From these declarations come the command-line options
(:func:`add_options`), the Python API's defaults, what a worker process
receives (a :class:`~maxidetect.runner.Job` holds these objects: they
pickle) and the hashes that run records compare (:func:`settings_digest`).
Adding an option means adding one field here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from maxidetect.classes import ClassConfig, parse_class_list
from maxidetect.errors import ConfigError
from maxidetect.maps.policy import MapPolicy
from maxidetect.network.inference import ENGINES, PRECISIONS
from maxidetect.network.normalise import BACKGROUNDS

__all__ = [
    "ENGINES",
    "BACKGROUNDS",
    "PRECISIONS",
    "EXTRACTORS",
    "NetworkSettings",
    "ClassSettings",
    "MaskOutputSettings",
    "MapSettings",
    "ExtractSettings",
    "TrackSettings",
    "SETTINGS",
    "add_options",
    "from_args",
    "settings_digest",
    "positive_int",
    "nonnegative_int",
    "probability",
    "open_probability",
]

EXTRACTORS = ("sep", "photutils")

MASK, MAPS, DETECT, SEX = "mask", "maps", "detect", "sex"
NETWORK_COMMANDS = (MASK, MAPS, DETECT, SEX)
MAP_COMMANDS = (MAPS, DETECT, SEX)


# -- value checks (argparse types and __post_init__ share them) ---------------
def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not an integer") from None


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not a number") from None


def positive_int(text) -> int:
    v = _int(text)
    if v < 1:
        raise ValueError(f"{v} is not a positive integer")
    return v


def nonnegative_int(text) -> int:
    v = _int(text)
    if v < 0:
        raise ValueError(f"{v} is negative")
    return v


def probability(text) -> float:
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{v} is not a probability in [0, 1]")
    return v


def open_probability(text) -> float:
    v = _float(text)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{v} must lie strictly between 0 and 1")
    return v


def _argparse_type(check):
    def convert(text):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__.replace("_", " ")
    return convert


def option(default: Any, help: str, *, commands=NETWORK_COMMANDS, check=None, choices=None, flag: str | None = None,
           short: str | None = None, metavar: str | None = None, output: bool = True, cli: bool = True):
    """A setting: ``output`` False when it cannot change what is written
    (left out of run-record hashes); ``cli`` False for API-only settings."""
    meta = {"help": help, "commands": tuple(commands), "check": check, "choices": choices, "flag": flag,
            "short": short, "metavar": metavar, "output": output, "cli": cli}
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings are immutable: use a tuple")
    return field(default=default, metadata=meta)


class _Settings:
    """Shared behaviour: value checks at construction."""

    TITLE = ""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            m = f.metadata
            if value is None or value is False:
                continue
            try:
                if m.get("check") is not None:
                    m["check"](value)
                if m.get("choices") is not None and value not in m["choices"]:
                    raise ValueError(f"{value!r} is not one of {', '.join(map(str, m['choices']))}")
            except ValueError as exc:
                raise ConfigError(f"{_flag(f)}: {exc}") from None

    def replace(self, **changes):
        return replace(self, **changes)


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class NetworkSettings(_Settings):
    """How the network runs."""

    TITLE = "network"
    model: str | None = option(None, "model name (see 'maxidetect models'; default: the first)")
    engine: str = option("auto", "what runs the network: ONNX Runtime for float32 (the reference), OpenVINO for "
                         "mixed/bfloat16 (the 'openvino' extra), Keras when KERAS_BACKEND is set; in float32 all give "
                         "the same masks", choices=ENGINES, output=False)
    tile: int | None = option(None, "tiles hold at most N*N pixels (default 2048 on ONNX Runtime, 1024 on Keras)",
                              check=positive_int, metavar="N")
    margin: int = option(160, "tile overlap margin in pixels (160: stitched == untiled)", check=nonnegative_int,
                         metavar="PIX")
    batch_size: int = option(1, "tiles per forward pass", check=positive_int, metavar="N")
    precision: str = option("float32", "compute precision: 'int8' (integer convolutions in the network's deep part, "
                            "float32 at its ends; ONNX Runtime, models with int8 ranges: maximask) was 1.4x faster "
                            "on AVX-512 VNNI and changed 0.005-0.05%% of contaminant mask pixels; 'mixed' (bfloat16 "
                            "in the deep part; OpenVINO on CPUs with AVX-512 BF16 or AMX) 1.1-1.4x, 0.004-0.02%% "
                            "(benchmarks/results/engine_profile.md)", choices=PRECISIONS)
    background: str | None = option(None, "normalisation background maps (default: the model's for mask; for "
                                    "maps, detect and sex 'centred' where the model's are 'maximask': MaxiMask's "
                                    "sag towards the edges, so its masks depend on the sky level left in a frame)",
                                    choices=BACKGROUNDS)


@dataclass(frozen=True)
class ClassSettings(_Settings):
    """Which classes, with which priors and thresholds."""

    TITLE = "classes"
    classes: str | None = option(None, "comma-separated classes to keep, e.g. CR,HP,TRL (default: all)",
                                 metavar="LIST")
    config_dir: str | None = option(None, "directory with MaxiMask classes.flags/.priors/.thresh", metavar="DIR")
    maximask_defaults: bool = option(False, "MaxiMask 1.4.1's priors and thresholds instead of the catalogue "
                                     "defaults", commands=MAP_COMMANDS)
    no_priors: bool = option(False, "skip Bayesian prior modification", commands=(MASK,))
    no_threshold: bool = option(False, "write probabilities, not thresholded masks", commands=(MASK,))

    def __post_init__(self):
        super().__post_init__()
        if self.classes:
            try:
                parse_class_list(self.classes)
            except ValueError as exc:
                raise ConfigError(f"--classes: {exc}") from None

    def config(self, for_maps: bool):
        """The validated ClassConfig: the user's MaxiMask files, else MaxiMask's
        defaults (masks, or ``maximask_defaults``), else the catalogue defaults
        of the maps; narrowed to ``classes``."""
        if self.config_dir:
            config = ClassConfig.from_dir(self.config_dir)
        elif not for_maps or self.maximask_defaults:
            config = ClassConfig.default()
        else:
            config = ClassConfig.catalogue()
        if self.classes:
            config.selected = config.selected & parse_class_list(self.classes)
        config.validate()
        if not config.selected.any():
            raise ConfigError("no contaminant class selected")
        return config


@dataclass(frozen=True)
class MaskOutputSettings(_Settings):
    """What ``mask`` writes."""

    TITLE = "mask output"
    probs: bool = option(False, "write float32 probabilities instead of masks", commands=(MASK,))
    single_mask: bool = option(False, "write one int32 image: OR of the flagged classes' bit codes",
                               commands=(MASK,))


@dataclass(frozen=True)
class MapSettings(_Settings):
    """How masks become SExtractor's WEIGHT_IMAGE and FLAG_IMAGE."""

    TITLE = "maps"
    policy: str | None = option(None, "per-class map action overrides, e.g. SAT=zero,FR=none (actions: zero, flag, "
                                "none; defaults in the class registry)", commands=MAP_COMMANDS, metavar="SPEC")
    grow: int = option(0, "grow zero-weight regions by N pixels", commands=MAP_COMMANDS, check=nonnegative_int,
                       metavar="N")
    soft_weights: bool = option(False, "weight 1-p instead of 0/1 outside zeroed pixels", commands=MAP_COMMANDS)
    noise_weights: bool = option(False, "fold (global/local rms)^2, capped at 1, into the weights (fewer noise peaks "
                                 "in bright areas, some completeness lost)", commands=MAP_COMMANDS)
    weight_image: str | None = option(None, "your own weight map, multiplied in (its zeros stay zero)",
                                      commands=MAP_COMMANDS, metavar="FITS")
    network_only: bool = option(False, "maps from the network's probabilities alone: no star protection, no "
                                "fitted trails or columns, no L.A.Cosmic (the behaviour before 0.3)",
                                commands=MAP_COMMANDS)

    def __post_init__(self):
        super().__post_init__()
        if self.policy:
            try:
                MapPolicy.parse(self.policy)
            except ValueError as exc:
                raise ConfigError(f"--policy: {exc}") from None


@dataclass(frozen=True)
class ExtractSettings(_Settings):
    """Source extraction and the catalogue."""

    TITLE = "extraction"
    no_mask: bool = option(False, "run without maps (the reference run)", commands=(DETECT, SEX))
    extractor: str = option("sep", "in-process extractor", commands=(DETECT,), choices=EXTRACTORS)
    sex_binary: str | None = option(None, "SExtractor executable (default: source-extractor or sex on PATH)",
                                    commands=(SEX,), output=False, metavar="PATH")
    sex_args: tuple = option((), "SExtractor arguments (-c FILE, -KEY VALUE)", cli=False)
    clean: bool = option(False, "write only detections with MD_CONTAM below --contam-threshold",
                         commands=(DETECT, SEX))
    contam_threshold: float | None = option(None, "MD_CONTAM above which --clean drops a detection (default: the "
                                            "scoring model's)", commands=(DETECT, SEX), check=probability,
                                            metavar="P")


@dataclass(frozen=True)
class TrackSettings(_Settings):
    """Frame quality (MaxiTrack) in the file pipeline."""

    TITLE = "frame quality (MaxiTrack)"
    track: bool = option(False, "score tracking errors per frame and record it (MDTRKP, MDTRKV) in the output "
                         "headers")
    reject_tracking: bool = option(False, "skip frames whose tracking-error probability is over --track-threshold",
                                   commands=(DETECT, SEX))
    track_prior: float = option(0.05, "expected fraction of frames with tracking errors", check=open_probability,
                                metavar="P")
    track_threshold: float = option(0.5, "tracking-error probability over which a frame is trailed",
                                    check=probability, metavar="P")

    @property
    def active(self) -> bool:
        return self.track or self.reject_tracking


#: Every settings group, in the order their options appear in --help.
SETTINGS = (NetworkSettings, ClassSettings, MaskOutputSettings, MapSettings, ExtractSettings, TrackSettings)


def add_options(parser: argparse.ArgumentParser, command: str, groups=SETTINGS) -> None:
    """Add the options of every setting that ``command`` offers."""
    for cls in groups:
        offered = [f for f in fields(cls) if f.metadata["cli"] and command in f.metadata["commands"]]
        if not offered:
            continue
        g = parser.add_argument_group(cls.TITLE)
        for f in offered:
            m = f.metadata
            names = ([m["short"]] if m["short"] else []) + [_flag(f)]
            if f.type in (bool, "bool"):
                g.add_argument(*names, dest=f.name, action="store_true", help=m["help"])
                continue
            kw = {"dest": f.name, "default": f.default, "metavar": m["metavar"]}
            if m["choices"] is not None:
                kw["choices"] = m["choices"]
            if m["check"] is not None:
                kw["type"] = _argparse_type(m["check"])
            default = "" if f.default is None else f" (default {f.default})"
            g.add_argument(*names, help=m["help"] + default, **kw)


def from_args(cls, args: argparse.Namespace, **extra):
    """A settings object from parsed options (absent ones keep their defaults)."""
    values = {}
    for f in fields(cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    values.update(extra)
    return cls(**values)


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def settings_digest(*objects) -> str:
    """SHA-256 of the settings that shape outputs: unset and default values
    hash alike (the CLI and the API agree), ``output=False`` fields are left
    out (which engine ran the network, where the binary lives)."""
    from maxidetect.version import __version__

    blob = {"version": __version__}
    for obj in objects:
        if obj is None:
            continue
        d = asdict(obj)
        blob[type(obj).__name__] = {f.name: d[f.name] for f in fields(obj)
                                    if f.metadata.get("output", True) and d[f.name] != _default(f)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
