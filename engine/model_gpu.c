/* GPU forward and backward of the GPT-2 / LLaMA models (see engine/include/engine/model_gpu.h).
 *
 * Per layer (pre-norm): the residual add is fused into the next norm, so the residual stream
 * res[l] (layer l's input, bf16 [N, C]) is written by the norm kernel that also normalises it:
 *
 *   ln1 = norm1(res[l])                 res[l] = x2[l-1] + proj[l-1] (fused, l > 0)
 *   qkv = ln1 Wqkv^T + b  (+ RoPE)      att = attention(qkv), lse saved
 *   ln2 = norm2(x2 = res[l] + att Wo^T + bo)
 *   GPT-2: act = gelu(fc = ln2 Wfc^T + b) (cuBLASLt GELU_AUX_BIAS epilogue keeps fc)
 *   LLaMA: fc = ln2 [Wgate;Wup]^T, act = silu(gate) * up
 *   proj = act Wproj^T + b              (added to x2 by the next norm)
 * then lnf = normf(res[L]), logits = lnf Whead^T ([N, padded_vocab], bf16) and the fused
 * softmax-cross-entropy kernel overwrites the logits with (softmax - onehot) right away, so the
 * backward starts from dlogits with alpha = grad_scale / counted targets folded into the two
 * head GEMMs.
 *
 * recompute: only res[0..L] is kept per layer; every other activation lives in one layer-sized
 * set that the backward refills by re-running the layer's forward from res[l]. The norms
 * compute from the bf16-rounded residual, and every kernel is deterministic, so the refilled
 * activations are bit-identical to the ones a non-recompute forward keeps.
 *
 * Determinism: cuBLASLt with a cached algorithm per shape, no float atomics in ops.cu, the
 * embedding backward grouped by token on the host. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_gpu.h"

#ifdef ZINF_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/ops_cuda.h"

typedef uint16_t bf16; /* storage only: the kernels do the math */

typedef struct layer_acts {
	bf16 *ln1, *qkv, *att, *x2, *ln2, *fc, *act;
	float *mean1, *rstd1, *mean2, *rstd2, *lse;
} layer_acts;

struct zinf_gpu_model {
	zinf_model_config cfg;
	const zinf_model_layout *lay;
	zinf_gpu_model_opts o;
	char err[320];
	int N, C, H, KV, hd, F, V, Vp, L;
	int qkvw, attw, fcw; /* (H+2KV)*hd, H*hd, F (GPT-2) or 2F (LLaMA) */
	bool llama, fused_gelu;
	cudaStream_t stream;
	cudaEvent_t staged; /* the last host->device copy of the staging area completed */
	zinf_gemm *gemm;
	void *arena;
	uint64_t arena_bytes;
	/* host (pinned) staging: tok, tgt, uniq, start, pos */
	int32_t *h_stage, *d_stage;
	int32_t *h_count; /* [V] plan scratch */
	float *h_loss;
	int nuniq, counted;
	bool have_fwd, loss_ready;
	/* device */
	float *d_loss, *rope, *partials, *logits32;
	void *attn_ws;
	size_t attn_ws_bytes;
	bf16 **res; /* [L+1] */
	layer_acts *acts; /* [L] or [1] with recompute */
	int nsets;
	bf16 *proj, *lnf, *logits;
	float *meanf, *rstdf;
	bf16 *dres, *dnorm, *datt, *dqkv, *dfc, *dact;
	zinf_model_hooks hooks; /* ZeRO stage 3 per-block hooks (all NULL: none) */
};

