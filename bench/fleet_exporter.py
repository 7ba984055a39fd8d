"""Serves /metrics for a synthetic fleet of N servings, each a copy of a real vLLM capture with serving labels.

Counters grow with wall time so rates are non-zero; the series shape is exactly the captured vLLM's. With
--replicas R > 1 each role has R pods (a `pod` label tells them apart), so aggregations over replicas matter.
"""

from __future__ import annotations

import argparse
import http.server
import re
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"  # the real vLLM captures, vendored
KEEP = re.compile(
    r"^vllm:(spec_decode_num_\w+_total|request_time_per_output_token_seconds_(bucket|sum|count)|time_to_first_token_seconds_(bucket|sum|count)"
    r"|request_success_total|num_requests_running|num_requests_waiting|kv_cache_usage_perc)\{"
)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")


def template(capture: Path) -> list[tuple[str, str, float, bool]]:
    """(name, labels, value, is_counter) for every kept sample of a capture."""
    rows = []
    for line in capture.read_text().splitlines():
        if not KEEP.match(line):
            continue
        head, value = line.rsplit(" ", 1)
        name, labels = head.split("{", 1)
        rows.append((name, labels.rstrip("}"), float(value), not name.startswith(GAUGES)))
    return rows


def exposition(servings: int, started: float, speculative: list, baseline: list, replicas: int = 1) -> bytes:
    growth = 1.0 + (time.monotonic() - started) / 60.0
    lines = []
    for i in range(servings):
        for role, rows in (("speculative", speculative), ("baseline", baseline)):
            for replica in range(replicas):
                pod = f',pod="s{i:04d}-{role}-{replica}"' if replicas > 1 else ""
                extra = f'namespace="bench",serving="s{i:04d}",role="{role}"{pod}'
                scale = 1.0 + replica  # replicas differ (gauges by `replica` more: the captures' are 0), so a sum is no mean
                for name, labels, value, counter in rows:
                    lines.append(f"{name}{{{labels},{extra}}} {value * scale * growth if counter else value * scale + replica}")
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servings", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=1, help="pods per role (default 1: one series per role)")
    args = parser.parse_args()
    speculative = template(FIXTURES / "vllm-0.26.0-ngram.metrics.txt")
    baseline = template(FIXTURES / "vllm-0.26.0-baseline.metrics.txt")
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = exposition(args.servings, started, speculative, baseline, args.replicas)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
