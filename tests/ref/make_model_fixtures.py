#!/usr/bin/env python3
"""Make the reference model fixtures in tests/fixtures/models/ (issue 5).

For each small random HF model (GPT2LMHeadModel; LlamaForCausalLM with grouped-query
attention, tied and untied, and one with llama3 rope scaling) this writes, under
tests/fixtures/models/<name>/:

  config.json, model.safetensors   as save_pretrained writes them (fp32)
  batch.bin                        the batch: tokens and targets, int32 (format below)
  reference.safetensors            PyTorch fp32 reference on that batch: "loss" [1],
                                   "logits" [B, T, vocab_size] and every parameter's gradient
                                   under its HF name, in the HF layout (Conv1D as in the file)

The loss is HF's: mean cross-entropy over targets != -100 (labels given already shifted, i.e.
targets[b][t] is the token that should follow tokens[b][t]). Runs on CPU in fp32 with
attn_implementation="eager" and dropout 0, from a fixed seed, so the output is reproducible.

batch.bin (little-endian int32 throughout):
  [0] magic 0x5A424154   [1] version 1   [2] B   [3] T
  then tokens[B][T], then targets[B][T] (a target of -100 is ignored)

Usage: python3 tests/ref/make_model_fixtures.py [--out tests/fixtures/models] [--only NAME]
Also importable: bench/model_vs_hf.py uses make_model(), make_batch(), reference() and
write_batch().
"""
import argparse
import json
import os
import struct
import sys

BATCH_MAGIC = 0x5A424154
BATCH_VERSION = 1
IGNORE = -100

# name -> (family, HF config kwargs). Vocab 100 is not a multiple of 128 (zinf pads to 128).
FIXTURES = {
    "gpt2-small": ("gpt2", dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2,
                                n_head=4)),
    "llama-gqa-tied": ("llama", dict(vocab_size=100, max_position_embeddings=32,
                                     hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, tie_word_embeddings=True)),
    "llama-gqa-untied": ("llama", dict(vocab_size=100, max_position_embeddings=32,
                                       hidden_size=48, intermediate_size=96,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=1, head_dim=16,
                                       tie_word_embeddings=False, rope_theta=500000.0)),
    # original_max_position_embeddings small enough that T=16 straddles the scaled band.
    "llama-rope3": ("llama", dict(vocab_size=100, max_position_embeddings=64,
                                  hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1,
                                  tie_word_embeddings=False, rope_theta=10000.0,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 16})),
}

FIXTURE_B, FIXTURE_T = 2, 16


def make_config(family, kw):
    """An HF config for a random model: eager attention, no dropout, std 0.02 init."""
    import transformers
    if family == "gpt2":
        # GPT2Config's bos/eos default to 50256 whatever the vocab; a small vocab gets its
        # last id instead (zinf refuses special ids outside the vocabulary).
        v = kw.get("vocab_size", 50257)
        base = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                    layer_norm_epsilon=1e-5, initializer_range=0.02, n_inner=None,
                    activation_function="gelu_new", bos_token_id=min(50256, v - 1),
                    eos_token_id=min(50256, v - 1))
        base.update(kw)
        cfg = transformers.GPT2Config(**base)
    elif family == "llama":
        base = dict(attention_dropout=0.0, rms_norm_eps=1e-5, initializer_range=0.02,
                    hidden_act="silu", attention_bias=False, mlp_bias=False)
        base.update(kw)
        cfg = transformers.LlamaConfig(**base)
    else:
        raise ValueError(f"family {family!r}: not gpt2 or llama")
    cfg._attn_implementation = "eager"
    return cfg


def make_model(family, kw, seed=1234, std_scale=5.0, perturb=0.1):
    """A random fp32 model on the CPU. The family's init, then: 2-D weights times std_scale
    (std 0.1 instead of 0.02, so attention is far from uniform and logits spread out), and
    norm weights 1 + perturb*N(0,1), biases perturb*N(0,1), so a missing norm scale or bias
    shows in the comparison (the plain init has them at exactly 1 and 0)."""
    import torch
    import transformers
    cfg = make_config(family, kw)
    torch.manual_seed(seed)
    cls = (transformers.GPT2LMHeadModel if family == "gpt2"
           else transformers.LlamaForCausalLM)
    model = cls(cfg).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(std_scale)
            elif perturb:
                base = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(base + perturb * torch.randn_like(p))
    model.eval()  # dropout is 0 anyway; eval() makes that certain
    return model


def make_batch(vocab, B, T, seed=4321):
    """tokens, targets as int32 tensors [B, T]; targets are the next tokens, with a few -100."""
    import torch
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, vocab, (B, T + 1), generator=g, dtype=torch.int64)
    tokens = seq[:, :-1].clone()
    targets = seq[:, 1:].clone()
    # Ignore a few positions: the first of row 0, a run in the middle of the last row.
    targets[0, 0] = IGNORE
    if T >= 8:
        targets[B - 1, T // 2:T // 2 + 3] = IGNORE
    return tokens.to(torch.int32), targets.to(torch.int32)


def reference(model, tokens, targets):
    """(loss, logits, {hf_name: grad}) in fp32 from one forward+backward."""
    import torch
    import torch.nn.functional as F
    model.zero_grad(set_to_none=True)
    out = model(input_ids=tokens.long())
    logits = out.logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.long().reshape(-1),
                           ignore_index=IGNORE, reduction="mean")
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():  # tied weights appear once, under wte/embed
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        grads[name] = g.detach().float().contiguous().clone()
    return loss.detach().float(), logits.detach().contiguous(), grads