static int fail(zinf_gpu_model *m, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
fail(zinf_gpu_model *m, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	return rc;
}

#define CU(m, call)                                                                          \
	do {                                                                                 \
		cudaError_t e_ = (call);                                                     \
		if (e_ != cudaSuccess) {                                                     \
			cudaGetLastError();                                                  \
			return fail(m, -EIO, "%s failed at %s:%d: %s", #call, __FILE__,      \
				    __LINE__, cudaGetErrorString(e_));                       \
		}                                                                            \
	} while (0)

/* A kernel launcher or GEMM returned rc (its details are on stderr). */
#define OP(m, call)                                                                          \
	do {                                                                                 \
		int rc_ = (call);                                                            \
		if (rc_)                                                                     \
			return fail(m, rc_, "%s failed (%d): see the zinf message above", #call, \
				    rc_);                                                    \
	} while (0)

/* Calls one per-block hook if set (model_hooks.h); a failure stops the pass. */
static int
hook(zinf_gpu_model *m, int (*fn)(void *, int), const char *name, int block)
{
	if (!fn)
		return 0;
	int rc = fn(m->hooks.ctx, block);
	if (rc) {
		m->have_fwd = false;
		return fail(m, rc, "model %s: the %s hook of block %d failed (%d)", m->cfg.name,
			    name, block, rc);
	}
	return 0;
}

#define NEED(m, b) hook(m, (m)->hooks.params_needed, "params_needed", b)
#define DONE(m, b) hook(m, (m)->hooks.params_done, "params_done", b)
#define GRADS(m, b) hook(m, (m)->hooks.grads_done, "grads_done", b)

void
zinf_gpu_model_set_hooks(zinf_gpu_model *m, const zinf_model_hooks *hooks)
{
	m->hooks = hooks ? *hooks : (zinf_model_hooks){0};
}

/* Block b's parameters / gradients (model_hooks.h params_at, grads_at): pointers to the
 * block's first element; offsets inside the block are relative to block_offset[b]. */
static const bf16 *
blk_p(const zinf_gpu_model *m, const void *params, int b)
{
	if (m->hooks.params_at) /* its owner has no full-length vector: no fallback */
		return m->hooks.params_at(m->hooks.ctx, b);
	return (const bf16 *)params + m->lay->block_offset[b];
}

static float *
blk_g(const zinf_gpu_model *m, float *grads, int b)
{
	if (m->hooks.grads_at) /* NULL: the hook failed (check_g reports it) */
		return m->hooks.grads_at(m->hooks.ctx, b);
	return grads + m->lay->block_offset[b];
}

/* Absolute offset `off` of block b's tensor (wte, lnf_w, ...), or NULL when off < 0. */
static const bf16 *
abs_p(const zinf_gpu_model *m, const void *params, int b, int64_t off)
{
	const bf16 *p = off < 0 ? NULL : blk_p(m, params, b);
	return p ? p + (off - m->lay->block_offset[b]) : NULL;
}

static float *
abs_g(const zinf_gpu_model *m, float *grads, int b, int64_t off)
{
	float *g = off < 0 ? NULL : blk_g(m, grads, b);
	return g ? g + (off - m->lay->block_offset[b]) : NULL;
}

/* The grads_at hook gave no memory for block b (its owner has the details). */
static int
check_g(zinf_gpu_model *m, float *grads, int b)
{
	if (blk_g(m, grads, b))
		return 0;
	m->have_fwd = false;
	return fail(m, -ENOMEM, "model %s: the grads_at hook of block %d failed", m->cfg.name, b);
}

/* Bump allocator over one device arena: a sizing pass with base NULL, then the real one. */
typedef struct arena {
	char *base;
	uint64_t off;
} arena;

static void *
take(arena *a, uint64_t bytes)
{
	uint64_t off = (a->off + 255) & ~(uint64_t)255;
	a->off = off + bytes;
	return a->base ? a->base + off : NULL;
}

static void
carve(zinf_gpu_model *m, arena *a)
{
	uint64_t N = (uint64_t)m->N, C = (uint64_t)m->C, B = (uint64_t)m->o.B;
	uint64_t T = (uint64_t)m->o.T;
	m->d_stage = take(a, sizeof(int32_t) * (5 * N + 1));
	m->d_loss = take(a, sizeof(float) * N);
	if (m->llama)
		m->rope = take(a, sizeof(float) * T * (uint64_t)m->hd);
	uint64_t maxcols = 2 * C;
	if ((uint64_t)m->qkvw > maxcols)
		maxcols = (uint64_t)m->qkvw;
	if ((uint64_t)m->fcw > maxcols)
		maxcols = (uint64_t)m->fcw;
	m->partials = take(a, zinf_colsum_partials_bytes((int)maxcols));
	m->attn_ws = take(a, m->attn_ws_bytes);
	for (int l = 0; l <= m->L; l++)
		m->res[l] = take(a, 2 * N * C);
	for (int s = 0; s < m->nsets; s++) {
		layer_acts *x = &m->acts[s];
		x->ln1 = take(a, 2 * N * C);
		x->qkv = take(a, 2 * N * (uint64_t)m->qkvw);
		x->att = take(a, 2 * N * (uint64_t)m->attw);
		x->x2 = take(a, 2 * N * C);
		x->ln2 = take(a, 2 * N * C);
		x->fc = take(a, 2 * N * (uint64_t)m->fcw);
		x->act = take(a, 2 * N * (uint64_t)m->F);
		x->mean1 = take(a, 4 * N);
		x->rstd1 = take(a, 4 * N);
		x->mean2 = take(a, 4 * N);
		x->rstd2 = take(a, 4 * N);
		x->lse = take(a, 4 * B * (uint64_t)m->H * T);
	}
	m->proj = take(a, 2 * N * C);
	m->lnf = take(a, 2 * N * C);
	m->meanf = take(a, 4 * N);
	m->rstdf = take(a, 4 * N);
	m->logits = take(a, 2 * N * (uint64_t)m->Vp);
	if (m->o.keep_logits)
		m->logits32 = take(a, 4 * N * (uint64_t)m->V);
	m->dres = take(a, 2 * N * C);
	m->dnorm = take(a, 2 * N * C);
	m->datt = take(a, 2 * N * (uint64_t)m->attw);
	m->dqkv = take(a, 2 * N * (uint64_t)m->qkvw);
	m->dfc = take(a, 2 * N * (uint64_t)m->fcw);
	m->dact = take(a, 2 * N * (uint64_t)m->F);
}

static zinf_attn_shape
attn_shape(const zinf_gpu_model *m)
{
	return (zinf_attn_shape){.B = m->o.B, .T = m->o.T, .H = m->H, .KV = m->KV, .hd = m->hd};
}

int
zinf_gpu_model_create(const zinf_model_config *cfg, const zinf_model_layout *lay,
		      const zinf_gpu_model_opts *opts, zinf_gpu_model **out, char *err,
		      size_t errlen)
{
	*out = NULL;
	const zinf_gpu_model_opts o = *opts;
	if (o.B <= 0 || o.T <= 0 || o.T > cfg->max_seq) {
		snprintf(err, errlen,
			 "gpu model %s: micro-batch B=%d T=%d: need B >= 1 and 1 <= T <= max_seq %d",
			 cfg->name, o.B, o.T, cfg->max_seq);
		return -EINVAL;
	}
	if ((int64_t)o.B * o.T > (1 << 30) / 2) {
		snprintf(err, errlen, "gpu model %s: B*T = %lld tokens is over the %d limit",
			 cfg->name, (long long)o.B * o.T, (1 << 30) / 2);
		return -EINVAL;
	}
	if (cfg->head_dim != 64 && cfg->head_dim != 128) {
		snprintf(err, errlen,
			 "gpu model %s: head_dim %d: the GPU attention kernel supports 64 and 128; "
			 "use the CPU backend for this model",
			 cfg->name, cfg->head_dim);
		return -EINVAL;
	}
	if (cfg->d_model % 8 || cfg->d_ff % 8 || cfg->padded_vocab % 8) {
		snprintf(err, errlen,
			 "gpu model %s: d_model %d, d_ff %d and padded_vocab %d must be multiples of "
			 "8 for the GPU kernels",
			 cfg->name, cfg->d_model, cfg->d_ff, cfg->padded_vocab);
		return -EINVAL;
	}
	zinf_gpu_model *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "gpu model: out of host memory");
		return -ENOMEM;
	}
	m->cfg = *cfg;
	m->lay = lay;
	m->o = o;
	m->N = o.B * o.T;
	m->C = cfg->d_model;
	m->H = cfg->n_head;
	m->KV = cfg->n_kv_head;
	m->hd = cfg->head_dim;
	m->F = cfg->d_ff;
	m->V = cfg->vocab_size;
	m->Vp = cfg->padded_vocab;
	m->L = cfg->n_layer;
	m->llama = cfg->arch == ZINF_ARCH_LLAMA;
	m->qkvw = (m->H + 2 * m->KV) * m->hd;
	m->attw = m->H * m->hd;
	m->fcw = m->llama ? 2 * m->F : m->F;
	m->fused_gelu = !m->llama && !getenv("ZINF_GPU_NO_EPILOGUE");
	m->nsets = o.recompute ? 1 : m->L;
	m->res = calloc((size_t)m->L + 1, sizeof(*m->res));
	m->acts = calloc((size_t)m->nsets, sizeof(*m->acts));
	m->h_count = malloc(sizeof(int32_t) * (size_t)m->V);
	int rc = -ENOMEM;
	if (!m->res || !m->acts || !m->h_count) {
		snprintf(err, errlen, "gpu model: out of host memory");
		goto fail;
	}
	cudaError_t ce = cudaSetDevice(o.device);
	if (ce == cudaSuccess)
		ce = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking);
	if (ce == cudaSuccess)
		ce = cudaEventCreateWithFlags(&m->staged, cudaEventDisableTiming);
	if (ce == cudaSuccess)
		ce = cudaMallocHost((void **)&m->h_stage, sizeof(int32_t) * (5 * (size_t)m->N + 1));
	if (ce == cudaSuccess)
		ce = cudaMallocHost((void **)&m->h_loss, sizeof(float) * (size_t)m->N);
	if (ce != cudaSuccess) {
		cudaGetLastError();
		snprintf(err, errlen, "gpu model: CUDA device %d setup failed: %s", o.device,
			 cudaGetErrorString(ce));
		rc = ce == cudaErrorNoDevice || ce == cudaErrorInvalidDevice ? -ENODEV : -EIO;
		goto fail;
	}
	rc = zinf_gemm_create(0, &m->gemm);
	if (rc) {
		snprintf(err, errlen, "gpu model: cuBLASLt setup failed (%d), see stderr", rc);
		goto fail;
	}
	m->attn_ws_bytes = zinf_attn_bwd_workspace_bytes(attn_shape(m));
	arena a = {0};
	carve(m, &a);
	m->arena_bytes = a.off;
	ce = cudaMalloc(&m->arena, m->arena_bytes);
	if (ce != cudaSuccess) {
		cudaGetLastError();
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		snprintf(err, errlen,
			 "gpu model %s: %.2f GiB of activations for B=%d T=%d%s do not fit (%.2f GiB "
			 "free): lower the micro-batch or turn on activation recompute",
			 cfg->name, m->arena_bytes / 1073741824.0, o.B, o.T,
			 o.recompute ? " with recompute" : "", fr / 1073741824.0);
		rc = -ENOMEM;
		goto fail;
	}
	a = (arena){.base = m->arena};
	carve(m, &a);
	if (m->llama) {
		size_t nb = sizeof(float) * (size_t)o.T * (size_t)m->hd;
		float *tab = malloc(nb);
		if (!tab) {
			snprintf(err, errlen, "gpu model: out of host memory");
			rc = -ENOMEM;
			goto fail;
		}
		zinf_rope_table(tab, o.T, m->hd, cfg->rope_theta,
				cfg->rope_scaling == ZINF_ROPE_LLAMA3, cfg->rope_factor,
				cfg->rope_low_freq_factor, cfg->rope_high_freq_factor,
				cfg->rope_original_max_pos);
		ce = cudaMemcpy(m->rope, tab, nb, cudaMemcpyHostToDevice);
		free(tab);
		if (ce != cudaSuccess) {
			cudaGetLastError();
			snprintf(err, errlen, "gpu model: RoPE table upload failed: %s",
				 cudaGetErrorString(ce));
			rc = -EIO;
			goto fail;
		}
	}
	*out = m;
	return 0;
