#!/usr/bin/env python3
"""The scripts/bench workloads through Hugging Face transformers, for side-by-side numbers (device only).

usage: bench-hf.py MODEL_DIR [--only throughput,decode,coldstart] [--num-seqs 256] [--max-input 1024]
                   [--max-output 1024] [--time-limit SECONDS]

throughput: nano-vllm's bench.py workload (random.seed(0), identical to scripts/bench), through
transformers' continuous batching (model.generate_batch) when this version has it, else batched
generate() with a static cache in chunks of 64 (left padding). With --time-limit, the chunked mode stops
starting chunks once the limit has passed and reports the rate over the chunks it ran ("partial").
The fast parts run first; a JSON line with everything so far is printed after each part (the last line
is the most complete), so a run cut short by a timeout still reports what it measured.
"""
import argparse, json, random, sys, time

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--only", default="throughput,decode,coldstart")
ap.add_argument("--num-seqs", type=int, default=256)
ap.add_argument("--max-input", type=int, default=1024)
ap.add_argument("--max-output", type=int, default=1024)
ap.add_argument("--time-limit", type=float, default=0, help="seconds for the throughput part (0: none)")
a = ap.parse_args()
only = set(a.only.split(","))
res = {"torch": torch.__version__}

t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16).cuda().eval()
torch.cuda.synchronize()
load_s = time.time() - t0

if "coldstart" in only:
    t1 = time.time()
    with torch.no_grad():
        model.generate(torch.tensor([[1, 2, 3]], device="cuda"), max_new_tokens=1, do_sample=False)
    torch.cuda.synchronize()
    res["coldstart"] = {"load_s": round(load_s, 2), "first_token_after_load_s": round(time.time() - t1, 2), "note": "in-process; excludes Python/torch import"}
    print(json.dumps(res), flush=True)

if "decode" in only:
    dec = {}
    for b in (1, 8, 64, 256):
        ids = torch.randint(0, 10000, (b, 128), device="cuda")
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, cache_implementation="static")
            torch.cuda.synchronize()
            t1 = time.time()
            model.generate(ids, max_new_tokens=65, min_new_tokens=65, do_sample=False, pad_token_id=0, cache_implementation="static")
            torch.cuda.synchronize()
        dec[f"batch_{b}_ms_per_token"] = round((time.time() - t1) * 1000 / 65, 3)
    res["decode"] = dec
    print(json.dumps(res), flush=True)

if "throughput" in only:
    random.seed(0)
    prompts = [[random.randint(0, 10000) for _ in range(random.randint(100, a.max_input))] for _ in range(a.num_seqs)]
    max_tokens = [random.randint(100, a.max_output) for _ in range(a.num_seqs)]
    t1 = time.time()
    total = 0
    mode = None
    with torch.no_grad():
        if hasattr(model, "generate_batch"):
            mode = "generate_batch"
            # One generation config for all: max_new_tokens per request is not supported there, so use the max
            # and count only each request's own budget (documented in the output).
            cfg = GenerationConfig(max_new_tokens=max(max_tokens), do_sample=True, temperature=0.6, eos_token_id=-1, pad_token_id=0)
            out = model.generate_batch(inputs=prompts, generation_config=cfg)
            for i, k in enumerate(sorted(out.keys()) if isinstance(out, dict) else range(len(out))):
                total += min(len(out[k].generated_tokens), max_tokens[i])
        else:
            mode = "generate-static-chunks"
            chunks_run = 0
            for s in range(0, len(prompts), 64):
                if a.time_limit and time.time() - t1 > a.time_limit:
                    break
                chunks_run += 1
                chunk = prompts[s:s + 64]
                L = max(len(p) for p in chunk)
                ids = torch.tensor([[0] * (L - len(p)) + p for p in chunk], device="cuda")
                mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in chunk], device="cuda")
                n = max(max_tokens[s:s + 64])
                model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=0.6, pad_token_id=0, cache_implementation="static")
                total += sum(max_tokens[s:s + 64])
    torch.cuda.synchronize()
    secs = time.time() - t1
    res["throughput"] = {"mode": mode, "output_tokens": total, "seconds": round(secs, 2), "output_tok_s": round(total / secs, 1)}
    if mode == "generate-static-chunks" and chunks_run * 64 < len(prompts):
        res["throughput"]["partial"] = f"{chunks_run} of {(len(prompts) + 63) // 64} chunks (--time-limit)"

print(json.dumps(res))
