"""The trainer's CUDA paths on a real GPU, with a random-weight model of Qwen2.5's shape (its 152k vocabulary).

Checks and measures: the answer-only chunked loss against the model's own loss (value, and peak
memory of each), bf16 autocast chosen by `auto`, a few LoRA steps through `train_adapter` on the
device `AION_TRAIN_DEVICE` names (`cuda:N` included), held-out loss at the size-based eval batch,
and the memory left after `release_memory`. Weights are random: speed and memory do not depend on
their values, and no weights need to travel to the GPU host.

    python -m bench.trainer_gpu_check --device cuda:0 [--layers 4 --hidden 1536 --seq 2048]
    python -m bench.trainer_gpu_check --device cpu --layers 1 --hidden 128 --vocab 2000 --seq 128   # dry run

Needs torch, transformers and peft, plus fastapi and pydantic-settings (the trainer's settings and
errors import them): on a bare GPU host, `pip install --no-index --find-links <wheels> fastapi
pydantic-settings` from wheels brought along (`pip download --only-binary=:all: --python-version 3.12
--platform manylinux2014_x86_64 fastapi pydantic-settings`, 3.4 MB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--seq", type=int, default=2048, help="tokens per row (prompt + answer)")
    parser.add_argument("--answer", type=int, default=200, help="answer tokens per row")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trainer.data_builder import IGNORE_INDEX, BuiltDataset, Example
    from trainer.evaluate import heldout_loss
    from trainer.loss import answer_loss
    from trainer.precision import autocast, autocast_dtype, release_memory
    from trainer.run_lora import collate, train_adapter
    from trainer.settings import TrainerSettings

    cuda = args.device.startswith("cuda")  # --device cpu: the same code on a small model, as a dry run
    out: dict = {"device": args.device, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(torch.device(args.device)) if cuda else None}
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                         num_hidden_layers=args.layers, num_attention_heads=max(2, args.hidden // 128),
                         num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).to(args.device).eval()
    prompt = args.seq - args.answer
    rows = []
    for i in range(args.batch * 2):
        ids = torch.randint(10, args.vocab, (args.seq,), generator=torch.Generator().manual_seed(i)).tolist()
        rows.append(Example(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:], key=str(i)))
    batch = {k: v.to(args.device) for k, v in collate(rows[:args.batch], 0).items()}
    cast = autocast_dtype("auto", args.device)
    out["autocast"] = str(cast)

    def mib(fn, *a) -> int | None:
        return round(fn(*a) / 2**20) if cuda else None

    def peak(fn):
        if cuda:
            torch.cuda.synchronize(args.device)
            torch.cuda.reset_peak_memory_stats(args.device)
        base = mib(torch.cuda.memory_allocated, args.device)
        started = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize(args.device)
        used = mib(torch.cuda.max_memory_allocated, args.device)
        return value, (used - base if cuda else None), round(time.perf_counter() - started, 3)

    with torch.no_grad(), autocast(args.device, cast):
        full, full_mb, full_s = peak(lambda: float(model(**batch).loss))
        chunked, chunked_mb, chunked_s = peak(lambda: (lambda s, n: float(s) / n)(*answer_loss(model, batch, 256)))
    out["eval_loss"] = {"model_loss": round(full, 5), "answer_loss": round(chunked, 5),
                        "model_loss_peak_mib": full_mb, "answer_loss_peak_mib": chunked_mb,
                        "model_loss_s": full_s, "answer_loss_s": chunked_s}
    ok = abs(full - chunked) <= 2e-2 * abs(full)

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainerSettings(_env_file=None, AION_DATA_DIR=tmp, AION_TRAIN_DEVICE=args.device,
                                   AION_TRAIN_MAX_STEPS=args.steps, AION_TRAIN_BATCH_SIZE=args.batch,
                                   AION_TRAIN_GRADIENT_CHECKPOINTING="true").for_model(
                                       sum(p.numel() for p in model.parameters()))
        loaded = SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0), device=args.device,
                                 quantization="fp32")
        if cuda:
            torch.cuda.reset_peak_memory_stats(args.device)
        result = train_adapter(loaded, BuiltDataset(train=rows, heldout=[]), Path(tmp) / "gpu-v1", settings)
        out["train"] = {"steps": result.steps, "seconds": result.seconds, "precision": result.precision,
                        "losses": result.losses, "peak_mib": mib(torch.cuda.max_memory_allocated, args.device),
                        "sized": {k: getattr(settings, k) for k in ("learning_rate", "eval_batch_size", "max_seq_len")}}
        ok = ok and result.steps == args.steps and all(x == x for x in result.losses)
        loss, tokens = heldout_loss(loaded.model, rows[args.batch:], 0, int(settings.sized("eval_batch_size")),
                                    chunk_tokens=settings.loss_chunk_tokens, autocast_to=cast)
        out["heldout"] = {"loss": round(loss, 5), "tokens": tokens}
    before = mib(torch.cuda.memory_allocated, args.device)
    model = loaded = batch = None  # the last references: the job is over
    release_memory()
    out["memory_mib"] = {"before_release": before, "after_release": mib(torch.cuda.memory_allocated, args.device),
                         "reserved_after": mib(torch.cuda.memory_reserved, args.device)}
    out["ok"] = bool(ok)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