fail:
	zinf_gpu_model_destroy(m);
	return rc;
}

void
zinf_gpu_model_destroy(zinf_gpu_model *m)
{
	if (!m)
		return;
	if (m->stream)
		cudaStreamSynchronize(m->stream);
	zinf_gemm_destroy(m->gemm);
	cudaFree(m->arena);
	cudaFreeHost(m->h_stage);
	cudaFreeHost(m->h_loss);
	if (m->staged)
		cudaEventDestroy(m->staged);
	if (m->stream)
		cudaStreamDestroy(m->stream);
	free(m->h_count);
	free(m->res);
	free(m->acts);
	free(m);
}

const char *
zinf_gpu_model_error(const zinf_gpu_model *m)
{
	return m ? m->err : "no gpu model";
}

void *
zinf_gpu_model_stream(zinf_gpu_model *m)
{
	return m->stream;
}

uint64_t
zinf_gpu_model_bytes(const zinf_gpu_model *m)
{
	return m->arena_bytes + (32u << 20);
}

/* ---- forward ---- */

static const bf16 *
pw(const void *params, int64_t base, int64_t off)
{
	return off < 0 ? NULL : (const bf16 *)params + base + off;
}

/* Layer l from ln1 on (ln1 already holds norm1(res[l])). last_proj: also compute proj. */
static int
layer_fwd(zinf_gpu_model *m, const void *params, int l, layer_acts *x, bool with_proj)
{
	const zinf_layer_offsets *o = &m->lay->layer;
	const bf16 *P = blk_p(m, params, l + 1);
	const int64_t base = 0;
	void *st = m->stream;
	int N = m->N, C = m->C;
	OP(m, zinf_gemm_fwd(m->gemm, x->qkv, x->ln1, pw(P, base, o->qkv_w),
			    pw(P, base, o->qkv_b), NULL, N, m->qkvw, C, st));
	if (m->llama)
		OP(m, zinf_rope_fwd_cuda(x->qkv, m->rope, m->o.B, m->o.T, m->H, m->KV, m->hd, st));
	OP(m, zinf_attn_fwd_bf16(x->qkv, x->att, x->lse, attn_shape(m), 1.0f / sqrtf((float)m->hd),
				 st));
	OP(m, zinf_gemm_fwd(m->gemm, m->proj, x->att, pw(P, base, o->o_w),
			    pw(P, base, o->o_b), NULL, N, C, m->attw, st));
	OP(m, zinf_norm_fwd_cuda(x->ln2, x->x2, x->mean2, x->rstd2, m->res[l], m->proj,
				 pw(P, base, o->ln2_w), pw(P, base, o->ln2_b), N, C,
				 m->cfg.norm_eps, m->llama, st));
	if (m->fused_gelu) {
		OP(m, zinf_gemm_fwd(m->gemm, x->act, x->ln2, pw(P, base, o->fc_w),
				    pw(P, base, o->fc_b), x->fc, N, m->fcw, C, st));
	} else {
		OP(m, zinf_gemm_fwd(m->gemm, x->fc, x->ln2, pw(P, base, o->fc_w),
				    pw(P, base, o->fc_b), NULL, N, m->fcw, C, st));
		if (m->llama)
			OP(m, zinf_swiglu_fwd_cuda(x->act, x->fc, N, m->F, st));
		else
			OP(m, zinf_gelu_fwd_cuda(x->act, x->fc, (int64_t)N * m->F, st));
	}
	if (with_proj)
		OP(m, zinf_gemm_fwd(m->gemm, m->proj, x->act, pw(P, base, o->proj_w),
				    pw(P, base, o->proj_b), NULL, N, C, m->F, st));
	return 0;
}

