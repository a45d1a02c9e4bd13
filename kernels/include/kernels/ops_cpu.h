/* CPU forward and backward of the transformer ops (fp32): the CPU backend of engine/model_cpu.c
 * and the oracle the GPU kernels are tested against. Clarity and exactness first, then speed.
 *
 * Conventions (every op):
 *   - row-major; N rows (tokens, B*T), C / I / O / F columns. x, out: [N, width].
 *   - parameter gradients (dw, db, dwte, dwpe) are ACCUMULATED (+=) and are added to once per
 *     call (a call's sum is formed first, then added), so two identical calls give exactly twice
 *     one call from zero.
 *   - input gradients are OVERWRITTEN (=), except the norms' dx which is ACCUMULATED (+=): it
 *     is the residual stream's gradient.
 *   - results do not depend on the thread count: every output element is computed by one
 *     thread with a fixed summation order (row reductions of norms and softmax in double).
 *   - no op allocates or fails; shapes are the caller's responsibility (engine/model_cpu.c
 *     validates them).
 * pool: from zinf_pool_create(); NULL runs on the calling thread. */
#ifndef ZINF_KERNELS_OPS_CPU_H
#define ZINF_KERNELS_OPS_CPU_H

#include <stdint.h>

#include "kernels/attention.h" /* zinf_attn_shape */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- thread pool ---- */

typedef struct zinf_pool zinf_pool;

/* threads <= 0: online CPUs. Workers that cannot be created are simply not used (the pool
 * gets fewer threads). Returns 0, or -ENOMEM. */
int zinf_pool_create(int threads, zinf_pool **out);
void zinf_pool_destroy(zinf_pool *p);
int zinf_pool_threads(const zinf_pool *p); /* 1 for NULL */
/* Calls fn(ctx, begin, end) on contiguous, disjoint ranges covering [0, n), one range per
 * thread (the calling thread takes the first), and returns when all are done. */
void zinf_pool_for(zinf_pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end),
		   void *ctx);

/* ---- embedding ---- */

/* out[n] = wte[tok[n]] + wpe[n % T] (wpe NULL: no positions). tok must be in range. */
void zinf_op_embed_fwd(zinf_pool *p, float *out, const int32_t *tok, const float *wte,
		       const float *wpe, int N, int T, int C);
/* dwte[tok[n]] += dout[n]; dwpe[n % T] += dout[n] (dwpe NULL: none). */
void zinf_op_embed_bwd(zinf_pool *p, float *dwte, float *dwpe, const float *dout,
		       const int32_t *tok, int N, int T, int C);

/* ---- norms ---- */

/* out = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps), biased variance (torch). Saves
 * mean and rstd [N]. b may be NULL. */
void zinf_op_layernorm_fwd(zinf_pool *p, float *out, float *mean, float *rstd, const float *x,
			   const float *w, const float *b, int N, int C, float eps);
/* dx += ..., dw += ..., db += ... (db may be NULL). */
void zinf_op_layernorm_bwd(zinf_pool *p, float *dx, float *dw, float *db, const float *dout,
			   const float *x, const float *mean, const float *rstd, const float *w,
			   int N, int C);
/* out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) (HF LlamaRMSNorm). Saves rstd [N]. */
void zinf_op_rmsnorm_fwd(zinf_pool *p, float *out, float *rstd, const float *x, const float *w,
			 int N, int C, float eps);
/* dx += ..., dw += ... */
void zinf_op_rmsnorm_bwd(zinf_pool *p, float *dx, float *dw, const float *dout, const float *x,
			 const float *rstd, const float *w, int N, int C);

/* ---- linear: out[N, O] = x[N, I] @ w[O, I]^T + b[O] ---- */

void zinf_op_linear_fwd(zinf_pool *p, float *out, const float *x, const float *w, const float *b,
			int N, int I, int O);
/* dx = dout @ w (dx may be NULL: not needed); dw += dout^T @ x; db += sum over rows (may be
 * NULL). */
void zinf_op_linear_bwd(zinf_pool *p, float *dx, float *dw, float *db, const float *dout,
			const float *x, const float *w, int N, int I, int O);

/* y[i] += x[i] for i < n (the residual adds). */
void zinf_op_add(zinf_pool *p, float *y, const float *x, int64_t n);

/* ---- activations ---- */

/* GELU, tanh approximation (HF gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void zinf_op_gelu_fwd(zinf_pool *p, float *out, const float *x, int64_t n);
void zinf_op_gelu_bwd(zinf_pool *p, float *dx, const float *dout, const float *x, int64_t n);
/* gu [N, 2F]: gate in columns [0, F), up in [F, 2F). out [N, F] = silu(gate) * up. */
void zinf_op_swiglu_fwd(zinf_pool *p, float *out, const float *gu, int N, int F);
void zinf_op_swiglu_bwd(zinf_pool *p, float *dgu, const float *dout, const float *gu, int N,
			int F);

/* ---- rotary position embedding (HF rotate_half: pairs i and i + hd/2) ---- */

typedef struct zinf_rope_cfg {
	float theta;
	int llama3; /* 1: rope_scaling "llama3" with the four numbers below */
	float factor, low_freq_factor, high_freq_factor;
	int original_max_pos;
} zinf_rope_cfg;

/* cos, sin: [T, hd/2] tables for positions 0..T-1, computed the way HF does (fp32
 * inv_freq = 1 / theta^(2i/hd), llama3-scaled if asked, angle = pos * inv_freq in fp32). */
void zinf_op_rope_table(float *cos_t, float *sin_t, int T, int hd, const zinf_rope_cfg *cfg);
/* Rotates the q and k heads of qkv (the attention.h layout) in place, position t of each row
 * b*T+t. bwd applies the inverse rotation to dq and dk in dqkv, in place. */
void zinf_op_rope_fwd(zinf_pool *p, float *qkv, const float *cos_t, const float *sin_t,
		      zinf_attn_shape s);
void zinf_op_rope_bwd(zinf_pool *p, float *dqkv, const float *cos_t, const float *sin_t,
		      zinf_attn_shape s);

/* ---- causal attention, grouped-query (q head h uses kv head h / (H / KV)) ---- */

/* qkv, out, lse as in kernels/attention.h (fp32 here): out [B*T, H*hd], lse [B, H, T]. */
void zinf_op_attn_fwd(zinf_pool *p, float *out, float *lse, const float *qkv, zinf_attn_shape s,
		      float scale);
/* dqkv overwritten. work: [B*H*T] floats of scratch (rowsum(dout * out)). */
void zinf_op_attn_bwd(zinf_pool *p, float *dqkv, float *work, const float *qkv, const float *out,
		      const float *dout, const float *lse, zinf_attn_shape s, float scale);

/* ---- softmax cross-entropy over V columns ---- */

/* lse[n] = logsumexp(logits[n]); returns the mean of lse - logits[n, tgt[n]] over rows with
 * tgt >= 0 (0 when none) and sets *count to their number. Targets must be < V. */
double zinf_op_ce_fwd(zinf_pool *p, float *lse, const float *logits, const int32_t *tgt, int N,
		      int V, int64_t *count);
/* dlogits = scale * (softmax(logits) - onehot(tgt)) on counted rows, 0 on ignored rows. For the
 * mean loss pass scale = 1 / count (times any outer scale). */
void zinf_op_ce_bwd(zinf_pool *p, float *dlogits, const float *logits, const float *lse,
		    const int32_t *tgt, int N, int V, float scale);

#ifdef __cplusplus
}
#endif

#endif
