"""Reading inputs and writing outputs safely.

Inputs: FITS files (also tile-compressed ``.fz``), ``file.fits[N]`` or
``file.fits[EXTNAME]`` HDU selection, directories (their FITS files) and
``.list`` files (one path per line). Outputs are written to a temporary
file in the destination directory and renamed into place, never over an
input, and carry the input's header (WCS included).
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import shutil
import socket
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.errors import InputError

__all__ = [
    "InputSpec",
    "expand_inputs",
    "parse_input",
    "is_image_hdu",
    "output_path",
    "write_hdulist_atomic",
    "temp_output",
    "atomic_output",
    "FitsStreamWriter",
    "read_plane",
    "image_header",
    "open_fits",
    "plane_shape",
    "is_gzipped",
]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fit.fz", ".fz", ".fits.gz")
_HDU_SEL = re.compile(r"^(?P<path>.+?)\[(?P<sel>[^\[\]]+)\]$")

# Keywords astropy writes itself for the output's shape and type.
_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|"
    r"CHECKSUM|DATASUM|Z[A-Z0-9_]*|TFIELDS|TTYPE\d+|TFORM\d+)$"
)


@dataclass(frozen=True)
class InputSpec:
    """One input file and an optional HDU selection (index or EXTNAME)."""

    path: Path
    hdu: int | str | None = None

    def __str__(self) -> str:
        return f"{self.path}[{self.hdu}]" if self.hdu is not None else str(self.path)


def parse_input(text: str) -> InputSpec:
    """Parse ``file.fits``, ``file.fits[2]`` or ``file.fits[SCI]``."""
    m = _HDU_SEL.match(text)
    if m and not Path(text).exists():
        sel = m.group("sel").strip()
        hdu: int | str = int(sel) if sel.lstrip("-").isdigit() else sel
        return InputSpec(Path(m.group("path")), hdu)
    return InputSpec(Path(text))


#: Name endings of maxidetect's own outputs (masks, maps, catalogues, simulated truth).
OUTPUT_ENDINGS = (".masks.fits", ".weight.fits", ".flag.fits", ".cat.fits", ".truth.fits")
#: Primary-header keywords that mark a file one of maxidetect's outputs.
PROVENANCE_KEYS = ("MDVERSN", "MDOUTPUT", "MDMAP")


def is_our_output(p: Path) -> bool:
    """True for a file maxidetect wrote: by its name, or its header provenance
    (any name: outputs renamed by a user, SExtractor's check images)."""
    name = p.name.lower()
    if any(name.endswith(s) for s in OUTPUT_ENDINGS) or ".masks." in name:
        return True
    try:
        with fits.open(p, memmap=True, lazy_load_hdus=True) as h:
            # Multi-extension outputs keep the input's primary: look at the first extension too.
            return any(any(k in h[i].header for k in PROVENANCE_KEYS) for i in range(min(len(h), 2)))
    except Exception:
        return False  # unreadable: left for the run to report


def _is_input_candidate(p: Path) -> bool:
    name = p.name.lower()
    return any(name.endswith(s) for s in FITS_SUFFIXES) and not is_our_output(p)


def expand_inputs(items) -> list[InputSpec]:
    """Expand paths, quoted globs (``'raw/*.fits'``: thousands of files beyond
    the shell's argument limit), directories and ``.list`` files into input specs.

    Directories and globs never pick up maxidetect's own outputs
    (:func:`is_our_output`), so a command can be rerun on a directory."""

    out: list[InputSpec] = []
    for item in items:
        spec = parse_input(str(item))
        p = spec.path
        if not p.exists() and any(ch in str(p) for ch in "*?"):
            matches = sorted(glob.glob(str(p)))
            if not matches:
                raise InputError(f"{p}: no file matches this pattern")
            out.extend(InputSpec(Path(m), spec.hdu) for m in matches
                       if Path(m).is_file() and not is_our_output(Path(m)))
        elif p.is_dir():
            out.extend(InputSpec(f) for f in sorted(p.iterdir()) if f.is_file() and _is_input_candidate(f))
        elif p.suffix == ".list":
            if not p.exists():
                raise InputError(f"{p}: list file does not exist")
            base = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    sub = parse_input(line)
                    path = sub.path if sub.path.is_absolute() else base / sub.path
                    out.append(InputSpec(path, sub.hdu))
        else:
            out.append(spec)
    return out


def select_hdus(hdul: fits.HDUList, spec: InputSpec) -> list[tuple[int, object]]:
    """(index, hdu) pairs of ``spec``: the selected HDU, or every HDU."""
    if spec.hdu is None:
        return list(enumerate(hdul))
    try:
        return [(hdul.index_of(spec.hdu), hdul[spec.hdu])]
    except (KeyError, IndexError):
        raise InputError(f"{spec.path}[{spec.hdu}]: no such HDU (file has {len(hdul)})") from None


def is_image_hdu(hdu) -> bool:
    """True for an HDU holding a 2-D or 3-D numeric image."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return False
    return len(hdu.shape) in (2, 3)


def plane_shape(hdu) -> tuple[int, int] | None:
    """(H, W) of an image HDU holding exactly one plane: 2-D, or N-D whose
    leading axes all have length 1 (``(1, H, W)``, ``(1, 1, H, W)``); else None."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    shape = tuple(hdu.shape)
    if len(shape) < 2 or any(n != 1 for n in shape[:-2]) or 0 in shape:
        return None
    return shape[-2:]


def output_path(spec: InputSpec, suffix: str, out_dir: str | os.PathLike | None = None) -> Path:
    """``NAME<suffix>`` beside the input (or in ``out_dir``); NAME drops FITS extensions."""
    name = spec.path.name
    for s in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    if isinstance(spec.hdu, (int, str)) and spec.hdu is not None:
        name = f"{name}.hdu{spec.hdu}"
    d = Path(out_dir) if out_dir is not None else spec.path.parent
    return d / f"{name}{suffix}"


def image_header(hdu) -> fits.Header:
    """The HDU's header without structural keywords (shape, type, scaling).

    For a compressed HDU this is the header of the image it holds.
    """
    src = hdu.header
    hdr = fits.Header()
    for card in src.cards:
        if card.keyword in ("", "COMMENT", "HISTORY") or not _STRUCTURAL.match(card.keyword):
            hdr.append(card, end=True)
    if isinstance(hdu, fits.CompImageHDU) and hdu.name and "EXTNAME" not in hdr:
        # The name may live only in the compressed table's header (fpack's
        # COMPRESSED_IMAGE): keep it, so `file[NAME]` finds the outputs' HDU too.
        hdr["EXTNAME"] = hdu.name
    return hdr


def open_fits(path: str | os.PathLike, what: str = "file") -> fits.HDUList:
    """Open a FITS file (in memory), or raise InputError naming it and the problem.

    Every header is read at once and the file's length checked, so a damaged
    file fails here, before any work: an HDU whose data runs past the end of
    the file, an extension whose header is cut short, a cut gzip stream.
    (astropy only warns about those, or says nothing, and hands back the HDUs
    before the damage: a partial output.) Trailing bytes that are not an
    extension (zero padding) are tolerated, as astropy does.
    """

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False)
            hdul.readall()
        except Exception as exc:
            why = str(exc).split(". ")[0]
            if "SIMPLE" in why or "empty or corrupt" in why:
                why = "it does not start with a FITS header"  # astropy's advice here is for its API, not ours
            raise InputError(f"{path}: {what} is not a readable FITS file ({why})") from None
    try:
        _check_complete(path, hdul)
    except InputError:
        hdul.close()
        raise
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hdul


