/* engine/model_cpu: CPU forward and backward of the GPT-2 and LLaMA families (fp32), built
 * from the ops in kernels/ops_cpu.h. See engine/include/engine/model_cpu.h.
 *
 * DESIGN. Per layer l, with x = res[l] the residual stream entering it:
 *   GPT-2: h = x + c_proj(attn(qkv(LN1(x))));      res[l+1] = h + proj(gelu(fc(LN2(h))))
 *   LLaMA: h = x + o_proj(attn(rope(qkv(RMS1(x))))); res[l+1] = h + down(swiglu(gate_up(RMS2(h))))
 * then the final norm, logits = norm(res[L]) @ lm_head^T over the vocab_size real rows (wte
 * when tied) and the mean cross-entropy over counted targets. GPT-2 adds wpe[t] to the token
 * embedding; attention scale is 1/sqrt(head_dim) in both families.
 *
 * Every activation the backward needs is kept (no recompute: this is the oracle, memory is
 * O(layers * B * T * width)). The q and k heads are rotated in place in qkv, which is what the
 * attention backward needs; the qkv linear's backward uses LN1's output, not qkv.
 *
 * Backward walks the layers in reverse with ONE residual gradient buffer dres: the linear
 * backwards overwrite their input gradients, the norm backwards add theirs into dres, which
 * is exactly the residual connection's fan-in. grad_scale / count is folded into dlogits, so
 * every parameter gradient comes out scaled and is added (+=) to grads once. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_cpu.h"
#include "kernels/ops_cpu.h"

struct layer_acts {
	float *ln1, *ln1_mean, *ln1_rstd; /* norm 1 output [N, C], stats [N] */
	float *qkv;                       /* [N, Q], q and k roped (LLaMA) */
	float *att, *lse;                 /* attention output [N, H*hd], lse [B, H, T] */
	float *h;                         /* residual after attention [N, C] */
	float *ln2, *ln2_mean, *ln2_rstd;
	float *fc;  /* fc output [N, F] (GPT-2) / gate+up [N, 2F] (LLaMA) */
	float *act; /* gelu / swiglu output [N, F] */
};

struct zinf_cpu_model {
	const zinf_model_config *cfg;
	const zinf_model_layout *lay;
	int B, T, N; /* N = B*T */
	int Q, A, F2; /* qkv width (H+2KV)*hd, attention width H*hd, fc width */
	zinf_attn_shape shape;
	float scale;
	zinf_pool *pool;

	float **res; /* [n_layer + 1] residual stream [N, C] */
	struct layer_acts *acts;
	float *lnf, *lnf_mean, *lnf_rstd;
	float *logits, *ce_lse; /* [N, V], [N] */
	float *rope_cos, *rope_sin;
	int32_t *tokens, *targets;
	int64_t count;
	bool have_fwd;

	zinf_model_hooks hooks; /* ZeRO stage 3 per-block hooks (all NULL: none) */

	/* backward scratch */
	float *dlogits, *dres, *dln, *datt, *dqkv, *dfc, *dact, *attn_work;

	char err[512];
};

