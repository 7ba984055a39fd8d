#!/bin/bash
# Device side of the sweep; each verb is one `run` call from the repository root, back to back (the
# machine keeps /tmp only while it stays warm: ~30 s between calls at most).
#   bash bench/gpu/device.sh stage 1      carry [".stage/c1"]   copy piece 1; unpack the tokenizer;
#                                          start the checkpoints' build on the GPU (detached)
#   bash bench/gpu/device.sh stage K      carry [".stage/cK"]   (1 < K < N)
#   bash bench/gpu/device.sh run N        carry [".stage/cN"]   last piece: check, unpack, import check,
#                                          start bench.py detached, then poll (until DEADLINE s)
#   bash bench/gpu/device.sh poll [S]     no carry              wait up to S s (default 570), copy results
# Env: TARGET_SHAPE / DRAFT_SHAPE (make_models.py, default 8b / 1b), CONFIGS (comma list, default
# configs.json's order), BS, WARM_S, WINDOW_S, DEADLINE (s for `run`, default 560).
set -u
G=$(cd "$(dirname "$0")" && pwd)
S=/tmp/stage
verb=${1:?stage N | run N | poll [S]}

stage() {
  local n=$1
  mkdir -p $S/bench && cp .stage/c$n/* $S/ || exit 1
  cp "$G"/*.py "$G"/*.sh "$G"/configs.json $S/bench/ || exit 1
  if [ -f .stage/c$n/tok.tar.xz ]; then
    (cd $S && tar -xJf tok.tar.xz) || exit 2
    setsid nohup bash -c "HF_HUB_OFFLINE=1 python3 $S/bench/make_models.py $S/tok /tmp/models --target ${TARGET_SHAPE:-8b} --draft ${DRAFT_SHAPE:-1b} > $S/models.log 2>&1 && touch $S/models.ok" >/dev/null 2>&1 </dev/null &
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
    echo "cpus $(nproc)"; free -g | sed -n 2p; df -h /tmp | tail -1
  fi
  ls $S | tr '\n' ' '; echo; tail -2 $S/models.log 2>/dev/null
}

collect() {  # everything worth keeping, into $OUT (at most 8 files)
  local O=${OUT:-/tmp/out}; mkdir -p "$O"
  cp /tmp/res/results.json /tmp/res/progress.log "$O"/ 2>/dev/null
  tail -n 300 /tmp/res/bench.out > "$O/bench-out.txt" 2>/dev/null
  for f in /tmp/res/server-*.log; do [ -f "$f" ] || continue
    echo "=== $f ($(wc -l < "$f") lines)"
    tr '\r' '\n' < "$f" | grep -i -E "error|warn|Traceback|cudagraph|Capturing CUDA|compil|speculat|KV cache|concurrency|took|runner|async" \
      | grep -v -E "it/s\]|s/it\]" | cut -c1-500 | tail -n 80
  done > "$O/serverlogs.txt" 2>/dev/null
  (cd /tmp/res && tar -czf "$O/serverlogs-full.tar.gz" server-*.log metrics-*.txt 2>/dev/null)
  cat $S/models.log $S/import.log > "$O/stage.log" 2>/dev/null
}

poll() {  # wait up to $1 s for ALL DONE; copy to $OUT every 20 s so a cut-off call still returns data
  local end=$((SECONDS + ${1:-570})) pid; pid=$(cat /tmp/res/bench.pid 2>/dev/null) last=0
  while [ $SECONDS -lt $end ]; do
    grep -q "ALL DONE" /tmp/res/progress.log 2>/dev/null && break
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { echo "bench process not running"; break; }
    [ $((SECONDS - last)) -ge 20 ] && { collect; last=$SECONDS; }
    sleep 3
  done
  collect
  echo "--- progress"; tail -n 60 /tmp/res/progress.log 2>/dev/null
  cur=$(ls -t /tmp/res/server-*.log 2>/dev/null | head -1)
  [ -n "$cur" ] && { echo "--- $cur"; tr '\r' '\n' < "$cur" | tail -n 6 | cut -c1-300; }
  nvidia-smi --query-gpu=memory.used,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
}

case $verb in
  stage) stage "$2" ;;
  run)
    t0=$SECONDS
    stage "$2"
    cd $S && sha256sum -c --quiet SHA256SUMS || exit 3
    cat p?? | tar -x -C $S && rm -f p?? && mkdir -p /tmp/site || exit 4
    (xz -dc whl-site.tar.xz | tar -x -C /tmp/site) & (xz -dc vllm-slim.tar.xz | tar -x -C /tmp/site) & wait
    xz -dc fa3.so.xz > /tmp/site/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so || exit 5
    echo "unpacked in $((SECONDS - t0)) s: $(du -sh /tmp/site | cut -f1)"
    for i in $(seq 180); do [ -f $S/models.ok ] && break; sleep 2; done
    cat $S/models.log; [ -f $S/models.ok ] || { echo "checkpoints not built"; exit 6; }
    source $S/bench/env.sh
    python3 -c "import vllm, vllm.entrypoints.openai.api_server, vllm.vllm_flash_attn; print('vllm', vllm.__version__)" > $S/import.log 2>&1
    rc=$?; tail -n 5 $S/import.log; [ $rc -eq 0 ] || { OUT=${OUT:-/tmp/out} collect; exit 7; }
    mkdir -p /tmp/res
    export BS=${BS:-1,2,4,8,16,32,64,128} WARM_S=${WARM_S:-3} WINDOW_S=${WINDOW_S:-8}
    cd $S/bench
    setsid nohup python3 bench.py "${CONFIGS:-}" > /tmp/res/bench.out 2>&1 < /dev/null &
    echo $! > /tmp/res/bench.pid
    echo "bench started $((SECONDS - t0)) s after the call began"
    poll $(( ${DEADLINE:-560} - (SECONDS - t0) ))
    ;;
  poll) poll "${2:-570}" ;;
  *) echo "unknown verb $verb"; exit 2 ;;
esac
