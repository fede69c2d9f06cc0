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
from dataclasses import replace
from pathlib import Path

from maxidetect.errors import ConfigError, MaxidetectWarning, SExtractorError
from maxidetect.extract.config import CONFIG_DIR, SexConfig, find_binary, read_param_file, resolve_aux_file
from maxidetect.files import (
    FitsStreamWriter,
    InputSpec,
    atomic_output,
    image_header,
    is_gzipped,
    open_fits,
    output_path,
)

__all__ = ["FLAG_COLUMNS", "CATALOG_SUFFIX", "build_command", "run_sextractor"]

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


def catalog_target(spec: InputSpec, config: SexConfig, out_dir=None) -> tuple[Path, str]:
    """(catalogue path, CATALOG_TYPE): the user's if they chose, else NAME.cat.fits, FITS_1.0."""
    ctype = config.get("CATALOG_TYPE", "FITS_1.0").upper() if config.user_set("CATALOG_TYPE") else "FITS_1.0"
    if config.user_set("CATALOG_NAME"):
        return Path(config.get("CATALOG_NAME")), ctype
    suffix = CATALOG_SUFFIX if ctype.startswith("FITS") else ".cat"
    return output_path(spec, suffix, out_dir), ctype


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


def run_sextractor(
    spec: InputSpec,
    config: SexConfig,
    maps: tuple[Path, Path] | None = None,
    binary: str | None = None,
    out_dir=None,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Run SExtractor on ``spec`` with optional (weight, flag) maps.

    Returns
    -------
    (catalogue path, command)

    Raises
    ------
    SExtractorError
        The binary is missing, or SExtractor failed (its message included).
    """
    exe = find_binary(binary)
    catalog, ctype = catalog_target(spec, config, out_dir)
    catalog = catalog if catalog.is_absolute() else Path.cwd() / catalog
    if catalog.exists() and not overwrite:
        raise FileExistsError(f"{catalog}: output exists (use --overwrite to replace it)")
    catalog.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maxidetect-sex-") as tmp, atomic_output(catalog) as part:
        tmp = Path(tmp)
        readable = _readable_copy(spec.path, tmp)
        cmd = build_command(exe, replace(spec, path=readable), config, maps, Path(part), ctype, tmp)
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        err = _error_line(proc.stderr)
        if proc.returncode != 0 or err:
            raise SExtractorError(
                f"{spec}: SExtractor failed (exit {proc.returncode}): {err or proc.stderr.strip()[-300:]}"
            )
        if Path(part).stat().st_size == 0 and ctype != "NONE":
            raise SExtractorError(f"{spec}: SExtractor wrote an empty catalogue")
    cmd = [str(catalog) if c == part else c for c in cmd]
    return catalog, cmd


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


__all__ += ["image_argument", "catalog_target", "resolve_aux_file"]
