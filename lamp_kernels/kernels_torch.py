"""Pure-torch twins of the kernels (csrc/cpu). They run on any device and are the default implementations of
the ops in ops.py; compiled kernels override them per device and must return identical tensors. Key, bin and
limb conventions are those of csrc/cpu/float_keys.h.

Shapes: w is any shape, mask is bool of w's shape or None; B = bins (2^15 for bf16/fp16, else 2^16),
L = limbs (0 for bf16/fp16, 2 for fp32, 4 for fp64), normalised. The batched functions (plural names) take lists of
same-dtype layers on one device, as the ops do.
"""

from __future__ import annotations

import torch

# dtype -> (code, bins, key bits shifted off to form the bin, limbs, int view dtype, |x| bit mask)
DTYPE_INFO = {
    torch.bfloat16: (0, 1 << 15, 0, 0, torch.int16, 0x7FFF),
    torch.float16: (1, 1 << 15, 0, 0, torch.int16, 0x7FFF),
    torch.float32: (2, 1 << 16, 15, 2, torch.int32, 0x7FFF_FFFF),
    torch.float64: (3, 1 << 16, 47, 4, torch.int64, 0x7FFF_FFFF_FFFF_FFFF),
}
# First bin holding Inf/NaN keys.
NONFINITE_BIN = {torch.bfloat16: 0x7F80, torch.float16: 0x7C00, torch.float32: 0xFF00, torch.float64: 0xFFE0}
LIMB_BITS = 27
LIMB_MASK = (1 << LIMB_BITS) - 1


def bin_of(value: float, dtype: torch.dtype) -> int:
    """The bin of |value|'s key in dtype (value exactly representable there)."""
    key = int(torch.tensor([value], dtype=dtype).view(DTYPE_INFO[dtype][4])[0]) & DTYPE_INFO[dtype][5]
    return key >> DTYPE_INFO[dtype][2]


def magnitude_keys(w: torch.Tensor) -> torch.Tensor:
    """int64 bit patterns of |w|, flattened: monotone in |w| for finite values."""
    _, _, _, _, view, mask = DTYPE_INFO[w.dtype]
    return w.detach().contiguous().reshape(-1).view(view).to(torch.int64) & mask


def _alive_keys(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    keys = magnitude_keys(w)
    return keys if mask is None else keys[mask.reshape(-1)]


def square_limbs(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[n, L] int64: 27-bit limbs of M^2, M the integer significand (fp32/fp64 keys)."""
    if dtype == torch.float32:
        exp, frac = keys >> 23, keys & 0x7FFFFF
        m = torch.where(exp > 0, frac | 0x800000, frac)
        sq = m * m  # < 2^48
        return torch.stack([sq & LIMB_MASK, sq >> LIMB_BITS], dim=1)
    exp, frac = keys >> 52, keys & ((1 << 52) - 1)
    m = torch.where(exp > 0, frac | (1 << 52), frac)
    a, b = m >> LIMB_BITS, m & LIMB_MASK  # M = a 2^27 + b, so M^2 = a^2 2^54 + 2ab 2^27 + b^2
    bb, ab2, aa = b * b, 2 * a * b, a * a
    return torch.stack([bb & LIMB_MASK, (bb >> LIMB_BITS) + (ab2 & LIMB_MASK),
                        (ab2 >> LIMB_BITS) + (aa & LIMB_MASK), aa >> LIMB_BITS], dim=1)


def normalize_limbs(sums: torch.Tensor) -> torch.Tensor:
    """[..., L] limb sums in canonical form (float_keys.h normalize_limbs): every limb but the last below
    2^27, the value unchanged. Every summary kernel returns this form, however it split its sums."""
    if sums.shape[-1] < 2:
        return sums
    limbs = list(sums.unbind(-1))
    for i in range(len(limbs) - 1):
        limbs[i + 1] = limbs[i + 1] + (limbs[i] >> LIMB_BITS)
        limbs[i] = limbs[i] & LIMB_MASK
    return torch.stack(limbs, dim=-1)


def bin_summary_ref(w: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int64[B], sums int64[B, L]): alive elements per bin and the limbs of their sum of M^2."""
    _, bins, shift, limbs, _, _ = DTYPE_INFO[w.dtype]
    keys = _alive_keys(w, mask)
    idx = keys >> shift
    counts = torch.bincount(idx, minlength=bins)
    sums = torch.zeros(bins, limbs, dtype=torch.int64, device=w.device)
    if limbs:
        sums.index_add_(0, idx, square_limbs(keys, w.dtype))
    return counts, normalize_limbs(sums)


def gather_bin_keys_ref(w: torch.Tensor, mask: torch.Tensor | None, bin_lo: int, bin_hi: int) -> torch.Tensor:
    """Sorted int64 keys of the alive elements whose bin lies in [bin_lo, bin_hi]."""
    shift = DTYPE_INFO[w.dtype][2]
    keys = _alive_keys(w, mask)
    b = keys >> shift
    return torch.sort(keys[(b >= bin_lo) & (b <= bin_hi)]).values


def apply_cut_ref(w: torch.Tensor, mask: torch.Tensor | None, cut_key: int, ties: int) -> torch.Tensor:
    """Keep mask: alive and (key > cut_key, or key == cut_key with at least `ties` equal keys before it)."""
    keys = magnitude_keys(w)
    alive = torch.ones_like(keys, dtype=torch.bool) if mask is None else mask.reshape(-1)
    equal = alive & (keys == cut_key)
    rank = torch.cumsum(equal, 0) - 1  # among equal keys, in flat order
    keep = alive & ((keys > cut_key) | (equal & (rank >= ties)))
    return keep.reshape(w.shape)


def zero_cut_ref(w: torch.Tensor, mask: torch.Tensor | None, cut_key: int, ties: int) -> None:
    """In place: every weight that apply_cut would not keep (pruned or masked out) becomes 0."""
    w.masked_fill_(~apply_cut_ref(w, mask, cut_key, ties), 0)


def cut_and_gather_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None], bin_lo: list[int],
                       bin_hi: list[int], sizes: list[int]):
    """(masks keeping the alive elements above bins [bin_lo, bin_hi], those bins' alive keys sorted per layer,
    the same keys in flat order, their flat indices), layer after layer."""
    out, flat, positions = [], [], []
    for w, m, lo, hi in zip(weights, masks, bin_lo, bin_hi):
        if not 0 <= lo <= hi <= 0xFFFF:
            raise RuntimeError("cut_and_gather: each layer needs candidate bins 0 <= bin_lo <= bin_hi < 2^16")
        shift = DTYPE_INFO[w.dtype][2]
        out.append(apply_cut_ref(w, m, min((hi + 1) << shift, 2**63 - 1), 0))  # keeps key >= the cut
        keys = magnitude_keys(w)
        inside = ((keys >> shift) >= lo) & ((keys >> shift) <= hi)
        at = torch.nonzero(inside if m is None else inside & m.reshape(-1)).reshape(-1)
        flat.append(keys[at])
        positions.append(at)
    if sum(k.numel() for k in flat) != sum(sizes):
        raise RuntimeError("cut_and_gather: the sizes do not match the layers' keys")
    ordered = torch.cat([torch.sort(k).values for k in flat])
    return out, ordered, torch.cat(flat), torch.cat(positions)


