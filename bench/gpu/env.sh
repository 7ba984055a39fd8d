# The environment every device-side step uses: the unpacked payload first on the path, no network.
export PYTHONPATH=/tmp/site:/tmp/stage/bench PYTHONUNBUFFERED=1 RESDIR=${RESDIR:-/tmp/res}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_USE_FLASHINFER_SAMPLER=0   # FlashInfer is not in the payload
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
