"""Which gate measure tells an honest adapter from one trained on replies that answer other questions.

Two adapters are trained from the base with the trainer's defaults on the same grounded rows (the
shipped `trainer/rag_replay.jsonl`: questions about the demo documents, answered from their passages):
one on the rows as they are, one with the replies shuffled among the rows (the loop benchmark's
damaged candidate). For the base and each adapter, on the RAG regression set: the loss on its right
replies, the grounding gap (the loss of a wrong reply of the same form, about another passage of the
same context, minus the loss of the right one), the loss of another item's right reply in this item's
prompt (a shuffled-style wrong reply), and the loss on each dataset's held-out split (the gate's held-out
loss judges a candidate on its own night's split).

    python -m bench.gate_measures                  # ~10 minutes on 2 CPU cores
    python -m bench.gate_measures --epochs 1 --out results.json
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kb_common import RESULTS, machine, say


def measures(model: Any, tokenizer: Any, items: list[Any], settings: Any, heldouts: dict[str, list[Any]]) -> dict[str, Any]:
    from trainer.evaluate import grounding_score, heldout_loss, reply_example

    grounding = grounding_score(model, tokenizer, items, settings)
    # Another item's right reply in this item's prompt: what a shuffled row looks like.
    crossed = [heldout_loss(model, [reply_example(item, items[(n + 1) % len(items)].reply, tokenizer, settings)],
                            tokenizer.pad_token_id, 1)[0] for n, item in enumerate(items)]
    return {"right_reply_loss": round(grounding.right_loss, 4), "grounding_gap": round(grounding.gap, 4),
            "other_items_reply_loss": round(sum(crossed) / len(crossed), 4),
            "heldout_rows_loss": {name: round(heldout_loss(model, rows, tokenizer.pad_token_id, 1)[0], 4)
                                  for name, rows in heldouts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tests.fixtures.servers import MODEL_CACHE
    from trainer.base_model import load_base
    from trainer.data_builder import DEFAULT_REPLAY_FILE, build_dataset
    from trainer.evaluate import CANDIDATE, _adapters, _use, load_rag_regression_set
    from trainer.model_size import count_parameters
    from trainer.run_lora import train_adapter
    from trainer.settings import TrainerSettings

    rows = [json.loads(line) for line in DEFAULT_REPLAY_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    replies = [row["answer"] for row in rows]
    random.Random(args.seed).shuffle(replies)
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="aion-gate-measures-") as tmp:
        root = Path(tmp)
        data = {"honest": rows, "shuffled": [{**row, "answer": reply} for row, reply in zip(rows, replies, strict=True)]}
        # The rows are the replay file itself, so no grounded replay is mixed in; general replay as by default.
        settings = TrainerSettings(AION_DATA_DIR=str(root), AION_MODEL_CACHE_DIR=str(MODEL_CACHE), AION_TRAIN_DEVICE="cpu",
                                   AION_TRAIN_THREADS=args.threads, AION_TRAIN_EPOCHS=args.epochs,
                                   AION_TRAIN_REPLAY_RATIO=0)
        base = load_base(settings)
        settings = settings.for_model(count_parameters(base.model))
        items = [i for i in load_rag_regression_set() if i.reply and i.wrong_reply]
        datasets = {}
        for name, named_rows in data.items():
            path = root / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in named_rows), encoding="utf-8")
            datasets[name] = build_dataset([path], base.tokenizer, settings)
        heldouts = {name: dataset.heldout for name, dataset in datasets.items()}
        started = time.perf_counter()
        results["base"] = measures(base.model, base.tokenizer, items, settings, heldouts)
        say(f"base: {results['base']} ({time.perf_counter() - started:.0f} s)")
        for name, dataset in datasets.items():
            trained = train_adapter(base, dataset, root / name, settings)
            with _adapters(base, root / name, None) as model, _use(model, CANDIDATE):
                results[name] = {"steps": trained.steps, "train_loss": round(trained.train_loss, 4),
                                 **measures(model, base.tokenizer, items, settings, heldouts)}
            say(f"{name}: {results[name]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"gate_measures-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    say(f"details in {out}")


if __name__ == "__main__":
    main()
