#!/usr/bin/env python3
"""PyTorch peer for `zinf bench model`: HF GPT2LMHeadModel forward+backward throughput.

The same work `zinf bench model` times: one micro-batch of B sequences of T random tokens,
forward (logits + mean cross-entropy) and backward into the parameters' .grad, no optimizer
step. bf16 autocast over fp32 weights (the usual PyTorch mixed precision), SDPA attention
(flash/cuDNN kernels as PyTorch picks them), TF32 on for the fp32 leftovers. Warm-up steps are
excluded; the timed steps are bracketed by CUDA synchronisation. FLOPs per token use the same
formula as zinf (zinf_model_flops_per_token, PaLM's, as llm.c reports MFU):

    6*N + 12*n_layer*T*n_head*head_dim,   N = matmul weights incl. the lm_head once,
                                          excluding position embeddings, norms and biases
    (with gradient checkpointing the hardware does one more forward; the model FLOP/s above
    does not count it, as zinf's does not)

Each measurement prints one JSON line: {"bench": "model_torch", "model", "B", "T", "mode"
(eager|compile), "recompute", "tokens_per_s", "ms_per_step", "tflops", "flops_per_token",
"loss", "peak_mem_gib", "device", "torch"}, or {"...", "error": "..."} when it could not run
(e.g. out of memory: then the next smaller B is tried when --fallback-b is set).

Default runs (--runs): gpt2-124m B=32 T=1024 (B=16 on out of memory) and gpt2-1.5b B=16
T=1024 with gradient checkpointing, each eager then torch.compile.

usage: python3 bench/model_vs_torch.py [--runs gpt2-124m:32:1024,gpt2-1.5b:16:1024:recompute]
                                       [--modes eager,compile] [--steps 20] [--warmup 5]
                                       [--device cuda|cpu] [--tiny]
  --tiny: a 2-layer GPT-2 (C 64) on the CPU for a quick check that the script runs.
"""
import argparse
import json
import sys
import time

import torch

PRESETS = {
    # name: (vocab, n_positions, n_layer, n_head, n_embd), as zinf's presets
    "gpt2-124m": (50257, 1024, 12, 12, 768),
    "gpt2-350m": (50257, 1024, 24, 16, 1024),
    "gpt2-1.5b": (50257, 1024, 48, 25, 1600),
    "gpt2-tiny": (512, 256, 2, 2, 128),
    "gpt2-cputest": (100, 64, 2, 2, 64),
}


def flops_per_token(vocab, L, H, C, T):
    hd = C // H
    # per layer: qkv 3C*C, attn proj C*C, mlp 2 * 4C*C (GPT-2: d_ff = 4C)
    n = L * (3 * C * C + C * C + 8 * C * C) + vocab * C  # lm_head tied with wte, counted once
    return 6 * n + 12 * L * T * H * hd


def make_model(name, dev, recompute):
    import transformers
    vocab, npos, L, H, C = PRESETS[name]
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=npos, n_layer=L, n_head=H,
                                  n_embd=C, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  use_cache=False)
    try:
        cfg._attn_implementation = "sdpa"
    except AttributeError:
        pass
    torch.manual_seed(0)
    m = transformers.GPT2LMHeadModel(cfg).to(dev)
    if recompute:
        m.gradient_checkpointing_enable()
    m.train()
    return m, (vocab, L, H, C)


def run_one(name, B, T, mode, recompute, steps, warmup, dev):
    m, (vocab, L, H, C) = make_model(name, dev, recompute)
    fn = m
    if mode == "compile":
        fn = torch.compile(m)
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randint(0, vocab, (B, T + 1), generator=g)
    tok = x[:, :-1].contiguous().to(dev)
    tgt = x[:, 1:].contiguous().to(dev)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16)

    def step():
        with amp:
            logits = fn(input_ids=tok).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab),
                                                     tgt.view(-1))
        loss.backward()
        for p in m.parameters():  # as zinf's bench: gradients of this step only
            p.grad = None
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        loss = step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    fpt = flops_per_token(vocab, L, H, C, T)
    tps = B * T / dt
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return dict(tokens_per_s=round(tps, 1), ms_per_step=round(dt * 1e3, 3),
                tflops=round(tps * fpt / 1e12, 3), flops_per_token=fpt,
                loss=round(float(loss), 5), peak_mem_gib=None if peak is None else round(peak, 2))


def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--runs", default="gpt2-124m:32:1024,gpt2-1.5b:16:1024:recompute",
                    help="comma-separated MODEL:B:T[:recompute]")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-fallback-b", action="store_true",
                    help="do not retry with B/2 on out of memory")
    a = ap.parse_args()
    if a.tiny:
        a.runs, a.device = "gpt2-cputest:2:32,gpt2-cputest:2:32:recompute", a.device or "cpu"
        a.steps, a.warmup = min(a.steps, 3), min(a.warmup, 1)
    devname = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(devname)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    card = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    rc = 0
    for spec in a.runs.split(","):
        parts = spec.split(":")
        if len(parts) not in (3, 4) or parts[0] not in PRESETS or \
                (len(parts) == 4 and parts[3] != "recompute"):
            print(f"model_vs_torch: --runs: '{spec}' is not MODEL:B:T[:recompute] with MODEL "
                  f"one of {','.join(PRESETS)}", file=sys.stderr)
            return 2
        name, B, T, rec = parts[0], int(parts[1]), int(parts[2]), len(parts) == 4
        for mode in a.modes.split(","):
            b = B
            while True:
                base = dict(bench="model_torch", model=name, B=b, T=T, mode=mode,
                            recompute=rec, device=card, torch=torch.__version__)
                try:
                    r = run_one(name, b, T, mode, rec, a.steps, a.warmup, dev)
                    print(json.dumps(dict(base, **r)), flush=True)
                    break
                except Exception as e:  # noqa: BLE001 - every failure is reported as a line
                    msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    print(json.dumps(dict(base, error=msg[:300])), flush=True)
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    if is_oom(e) and not a.no_fallback_b and b > 1:
                        b //= 2
                        continue
                    if mode == "eager":
                        rc = 1
                    break
                finally:
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
    return rc


if __name__ == "__main__":
    sys.exit(main())
