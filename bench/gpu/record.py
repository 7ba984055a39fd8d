"""Turn a fetched results.json (device.sh's $OUT) into the recorded fixture
tests/fixtures/gpu/<date>-<gpu>-vllm-<version>.json, adding what the device could not know: which
configurations of configs.json's order did not run (or ran in part), and a note on the session.

    python3 bench/gpu/record.py /work/.device/.../results.json [--note "..."] [--calls "..."]"""

from __future__ import annotations

import argparse
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200'; otherwise the name, lower-case, dashed."""
    m = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", name or "")
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", (name or "unknown").lower()).strip("-")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--note", default="")
    ap.add_argument("--calls", default="", help="the device calls made, in words")
    a = ap.parse_args()
    fx = json.load(open(a.results))
    cfgs = json.load(open(os.path.join(HERE, "configs.json")))
    ladder = fx["settings"]["batch_ladder"]
    partial, missing = {}, []
    for name in cfgs["order"]:
        c = fx["configs"].get(name)
        if c is None:
            missing.append(name)
            continue
        want = len(ladder) * len(c.get("acceptances") or [None])
        if len(c.get("points", [])) < want:
            partial[name] = f"{len(c.get('points', []))} of {want} points"
    fx["run"]["not_run"] = missing
    fx["run"]["partial"] = partial
    if a.note:
        fx["run"]["note"] = a.note
    if a.calls:
        fx["run"]["device_calls"] = a.calls
    name = f"{fx['date']}-{gpu_slug(fx['provenance']['gpu'])}-vllm-{fx['provenance']['vllm']}.json"
    dest = os.path.join(REPO, "tests", "fixtures", "gpu", name)
    with open(dest, "w") as f:
        json.dump(fx, f, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(dest, REPO), "| not run:", missing, "| partial:", partial)


if __name__ == "__main__":
    main()