_GZIP_MAGIC = b"\x1f\x8b"


def is_gzipped(path: str | os.PathLike) -> bool:
    """True if the file at ``path`` is a gzip stream (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _check_complete(path: Path, hdul: fits.HDUList) -> None:
    """Raise InputError if ``hdul`` (all headers read) is not the whole of ``path``."""

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == _GZIP_MAGIC:
        opener = gzip.open
        try:
            with gzip.open(path, "rb") as g:  # offsets refer to the decompressed stream
                size = sum(iter(lambda: len(g.read(1 << 24)), 0))
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: gzip stream is damaged or cut short ({exc})") from None
    elif magic[:3] == b"BZh" or magic == b"PK\x03\x04":
        return  # bzip2/zip: left to astropy
    else:
        opener, size = open, path.stat().st_size
    for i, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        # The last block may lack its padding; a compressed HDU's size is the image's.
        need = info["datLoc"] + max(info["datSpan"] - 2879 if isinstance(hdu, fits.CompImageHDU) else hdu.size, 0)
        if need > size:
            raise InputError(f"{path}[{i}]: file is truncated ({size} bytes; HDU {i}'s data needs {need})")
    with opener(path, "rb") as f:
        f.seek(info["datLoc"] + info["datSpan"])
        if f.read(8) == b"XTENSION":
            raise InputError(f"{path}[{len(hdul)}]: extension header is truncated or corrupt")


# -- the one guard every writer goes through -----------------------------------
# Inputs of the running job (this process): no output may resolve to one of
# them, whatever --overwrite says. Compared by inode (hard and symbolic links
# included) and by resolved path (for inputs that do not exist yet).
_PROTECTED: dict[str, tuple[int, int] | None] = {}


def _identity(path) -> tuple[str, tuple[int, int] | None]:
    p = Path(path)
    resolved = os.path.realpath(p)
    try:
        st = os.stat(p)
        return resolved, (st.st_dev, st.st_ino)
    except OSError:
        return resolved, None


def protect_inputs(paths) -> None:
    """Register ``paths`` as inputs: :func:`check_not_input` (and so every
    atomic write) refuses them from now on in this process."""
    for p in paths:
        if p is None:
            continue
        resolved, ident = _identity(p)
        _PROTECTED[resolved] = ident


@contextmanager
def protected(paths):
    """Protect ``paths`` for the duration of a block (nested blocks add up)."""
    before = dict(_PROTECTED)
    protect_inputs(paths)
    try:
        yield
    finally:
        _PROTECTED.clear()
        _PROTECTED.update(before)


def input_clash(path, inputs=()) -> str | None:
    """The input (registered or among ``inputs``) that ``path`` would
    overwrite, or None."""
    resolved, ident = _identity(path)
    candidates = dict(_PROTECTED)
    for p in inputs:
        r, i = _identity(p)
        candidates[r] = i
    for r, i in candidates.items():
        if r == resolved or (ident is not None and i is not None and i == ident):
            return r
    return None


def check_not_input(path, inputs=()) -> None:
    """Raise InputError if writing ``path`` would replace an input."""
    hit = input_clash(path, inputs)
    if hit is not None:
        raise InputError(f"{path}: refusing to write over the input {hit}")


def temp_output(path: Path) -> tuple[int, str]:
    """Open a temporary file beside ``path`` for an atomic write: (fd, name).

    The name carries this host and process id, so temporaries left by a
    killed run (kill -9, a lost batch job) are recognised and removed when
    the same output is made again on that host; others' are left alone.
    """

    path = Path(path)
    d = path.parent if str(path.parent) else Path(".")
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    for old in d.glob(f".{glob.escape(path.name)}.{host}-*.tmp"):
        m = re.match(rf"^\.{re.escape(path.name)}\.{re.escape(host)}-(\d+)\.", old.name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                old.unlink()
            except OSError:
                pass
    return tempfile.mkstemp(dir=d, prefix=f".{path.name}.{host}-{os.getpid()}.", suffix=".tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextmanager
def atomic_output(path: Path):
    """Yield a temporary file name beside ``path`` (see :func:`temp_output`);
    renamed into place when the block ends cleanly, removed otherwise."""
    fd, tmp = temp_output(path)
    os.close(fd)
    try:
        yield tmp
        _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _publish(tmp: str, path: Path) -> None:
    """Give the finished temporary the usual file mode (mkstemp makes 0600)
    and rename it into place, never over an input."""
    check_not_input(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def publish(src, path) -> Path:
    """Move a finished file written elsewhere (e.g. by SExtractor in a
    temporary directory) to ``path``: copied beside it, then renamed, through
    the same guard as every other output."""

    path = Path(path)
    check_not_input(path)
    with atomic_output(path) as tmp:
        shutil.copyfile(src, tmp)
    return path


def stamp_provenance(path, what: str) -> None:
    """Mark a FITS file made by a maxidetect run in its primary header
    (MDVERSN, MDOUTPUT), so directory inputs never take it for an image."""
    from maxidetect.version import __version__

    with fits.open(path, mode="update") as h:
        h[0].header["MDVERSN"] = (__version__, "maxidetect version")
        h[0].header["MDOUTPUT"] = (what, "maxidetect output")


def write_hdulist_atomic(
    hdul: fits.HDUList, path: str | os.PathLike, overwrite: bool = False, protect=()
) -> Path:
    """Write ``hdul`` to ``path`` via a temporary file and an atomic rename.

    Refuses to replace an existing file unless ``overwrite``, and always
    refuses to replace any path in ``protect`` (the inputs).
    """
    path = Path(path)
    check_output(path, overwrite, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="silentfix")
    return path



def check_output(path, overwrite: bool, protect=()) -> None:
    """Before work: refuse an input (always) and an existing file (unless ``overwrite``)."""
    path = Path(path)
    check_not_input(path, protect)
    if path.exists() and not overwrite:
        raise FileExistsError(exists_message(path))


def exists_message(path) -> str:
    return f"{path}: output exists (overwrite=True, or --overwrite on the command line, replaces it)"


_BLOCK = 2880


def _set_extend(hdr: fits.Header) -> None:
    """EXTEND = T after the NAXISn cards: the file may get extensions later."""
    n = hdr.get("NAXIS", 0)
    hdr.set("EXTEND", True, "FITS dataset may contain extensions", after=f"NAXIS{n}" if n else "NAXIS")


class ImageSlot:
    """The data area of one image HDU of a :class:`FitsStreamWriter`, filled
    block by block (``write``) in any order; unwritten pixels read as 0."""

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self._fd, self.offset, self.shape = fd, offset, tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder(">")

    def write(self, lead: tuple[int, ...], y0: int, x0: int, block: np.ndarray) -> None:
        """Write the 2-D ``block`` at rows ``y0:``, columns ``x0:`` of the plane
        ``lead`` (indices along the leading axes, e.g. ``(class,)``)."""
        h, w = self.shape[-2:]
        block = np.asarray(block)
        bh, bw = block.shape
        if y0 < 0 or x0 < 0 or y0 + bh > h or x0 + bw > w:
            raise ValueError(f"block {block.shape} at ({y0}, {x0}) outside plane ({h}, {w})")
        plane = int(np.ravel_multi_index(lead, self.shape[:-2])) if lead else 0
        data = np.ascontiguousarray(block, dtype=self.dtype)
        size = self.dtype.itemsize
        if bw == w:  # whole rows: one contiguous run
            os.pwrite(self._fd, data.tobytes(), self.offset + ((plane * h + y0) * w) * size)
            return
        for r in range(bh):
            os.pwrite(self._fd, data[r].tobytes(), self.offset + ((plane * h + y0 + r) * w + x0) * size)


class FitsStreamWriter:
    """Writes a FITS file HDU by HDU, with image data filled in blocks, so an
    output never has to be held in memory whole.

    The file is built under a temporary name in the destination directory and
    renamed into place when the ``with`` block ends without an exception
    (deleted otherwise): readers never see a partial file. Refuses to replace
    an input (``protect``) and, unless ``overwrite``, an existing file.

    Examples
    --------
    >>> with FitsStreamWriter("out.fits") as w:               # doctest: +SKIP
    ...     w.add_hdu(fits.PrimaryHDU(header=hdr))
    ...     slot = w.add_image(hdr, (14, 4096, 4096), np.uint8)
    ...     slot.write((3,), 0, 0, tile)
    """

    def __init__(self, path, overwrite: bool = False, protect=()):
        self.path = Path(path)
        check_output(self.path, overwrite, protect)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = temp_output(self.path)
        self._fd = fd
        self._end = 0
        self.n_hdus = 0

    def _append(self, raw: bytes) -> int:
        start = self._end
        os.pwrite(self._fd, raw, start)
        self._end += len(raw)
        return start

    def add_hdu(self, hdu) -> None:
        """Append a complete HDU (astropy serialises it; small HDUs and tables)."""
        buf = io.BytesIO()
        if self.n_hdus == 0:
            if not isinstance(hdu, fits.PrimaryHDU):
                hdu = fits.PrimaryHDU(data=getattr(hdu, "data", None), header=hdu.header)
            _set_extend(hdu.header)
            fits.HDUList([hdu]).writeto(buf, output_verify="silentfix")
            raw = buf.getvalue()
        else:
            if isinstance(hdu, fits.PrimaryHDU):
                hdu = fits.ImageHDU(data=hdu.data, header=hdu.header)
            dummy = fits.PrimaryHDU()
            fits.HDUList([dummy, hdu]).writeto(buf, output_verify="silentfix")
            raw = buf.getvalue()[len(dummy.header.tostring()):]
        self._append(raw)
        self.n_hdus += 1

    def add_image(self, header: fits.Header, shape, dtype) -> ImageSlot:
        """Append an image HDU of ``shape`` and ``dtype`` (uint8, int16/32/64,
        float32/64) whose data the caller writes through the returned slot.
        ``header`` supplies every non-structural keyword."""
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        cls = fits.PrimaryHDU if self.n_hdus == 0 else fits.ImageHDU
        hdu = cls(data=np.zeros((1,) * len(shape), dtype=dtype), header=header)
        hdr = hdu.header
        for k, n in enumerate(reversed(shape)):
            hdr[f"NAXIS{k + 1}"] = n
        if self.n_hdus == 0:
            _set_extend(hdr)
        raw = hdr.tostring(padding=True).encode("ascii")
        self._append(raw)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        slot = ImageSlot(self._fd, self._end, shape, dtype)
        self._end += -(-nbytes // _BLOCK) * _BLOCK
        os.ftruncate(self._fd, self._end)  # zero-filled (sparse) data area and padding
        self.n_hdus += 1
        return slot

    def close(self, commit: bool = True) -> Path:
        if self._fd is None:
            return self.path
        try:
            if commit:
                if self.n_hdus == 0:
                    raise ValueError(f"{self.path}: no HDU written")
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        try:
            if commit:
                _publish(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(commit=exc_type is None)
        return False


def read_plane(hdu, lead: tuple[int, ...] = (), rows: int = 1024) -> np.ndarray:
    """One 2-D plane of an image HDU as native float32 (BSCALE/BZERO applied),
    read band by band through ``hdu.section`` so the whole HDU is never in memory."""
    shape = hdu.shape
    h, w = shape[-2:]
    out = np.empty((h, w), dtype=np.float32)
    for y0 in range(0, h, rows):
        out[y0 : y0 + rows] = hdu.section[tuple(lead) + (slice(y0, min(y0 + rows, h)), slice(None))]
    return out
