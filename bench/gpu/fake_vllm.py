"""A stand-in for `vllm serve` on a CPU machine, to try bench.py end to end before spending device time:
    BENCH_SERVER="python3 bench/gpu/fake_vllm.py" python3 bench/gpu/bench.py baseline,draft_k2_sched
It parses the rendered arguments vLLM would get, runs a batched step loop (step time grows with the batch
and k), streams completions, counts what vLLM's /metrics counts, follows a num_speculative_tokens_per_batch_size
schedule and the synthetic acceptance, answers /collective_rpc, and prints the log lines bench.py parses.
Numbers mean nothing."""

from __future__ import annotations

import asyncio
import json
import random
import sys

from aiohttp import web

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import parsing

argv = sys.argv[1:]
if argv and argv[0] == "serve":
    argv = argv[1:]
spec = parsing.speculative_config(argv)
k_max = int(spec["num_speculative_tokens"]) if spec else 0
schedule = spec.get("num_speculative_tokens_per_batch_size") if spec else None
alpha = [spec["synthetic_acceptance_rates"][0] if spec and "synthetic_acceptance_rates" in spec else 0.0]
mode = "PIECEWISE" if schedule or "PIECEWISE" in " ".join(argv) else "FULL_AND_PIECEWISE"
if schedule:
    print("WARNING Overriding cudagraph_mode from FULL_AND_PIECEWISE to PIECEWISE for reliability.")
if spec:
    print("WARNING Model Runner V2 does not yet support speculative method 'draft_model'; using the V1 model runner instead.")
print(f"INFO Initializing a V1 LLM engine (v0.26.0) with config: 'cudagraph_mode': <CUDAGraphMode.{mode}: (2, 1)>, ...")
print("INFO Available KV cache memory: 97.50 GiB\nINFO GPU KV cache size: 798,720 tokens\n"
      "INFO Maximum concurrency for 2,048 tokens per request: 390.00x")
print("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|##########| 67/67\r"
      + ("" if mode == "PIECEWISE" else "Capturing CUDA graphs (decode, FULL): 100%|##########| 35/35"))
print("INFO Graph capturing finished in 9 secs, took 0.55 GiB", flush=True)

C = {"vllm:generation_tokens_total": 0.0, "vllm:prompt_tokens_total": 0.0, "vllm:iteration_tokens_total_count": 0.0,
     "vllm:iteration_tokens_total_sum": 0.0, "vllm:spec_decode_num_drafts_total": 0.0,
     "vllm:spec_decode_num_draft_tokens_total": 0.0, "vllm:spec_decode_num_accepted_tokens_total": 0.0}
queue: list[dict] = []


async def engine() -> None:
    rng = random.Random(0)
    while True:
        if not queue:
            await asyncio.sleep(0.002)
            continue
        b = len(queue)
        k = parsing.k_at(schedule, k_max, b) if spec else 0
        await asyncio.sleep(0.004 + 0.0002 * b * (1 + k))
        C["vllm:iteration_tokens_total_count"] += 1
        for r in list(queue):
            if not r["prefilled"]:
                r["prefilled"] = True
                C["vllm:prompt_tokens_total"] += r["prompt"]
                n = 1
            else:
                acc = 0
                while acc < k and rng.random() < alpha[0]:
                    acc += 1
                if k:
                    C["vllm:spec_decode_num_drafts_total"] += 1
                    C["vllm:spec_decode_num_draft_tokens_total"] += k
                    C["vllm:spec_decode_num_accepted_tokens_total"] += acc
                n = 1 + acc
            n = min(n, r["left"])
            r["left"] -= n
            C["vllm:generation_tokens_total"] += n
            C["vllm:iteration_tokens_total_sum"] += n
            r["q"].put_nowait(n)
            if r["left"] <= 0:
                queue.remove(r)
                r["q"].put_nowait(None)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    r = {"prompt": len(body["prompt"]), "left": int(body["max_tokens"]), "prefilled": False, "q": asyncio.Queue()}
    queue.append(r)
    resp = web.StreamResponse()
    await resp.prepare(request)
    total = 0
    try:
        while (n := await r["q"].get()) is not None:
            total += n
            await resp.write(b'data: {"choices":[{"text":"x"}]}\n\n')
        await resp.write(b'data: {"choices":[],"usage":{"completion_tokens":%d}}\n\ndata: [DONE]\n\n' % total)
    finally:
        if r in queue:
            queue.remove(r)
    return resp


async def metrics(_: web.Request) -> web.Response:
    lines = [f"{k} {v}" for k, v in C.items()] + [f'vllm:num_requests_running{{engine="0"}} {len(queue)}']
    return web.Response(text="\n".join(lines) + "\n")


async def rpc(request: web.Request) -> web.Response:
    body = await request.json()
    if body["method"] == "spec_set_acceptance":
        alpha[0] = float(body["args"][0])
        return web.json_response({"results": [json.dumps({"conditional_rates": [alpha[0]] * k_max})]})
    return web.json_response({"results": [json.dumps({"ok": True})]})


async def health(_: web.Request) -> web.Response:
    return web.Response(text="")


async def main() -> None:
    app = web.Application()
    app.add_routes([web.post("/v1/completions", completions), web.get("/metrics", metrics),
                    web.post("/collective_rpc", rpc), web.get("/health", health)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(parsing.flag_value(argv, "--port") or 8000)).start()
    await engine()


asyncio.run(main())
