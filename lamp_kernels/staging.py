"""Output that appears whole or not at all: a private temporary directory beside the destination.

Each run writes into its own directory ``.<DST name>.lamp-prune-XXXXXXXX`` (``tempfile.mkdtemp``, mode 0700)
next to DST and holds an exclusive ``flock`` on it for as long as it lives. Concurrent runs therefore never
share a path, and a later run tells a live run's directory (locked) from one left by a killed run (unlocked):
the latter is reported, never deleted by someone else's run.

The commit happens under an ``flock`` of DST's parent directory:

* DST must still be what the run saw when it started (absent, or the same inode with the same ctime): a DST
  created, replaced or modified meanwhile (by another run, say) is refused, never overwritten.
* DST absent: ``rename(tmp/output, DST)`` (``renameat2(RENAME_NOREPLACE)`` where the kernel has it).
* DST present (``--force``): ``renameat2(RENAME_EXCHANGE)`` swaps the two in one step, so DST is never missing.
  Where the file system cannot exchange, two renames (``DST -> tmp/replaced``, ``tmp/output -> DST``) run with
  SIGINT/SIGTERM/SIGHUP blocked; if the process dies between them anyway (SIGKILL, power loss), the next run
  finds DST missing and ``replaced`` in a dead run's directory, and puts it back (and says so).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .safetensors_io import CheckpointError

MARK = ".lamp-prune-"
OUTPUT = "output"  # the new output inside a run's directory
REPLACED = "replaced"  # where the two-rename fallback parks the old DST

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def prefix(dst: Path) -> str:
    """Name prefix of every temporary directory for `dst` (they live in dst's parent)."""
    return f".{dst.name}{MARK}"


def identity(path: Path) -> tuple[int, int, int] | None:
    """What a path is now (device, inode, ctime), not following a final link; None when it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """flock(LOCK_EX) on a directory, waiting for it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM/SIGHUP (delivered when the block ends) around steps that must not be split."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@functools.cache
def _libc_renameat2():
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(2); False when this system or file system does not offer it (the caller falls back)."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _live(directory: Path) -> bool | None:
    """True if a live run holds the directory's lock, False if none does, None if it cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # another user's directory, say
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def _runs(dst: Path) -> Iterator[tuple[Path, bool | None]]:
    """(temporary directory, _live of it) for every run's directory for dst."""
    for p in sorted(dst.parent.iterdir()):
        if p.name.startswith(prefix(dst)) and p.is_dir() and not p.is_symlink():
            yield p, _live(p)


def recover(dst: Path, notice: Callable[[str], None]) -> None:
    """Put back a DST left missing by a run killed inside its two-rename replace; report the directories of
    dead runs (kept for the user to inspect and delete) and of live ones."""
    with _locked(dst.parent):
        for p, live in _runs(dst):
            if live is None:
                notice(f"{p} looks like another lamp-prune run's temporary directory but cannot be opened")
                continue
            if live:
                notice(f"another lamp-prune run is writing {dst} (its temporary directory is {p}); "
                       "whichever finishes second will stop without replacing the other's output")
                continue
            if identity(dst) is None and os.path.lexists(p / REPLACED):
                os.rename(p / REPLACED, dst)
                notice(f"put back {dst} from {p / REPLACED}: a run was interrupted while replacing it")
            notice(f"{p} was left by an interrupted lamp-prune run; it was not removed (delete it when you "
                   "no longer need it)")


@dataclass
class Staging:
    """A run's private directory; the output is built at ``output`` and moved to ``dst`` by commit()."""

    dst: Path
    root: Path
    seen: tuple[int, int, int] | None  # identity(dst) when the run checked its arguments
    lock_fd: int | None = None  # held by the process that created root (rank 0)

    @property
    def output(self) -> Path:
        return self.root / OUTPUT

    @classmethod
    def create(cls, dst: Path, seen: tuple[int, int, int] | None) -> Staging:
        root = Path(tempfile.mkdtemp(dir=dst.parent, prefix=prefix(dst)))
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(dst, root, seen, fd)

    def commit(self) -> None:
        """Move the finished output to dst (see the module's docstring); refuse if dst changed meanwhile."""
        with signals_blocked(), _locked(self.dst.parent):
            now = identity(self.dst)
            if now != self.seen:
                what = "was created" if self.seen is None else "was removed" if now is None else "changed"
                raise CheckpointError(f"{self.dst} {what} while this run was writing (another run?); "
                                      "it was left as it is and this run's output discarded")
            if self.seen is None:
                if not _renameat2(self.output, self.dst, _RENAME_NOREPLACE):
                    os.rename(self.output, self.dst)  # under the parent's lock, just after the check
            elif not _renameat2(self.output, self.dst, _RENAME_EXCHANGE):
                os.rename(self.dst, self.root / REPLACED)
                os.rename(self.output, self.dst)

    def discard(self) -> None:
        """Remove the directory (the old DST after a replace, or a partial output after a failure), read-only
        subdirectories (copied from a read-only source) included."""

        def writable_then_retry(fn, path, exc_info):
            try:
                os.chmod(os.path.dirname(path), stat.S_IRWXU)
                fn(path)
            except OSError:  # left behind; the next run reports it
                pass

        shutil.rmtree(self.root, onerror=writable_then_retry)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
