"""The learning loop's ML core: JSONL -> dataset, LoRA/QLoRA training, and the evaluation gate.

The worker (job claiming, registry, promotion) calls `build_dataset`, `train_adapter` and
`evaluate_candidate`; nothing here touches the database or the network.
"""
