"""The install and operating guides' configuration snippets, checked by the tools that would load them.

The argocd-cm snippet is checked in test_argocd_health.py; here the plain-Prometheus scrape config and the kustomize overlay.
Debian's promtool is built without Kubernetes service discovery, so the check swaps it for a static target.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import yaml

from tests.helpers import ROOT
from tests.install import tools

DOCS = ROOT / "docs"


def yaml_blocks(name: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_plain_prometheus_scrape_config_passes_promtool(tmp_path: Path) -> None:
    (block,) = [b for b in yaml_blocks("operating.md") if "scrape_configs" in b]
    config = tmp_path / "prometheus.yml"
    config.write_text(block.replace("kubernetes_sd_configs: [{role: pod}]", 'static_configs: [{targets: ["127.0.0.1:8000"]}]'))
    result = tools.run(tools.binary("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_prometheus_relabelling_gives_the_labels_the_rules_need() -> None:
    (block,) = [b for b in yaml_blocks("operating.md") if "scrape_configs" in b]
    vllm_job = yaml.safe_load(block)["scrape_configs"][0]
    targets = {r.get("target_label") for r in vllm_job["relabel_configs"]}
    assert {"namespace", "serving", "role"} <= targets


def test_kustomize_overlay_in_the_install_guide_builds_and_retargets_the_operator(tmp_path: Path) -> None:
    (block,) = [b for b in yaml_blocks("install.md") if "my-overlay/kustomization.yaml" in b]
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    overlay = tmp_path / "my-overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(block)
    deployment = tools.one(tools.kustomize(overlay), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/specserve:0.1.0"
    assert {"name": "SPECSERVE_PROMETHEUS_URL", "value": "http://prometheus.monitoring.svc:9090"} in container["env"]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_gives_the_install_guides_command_for_a_hung_uninstall() -> None:
    """tests/e2e/test_uninstall.py runs the guide's command on a real API server; the README must quote the same one."""
    guide = (DOCS / "install.md").read_text()
    hung = guide[guide.index("### If the uninstall hangs") :]
    (command,) = [line for block in sh_blocks(hung)[:1] for line in block.splitlines() if "finalizers" in line]
    assert f"`{command}`" in (ROOT / "README.md").read_text()


def test_every_documented_uninstall_deletes_the_servings_before_the_operator() -> None:
    guide = (DOCS / "install.md").read_text()
    section = guide[guide.index("## Uninstall") : guide.index("### If the uninstall hangs")]
    blocks = [b for b in sh_blocks(section) if "uninstall" in b or "delete -k" in b]
    readme = [b for b in sh_blocks((ROOT / "README.md").read_text()) if "helm uninstall" in b]
    assert len(blocks) == 2 and len(readme) == 1
    for block in blocks + readme:
        first = block.strip().splitlines()[0]
        assert first.startswith("kubectl delete sps --all -A"), block


def quick_start_block(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if marker in b)


def test_quick_start_creates_every_secret_and_claim_the_examples_refer_to() -> None:
    from tests.helpers import EXAMPLES, claims_and_secrets, load_example

    commands = quick_start_block("create secret generic")
    created_secrets = set(re.findall(r"create secret generic (\S+)", commands))
    created_claims = {doc["metadata"]["name"] for doc in yaml.safe_load_all(commands.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])}
    for path in EXAMPLES:
        claims, secrets = claims_and_secrets(load_example(path))
        assert claims <= created_claims and secrets <= created_secrets, path.name
        assert load_example(path)["metadata"]["namespace"] == "llm", path.name


def test_the_first_example_on_a_cluster_needs_no_gpu() -> None:
    from tests.helpers import load_example

    first = re.search(r"kubectl apply -f (manifests/examples/\S+)", quick_start_block("kubectl create namespace llm")).group(1)
    spec = load_example(ROOT / first)["spec"]
    assert spec["gpu"]["resourceName"] == "" and "simulator" in spec["engine"]["image"]


