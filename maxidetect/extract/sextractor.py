"""Run the real SExtractor binary with maxidetect's maps.

The user's configuration and ``-KEY VALUE`` arguments pass through; we add
the map arguments, make sure the flag columns are in the catalogue, resolve
auxiliary files to absolute paths (SExtractor opens them relative to the
working directory), hand it an uncompressed copy of a tile-compressed (``.fz``)
or gzipped image (SExtractor 2.25 reads neither), and write the catalogue
atomically.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from maxidetect.errors import ConfigError, MaxidetectWarning, SExtractorError
from maxidetect.extract.config import CONFIG_DIR, SexConfig, find_binary, read_param_file, resolve_aux_file
from maxidetect.files import (
    FitsStreamWriter,
    InputSpec,
    check_output,
    image_header,
    is_gzipped,
    open_fits,
    output_path,
    parse_input,
    publish,
    stamp_provenance,
)
from maxidetect.timing import stage

__all__ = ["FLAG_COLUMNS", "CATALOG_SUFFIX", "SExtractorRun", "build_command", "run_sextractor", "default_catalog",
           "catalog_target", "extra_outputs"]

#: Columns every masked run must carry.
FLAG_COLUMNS = ("IMAFLAGS_ISO", "NIMAFLAGS_ISO", "FLAGS_WEIGHT")
CATALOG_SUFFIX = ".cat.fits"


def image_argument(spec: InputSpec) -> str:
    """``file.fits`` or ``file.fits[N]`` (SExtractor counts HDUs from 0)."""
    if spec.hdu is None:
        return str(spec.path)
    index = spec.hdu
    if isinstance(index, str):
        from astropy.io import fits

        with fits.open(spec.path) as h:
            index = h.index_of(index)
    return f"{spec.path}[{index}]"


def default_catalog(spec: InputSpec, catalog_type: str = "FITS_1.0", out_dir=None, tag: str = "sex",
                    no_mask: bool = False) -> Path:
    """maxidetect's catalogue name for an input: ``NAME[.nomask].TAG.cat.fits``
    (``.cat`` for ASCII types). Each engine has its tag (``sep``, ``sex``,
    ``phot``) and the reference run without maps its own prefix, so no
    command replaces another's catalogue."""
    fits_type = catalog_type.upper().startswith("FITS")
    suffix = (".nomask" if no_mask else "") + f".{tag}" + (CATALOG_SUFFIX if fits_type else ".cat")
    return output_path(spec, suffix, out_dir)


def catalog_target(spec: InputSpec, config: SexConfig, out_dir=None, tag: str = "sex",
                   no_mask: bool = False) -> tuple[Path, str]:
    """(catalogue path, CATALOG_TYPE): the user's if they chose, else
    :func:`default_catalog` in FITS_1.0."""
    ctype = config.get("CATALOG_TYPE", "FITS_1.0").upper() if config.user_set("CATALOG_TYPE") else "FITS_1.0"
    if config.user_set("CATALOG_NAME"):
        return Path(config.get("CATALOG_NAME")), ctype
    return default_catalog(spec, ctype, out_dir, tag, no_mask), ctype


def extra_outputs(config: SexConfig) -> dict[str, list[Path]]:
    """SExtractor's other files that the configuration names (relative to the
    working directory, as SExtractor opens them): check images, XML."""
    out: dict[str, list[Path]] = {}
    types = [t.upper() for t in config.get_list("CHECKIMAGE_TYPE", ["NONE"])]
    if any(t != "NONE" for t in types):
        names = config.get_list("CHECKIMAGE_NAME", ["check.fits"])
        if len(names) != len(types):
            raise ConfigError(f"CHECKIMAGE_NAME lists {len(names)} file(s) for {len(types)} CHECKIMAGE_TYPE(s)")
        out["CHECKIMAGE_NAME"] = [Path(n).absolute() for t, n in zip(types, names, strict=True) if t != "NONE"]
    if config.get_bool("WRITE_XML", False):
        out["XML_NAME"] = [Path(config.get("XML_NAME", "sex.xml")).absolute()]
    return out