static layer_acts *
set_of(zinf_gpu_model *m, int l)
{
	return &m->acts[m->o.recompute ? 0 : l];
}

/* ln1 of layer l: res[l] = x2[l-1] + proj (fused) for l > 0; recompute: from res[l]. */
static int
ln1_fwd(zinf_gpu_model *m, const void *params, int l, layer_acts *x, bool from_saved)
{
	const zinf_layer_offsets *o = &m->lay->layer;
	const bf16 *P = blk_p(m, params, l + 1);
	const int64_t base = 0;
	const void *in = (l == 0 || from_saved) ? m->res[l] : set_of(m, l - 1)->x2;
	const void *delta = (l == 0 || from_saved) ? NULL : m->proj;
	OP(m, zinf_norm_fwd_cuda(x->ln1, m->res[l], x->mean1, x->rstd1, in, delta,
				 pw(P, base, o->ln1_w), pw(P, base, o->ln1_b), m->N, m->C,
				 m->cfg.norm_eps, m->llama, m->stream));
	return 0;
}

static const bf16 *
head_w(const zinf_gpu_model *m, const void *params)
{
	const zinf_model_layout *lay = m->lay;
	return lay->lm_head >= 0 ? abs_p(m, params, lay->nblocks - 1, lay->lm_head)
				 : abs_p(m, params, 0, lay->wte);
}

