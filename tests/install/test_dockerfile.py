"""The Dockerfile, without a Docker engine: what it copies exists and is not ignored, the images run unprivileged, and the copied files build.

The build check installs exactly the files the build stage COPYs into a fresh directory and builds the wheel from them.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    name = ""
    for instruction, args in instructions():
        if instruction == "FROM":
            words = args.split()
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else f"stage{len(result)}"
            result[name] = []
        if name:
            result[name].append((instruction, args))
    return result


def context_copies() -> list[str]:
    """Sources of COPY/ADD from the build context (not --from another stage)."""
    sources = []
    for instruction, args in instructions():
        if instruction in {"COPY", "ADD"}:
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last matching pattern wins, like Docker)."""
    excluded = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            excluded = not negate
    return excluded


def inherited(name: str, instruction: str) -> str | None:
    """The last value of an instruction in a stage, following FROM <stage> chains."""
    all_stages = stages()
    while name in all_stages:
        values = [args for i, args in all_stages[name] if i == instruction]
        if values:
            return values[-1]
        name = all_stages[name][0][1].split()[0]
    return None


def test_every_copied_path_exists() -> None:
    sources = context_copies()
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_no_copied_path_is_excluded_by_dockerignore() -> None:
    for source in context_copies():
        assert not ignored(source.rstrip("/")), source


def test_operator_is_the_default_target_and_runs_specserve_run() -> None:
    names = list(stages())
    assert names[-1] == "operator"
    assert json.loads(inherited("operator", "ENTRYPOINT")) + json.loads(inherited("operator", "CMD")) == ["specserve", "run"]


def test_simulator_target_answers_vllm_serve_like_the_vllm_image() -> None:
    assert json.loads(inherited("simulator", "ENTRYPOINT")) == ["vllm", "serve"]


def test_simulator_target_puts_a_vllm_shim_on_path_that_runs_specserve_simulate() -> None:
    runs = " ".join(args for instruction, args in stages()["simulator"] if instruction == "RUN")
    assert "/opt/specserve/bin/vllm" in runs and 'exec specserve simulate "$@"' in runs


@pytest.mark.parametrize("target", ["operator", "simulator"])
def test_images_run_as_a_non_root_uid(target: str) -> None:
    user = inherited(target, "USER")
    assert user is not None and user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0


def test_base_image_is_slim_python_311() -> None:
    args = dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")


def test_runtime_stages_copy_only_the_built_environment() -> None:
    for name in ("runtime", "operator", "simulator"):
        copies = [args for i, args in stages()[name] if i in {"COPY", "ADD"}]
        assert all(c.startswith("--from=build ") for c in copies), (name, copies)


def test_copied_files_build_the_specserve_wheel(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in context_copies():
        src = ROOT / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(src, context / source.rstrip("/"), ignore=lambda d, names: [n for n in names if ignored(str(Path(d, n).relative_to(ROOT)))])
        else:
            shutil.copy2(src, context / source)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"), str(context)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("specserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "specserve = specserve.cli:main" in entry_points
    assert "specserve/catalog/gpus.yaml" in names and "specserve/cli/commands.py" in names and "specserve_simulator/__init__.py" in names
