"""Streaming access to safetensors checkpoints: one tensor in memory at a time, in and out.

A safetensors file is an 8-byte little-endian header length, a JSON header (dtype, shape and data offsets of
every tensor) and the data. Pruning changes values, never sizes, so an output shard reuses its source's
header bytes and layout: tensors are read through short-lived memory maps (no copy, resident memory of one
tensor), pruned tensors are written from a reused buffer, and everything else is copied byte for byte inside
the kernel (copy_file_range). Every problem is a CheckpointError whose one-line message names the file (and tensor).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# Bits per element of every dtype the safetensors format defines (safetensors 0.8). A tensor of any of them is
# copied; only the floating ones in FLOAT_DTYPES can be pruned.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
COPY_CHUNK = 64 << 20
MAX_HEADER = 100_000_000  # the safetensors library's limit on a header; ours on an index file too
U64_LIMIT = 2**64  # header integers are unsigned 64-bit in the format
TORCH_SIZE_LIMIT = 2**63  # torch sizes are int64: the product of a shape's non-zero dims must stay below


class CheckpointError(ValueError):
    """A problem with a checkpoint or the command's arguments; the message is one line. A ValueError, so that
    torch.distributed runs agree on it (distributed.agree_on_errors)."""


@dataclass
class TensorEntry:
    name: str
    file: Path
    dtype: str  # safetensors dtype code
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def torch_dtype(self) -> torch.dtype:
        return FLOAT_DTYPES[self.dtype]


@dataclass
class Shard:
    path: Path
    header: bytes  # the 8 length bytes and the JSON, exactly as in the file
    entries: list[TensorEntry]  # sorted by offset; together they cover the data section exactly
    size: int


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unique_keys(pairs: list) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate name {_short(duplicate)}")
    return found


def _not_a_number(token: str) -> None:
    raise ValueError(f"{token} is not a JSON number")


def parse_json(path: Path, data: bytes, what: str) -> object:
    """Strict JSON: UTF-8, no duplicate names in an object, no NaN/Infinity; every failure (deep nesting
    included) is a one-line CheckpointError naming the file. Memory stays proportional to len(data)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_not_a_number)
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt {what} (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: corrupt {what} ({exc})") from None


def _is_u64(x: object) -> bool:
    return type(x) is int and 0 <= x < U64_LIMIT  # not bool, not float


def _numel(shape: list[int]) -> int | None:
    """Elements of a shape; None when its non-zero dims multiply to 2^63 or more (stopping there, so that a
    long shape costs linear time, not a product of ever larger integers)."""
    n, empty = 1, False
    for d in shape:
        if d == 0:
            empty = True
            continue
        n *= d
        if n >= TORCH_SIZE_LIMIT:
            return None
    return 0 if empty else n


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    """One header entry, checked as the safetensors library checks it (types, sizes) and against the file."""

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {_short(name)}: {problem}")

    if not isinstance(info, dict):
        raise bad("corrupt header entry (not an object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise bad(f"shape must be a list of non-negative integers, got {_short(shape)}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(x) for x in offsets):
        raise bad(f"data_offsets must be two non-negative integers, got {_short(offsets)}")
    numel = _numel(shape)
    if numel is None:
        raise bad(f"shape {_short(shape)} is too large")
    b, e = offsets
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8 or e < b or e - b != bits // 8:
        raise bad(f"data offsets {b}..{e} do not match its shape {_short(shape)} and dtype {dtype}")
    if data_start + e > size:
        raise bad(f"data offsets {b}..{e} reach past the end of the file ({size} bytes; truncated?)")
    return TensorEntry(name, path, dtype, tuple(shape), data_start + b, data_start + e)


def read_shard(path: Path) -> Shard:
    """Parse and validate a shard's header at least as strictly as the safetensors library: a UTF-8 JSON
    object of at most 100 MB, string metadata, known dtypes, integer shapes and offsets, sizes that match,
    no duplicate names, and tensors that tile the data section exactly (no overlap, no gap, nothing after).
    Parsing allocates memory proportional to the header, which is part of the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: shard is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: corrupt safetensors header (length {n} does not fit the file)")
        text = f.read(n)
    if len(text) != n:
        raise CheckpointError(f"{path}: the file changed while it was read")
    header = parse_json(path, text, "safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map names to strings)")
    start = 8 + n
    entries = sorted((_entry(path, name, info, start, size) for name, info in header.items()),
                     key=lambda x: (x.begin, x.end))
    pos = start
    for e in entries:
        if e.begin != pos:
            problem = "overlap another tensor's" if e.begin < pos else "leave a gap after the previous tensor's"
            raise CheckpointError(f"{path}: tensor {_short(e.name)}: data offsets {e.begin - start}..{e.end - start} "
                                  f"{problem} data")
        pos = e.end
    if pos != size:
        raise CheckpointError(f"{path}: {size - pos} bytes after the last tensor's data (corrupt?)")
    return Shard(path, raw + text, entries, size)


def _inside(root: Path, path: Path) -> None:
    """Refuse a path (a shard or the index, maybe through a symbolic link) that leads out of the directory."""
    if root.resolve() not in path.resolve().parents:
        raise CheckpointError(f"{path}: leads out of the checkpoint directory (a symbolic link?); lamp-prune "
                              "never follows a link out of SRC")


def _shard_file(index_path: Path, name: str, value: object) -> str:
    """The weight_map's file for a tensor, normalised ('./a' -> 'a'); it must be a file name in the directory."""
    if not isinstance(value, str):
        raise CheckpointError(f"{index_path}: tensor {_short(name)}: weight_map gives {_short(value)}, "
                              "not a file name")
    parts = PurePosixPath(value).parts
    if len(parts) != 1 or parts[0] in ("..", "/"):
        raise CheckpointError(f"{index_path}: tensor {_short(name)}: weight_map file {_short(value)} is not a "
                              "file name in the checkpoint directory")
    return parts[0]


def read_index(src: Path) -> tuple[dict, dict[str, str]]:
    """(the parsed index, tensor name -> shard file name), validated."""
    path = src / INDEX_NAME
    _inside(src, path)
    if path.stat().st_size > MAX_HEADER:
        raise CheckpointError(f"{path}: corrupt index (larger than {MAX_HEADER} bytes)")
    index = parse_json(path, path.read_bytes(), "index")
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CheckpointError(f"{path}: corrupt index (no weight_map object)")
    if not isinstance(index.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: corrupt index (metadata must be an object)")
    return index, {name: _shard_file(path, name, f) for name, f in index["weight_map"].items()}


@dataclass
class Checkpoint:
    """A .safetensors file, or a directory of shards with model.safetensors.index.json (or one
    model.safetensors)."""

    source: Path
    shards: list[Shard]
    index: dict | None  # the parsed index file, if any

    @property
    def is_dir(self) -> bool:
        return self.source.is_dir()

    def entries(self) -> Iterator[TensorEntry]:
        for shard in self.shards:
            yield from shard.entries

    @classmethod
    def open(cls, src: Path) -> Checkpoint:
        src = Path(src)
        if src.is_file():
            return cls(src, [read_shard(src)], None)
        if not src.is_dir():
            raise CheckpointError(f"{src}: no such file or directory")
        if not (src / INDEX_NAME).exists():
            if (src / SINGLE_NAME).is_file():
                _inside(src, src / SINGLE_NAME)
                return cls(src, [read_shard(src / SINGLE_NAME)], None)
            raise CheckpointError(f"{src}: neither {INDEX_NAME} nor {SINGLE_NAME} found")
        index, weight_map = read_index(src)
        shards = []
        for f in dict.fromkeys(weight_map.values()):
            _inside(src, src / f)
            shards.append(read_shard(src / f))
        found: dict[str, Path] = {}
        for e in (e for s in shards for e in s.entries):
            if e.name in found:
                raise CheckpointError(f"{e.file}: tensor {_short(e.name)} is also in {found[e.name].name}")
            found[e.name] = e.file
        for name, f in weight_map.items():
            if name not in found or found[name].name != f:
                raise CheckpointError(f"{src / f}: tensor {_short(name)} is listed in the index but not in "
                                      "this shard")
        return cls(src, shards, index)


def with_mapped(entry: TensorEntry, fn: Callable[[torch.Tensor], object], fileobj=None):
    """fn(tensor) where the tensor views the file's pages for entry's data (read-only, zero-copy); the map is
    closed when fn returns, so resident memory stays one tensor. fn must return new tensors, not views."""
    if not entry.nbytes:
        return fn(torch.empty(entry.shape, dtype=entry.torch_dtype))
    start = entry.begin - entry.begin % mmap.ALLOCATIONGRANULARITY
    with contextlib.ExitStack() as stack:
        f = fileobj or stack.enter_context(open(entry.file, "rb"))
        try:
            mm = mmap.mmap(f.fileno(), entry.end - start, offset=start, access=mmap.ACCESS_READ)
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"{entry.file}: tensor {entry.name}: cannot map its data ({exc})") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns that a read-only buffer is not writable
                raw = torch.frombuffer(mm, dtype=torch.uint8, offset=entry.begin - start, count=entry.nbytes)
            result = fn(raw.view(entry.torch_dtype).reshape(entry.shape))
            del raw
        finally:
            try:
                mm.close()
            except BufferError:  # a view escaped fn; the garbage collector unmaps it later
                pass
    return result


def _copy_range(src, dst, begin: int, end: int, progress: Callable[[int], None]) -> None:
    """Copy bytes [begin, end) of src to the same offsets of dst, inside the kernel where it can."""
    pos = begin
    while pos < end:
        try:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(COPY_CHUNK, end - pos), pos, pos)
        except OSError:  # not supported between these files: copy through user space
            src.seek(pos)
            dst.seek(pos)
            n = dst.write(src.read(min(COPY_CHUNK, end - pos)))
        if n == 0:
            raise CheckpointError(f"{src.name}: file ends early (truncated?)")
        pos += n
        progress(n)


