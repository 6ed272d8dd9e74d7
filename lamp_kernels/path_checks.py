"""Where `lamp-prune` may write: never over its source, never where a later step would destroy it.

Paths are compared after resolving links, and also by (device, inode) along their parent chain, so a second
name for the same directory (a symbolic link, a bind mount) is recognised too. Every refusal is a one-line
CheckpointError, raised before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .safetensors_io import CheckpointError
from .staging import MARK


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _chain(path: Path) -> list[Path]:
    return [path, *path.parents]


def is_within(path: Path, root: Path) -> bool:
    """path is root or inside it (absolute paths), by name or by inode."""
    if path == root or root in path.parents:
        return True
    root_id = _inode(root)
    return root_id is not None and any(_inode(p) == root_id for p in _chain(path))


def location(path: Path) -> Path:
    """The absolute path of the directory entry itself: its parent resolved, a final link not followed."""
    absolute = Path(os.path.abspath(path))
    return absolute if absolute.parent == absolute else absolute.parent.resolve() / absolute.name


def check_output(src: Path, dst: Path) -> Path:
    """DST must not be SRC, contain it, or be inside it (whether DST is replaced or written into);
    returns DST's location."""
    parent = Path(os.path.abspath(dst)).parent
    if not parent.is_dir():
        raise CheckpointError(f"{dst}: its directory {dst.parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{dst}: cannot write in its directory {dst.parent}")
    target, source = location(dst), src.resolve()
    for where in (target, target.resolve()):
        if is_within(where, source) or is_within(source, where):
            raise CheckpointError(f"{dst}: the output must not be the source, contain it or be inside it "
                                  f"(source: {src})")
    return target


def check_side_output(path: Path | None, flag: str, src: Path, target: Path | None) -> None:
    """A --report/--plot file: in an existing writable directory, not a directory itself, not the source or
    inside it, not inside the output (which is replaced) nor inside a run's temporary directory."""
    if path is None:
        return
    if not Path(os.path.abspath(path)).parent.is_dir():
        raise CheckpointError(f"{flag} {path}: directory {path.parent} does not exist")
    loc = location(path)
    if loc.is_dir():
        raise CheckpointError(f"{flag} {path} is a directory")
    if not os.access(loc.parent, os.W_OK):
        raise CheckpointError(f"{flag} {path}: cannot write in {path.parent}")
    for where in (loc, loc.resolve()):
        if is_within(where, src.resolve()):
            raise CheckpointError(f"{flag} {path} is the source or inside it (source: {src})")
        if target is not None and (is_within(where, target) or is_within(where, target.resolve())):
            raise CheckpointError(f"{flag} {path} is inside the output, which this run replaces")
        if any(p.name.startswith(".") and MARK in p.name for p in where.parents):
            raise CheckpointError(f"{flag} {path} is inside a lamp-prune temporary directory")
