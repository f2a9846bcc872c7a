""".env.example: every variable, its default and meaning, and nothing the code does not read."""

from __future__ import annotations

import pytest

from tests.stack.helpers import ENV_EXAMPLE, env_names, is_secret, parse_env_example, settings_classes

SECRETS = ("POSTGRES_PASSWORD", "PGADMIN_DEFAULT_PASSWORD", "AION_INFERENCE_TOKEN")
# The seed's names (DESIGN.md "Contracts from the seeds") stay as they are.
SEED_NAMES = ("AION_BASE_MODEL", "AION_ADAPTER_DIR", "AION_HOST", "AION_PORT", "AION_LOAD_IN_4BIT",
              "AION_MAX_NEW_TOKENS", "AION_TEMPERATURE", "AION_TOP_P", "AION_SYSTEM_PROMPT", "DATABASE_URL",
              "AION_LOCAL_LLM_URL", "AION_TAU_CONFIDENCE", "AION_TAU_FALLBACK", "AION_TAU_NDCG",
              "AION_TRAIN_ROOT", "AION_LORA_BASE", "AION_EVENTS_JSONL", "PRIMARY_TENANT_ID", "OPENAI_API_KEY")


@pytest.fixture(scope="module")
def entries():
    return parse_env_example(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def readers() -> dict[str, list[str]]:
    """{ENV_NAME: ['module:Class', ...]} over every settings class of the project."""
    out: dict[str, list[str]] = {}
    for ref, cls in settings_classes().items():
        for name in env_names(cls):
            out.setdefault(name, []).append(ref)
    return out


def test_every_variable_is_read_by_the_code_or_marked_compose_only(entries, readers) -> None:
    unread = [f"{e.name} (line {e.line})" for e in entries.values() if not e.compose_only and e.name not in readers]
    assert not unread, f"no settings class reads: {unread}; fix the name, or mark it '(compose only)'"


def test_compose_only_variables_are_not_settings(entries, readers) -> None:
    wrong = [e.name for e in entries.values() if e.compose_only and e.name in readers]
    assert not wrong, f"marked compose only, but the code reads them: {wrong}"


def test_every_setting_is_documented(entries, readers) -> None:
    missing = sorted(set(readers) - set(entries))
    assert not missing, f"settings .env.example does not list: {missing}"


def test_seed_names_are_listed(entries) -> None:
    assert not [n for n in SEED_NAMES if n not in entries]


def test_secrets_ship_empty_and_uncommented(entries) -> None:
    """Compose refuses to start until they are set; no sample value can end up in production."""
    for name in SECRETS:
        assert not entries[name].commented and entries[name].value == "", name
    for entry in entries.values():
        if is_secret(entry.name):
            assert entry.value == "", f"{entry.name} carries a value"


def test_only_secrets_are_uncommented(entries) -> None:
    # `.env` is read by local `aion` runs too: anything uncommented would override their defaults.
    assert sorted(e.name for e in entries.values() if not e.commented) == sorted(SECRETS)


def test_documented_defaults_are_the_code_defaults(entries) -> None:
    """A commented line shows the default; it must be what the settings class really uses."""
    problems = []
    for ref, cls in settings_classes().items():
        for env, field in env_names(cls).items():
            entry = entries.get(env)
            if entry is None or not entry.commented or entry.value == "":
                continue
            default = cls.model_fields[field].get_default(call_default_factory=True)
            try:
                parsed = getattr(cls(_env_file=None, **{env: entry.value}), field)
            except Exception as exc:  # an invalid documented value is a documentation bug
                problems.append(f"{env}={entry.value!r} is rejected by {ref}: {exc}")
                continue
            if parsed != default:
                problems.append(f"{env}: .env.example says {entry.value!r}, {ref} defaults to {default!r}")
    assert not problems, "\n".join(problems)
