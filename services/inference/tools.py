"""OpenAI function calling on a local model: tools into the prompt, tool calls out of the output.

A model whose chat template renders tools (it reads a `tools` variable) gets them from its own
template, and its history's tool calls and results in the template's own shape. Any other chat
model gets them in the system message, as the text TOOLS_PROMPT below. Either way the model's output
is constrained by a grammar (structured.py), so a call is always written exactly as

    {open}{"name":"<tool>","arguments":<JSON matching the tool's parameters>}{close}

where open/close are the template's tags (`<tool_call>\\n` … `\\n</tool_call>` for Hermes-style
templates such as Qwen2.5's) or nothing. ToolCallReader reads that back, whole or streamed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.protocol.openai import ChatMessage, FunctionCall, ToolCall, ToolDefinition, tool_call_id

_ROLE_MAP = {"developer": "system"}

TOOLS_PROMPT = (
    "You can call the tools listed below. To call one, reply with only a JSON object of the form "
    '{"name": <tool name>, "arguments": <an object matching its parameters>} and nothing else.'
)
TOOLS_PROMPT_AUTO = " When no tool is needed, answer in plain text instead."


@dataclass(frozen=True)
class ToolSyntax:
    """How a tool call is written in the model's output."""

    open: str = ""
    close: str = ""

    def prefix(self, name: str) -> str:
        return f'{self.open}{{"name":{json.dumps(name)},"arguments":'

    @property
    def suffix(self) -> str:
        return "}" + self.close

    def write(self, name: str, arguments: str) -> str:
        return self.prefix(name) + arguments + self.suffix


BARE = ToolSyntax()
HERMES = ToolSyntax("<tool_call>\n", "\n</tool_call>")


def template_source(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one renders chat
        template = template.get("default") or template.get("tool_use")
    return template if isinstance(template, str) and template.strip() else None


def template_renders_tools(tokenizer: Any) -> bool:
    source = template_source(tokenizer)
    return source is not None and "tools" in source


def syntax_for(tokenizer: Any) -> ToolSyntax:
    source = template_source(tokenizer) or ""
    return HERMES if template_renders_tools(tokenizer) and "<tool_call>" in source else BARE


def tool_schema(tool: ToolDefinition) -> dict[str, Any]:
    """The tool's parameters schema; a function declared without parameters takes none."""
    params = tool.function.parameters
    return params if params else {"type": "object", "properties": {}, "additionalProperties": False}


def tools_system_text(tools: Sequence[ToolDefinition], *, may_answer: bool) -> str:
    lines = [TOOLS_PROMPT + (TOOLS_PROMPT_AUTO if may_answer else ""), "", "Tools:"]
    for tool in tools:
        fn = tool.function
        desc = f" {fn.description.strip()}" if fn.description else ""
        lines.append(f"- {fn.name}:{desc} Parameters (JSON schema): "
                     f"{json.dumps(tool_schema(tool), ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(lines)


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def chat_messages(messages: Sequence[ChatMessage], default_system: str, *, tools: Sequence[ToolDefinition],
                  native_tools: bool, syntax: ToolSyntax, may_answer: bool) -> list[dict[str, Any]]:
    """OpenAI messages as chat-template messages, with the tools described in the system message when the
    template cannot render them itself (native_tools false)."""
    names = {c.id: c.function.name for m in messages for c in (m.tool_calls or ())}
    out: list[dict[str, Any]] = []
    for m in messages:
        role = _ROLE_MAP.get(m.role, m.role)
        text = m.text()
        if role == "assistant" and m.tool_calls:
            if native_tools:
                out.append({"role": "assistant", "content": text, "tool_calls": [
                    {"type": "function", "id": c.id,
                     "function": {"name": c.function.name, "arguments": _arguments_value(c.function.arguments)}}
                    for c in m.tool_calls]})
                continue
            text = "\n".join([text] * bool(text) + [syntax.write(c.function.name, c.function.arguments)
                                                    for c in m.tool_calls])
        elif role == "tool":
            name = m.name or names.get(m.tool_call_id or "", "")
            if native_tools:
                out.append({"role": "tool", "content": text, "name": name, "tool_call_id": m.tool_call_id})
                continue
            role, text = "user", f"Result of the tool {name or m.tool_call_id or ''}:\n{text}"
        out.append({"role": role, "content": text})
    if not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": default_system})
    if tools and not native_tools:
        first = next(m for m in out if m["role"] == "system")
        first["content"] = f"{first['content']}\n\n{tools_system_text(tools, may_answer=may_answer)}"
    return out


def template_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tools as chat templates read them (OpenAI's shape, parameters always present)."""
    return [{"type": "function", "function": {"name": t.function.name, "description": t.function.description or "",
                                              "parameters": tool_schema(t)}} for t in tools]


@dataclass
class ToolCallReader:
    """Splits a constrained output into plain content or one tool call, whole or as it streams.

    While the text so far could still be the start of a call it is held back; once it is a call,
    its arguments are released as they come, less the few characters that may be the call's end.
    """

    syntax: ToolSyntax
    names: Sequence[str]
    buffer: str = ""
    mode: str = "undecided"  # "undecided" | "content" | "call"
    name: str | None = None
    sent: int = 0  # characters of the buffer already released
    call_id: str = field(default_factory=tool_call_id)

    def feed(self, text: str) -> list[tuple[str, str]]:
        """New events: ("content", text), ("call", name) once, then ("arguments", fragment)."""
        self.buffer += text
        events: list[tuple[str, str]] = []
        if self.mode == "undecided":
            for name in self.names:
                prefix = self.syntax.prefix(name)
                if self.buffer.startswith(prefix):
                    self.mode, self.name, self.sent = "call", name, len(prefix)
                    events.append(("call", name))
                    break
            else:
                if not any(self.syntax.prefix(n).startswith(self.buffer) for n in self.names):
                    self.mode = "content"
        if self.mode == "content":
            events.append(("content", self.buffer[self.sent:]))
            self.sent = len(self.buffer)
        elif self.mode == "call":
            end = len(self.buffer) - len(self.syntax.suffix)
            if end > self.sent:
                events.append(("arguments", self.buffer[self.sent:end]))
                self.sent = end
        return [e for e in events if e[1] or e[0] == "call"]

    def finish(self) -> list[tuple[str, str]]:
        """The rest at the end of the output (a cut-off call keeps what it had)."""
        if self.mode == "call":
            rest = self.buffer[self.sent:]
            if rest.endswith(self.syntax.suffix):
                rest = rest[: -len(self.syntax.suffix)]
            self.sent = len(self.buffer)
            return [("arguments", rest)] if rest else []
        self.mode = "content"
        rest, self.sent = self.buffer[self.sent:], len(self.buffer)
        return [("content", rest)] if rest else []

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """A whole output as (content, tool calls)."""
        events = self.feed(text) + self.finish()
        if self.mode != "call":
            return "".join(t for _, t in events), []
        arguments = "".join(t for kind, t in events if kind == "arguments")
        assert self.name is not None
        return None, [ToolCall(id=self.call_id, function=FunctionCall(name=self.name, arguments=arguments))]
