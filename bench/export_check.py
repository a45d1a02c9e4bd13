#!/usr/bin/env python3
"""Does a model exported by `zinf train --export` load in HF transformers and give the same
eval loss as zinf?

Reads FOLDER/config.json + FOLDER/model.safetensors with AutoModelForCausalLM (fp32, eager
attention), and computes the mean cross-entropy over the first N batches of B x T tokens of an
llm.c-format token shard, batched exactly as `zinf eval` does (batch k: inputs tokens
[k*B*T, (k+1)*B*T), targets shifted by one). Prints HF's loss, zinf's (run here with the same
arguments; --zinf-device cpu gives zinf's fp32 path) and the relative difference; exits 1 when
it exceeds --tol (default 1e-4 for the fp32 CPU path).

usage: bench/export_check.py FOLDER SHARD [--batches 2 --batch 2 --seq 1024]
                             [--zinf build/bin/zinf --zinf-device cpu|gpu --tol 1e-4]
"""
import argparse, json, re, subprocess, sys
import numpy as np
import torch
from transformers import AutoModelForCausalLM


def read_shard(path):
    raw = open(path, "rb").read()
    hdr = np.frombuffer(raw[:1024], dtype=np.int32)
    magic, ntok = int(hdr[0]), int(hdr[2])
    dt = {20240520: np.uint16, 20240801: np.uint32}.get(magic)
    if dt is None:
        sys.exit(f"{path}: magic {magic} is not an llm.c shard")
    return np.frombuffer(raw[1024:], dtype=dt)[:ntok].astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder"); ap.add_argument("shard")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--zinf", default="build/bin/zinf")
    ap.add_argument("--zinf-device", default="cpu")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32,
                                                 attn_implementation="eager").to(dev).eval()
    tok = read_shard(a.shard)
    bt = a.batch * a.seq
    losses = []
    with torch.no_grad():
        for k in range(a.batches):
            chunk = torch.from_numpy(tok[k * bt: k * bt + bt + 1].copy()).to(dev)
            x = chunk[:-1].view(a.batch, a.seq)
            y = chunk[1:].view(a.batch, a.seq)
            logits = model(input_ids=x).logits.float()
            losses.append(torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), y.reshape(-1)).item())
    hf = sum(losses) / len(losses)
    out = subprocess.run([a.zinf, "eval", "--model", a.folder, "--data", a.shard,
                          "--batches", str(a.batches), "--batch", str(a.batch), "--seq",
                          str(a.seq), "--device", a.zinf_device],
                         capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    m = re.findall(r"loss[^0-9-]*([0-9.]+)", out.stdout)
    if out.returncode or not m:
        print(out.stdout)
        sys.exit(f"zinf eval failed (rc {out.returncode})")
    zl = float(m[-1])
    rel = abs(zl - hf) / abs(hf)
    print(json.dumps({"bench": "export_check", "folder": a.folder, "hf_loss": hf,
                      "zinf_loss": zl, "zinf_device": a.zinf_device, "rel_diff": rel,
                      "class": type(model).__name__, "pass": rel <= a.tol}))
    sys.exit(0 if rel <= a.tol else 1)


if __name__ == "__main__":
    main()
