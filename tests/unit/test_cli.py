"""`specserve` on bad input: one line on stderr naming the file or field, exit code 2, never a traceback.

Runs the real command: main(argv) in-process for file handling, the installed entry point in a subprocess for run and simulate.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml

from specserve import api
from specserve.cli import commands
from specserve.rendering import planner
from tests.helpers import EXAMPLES, serving

EXAMPLE = next(p for p in EXAMPLES if p.stem == "eagle3-llama-8b")


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of a command that must exit 2 with a one-line message and print nothing on stdout."""
    assert commands.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def entry_point() -> str:
    """The installed `specserve` command (pip install -e . puts it beside the interpreter)."""
    beside = Path(sys.executable).parent / "specserve"
    found = str(beside) if beside.exists() else shutil.which("specserve")
    assert found, "the specserve command is not installed: pip install -e ."
    return found


def specserve(*argv: str, env: dict[str, str] | None = None, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([entry_point(), *argv], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# ---------------------------------------------------------------- render and plan: the file itself


@pytest.mark.parametrize("command", ["render", "plan"])
def test_invalid_yaml_names_the_file_and_the_line(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "broken.yaml", "spec:\n  target: [1, 2\n")
    message = refused([command, str(path)], capsys)
    assert f"specserve {command}: {path}: not valid YAML: line 3, column 1: expected ',' or ']'" in message


@pytest.mark.parametrize("command", ["render", "plan"])
def test_missing_file_says_no_such_file(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert f"{tmp_path / 'absent.yaml'}: no such file" in refused([command, str(tmp_path / "absent.yaml")], capsys)


@pytest.mark.parametrize("command", ["render", "plan"])
def test_directory_is_refused_as_a_directory(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert f"{tmp_path}: is a directory; give a file" in refused([command, str(tmp_path)], capsys)


@pytest.mark.parametrize("command", ["render", "plan"])
@pytest.mark.parametrize("content", ["", "# only a comment\n", "---\n---\n"])
def test_file_without_documents_holds_no_speculative_serving(command: str, content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "empty.yaml", content)
    assert f"{path}: holds no SpeculativeServing" in refused([command, str(path)], capsys)


def test_empty_stdin_holds_no_speculative_serving() -> None:
    result = specserve("render", "-", stdin="")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "specserve render: stdin: holds no SpeculativeServing (it has no YAML document)\n"


def test_binary_file_is_not_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "image.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    assert f"{path}: not a text file" in refused(["render", str(path)], capsys)


# ---------------------------------------------------------------- render and plan: the documents


@pytest.mark.parametrize("command", ["render", "plan"])
def test_missing_name_is_required_not_badly_spelled(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = serving()
    del document["metadata"]["name"]
    message = refused([command, str(write(tmp_path, "s.yaml", yaml.safe_dump(document)))], capsys)
    assert "document 1: metadata.name is required" in message and "start with a letter" not in message


def test_badly_spelled_name_still_says_what_a_name_may_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(["render", str(write(tmp_path, "s.yaml", yaml.safe_dump(serving(name="9lives"))))], capsys)
    assert "metadata.name must start with a letter" in message


def test_rule_violation_reads_without_pydantics_value_error_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = serving(target={"model": "org/m", "variants": [{"name": "a", "model": "org/a"}, {"name": "a", "model": "org/b"}]})
    message = refused(["render", str(write(tmp_path, "s.yaml", yaml.safe_dump(document)))], capsys)
    assert "document 1: spec.target: variant names must be unique" in message and "Value error" not in message


def test_document_that_is_not_a_mapping_says_what_a_serving_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(["plan", str(write(tmp_path, "s.yaml", "- a\n- b\n"))], capsys)
    assert "document 1: a SpeculativeServing is a YAML mapping (apiVersion, kind, metadata, spec), not a list" in message


def test_second_bad_document_is_named_by_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump_all([serving(name="good"), serving(name="Bad")])
    assert "document 2: metadata.name must start with a letter" in refused(["render", str(write(tmp_path, "s.yaml", text))], capsys)


def test_describe_error_strips_the_value_error_prefix_the_operator_reports_too() -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        api.SpeculativeServingSpec.model_validate(serving(healthPolicy={"disableBelowAcceptance": 0.7, "watchBelowAcceptance": 0.6})["spec"])
    assert api.describe_error(error.value, prefix="spec.") == "spec.healthPolicy: disableBelowAcceptance must be lower than watchBelowAcceptance"


# ---------------------------------------------------------------- replay


def test_replay_of_a_missing_serving_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    observations = write(tmp_path, "obs.jsonl", '{"t": 0}\n')
    assert f"specserve replay: {tmp_path / 'absent.yaml'}: no such file" in refused(["replay", str(tmp_path / "absent.yaml"), "--observations", str(observations)], capsys)


def test_replay_takes_one_serving_not_several(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "two.yaml", yaml.safe_dump_all([serving(name="a"), serving(name="b")]))
    observations = write(tmp_path, "obs.jsonl", '{"t": 0}\n')
    assert f"{path}: holds 2 documents; replay takes one SpeculativeServing" in refused(["replay", str(path), "--observations", str(observations)], capsys)


def test_replay_of_an_empty_serving_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "empty.yaml", "")
    assert f"{path}: holds no SpeculativeServing" in refused(["replay", str(path), "--observations", str(path)], capsys)


@pytest.mark.parametrize(("observations", "complaint"), [("absent.jsonl", "no such file"), (".", "is a directory; give a file")])
def test_replay_names_unreadable_observations(observations: str, complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / observations
    assert f"specserve replay: {path}: {complaint}" in refused(["replay", str(EXAMPLE), "--observations", str(path)], capsys)


def test_replay_of_empty_observations_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for content in ("", "\n  \n"):
        path = write(tmp_path, "empty.jsonl", content)
        assert f"specserve replay: {path}: holds no observation" in refused(["replay", str(EXAMPLE), "--observations", str(path)], capsys)


def test_version_names_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import specserve

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    with pytest.raises(SystemExit) as exit_:
        commands.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"specserve {specserve.__version__}\n"
    assert f'\nversion = "{specserve.__version__}"\n' in pyproject


# ---------------------------------------------------------------- render and plan: one verdict per question

# Specs the operator refuses for a field the schema cannot judge (manifests.check): the reason reconcile gives
# (Accepted=False), which plan and render must give too, exit 2, as for any other field the operator refuses.
FIELD_REFUSALS = {
    "UnknownGPUProduct": {"gpu": {"product": "RTX-4090"}},
    "UnknownGPUProduct-lowercase": {"gpu": {"product": "h100"}},
    "InvalidExtraArgs": {"gpu": {"product": "H100-80GB"}, "engine": {"extraArgs": ["--speculative-model", "meta-llama/Llama-3.2-1B-Instruct"]}},
    "ImageNotAllowed": {"gpu": {"product": "H100-80GB"}, "engine": {"image": "docker.io/someone/vllm:latest"}},
}
IMAGE_POLICY = '["vllm/vllm-openai:", "registry.example.com/"]'


@pytest.mark.parametrize("case", list(FIELD_REFUSALS))
@pytest.mark.parametrize("command", ["render", "plan"])
def test_plan_and_render_refuse_what_the_operator_refuses_for_a_field(
    command: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECSERVE_ALLOWED_IMAGE_PREFIXES", IMAGE_POLICY)
    path = servings_file(tmp_path, "s.yaml", serving(name="s", namespace="llm", **FIELD_REFUSALS[case]))
    reason = case.split("-")[0]
    assert f"specserve {command}: {path}: document 1 (llm/s): the operator refuses it ({reason}): " in refused([command, str(path)], capsys)


def test_the_image_policy_lets_allowed_images_through(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECSERVE_ALLOWED_IMAGE_PREFIXES", IMAGE_POLICY)
    allowed = servings_file(tmp_path, "s.yaml", serving(name="s", **FITS), serving(name="t", **{**FITS, "engine": {"image": "registry.example.com/vllm:1"}}))
    assert outcome(["render", str(allowed)], capsys)[0] == 0
    monkeypatch.delenv("SPECSERVE_ALLOWED_IMAGE_PREFIXES")
    anything = servings_file(tmp_path, "u.yaml", serving(name="u", **FIELD_REFUSALS["ImageNotAllowed"]))
    assert outcome(["render", str(anything)], capsys)[0] == 0  # no policy: every image


def test_a_malformed_image_policy_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECSERVE_ALLOWED_IMAGE_PREFIXES", "vllm/")
    path = servings_file(tmp_path, "s.yaml", serving(name="s", **FITS))
    assert "specserve plan: image policy from SPECSERVE_ALLOWED_IMAGE_PREFIXES: " in refused(["plan", str(path)], capsys)


TOO_BIG = {
    "target": {"model": "meta-llama/Llama-3.1-70B-Instruct"},
    "gpu": {"count": 2, "product": "H100-80GB"},
    "speculation": {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"}},
    "engine": {"maxModelLen": 16384},
}
FITS = {"gpu": {"count": 1, "product": "H100-80GB"}, "engine": {"maxModelLen": 16384}}
# The MemoryBudget verdict each spec gets; only DoesNotFit makes reconcile.reconcile refuse (Accepted=False, MemoryBudgetExceeded).
VERDICT_CASES = {
    "DoesNotFit": TOO_BIG,
    "CannotJudge": {},  # no GPU product or memory
    "FitsWithWarnings": {**FITS, "speculation": {"method": "draft_model", "draft": {"model": "meta-llama/Llama-3.1-8B-Instruct"}}},  # draft:target 1:1
    "Fits": FITS,
}


def outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = commands.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def servings_file(tmp_path: Path, name: str, *documents: dict) -> Path:
    return write(tmp_path, name, yaml.safe_dump_all(list(documents)))


def rendered_names(out: str) -> list[tuple[str, str]]:
    return [(o["kind"], f"{o['metadata']['namespace']}/{o['metadata']['name']}") for o in yaml.safe_load_all(out)]


@pytest.mark.parametrize("verdict", list(VERDICT_CASES))
def test_plan_and_render_exit_1_exactly_when_the_operator_refuses(verdict: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = serving(name="s", namespace="ns", **VERDICT_CASES[verdict])
    operator_refuses = planner.verdict(planner.plan(api.SpeculativeServingSpec.model_validate(document["spec"]))).blocking  # reconcile.reconcile's rule
    assert operator_refuses == (verdict == "DoesNotFit")
    path = servings_file(tmp_path, "s.yaml", document)
    expected = commands.REFUSED if operator_refuses else 0
    plan_code, plan_out, _ = outcome(["plan", str(path), "-o", "json"], capsys)
    render_code, render_out, _ = outcome(["render", str(path)], capsys)
    assert (plan_code, render_code) == (expected, expected) and commands.REFUSED == 1
    assert json.loads(plan_out)["memoryBudget"]["reason"] == verdict
    assert bool(render_out) != operator_refuses


def test_render_refuses_a_serving_that_does_not_fit_in_one_line_and_prints_no_objects_for_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = servings_file(tmp_path, "two.yaml", serving(name="too-big", namespace="llm", **TOO_BIG), serving(name="small", namespace="llm", **FITS))
    code, out, err = outcome(["render", str(path)], capsys)
    assert code == 1
    assert rendered_names(out) == [("Deployment", "llm/small"), ("Service", "llm/small")]
    (line,) = err.splitlines()
    assert line.startswith(f"specserve render: {path}: document 1 (llm/too-big): the operator refuses it (MemoryBudgetExceeded, MemoryBudget DoesNotFit): does not fit: weights 146.4 GiB")
    assert line.endswith("; no objects rendered for it")


def test_render_of_only_refused_servings_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = outcome(["render", str(servings_file(tmp_path, "big.yaml", serving(name="too-big", **TOO_BIG)))], capsys)
    assert (code, out, len(err.splitlines())) == (1, "", 1)


def test_plan_of_a_serving_it_cannot_judge_is_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = outcome(["plan", str(servings_file(tmp_path, "s.yaml", serving(name="no-gpu-said")))], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[2].split()[-1] == "CannotJudge" and "NO" not in out.split()
    assert out.splitlines()[-1] == "MemoryBudget Unknown/CannotJudge: the operator applies it"


def test_plan_names_a_refused_serving_on_stderr_and_in_its_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = servings_file(tmp_path, "big.yaml", serving(name="too-big", namespace="llm", **TOO_BIG))
    code, out, err = outcome(["plan", str(path)], capsys)
    assert code == 1 and out.startswith("llm/too-big: ")
    assert out.splitlines()[-1] == "MemoryBudget False/DoesNotFit: the operator refuses it (Accepted=False, MemoryBudgetExceeded); nothing is applied"
    (line,) = err.splitlines()
    assert line.startswith(f"specserve plan: {path}: document 1 (llm/too-big): the operator refuses it (MemoryBudgetExceeded, MemoryBudget DoesNotFit): does not fit")


def test_plan_json_names_the_serving_of_each_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = servings_file(tmp_path, "a.yaml", serving(name="one", namespace="team-a", **FITS), serving(name="two", **FITS))
    second = servings_file(tmp_path, "b.yaml", serving(name="one", namespace="team-b"))
    code, out, _ = outcome(["plan", "-o", "json", str(first), str(second)], capsys)
    documents = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(d["serving"], d["source"]) for d in documents] == [
        ("team-a/one", f"{first}: document 1"), ("default/two", f"{first}: document 2"), ("team-b/one", f"{second}: document 1")
    ]
    assert [(d["memoryBudget"]["reason"], d["memoryBudget"]["blocking"], d["verdict"]) for d in documents] == [
        ("Fits", False, "Fits"), ("Fits", False, "Fits"), ("CannotJudge", False, "CannotJudge")
    ]


def test_plan_and_render_accept_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = servings_file(tmp_path, "a.yaml", serving(name="alpha", **FITS))
    second = servings_file(tmp_path, "b.yaml", serving(name="beta", **FITS), serving(name="gamma", **FITS))
    code, out, _ = outcome(["render", str(first), str(second)], capsys)
    assert code == 0 and [name for kind, name in rendered_names(out) if kind == "Deployment"] == ["default/alpha", "default/beta", "default/gamma"]
    code, out, _ = outcome(["plan", str(first), str(second)], capsys)
    assert code == 0 and [line.split(":")[0] for line in out.splitlines() if ": usable VRAM" in line] == ["default/alpha", "default/beta", "default/gamma"]


@pytest.mark.parametrize("command", ["render", "plan"])
def test_bad_input_in_a_later_file_prints_nothing_and_exits_2_even_beside_a_refusal(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = servings_file(tmp_path, "big.yaml", serving(name="too-big", **TOO_BIG))
    bad = servings_file(tmp_path, "bad.yaml", serving(name="Bad"))
    assert f"specserve {command}: {bad}: document 1: metadata.name must start with a letter" in refused([command, str(big), str(bad)], capsys)


# ---------------------------------------------------------------- run and simulate, as processes


def no_cluster_environment(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any way to a cluster: no KUBECONFIG, an empty HOME, not in a pod."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    return {**env, "HOME": str(home), **extra}


def test_run_without_a_cluster_exits_2_at_once(tmp_path: Path) -> None:
    result = specserve("run", env=no_cluster_environment(tmp_path), timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "specserve run: no cluster configured: set KUBECONFIG or run in a pod\n"


def test_run_with_kubeconfig_naming_no_file_says_so(tmp_path: Path) -> None:
    result = specserve("run", env=no_cluster_environment(tmp_path, KUBECONFIG=str(tmp_path / "absent")), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"no cluster configured: set KUBECONFIG or run in a pod (KUBECONFIG={tmp_path / 'absent'} names no file)" in result.stderr


def test_run_with_a_broken_kubeconfig_names_it(tmp_path: Path) -> None:
    kubeconfig = write(tmp_path, "config", "apiVersion: v1\nkind: Config\n")
    result = specserve("run", env=no_cluster_environment(tmp_path, KUBECONFIG=str(kubeconfig)), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"specserve run: KUBECONFIG={kubeconfig}: unusable kubeconfig:" in result.stderr


@pytest.mark.parametrize("how", ["specserve simulate", "python -m specserve_simulator"])
def test_simulate_on_a_busy_port_exits_2(how: str) -> None:
    program = [entry_point(), "simulate"] if how == "specserve simulate" else [sys.executable, "-m", "specserve_simulator"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*program, "org/model", "--host", "127.0.0.1", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "serving org/model" not in result.stderr  # the banner says it serves only once it listens


def test_installed_entry_point_prints_no_traceback_for_a_missing_file(tmp_path: Path) -> None:
    result = specserve("plan", str(tmp_path / "absent.yaml"))
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"specserve plan: {tmp_path / 'absent.yaml'}: no such file\n")


def unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig that logs in (no cluster answers it): `run` gets past its login check."""
    return write(tmp_path, "config", yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))


def test_run_with_its_liveness_port_taken_exits_2_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"http://127.0.0.1:{busy.getsockname()[1]}/healthz"
        result = specserve("run", "--metrics-port", "0", "--liveness", endpoint, env=no_cluster_environment(tmp_path, KUBECONFIG=str(unreachable_kubeconfig(tmp_path))), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"specserve run: cannot serve the liveness endpoint {endpoint}: Address already in use (another process holds the port; choose one with --liveness http://HOST:PORT/healthz)\n"


def test_run_with_its_metrics_port_taken_exits_2_at_once(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = specserve("run", "--metrics-port", str(port), env=no_cluster_environment(tmp_path, KUBECONFIG=str(kubeconfig)), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"specserve run: cannot serve the operator's metrics on port {port}: Address already in use"), result.stderr
