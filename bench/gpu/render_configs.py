"""Render the sweep's vLLM argument lists HERE (CPU side) with the operator's own CLI, so that the device
serves exactly what `specserve render` writes into a Deployment; the result, bench/gpu/configs.json,
travels with the working tree (specserve is never installed on the device).

    python3 bench/gpu/render_configs.py            # writes bench/gpu/configs.json

Each sweep configuration names a spec in bench/gpu/specs/ and a role: `speculative` takes the args of
the serving's own Deployment, `baseline` those of its no-speculation baseline Deployment
(spec.baseline.replicas: 1). The bench changes nothing in them but --speculative-config, where it forces
the acceptance (vLLM's synthetic rejection sampler) and, for the n-gram configurations, replaces the
method the operator renders (`ngram`, vLLM's CPU proposer) with `ngram_gpu` (recorded as
`method_override`); it appends the worker extension it needs to change the acceptance in place."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# name: (spec file in specs/, deployment role, method override, per-token acceptances to sweep)
# In priority order: the bench runs them in this order unless told otherwise.
CONFIGS: dict[str, tuple[str, str, str | None, list[float | None]]] = {
    "baseline": ("draft-k2", "baseline", None, [None]),
    "draft_k2": ("draft-k2", "speculative", None, [0.8, 0.5]),
    "draft_k2_sched": ("draft-k2-sched", "speculative", None, [0.8, 0.5]),
    "baseline_pw": ("piecewise", "baseline", None, [None]),
    "ngram_gpu_k4": ("ngram-k4", "speculative", "ngram_gpu", [0.8, 0.5]),
    "ngram_gpu_k4_sched": ("ngram-k4-sched", "speculative", "ngram_gpu", [0.8, 0.5]),
    "draft_k4": ("draft-k4", "speculative", None, [0.8, 0.5]),
    "draft_k4_sched": ("draft-k4-sched", "speculative", None, [0.8, 0.5]),
}


def render(spec_path: str) -> list[dict]:
    """`specserve render FILE` -> its objects; retried once (the CLI may be mid-change in a checkout)."""
    for attempt in range(2):
        proc = subprocess.run(["specserve", "render", spec_path], capture_output=True, text=True, cwd=REPO)
        if proc.returncode == 0:
            return list(yaml.safe_load_all(proc.stdout))
        if attempt == 0:
            print(f"specserve render {spec_path}: rc {proc.returncode}, retrying: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    raise SystemExit(f"specserve render {spec_path} failed: {proc.stderr.strip()[-2000:]}")


def container_args(objects: list[dict], role: str) -> tuple[list[str], list[str]]:
    for obj in objects:
        if obj.get("kind") != "Deployment":
            continue
        if obj["metadata"]["labels"].get("specserve.dev/role") != role:
            continue
        c = obj["spec"]["template"]["spec"]["containers"][0]
        return list(c["command"]), [str(a) for a in c["args"]]
    raise SystemExit(f"no {role} Deployment rendered")


def main() -> None:
    cache: dict[str, list[dict]] = {}
    out: dict = {
        "rendered_with": "specserve render bench/gpu/specs/<spec>.yaml (fresh decision state)",
        "rendered_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "specserve_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip(),
        "order": list(CONFIGS),
        "configs": {},
    }
    for name, (spec, role, method, acceptances) in CONFIGS.items():
        path = os.path.join("bench", "gpu", "specs", spec + ".yaml")
        if spec not in cache:
            cache[spec] = render(path)
        command, args = container_args(cache[spec], role)
        sc = None
        if "--speculative-config" in args:
            sc = json.loads(args[args.index("--speculative-config") + 1])
        out["configs"][name] = {
            "spec": path,
            "role": role,
            "command": command,
            "rendered_args": args,
            "rendered_speculative_config": sc,
            "schedule": sc.get("num_speculative_tokens_per_batch_size") if sc else None,
            "method_override": method,
            "acceptances": acceptances,
        }
        print(f"{name:20s} {role:11s} {json.dumps(sc, separators=(',', ':')) if sc else '(no speculation)'}")
    baselines = {json.dumps(c["rendered_args"]) for c in out["configs"].values() if c["role"] == "baseline" and "piecewise" not in c["spec"]}
    assert len(baselines) == 1, "baseline args differ between specs"
    dest = os.path.join(HERE, "configs.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(dest, REPO))


if __name__ == "__main__":
    main()
