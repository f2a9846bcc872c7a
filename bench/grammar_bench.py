"""Grammar libraries for constrained decoding on the SmolLM2 vocabulary: llguidance (AION's choice),
xgrammar and outlines-core. Per library: vocabulary preparation, compiling a tool-call-sized schema,
the time to compute one row's next-token mask along a real JSON answer, and which JSON-schema keywords
it accepts (or refuses) — docs/benchmarks.md has the comparison.

    .venv/bin/python -m bench.grammar_bench [--extra-path DIR] [--threads 1]

Only llguidance is a project dependency. To compare the other two without adding them (xgrammar pulls
a 286 MB triton wheel), install them into a scratch folder and pass it:
    .venv/bin/pip install --no-deps --target /tmp/grammar-libs xgrammar apache-tvm-ffi outlines-core
Results: bench/results/grammar.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.kb_common import RESULTS, CpuMeter, machine, say

SCHEMA = {"type": "object", "properties": {
    "location": {"type": "string", "description": "city"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "hourly": {"type": "array", "items": {"type": "object", "properties": {
        "hour": {"type": "integer"}, "note": {"type": "string"}}, "required": ["hour", "note"],
        "additionalProperties": False}}},
    "required": ["location", "unit", "days", "hourly"], "additionalProperties": False}
ANSWER = {"location": "São Paulo, Brazil", "unit": "celsius", "days": 3, "hourly": [
    {"hour": 9, "note": "light rain in the morning"}, {"hour": 15, "note": "sunny and warm afternoon"}]}
# Keywords beyond the basics; "refused" is a library saying it cannot enforce one (llguidance, by name),
# "accepted" may mean enforced or silently ignored (outlines-core turns schemas into a regex).
KEYWORDS: dict[str, dict[str, Any]] = {
    "enum": {"type": "string", "enum": ["a", "b"]},
    "const": {"const": "x"},
    "anyOf": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "oneOf (overlapping)": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    "$ref/$defs": {"$defs": {"p": {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}},
                   "type": "object", "properties": {"p": {"$ref": "#/$defs/p"}}, "required": ["p"]},
    "recursive $ref": {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {
        "type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}}, "$ref": "#/$defs/node"},
    "pattern": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
    "minLength/maxLength": {"type": "string", "minLength": 2, "maxLength": 5},
    "minItems/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    "format: date-time": {"type": "string", "format": "date-time"},
    "number minimum/maximum": {"type": "number", "minimum": 0, "maximum": 1},
    "type list with null": {"type": ["string", "null"]},
    "additionalProperties schema": {"type": "object", "additionalProperties": {"type": "integer"}},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                        {"properties": {"b": {"type": "integer"}}}]},
    "if/then": {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def run_llguidance(tokenizer: Any, vocab: int, answer_ids: list[int]) -> dict:
    import llguidance
    import llguidance.hf

    ll_tok, prep = _timed(lambda: llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab))
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults={"whitespace_flexible": False})
    matcher, compile_s = _timed(lambda: llguidance.LLMatcher(ll_tok, grammar, log_level=0))
    masks = []
    for token in answer_ids:
        _, t = _timed(matcher.compute_bitmask)
        masks.append(t)
        assert matcher.consume_token(token), matcher.get_error()
    assert matcher.is_accepting()
    keywords = {}
    for name, schema in KEYWORDS.items():
        error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_json_schema(schema), ll_tok)
        keywords[name] = "accepted" if not error or error.startswith("WARNING") else "refused: " + error[:70]
    return {"prepare_s": prep, "compile_s": compile_s, "mask_s": masks, "keywords": keywords}


def run_xgrammar(tokenizer: Any, vocab: int, answer_ids: list[int]) -> dict:
    import xgrammar as xgr

    def prepare() -> Any:
        return xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab), max_threads=1)

    compiler, prep = _timed(prepare)
    compiled, compile_s = _timed(lambda: compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False,
                                                                      separators=(",", ":")))
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    masks = []
    for token in answer_ids:
        _, t = _timed(lambda: matcher.fill_next_token_bitmask(bitmask))
        masks.append(t)
        assert matcher.accept_token(token)
    keywords = {}
    for name, schema in KEYWORDS.items():
        try:
            compiler.compile_json_schema(json.dumps(schema))
            keywords[name] = "accepted"
        except Exception as exc:  # the library's own error type varies by version
            keywords[name] = "refused: " + str(exc)[:70]
    return {"prepare_s": prep, "compile_s": compile_s, "mask_s": masks, "keywords": keywords}


def run_outlines_core(tokenizer: Any, vocab: int, answer_ids: list[int]) -> dict:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    def prepare() -> Any:
        byte_of = {v: k for k, v in bytes_to_unicode().items()}
        tokens: dict[bytes, list[int]] = {}
        for text, i in tokenizer.get_vocab().items():
            if i in tokenizer.all_special_ids:
                continue
            data = bytes(byte_of[c] for c in text) if all(c in byte_of for c in text) else text.encode()
            tokens.setdefault(data, []).append(i)
        return Vocabulary(tokenizer.eos_token_id, tokens)

    vocabulary, prep = _timed(prepare)
    index, compile_s = _timed(lambda: Index(build_regex_from_schema(json.dumps(SCHEMA)), vocabulary))
    guide = Guide(index)
    masks = []
    for token in answer_ids:
        _, t = _timed(guide.get_tokens)
        masks.append(t)
        guide.advance(token)
    keywords = {}
    for name, schema in KEYWORDS.items():
        try:
            build_regex_from_schema(json.dumps(schema))
            keywords[name] = "accepted"
        except Exception as exc:  # the library's own error type varies by version
            keywords[name] = "refused: " + str(exc)[:70]
    return {"prepare_s": prep, "compile_s": compile_s, "mask_s": masks, "keywords": keywords}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra-path", action="append", default=[], help="a folder holding xgrammar or outlines-core")
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()  # bench.run_all passes its extra arguments to every benchmark
    sys.path.extend(args.extra_path)

    import torch
    from transformers import AutoTokenizer

    from services.inference.loader import resolve_base_model
    from tests.fixtures.servers import MODEL_CACHE

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("smollm2-135m-instruct", MODEL_CACHE))
    vocab = len(tokenizer)
    answer_ids = tokenizer(json.dumps(ANSWER, separators=(",", ":"), ensure_ascii=False),
                           add_special_tokens=False)["input_ids"]
    result: dict = {"machine": machine(), "threads": args.threads, "answer_tokens": len(answer_ids), "libraries": {}}
    for name, run in (("llguidance", run_llguidance), ("xgrammar", run_xgrammar),
                      ("outlines-core", run_outlines_core)):
        try:
            with CpuMeter() as meter:
                out = run(tokenizer, vocab, answer_ids)
        except ImportError as exc:
            say(f"{name}: not installed ({exc}); see --extra-path")
            continue
        masks = sorted(out.pop("mask_s"))
        out.update(mask_median_us=statistics.median(masks) * 1e6, mask_p90_us=masks[int(len(masks) * 0.9)] * 1e6,
                   mask_max_us=masks[-1] * 1e6, other_processes_cores=meter.others_cores())
        result["libraries"][name] = out
        say(f"{name}: vocabulary {out['prepare_s'] * 1000:.0f} ms, schema {out['compile_s'] * 1000:.1f} ms, "
            f"mask median {out['mask_median_us']:.0f} us, p90 {out['mask_p90_us']:.0f} us, "
            f"max {out['mask_max_us']:.0f} us; other processes {out['other_processes_cores']:.1f} cores")
        for keyword, verdict in out["keywords"].items():
            say(f"    {keyword}: {verdict}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grammar.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