def fix_cuts_ref_(masks: list[torch.Tensor], keys: torch.Tensor, positions: torch.Tensor, sizes: list[int],
                  cut_keys: list[int], ties: list[int]) -> None:
    """In place: each collected element's entry = key > cut, or key == cut after `ties` equal keys (flat order)."""
    for m, k, at, cut, t in zip(masks, keys.split(sizes), positions.split(sizes), cut_keys, ties):
        equal = k == cut
        m.view(-1)[at] = (k > cut) | (equal & (torch.cumsum(equal, 0) - 1 >= t))


def sparse_summary(counts: torch.Tensor, sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A dense summary's nonempty bins: (bins int64[E] ascending, counts int64[E], sums int64[E, L])."""
    bins = torch.nonzero(counts).reshape(-1)
    return bins, counts[bins], sums[bins]


def compact_summaries(counts: torch.Tensor, sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Dense per-layer histograms (counts [L, B] of any integer type, sums [L, B, limbs]) as the sparse
    summaries of bin_summaries (offsets int64[L + 1], bins, counts int64, sums), on the histograms' device."""
    nz = torch.nonzero(counts)  # (layer, bin), row-major: per layer, bins ascending
    per_layer = torch.bincount(nz[:, 0], minlength=counts.shape[0])
    offsets = torch.cat([per_layer.new_zeros(1), torch.cumsum(per_layer, 0)])
    return offsets, nz[:, 1], counts[nz[:, 0], nz[:, 1]].to(torch.int64), normalize_limbs(sums[nz[:, 0], nz[:, 1]])


def concat_summaries(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Summaries of consecutive chunks of layers as one."""
    offsets, shift = [parts[0][0][:1]], 0
    for p in parts:
        offsets.append(p[0][1:] + shift)
        shift += p[1].numel()
    return (torch.cat(offsets), *(torch.cat([p[k] for p in parts]) for k in (1, 2, 3)))


def bin_summaries_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None]):
    """(offsets int64[n + 1], bins int64[E], counts int64[E], sums int64[E, L]): the sparse summaries of the
    layers, concatenated; layer i owns entries offsets[i]:offsets[i + 1]."""
    parts = [sparse_summary(*bin_summary_ref(w, m)) for w, m in zip(weights, masks)]
    device = weights[0].device
    sizes = torch.tensor([0] + [p[0].numel() for p in parts], dtype=torch.int64)
    return (torch.cumsum(sizes, 0).to(device), torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]))


def gather_bin_keys_many_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None], bin_lo: list[int],
                             bin_hi: list[int], sizes: list[int]) -> torch.Tensor:
    """Layer i's sorted alive keys in bins [bin_lo[i], bin_hi[i]] (sizes[i] of them), concatenated."""
    out = torch.cat([gather_bin_keys_ref(w, m, lo, hi) for w, m, lo, hi in zip(weights, masks, bin_lo, bin_hi)])
    if out.numel() != sum(sizes):
        raise RuntimeError("gather_bin_keys: the sizes do not match the layers' keys")
    return out


def apply_cuts_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cut_keys: list[int],
                   ties: list[int]) -> list[torch.Tensor]:
    return [apply_cut_ref(w, m, k, t) for w, m, k, t in zip(weights, masks, cut_keys, ties)]


def zero_cuts_ref_(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cut_keys: list[int],
                   ties: list[int]) -> None:
    for w, m, k, t in zip(weights, masks, cut_keys, ties):
        zero_cut_ref(w, m, k, t)
