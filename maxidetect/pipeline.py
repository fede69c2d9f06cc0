"""One file through the pipeline: masks, maps, catalogue.

A :class:`Job` holds what to do (``mask``, ``maps``, ``detect`` or ``sex``)
and the settings of every stage (:mod:`maxidetect.settings`). Each stage
makes one *product* of a file (``masks``; ``maps``: weight and flag;
``catalog``) and says in advance which paths it will write
(:func:`planned_outputs`), so a run can refuse collisions before any work.
:mod:`maxidetect.runner` wraps the stages with run records and schedules
files.
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from maxidetect.errors import ConfigError
from maxidetect.extract.config import SexConfig, find_binary, split_sextractor_args
from maxidetect.extract.sextractor import catalog_target, extra_outputs, run_sextractor
from maxidetect.files import InputSpec, output_path
from maxidetect.maps.policy import MapPolicy
from maxidetect.masks.maker import MASK_SUFFIX
from maxidetect.network.weights import get_model_info
from maxidetect.settings import (
    ClassSettings,
    ExtractSettings,
    MapSettings,
    MaskOutputSettings,
    NetworkSettings,
    TrackSettings,
    settings_digest,
)

__all__ = ["Job", "KINDS", "EXTRACTOR_TAGS", "planned_outputs", "make_masks", "make_maps", "make_catalog",
           "sex_config"]

KINDS = ("mask", "maps", "detect", "sex")
#: Catalogue name tag of each engine (``NAME.TAG.cat.fits``).
EXTRACTOR_TAGS = {"sep": "sep", "photutils": "phot", "sextractor": "sex"}
_GROUPS = {"network": NetworkSettings, "classes": ClassSettings, "output": MaskOutputSettings, "maps": MapSettings,
           "extract": ExtractSettings, "tracking": TrackSettings}


@dataclass(frozen=True)
class Job:
    """What to do with every file, and with which settings (picklable).

    Parameters
    ----------
    kind : {"mask", "maps", "detect", "sex"}
    network, classes, output, maps, extract, tracking
        The settings of each stage (defaults where not given).
    out_dir : str or None
        Outputs beside each input when None.
    overwrite : bool
        Replace outputs that no run record accounts for, or that an earlier
        run made with other settings. Inputs are never replaced.
    threads : int or None
        Compute threads per worker (None: the library default).
    """

    kind: str
    network: NetworkSettings = field(default_factory=NetworkSettings)
    classes: ClassSettings = field(default_factory=ClassSettings)
    output: MaskOutputSettings = field(default_factory=MaskOutputSettings)
    maps: MapSettings = field(default_factory=MapSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    tracking: TrackSettings = field(default_factory=TrackSettings)
    out_dir: str | None = None
    overwrite: bool = False
    threads: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.output.single_mask and self.classes.no_threshold:
            raise ConfigError("--single-mask needs thresholds (drop --no-threshold)")

    @classmethod
    def build(cls, kind: str, out_dir=None, overwrite: bool = False, threads: int | None = None, **options) -> Job:
        """A job from plain keyword settings, each routed to its group by name:
        ``Job.build("detect", grow=2, sex_args=("-DETECT_THRESH", "3"))``."""
        groups = {}
        left = dict(options)
        for attr, group in _GROUPS.items():
            names = {f.name for f in fields(group)}
            mine = {k: left.pop(k) for k in list(left) if k in names}
            if "sex_args" in mine:
                mine["sex_args"] = tuple(mine["sex_args"] or ())
            groups[attr] = group(**mine)
        if left:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(left))}")
        return cls(kind, out_dir=out_dir, overwrite=overwrite, threads=threads, **groups)

    # -- what the job makes ------------------------------------------------------
    @property
    def masked(self) -> bool:
        return self.kind in ("maps", "detect", "sex") and not self.extract.no_mask

    @property
    def extractor(self) -> str:
        return "sextractor" if self.kind == "sex" else self.extract.extractor

    def products(self) -> list[str]:
        """The products of each file, in the order they are made."""
        if self.kind == "mask":
            return ["masks"]
        out = ["maps"] if self.masked else []
        if self.kind in ("detect", "sex"):
            out.append("catalog")
        return out

    def product_name(self, product: str) -> str:
        """Record name of a product (catalogues per engine, masked or not)."""
        if product != "catalog":
            return product
        return ("nomask." if not self.masked else "") + EXTRACTOR_TAGS[self.extractor] + ".cat"

    def digest(self, product: str) -> str:
        """Hash of the settings that shape ``product``."""
        track = self.tracking if self.tracking.active else None
        if product == "masks":
            return settings_digest(self.network, self.classes, self.output, track)
        maps = settings_digest(self.network, self.classes, self.maps, track)
        if product == "maps":
            return maps
        return settings_digest(self.extract, track) + (maps if self.masked else "")

    def validate(self) -> None:
        """Every setting checked before any work (ConfigError, WeightsError,
        SExtractorError): class files, model name, SExtractor keys and binary."""
        if self.kind == "mask" or self.masked:
            info = get_model_info(self.network.model)
            if self.kind != "mask" and info.no_maps:
                raise ConfigError(f"--model {info.name}: not offered for maps ({info.no_maps}); "
                                  "its masks: maxidetect mask --model " + info.name)
            self.classes.config(for_maps=self.kind != "mask")
        if self.maps.weight_image and not Path(self.maps.weight_image).is_file():
            raise ConfigError(f"--weight-image {self.maps.weight_image}: no such file")
        if self.kind in ("detect", "sex"):
            from maxidetect.score.model import load_score_model

            sex_config(self.extract.sex_args)
            load_score_model()
        if self.kind == "detect" and self.extract.extractor == "photutils":
            try:
                import photutils  # noqa: F401
                import skimage  # noqa: F401
            except ImportError:
                raise ConfigError("--extractor photutils needs photutils: "
                                  "pip install 'maxidetect[photutils]'") from None
        if self.kind == "sex":
            find_binary(self.extract.sex_binary)


@functools.lru_cache(maxsize=8)
def sex_config(sex_args: tuple) -> SexConfig:
    """The SExtractor configuration of ``-c FILE -KEY VALUE`` arguments,
    checked once (keywords and values) and shared by every file of a run."""
    return SexConfig(*split_sextractor_args(list(sex_args)))


def planned_outputs(job: Job, spec: InputSpec) -> dict[str, list[Path]]:
    """``{product: [paths]}`` that ``job`` will write for ``spec``."""
    out: dict[str, list[Path]] = {}
    if job.kind == "mask":
        out["masks"] = [output_path(spec, MASK_SUFFIX, job.out_dir)]
        return out
    if job.masked:
        from maxidetect.maps.writer import FLAG_SUFFIX, WEIGHT_SUFFIX

        out["maps"] = [output_path(spec, WEIGHT_SUFFIX, job.out_dir), output_path(spec, FLAG_SUFFIX, job.out_dir)]
    if job.kind in ("detect", "sex"):
        config = sex_config(job.extract.sex_args)
        tag = EXTRACTOR_TAGS[job.extractor]
        catalog, ctype = catalog_target(spec, config, job.out_dir, tag, not job.masked)
        paths = [] if ctype == "NONE" else [catalog.absolute()]
        if job.kind == "sex":
            paths += [p for ps in extra_outputs(config).values() for p in ps]
        out["catalog"] = paths
    return out


# -- the stages -------------------------------------------------------------------
# The maps, extraction and scoring modules are imported by their stages: a
# `mask` run then starts without them (scipy.sparse, astropy.table, SEP,
# scikit-image: ~0.6 s of a 2-core machine's start-up).
def make_masks(job: Job, spec: InputSpec, maker, overwrite: bool, cards=()) -> list[Path]:
    out = maker.process_file(spec, out_dir=job.out_dir, overwrite=overwrite, probs=job.output.probs,
                             single=job.output.single_mask, extra_cards=cards)
    return [out]


def make_maps(job: Job, spec: InputSpec, maker, overwrite: bool, cards=()) -> list[Path]:
    from maxidetect.maps.writer import write_maps

    m = job.maps
    policy = MapPolicy.parse(m.policy, grow=m.grow, soft=m.soft_weights, noise=m.noise_weights,
                             fuse=not m.network_only)
    return list(write_maps(spec, maker, policy, out_dir=job.out_dir, weight_image=m.weight_image,
                           overwrite=overwrite, extra_cards=cards))


def make_catalog(job: Job, spec: InputSpec, maps, overwrite: bool, cards=(), log=None) -> list[Path]:
    """The catalogue of ``spec`` (with ``maps``, or none); ``log`` collects
    the command run and SExtractor's warnings."""
    from maxidetect.extract.inprocess import detect_file
    from maxidetect.score.catalogs import Scorer, score_sextractor_catalog
    from maxidetect.score.model import load_score_model

    config = sex_config(job.extract.sex_args)
    log = log if log is not None else []
    scorer = Scorer(load_score_model(), clean=job.extract.clean, threshold=job.extract.contam_threshold)
    if job.kind == "sex":
        def post(catalog, ctype, segmentation):
            score_sextractor_catalog(catalog, ctype, segmentation, spec, maps, scorer)

        run = run_sextractor(spec, config, maps=maps, binary=job.extract.sex_binary, out_dir=job.out_dir,
                             overwrite=overwrite, postprocess=post)
        log.append("ran: " + shlex.join(run.command))
        log.extend(f"SExtractor: {w}" for w in run.warnings)
        if job.extract.clean:
            log.append(f"--clean: kept {scorer.n_out} of {scorer.n_in} detections "
                       f"(MD_CONTAM < {scorer.threshold:.3f})")
        return run.outputs
    cat = detect_file(spec, config, maps=maps, out_dir=job.out_dir, overwrite=overwrite, extra_cards=cards,
                      on_table=scorer, engine=job.extract.extractor)
    if job.extract.clean:
        log.append(f"--clean: kept {scorer.n_out} of {scorer.n_in} detections (MD_CONTAM < {scorer.threshold:.3f})")
    return [cat] if cat is not None else []