int
zinf_gpu_forward(zinf_gpu_model *m, const void *params, const int32_t *tokens,
		 const int32_t *targets)
{
	int N = m->N, C = m->C;
	m->have_fwd = false;
	m->loss_ready = false;
	for (int n = 0; n < N; n++) {
		if (tokens[n] < 0 || tokens[n] >= m->V)
			return fail(m, -EINVAL,
				    "tokens[%d] (batch row %d, position %d) = %d is outside the "
				    "vocabulary [0, %d) of %s",
				    n, n / m->o.T, n % m->o.T, tokens[n], m->V, m->cfg.name);
		if (targets && targets[n] >= m->V)
			return fail(m, -EINVAL,
				    "targets[%d] (batch row %d, position %d) = %d is >= vocab_size "
				    "%d of %s (use a negative target to ignore a position)",
				    n, n / m->o.T, n % m->o.T, targets[n], m->V, m->cfg.name);
	}
	/* the previous copy out of the staging area must be done before it is overwritten */
	CU(m, cudaEventSynchronize(m->staged));
	int32_t *tok = m->h_stage, *tgt = tok + N, *uniq = tgt + N, *start = uniq + N;
	int32_t *pos = start + N + 1;
	memcpy(tok, tokens, sizeof(int32_t) * (size_t)N);
	m->counted = 0;
	for (int n = 0; n < N; n++) {
		tgt[n] = targets ? (targets[n] < 0 ? -1 : targets[n]) : -1;
		m->counted += tgt[n] >= 0;
	}
	m->nuniq = zinf_embed_plan(tok, N, m->V, uniq, start, pos, m->h_count);
	cudaStream_t st = m->stream;
	CU(m, cudaMemcpyAsync(m->d_stage, m->h_stage, sizeof(int32_t) * (5 * (size_t)N + 1),
			      cudaMemcpyHostToDevice, st));
	CU(m, cudaEventRecord(m->staged, st));

	const zinf_model_layout *lay = m->lay;
	const bool tied = lay->lm_head < 0;
	int rc;
	if ((rc = NEED(m, 0)))
		return rc;
	OP(m, zinf_embed_fwd_cuda(m->res[0], m->d_stage, abs_p(m, params, 0, lay->wte),
				  abs_p(m, params, 0, lay->wpe), N, m->o.T, C, st));
	if ((rc = DONE(m, 0)))
		return rc;
	for (int l = 0; l < m->L; l++) {
		layer_acts *x = set_of(m, l);
		rc = NEED(m, l + 1);
		if (!rc)
			rc = ln1_fwd(m, params, l, x, false);
		if (!rc)
			rc = layer_fwd(m, params, l, x, true);
		if (!rc)
			rc = DONE(m, l + 1);
		if (rc)
			return rc;
	}
	if ((rc = NEED(m, m->L + 1)) || (tied && (rc = NEED(m, 0))))
		return rc;
	OP(m, zinf_norm_fwd_cuda(m->lnf, m->res[m->L], m->meanf, m->rstdf, set_of(m, m->L - 1)->x2,
				 m->proj, abs_p(m, params, m->L + 1, lay->lnf_w),
				 abs_p(m, params, m->L + 1, lay->lnf_b), N, C,
				 m->cfg.norm_eps, m->llama, st));
	OP(m, zinf_gemm_fwd(m->gemm, m->logits, m->lnf, head_w(m, params), NULL, NULL, N, m->Vp, C,
			    st));
	if ((rc = DONE(m, m->L + 1)) || (tied && (rc = DONE(m, 0))))
		return rc;
	if (m->o.keep_logits)
		OP(m, zinf_cast_bf16_to_f32_2d(m->logits32, m->logits, N, m->V, m->Vp, st));
	OP(m, zinf_xent_fwd_bwd_cuda(m->logits, m->d_loss, m->d_stage + N, N, m->V, m->Vp, st));
	CU(m, cudaMemcpyAsync(m->h_loss, m->d_loss, sizeof(float) * (size_t)N,
			      cudaMemcpyDeviceToHost, st));
	m->have_fwd = true;
	return 0;
}

