#!/usr/bin/env python3
"""zinf's loss, logits and gradients against HF transformers on the same weights and batch.

For each config: make the HF model (GPT2LMHeadModel / LlamaForCausalLM, fp32, eager attention,
dropout 0), save config.json + model.safetensors, write the batch (tests/fixtures/models/README.md
describes batch.bin), compute PyTorch's fp32 loss, logits and every parameter's gradient (on
CUDA when there is one, with TF32 off, else on the CPU), run

    zinf eval --model DIR --tokens DIR/batch.bin --dump OUT --device cpu|gpu

and print, per tensor, the max abs error and the relative L2 error ||zinf - ref|| / ||ref||.

Pass rule (per tensor; the run fails when any tensor of any config fails):
  --device cpu (zinf fp32):  rel_l2 <= 1e-4 for the loss, the logits and every gradient
                             (a tensor whose reference is all zero passes when max_abs <= 1e-6).
  --device gpu (zinf bf16):  loss: |zinf - ref| / |ref| <= 1e-2;
                             logits and every gradient: rel_l2 <= 2e-2, or rel_l2 <= 2 x the
                             rel_l2 of PyTorch's own bf16 autocast run of the same tensor
                             (column torch_bf16; that is what "bf16 tolerance" means here: no
                             worse than twice what PyTorch's mixed precision gets).
A zinf error (non-zero exit) is a failure of that config, with zinf's message printed.
Exit status: 0 all passed, 1 a tensor failed or zinf failed, 2 usage error.

Configs (--configs, comma-separated; default: all for --device cpu; for --device gpu the
generated ones, since the GPU attention kernel takes head_dim 64 and 128 only):
  the fixtures in tests/fixtures/models/ (gpt2-small, llama-gqa-tied, llama-gqa-untied,
  llama-rope3) with their batch.bin, and generated here:
  gpt2-hd64   GPT-2, vocab 1000, C 128, 2 heads (hd 64), 2 layers, B 2, T 64
  llama-hd64  LLaMA, vocab 1000, C 256, 4 heads / 2 KV heads (hd 64), F 512, 2 layers,
              untied, B 2, T 64
  llama3-hd64 LLaMA, as llama-hd64 but 1 KV head, tied, rope_theta 500000 and llama3
              rope_scaling (factor 8, original_max_position_embeddings 64), B 2, T 128
  gpt2-124m   GPT-2 124M's config (vocab 50257, C 768, 12 layers, 12 heads), HF init, B 4, T 64

usage: python3 bench/model_vs_hf.py --zinf build/bin/zinf --device cpu|gpu [--configs A,B]
                                    [--workdir DIR] [--json OUT]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import make_model_fixtures as fx  # noqa: E402

import torch  # noqa: E402

FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "models")

# name -> (family, HF config kwargs, B, T, std_scale)
GENERATED = {
    "gpt2-hd64": ("gpt2", dict(vocab_size=1000, n_positions=128, n_embd=128, n_layer=2,
                               n_head=2), 2, 64, 2.5),
    "llama-hd64": ("llama", dict(vocab_size=1000, max_position_embeddings=128,
                                 hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=False), 2, 64, 2.5),
    "llama3-hd64": ("llama", dict(vocab_size=1000, max_position_embeddings=256,
                                  hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1,
                                  tie_word_embeddings=True, rope_theta=500000.0,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 64}),
                    2, 128, 2.5),
    "gpt2-124m": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
                               n_head=12), 4, 64, 1.0),
}

CPU_TOL = 1e-4
CPU_ATOL_ZERO = 1e-6
GPU_LOSS_TOL = 1e-2
GPU_TOL = 2e-2
GPU_PEER_FACTOR = 2.0


def all_configs():
    return list(fx.FIXTURES) + list(GENERATED)


def load_hf(model_dir):
    import transformers
    cfg = transformers.AutoConfig.from_pretrained(model_dir)
    cls = (transformers.GPT2LMHeadModel if cfg.model_type == "gpt2"
           else transformers.LlamaForCausalLM)
    # transformers 5 renamed torch_dtype to dtype
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype" if major >= 5 else "torch_dtype": torch.float32}
    m = cls.from_pretrained(model_dir, attn_implementation="eager", **kw)
    return m.eval()


def read_batch(path):
    import numpy as np
    a = np.fromfile(path, dtype="<i4")
    if len(a) < 4 or a[0] != fx.BATCH_MAGIC or a[1] != fx.BATCH_VERSION:
        raise ValueError(f"{path}: not a batch.bin (magic/version)")
    B, T = int(a[2]), int(a[3])
    if len(a) != 4 + 2 * B * T:
        raise ValueError(f"{path}: {len(a)} int32, expected {4 + 2 * B * T} for B={B} T={T}")
    tok = torch.from_numpy(a[4:4 + B * T].reshape(B, T).copy())
    tgt = torch.from_numpy(a[4 + B * T:].reshape(B, T).copy())
    return tok, tgt


def prepare(name, workdir):
    """(model_dir, batch_path) for a config, writing the generated ones under workdir."""
    if name in fx.FIXTURES:
        d = os.path.join(FIXTURE_DIR, name)
        return d, os.path.join(d, "batch.bin")
    family, kw, B, T, scale = GENERATED[name]
    d = os.path.join(workdir, name)
    model = fx.make_model(family, kw, std_scale=scale)
    fx.save_model(model, d)
    tok, tgt = fx.make_batch(kw["vocab_size"], B, T)
    path = os.path.join(d, "batch.bin")
    fx.write_batch(path, tok, tgt)
    del model
    return d, path


def torch_reference(model_dir, tok, tgt, dev, autocast_bf16=False):
    model = load_hf(model_dir).to(dev)
    t, g = tok.to(dev), tgt.to(dev)
    if autocast_bf16:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            loss, logits, grads = fx.reference(model, t, g)
    else:
        loss, logits, grads = fx.reference(model, t, g)
    out = (loss.cpu().double(), logits.float().cpu().double(),
           {k: v.cpu().double() for k, v in grads.items()})
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run_zinf(zinf, model_dir, batch, dump, device):
    if os.path.isdir(dump):
        shutil.rmtree(dump)
    cmd = [zinf, "eval", "--model", model_dir, "--tokens", batch, "--dump", dump,
           "--device", device]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    return p.returncode, p.stdout + p.stderr, dt, " ".join(cmd)


def read_dump(dump):
    from safetensors.torch import load_file
    out = load_file(os.path.join(dump, "outputs.safetensors"))
    grads = load_file(os.path.join(dump, "grads.safetensors"))
    return (out["loss"].double().reshape(()), out["logits"].double(),
            {k: v.double() for k, v in grads.items()})


def errors(z, r):
    d = (z - r).abs()
    rn = float(r.norm())
    en = float((z - r).norm())
    return float(d.max()) if d.numel() else 0.0, (en / rn if rn > 0 else (0.0 if en == 0 else math.inf)), rn


def judge(kind, device, max_abs, rel, peer_rel):
    """True when the tensor passes the rule in the module docstring."""
    if device == "cpu":
        if math.isinf(rel):
            return max_abs <= CPU_ATOL_ZERO
        return rel <= CPU_TOL
    if kind == "loss":
        return rel <= GPU_LOSS_TOL
    limit = GPU_TOL
    if peer_rel is not None:
        limit = max(limit, GPU_PEER_FACTOR * peer_rel)
    return rel <= limit


def compare(name, device, ref, peer, zout):
    rows = []
    rloss, rlogits, rgrads = ref
    zloss, zlogits, zgrads = zout
    ploss, plogits, pgrads = peer if peer else (None, None, {})

    def row(kind, tname, z, r, p):
        if z.shape != r.shape:
            rows.append(dict(config=name, tensor=tname, shape=list(r.shape), max_abs=None,
                             rel_l2=None, torch_bf16=None, ok=False,
                             note=f"zinf shape {list(z.shape)}"))
            return
        max_abs, rel, _ = errors(z, r)
        prel = errors(p, r)[1] if p is not None else None
        rows.append(dict(config=name, tensor=tname, shape=list(r.shape), max_abs=max_abs,
                         rel_l2=rel, torch_bf16=prel, ok=judge(kind, device, max_abs, rel, prel),
                         note=""))

    row("loss", "loss", zloss.reshape(()), rloss.reshape(()),
        ploss.reshape(()) if ploss is not None else None)
    row("logits", "logits", zlogits.reshape(rlogits.shape) if zlogits.numel() == rlogits.numel()
        else zlogits, rlogits, plogits)
    for k, r in rgrads.items():
        if k not in zgrads:
            rows.append(dict(config=name, tensor="grad " + k, shape=list(r.shape), max_abs=None,
                             rel_l2=None, torch_bf16=None, ok=False, note="missing in zinf dump"))
            continue
        row("grad", "grad " + k, zgrads[k], r, pgrads.get(k))
    for k in zgrads:
        if k not in rgrads:
            rows.append(dict(config=name, tensor="grad " + k, shape=list(zgrads[k].shape),
                             max_abs=None, rel_l2=None, torch_bf16=None, ok=False,
                             note="not a parameter of the HF model"))
    return rows


def fmt(v):
    return "-" if v is None else f"{v:.3e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--zinf", default=os.path.join(ROOT, "build", "bin", "zinf"))
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                    help="zinf's path: cpu (fp32) or gpu (bf16)")
    ap.add_argument("--configs", default=None)
    ap.add_argument("--workdir", default=None, help="default: a temporary folder, removed")
    ap.add_argument("--ref-device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--json", default=None, help="also write every row as JSON lines here")
    a = ap.parse_args()

    if a.configs is None:
        a.configs = ",".join(all_configs() if a.device == "cpu" else GENERATED)
    names = [n for n in a.configs.split(",") if n]
    for n in names:
        if n not in all_configs():
            print(f"model_vs_hf: --configs: unknown config '{n}'; known: "
                  f"{','.join(all_configs())}", file=sys.stderr)
            return 2
    if not os.access(a.zinf, os.X_OK):
        print(f"model_vs_hf: --zinf {a.zinf}: not an executable; build zinf or pass --zinf",
              file=sys.stderr)
        return 2
    refdev = a.ref_device
    if refdev == "auto":
        refdev = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(refdev)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)

    workdir = a.workdir or tempfile.mkdtemp(prefix="zinf-model-vs-hf-")
    os.makedirs(workdir, exist_ok=True)
    import transformers
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# model_vs_hf: zinf {a.zinf} --device {a.device}; reference: torch "
          f"{torch.__version__}, transformers {transformers.__version__}, fp32 on {refdev} "
          f"(TF32 off); GPU {gpu}")
    if a.device == "cpu":
        print(f"# rule: rel_l2 <= {CPU_TOL:g} for loss, logits and every gradient")
    else:
        print(f"# rule: loss rel <= {GPU_LOSS_TOL:g}; logits and gradients rel_l2 <= "
              f"max({GPU_TOL:g}, {GPU_PEER_FACTOR:g} x torch bf16-autocast rel_l2)")
    all_rows, failed = [], []
    hdr = f"{'config':<17} {'tensor':<48} {'max_abs':>10} {'rel_l2':>10} {'torch_bf16':>10}  ok"
    for name in names:
        model_dir, batch = prepare(name, workdir)
        tok, tgt = read_batch(batch)
        ref = torch_reference(model_dir, tok, tgt, dev)
        peer = None
        if a.device == "gpu" and dev.type == "cuda":
            peer = torch_reference(model_dir, tok, tgt, dev, autocast_bf16=True)
        dump = os.path.join(workdir, name + ".zinf")
        rc, log, dt, cmd = run_zinf(a.zinf, model_dir, batch, dump, a.device)
        print(f"\n## {name}: B={tok.shape[0]} T={tok.shape[1]}, ref loss "
              f"{float(ref[0]):.6f}; zinf {dt:.2f} s: {cmd}")
        if rc != 0:
            print(f"FAIL {name}: zinf exited {rc}:\n{log.strip()}")
            failed.append(name)
            all_rows.append(dict(config=name, tensor="(zinf)", ok=False, note=log.strip()))
            continue
        try:
            zout = read_dump(dump)
        except Exception as e:  # noqa: BLE001 - report any unreadable dump as this config's failure
            print(f"FAIL {name}: reading zinf's dump {dump}: {e}")
            failed.append(name)
            continue
        rows = compare(name, a.device, ref, peer, zout)
        print(hdr)
        for r in rows:
            print(f"{name:<17} {r['tensor'][:48]:<48} {fmt(r['max_abs']):>10} "
                  f"{fmt(r['rel_l2']):>10} {fmt(r['torch_bf16']):>10}  "
                  f"{'ok' if r['ok'] else 'FAIL'}{(' ' + r['note']) if r['note'] else ''}")
        bad = [r for r in rows if not r["ok"]]
        worst = max((r["rel_l2"] for r in rows if r["rel_l2"] is not None), default=0.0)
        print(f"{'PASS' if not bad else 'FAIL'} {name}: {len(rows)} tensors, worst rel_l2 "
              f"{worst:.3e}, {len(bad)} failed")
        if bad:
            failed.append(name)
        all_rows += rows
    if a.json:
        with open(a.json, "w") as f:
            for r in all_rows:
                f.write(json.dumps(dict(r, device=a.device)) + "\n")
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{len(names) - len(failed)} passed, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
