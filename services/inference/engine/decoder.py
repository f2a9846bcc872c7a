"""One decode step of a Llama-architecture model in few Python steps, over the slot KV cache.

Profiling the transformers forward at batch 1 on this project's model (30 layers, 135M params)
showed about half of each decode step outside the matrix products: per-layer module and hook
dispatch, mask construction, `repeat_kv`/cache `torch.cat` copies, dtype round-trips. This path
runs the same arithmetic on the same weights with ~20 tensor ops per layer:

- q/k/v and gate/up projections fused into one matrix product each (copies of the base weights,
  rebuilt whenever the runner's model object changes);
- rotary tables computed once by the model's own rotary module, indexed by position;
- keys/values written in place into the preallocated `SlotCache`; grouped-query attention done
  by folding the query heads that share a KV head into SDPA's query-length axis (no KV copies);
- plain LoRA adapters on the layers' projections are applied inside the native step, per row
  (scale * B (A x) beside the packed base product; `LoraTable`): without that, a step with any
  adapter row ran PEFT's modules layer by layer, ~8x slower, and an adapter is what the service
  answers with once the nightly training has run. Adapters it cannot apply (DoRA and other
  variants, a bias on B) run PEFT's modules with per-row `adapter_names`, as the model's forward
  does; LoRA on the embeddings or the LM head runs as modules around the native step.

Prompts of base-model requests (`prefill`) run the same layers over all prompt positions at once
with the native RoPE, RMSNorm and SiLU (transformers' forward spent ~15% of a 300-token prompt on
element-wise ops and module dispatch) and either the model's own fp32 weights through MKL or, with a
prefix cache, the packed kernels and the kernels' causal attention (exact reuse needs rows that do not
depend on each other; see prefix_cache.py). Prompts with a plain LoRA adapter take the same pass with the adapter's deltas added
(per row on the packed pass, as the decode step adds them, so they use the prefix cache too); other
adapters, and models this path cannot serve, use the model's forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import (
    MAX_LORA_RANK,
    LayerWeights,
    LoraPart,
    LoraTable,
    NativeLayers,
    PackedLinear,
    attend,
    attend_causal,
    attention_supported,
    pack,
    rms_norm,
    rope_,
    silu_mul,
)
from .kvcache import SlotCache
from .prefix_cache import BLOCK as PREFIX_BLOCK
from .prefix_cache import Layers

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
_STATIC_ROPE = {"default", "linear", "llama3"}  # rotary tables that do not depend on sequence length


def unsupported_reason(model: Any) -> str | None:
    """Why the fast decoder cannot serve this model (None when it can)."""
    base = _base_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', None)!r} is not llama"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in _STATIC_ROPE:
        return f"rope type {rope!r} changes with sequence length"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "activation or tensor-parallel layout differs from Llama's"
    if not hasattr(base, "model") or not hasattr(base.model, "layers") or not hasattr(base, "lm_head"):
        return "unexpected module layout"
    return None


def _base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _is_lora(module: nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A")


def _plain_base(module: nn.Module) -> nn.Module | None:
    """The plain Linear/Embedding holding a module's base weights, or None (quantized, merged LoRA...)."""
    if _is_lora(module):
        if getattr(module, "merged", False):
            return None
        module = module.base_layer
    return module if type(module) in (nn.Linear, nn.Embedding) else None


Fused = tuple[torch.Tensor, torch.Tensor | None] | PackedLinear


class FusedWeights:
    """Fused (and, when exact, packed) copies of base weights, reused while the sources are the same
    tensors: loading or deleting a LoRA adapter rebuilds the decoder but never touches base weights.
    Whoever changes weights in place must start a new FusedWeights (the runner does, on assignment)."""

    def __init__(self, quantize: bool) -> None:
        self.quantize = quantize
        self._made: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], Fused]] = {}

    def fuse(self, modules: list[nn.Module]) -> Fused | None:
        """One matrix for projections that read the same input, or None when one is not a plain layer."""
        bases = [_plain_base(m) for m in modules]
        if any(b is None for b in bases):
            return None
        sources = tuple(t for b in bases for t in (b.weight, b.bias) if t is not None)
        key = tuple(id(t) for t in sources)
        hit = self._made.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], sources, strict=True)):
            return hit[1]
        weight = torch.cat([b.weight.detach() for b in bases]) if len(bases) > 1 else bases[0].weight.detach()
        bias = None
        if any(b.bias is not None for b in bases):
            bias = torch.cat([b.bias.detach() if b.bias is not None else weight.new_zeros(b.weight.shape[0])
                              for b in bases])
        packed = pack(weight, bias) if self.quantize else None
        fused: Fused = packed if packed is not None else (weight, bias)
        self._made[key] = (sources, fused)
        return fused