int
zinf_gpu_loss(zinf_gpu_model *m, float *loss)
{
	if (!m->have_fwd)
		return fail(m, -EINVAL, "zinf_gpu_loss before a successful zinf_gpu_forward");
	CU(m, cudaStreamSynchronize(m->stream));
	double s = 0;
	for (int n = 0; n < m->N; n++)
		s += m->h_loss[n];
	*loss = m->counted ? (float)(s / m->counted) : 0.f;
	return 0;
}

int
zinf_gpu_logits(zinf_gpu_model *m, float *host_logits)
{
	if (!m->o.keep_logits)
		return fail(m, -EINVAL, "zinf_gpu_logits needs opts.keep_logits at create");
	if (!m->have_fwd)
		return fail(m, -EINVAL, "zinf_gpu_logits before a successful zinf_gpu_forward");
	CU(m, cudaMemcpyAsync(host_logits, m->logits32, sizeof(float) * (size_t)m->N * m->V,
			      cudaMemcpyDeviceToHost, m->stream));
	CU(m, cudaStreamSynchronize(m->stream));
	return 0;
}

/* ---- backward ---- */

static float *
gw(float *grads, int64_t base, int64_t off)
{
	return off < 0 ? NULL : grads + base + off;
}

/* dres holds d loss / d res[l+1] on entry, d loss / d res[l] on return. */
static int
layer_bwd(zinf_gpu_model *m, const void *params, float *grads, int l)
{
	const zinf_layer_offsets *o = &m->lay->layer;
	const bf16 *P = blk_p(m, params, l + 1);
	float *G = blk_g(m, grads, l + 1);
	const int64_t base = 0;
	if (!G)
		return check_g(m, grads, l + 1);
	void *st = m->stream;
	int N = m->N, C = m->C, F = m->F;
	layer_acts *x = set_of(m, l);
	if (m->o.recompute) {
		int rc = ln1_fwd(m, params, l, x, true);
		if (!rc)
			rc = layer_fwd(m, params, l, x, false);
		if (rc)
			return rc;
	}
	/* MLP down projection */
	OP(m, zinf_gemm_bwd_weight(m->gemm, gw(G, base, o->proj_w), m->dres, x->act, 1.f, N, C,
				   F, st));
	if (o->proj_b >= 0)
		OP(m, zinf_bias_grad_cuda(gw(G, base, o->proj_b), m->dres, N, C, m->partials,
					  st));
	if (m->fused_gelu) {
		OP(m, zinf_gemm_bwd_data(m->gemm, m->dfc, m->dres, pw(P, base, o->proj_w), x->fc,
					 1.f, N, C, F, st));
	} else {
		OP(m, zinf_gemm_bwd_data(m->gemm, m->dact, m->dres, pw(P, base, o->proj_w),
					 NULL, 1.f, N, C, F, st));
		if (m->llama)
			OP(m, zinf_swiglu_bwd_cuda(m->dfc, m->dact, x->fc, N, F, st));
		else
			OP(m, zinf_gelu_bwd_cuda(m->dfc, m->dact, x->fc, (int64_t)N * F, st));
	}
	/* MLP up (fc / gate+up) */
	OP(m, zinf_gemm_bwd_weight(m->gemm, gw(G, base, o->fc_w), m->dfc, x->ln2, 1.f, N,
				   m->fcw, C, st));
	if (o->fc_b >= 0)
		OP(m, zinf_bias_grad_cuda(gw(G, base, o->fc_b), m->dfc, N, m->fcw, m->partials,
					  st));
	OP(m, zinf_gemm_bwd_data(m->gemm, m->dnorm, m->dfc, pw(P, base, o->fc_w), NULL, 1.f,
				 N, m->fcw, C, st));
	OP(m, zinf_norm_bwd_cuda(m->dres, gw(G, base, o->ln2_w), gw(G, base, o->ln2_b),
				 m->dnorm, x->x2, x->mean2, x->rstd2, pw(P, base, o->ln2_w), N,
				 C, m->llama, m->partials, st));
	/* attention output projection */
	OP(m, zinf_gemm_bwd_weight(m->gemm, gw(G, base, o->o_w), m->dres, x->att, 1.f, N, C,
				   m->attw, st));
	if (o->o_b >= 0)
		OP(m, zinf_bias_grad_cuda(gw(G, base, o->o_b), m->dres, N, C, m->partials, st));
	OP(m, zinf_gemm_bwd_data(m->gemm, m->datt, m->dres, pw(P, base, o->o_w), NULL, 1.f, N,
				 C, m->attw, st));
	OP(m, zinf_attn_bwd_bf16(x->qkv, x->att, m->datt, x->lse, m->dqkv, m->attn_ws,
				 attn_shape(m), 1.0f / sqrtf((float)m->hd), st));
	if (m->llama)
		OP(m, zinf_rope_bwd_cuda(m->dqkv, m->rope, m->o.B, m->o.T, m->H, m->KV, m->hd, st));
	/* QKV */
	OP(m, zinf_gemm_bwd_weight(m->gemm, gw(G, base, o->qkv_w), m->dqkv, x->ln1, 1.f, N,
				   m->qkvw, C, st));
	if (o->qkv_b >= 0)
		OP(m, zinf_bias_grad_cuda(gw(G, base, o->qkv_b), m->dqkv, N, m->qkvw,
					  m->partials, st));
	OP(m, zinf_gemm_bwd_data(m->gemm, m->dnorm, m->dqkv, pw(P, base, o->qkv_w), NULL, 1.f,
				 N, m->qkvw, C, st));
	OP(m, zinf_norm_bwd_cuda(m->dres, gw(G, base, o->ln1_w), gw(G, base, o->ln1_b),
				 m->dnorm, m->res[l], x->mean1, x->rstd1, pw(P, base, o->ln1_w),
				 N, C, m->llama, m->partials, st));
	return 0;
}