def write_batch(path, tokens, targets):
    B, T = tokens.shape
    with open(path, "wb") as f:
        f.write(struct.pack("<4i", BATCH_MAGIC, BATCH_VERSION, B, T))
        f.write(tokens.contiguous().numpy().astype("<i4").tobytes())
        f.write(targets.contiguous().numpy().astype("<i4").tobytes())


def save_model(model, outdir):
    """config.json + model.safetensors exactly as save_pretrained writes them."""
    os.makedirs(outdir, exist_ok=True)
    model.save_pretrained(outdir, safe_serialization=True)
    gen = os.path.join(outdir, "generation_config.json")  # not part of the model
    if os.path.exists(gen):
        os.remove(gen)


def save_reference(path, loss, logits, grads):
    from safetensors.torch import save_file
    tensors = {"loss": loss.reshape(1).contiguous(), "logits": logits.contiguous()}
    for k, v in grads.items():
        if k in tensors:
            raise ValueError(f"parameter name {k!r} collides with an output name")
        tensors[k] = v
    save_file(tensors, path, metadata={"format": "zinf-model-reference", "version": "1"})


def make_fixture(name, outdir):
    import torch
    family, kw = FIXTURES[name]
    model = make_model(family, kw)
    tokens, targets = make_batch(kw["vocab_size"], FIXTURE_B, FIXTURE_T)
    d = os.path.join(outdir, name)
    save_model(model, d)
    write_batch(os.path.join(d, "batch.bin"), tokens, targets)
    loss, logits, grads = reference(model, tokens, targets)
    save_reference(os.path.join(d, "reference.safetensors"), loss, logits, grads)
    nparam = sum(p.numel() for p in model.parameters())
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {nparam} params, loss {loss.item():.6f}, {len(grads)} grads, "
          f"{size / 1024:.1f} KiB (torch {torch.__version__})")


SHARD_MAGIC_U16, SHARD_VERSION_U16 = 20240520, 1


def write_shard(path, ids, count=None):
    """An llm.c token shard (uint16 tokens); count overrides the header's token count."""
    hdr = [0] * 256
    hdr[0], hdr[1], hdr[2] = SHARD_MAGIC_U16, SHARD_VERSION_U16, len(ids) if count is None else count
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(struct.pack(f"<{len(ids)}H", *ids))


def make_eval_fixture(outdir, name="gpt2-small", B=2, T=16, nbatch=2):
    """<name>/eval_shard.bin: B*T*nbatch+1 tokens, and eval_reference.json with the mean loss
    over its nbatch batches as `zinf eval --data` reads them (batch k = tokens [k*B*T,
    k*B*T + B*T + 1), inputs the first B*T, targets shifted by one)."""
    import torch
    family, kw = FIXTURES[name]
    model = make_model(family, kw)
    g = torch.Generator().manual_seed(777)
    ids = torch.randint(0, kw["vocab_size"], (B * T * nbatch + 1,), generator=g)
    d = os.path.join(outdir, name)
    write_shard(os.path.join(d, "eval_shard.bin"), ids.tolist())
    losses = []
    with torch.no_grad():
        for k in range(nbatch):
            x = ids[k * B * T:k * B * T + B * T + 1]
            logits = model(input_ids=x[:-1].view(B, T)).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, kw["vocab_size"]),
                                                     x[1:].reshape(-1))
            losses.append(float(loss))
    mean = sum(losses) / len(losses)
    with open(os.path.join(d, "eval_reference.json"), "w") as f:
        json.dump(dict(shard="eval_shard.bin", B=B, T=T, batches=nbatch, losses=losses,
                       mean_loss=mean), f, indent=1)
        f.write("\n")
    print(f"{name}/eval_shard.bin: {nbatch} batches of {B}x{T}, mean loss {mean:.6f}")
    return ids.tolist()


def make_bad_fixtures(outdir, shard_ids):
    """bad/: inputs that zinf eval must refuse with a clear message (tests/model_cli.cmake)."""
    import shutil
    d = os.path.join(outdir, "bad")
    os.makedirs(d, exist_ok=True)
    big = list(shard_ids)
    big[40] = 100  # vocab_size of gpt2-small is 100
    write_shard(os.path.join(d, "shard_big_token.bin"), big)
    write_shard(os.path.join(d, "shard_truncated.bin"), shard_ids[:60], count=len(shard_ids))
    src = os.path.join(outdir, "gpt2-small")
    with open(os.path.join(src, "batch.bin"), "rb") as f:
        batch = bytearray(f.read())
    bt = struct.unpack_from("<4i", batch)
    bad = bytearray(batch)
    struct.pack_into("<i", bad, 16 + 4 * (1 * bt[3] + 3), 150)  # tokens[1][3] = 150
    with open(os.path.join(d, "batch_big_token.bin"), "wb") as f:
        f.write(bad)
    with open(os.path.join(d, "batch_truncated.bin"), "wb") as f:
        f.write(batch[:100])
    os.makedirs(os.path.join(d, "bert"), exist_ok=True)
    with open(os.path.join(d, "bert", "config.json"), "w") as f:
        json.dump(dict(model_type="bert", vocab_size=100, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4), f, indent=1)
        f.write("\n")
    tw = os.path.join(d, "truncated-weights")
    os.makedirs(tw, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), os.path.join(tw, "config.json"))
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        data = f.read()
    with open(os.path.join(tw, "model.safetensors"), "wb") as f:
        f.write(data[:len(data) // 2])
    print(f"bad/: {len(os.listdir(d))} entries")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "models"))
    ap.add_argument("--only", choices=sorted(FIXTURES), action="append")
    a = ap.parse_args()
    import torch
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = os.path.normpath(a.out)
    for name in a.only or FIXTURES:
        make_fixture(name, out)
    if not a.only or "gpt2-small" in a.only:
        make_bad_fixtures(out, make_eval_fixture(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