def _fp32_linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A module's plain fp32 CPU base weight and bias, or None."""
    base = _plain_base(module)
    if base is None or base.weight.dtype != torch.float32 or base.weight.device.type != "cpu":
        return None
    return base.weight.detach(), (base.bias.detach() if base.bias is not None else None)


class _PrefillLayer:
    """One layer's base weights as the model holds them (no copies), for prompts."""

    def __init__(self, layer: nn.Module) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.norm_in = layer.input_layernorm.weight.detach().float().contiguous()
        self.norm_post = layer.post_attention_layernorm.weight.detach().float().contiguous()
        found = [_fp32_linear(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                                           mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        self.complete = all(f is not None for f in found)
        self.q, self.k, self.v, self.o, self.gate, self.up, self.down = found


class _Layer:
    def __init__(self, layer: nn.Module, weights: FusedWeights) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.norm_in = layer.input_layernorm.weight.detach()
        self.norm_post = layer.post_attention_layernorm.weight.detach()
        self.qkv_modules = [attn.q_proj, attn.k_proj, attn.v_proj]
        self.gate_up_modules = [mlp.gate_proj, mlp.up_proj]
        self.o_module, self.down_module = attn.o_proj, mlp.down_proj
        self.qkv = weights.fuse(self.qkv_modules)
        self.gate_up = weights.fuse(self.gate_up_modules)
        self.o = weights.fuse([self.o_module])
        self.down = weights.fuse([self.down_module])


def _project(x: torch.Tensor, fused: Fused | None,
             modules: list[nn.Module], adapter_names: list[str] | None, lora_rows: bool) -> torch.Tensor:
    """The (concatenated) outputs of `modules` on x: the fused base weights unless a row needs LoRA."""
    if fused is not None and not (lora_rows and any(_is_lora(m) for m in modules)):
        if isinstance(fused, PackedLinear):
            return fused(x)
        return F.linear(x, fused[0], fused[1])
    outs = [m(x, adapter_names=adapter_names) if _is_lora(m) else m(x) for m in modules]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def _lora_parts(modules: list[nn.Module], offsets: list[int], name: str) -> list[LoraPart] | None:
    """Adapter `name`'s deltas on a fused matrix (the modules' outputs side by side at `offsets`), or None
    when one is not plain LoRA (DoRA and other variants, a bias on B, merged weights, too high a rank)."""
    parts = []
    for module, offset in zip(modules, offsets, strict=True):
        if not _is_lora(module) or name not in module.lora_A:
            continue
        lora_b = module.lora_B[name]
        if (name in (getattr(module, "lora_variant", None) or {}) or getattr(module, "merged", False)
                or getattr(lora_b, "bias", None) is not None or module.lora_A[name].weight.shape[0] > MAX_LORA_RANK):
            return None
        parts.append(LoraPart(module.lora_A[name].weight, lora_b.weight, float(module.scaling[name]), offset))
    return parts


def _lora_touches(module: nn.Module, name: str) -> bool:
    return _is_lora(module) and (name in module.lora_A or name in getattr(module, "lora_embedding_A", {}))


def _add_lora(x: torch.Tensor, parts: list[LoraPart], outputs: dict[int, torch.Tensor]) -> None:
    """outputs[offset] += B (A x) * scale for each part, as PEFT's LoRA layers add their delta."""
    for part in parts:
        outputs[part.out_offset].add_(F.linear(F.linear(x, part.A), part.B), alpha=part.scale)


def _native_adapters(layers: list[_Layer], q_width: int, qk_width: int) -> dict[str, list[dict[str, list[LoraPart]]]]:
    """Per adapter the native step can apply: for each layer, its parts per fused matrix."""
    names = sorted({n for layer in layers for m in layer.qkv_modules + layer.gate_up_modules + [layer.o_module,
                    layer.down_module] if _is_lora(m) for n in m.lora_A})
    out = {}
    for name in names:
        per_layer = []
        for layer in layers:
            inter = layer.gate_up.out_features // 2  # packed: the native step runs only on packed layers
            matrices = {
                "qkv": _lora_parts(layer.qkv_modules, [0, q_width, qk_width], name),
                "o": _lora_parts([layer.o_module], [0], name),
                "gate_up": _lora_parts(layer.gate_up_modules, [0, inter], name),
                "down": _lora_parts([layer.down_module], [0], name),
            }
            if any(parts is None for parts in matrices.values()):
                break
            per_layer.append(matrices)
        else:
            out[name] = per_layer
    return out


class LlamaDecoder:
    """Decode steps for a batch of rows of one Llama model (plain, PEFT-wrapped or 4-bit)."""

    def __init__(self, model: Any, weights: FusedWeights) -> None:
        base = _base_model(model)
        config = base.config
        core = base.model
        attn = core.layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.groups = self.heads // self.kv_heads
        self.scaling = float(attn.scaling)
        self.eps = float(core.norm.variance_epsilon)
        self.max_positions = int(config.max_position_embeddings)
        self.embed = core.embed_tokens
        self.lm_head = base.lm_head
        self.head = weights.fuse([base.lm_head])
        self.norm = core.norm.weight.detach().contiguous()  # the native RMSNorm reads it as a flat array
        self.layers = [_Layer(layer, weights) for layer in core.layers[: config.num_hidden_layers]]
        weight = core.embed_tokens.weight
        with torch.inference_mode():
            positions = torch.arange(self.max_positions, device=weight.device).unsqueeze(0)
            probe = torch.zeros(1, dtype=weight.dtype if weight.is_floating_point() else torch.float32,
                                device=weight.device)
            cos, sin = core.rotary_emb(probe, positions)  # the model's own tables: same numbers as prefill
        self.cos, self.sin = cos[0], sin[0]  # (positions, head dim)
        self.kernel_attention = attention_supported(self.heads, self.kv_heads, self.head_dim, weight.dtype,
                                                    weight.device)
        # Every projection packed (the default model): the whole layer stack runs in one C call.
        self.native: NativeLayers | None = None
        if self.kernel_attention and all(isinstance(p, PackedLinear) for layer in self.layers
                                         for p in (layer.qkv, layer.o, layer.gate_up, layer.down)):
            self.native = NativeLayers(
                [LayerWeights(layer.norm_in, layer.norm_post, layer.qkv, layer.o, layer.gate_up, layer.down)
                 for layer in self.layers], self.heads, self.kv_heads, self.head_dim, self.eps, self.scaling)
        # LoRA adapters the native step can apply itself (plain LoRA on the layers' projections).
        self.lora_table: LoraTable | None = None
        self.lora_adapters: dict[str, list[dict[str, list[LoraPart]]]] = {}
        if self.native is not None:
            self.lora_adapters = _native_adapters(self.layers, self.heads * self.head_dim,
                                                  (self.heads + self.kv_heads) * self.head_dim)
            if self.lora_adapters:
                self.lora_table = LoraTable(self.lora_adapters)
        # Base-model prompts through the native element-wise ops (see the module docstring).
        self.prefill_layers: list[_PrefillLayer] | None = None
        embed_base = _plain_base(self.embed)
        if self.kernel_attention and embed_base is not None and self.norm.dtype == torch.float32:
            layers = [_PrefillLayer(layer) for layer in core.layers[: config.num_hidden_layers]]
            if all(layer.complete for layer in layers):
                self.prefill_layers = layers
                self.embed_weight = embed_base.weight.detach()
        # Every projection packed: prompts through the same kernels, whose rows never depend on each other
        # (MKL's do), so a prompt may start from cached positions and get the bits it would alone.
        self.exact_prefill = self.prefill_layers is not None and self.native is not None

    def prefills_adapter(self, adapter: str) -> bool:
        """Whether `prefill` can run this adapter's prompts (plain LoRA on the layers' projections only)."""
        return (self.prefill_layers is not None and adapter in self.lora_adapters
                and not _lora_touches(self.embed, adapter) and not _lora_touches(self.lm_head, adapter))

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], past: Layers | None = None, *, exact: bool = False,
                adapter: str | None = None) -> tuple[torch.Tensor, Layers]:
        """One base-model prompt: its last-position logits and, per layer, its keys and values as
        (1, kv heads, length, head dim), the layout of the model's own cache.

        `exact` (needs `exact_prefill`): through the packed kernels, so that every position's result is
        the same bits whether the positions before it were computed in this call or not; else through
        MKL (a row's bits depend on the others). `past` (only when exact) holds the keys and values of
        the prompt's first positions, a multiple of the prefix cache's block. `adapter` (see
        `prefills_adapter`): its LoRA deltas added to the base projections — as PEFT's layers do on the
        MKL pass, as the decode step does (row by row) on the exact one."""
        assert self.prefill_layers is not None and (self.exact_prefill or not exact)
        assert adapter is None or self.prefills_adapter(adapter)
        lora = self.lora_adapters[adapter] if adapter is not None and not exact else None
        table = self.lora_table if adapter is not None and exact else None  # exact: the decode step's deltas
        n = len(prompt_ids)
        start = past[0][0].shape[2] if past else 0
        assert start < n and (not past or (exact and start % PREFIX_BLOCK == 0))
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        ids = torch.tensor(prompt_ids[start:], dtype=torch.long, device=self.norm.device)
        if exact:  # (positions, kv heads, dim) for the causal kernel; handed out as the cache's layout
            flat_keys = [self.norm.new_empty(n, kv_heads, dim) for _ in self.prefill_layers]
            flat_values = [self.norm.new_empty(n, kv_heads, dim) for _ in self.prefill_layers]
            keys = [t.permute(1, 0, 2).unsqueeze(0) for t in flat_keys]
            values = [t.permute(1, 0, 2).unsqueeze(0) for t in flat_values]
        else:
            keys = [self.norm.new_empty(1, kv_heads, n, dim) for _ in self.prefill_layers]
            values = [self.norm.new_empty(1, kv_heads, n, dim) for _ in self.prefill_layers]
        if past:
            for (k, v), kd, vd in zip(past, keys, values, strict=True):
                kd[:, :, :start].copy_(k)
                vd[:, :, :start].copy_(v)
        m = n - start
        x = F.embedding(ids, self.embed_weight)
        cos, sin = self.cos[start:n], self.sin[start:n]
        for index, (layer, packed, kd, vd) in enumerate(zip(self.prefill_layers, self.layers, keys, values,
                                                             strict=True)):
            deltas = lora[index] if lora is not None else None
            h = rms_norm(x, layer.norm_in, self.eps)
            if exact:  # the packed kernels: a row's bits do not depend on the others
                qkv = packed.qkv.rows(h)
                if table is not None:
                    table.add_rows(adapter, index, "qkv", h, qkv)
                q = qkv[:, :heads * dim].contiguous().view(m, heads, dim)
                k = qkv[:, heads * dim:(heads + kv_heads) * dim].contiguous().view(m, kv_heads, dim)
                v = qkv[:, (heads + kv_heads) * dim:].view(m, kv_heads, dim)
            else:
                q, k, v = F.linear(h, *layer.q), F.linear(h, *layer.k), F.linear(h, *layer.v)
                if deltas:
                    _add_lora(h, deltas["qkv"], {0: q, heads * dim: k, (heads + kv_heads) * dim: v})
                q, k, v = q.view(m, heads, dim), k.view(m, kv_heads, dim), v.view(m, kv_heads, dim)
            kd[0, :, start:] = rope_(k, cos, sin).transpose(0, 1)
            vd[0, :, start:] = v.transpose(0, 1)
            if exact:  # rows independent of each other (SDPA's are not on every CPU)
                a = attend_causal(rope_(q, cos, sin), flat_keys[index], flat_values[index], start, self.scaling)
                a = a.view(m, heads * dim)
            else:
                q = rope_(q, cos, sin).transpose(0, 1).unsqueeze(0)
                a = F.scaled_dot_product_attention(q, kd, vd, is_causal=True, enable_gqa=True,
                                                   scale=self.scaling)
                a = a[0].transpose(0, 1).reshape(m, heads * dim)
            if exact:
                o = packed.o.rows(a)
                if table is not None:
                    table.add_rows(adapter, index, "o", a, o)
                x = x + o
            else:
                o = F.linear(a, *layer.o)
                if deltas:
                    _add_lora(a, deltas["o"], {0: o})
                x = x + o
            h = rms_norm(x, layer.norm_post, self.eps)
            if exact:
                gate_up = packed.gate_up.rows(h)
                if table is not None:
                    table.add_rows(adapter, index, "gate_up", h, gate_up)
                inter = gate_up.shape[1] // 2
                act = silu_mul(gate_up[:, :inter].contiguous(), gate_up[:, inter:].contiguous())
                down = packed.down.rows(act)
                if table is not None:
                    table.add_rows(adapter, index, "down", act, down)
                x = x + down
            else:
                gate, up = F.linear(h, *layer.gate), F.linear(h, *layer.up)
                if deltas:
                    _add_lora(h, deltas["gate_up"], {0: gate, gate.shape[1]: up})
                act = silu_mul(gate, up)
                down = F.linear(act, *layer.down)
                if deltas:
                    _add_lora(act, deltas["down"], {0: down})
                x = x + down
        last = rms_norm(x[-1:].contiguous(), self.norm, self.eps)
        return _project(last, self.head, [self.lm_head], None, False)[0], list(zip(keys, values, strict=True))

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Llama's RMSNorm: normalise in fp32, scale in the model dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @torch.inference_mode()
    def step(self, cache: SlotCache, tokens: list[int], adapter_names: list[str] | None) -> torch.Tensor:
        """Feed each row its last token; returns next-token logits (rows, vocab)."""
        rows = len(tokens)
        assert rows == cache.rows
        cache.reserve_step()
        device = self.norm.device
        lengths = cache.lengths
        capacity = cache.capacity
        # adapter_names is None when the model is not PEFT-wrapped (no LoRA layer anywhere)
        lora_rows = adapter_names is not None and any(a != BASE_ADAPTER for a in adapter_names)

        ids = torch.tensor(tokens, dtype=torch.long, device=device)
        positions = torch.tensor(lengths, dtype=torch.long, device=device)  # = the new token's position
        slots = positions + torch.arange(0, rows * capacity, capacity, device=device)  # its flat cache row
        seen = positions + 1  # positions each row attends to, the new one included
        embed_base = _plain_base(self.embed)
        if embed_base is not None and not (lora_rows and _is_lora(self.embed)):
            x = F.embedding(ids, embed_base.weight)
        else:
            x = self.embed(ids, adapter_names=adapter_names) if _is_lora(self.embed) else self.embed(ids)
        cos = self.cos.index_select(0, positions).unsqueeze(1)  # (rows, 1, head dim)
        sin = self.sin.index_select(0, positions).unsqueeze(1)
        kernel_attention = self.kernel_attention and cache.keys[0].dtype == torch.float32
        longest = max(lengths) + 1
        lora = None
        if lora_rows and self.lora_table is not None and adapter_names is not None:
            table = self.lora_table
            if all(a == BASE_ADAPTER or a in table.slots for a in adapter_names):
                lora = table, torch.tensor([table.slots.get(a, -1) for a in adapter_names], dtype=torch.int64)
        if self.native is not None and kernel_attention and (not lora_rows or lora is not None):
            x = x.contiguous()
            self.native.run(x, self.cos.index_select(0, positions), self.sin.index_select(0, positions), slots,
                            seen, longest, cache.keys, cache.values, capacity, cache.sharing(self.kv_heads), lora)
            cache.advance()
            return _project(rms_norm(x, self.norm, self.eps), self.head, [self.lm_head], adapter_names, lora_rows)
        mask = None
        if not kernel_attention and min(lengths) + 1 != longest:  # hide each shorter row's padding
            mask = (torch.arange(longest, device=device) < seen.unsqueeze(1)).view(rows, 1, 1, longest)

        heads, kv_heads, dim, half = self.heads, self.kv_heads, self.head_dim, self.head_dim // 2
        qk_width = (heads + kv_heads) * dim
        for layer, keys, values in zip(self.layers, cache.keys, cache.values, strict=True):
            h = self._rms(x, layer.norm_in)
            qkv = _project(h, layer.qkv, layer.qkv_modules, adapter_names, lora_rows)
            qk = qkv[:, :qk_width].view(rows, heads + kv_heads, dim)
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin  # Llama's rotary embedding, queries and keys at once
            keys.view(-1, kv_heads * dim).index_copy_(0, slots, qk[:, heads:].reshape(rows, kv_heads * dim))
            values.view(-1, kv_heads * dim).index_copy_(0, slots, qkv[:, qk_width:])
            if kernel_attention:
                a = attend(qk[:, :heads], keys, values, seen, self.scaling)
            else:
                # the query heads that share a KV head become SDPA's query axis: no KV copies
                q = qk[:, :heads].reshape(rows, kv_heads, self.groups, dim)
                a = F.scaled_dot_product_attention(q, keys[:rows, :longest].transpose(1, 2),
                                                   values[:rows, :longest].transpose(1, 2),
                                                   attn_mask=mask, scale=self.scaling)
            x = x + _project(a.reshape(rows, heads * dim), layer.o, [layer.o_module], adapter_names, lora_rows)
            h = self._rms(x, layer.norm_post)
            gate_up = _project(h, layer.gate_up, layer.gate_up_modules, adapter_names, lora_rows)
            gate, up = gate_up.chunk(2, dim=-1)
            x = x + _project(F.silu(gate) * up, layer.down, [layer.down_module], adapter_names, lora_rows)
        cache.advance()
        x = self._rms(x, self.norm)
        return _project(x, self.head, [self.lm_head], adapter_names, lora_rows)
