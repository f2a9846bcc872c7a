"""The packed-weight kernels: packing never changes a weight, products match float64 arithmetic, and a
row's result is bit-for-bit the same alone or in any batch (what batched = solo decoding stands on)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.inference.engine import kernel_library, kernels
from services.inference.engine.kernel_library import kernel
from services.inference.engine.kernels import pack

pytestmark = pytest.mark.skipif(kernel() is None, reason="the native kernels need a C compiler and AVX-512")


def blockwise(out_features: int, in_features: int, bits: int, seed: int) -> torch.Tensor:
    """An fp32 matrix whose every block of 32 is exactly d*q + m (bits 4) or d*q (bits 8), d an fp16
    value, as the GGUF checkpoint's Q4_1 / Q8_0 blocks give after conversion."""
    g = torch.Generator().manual_seed(seed)
    blocks = (out_features, in_features // 32, 1)
    d = (torch.rand(blocks, generator=g) * 0.02 + 0.001).half().double()
    if bits == 4:
        q = torch.randint(0, 16, (*blocks[:2], 32), generator=g).double()
        q[..., 0], q[..., 1] = 0, 15  # a quantizer's block spans its range: min = m, max = 15 d + m
        m = (torch.rand(blocks, generator=g) * -0.15).float().double()
        w = q * d + m  # exact in float64; one rounding to float32, as a fused multiply-add gives
    else:
        q = torch.randint(-127, 128, (*blocks[:2], 32), generator=g).double()
        q[..., 0] = 127  # the block's largest magnitude is 127 d
        w = q * d
    return w.view(out_features, in_features).float()


@pytest.mark.parametrize("bits", [4, 8])
def test_products_match_float64_and_do_not_depend_on_the_batch(bits: int) -> None:
    weight = blockwise(200, 576, bits, seed=bits)
    packed = pack(weight)
    assert packed is not None and packed.bits == bits
    x = torch.randn(40, 576, generator=torch.Generator().manual_seed(7))
    reference = (x.double() @ weight.double().T).float()
    for rows in (1, 2, 3, 4, 5, 8, 9, 13, 17, 40):
        y = packed(x[:rows].contiguous())
        assert torch.allclose(y, reference[:rows], atol=1e-4, rtol=1e-5), rows
        alone = torch.stack([packed(x[r:r + 1].contiguous())[0] for r in range(rows)])
        assert torch.equal(y, alone), f"a batch of {rows} changed some row's bits"


@pytest.mark.parametrize("bits", [4, 8])
def test_prompt_products_give_a_row_the_same_bits_in_any_company(bits: int) -> None:
    """What exact prefix reuse stands on: a prompt position's projections do not depend on which other
    positions share the call (MKL's GEMMs do)."""
    weight = blockwise(200, 576, bits, seed=bits)
    packed = pack(weight)
    x = torch.randn(53, 576, generator=torch.Generator().manual_seed(3))
    full = packed.rows(x)
    assert torch.allclose(full, (x.double() @ weight.double().T).float(), atol=1e-4, rtol=1e-5)
    for start, stop in ((0, 1), (0, 8), (5, 21), (16, 53), (52, 53), (9, 10)):
        assert torch.equal(packed.rows(x[start:stop]), full[start:stop]), (start, stop)


@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (28, 4, 128), (6, 6, 32)])
def test_prompt_attention_matches_float64_and_gives_a_row_the_same_bits_for_any_prompt(heads: int, kv_heads: int,
                                                                                        dim: int) -> None:
    """What exact prefix reuse stands on for attention: a query row's output depends only on its own
    positions, not on how long the prompt is nor on whether the rows before it were computed in the call."""
    g = torch.Generator().manual_seed(heads)
    n, scale = 75, dim ** -0.5
    q = torch.randn(n, heads, dim, generator=g)
    keys = torch.randn(n, kv_heads, dim, generator=g)
    values = torch.randn(n, kv_heads, dim, generator=g)
    full = kernels.attend_causal(q, keys, values, 0, scale)
    groups = heads // kv_heads
    k64 = keys.double().repeat_interleave(groups, dim=1)
    v64 = values.double().repeat_interleave(groups, dim=1)
    for row in (0, 1, 16, 41, n - 1):
        scores = torch.einsum("hd,thd->ht", q[row].double(), k64[:row + 1]) * scale
        reference = torch.einsum("ht,thd->hd", scores.softmax(-1), v64[:row + 1]).float()
        assert torch.allclose(full[row], reference, atol=1e-5, rtol=1e-4), row
    for length in (1, 17, 48, 60):  # a shorter prompt: the same bits on its rows
        assert torch.equal(kernels.attend_causal(q[:length], keys[:length].contiguous(),
                                                 values[:length].contiguous(), 0, scale), full[:length])
    for start in (16, 32, 64):  # rows after cached positions: the bits of the whole-prompt call
        assert torch.equal(kernels.attend_causal(q[start:], keys, values, start, scale), full[start:])


def test_weights_that_are_not_blockwise_stay_fp32() -> None:
    weight = torch.randn(64, 576, generator=torch.Generator().manual_seed(1))
    assert pack(weight) is None  # packing would have to round them: the caller keeps the fp32 matrix
    assert pack(torch.randn(64, 100)) is None  # rows not a whole number of blocks


def test_a_library_built_ahead_is_loaded_without_a_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CPU image does: build into a folder at image build time, load from it at run time."""
    built = subprocess.run([sys.executable, "-m", "services.inference.engine.kernel_library", str(tmp_path / "k")],
                           capture_output=True, text=True, check=True, timeout=300)
    library = Path(built.stdout.strip())
    assert library.parent == tmp_path / "k" and library.exists()
    assert library.stat().st_mode & stat.S_IROTH  # readable by the image's non-root user
    monkeypatch.setenv("CC", str(tmp_path / "no-compiler-here"))  # a compile now would fail
    try:
        kernel_library.configure(cache_dir=tmp_path / "k")
        assert kernel() is not None
        assert any(os.path.samefile(line.split()[-1], library) for line in open("/proc/self/maps")
                   if line.rstrip().endswith(".so") and library.name in line)
        kernel_library.configure(cache_dir=tmp_path / "empty")
        assert kernel() is None  # nothing built there and no compiler: fp32 decode, not a crash
    finally:
        monkeypatch.delenv("CC")
        kernel_library.configure()
        assert kernel() is not None  # the default cache again, for the tests that follow
