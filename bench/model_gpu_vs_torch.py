"""PyTorch eager baseline for bench_model_gpu: GPT-2 124M (transformers GPT2LMHeadModel, random
init, bf16 weights, default SDPA attention, no torch.compile), forward+backward tokens/s.
usage: python3 bench/model_gpu_vs_torch.py [B] [T] [iters]"""
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

B = int(sys.argv[1]) if len(sys.argv) > 1 else 16
T = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
iters = int(sys.argv[3]) if len(sys.argv) > 3 else 10
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).cuda().to(torch.bfloat16)
x = torch.randint(0, 50257, (B, T), device="cuda")
for i in range(iters + 2):
    if i == 2:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
torch.cuda.synchronize()
dt = (time.perf_counter() - t0) / iters
print(f"torch {torch.__version__} eager GPT-2 124M on {torch.cuda.get_device_name()}: B={B} T={T}: "
      f"{dt * 1e3:.2f} ms/step, {B * T / dt:.0f} tokens/s, loss {loss.item():.4f}")