def param_list(config: SexConfig, need_flags: bool, workdir: Path) -> Path:
    """The PARAMETERS_NAME file to use: the configured one, or a copy with
    the flag columns appended when they are missing."""
    path = config.resolve("PARAMETERS_NAME", "default.param")
    params = read_param_file(path)
    if not params:
        # Debian's default.param is entirely commented out.
        warnings.warn(f"{path} lists no parameter (all commented): using {CONFIG_DIR / 'default.param'}",
                      MaxidetectWarning, stacklevel=2)
        path = CONFIG_DIR / "default.param"
        params = read_param_file(path)
    if need_flags:
        wanted = params + [c for c in FLAG_COLUMNS if c not in params]
    elif not config.user_set("FLAG_IMAGE"):
        # Without a FLAG_IMAGE SExtractor refuses the IMAFLAGS columns.
        wanted = [p for p in params if p.split("(")[0] not in ("IMAFLAGS_ISO", "NIMAFLAGS_ISO")]
    else:
        wanted = params
    if wanted == params:
        return path
    new = workdir / "maxidetect.param"
    new.write_text("\n".join(wanted) + "\n")
    return new


def build_command(
    binary: str,
    spec: InputSpec,
    config: SexConfig,
    maps: tuple[Path, Path] | None,
    catalog: Path,
    catalog_type: str,
    workdir: Path,
) -> list[str]:
    """The full SExtractor command line (nothing is run)."""
    cmd = [binary, image_argument(spec), "-c", str(config.path.resolve())]
    cmd += ["-PARAMETERS_NAME", str(param_list(config, maps is not None, workdir))]
    if config.get_bool("FILTER", True):
        cmd += ["-FILTER_NAME", str(config.resolve("FILTER_NAME", "default.conv"))]
    try:
        cmd += ["-STARNNW_NAME", str(config.resolve("STARNNW_NAME", "default.nnw"))]
    except ConfigError:
        pass  # only needed for CLASS_STAR; SExtractor reports it if so
    skip = {"PARAMETERS_NAME", "FILTER_NAME", "STARNNW_NAME", "CATALOG_NAME", "CATALOG_TYPE"}
    for key, value in config.overrides.items():
        if key not in skip:
            cmd += [f"-{key}", value]
    cmd += ["-CATALOG_NAME", str(catalog), "-CATALOG_TYPE", catalog_type]
    if maps is not None:
        from maxidetect.maps.writer import sextractor_args

        cmd += sextractor_args(*maps, interp_none=not config.user_set("INTERP_TYPE"))
    return cmd


@dataclass
class SExtractorRun:
    """What a SExtractor run produced: the catalogue, every file written
    (catalogue first), the command and SExtractor's own warnings."""

    catalog: Path
    outputs: list[Path]
    command: list[str]
    warnings: list[str] = field(default_factory=list)