__attribute__((format(printf, 2, 3))) static int
fail(zinf_cpu_model *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* One zeroed fp32 buffer; NULL after a failure earlier in the chain keeps create simple. */
static float *
buf(bool *ok, int64_t n)
{
	if (!*ok)
		return NULL;
	float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
	if (!p)
		*ok = false;
	return p;
}

int
zinf_cpu_model_create(const zinf_model_config *cfg, const zinf_model_layout *lay, int B, int T,
		      int threads, zinf_cpu_model **out, char *err, size_t errlen)
{
	*out = NULL;
	int rc = zinf_model_config_validate(cfg, err, errlen);
	if (rc)
		return rc;
	if (B < 1 || T < 1 || T > cfg->max_seq || (int64_t)B * T > (1 << 30)) {
		snprintf(err, errlen,
			 "model %s: micro-batch B=%d T=%d is out of range: need B >= 1 and "
			 "1 <= T <= max_seq %d (and B*T <= 2^30); pass a shorter sequence",
			 cfg->name, B, T, cfg->max_seq);
		return -EINVAL;
	}
	if (lay->nblocks != cfg->n_layer + 2 || lay->wte < 0) {
		snprintf(err, errlen,
			 "model %s: layout has %d blocks, the config needs n_layer + 2 = %d: build "
			 "the layout with zinf_model_layout_init from the same config",
			 cfg->name, lay->nblocks, cfg->n_layer + 2);
		return -EINVAL;
	}
	if (cfg->arch == ZINF_ARCH_LLAMA && cfg->head_dim % 2) {
		snprintf(err, errlen,
			 "model %s: head_dim %d is odd; rotary embeddings need an even head_dim",
			 cfg->name, cfg->head_dim);
		return -EINVAL;
	}

	zinf_cpu_model *m = calloc(1, sizeof(*m));
	if (!m)
		goto nomem;
	const bool llama = cfg->arch == ZINF_ARCH_LLAMA;
	const int C = cfg->d_model, V = cfg->vocab_size, F = cfg->d_ff, L = cfg->n_layer;
	m->cfg = cfg;
	m->lay = lay;
	m->B = B;
	m->T = T;
	m->N = B * T;
	m->Q = (cfg->n_head + 2 * cfg->n_kv_head) * cfg->head_dim;
	m->A = cfg->n_head * cfg->head_dim;
	m->F2 = llama ? 2 * F : F;
	m->shape = (zinf_attn_shape){.B = B, .T = T, .H = cfg->n_head, .KV = cfg->n_kv_head,
				     .hd = cfg->head_dim};
	m->scale = (float)(1.0 / sqrt((double)cfg->head_dim));
	if ((rc = zinf_pool_create(threads, &m->pool)))
		goto nomem;

	const int64_t N = m->N;
	const int64_t stats = (int64_t)B * cfg->n_head * T;
	bool ok = true;
	m->res = calloc((size_t)L + 1, sizeof(*m->res));
	m->acts = calloc((size_t)L, sizeof(*m->acts));
	if (!m->res || !m->acts)
		goto nomem;
	for (int l = 0; l <= L; l++)
		m->res[l] = buf(&ok, N * C);
	for (int l = 0; l < L; l++) {
		struct layer_acts *a = &m->acts[l];
		a->ln1 = buf(&ok, N * C);
		a->ln1_mean = buf(&ok, N);
		a->ln1_rstd = buf(&ok, N);
		a->qkv = buf(&ok, N * m->Q);
		a->att = buf(&ok, N * m->A);
		a->lse = buf(&ok, stats);
		a->h = buf(&ok, N * C);
		a->ln2 = buf(&ok, N * C);
		a->ln2_mean = buf(&ok, N);
		a->ln2_rstd = buf(&ok, N);
		a->fc = buf(&ok, N * m->F2);
		a->act = buf(&ok, N * F);
	}
	m->lnf = buf(&ok, N * C);
	m->lnf_mean = buf(&ok, N);
	m->lnf_rstd = buf(&ok, N);
	m->logits = buf(&ok, N * V);
	m->ce_lse = buf(&ok, N);
	m->dlogits = buf(&ok, N * V);
	m->dres = buf(&ok, N * C);
	m->dln = buf(&ok, N * C);
	m->datt = buf(&ok, N * m->A);
	m->dqkv = buf(&ok, N * m->Q);
	m->dfc = buf(&ok, N * m->F2);
	m->dact = buf(&ok, N * F);
	m->attn_work = buf(&ok, stats);
	m->tokens = calloc((size_t)N, sizeof(int32_t));
	m->targets = calloc((size_t)N, sizeof(int32_t));
	if (!ok || !m->tokens || !m->targets)
		goto nomem;
	if (llama) {
		int64_t half = (int64_t)T * (cfg->head_dim / 2);
		m->rope_cos = buf(&ok, half);
		m->rope_sin = buf(&ok, half);
		if (!ok)
			goto nomem;
		zinf_rope_cfg rc3 = {
			.theta = cfg->rope_theta,
			.llama3 = cfg->rope_scaling == ZINF_ROPE_LLAMA3,
			.factor = cfg->rope_factor,
			.low_freq_factor = cfg->rope_low_freq_factor,
			.high_freq_factor = cfg->rope_high_freq_factor,
			.original_max_pos = cfg->rope_original_max_pos,
		};
		zinf_op_rope_table(m->rope_cos, m->rope_sin, T, cfg->head_dim, &rc3);
	}
	*out = m;
	return 0;

nomem:
	zinf_cpu_model_destroy(m);
	snprintf(err, errlen,
		 "model %s: out of memory for the CPU activations of B=%d T=%d (about %lld MiB "
		 "per layer): use a smaller micro-batch",
		 cfg->name, B, T,
		 (long long)((int64_t)B * T *
			     (4LL * cfg->d_model + 3LL * cfg->n_head * cfg->head_dim +
			      4LL * cfg->d_ff) * 4 >> 20));
	return -ENOMEM;
}

void
zinf_cpu_model_destroy(zinf_cpu_model *m)
{
	if (!m)
		return;
	const int L = m->cfg->n_layer;
	if (m->res)
		for (int l = 0; l <= L; l++)
			free(m->res[l]);
	if (m->acts)
		for (int l = 0; l < L; l++) {
			struct layer_acts *a = &m->acts[l];
			float *bufs[] = {a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv, a->att, a->lse,
					 a->h, a->ln2, a->ln2_mean, a->ln2_rstd, a->fc, a->act};
			for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
				free(bufs[i]);
		}
	float *bufs[] = {m->lnf, m->lnf_mean, m->lnf_rstd, m->logits, m->ce_lse, m->rope_cos,
			 m->rope_sin, m->dlogits, m->dres, m->dln, m->datt, m->dqkv, m->dfc,
			 m->dact, m->attn_work};
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		free(bufs[i]);
	free(m->res);
	free(m->acts);
	free(m->tokens);
	free(m->targets);
	zinf_pool_destroy(m->pool);
	free(m);
}

const char *
zinf_cpu_model_error(const zinf_cpu_model *m)
{
	return m ? m->err : "no model handle";
}

void
zinf_cpu_model_set_hooks(zinf_cpu_model *m, const zinf_model_hooks *hooks)
{
	m->hooks = hooks ? *hooks : (zinf_model_hooks){0};
}

/* Calls one hook if set; a failure stops the pass with a message naming block and hook. */
static int
hook(zinf_cpu_model *m, int (*fn)(void *, int), const char *name, int block)
{
	if (!fn)
		return 0;
	int rc = fn(m->hooks.ctx, block);
	if (rc) {
		snprintf(m->err, sizeof(m->err), "model %s: the %s hook of block %d failed (%d)",
			 m->cfg->name, name, block, rc);
		m->have_fwd = false;
	}
	return rc;
}

#define NEED(m, b) hook(m, (m)->hooks.params_needed, "params_needed", b)
#define DONE(m, b) hook(m, (m)->hooks.params_done, "params_done", b)
#define GRADS(m, b) hook(m, (m)->hooks.grads_done, "grads_done", b)

/* Tensor pointers: a layer tensor's offset is relative to its block; -1 means absent. */
static inline const float *
at(const float *base, int64_t off)
{
	return off >= 0 ? base + off : NULL;
}

static inline float *
atw(float *base, int64_t off)
{
	return off >= 0 ? base + off : NULL;
}

static void
norm_fwd(const zinf_cpu_model *m, float *out, float *mean, float *rstd, const float *x,
	 const float *w, const float *b)
{
	if (m->cfg->arch == ZINF_ARCH_LLAMA)
		zinf_op_rmsnorm_fwd(m->pool, out, rstd, x, w, m->N, m->cfg->d_model,
				    m->cfg->norm_eps);
	else
		zinf_op_layernorm_fwd(m->pool, out, mean, rstd, x, w, b, m->N, m->cfg->d_model,
				      m->cfg->norm_eps);
}

static void
norm_bwd(const zinf_cpu_model *m, float *dx, float *dw, float *db, const float *dout,
	 const float *x, const float *mean, const float *rstd, const float *w)
{
	if (m->cfg->arch == ZINF_ARCH_LLAMA)
		zinf_op_rmsnorm_bwd(m->pool, dx, dw, dout, x, rstd, w, m->N, m->cfg->d_model);
	else
		zinf_op_layernorm_bwd(m->pool, dx, dw, db, dout, x, mean, rstd, w, m->N,
				      m->cfg->d_model);
}

static int
check_ids(zinf_cpu_model *m, const int32_t *ids, const char *what, bool allow_negative)
{
	const int V = m->cfg->vocab_size;
	for (int n = 0; n < m->N; n++) {
		int32_t v = ids[n];
		if (v >= V || (v < 0 && !allow_negative))
			return fail(m,
				    "model %s: %s %d at sequence %d position %d is outside the "
				    "vocabulary [0, %d)%s: the data was tokenized for another "
				    "vocabulary; re-tokenize it or pick the matching model",
				    m->cfg->name, what, (int)v, n / m->T, n % m->T, V,
				    allow_negative ? " (negative ids are ignored)" : "");
	}
	return 0;
}

int
zinf_cpu_forward(zinf_cpu_model *m, const float *params, const int32_t *tokens,
		 const int32_t *targets, float *loss, float *logits)
{
	const zinf_model_config *c = m->cfg;
	const zinf_model_layout *lay = m->lay;
	const zinf_layer_offsets *o = &lay->layer;
	const int N = m->N, C = c->d_model, F = c->d_ff, V = c->vocab_size, L = c->n_layer;
	const bool llama = c->arch == ZINF_ARCH_LLAMA;
	int rc;

	m->have_fwd = false;
	if ((rc = check_ids(m, tokens, "token", false)) ||
	    (rc = check_ids(m, targets, "target", true)))
		return rc;
	memcpy(m->tokens, tokens, (size_t)N * sizeof(int32_t));
	memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));

	const bool tied = lay->lm_head < 0;
	if ((rc = NEED(m, 0)))
		return rc;
	zinf_op_embed_fwd(m->pool, m->res[0], tokens, params + lay->wte, at(params, lay->wpe), N,
			  m->T, C);
	if ((rc = DONE(m, 0)))
		return rc;
	for (int l = 0; l < L; l++) {
		const float *P = params + zinf_layer_base(lay, l);
		struct layer_acts *a = &m->acts[l];
		const float *x = m->res[l];
		if ((rc = NEED(m, l + 1)))
			return rc;

		norm_fwd(m, a->ln1, a->ln1_mean, a->ln1_rstd, x, at(P, o->ln1_w), at(P, o->ln1_b));
		zinf_op_linear_fwd(m->pool, a->qkv, a->ln1, at(P, o->qkv_w), at(P, o->qkv_b), N, C,
				   m->Q);
		if (llama)
			zinf_op_rope_fwd(m->pool, a->qkv, m->rope_cos, m->rope_sin, m->shape);
		zinf_op_attn_fwd(m->pool, a->att, a->lse, a->qkv, m->shape, m->scale);
		zinf_op_linear_fwd(m->pool, a->h, a->att, at(P, o->o_w), at(P, o->o_b), N, m->A, C);
		zinf_op_add(m->pool, a->h, x, (int64_t)N * C);

		norm_fwd(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->h, at(P, o->ln2_w),
			 at(P, o->ln2_b));
		zinf_op_linear_fwd(m->pool, a->fc, a->ln2, at(P, o->fc_w), at(P, o->fc_b), N, C,
				   m->F2);
		if (llama)
			zinf_op_swiglu_fwd(m->pool, a->act, a->fc, N, F);
		else
			zinf_op_gelu_fwd(m->pool, a->act, a->fc, (int64_t)N * F);
		zinf_op_linear_fwd(m->pool, m->res[l + 1], a->act, at(P, o->proj_w),
				   at(P, o->proj_b), N, F, C);
		zinf_op_add(m->pool, m->res[l + 1], a->h, (int64_t)N * C);
		if ((rc = DONE(m, l + 1)))
			return rc;
	}
	if ((rc = NEED(m, L + 1)) || (tied && (rc = NEED(m, 0))))
		return rc;
	norm_fwd(m, m->lnf, m->lnf_mean, m->lnf_rstd, m->res[L], params + lay->lnf_w,
		 at(params, lay->lnf_b));
	const float *head = params + (lay->lm_head >= 0 ? lay->lm_head : lay->wte);
	zinf_op_linear_fwd(m->pool, m->logits, m->lnf, head, NULL, N, C, V);
	if ((rc = DONE(m, L + 1)) || (tied && (rc = DONE(m, 0))))
		return rc;
	double mean = zinf_op_ce_fwd(m->pool, m->ce_lse, m->logits, targets, N, V, &m->count);
	if (loss)
		*loss = (float)mean;
	if (logits)
		memcpy(logits, m->logits, (size_t)N * V * sizeof(float));
	m->have_fwd = true;
	return 0;
}

