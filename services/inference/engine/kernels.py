"""CPU kernels for decode steps and prompts: block-quantized matrix products, attention over the slot
cache and over a prompt, and the element-wise ops, called through the compiled library (kernel_library.py).

Weights: a weight matrix is packed only when every block of 32 values is *exactly* d*q + m (4-bit q) or
d*q (8-bit q), as the fp32 weights converted from the GGUF checkpoint are; anything else (a merged
LoRA, a model that never was quantized) keeps its fp32 matrix. So packing never changes a weight,
only how many bytes a decode step reads. Attention: each row reads exactly its own cached positions,
so a row's result does not depend on what else is in the batch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from .kernel_library import kernel, loaded

BLOCK = 32
PANEL = 16  # outputs per vector of the matrix kernels


@dataclass
class PackedLinear:
    """A (out, in) weight kept as exact 4-bit or 8-bit blocks, laid out in panels of 16 outputs
    (cpu_kernels.c says how): qs (panels, in/2 or in, 16), d and m (panels, in/32, 16)."""

    bits: int
    out_features: int
    in_features: int
    qs: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor | None
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (rows, in) fp32 contiguous -> (rows, out)."""
        lib = loaded()
        assert lib is not None
        rows = x.shape[0]
        if not x.is_contiguous():
            x = x.contiguous()
        y = torch.empty(rows, self.out_features, dtype=torch.float32)
        threads = torch.get_num_threads()
        if self.bits == 4:
            assert self.m is not None
            lib.q4_matmul(x.data_ptr(), self.in_features, self.qs.data_ptr(), self.d.data_ptr(),
                          self.m.data_ptr(), rows, self.out_features, self.in_features, y.data_ptr(),
                          self.out_features, threads)
        else:
            lib.q8_matmul(x.data_ptr(), self.in_features, self.qs.data_ptr(), self.d.data_ptr(), rows,
                          self.out_features, self.in_features, y.data_ptr(), self.out_features, threads)
        if self.bias is not None:
            y += self.bias
        return y

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """For prompts: x (rows, in) fp32 -> (rows, out), each row's bits independent of the other rows
        (and of how many there are), with the weights' exact values. Not the decode path's arithmetic."""
        lib = loaded()
        assert lib is not None
        if not x.is_contiguous():
            x = x.contiguous()
        y = torch.empty(x.shape[0], self.out_features, dtype=torch.float32)
        kernel_fn = lib.q4_rows if self.bits == 4 else lib.q8_rows
        kernel_fn(x.data_ptr(), self.in_features, self.qs.data_ptr(), self.d.data_ptr(),
                  self.m.data_ptr() if self.m is not None else None, x.shape[0], self.out_features,
                  self.in_features, y.data_ptr(), self.out_features, torch.get_num_threads())
        if self.bias is not None:
            y += self.bias
        return y


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor,
           scale: float) -> torch.Tensor:
    """Decode attention over a SlotCache layer: q (rows, heads, dim) fp32; keys/values (row capacity,
    capacity, kv heads, dim); lengths (rows,) int64 positions each row attends to. -> (rows, heads, dim)."""
    lib = loaded()
    assert lib is not None
    rows, heads, dim = q.shape
    kv_heads, capacity = keys.shape[2], keys.shape[1]
    longest = int(lengths.max())
    q = q.contiguous()
    out = torch.empty_like(q)
    stride = (heads // kv_heads) * longest
    scratch = torch.empty(rows * kv_heads * stride, dtype=torch.float32)
    rc = lib.attend(q.data_ptr(), keys.data_ptr(), values.data_ptr(), lengths.data_ptr(), rows, heads, kv_heads,
                    dim, capacity, scale, out.data_ptr(), scratch.data_ptr(), stride, torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"attention kernel does not support {heads} heads / {kv_heads} KV heads of {dim}")
    return out


def attend_causal(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int, scale: float) -> torch.Tensor:
    """Prompt attention: q (rows, heads, dim) for positions start..start+rows-1; keys/values (positions,
    kv heads, dim) contiguous, holding at least start+rows positions. Each row attends to its own positions
    only, in a fixed order: its bits depend neither on the other rows nor on their number. -> (rows, heads, dim)."""
    lib = loaded()
    assert lib is not None and keys.is_contiguous() and values.is_contiguous()
    rows, heads, dim = q.shape
    kv_heads = keys.shape[1]
    q = q.contiguous()
    out = torch.empty_like(q)
    threads = torch.get_num_threads()
    scratch = torch.empty(threads * (heads // kv_heads) * (start + rows), dtype=torch.float32)
    rc = lib.attend_causal(q.data_ptr(), keys.data_ptr(), values.data_ptr(), rows, start, heads, kv_heads, dim,
                           scale, out.data_ptr(), scratch.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"attention kernel does not support {heads} heads / {kv_heads} KV heads of {dim}")
    return out


class _QMat(ctypes.Structure):
    _fields_ = [("bits", ctypes.c_int64), ("out_features", ctypes.c_int64), ("in_features", ctypes.c_int64),
                ("qs", ctypes.c_void_p), ("d", ctypes.c_void_p), ("m", ctypes.c_void_p), ("bias", ctypes.c_void_p)]


class _QLayer(ctypes.Structure):
    _fields_ = [("norm_in", ctypes.c_void_p), ("norm_post", ctypes.c_void_p), ("qkv", _QMat), ("o", _QMat),
                ("gate_up", _QMat), ("down", _QMat)]


def _qmat(p: PackedLinear) -> _QMat:
    return _QMat(p.bits, p.out_features, p.in_features, p.qs.data_ptr(), p.d.data_ptr(),
                 p.m.data_ptr() if p.m is not None else None, p.bias.data_ptr() if p.bias is not None else None)


MAX_LORA_RANK = 256  # the native step's scratch per LoRA part


@dataclass
class LoraPart:
    """One LoRA delta on a run of a fused matrix's outputs: scale * B (A x), A (rank, in), B (out, rank)."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float
    out_offset: int


class _LoraPart(ctypes.Structure):
    _fields_ = [("rank", ctypes.c_int64), ("in_features", ctypes.c_int64), ("out_features", ctypes.c_int64),
                ("out_offset", ctypes.c_int64), ("A", ctypes.c_void_p), ("Bt", ctypes.c_void_p),
                ("scale", ctypes.c_float)]


class _LoraMat(ctypes.Structure):
    _fields_ = [("nparts", ctypes.c_int64), ("parts", ctypes.c_void_p)]


class _LoraLayer(ctypes.Structure):
    _fields_ = [("qkv", _LoraMat), ("o", _LoraMat), ("gate_up", _LoraMat), ("down", _LoraMat)]


class LoraTable:
    """Every adapter the native step can apply, as one C array: slot s, layer l at s * layers + l. Keeps
    the tensors its pointers point into."""

    MATRICES = ("qkv", "o", "gate_up", "down")

    def __init__(self, adapters: dict[str, list[dict[str, list[LoraPart]]]]) -> None:
        self.slots = {name: slot for slot, name in enumerate(adapters)}
        self._keep: list = []
        layers = []
        for per_layer in adapters.values():
            for matrices in per_layer:
                mats = []
                for name in self.MATRICES:
                    parts = matrices.get(name, [])
                    for p in parts:
                        assert p.A.shape[0] <= MAX_LORA_RANK
                    tensors = [(p.A.detach().float().contiguous(), p.B.detach().float().t().contiguous())
                               for p in parts]
                    array = (_LoraPart * max(len(parts), 1))(*[
                        _LoraPart(a.shape[0], a.shape[1], bt.shape[1], p.out_offset, a.data_ptr(), bt.data_ptr(),
                                  p.scale) for p, (a, bt) in zip(parts, tensors, strict=True)])
                    self._keep += [tensors, array]
                    mats.append(_LoraMat(len(parts), ctypes.cast(array, ctypes.c_void_p)))
                layers.append(_LoraLayer(*mats))
        self.array = (_LoraLayer * max(len(layers), 1))(*layers)
        self.layers_per_slot = len(layers) // max(len(adapters), 1)

    def add_rows(self, adapter: str, layer: int, matrix: str, x: torch.Tensor, y: torch.Tensor) -> None:
        """y (rows, out) += the adapter's delta for one fused matrix of one layer on x (rows, in), each row
        as a decode step computes it (bits independent of the other rows)."""
        lib = loaded()
        assert lib is not None and x.is_contiguous() and y.is_contiguous()
        entry = self.array[self.slots[adapter] * self.layers_per_slot + layer]
        mat = getattr(entry, matrix)
        lib.lora_rows(ctypes.addressof(mat), x.data_ptr(), x.shape[1], x.shape[0], y.data_ptr(), y.shape[1],
                      torch.get_num_threads())


@dataclass
class LayerWeights:
    norm_in: torch.Tensor
    norm_post: torch.Tensor
    qkv: PackedLinear
    o: PackedLinear
    gate_up: PackedLinear
    down: PackedLinear


class NativeLayers:
    """Every decoder layer of a Llama model with packed projections, run by one C call per step."""

    def __init__(self, layers: list[LayerWeights], heads: int, kv_heads: int, head_dim: int, eps: float,
                 scale: float) -> None:
        self.layers = layers  # keeps every pointer below alive
        self.norms = [(lw.norm_in.detach().float().contiguous(), lw.norm_post.detach().float().contiguous())
                      for lw in layers]
        self._table = (_QLayer * len(layers))(*[
            _QLayer(n_in.data_ptr(), n_post.data_ptr(), _qmat(lw.qkv), _qmat(lw.o), _qmat(lw.gate_up),
                    _qmat(lw.down)) for lw, (n_in, n_post) in zip(layers, self.norms, strict=True)])
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.hidden = layers[0].o.out_features
        self.inter = layers[0].down.in_features
        self.eps, self.scale = eps, scale
        self._work = torch.empty(0)
        self._caches: tuple[list[torch.Tensor], list[torch.Tensor], ctypes.Array, ctypes.Array] | None = None

    def _cache_pointers(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> tuple[ctypes.Array, ctypes.Array]:
        cached = self._caches
        if cached is None or cached[0][0] is not keys[0] or cached[1][0] is not values[0]:
            arrays = ((ctypes.c_void_p * len(keys))(*[k.data_ptr() for k in keys]),
                      (ctypes.c_void_p * len(values))(*[v.data_ptr() for v in values]))
            self._caches = cached = (list(keys), list(values), *arrays)
        return cached[2], cached[3]

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor, seen: torch.Tensor,
            max_seen: int, keys: list[torch.Tensor], values: list[torch.Tensor], capacity: int,
            sharing: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
            lora: tuple[LoraTable, torch.Tensor] | None = None) -> None:
        """x (rows, hidden) fp32 contiguous, updated in place; cos/sin (rows, head dim) contiguous; sharing:
        SlotCache.sharing's (task order, leader, shared positions), int64, or None; lora: the adapters'
        table and each row's slot in it (int64, -1 for the base weights), or None."""
        lib = loaded()
        assert lib is not None
        rows = x.shape[0]
        need = lib.decode_work_floats(rows, self.heads, self.kv_heads, self.head_dim, self.hidden, self.inter,
                                      max_seen)
        if self._work.numel() < need:
            self._work = torch.empty(max(need, 2 * self._work.numel()), dtype=torch.float32)
        key_ptrs, value_ptrs = self._cache_pointers(keys, values)
        rc = lib.decode_layers(rows, len(self.layers), self._table, key_ptrs, value_ptrs, capacity, self.heads,
                               self.kv_heads, self.head_dim, self.hidden, self.inter, self.eps, self.scale,
                               x.data_ptr(), cos.data_ptr(), sin.data_ptr(), slots.data_ptr(), seen.data_ptr(),
                               max_seen, *(t.data_ptr() for t in sharing) if sharing else (None, None, None),
                               ctypes.cast(lora[0].array, ctypes.c_void_p) if lora else None,
                               lora[1].data_ptr() if lora else None, self._work.data_ptr(), torch.get_num_threads())
        if rc != 0:
            raise RuntimeError("the native decode step refused the model's attention shape")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of each row of a contiguous fp32 (rows, n) tensor, as the native decode step computes it."""
    lib = loaded()
    assert lib is not None and x.is_contiguous()
    out = torch.empty_like(x)
    lib.rms_norm(x.data_ptr(), weight.data_ptr(), x.shape[0], x.shape[1], eps, out.data_ptr(), torch.get_num_threads())
    return out


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half), in place, on a contiguous fp32 (rows, heads, dim) tensor; cos/sin
    (rows, dim) contiguous, one row per position."""
    lib = loaded()
    assert lib is not None and x.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()
    rows, heads, dim = x.shape
    lib.rope(x.data_ptr(), rows, heads, dim, heads * dim, cos.data_ptr(), sin.data_ptr(), torch.get_num_threads())
    return x


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for contiguous fp32 (rows, n) tensors, as the native decode step computes it."""
    lib = loaded()
    assert lib is not None and gate.is_contiguous() and up.is_contiguous() and gate.shape == up.shape
    out = torch.empty_like(gate)
    lib.silu_mul(gate.data_ptr(), up.data_ptr(), gate.shape[0], gate.shape[1], gate.shape[1], out.data_ptr(),
                 torch.get_num_threads())
    return out


def attention_supported(heads: int, kv_heads: int, dim: int, dtype: torch.dtype, device: torch.device) -> bool:
    return (kernel() is not None and dtype == torch.float32 and device.type == "cpu" and dim % 16 == 0
            and dim <= 256 and heads % kv_heads == 0 and heads // kv_heads <= 16)


def pack(weight: torch.Tensor, bias: torch.Tensor | None = None) -> PackedLinear | None:
    """An exact packed copy of an fp32 CPU weight (4-bit if possible, else 8-bit), or None."""
    lib = kernel()
    if lib is None or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return None
    out_features, in_features = weight.shape
    if in_features % BLOCK:
        return None
    w = weight.detach().contiguous()
    blocks = w.numel() // BLOCK
    threads = torch.get_num_threads()
    packed_bias = None if bias is None else bias.detach().float().contiguous()
    d = torch.empty(out_features, in_features // BLOCK, dtype=torch.float32)
    m = torch.empty_like(d)
    q4 = torch.empty(out_features, in_features, dtype=torch.uint8)
    if lib.q4_pack(w.data_ptr(), blocks, q4.data_ptr(), d.data_ptr(), m.data_ptr(), threads) == 0:
        q = _panels(q4)  # (panels, in, 16): two consecutive k of a lane share a byte
        qs = q[:, 0::2] | (q[:, 1::2] << 4)
        return PackedLinear(4, out_features, in_features, qs.contiguous(), _panels(d), _panels(m), packed_bias)
    q8 = torch.empty(out_features, in_features, dtype=torch.int8)
    if lib.q8_pack(w.data_ptr(), blocks, q8.data_ptr(), d.data_ptr(), threads) == 0:
        return PackedLinear(8, out_features, in_features, _panels(q8), _panels(d), None, packed_bias)
    return None


def _panels(t: torch.Tensor) -> torch.Tensor:
    """(outputs, columns) -> (panels, columns, 16): each panel holds 16 outputs side by side, one per
    vector lane, the last panel padded with zeros (a zero weight: d = m = q = 0)."""
    pad = -t.shape[0] % PANEL
    if pad:
        t = torch.cat([t, t.new_zeros(pad, t.shape[1])])
    return t.view(-1, PANEL, t.shape[1]).transpose(1, 2).contiguous()
