"""What the stack checks share: compose semantics, `.env.example` parsing, settings discovery."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_OVERRIDES = [REPO / "deploy" / "compose.publish-inference.yml"]
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILES = {
    "gateway": REPO / "services" / "gateway" / "Dockerfile",
    "inference-cpu": REPO / "services" / "inference" / "Dockerfile.cpu",
    "inference-gpu": REPO / "services" / "inference" / "Dockerfile.gpu",
    "trainer": REPO / "trainer" / "Dockerfile",
}
PROFILES = ("cpu", "gpu", "vllm")

# The settings classes each `aion` command reads; an environment variable compose gives a service
# must be read by one of them (or be documented in .env.example as compose only).
COMMAND_SETTINGS: dict[tuple[str, ...], list[str]] = {
    ("inference",): ["services.inference.settings:InferenceSettings"],
    ("gateway",): ["services.gateway.settings:GatewaySettings"],
    ("db", "upgrade"): ["shared.db.settings:DatabaseSettings"],
    # The scheduler's web-page refresh fetches and ingests with the gateway's own settings.
    ("scheduler",): ["services.scheduler.settings:SchedulerSettings", "services.gateway.settings:GatewaySettings"],
    ("trainer", "worker"): ["trainer.settings:TrainerSettings", "trainer.worker_settings:WorkerSettings"],
}

# ---- compose semantics ---------------------------------------------------------------------------


def enabled_services(services: dict[str, dict[str, Any]], profile: str) -> set[str]:
    """Services `docker compose --profile <profile> up` starts (no profiles: always on)."""
    return {name for name, svc in services.items() if not svc.get("profiles") or profile in svc["profiles"]}


def depends_on(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """depends_on in its long form: {service: {condition, required}}."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: {"condition": "service_started", "required": True} for d in deps}
    return {d: {"condition": "service_started", "required": True, **(cfg or {})} for d, cfg in deps.items()}


def command_argv(svc: dict[str, Any]) -> list[str] | None:
    cmd = svc.get("command")
    if cmd is None:
        return None
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = item.partition("=")
            out[key] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR, $$.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (defaults may nest, as compose-go allows)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end, expr = _braced(text, i + 2)
            out.append(_resolve(expr, env))
            i = end + 1
        else:
            m = _NAME.match(text, i + 1)
            if not m:
                out.append("$")
                i += 1
                continue
            out.append(env.get(m.group(), ""))
            i = m.end()
    return "".join(out)


def _braced(text: str, start: int) -> tuple[int, str]:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i, text[start:i]
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _resolve(expr: str, env: dict[str, str]) -> str:
    m = _NAME.match(expr)
    if not m:
        raise ValueError(f"bad variable expression ${{{expr}}}")
    name, rest = m.group(), expr[m.end():]
    value = env.get(name)
    for op in (":-", "-", ":?", "?"):
        if rest.startswith(op):
            arg = rest[len(op):]
            unset = value is None or (op.startswith(":") and value == "")
            if op.endswith("-"):
                return interpolate(arg, env) if unset else value  # type: ignore[return-value]
            if unset:
                raise MissingVariable(f"{name}: {interpolate(arg, env)}")
            return value  # type: ignore[return-value]
    if rest:
        raise ValueError(f"unsupported expression ${{{expr}}}")
    return value or ""


def variables_used(text: str) -> set[str]:
    """Every variable name a compose file interpolates (in defaults too)."""
    names: set[str] = set()
    for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)|(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)", text):
        names.add(m.group(1) or m.group(2))
    return names


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(n, env) for n in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


# ---- .env.example --------------------------------------------------------------------------------

_ENTRY = re.compile(r"^(?P<commented>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass
class EnvEntry:
    name: str
    value: str
    commented: bool
    compose_only: bool
    line: int


def parse_env_example(path: Path) -> dict[str, EnvEntry]:
    """Entries of .env.example; `(compose only)` in the comment block above an entry marks it."""
    entries: dict[str, EnvEntry] = {}
    block: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        m = _ENTRY.match(line)
        if m:
            name = m["name"]
            if name in entries:
                raise AssertionError(f".env.example lists {name} twice (lines {entries[name].line} and {number})")
            compose_only = any("compose only" in b for b in block)
            entries[name] = EnvEntry(name, m["value"], bool(m["commented"]), compose_only, number)
            continue
        if not line.strip():
            block = []
        elif line.startswith("#"):
            block.append(line)
    return entries


# ---- settings classes ----------------------------------------------------------------------------

SETTINGS_PACKAGES = ("shared", "services", "trainer", "aion")


_SETTINGS_CLASS = re.compile(r"^class \w+\([^)]*Settings[^)]*\):", re.MULTILINE)


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Every BaseSettings subclass the project defines: {'module:Class': cls}.

    Only modules whose source declares a `class X(...Settings)` are imported, so nothing heavy loads.
    """
    found: dict[str, type[BaseSettings]] = {}
    for package in SETTINGS_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if not _SETTINGS_CLASS.search(path.read_text(errors="replace")):
                continue
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            for obj in vars(module).values():
                if (isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
                        and obj.__module__ == module.__name__):
                    found[f"{module.__name__}:{obj.__name__}"] = obj
    return found


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """{ENV_NAME: field_name} a settings class reads."""
    prefix = cls.model_config.get("env_prefix", "") or ""
    names: dict[str, str] = {}
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names[alias] = field
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice] = field
        elif isinstance(alias, AliasPath):
            continue
        else:
            names[(prefix + (info.alias or field)).upper()] = field
    return names


def load_settings_class(path: str) -> type[BaseSettings]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def is_secret(name: str) -> bool:
    parts = name.split("_")
    return bool({"PASSWORD", "TOKEN", "SECRET"} & set(parts)) or name.endswith("API_KEY")


def settings_env_for(argv: list[str]) -> dict[str, set[str]]:
    """{'module:Class': env names} the settings classes of `aion ...` argv read."""
    path = tuple(a for a in argv[1:] if not a.startswith("-"))
    classes = COMMAND_SETTINGS.get(path)
    assert classes, f"no settings mapping for `{' '.join(argv)}`: add it to COMMAND_SETTINGS"
    found = {}
    for ref in classes:
        try:
            found[ref] = set(env_names(load_settings_class(ref)))
        except (ImportError, AttributeError) as exc:
            raise AssertionError(f"`{' '.join(argv)}` needs settings class {ref}: {exc}") from exc
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))
