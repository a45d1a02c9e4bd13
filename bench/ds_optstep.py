#!/usr/bin/env python3
"""DeepSpeed's offloaded optimizer step, timed the way `zinf bench optstep` times zinf's.

DeepSpeed ZeRO stage 3 with `offload_optimizer: {device: cpu, pin_memory: true}` and bf16 on a
stack of square nn.Linear layers with --params parameters in total (no biases): one forward and
backward per step (loss = mean of the output), then `engine.step()` is timed alone, with CUDA
synchronisation around it. That step is DeepSpeed's ZeRO-Offload optimizer step: gradients
copied to pinned host memory, DeepSpeedCPUAdam over the fp32 master/m/v partition on the host
cores, updated 16-bit parameters copied back. Prints one JSON line with the median step time.

Needs deepspeed importable (its cpu_adam op is JIT-built on first use) and one GPU.
usage: python3 bench/ds_optstep.py [--params 1G] [--width 8192] [--steps 3] [--warmup 1]
"""
import argparse, json, os, statistics, time

os.environ.setdefault("RANK", "0"); os.environ.setdefault("LOCAL_RANK", "0")
os.environ.setdefault("WORLD_SIZE", "1"); os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29517")
import torch
import deepspeed


def parse_n(s):
    s = s.upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
    return int(s[:-1] if s[-1] in "KMG" else s) * mult


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="1G")
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    n = parse_n(a.params)
    layers = max(1, round(n / (a.width * a.width)))
    model = torch.nn.Sequential(*[torch.nn.Linear(a.width, a.width, bias=False)
                                  for _ in range(layers)])
    nparams = sum(p.numel() for p in model.parameters())
    cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
           "bf16": {"enabled": True}, "steps_per_print": 1000000,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.01}},
           "zero_optimization": {"stage": 3, "sub_group_size": 100000000,
                                 "offload_optimizer": {"device": "cpu", "pin_memory": True}}}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=cfg)
    x = torch.randn(8, a.width, device=engine.device, dtype=torch.bfloat16)
    times = []
    for i in range(a.warmup + a.steps):
        loss = engine(x).float().mean()
        engine.backward(loss)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.step()
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"bench": "deepspeed_optstep", "params": nparams, "layers": layers,
                      "width": a.width, "offload": "cpu", "pin_memory": True,
                      "step_s_median": statistics.median(times), "step_s": times,
                      "threads": torch.get_num_threads(), "deepspeed": deepspeed.__version__,
                      "torch": torch.__version__,
                      "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
