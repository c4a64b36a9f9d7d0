#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers for a checkpoint vbun also runs (device machine only).

usage: hf-reference.py MODEL_DIR PROMPTS_JSON OUT_DIR [--dtype bfloat16|float32] [--max-new-tokens 32] [--device cuda|cpu]

PROMPTS_JSON is a list of token-id lists. Writes OUT_DIR/hf.json with, per prompt, the greedy
continuation (ignoring EOS) and the file holding its last-position logits (raw float32, little endian).
--max-new-tokens 0 writes the logits only (the float32 reference that shows how far bfloat16 itself is
from it: compare-hf.ts --f32-ref).
"""
import argparse, json, os, sys, time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("prompts")
ap.add_argument("out")
ap.add_argument("--dtype", default="bfloat16")
ap.add_argument("--max-new-tokens", type=int, default=32)
ap.add_argument("--device", default="cuda")
a = ap.parse_args()

os.makedirs(a.out, exist_ok=True)
torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference means float32 products
t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=getattr(torch, a.dtype)).to(a.device).eval()
load_s = time.time() - t0
prompts = json.load(open(a.prompts))
results = []
with torch.no_grad():
    for i, ids in enumerate(prompts):
        x = torch.tensor([ids], device=a.device)
        logits = model(x).logits[0, -1].float().cpu().numpy()
        path = os.path.join(a.out, f"logits-{i}.f32")
        logits.astype("<f4").tofile(path)
        greedy = []
        if a.max_new_tokens > 0:
            gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.max_new_tokens, min_new_tokens=a.max_new_tokens,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
            greedy = gen[0, len(ids):].tolist()
        results.append({"prompt": ids, "greedy": greedy, "logits_file": os.path.basename(path)})
json.dump({"model": a.model, "dtype": a.dtype, "torch": torch.__version__, "load_seconds": load_s, "results": results}, open(os.path.join(a.out, "hf.json"), "w"))
print(f"hf-reference: {len(results)} prompts, load {load_s:.1f}s", file=sys.stderr)