int
zinf_gpu_backward(zinf_gpu_model *m, const void *params, float *grads, float grad_scale)
{
	if (!m->have_fwd)
		return fail(m, -EINVAL, "zinf_gpu_backward before a successful zinf_gpu_forward");
	const zinf_model_layout *lay = m->lay;
	const bool tied = lay->lm_head < 0;
	const int L = m->L;
	int rc;
	if (!m->counted) {
		/* no target counted: the loss is the constant 0. The hooks still see every block in
		 * the order of a real backward (ranks issue collectives from them). */
		int b = 0;
		const char *name = "";
		rc = zinf_model_hooks_backward_walk(&m->hooks, L, tied, &b, &name);
		if (rc)
			return fail(m, rc, "model %s: the %s hook of block %d failed (%d)", m->cfg.name,
				    name, b, rc);
		return 0;
	}
	if ((rc = NEED(m, L + 1)) || (tied && (rc = NEED(m, 0))))
		return rc;
	void *st = m->stream;
	int N = m->N, C = m->C;
	float alpha = grad_scale / (float)m->counted;
	if ((rc = check_g(m, grads, L + 1)) || (tied && (rc = check_g(m, grads, 0))))
		return rc;
	float *dhead = lay->lm_head >= 0 ? abs_g(m, grads, L + 1, lay->lm_head)
					 : abs_g(m, grads, 0, lay->wte);
	OP(m, zinf_gemm_bwd_weight(m->gemm, dhead, m->logits, m->lnf, alpha, N, m->Vp, C,
				   st));
	OP(m, zinf_gemm_bwd_data(m->gemm, m->dnorm, m->logits, head_w(m, params), NULL, alpha, N,
				 m->Vp, C, st));
	CU(m, cudaMemsetAsync(m->dres, 0, sizeof(bf16) * (size_t)N * C, st));
	OP(m, zinf_norm_bwd_cuda(m->dres, abs_g(m, grads, L + 1, lay->lnf_w),
				 abs_g(m, grads, L + 1, lay->lnf_b), m->dnorm, m->res[m->L],
				 m->meanf, m->rstdf, abs_p(m, params, L + 1, lay->lnf_w), N, C, m->llama,
				 m->partials, st));
	if ((rc = DONE(m, L + 1)) || (tied && (rc = DONE(m, 0))) || (rc = GRADS(m, L + 1)))
		return rc;
	for (int l = L - 1; l >= 0; l--) {
		rc = NEED(m, l + 1);
		if (!rc)
			rc = layer_bwd(m, params, grads, l);
		if (!rc)
			rc = DONE(m, l + 1);
		if (!rc)
			rc = GRADS(m, l + 1);
		if (rc)
			return rc;
	}
	if ((rc = check_g(m, grads, 0)))
		return rc;
	const int32_t *d_uniq = m->d_stage + 2 * N, *d_start = d_uniq + N, *d_pos = d_start + N + 1;
	OP(m, zinf_embed_bwd_cuda(abs_g(m, grads, 0, lay->wte), abs_g(m, grads, 0, lay->wpe), m->dres,
				  d_uniq, d_start, d_pos, m->nuniq, N, m->o.T, C, st));
	return GRADS(m, 0);
}

