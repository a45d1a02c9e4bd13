/* Causal self-attention on the GPU, flash-style: the T x T scores are never stored. bf16
 * inputs/outputs, fp32 softmax statistics and accumulation. Grouped-query attention: query
 * head h uses key/value head h / (H / KV).
 *
 * Layouts (row-major, the QKV GEMM's output used in place):
 *   qkv  [B*T, (H + 2*KV) * hd]: row b*T+t holds q heads 0..H-1, then k heads, then v heads,
 *        each hd contiguous values (RoPE already applied to q and k for LLaMA).
 *   out  [B*T, H*hd] (the o_proj GEMM's input).
 *   lse  [B, H, T] fp32 log-sum-exp of the scaled scores per query row (saved for backward).
 *   dqkv [B*T, (H + 2*KV) * hd]: gradients w.r.t. q, k, v in the qkv layout (dk, dv summed
 *        over the query heads of each group). Overwritten, not accumulated.
 * scale: usually 1/sqrt(hd). Supported head_dim: 64 and 128 (others: -EINVAL, message via
 * stderr naming hd). Returns 0 or -EIO (CUDA error reported via zinf_cuda_report) / -EINVAL. */
#ifndef ZINF_KERNELS_ATTENTION_H
#define ZINF_KERNELS_ATTENTION_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zinf_attn_shape {
	int B, T, H, KV, hd;
} zinf_attn_shape;

int zinf_attn_fwd_bf16(const void *qkv, void *out, float *lse, zinf_attn_shape s, float scale,
		       void *stream);
/* Device scratch bytes zinf_attn_bwd_bf16 needs (e.g. fp32 dq accumulators, rowsum(dO*O)). */
size_t zinf_attn_bwd_workspace_bytes(zinf_attn_shape s);
int zinf_attn_bwd_bf16(const void *qkv, const void *out, const void *dout, const float *lse,
		       void *dqkv, void *workspace, zinf_attn_shape s, float scale, void *stream);

#ifdef __cplusplus
}
#endif

#endif
