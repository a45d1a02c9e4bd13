#!/usr/bin/env python3
"""zinf fused AdamW vs torch.optim.AdamW(fused=True), same card, same run.

2^28 fp32 parameters with fp32 gradients (no 16-bit copy): 28 bytes per parameter
(read p, g, m, v; write p, m, v). torch is timed with CUDA events around optimizer.step()
(median after warmup); zinf with `zinf bench adam --json` (also CUDA events, median), which
also measures cudaMemcpy device-to-device bandwidth; torch's D2D copy is measured here too.

usage: python3 bench/adam_vs_torch.py [--zinf build-gpu-adam/bin/zinf] [--params N]
                                      [--iters N] [--warmup N] [--json OUT]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import torch


def cuda_time_ms(fn, iters, warmup):
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    for i in range(iters):
        start[i].record()
        fn()
        end[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end))


def torch_adamw_ms(n, iters, warmup):
    gen = torch.Generator(device="cuda").manual_seed(0)
    p = torch.nn.Parameter(torch.rand(n, device="cuda", generator=gen) * 2 - 1)
    p.grad = torch.rand(n, device="cuda", generator=gen) * 2 - 1
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                            fused=True)
    ms = cuda_time_ms(opt.step, iters, warmup)
    ok = bool(torch.isfinite(p).all())
    del opt, p
    torch.cuda.empty_cache()
    return ms, ok


def torch_copy_gbps(nbytes, iters=11):
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    ms = cuda_time_ms(lambda: b.copy_(a), iters, 2)
    del a, b
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--zinf", default=os.path.join(here, "..", "build-gpu-adam", "bin", "zinf"))
    ap.add_argument("--params", type=int, default=1 << 28)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device for torch", file=sys.stderr)
        return 77
    n = a.params
    name = torch.cuda.get_device_name(0)
    t_ms, t_ok = torch_adamw_ms(n, a.iters, a.warmup)
    copy_torch = torch_copy_gbps(1 << 30)
    cmd = [a.zinf, "bench", "adam", "--device", "cuda", "--params", str(n), "--grad-dtype",
           "fp32", "--moments", "fp32", "--param16", "none", "--iters", str(a.iters),
           "--warmup", str(a.warmup), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    z = json.loads(out.stdout.strip().splitlines()[-1])
    z_ms = z["ms_per_step"]
    bpp = 28.0
    res = {
        "card": name,
        "params": n,
        "torch_version": torch.__version__,
        "torch_fused_adamw_ms": t_ms,
        "torch_finite": t_ok,
        "zinf_ms": z_ms,
        "speedup_vs_torch": t_ms / z_ms,
        "zinf_gb_per_s": n * bpp / (z_ms * 1e-3) / 1e9,
        "torch_gb_per_s": n * bpp / (t_ms * 1e-3) / 1e9,
        "copy_gb_per_s_zinf_cudaMemcpy": z["copy_gb_per_s"],
        "copy_gb_per_s_torch_copy_": copy_torch,
        "zinf_copy_fraction": z["copy_fraction"],
        "torch_copy_fraction": n * bpp / (t_ms * 1e-3) / 1e9 / z["copy_gb_per_s"],
        "zinf_check_max_rel_err": z["check_max_rel_err"],
        "command": " ".join(cmd),
    }
    print(json.dumps(res, indent=1))
    print(f"\n{name}: 2^{n.bit_length() - 1} params, fp32 grads, 28 B/param")
    print(f"  torch AdamW(fused=True) {t_ms:8.3f} ms  {res['torch_gb_per_s']:7.1f} GB/s  "
          f"{100 * res['torch_copy_fraction']:5.1f}% of D2D")
    print(f"  zinf adam               {z_ms:8.3f} ms  {res['zinf_gb_per_s']:7.1f} GB/s  "
          f"{100 * z['copy_fraction']:5.1f}% of D2D")
    print(f"  D2D copy: {z['copy_gb_per_s']:.1f} GB/s (cudaMemcpy), {copy_torch:.1f} GB/s "
          f"(torch copy_)")
    print(f"  zinf speedup vs torch fused AdamW: {res['speedup_vs_torch']:.3f}x "
          f"(target >= 1.05), D2D fraction {100 * z['copy_fraction']:.1f}% (target >= 85%)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