int
zinf_cpu_backward(zinf_cpu_model *m, const float *params, float *grads, float grad_scale)
{
	const zinf_model_config *c = m->cfg;
	const zinf_model_layout *lay = m->lay;
	const zinf_layer_offsets *o = &lay->layer;
	const int N = m->N, C = c->d_model, F = c->d_ff, V = c->vocab_size, L = c->n_layer;
	const bool llama = c->arch == ZINF_ARCH_LLAMA;

	if (!m->have_fwd)
		return fail(m, "model %s: zinf_cpu_backward called without a successful "
			       "zinf_cpu_forward first: run the forward of this micro-batch first",
			    c->name);
	const bool tied = lay->lm_head < 0;
	int rc;
	if (!m->count) {
		/* no counted target: the loss is the constant 0. The hooks still see every block
		 * in the order of a real backward (ranks issue collectives from them). */
		int b = 0;
		const char *name = "";
		rc = zinf_model_hooks_backward_walk(&m->hooks, L, tied, &b, &name);
		if (rc)
			snprintf(m->err, sizeof(m->err), "model %s: the %s hook of block %d failed (%d)",
				 c->name, name, b, rc);
		return rc;
	}

	if ((rc = NEED(m, L + 1)) || (tied && (rc = NEED(m, 0))))
		return rc;
	zinf_op_ce_bwd(m->pool, m->dlogits, m->logits, m->ce_lse, m->targets, N, V,
		       (float)((double)grad_scale / (double)m->count));
	int64_t head_off = lay->lm_head >= 0 ? lay->lm_head : lay->wte;
	zinf_op_linear_bwd(m->pool, m->dln, grads + head_off, NULL, m->dlogits, m->lnf,
			   params + head_off, N, C, V);
	memset(m->dres, 0, (size_t)N * C * sizeof(float));
	norm_bwd(m, m->dres, grads + lay->lnf_w, atw(grads, lay->lnf_b), m->dln, m->res[L],
		 m->lnf_mean, m->lnf_rstd, params + lay->lnf_w);
	if ((rc = DONE(m, L + 1)) || (tied && (rc = DONE(m, 0))) || (rc = GRADS(m, L + 1)))
		return rc;

	for (int l = L - 1; l >= 0; l--) {
		const float *P = params + zinf_layer_base(lay, l);
		float *G = grads + zinf_layer_base(lay, l);
		const struct layer_acts *a = &m->acts[l];
		if ((rc = NEED(m, l + 1)))
			return rc;

		/* dres = d res[l+1] */
		zinf_op_linear_bwd(m->pool, m->dact, atw(G, o->proj_w), atw(G, o->proj_b), m->dres,
				   a->act, at(P, o->proj_w), N, F, C);
		if (llama)
			zinf_op_swiglu_bwd(m->pool, m->dfc, m->dact, a->fc, N, F);
		else
			zinf_op_gelu_bwd(m->pool, m->dfc, m->dact, a->fc, (int64_t)N * F);
		zinf_op_linear_bwd(m->pool, m->dln, atw(G, o->fc_w), atw(G, o->fc_b), m->dfc,
				   a->ln2, at(P, o->fc_w), N, C, m->F2);
		norm_bwd(m, m->dres, atw(G, o->ln2_w), atw(G, o->ln2_b), m->dln, a->h, a->ln2_mean,
			 a->ln2_rstd, at(P, o->ln2_w));

		/* dres = d h */
		zinf_op_linear_bwd(m->pool, m->datt, atw(G, o->o_w), atw(G, o->o_b), m->dres,
				   a->att, at(P, o->o_w), N, m->A, C);
		zinf_op_attn_bwd(m->pool, m->dqkv, m->attn_work, a->qkv, a->att, m->datt, a->lse,
				 m->shape, m->scale);
		if (llama)
			zinf_op_rope_bwd(m->pool, m->dqkv, m->rope_cos, m->rope_sin, m->shape);
		zinf_op_linear_bwd(m->pool, m->dln, atw(G, o->qkv_w), atw(G, o->qkv_b), m->dqkv,
				   a->ln1, at(P, o->qkv_w), N, C, m->Q);
		norm_bwd(m, m->dres, atw(G, o->ln1_w), atw(G, o->ln1_b), m->dln, m->res[l],
			 a->ln1_mean, a->ln1_rstd, at(P, o->ln1_w));
		if ((rc = DONE(m, l + 1)) || (rc = GRADS(m, l + 1)))
			return rc;
	}
	/* dres = d res[0] */
	zinf_op_embed_bwd(m->pool, grads + lay->wte, atw(grads, lay->wpe), m->dres, m->tokens, N,
			  m->T, C);
	return GRADS(m, 0);
}