def test_readme_worked_example_quotes_what_the_decision_core_decides() -> None:
    """The goodput model's worked example: the replays of tests/unit/test_measured_decisions.py and the challenger trial
    of tests/unit/test_trials.py, run again; every number and reason the page quotes is the code's."""
    from specserve.decision import goodput, policy, terms
    from specserve.observation import replay
    from tests.unit import test_measured_decisions as measured
    from tests.unit import test_trials as trials

    readme = (ROOT / "README.md").read_text()
    example = readme[readme.index("Worked example, computed by") : readme.index("### Metric labels")]
    serving = measured.llama_70b()
    setup, hp = policy.setup_for(serving), serving.health_policy
    state = policy.initial_state(hp, None)
    for line in measured.lines((3, measured.healthy())):
        t, observation = replay.parse_line(line, 1)
        decision = policy.decide(state, observation, hp, t, terms.Ladder(), setup)
        state = decision.state
    prior = goodput.speedup(4, 4, measured.HEALTHY_POSITIONS, setup.proposer).speedup
    assert f"predicted {prior:.2f}x" in example and f"`costScale` is {state.verdicts[0].cost_scale:.2f}" in example
    assert decision.plan is not None and decision.plan.schedule.k_for(5) == 4
    collapse = measured.rewrites(measured.decisions(serving, (20, measured.healthy()), (6, measured.collapsed())))[0]
    assert f"```\n{collapse['reason']}\n```" in example
    started, promoted = trials.changes(trials.trial_of(1.45))[:2]
    assert f"```\n{started.reason}\n```" in example and f"```\n{promoted.reason}\n```" in example


def test_operating_guide_lists_every_health_event_and_decision_action() -> None:
    from specserve import telemetry
    from specserve.decision import judgment

    guide = (DOCS / "operating.md").read_text()
    for type_, reason in judgment.EVENT_REASONS.values():
        assert f"| {reason} | {type_} |" in guide, reason
    assert f"action ({', '.join(telemetry.ACTIONS)})" in guide
    assert "`specserve_estimated_speedup`" in guide


def _call_name(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id if isinstance(node.func, ast.Name) else ""


def warning_reasons_in_the_code() -> set[str]:
    """Every reason of a Warning event the operator can post, read from the source: kopf.event(type="Warning",
    reason="...") and ("Warning", "Reason", ...) tuples, the reasons reconcile._reject posts (RenderError's, its own, the planner's refusal, InvalidSpec for
    a spec the models refuse), MemoryBudget<verdict> for the verdicts announced, and the health loop's Warnings."""
    from specserve.cluster import reconcile
    from specserve.decision import judgment
    from specserve.rendering import planner

    found: set[str] = set()
    for path in (ROOT / "operator" / "specserve").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple) and len(node.elts) >= 2 and all(isinstance(e, ast.Constant) for e in node.elts[:2]) and node.elts[0].value == "Warning":
                found.add(node.elts[1].value)  # an event as (type, reason[, message]), as judgment returns it
            if not isinstance(node, ast.Call):
                continue
            name, keywords = _call_name(node), {k.arg: k.value for k in node.keywords}
            if name == "event" and isinstance(keywords.get("type"), ast.Constant) and keywords["type"].value == "Warning":
                reason = keywords.get("reason")
                if isinstance(reason, ast.Constant):
                    found.add(reason.value)
            elif name == "RenderError" and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
            elif name == "_reject" and len(node.args) >= 3:
                reason = node.args[2]
                if isinstance(reason, ast.Constant):
                    found.add(reason.value)
                elif isinstance(reason, ast.Attribute) and reason.attr == "REFUSED_REASON":
                    found.add(planner.REFUSED_REASON)
            elif name == "getattr" and len(node.args) == 3 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "reason":
                found.add(node.args[2].value)  # reconcile: a pydantic error has no reason of its own
    found |= {f"MemoryBudget{verdict}" for verdict in reconcile.ANNOUNCED_BUDGET_VERDICTS}
    found |= {reason for type_, reason in judgment.EVENT_REASONS.values() if type_ == "Warning"}
    return found


def documented_event_reasons(type_: str) -> set[str]:
    """The reasons the operating guide's Events table lists with TYPE."""
    guide = (DOCS / "operating.md").read_text()
    table = guide[guide.index("## Events") :].split("\n\n| reason | type | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ")]
    return {reason.strip() for reasons, kind in rows if kind.strip() == type_ for reason in reasons.split(",")}


def test_operating_guide_lists_every_warning_reason_the_code_posts_and_no_other() -> None:
    code = warning_reasons_in_the_code()
    assert {"MemoryBudgetCannotJudge", "UnknownGPUProduct", "ImageNotAllowed", "DriftReverted", "SpeculationDisabled"} <= code  # the reader works
    documented = documented_event_reasons("Warning")
    assert sorted(code - documented) == [], "Warning reasons the operator posts that docs/operating.md does not list"
    assert sorted(documented - code) == [], "Warning reasons docs/operating.md lists that the operator never posts"