def run_sextractor(
    spec: InputSpec,
    config: SexConfig,
    maps: tuple[Path, Path] | None = None,
    binary: str | None = None,
    out_dir=None,
    overwrite: bool = False,
    postprocess=None,
) -> SExtractorRun:
    """Run SExtractor on ``spec`` with optional (weight, flag) maps.

    ``postprocess(catalogue, catalog_type, segmentation)`` may rewrite the
    staged catalogue before it is published (the per-detection score): it
    gets SExtractor's SEGMENTATION check image, the user's or one made for it
    and removed afterwards.

    Every file SExtractor writes (catalogue, check images, XML) is first
    written in a temporary directory and only renamed into place when the
    run succeeded, each through the guard that refuses to replace an input.

    Raises
    ------
    SExtractorError
        The binary is missing, or SExtractor failed (its message included).
    """
    spec = spec if isinstance(spec, InputSpec) else parse_input(str(spec))
    exe = find_binary(binary)
    catalog, ctype = catalog_target(spec, config, out_dir, "sex", maps is None)
    catalog = catalog.absolute()
    extras = extra_outputs(config)
    finals = [catalog] + [p for paths in extras.values() for p in paths]
    for p in finals:
        check_output(p, overwrite, [spec.path])
    with tempfile.TemporaryDirectory(prefix="maxidetect-sex-") as tmp:
        tmp = Path(tmp)
        links: dict[str, str] = {}  # link -> what it names, for the command shown
        readable = _plain_name(_readable_copy(spec.path, tmp), tmp / "image", links)
        if maps is not None:
            maps = (_plain_name(maps[0], tmp / "weight", links), _plain_name(maps[1], tmp / "flag", links))
        part = tmp / "catalog"
        over = dict(config.overrides)
        staged = {catalog: part}
        for key, paths in extras.items():
            names = []
            for k, p in enumerate(paths):
                staged[p] = tmp / f"{key.lower()}{k}{p.suffix}"
                names.append(str(staged[p]))
            over[key] = ",".join(names)
        segmentation = None
        if postprocess is not None and ctype != "NONE":
            # The post-processing needs each object's pixels: the user's own
            # SEGMENTATION check image, or one for this run only.
            types = [t.upper() for t in config.get_list("CHECKIMAGE_TYPE", ["NONE"])]
            user = [t for t in types if t != "NONE"]
            if "SEGMENTATION" in user:
                segmentation = staged[extras["CHECKIMAGE_NAME"][user.index("SEGMENTATION")]]
            else:
                segmentation = tmp / "segmentation.fits"
                names = [str(staged[p]) for p in extras.get("CHECKIMAGE_NAME", [])]
                over["CHECKIMAGE_TYPE"] = ",".join(user + ["SEGMENTATION"])
                over["CHECKIMAGE_NAME"] = ",".join(names + [str(segmentation)])
        run_config = config.with_overrides(over)
        cmd = build_command(exe, replace(spec, path=readable), run_config, maps, part, ctype, tmp)
        with stage("extract"):
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        err = _error_line(proc.stderr)
        if proc.returncode != 0 or err:
            raise SExtractorError(
                f"{spec}: SExtractor failed (exit {proc.returncode}): {err or proc.stderr.strip()[-300:]}"
            )
        if part.stat().st_size == 0 and ctype != "NONE":
            raise SExtractorError(f"{spec}: SExtractor wrote an empty catalogue")
        if segmentation is not None:
            with stage("score"):
                postprocess(part, ctype, segmentation)
        for final, staged_path in staged.items():
            if ctype == "NONE" and final == catalog:
                continue
            if final != catalog and "XML_NAME" not in [k for k, v in extras.items() if final in v]:
                stamp_provenance(staged_path, "CHECKIMAGE")
            elif final == catalog and ctype.startswith("FITS"):
                stamp_provenance(staged_path, "CATALOG")
            final.parent.mkdir(parents=True, exist_ok=True)
            publish(staged_path, final)
    shown = {str(v): str(k) for k, v in staged.items()}
    cmd = [shown.get(c, c) for c in cmd]
    for link, target in links.items():
        cmd = [c.replace(link, target) for c in cmd]
    written = [p for p in finals if p.exists() and not (ctype == "NONE" and p == catalog)]
    return SExtractorRun(catalog, written, cmd, _warning_lines(proc.stderr))


def _warning_lines(stderr: str) -> list[str]:
    return [line.replace("\x1b[1M", "").replace("\x1b[1A", "").strip("> ").strip()
            for line in stderr.splitlines() if "WARNING" in line]


def _plain_name(path: Path, link: Path, links: dict) -> Path:
    """``path``, or a symbolic link to it named ``link`` + its suffix where
    its name holds a space or comma: SExtractor splits list keywords
    (WEIGHT_IMAGE, FLAG_IMAGE) and its image argument there ("odd
    shape.fits" became "cannot open odd")."""
    if not any(c.isspace() or c == "," for c in str(path)):
        return path
    link = link.with_name(link.name + Path(path).suffix.replace(" ", "").replace(",", ""))
    link.symlink_to(Path(path).resolve())
    links[str(link)] = str(path)
    return link


def _readable_copy(path: Path, workdir: Path) -> Path:
    """``path``, or an uncompressed copy in ``workdir`` if SExtractor cannot
    read it (gzip, or tile-compressed HDUs). HDU order is kept, so HDU
    numbers and the maps' layout still match."""
    from astropy.io import fits

    gzipped = is_gzipped(path)
    with open_fits(path, "image") as hdul:
        if not gzipped and not any(isinstance(h, fits.CompImageHDU) for h in hdul):
            return path
        copy = workdir / "image.fits"
        with FitsStreamWriter(copy) as out:
            for i, hdu in enumerate(hdul):
                if isinstance(hdu, fits.CompImageHDU) or i == 0:
                    cls = fits.PrimaryHDU if i == 0 else fits.ImageHDU
                    out.add_hdu(cls(data=hdu.data, header=image_header(hdu)))
                else:
                    out.add_hdu(hdu.copy())
                del hdu.data  # one HDU's pixels at a time
    return copy


def _error_line(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if "*Error*" in line or "*ERROR*" in line:
            return line.replace("\x1b[1M", "").replace("\x1b[1A", "").strip("> ").strip()
    return None


__all__ += ["image_argument", "resolve_aux_file"]