def write_shard(shard: Shard, out: Path, prune: Callable[[TensorEntry, torch.Tensor], torch.Tensor | None],
                progress: Callable[[int], None] = lambda n: None) -> None:
    """Write `shard` to the new file `out` with the same header, layout and permission bits. prune(entry,
    source view) returns the pruned tensor's data (contiguous, on the CPU; it may be a reused buffer) or None
    to copy the bytes unchanged."""
    with open(shard.path, "rb") as src, open(out, "xb") as dst:
        os.fchmod(dst.fileno(), stat.S_IMODE(os.fstat(src.fileno()).st_mode))
        dst.truncate(shard.size)
        dst.write(shard.header)
        for entry in shard.entries:  # they tile the data section (read_shard checked it)

            def write_pruned(source: torch.Tensor, entry=entry) -> bool:
                data = prune(entry, source)
                if data is None:
                    return False
                if os.pwrite(dst.fileno(), memoryview(data.reshape(-1).view(torch.uint8).numpy()),
                             entry.begin) != entry.nbytes:
                    raise CheckpointError(f"{out}: short write of tensor {entry.name}")
                return True

            if entry.nbytes and entry.dtype in FLOAT_DTYPES and with_mapped(entry, write_pruned, src):
                progress(entry.nbytes)
            else:
                _copy_range(src, dst, entry.begin, entry.end, progress)