#else /* !ZINF_HAVE_CUDA */

struct zinf_gpu_model {
	int unused;
};

#define NO_CUDA_MSG "this zinf was built without CUDA (ZINF_CUDA=OFF): rebuild with -DZINF_CUDA=ON on a machine with the CUDA toolkit, or use the CPU backend"

int
zinf_gpu_model_create(const zinf_model_config *cfg, const zinf_model_layout *lay,
		      const zinf_gpu_model_opts *opts, zinf_gpu_model **out, char *err,
		      size_t errlen)
{
	*out = NULL;
	snprintf(err, errlen, "gpu model %s: %s", cfg->name, NO_CUDA_MSG);
	return -ENODEV;
}

void
zinf_gpu_model_destroy(zinf_gpu_model *m)
{
	free(m);
}

const char *
zinf_gpu_model_error(const zinf_gpu_model *m)
{
	return NO_CUDA_MSG;
}

void *
zinf_gpu_model_stream(zinf_gpu_model *m)
{
	return NULL;
}

uint64_t
zinf_gpu_model_bytes(const zinf_gpu_model *m)
{
	return 0;
}

int
zinf_gpu_forward(zinf_gpu_model *m, const void *params, const int32_t *tokens,
		 const int32_t *targets)
{
	return -ENODEV;
}

int
zinf_gpu_loss(zinf_gpu_model *m, float *loss)
{
	return -ENODEV;
}

int
zinf_gpu_logits(zinf_gpu_model *m, float *host_logits)
{
	return -ENODEV;
}

int
zinf_gpu_backward(zinf_gpu_model *m, const void *params, float *grads, float grad_scale)
{
	return -ENODEV;
}

void
zinf_gpu_model_set_hooks(zinf_gpu_model *m, const zinf_model_hooks *hooks)
{
	(void)m;
	(void)hooks;
}

#endif
