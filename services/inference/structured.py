"""What an OpenAI request asks its output to be (free text, JSON, a schema, a tool call), as a grammar.

The grammar is llguidance's Lark dialect with embedded JSON schemas (`%json {...}`). JSON is written
compactly (no optional whitespace), which also makes a tool call's text predictable to read back
(tools.ToolCallReader). A schema marked `strict` is enforced keyword for keyword: a keyword the matcher
cannot enforce is refused with a 400. Without `strict`, such keywords are ignored (best effort, as
OpenAI does for non-strict schemas) while everything else is still enforced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import BadRequest
from shared.protocol.openai import (
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    ToolDefinition,
)

from .engine.constraints import GrammarCompiler, GrammarError
from .tools import ToolSyntax, tool_schema

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class OutputPlan:
    """The request's tools to render, the grammar for its output, and the tool names to read back."""

    tools: Sequence[ToolDefinition] = ()    # rendered into the prompt
    grammar: str | None = None              # None: free text
    call_names: Sequence[str] = ()          # tool calls to look for in the output
    may_answer: bool = True                 # plain content allowed beside a call (tool_choice auto)
    pieces: dict[str, str] = field(default_factory=dict)  # request field -> its own grammar, to blame errors


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")


def closed(schema: Any) -> Any:
    """The schema with every object that declares properties, and says nothing about others, closed to
    others. Outputs stay valid under the original schema; small models otherwise invent keys forever."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_ONE:
        if key in out:
            out[key] = closed(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    if "properties" in out and not any(k in out for k in ("additionalProperties", "patternProperties",
                                                            "unevaluatedProperties")):
        out["additionalProperties"] = False
    return out


def _json_rule(schema: dict[str, Any], *, strict: bool) -> str:
    options = {"whitespace_flexible": False, "lenient": not strict}
    return "%json " + json.dumps({**closed(schema), "x-guidance": options}, ensure_ascii=False)


def _call_schema(tool: ToolDefinition) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": tool.function.name}, "arguments": tool_schema(tool)},
            "required": ["name", "arguments"], "additionalProperties": False}


def _lit(text: str) -> str:
    return json.dumps(text)


def plan_output(body: ChatCompletionRequest, syntax: ToolSyntax) -> OutputPlan:
    """Decide what the output may be (the request passed ChatCompletionRequest.refusal already)."""
    tools = list(body.tools or [])
    choice = body.tool_choice
    names = [t.function.name for t in tools]
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    mode = "auto" if choice is None else choice if isinstance(choice, str) else "named"

    pieces: dict[str, str] = {}
    content: str | None = None
    fmt = body.response_format
    if isinstance(fmt, ResponseFormatJsonObject):
        content = pieces["response_format"] = _json_rule(_ANY_OBJECT, strict=True)
    elif isinstance(fmt, ResponseFormatJsonSchema):
        schema = fmt.json_schema.schema_ or _ANY_OBJECT
        content = pieces["response_format.json_schema.schema"] = _json_rule(schema, strict=bool(fmt.json_schema.strict))
    if not tools or mode == "none":
        return OutputPlan(grammar=f"start: {content}\n" if content else None, pieces=pieces)

    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        rule = _json_rule(_call_schema(tool), strict=bool(tool.function.strict))
        pieces[f"tools[{names.index(tool.function.name)}].function.parameters"] = rule
        rules.append(f"call_{i}: {rule}")
        alternatives.append(f"call_{i}")
    call = f"{_lit(syntax.open)} ({' | '.join(alternatives)}) {_lit(syntax.close)}" if syntax.open else \
        f"({' | '.join(alternatives)})"
    if mode in ("required", "named"):
        start = f"start: {call}"
    elif content is not None:
        start = f"start: {call} | {content}"
    else:
        # Plain text that cannot be mistaken for a call: it may not open the way a call opens.
        first = syntax.open[:1] or "{"
        rules.append(f"TEXT: /\\s*[^{json.dumps(first)[1:-1]}\\s][\\s\\S]*/")
        start = f"start: {call} | TEXT"
    grammar = "\n".join([start, *rules]) + "\n"
    return OutputPlan(tools=tools, grammar=grammar, call_names=[t.function.name for t in tools],
                      may_answer=mode == "auto", pieces=pieces)


def compile_plan(plan: OutputPlan, compiler: GrammarCompiler | None, unavailable: str | None):
    """The plan's constraint for the engine (None for free text); BadRequest naming what cannot be enforced."""
    if plan.grammar is None:
        return None
    if compiler is None:
        raise BadRequest(f"structured output (tools, response_format) is not available for this model: {unavailable}")
    try:
        return compiler.constraint(plan.grammar)
    except GrammarError as whole:
        for param, rule in plan.pieces.items():  # find the field to blame
            try:
                compiler.constraint(f"start: {rule}\n")
            except GrammarError as exc:
                raise BadRequest(f"{param} cannot be enforced: {_short(str(exc))}", param=param) from exc
        raise BadRequest(f"the requested output format cannot be enforced: {_short(str(whole))}") from whole


def _short(message: str) -> str:
    """The matcher's first line (its later lines dump its internal state)."""
    return message.strip().splitlines()[0][:500] if message.strip() else "invalid grammar"
