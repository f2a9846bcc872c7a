"""docker-compose.yml: valid against the Compose specification, and wired the way the docs say.

No Docker engine runs where these tests run, so they check what `docker compose config` and
`docker compose up` would check first (schema, references per profile), plus AION's own rules
(healthchecks, migrations first, inference not published, secrets only from `.env`, commands and
environment variables that really exist in the code).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from aion.cli import build_parser
from aion.commands.up import subcommand_paths
from tests.stack.helpers import (
    COMPOSE_FILE,
    COMPOSE_OVERRIDES,
    DOCKERFILES,
    ENV_EXAMPLE,
    PROFILES,
    REPO,
    command_argv,
    depends_on,
    enabled_services,
    environment,
    interpolate_tree,
    is_secret,
    parse_env_example,
    settings_env_for,
    variables_used,
)

EXPECTED = {
    "cpu": {"db", "migrate", "gateway", "inference-cpu", "scheduler", "trainer-cpu", "pgadmin"},
    "gpu": {"db", "migrate", "gateway", "inference-gpu", "scheduler", "trainer-gpu", "pgadmin"},
    "vllm": {"db", "migrate", "gateway-vllm", "vllm", "embeddings", "scheduler", "trainer-vllm", "pgadmin"},
}
# What a user puts in .env for `docker compose up` to start (the three secrets .env.example asks for).
SAMPLE_SECRETS = {"POSTGRES_PASSWORD": "pw0123456789", "PGADMIN_DEFAULT_PASSWORD": "admin-pw",
                  "AION_INFERENCE_TOKEN": "tok0123456789"}


def check_jsonschema() -> Path:
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is missing: pip install -e '.[dev]'"
    return exe


@pytest.mark.parametrize("path", [COMPOSE_FILE, *COMPOSE_OVERRIDES], ids=lambda p: p.name)
def test_compose_files_match_the_compose_specification(path: Path) -> None:
    # The Compose spec's JSON schema as vendored by check-jsonschema: validated offline.
    result = subprocess.run([str(check_jsonschema()), "--builtin-schema", "vendor.compose-spec", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_what_compose_rejects(tmp_path: Path) -> None:
    """Guard against a schema check that passes everything."""
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  x:\n    image: busybox:1.36\n    restart_policy: always\n")
    result = subprocess.run([str(check_jsonschema()), "--builtin-schema", "vendor.compose-spec", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "restart_policy" in result.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_starts_the_whole_stack(services: dict[str, Any], profile: str) -> None:
    assert enabled_services(services, profile) == EXPECTED[profile]


def test_no_service_runs_without_a_profile(services: dict[str, Any]) -> None:
    # Plain `docker compose up` must not start a half stack; it says "no service selected" instead.
    assert all(svc.get("profiles") for svc in services.values())


@pytest.mark.parametrize("profile", PROFILES)
def test_dependencies_resolve_within_each_profile(services: dict[str, Any], profile: str) -> None:
    """What compose checks before starting: no dependency on a service the profile leaves out,
    unless it is marked `required: false`; and no cycle."""
    enabled = enabled_services(services, profile)
    for name in enabled:
        for dep, cfg in depends_on(services[name]).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            if dep not in enabled:
                assert cfg["required"] is False, f"--profile {profile}: {name} depends on disabled {dep}"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join(path + (name,))}"
        for dep in depends_on(services[name]):
            if dep in enabled:
                visit(dep, path + (name,))

    for name in enabled:
        visit(name, ())


def _is_oneshot(svc: dict[str, Any]) -> bool:
    return svc.get("restart") == "no"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        if _is_oneshot(svc):
            assert check.get("disable") is True, f"{name}: a one-shot job has no health, only an exit status"
            continue
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") == "unless-stopped", f"{name}: long-running services restart"


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep, cfg in depends_on(svc).items():
            wanted = "service_completed_successfully" if _is_oneshot(services[dep]) else "service_healthy"
            assert cfg["condition"] == wanted, f"{name} -> {dep}: condition {cfg['condition']}, want {wanted}"


def test_migrations_run_before_anything_uses_the_database(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert command_argv(migrate) == ["aion", "db", "upgrade"]
    assert depends_on(migrate)["db"]["condition"] == "service_healthy"
    for name in ("gateway", "gateway-vllm", "scheduler", "trainer-cpu", "trainer-gpu", "trainer-vllm"):
        assert depends_on(services[name])["migrate"]["condition"] == "service_completed_successfully", name
    # The gateway would otherwise migrate again on start.
    for name in ("gateway", "gateway-vllm"):
        assert environment(services[name])["AION_DB_MIGRATE_ON_START"] == "false", name


def test_gateway_waits_for_whichever_inference_runs(services: dict[str, Any]) -> None:
    deps = depends_on(services["gateway"])
    for variant in ("inference-cpu", "inference-gpu"):
        assert deps[variant] == {"condition": "service_healthy", "required": False}
        assert depends_on(services[variant.replace("inference", "trainer")])[variant]["required"] is True


def test_inference_is_reachable_only_inside_the_stack(services: dict[str, Any]) -> None:
    for variant in ("inference-cpu", "inference-gpu"):
        svc = services[variant]
        assert "ports" not in svc, f"{variant} must not publish 8008 by default"
        assert svc["networks"]["default"]["aliases"] == ["inference"]
        env = environment(svc)
        assert env["AION_HOST"] == "0.0.0.0" and env["AION_PORT"] == "8008"
    for name in ("gateway", "trainer-cpu", "trainer-gpu"):
        url = urlparse(environment(services[name])["AION_LOCAL_LLM_URL"])
        assert (url.hostname, url.port) == ("inference", 8008), name
    for name in ("vllm", "embeddings"):
        assert "ports" not in services[name], f"{name} must not be published by default"


def test_the_vllm_profile_serves_chat_on_vllm_and_embeddings_apart(services: dict[str, Any]) -> None:
    """Gateway and trainer are told the backend; the gateway waits for both servers it calls."""
    gateway, trainer = environment(services["gateway-vllm"]), environment(services["trainer-vllm"])
    for env in (gateway, trainer):
        assert env["AION_INFERENCE_BACKEND"] == "vllm"
        url = urlparse(env["AION_LOCAL_LLM_URL"])
        assert (url.hostname, url.port) == ("vllm", 8000)
    url = urlparse(gateway["AION_EMBEDDINGS_URL"])
    assert (url.hostname, url.port) == ("embeddings", 8008)
    assert environment(services["embeddings"])["AION_PORT"] == "8008"
    deps = depends_on(services["gateway-vllm"])
    assert deps["vllm"]["condition"] == deps["embeddings"]["condition"] == "service_healthy"
    assert depends_on(services["trainer-vllm"])["vllm"]["condition"] == "service_healthy"
    assert "inference-cpu" not in deps and "inference-gpu" not in deps


def test_the_embeddings_service_loads_no_chat_model(services: dict[str, Any]) -> None:
    argv = command_argv(services["embeddings"])
    assert argv == ["aion", "inference", "--embeddings-only"]
    args = build_parser().parse_args(argv[1:])
    assert args.embeddings_only is True


def test_vllm_can_load_the_adapters_the_trainer_promotes(services: dict[str, Any]) -> None:
    from trainer.settings import TrainerSettings

    vllm = services["vllm"]
    args = interpolate_tree(command_argv(vllm), dict(SAMPLE_SECRETS))
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in args if a.startswith("--"))
    assert "enable-lora" in flags
    assert int(flags["max-lora-rank"]) >= TrainerSettings.model_fields["lora_r"].default
    assert int(flags["tensor-parallel-size"]) == 1 and 0 < float(flags["gpu-memory-utilization"]) < 1
    env = environment(vllm)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    # The same Bearer token AION's inference service takes, so gateway and trainer need no other secret.
    assert env["VLLM_API_KEY"] == environment(services["embeddings"])["AION_INFERENCE_TOKEN"]
    # Adapters are read where the trainer writes them, and the base is the one the trainer trains.
    assert _mounts(vllm)["/training/adapters"] == "adapters:ro"
    assert _mounts(services["trainer-vllm"])["/training/adapters"] == "adapters"
    for env_override in ({}, {"AION_BASE_MODEL": "/models/my-model"}):
        resolved = {**SAMPLE_SECRETS, **env_override}
        served = interpolate_tree(command_argv(vllm), resolved)[0]
        trained = interpolate_tree(environment(services["trainer-vllm"]), resolved)["AION_LORA_BASE"]
        assert served == trained


@pytest.mark.parametrize("name", ["gateway", "gateway-vllm"])
def test_the_gateway_accepts_the_settings_compose_gives_it(services: dict[str, Any], name: str) -> None:
    """What `aion gateway` does first in the container: build its settings from this environment."""
    from services.gateway.settings import GatewaySettings

    env = interpolate_tree(environment(services[name]), dict(SAMPLE_SECRETS))
    settings = GatewaySettings(_env_file=None, **{k: v for k, v in env.items() if v is not None})
    assert settings.inference_backend == ("vllm" if name.endswith("vllm") else "aion")


def test_published_ports(services: dict[str, Any]) -> None:
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert set(published) == {"gateway", "gateway-vllm", "pgadmin"}
    ports = interpolate_tree(published, dict(SAMPLE_SECRETS))
    assert ports["gateway"] == ports["gateway-vllm"] == ["3000:3000"]
    assert ports["pgadmin"] == ["127.0.0.1:5050:80"], "pgAdmin stays on loopback unless asked"


def test_the_publish_override_only_adds_loopback_ports() -> None:
    import yaml

    override = yaml.safe_load(COMPOSE_OVERRIDES[0].read_text())
    assert set(override["services"]) == {"inference-cpu", "inference-gpu", "vllm", "embeddings"}
    for name, svc in override["services"].items():
        port = "8000" if name == "vllm" else "8008"
        assert svc == {"ports": [f"127.0.0.1:{port}:{port}"]}, name


def test_gpu_services_reserve_the_gpu_and_cpu_ones_do_not(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        devices = (svc.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
        wants_gpu = name.endswith("-gpu") or name in ("vllm", "trainer-vllm")
        if wants_gpu:
            assert devices and "gpu" in devices[0]["capabilities"], name
        else:
            assert not devices, name


def test_profile_models(services: dict[str, Any]) -> None:
    """CPU: the packaged SmolLM2 in full precision; GPU: a 7B instruct model in 4-bit."""
    cpu = interpolate_tree(environment(services["inference-cpu"]), dict(SAMPLE_SECRETS))
    gpu = interpolate_tree(environment(services["inference-gpu"]), dict(SAMPLE_SECRETS))
    assert cpu["AION_BASE_MODEL"] == "smollm2-135m-instruct" and cpu["AION_DEVICE"] == "cpu"
    assert re.search(r"7B", gpu["AION_BASE_MODEL"]) and "Instruct" in gpu["AION_BASE_MODEL"]
    assert gpu["AION_DEVICE"] == "cuda" and gpu["AION_LOAD_IN_4BIT"] == "true"


@pytest.mark.parametrize("env", [{}, {"AION_BASE_MODEL": "/models/my-model"}], ids=["default", "custom"])
def test_trainer_trains_the_base_that_inference_serves(services: dict[str, Any], env: dict[str, str]) -> None:
    for variant in ("cpu", "gpu"):
        served = interpolate_tree(environment(services[f"inference-{variant}"]), {**SAMPLE_SECRETS, **env})["AION_BASE_MODEL"]
        trained = interpolate_tree(environment(services[f"trainer-{variant}"]), {**SAMPLE_SECRETS, **env})["AION_LORA_BASE"]
        assert served == trained, variant


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """{container path: volume name (+ ':ro')} of named-volume mounts."""
    out = {}
    for spec in svc.get("volumes", []):
        parts = spec.split(":")
        if not parts[0].startswith((".", "/")):
            out[parts[1]] = parts[0] + (":ro" if parts[2:] == ["ro"] else "")
    return out


def test_models_and_adapters_are_volumes_shared_by_inference_and_trainer(compose: dict[str, Any],
                                                                        services: dict[str, Any]) -> None:
    for variant in ("cpu", "gpu"):
        inference, trainer = _mounts(services[f"inference-{variant}"]), _mounts(services[f"trainer-{variant}"])
        assert inference["/models"] == trainer["/models"] == "models"
        assert trainer["/training/adapters"] == "adapters" and inference["/training/adapters"] == "adapters:ro"
        inference_env = environment(services[f"inference-{variant}"])
        trainer_env = environment(services[f"trainer-{variant}"])
        assert inference_env["AION_MODEL_CACHE_DIR"] == trainer_env["AION_MODEL_CACHE_DIR"] == "/models"
        # The trainer's "active" link is what a restarted inference serves.
        assert inference_env["AION_ADAPTER_DIR"] == trainer_env["AION_ADAPTER_DIR"]
        assert inference_env["AION_ADAPTER_DIR"].startswith("/training/adapters/")
        assert trainer_env["AION_TRAIN_ROOT"] == "/training"
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for volume in _mounts(svc).values():
            assert volume.split(":")[0] in declared, f"{name} mounts undeclared volume {volume}"


def test_scheduler_exports_where_the_trainer_looks(services: dict[str, Any]) -> None:
    scheduler = services["scheduler"]
    assert environment(scheduler)["AION_TRAIN_ROOT"] == "/training"
    assert _mounts(scheduler)["/training"] == "training" == _mounts(services["trainer-cpu"])["/training"]


def test_images_are_pinned_or_built_here(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        if "build" in svc:
            assert image.startswith("aion/"), name
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned image {image}"


def test_build_sections_point_at_real_dockerfiles_and_stages(services: dict[str, Any]) -> None:
    built: dict[str, tuple[str, str | None]] = {}
    for name, svc in services.items():
        if "build" not in svc:
            continue
        build = svc["build"]
        dockerfile = REPO / build.get("context", ".") / build["dockerfile"]
        assert dockerfile in DOCKERFILES.values(), f"{name}: {dockerfile}"
        if "target" in build:
            stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE)
            assert build["target"] in stages, f"{name}: no stage {build['target']} in {dockerfile}"
        # Services sharing an image name must build it identically.
        recipe = (build["dockerfile"], build.get("target"))
        assert built.setdefault(svc["image"], recipe) == recipe, name


def test_secrets_come_only_from_the_env_file(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        assert "env_file" not in svc, f"{name}: pass variables explicitly, not a whole env file"
        for key, value in environment(svc).items():
            if is_secret(key) and value is not None:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?][^}]*)?\}", value), (
                    f"{name}.{key} must come from .env (${{VAR:?...}} or a bare pass-through), got {value!r}")
    text = COMPOSE_FILE.read_text()
    for secret in ("POSTGRES_PASSWORD", "PGADMIN_DEFAULT_PASSWORD", "AION_INFERENCE_TOKEN"):
        assert re.search(rf"\$\{{{secret}:\?", text), f"compose must refuse to start without {secret}"


def test_compose_starts_with_just_the_three_secrets(compose: dict[str, Any]) -> None:
    """Interpolated with only what .env.example asks to fill in, nothing is missing and the URLs parse."""
    resolved = interpolate_tree(compose, dict(SAMPLE_SECRETS))
    gateway = resolved["services"]["gateway"]["environment"]
    url = urlparse(gateway["DATABASE_URL"])
    assert (url.scheme, url.username, url.password, url.hostname, url.port, url.path) == (
        "postgresql", "aion", "pw0123456789", "db", 5432, "/aion")
    assert resolved["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == "pw0123456789"


def test_every_interpolated_variable_is_in_env_example() -> None:
    documented = parse_env_example(ENV_EXAMPLE)
    for path in (COMPOSE_FILE, *COMPOSE_OVERRIDES):
        missing = sorted(variables_used(path.read_text()) - set(documented))
        assert not missing, f"{path.name} uses variables .env.example does not list: {missing}"


def test_every_command_is_a_real_aion_subcommand(services: dict[str, Any]) -> None:
    """Fails (does not skip) while a command the stack needs is not registered in aion/cli.py."""
    parser = build_parser()
    available = subcommand_paths(parser)
    problems = []
    for name, svc in sorted(services.items()):
        argv = command_argv(svc)
        if not argv or argv[0] != "aion":
            continue
        path = tuple(a for a in argv[1:] if not a.startswith("-"))
        if path not in available:
            problems.append(f"{name}: `{' '.join(argv)}` is not an aion subcommand")
            continue
        try:
            parser.parse_args(argv[1:])
        except SystemExit:
            problems.append(f"{name}: `{' '.join(argv)}` does not parse")
    assert not problems, "\n".join(problems)


def test_every_environment_variable_is_read_by_the_service_that_gets_it(services: dict[str, Any]) -> None:
    """A variable the code does not read is a silent no-op; that is how configuration rots."""
    documented = parse_env_example(ENV_EXAMPLE)
    problems = []
    for name, svc in sorted(services.items()):
        argv = command_argv(svc)
        if not argv or argv[0] != "aion":
            continue
        readers = settings_env_for(argv)
        known = set().union(*readers.values())
        for key in environment(svc):
            if key in known:
                continue
            entry = documented.get(key)
            if entry is not None and entry.compose_only:
                continue
            problems.append(f"{name}: {key} is read by none of {sorted(readers)}")
    assert not problems, "\n".join(problems)


def test_pgadmin_is_provisioned_with_the_aion_server(services: dict[str, Any]) -> None:
    pgadmin = services["pgadmin"]
    env = environment(pgadmin)
    mounts = {spec.split(":")[1]: spec.split(":")[0] for spec in pgadmin["volumes"] if spec.startswith("./")}
    assert mounts[env["PGADMIN_SERVER_JSON_FILE"]] == "./deploy/pgadmin/servers.json"
    servers = json.loads((REPO / "deploy" / "pgadmin" / "servers.json").read_text())["Servers"]
    assert len(servers) == 1
    server = next(iter(servers.values()))
    db_env = interpolate_tree(environment(services["db"]), dict(SAMPLE_SECRETS))
    assert (server["Host"], server["Port"]) == ("db", 5432)
    assert server["Username"] == db_env["POSTGRES_USER"] and server["MaintenanceDB"] == db_env["POSTGRES_DB"]
    assert "Password" not in server, "no password in the repository"
    assert depends_on(pgadmin)["db"]["condition"] == "service_healthy"


def test_db_is_postgres_with_pgvector_on_a_volume(services: dict[str, Any]) -> None:
    db = services["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    major = int(re.search(r"-pg(\d+)", db["image"]).group(1))
    assert major >= 16
    # From PostgreSQL 18 the images keep the cluster under /var/lib/postgresql/<major>/docker.
    assert _mounts(db)["/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"] == "pgdata"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def _volume_at(svc: dict[str, Any], path: str) -> tuple[str, str, bool] | None:
    """(volume, mount point, writable) of the named-volume mount that holds `path` in this container."""
    best = None
    for point, spec in _mounts(svc).items():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and (best is None or len(point) > len(best[1])):
            best = (spec.split(":")[0], point, not spec.endswith(":ro"))
    return best


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_adapter_paths_resolve_to_the_same_files_in_every_container(services: dict[str, Any], variant: str) -> None:
    """Registered adapter paths and the `active` link are absolute paths written by one container and
    read by others: rollback from the gateway (activate, deactivate) and a restarted inference need
    them to name the same files there, and the gateway must be able to re-point the link."""
    from services.gateway.settings import GatewaySettings
    from services.inference.settings import InferenceSettings
    from trainer.worker_settings import WorkerSettings

    def env(name: str) -> dict[str, str]:
        values = interpolate_tree(environment(services[name]), dict(SAMPLE_SECRETS))
        return {k: v for k, v in values.items() if v is not None}

    trainer, gateway, inference = services[f"trainer-{variant}"], services["gateway"], services[f"inference-{variant}"]
    worker = WorkerSettings(_env_file=None, **env(f"trainer-{variant}"))
    written_root = str(worker.adapters_root())  # every adapter folder the registry names lives here
    link = str(worker.active_adapter_link())
    assert str(GatewaySettings(_env_file=None, **env("gateway")).active_adapter_link()) == link
    assert str(InferenceSettings(_env_file=None, **env(f"inference-{variant}")).adapter_dir) == link

    volume, point, writable = _volume_at(trainer, written_root)
    assert writable
    for name, svc, must_write in (("gateway", gateway, True), (f"inference-{variant}", inference, False)):
        for path in (written_root, link):
            mount = _volume_at(svc, path)
            assert mount is not None, f"{name} cannot see {path}"
            assert mount[:2] == (volume, point), f"{name} sees {path} in {mount}, the trainer in {(volume, point)}"
            assert mount[2] or not must_write, f"{name} must be able to re-point {link}"
