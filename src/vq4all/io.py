"""File utilities: atomic writes, early writability checks, atomic figures.

Every file vq4all writes (artifacts, ROM files, checkpoints, tables, plots) goes through
`atomic_write_bytes`: a reader, or a crash, sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

from .errors import VQ4AllError


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one, never
    a mix: temp file in the same folder, flush + fsync, rename over, fsync the folder.

    The temporary file is named `.<name>.<random>.tmp`: a killed writer may leave one behind,
    but it never carries the target's name, so no reader mistakes it for the target. The new
    file gets the replaced file's mode, or 0666 minus the umask; a symlink `path` is written
    through (the link is kept and its target replaced)."""
    path = Path(path)
    if path.is_symlink():
        # write through the link (what `cp` and editors do): the link stays, its target changes
        path = Path(os.path.realpath(path))
    check_writable(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise VQ4AllError(f"{path}: cannot write in {folder} ({e.strerror}): choose a writable path") from None
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would: the old file's mode
        # when it is replaced, else 0666 minus the umask
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename itself is still atomic


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (reading it means setting it; the lock keeps threads from racing)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def save_figure(fig, path, **kwargs) -> None:
    """matplotlib's fig.savefig(path, **kwargs), atomically: render into memory, then
    atomic_write_bytes (a plot interrupted mid-write never replaces a good one)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def check_writable(path) -> None:
    """Fail early, before long work, if `path` cannot be written (missing or read-only folder)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise VQ4AllError(f"{path}: folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK):
        raise VQ4AllError(f"{path}: folder {folder} is not writable: choose another --out")
    if path.is_dir():
        raise VQ4AllError(f"{path}: is a folder: give a file name")


def check_not_input(out, *inputs, flag: str = "--out") -> None:
    """Refuse an output path that is one of the inputs (same file, by path or by inode): a
    write must never destroy what it was computed from."""
    out = Path(out)
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        same = out.resolve() == given.resolve()
        if not same and out.exists() and given.exists():
            same = os.path.samefile(out, given)
        if same:
            raise VQ4AllError(f"{flag} {out} is also an input file: choose another output path")
