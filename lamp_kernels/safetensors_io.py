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
import mmap
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
COPY_CHUNK = 64 << 20
MAX_HEADER = 100 << 20


class CheckpointError(Exception):
    """A problem with a checkpoint or the command's arguments; the message is one line."""


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
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class Shard:
    path: Path
    header: bytes  # the 8 length bytes and the JSON, exactly as in the file
    entries: list[TensorEntry]  # sorted by offset
    size: int


def read_shard(path: Path) -> Shard:
    """Parse and check a shard's header (offsets inside the file, sizes matching dtypes and shapes)."""
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
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    start = 8 + n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: corrupt header entry") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name}: unknown dtype {dtype}")
        entry = TensorEntry(name, path, dtype, shape, start + int(b), start + int(e))
        itemsize = DTYPES[dtype].itemsize
        if not start <= entry.begin <= entry.end <= size or entry.nbytes != entry.numel * itemsize:
            raise CheckpointError(f"{path}: tensor {name}: data offsets {b}..{e} do not match its shape "
                                  f"{list(shape)} and dtype {dtype} within the file (truncated or corrupt?)")
        entries.append(entry)
    entries.sort(key=lambda x: x.begin)
    return Shard(path, raw + text, entries, size)


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
        index_path = src / INDEX_NAME
        if not index_path.exists():
            if (src / SINGLE_NAME).is_file():
                return cls(src, [read_shard(src / SINGLE_NAME)], None)
            raise CheckpointError(f"{src}: neither {INDEX_NAME} nor {SINGLE_NAME} found")
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            files = list(dict.fromkeys(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index_path}: corrupt index ({exc})") from None
        shards = [read_shard(src / f) for f in files]
        found = {e.name: e.file.name for s in shards for e in s.entries}
        for name, f in weight_map.items():
            if found.get(name) != f:
                raise CheckpointError(f"{src / f}: tensor {name} is listed in the index but not in this shard")
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
    """Write `shard` to `out` with the same header and layout. prune(entry, source view) returns the pruned
    tensor's data (contiguous, on the CPU; it may be a reused buffer) or None to copy the bytes unchanged."""
    with open(shard.path, "rb") as src, open(out, "w+b") as dst:
        dst.truncate(shard.size)
        dst.write(shard.header)
        pos = len(shard.header)
        for entry in shard.entries:
            _copy_range(src, dst, pos, entry.begin, progress)  # padding between tensors, if any

            def write_pruned(source: torch.Tensor, entry=entry) -> bool:
                data = prune(entry, source)
                if data is None:
                    return False
                if os.pwrite(dst.fileno(), memoryview(data.reshape(-1).view(torch.uint8).numpy()),
                             entry.begin) != entry.nbytes:
                    raise CheckpointError(f"{out}: short write of tensor {entry.name}")
                return True

            if entry.nbytes and with_mapped(entry, write_pruned, src):
                progress(entry.nbytes)
            else:
                _copy_range(src, dst, entry.begin, entry.end, progress)
            pos = entry.end
        _copy_range(src, dst, pos, shard.size, progress)
