#!/usr/bin/env python3
"""Reference outputs from Hugging Face's libraries for vbun's classifier, LoRA and embedding paths (device machine).

usage: hf-pooling-reference.py REF_DIR OUT_DIR

REF_DIR is what scripts/make-reference-models wrote. Writes, in float32 on the CPU:
  OUT_DIR/hf-tiny-seqcls/hf.json  transformers' AutoModelForSequenceClassification logits per prompt
  OUT_DIR/hf-tiny-lora/hf.json    PEFT's PeftModel (the adapter on the Llama base): last-position logits per prompt
  OUT_DIR/hf-tiny-embed/hf.json   sentence-transformers' embeddings per text, and the token ids it used
Each part runs on its own: one that fails is reported and the others still write.
"""
import json, os, sys, traceback

import torch

ref, out = sys.argv[1], sys.argv[2]
inputs = json.load(open(os.path.join(ref, "inputs.json")))
torch.set_grad_enabled(False)
status = 0


def write(name, data):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    with open(os.path.join(out, name, "hf.json"), "w") as f:
        json.dump(data, f)
    print(f"hf-pooling-reference: wrote {name}", file=sys.stderr)


def part(name, fn):
    global status
    try:
        fn()
    except Exception:
        traceback.print_exc()
        print(f"hf-pooling-reference: {name} FAILED", file=sys.stderr)
        status = 1


def seqcls():
    from transformers import AutoModelForSequenceClassification, __version__ as tv
    m = AutoModelForSequenceClassification.from_pretrained(os.path.join(ref, "seqcls"), dtype=torch.float32).eval()
    results = [{"prompt": ids, "logits": m(torch.tensor([ids])).logits[0].tolist()} for ids in inputs["prompts"]]
    write("hf-tiny-seqcls", {"transformers": tv, "results": results})


def lora():
    from transformers import AutoModelForCausalLM
    from peft import PeftModel, __version__ as pv
    base = AutoModelForCausalLM.from_pretrained(os.path.join(ref, "lora-base"), dtype=torch.float32).eval()
    m = PeftModel.from_pretrained(base, os.path.join(ref, "lora-adapter")).eval()
    results = [{"prompt": ids, "logits": m(input_ids=torch.tensor([ids])).logits[0, -1].tolist()} for ids in inputs["prompts"]]
    write("hf-tiny-lora", {"peft": pv, "results": results})


def embed():
    from sentence_transformers import SentenceTransformer, __version__ as sv
    st = SentenceTransformer(os.path.join(ref, "embed"), device="cpu", model_kwargs={"dtype": torch.float32})
    emb = st.encode(inputs["texts"], convert_to_numpy=True)
    ids = [st.tokenize([t])["input_ids"][0].tolist() for t in inputs["texts"]]
    write("hf-tiny-embed", {"sentence_transformers": sv, "results": [{"text": t, "input_ids": i, "embedding": e.tolist()} for t, i, e in zip(inputs["texts"], ids, emb)]})


part("seqcls", seqcls)
part("lora", lora)
part("embed", embed)
sys.exit(status)
