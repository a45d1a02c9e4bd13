/* Transformer ops on CUDA for engine/model_gpu.c: bf16 activations, fp32 math inside every
 * kernel, fp32 parameter gradients. Plain-C launchers, asynchronous on `stream`.
 *
 * Conventions (every op):
 *   - row-major; N rows (tokens, B*T), C / F / V columns; bf16 arrays are __nv_bfloat16 passed
 *     as void *, fp32 arrays as float *.
 *   - parameter gradients (dw, db, dwte, dwpe) are ACCUMULATED (+=) in fp32, input gradients
 *     are OVERWRITTEN, except the norms' dres (the residual stream's gradient), which is read
 *     and written in place.
 *   - deterministic: no float atomics. Column reductions (norm weights, biases) go through a
 *     fixed grid of row chunks into `partials` (zinf_colsum_partials_bytes), then one ordered
 *     sum per column. The embedding backward groups token positions on the host (see
 *     zinf_embed_plan) so each wte row is summed by one thread in a fixed order.
 *   - widths (C, F, V, head_dim) must be multiples of 8 and pointers 16-byte aligned (every
 *     model.h block is); violations return -EINVAL with a message on stderr.
 * Returns 0, -EINVAL or -EIO (a CUDA error, printed with file:line). */
#ifndef ZINF_KERNELS_OPS_CUDA_H
#define ZINF_KERNELS_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- casts ---- */
/* dst[i] = bf16(src[i]) (round to nearest even), n elements. */
int zinf_cast_f32_to_bf16(void *dst, const float *src, int64_t n, void *stream);
/* dst[i] = float(src[i]). */
int zinf_cast_bf16_to_f32(float *dst, const void *src, int64_t n, void *stream);
/* dst [rows, cols] fp32 = src [rows, ld] bf16 (first cols columns of each row). */
int zinf_cast_bf16_to_f32_2d(float *dst, const void *src, int rows, int cols, int ld,
			     void *stream);

/* dst[i] += src[i], n elements (either may be pinned host memory: UVA zero-copy). */
int zinf_add_f32_cuda(float *dst, const float *src, int64_t n, void *stream);

/* ---- embedding ---- */
/* out[n] = wte[tok[n]] + wpe[n % T] (wpe NULL: none). tok: device int32 [N], in range. */
int zinf_embed_fwd_cuda(void *out, const int32_t *tok, const void *wte, const void *wpe, int N,
			int T, int C, void *stream);
/* Host-side grouping of the token positions for the deterministic backward. From tok[N]
 * (host, values < V) fills: uniq[nuniq] the distinct tokens in increasing order,
 * start[nuniq+1] CSR offsets into pos[N], pos[] the positions of each token in increasing
 * order. count: scratch of V ints (zeroed inside). Returns nuniq. */
int zinf_embed_plan(const int32_t *tok, int N, int V, int32_t *uniq, int32_t *start, int32_t *pos,
		    int32_t *count);
/* dwte[uniq[u]] += sum over pos in start[u]..start[u+1] of dout[pos] (ascending positions);
 * dwpe[t] += sum over b of dout[b*T + t] (dwpe NULL: none). Device arrays; nuniq from the
 * plan. */
int zinf_embed_bwd_cuda(float *dwte, float *dwpe, const void *dout, const int32_t *uniq,
			const int32_t *start, const int32_t *pos, int nuniq, int N, int T, int C,
			void *stream);

/* ---- norms fused with the residual add ----
 * res_out = bf16(res + delta) (delta NULL: res_out = res, and res_out may equal res);
 * out = norm(res_out) * w (+ b), computed from the bf16-rounded res_out so a recompute from a
 * saved res_out gives the same bits. mean (LayerNorm only) and rstd: fp32 [N] saved for the
 * backward. rms: RMSNorm (b, mean unused, may be NULL); else LayerNorm (b may be NULL). */
int zinf_norm_fwd_cuda(void *out, void *res_out, float *mean, float *rstd, const void *res,
		       const void *delta, const void *w, const void *b, int N, int C, float eps,
		       int rms, void *stream);
/* dres[n] += d norm(x[n]) / dx applied to dout[n] (in place, bf16); dw += sum_n dout*xhat,
 * db += sum_n dout (db NULL: none). x: the norm's input (res_out of the forward). partials:
 * device scratch of zinf_colsum_partials_bytes(2*C) bytes. */
int zinf_norm_bwd_cuda(void *dres, float *dw, float *db, const void *dout, const void *x,
		       const float *mean, const float *rstd, const void *w, int N, int C, int rms,
		       float *partials, void *stream);
/* Bytes of scratch the column reductions need for `cols` output columns. */
size_t zinf_colsum_partials_bytes(int cols);
/* db[c] += sum_n dy[n, c] (bias gradient), dy [N, C] bf16. */
int zinf_bias_grad_cuda(float *db, const void *dy, int N, int C, float *partials, void *stream);

/* ---- activations ---- */
/* GELU, tanh approximation (GPT-2's gelu_new): out = gelu(x), n elements (out may be x). */
int zinf_gelu_fwd_cuda(void *out, const void *x, int64_t n, void *stream);
/* dx = dout * gelu'(x) (dx may be dout). */
int zinf_gelu_bwd_cuda(void *dx, const void *dout, const void *x, int64_t n, void *stream);
/* SwiGLU on the fused gate+up output h [N, 2F] (gate columns first):
 * out [N, F] = silu(gate) * up. */
int zinf_swiglu_fwd_cuda(void *out, const void *h, int N, int F, void *stream);
/* dh [N, 2F] from dout [N, F] and h: dgate = dout*up*silu'(gate), dup = dout*silu(gate). */
int zinf_swiglu_bwd_cuda(void *dh, const void *dout, const void *h, int N, int F, void *stream);

/* ---- RoPE (HF rotate_half: pairs (i, i + hd/2)) ----
 * On the packed qkv [B*T, (H + 2KV)*hd] buffer, in place on the H query and KV key heads.
 * cos_sin: device fp32 [T][hd/2][2] (cos, sin of position t times inv_freq[i]), from
 * zinf_rope_table on the host. bwd applies the inverse rotation (to dqkv). */
int zinf_rope_fwd_cuda(void *qkv, const float *cos_sin, int B, int T, int H, int KV, int hd,
		       void *stream);
int zinf_rope_bwd_cuda(void *dqkv, const float *cos_sin, int B, int T, int H, int KV, int hd,
		       void *stream);
/* Host: inv_freq[hd/2] (theta^(-2i/hd), llama3 scaling when factor > 0) and the table
 * out[T][hd/2][2], computed in double. */
void zinf_rope_table(float *out, int T, int hd, double theta, int llama3, double factor,
		     double low_freq_factor, double high_freq_factor, int original_max_pos);

/* ---- softmax + cross-entropy fused, in place ----
 * logits [N, Vp] bf16 (Vp = padded vocab, V real columns). For each row n with tgt[n] >= 0:
 * loss[n] = logsumexp(logits[n, :V]) - logits[n, tgt[n]] and the row is overwritten with
 * softmax - onehot (unscaled: the caller folds 1/count and grad_scale into the next GEMM's
 * alpha); rows with tgt[n] < 0: loss 0 and a zero row. Columns >= V are set to 0. The
 * probabilities are never stored separately. tgt: device int32 [N]. */
int zinf_xent_fwd_bwd_cuda(void *logits, float *loss, const int32_t *tgt, int N, int V, int Vp,
			   void *stream);

#ifdef __cplusplus
}
#endif

#endif
