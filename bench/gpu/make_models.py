"""Random-weight Llama checkpoints for the sweeps, built on the GPU (bf16, weights ~ N(0, 0.02), norms 1),
with the tokenizer built by mk_tok.py (SmolLM2, vocabulary 49152).

    make_models.py TOKENIZER_DIR OUTDIR [--target 8b] [--draft 1b]

writes OUTDIR/target and OUTDIR/draft (the paths bench/gpu/specs/*.yaml name) and OUTDIR/shapes.json.
A shape is a name below or explicit fields, e.g. "hidden=3072,layers=28,heads=24,kv=8,inter=8192,tied=1"."""
import argparse
import json
import os
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SHAPES = {  # Llama-family shapes (hidden, layers, attention heads, KV heads, MLP width, tied embeddings)
    "8b": dict(hidden=4096, layers=32, heads=32, kv=8, inter=14336, tied=0),
    "3b": dict(hidden=3072, layers=28, heads=24, kv=8, inter=8192, tied=1),
    "1b": dict(hidden=2048, layers=16, heads=32, kv=8, inter=8192, tied=1),
    "14b": dict(hidden=5120, layers=48, heads=40, kv=8, inter=13824, tied=0),
    "160m": dict(hidden=768, layers=12, heads=12, kv=4, inter=3072, tied=1),
}


def shape(spec):
    if spec in SHAPES:
        return dict(SHAPES[spec])
    d = {k: int(v) for k, v in (kv.split("=") for kv in spec.split(","))}
    missing = {"hidden", "layers", "heads", "kv", "inter"} - set(d)
    if missing:
        raise SystemExit(f"shape {spec!r} lacks {sorted(missing)}")
    d.setdefault("tied", 0)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tok"); ap.add_argument("out")
    ap.add_argument("--target", default=os.environ.get("TARGET_SHAPE", "8b"))
    ap.add_argument("--draft", default=os.environ.get("DRAFT_SHAPE", "1b"))
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.tok)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    record = {}
    for role, name in (("target", a.target), ("draft", a.draft)):
        s, t0 = shape(name), time.time()
        cfg = LlamaConfig(vocab_size=max(49152, len(tok)), max_position_embeddings=4096, rope_theta=500000.0, rms_norm_eps=1e-5,
                          hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                          num_key_value_heads=s["kv"], intermediate_size=s["inter"], tie_word_embeddings=bool(s["tied"]),
                          bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else 1,
                          eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else 2)
        cfg.torch_dtype = torch.bfloat16
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # explicit init, whatever transformers' init hooks do
            for n, p in model.named_parameters():
                p.fill_(1.0) if n.endswith("norm.weight") else p.normal_(0.0, 0.02)
        d = os.path.join(a.out, role)
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        n_params = sum(p.numel() for p in model.parameters())
        record[role] = dict(shape=name, **s, vocab=cfg.vocab_size, params=n_params, build_s=round(time.time() - t0, 1))
        print(role, record[role], flush=True)
        del model
        torch.cuda.empty_cache()
    json.dump(record, open(os.path.join(a.out, "shapes.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
