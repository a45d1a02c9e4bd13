/* engine/model: GPT-2 and LLaMA model definitions: presets, HF config.json, the flat parameter
 * layout, deterministic init and the FLOP count.
 *
 * DESIGN. The layout is built by walking the family's tensors in HF order and appending each
 * to the current block; a block (embeddings, one layer, head) starts at a multiple of
 * ZINF_BLOCK_ALIGN and so does every tensor group inside it, except the pieces of a fused
 * weight (q|k|v, gate|up), which stay adjacent so they form one matrix. Every layer block has
 * the same size and the same relative offsets, so zinf_layer_offsets describes them all.
 *
 * Init draws element i of a tensor from a counter-based generator keyed by (seed, tensor
 * name), so any split of the work over threads gives the same bits. */
#define _GNU_SOURCE
#include "engine/model.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

int
zinf_model_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

#define FAIL(rc, ...) zinf_model_fail(err, errlen, (rc), __VA_ARGS__)

/* ---- presets ---- */

static const char *const preset_names[] = {
	"gpt2-124m", "gpt2-350m", "gpt2-1.5b", "llama-1b", "llama-3b", "llama-7b",
	"gpt2-tiny", "llama-tiny", NULL,
};

const char *const *
zinf_model_preset_names(void)
{
	return preset_names;
}

static int
round_up_int(int v, int to)
{
	return (v + to - 1) / to * to;
}

static void
gpt2_preset(zinf_model_config *c, const char *name, int V, int T, int L, int H, int C)
{
	memset(c, 0, sizeof(*c));
	c->arch = ZINF_ARCH_GPT2;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->vocab_size = V;
	c->padded_vocab = round_up_int(V, ZINF_VOCAB_PAD);
	c->max_seq = T;
	c->n_layer = L;
	c->n_head = H;
	c->n_kv_head = H;
	c->d_model = C;
	c->d_ff = 4 * C;
	c->head_dim = C / H;
	c->norm_eps = 1e-5f;
	c->init_std = 0.02f;
	c->tied = true;
	c->rope_scaling = ZINF_ROPE_NONE;
	c->bos_token_id = V == 50257 ? 50256 : -1;
	c->eos_token_id = V == 50257 ? 50256 : -1;
}

static void
llama_preset(zinf_model_config *c, const char *name, int V, int T, int L, int H, int KV, int C,
	     int F, int hd, float theta, bool tied)
{
	memset(c, 0, sizeof(*c));
	c->arch = ZINF_ARCH_LLAMA;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->vocab_size = V;
	c->padded_vocab = round_up_int(V, ZINF_VOCAB_PAD);
	c->max_seq = T;
	c->n_layer = L;
	c->n_head = H;
	c->n_kv_head = KV;
	c->d_model = C;
	c->d_ff = F;
	c->head_dim = hd;
	c->norm_eps = 1e-5f;
	c->init_std = 0.02f;
	c->tied = tied;
	c->rope_theta = theta;
	c->rope_scaling = ZINF_ROPE_NONE;
	c->bos_token_id = -1;
	c->eos_token_id = -1;
}

static void
llama3_rope(zinf_model_config *c)
{
	c->rope_scaling = ZINF_ROPE_LLAMA3;
	c->rope_factor = 32.0f;
	c->rope_low_freq_factor = 1.0f;
	c->rope_high_freq_factor = 4.0f;
	c->rope_original_max_pos = 8192;
	c->bos_token_id = 128000;
	c->eos_token_id = 128001;
}

int
zinf_model_preset(const char *name, zinf_model_config *cfg, char *err, size_t errlen)
{
	if (!strcmp(name, "gpt2-124m")) {
		gpt2_preset(cfg, name, 50257, 1024, 12, 12, 768);
	} else if (!strcmp(name, "gpt2-350m")) {
		gpt2_preset(cfg, name, 50257, 1024, 24, 16, 1024);
	} else if (!strcmp(name, "gpt2-1.5b")) {
		gpt2_preset(cfg, name, 50257, 1024, 48, 25, 1600);
	} else if (!strcmp(name, "gpt2-tiny")) {
		gpt2_preset(cfg, name, 512, 256, 2, 2, 128);
	} else if (!strcmp(name, "llama-1b")) {
		/* Llama-3.2-1B */
		llama_preset(cfg, name, 128256, 131072, 16, 32, 8, 2048, 8192, 64, 500000.0f, true);
		llama3_rope(cfg);
	} else if (!strcmp(name, "llama-3b")) {
		/* Llama-3.2-3B */
		llama_preset(cfg, name, 128256, 131072, 28, 24, 8, 3072, 8192, 128, 500000.0f,
			     true);
		llama3_rope(cfg);
	} else if (!strcmp(name, "llama-7b")) {
		/* Llama-2-7b */
		llama_preset(cfg, name, 32000, 4096, 32, 32, 32, 4096, 11008, 128, 10000.0f, false);
		cfg->bos_token_id = 1;
		cfg->eos_token_id = 2;
	} else if (!strcmp(name, "llama-tiny")) {
		llama_preset(cfg, name, 512, 256, 2, 4, 2, 256, 512, 64, 10000.0f, false);
	} else {
		char list[256] = "";
		for (int i = 0; preset_names[i]; i++) {
			size_t n = strlen(list);
			snprintf(list + n, sizeof(list) - n, "%s%s", i ? " " : "", preset_names[i]);
		}
		return FAIL(-ENOENT,
			    "model '%s': not a preset and not a folder with config.json; presets: %s",
			    name, list);
	}
	return 0;
}

/* ---- validation ---- */

#define DIM_MAX (1 << 20)      /* any single dimension */
#define VOCAB_MAX (1 << 24)    /* vocab_size */
#define LAYER_MAX 4096         /* n_layer */
#define SEQ_MAX (1 << 24)      /* max_seq */

static int
check_dim(const char *cfgname, const char *field, int v, int max, char *err, size_t errlen)
{
	if (v <= 0 || v > max)
		return FAIL(-EINVAL, "model %s: %s = %d is out of range: it must be in 1..%d",
			    cfgname, field, v, max);
	return 0;
}

int
zinf_model_config_validate(const zinf_model_config *c, char *err, size_t errlen)
{
	const char *n = c->name[0] ? c->name : "(unnamed)";
	int rc;
	if (c->arch != ZINF_ARCH_GPT2 && c->arch != ZINF_ARCH_LLAMA)
		return FAIL(-EINVAL, "model %s: arch %d is not gpt2 (0) or llama (1)", n,
			    (int)c->arch);
	if ((rc = check_dim(n, "vocab_size", c->vocab_size, VOCAB_MAX, err, errlen)) ||
	    (rc = check_dim(n, "max_seq", c->max_seq, SEQ_MAX, err, errlen)) ||
	    (rc = check_dim(n, "n_layer", c->n_layer, LAYER_MAX, err, errlen)) ||
	    (rc = check_dim(n, "n_head", c->n_head, DIM_MAX, err, errlen)) ||
	    (rc = check_dim(n, "n_kv_head", c->n_kv_head, DIM_MAX, err, errlen)) ||
	    (rc = check_dim(n, "d_model", c->d_model, DIM_MAX, err, errlen)) ||
	    (rc = check_dim(n, "d_ff", c->d_ff, 4 * DIM_MAX, err, errlen)) ||
	    (rc = check_dim(n, "head_dim", c->head_dim, DIM_MAX, err, errlen)))
		return rc;
	if (c->padded_vocab != round_up_int(c->vocab_size, ZINF_VOCAB_PAD))
		return FAIL(-EINVAL,
			    "model %s: padded_vocab %d is not vocab_size %d rounded up to %d (%d)",
			    n, c->padded_vocab, c->vocab_size, ZINF_VOCAB_PAD,
			    round_up_int(c->vocab_size, ZINF_VOCAB_PAD));
	if (c->n_head % c->n_kv_head)
		return FAIL(-EINVAL,
			    "model %s: n_head %d is not a multiple of n_kv_head %d: grouped-query "
			    "attention needs whole groups",
			    n, c->n_head, c->n_kv_head);
	if ((int64_t)c->n_head * c->head_dim > DIM_MAX)
		return FAIL(-EINVAL, "model %s: n_head*head_dim = %lld is above %d", n,
			    (long long)c->n_head * c->head_dim, DIM_MAX);
	if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f))
		return FAIL(-EINVAL, "model %s: norm epsilon %g must be in (0, 1)", n,
			    (double)c->norm_eps);
	if (!(c->init_std >= 0.0f) || !(c->init_std < 10.0f))
		return FAIL(-EINVAL, "model %s: initializer_range %g must be in [0, 10)", n,
			    (double)c->init_std);
	if (c->arch == ZINF_ARCH_GPT2) {
		if (c->n_kv_head != c->n_head)
			return FAIL(-EINVAL,
				    "model %s: GPT-2 has no grouped-query attention: n_kv_head %d "
				    "must equal n_head %d",
				    n, c->n_kv_head, c->n_head);
		if (c->d_model % c->n_head || c->head_dim != c->d_model / c->n_head)
			return FAIL(-EINVAL,
				    "model %s: GPT-2 n_embd %d must be n_head %d times head_dim %d",
				    n, c->d_model, c->n_head, c->head_dim);
		if (!c->tied)
			return FAIL(-EINVAL,
				    "model %s: GPT-2 ties lm_head to wte; untied GPT-2 is not "
				    "supported",
				    n);
		if (c->rope_scaling != ZINF_ROPE_NONE)
			return FAIL(-EINVAL, "model %s: GPT-2 has no RoPE scaling", n);
	} else {
		if (c->head_dim % 2)
			return FAIL(-EINVAL, "model %s: head_dim %d must be even for RoPE", n,
				    c->head_dim);
		if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
			return FAIL(-EINVAL, "model %s: rope_theta %g must be a number above 1", n,
				    (double)c->rope_theta);
		if (c->rope_scaling == ZINF_ROPE_LLAMA3) {
			if (!(c->rope_factor >= 1.0f) || !isfinite(c->rope_factor))
				return FAIL(-EINVAL,
					    "model %s: rope_scaling.factor %g must be >= 1", n,
					    (double)c->rope_factor);
			if (!(c->rope_low_freq_factor > 0.0f) ||
			    !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
			    !isfinite(c->rope_high_freq_factor))
				return FAIL(-EINVAL,
					    "model %s: rope_scaling needs 0 < low_freq_factor (%g) "
					    "< high_freq_factor (%g)",
					    n, (double)c->rope_low_freq_factor,
					    (double)c->rope_high_freq_factor);
			if (c->rope_original_max_pos <= 0)
				return FAIL(-EINVAL,
					    "model %s: rope_scaling.original_max_position_embeddings"
					    " %d must be positive",
					    n, c->rope_original_max_pos);
		} else if (c->rope_scaling != ZINF_ROPE_NONE) {
			return FAIL(-EINVAL, "model %s: rope_scaling %d is unknown", n,
				    (int)c->rope_scaling);
		}
	}
	if (c->bos_token_id < -1 || c->bos_token_id >= c->vocab_size ||
	    c->eos_token_id < -1 || c->eos_token_id >= c->vocab_size)
		return FAIL(-EINVAL,
			    "model %s: bos_token_id %d / eos_token_id %d must be -1 (none) or below "
			    "vocab_size %d",
			    n, c->bos_token_id, c->eos_token_id, c->vocab_size);
	return 0;
}

/* ---- layout ---- */

typedef struct builder {
	zinf_model_layout *lay;
	int cap;
	int64_t cur;   /* next free element */
	int block;     /* current block */
	int64_t start; /* current block's start */
} builder;

static int64_t
align_up(int64_t v, int64_t to)
{
	return (v + to - 1) / to * to;
}

static void
begin_block(builder *b, int block)
{
	b->cur = align_up(b->cur, ZINF_BLOCK_ALIGN);
	b->block = block;
	b->start = b->cur;
	b->lay->block_offset[block] = b->cur;
}

static void
end_block(builder *b)
{
	b->cur = align_up(b->cur, ZINF_BLOCK_ALIGN);
	b->lay->block_numel[b->block] = b->cur - b->start;
}

/* Appends a tensor; `fused` keeps it right after the previous one (no alignment gap). Returns
 * its offset relative to the block start. rows x cols is the zinf shape ([out, in]); cols 0
 * makes it 1-D. */
static int64_t
add(builder *b, bool fused, const char *name, int64_t rows, int64_t cols, bool transposed,
    int64_t hf_rows)
{
	zinf_model_layout *lay = b->lay;
	if (!fused)
		b->cur = align_up(b->cur, ZINF_BLOCK_ALIGN);
	zinf_tensor_desc *t = &lay->tensors[lay->ntensors++];
	memset(t, 0, sizeof(*t));
	snprintf(t->hf_name, sizeof(t->hf_name), "%s", name);
	t->block = b->block;
	t->ndim = cols ? 2 : 1;
	t->shape[0] = rows;
	t->shape[1] = cols ? cols : 1;
	t->numel = rows * t->shape[1];
	t->hf_rows = hf_rows;
	t->hf_transposed = transposed;
	if (transposed) {
		t->hf_shape[0] = cols;
		t->hf_shape[1] = rows;
	} else {
		t->hf_shape[0] = hf_rows;
		t->hf_shape[1] = cols;
	}
	if (!cols)
		t->hf_shape[1] = 0;
	t->offset = b->cur;
	t->decay = t->ndim == 2;
	b->cur += t->numel;
	lay->n_params += hf_rows * t->shape[1];
	return t->offset - b->start;
}

int
zinf_model_layout_init(const zinf_model_config *c, zinf_model_layout *lay, char *err,
		       size_t errlen)
{
	memset(lay, 0, sizeof(*lay));
	int rc = zinf_model_config_validate(c, err, errlen);
	if (rc)
		return rc;
	int L = c->n_layer;
	bool gpt2 = c->arch == ZINF_ARCH_GPT2;
	int per_layer = gpt2 ? 12 : 9;
	builder b = {.lay = lay, .cap = 4 + per_layer * L};
	lay->nblocks = L + 2;
	lay->block_offset = calloc((size_t)lay->nblocks, sizeof(int64_t));
	lay->block_numel = calloc((size_t)lay->nblocks, sizeof(int64_t));
	lay->tensors = calloc((size_t)b.cap, sizeof(zinf_tensor_desc));
	if (!lay->block_offset || !lay->block_numel || !lay->tensors) {
		zinf_model_layout_free(lay);
		return FAIL(-ENOMEM, "model %s: out of memory for the layout of %d layers", c->name,
			    L);
	}
	int64_t C = c->d_model, F = c->d_ff, V = c->vocab_size, PV = c->padded_vocab;
	int64_t q_rows = (int64_t)c->n_head * c->head_dim;
	int64_t kv_rows = (int64_t)c->n_kv_head * c->head_dim;
	int64_t qkv_rows = q_rows + 2 * kv_rows;
	char nm[96];
	zinf_layer_offsets *o = &lay->layer;

	begin_block(&b, 0);
	lay->wte = b.start + add(&b, false, gpt2 ? "transformer.wte.weight"
						 : "model.embed_tokens.weight",
				 PV, C, false, V);
	lay->wpe = gpt2 ? b.start + add(&b, false, "transformer.wpe.weight", c->max_seq, C, false,
					c->max_seq)
			: -1;
	end_block(&b);

	for (int l = 0; l < L; l++) {
		begin_block(&b, 1 + l);
		if (gpt2) {
#define G(suffix) (snprintf(nm, sizeof(nm), "transformer.h.%d.%s", l, suffix), nm)
			o->ln1_w = add(&b, false, G("ln_1.weight"), C, 0, false, C);
			o->ln1_b = add(&b, false, G("ln_1.bias"), C, 0, false, C);
			o->qkv_w = add(&b, false, G("attn.c_attn.weight"), qkv_rows, C, true,
				       qkv_rows);
			o->qkv_b = add(&b, false, G("attn.c_attn.bias"), qkv_rows, 0, false,
				       qkv_rows);
			o->o_w = add(&b, false, G("attn.c_proj.weight"), C, q_rows, true, C);
			o->o_b = add(&b, false, G("attn.c_proj.bias"), C, 0, false, C);
			o->ln2_w = add(&b, false, G("ln_2.weight"), C, 0, false, C);
			o->ln2_b = add(&b, false, G("ln_2.bias"), C, 0, false, C);
			o->fc_w = add(&b, false, G("mlp.c_fc.weight"), F, C, true, F);
			o->fc_b = add(&b, false, G("mlp.c_fc.bias"), F, 0, false, F);
			o->proj_w = add(&b, false, G("mlp.c_proj.weight"), C, F, true, C);
			o->proj_b = add(&b, false, G("mlp.c_proj.bias"), C, 0, false, C);
#undef G
		} else {
#define M(suffix) (snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, suffix), nm)
			o->ln1_w = add(&b, false, M("input_layernorm.weight"), C, 0, false, C);
			o->qkv_w = add(&b, false, M("self_attn.q_proj.weight"), q_rows, C, false,
				       q_rows);
			add(&b, true, M("self_attn.k_proj.weight"), kv_rows, C, false, kv_rows);
			add(&b, true, M("self_attn.v_proj.weight"), kv_rows, C, false, kv_rows);
			o->o_w = add(&b, false, M("self_attn.o_proj.weight"), C, q_rows, false, C);
			o->ln2_w = add(&b, false, M("post_attention_layernorm.weight"), C, 0, false,
				       C);
			o->fc_w = add(&b, false, M("mlp.gate_proj.weight"), F, C, false, F);
			add(&b, true, M("mlp.up_proj.weight"), F, C, false, F);
			o->proj_w = add(&b, false, M("mlp.down_proj.weight"), C, F, false, C);
			o->ln1_b = o->qkv_b = o->o_b = o->ln2_b = o->fc_b = o->proj_b = -1;
#undef M
		}
		end_block(&b);
	}
	lay->layer_numel = lay->block_numel[1];

	begin_block(&b, L + 1);
	if (gpt2) {
		lay->lnf_w = b.start + add(&b, false, "transformer.ln_f.weight", C, 0, false, C);
		lay->lnf_b = b.start + add(&b, false, "transformer.ln_f.bias", C, 0, false, C);
	} else {
		lay->lnf_w = b.start + add(&b, false, "model.norm.weight", C, 0, false, C);
		lay->lnf_b = -1;
	}
	lay->lm_head = c->tied ? -1 : b.start + add(&b, false, "lm_head.weight", PV, C, false, V);
	end_block(&b);
	lay->total_numel = b.cur;
	return 0;
}

void
zinf_model_layout_free(zinf_model_layout *lay)
{
	if (!lay)
		return;
	free(lay->block_offset);
	free(lay->block_numel);
	free(lay->tensors);
	memset(lay, 0, sizeof(*lay));
}

/* ---- init ---- */

static inline uint64_t
mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#define GOLDEN 0x9e3779b97f4a7c15ULL

uint64_t
zinf_model_tensor_key(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	return mix64(mix64(seed + GOLDEN) ^ h);
}

/* Standard normals for elements [from, to) of the stream `key`: element 2p and 2p+1 are the
 * Box-Muller pair made from counters 2p and 2p+1. */
void
zinf_model_normal_fill(uint64_t key, int64_t from, int64_t to, float std, float *out)
{
	for (int64_t i = from; i < to;) {
		int64_t p = i >> 1;
		uint64_t x = mix64(key + (uint64_t)(2 * p + 1) * GOLDEN);
		uint64_t y = mix64(key + (uint64_t)(2 * p + 2) * GOLDEN);
		double u1 = ((double)(x >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
		double u2 = (double)(y >> 11) * 0x1.0p-53;         /* [0, 1) */
		double r = sqrt(-2.0 * log(u1));
		double a = 2.0 * M_PI * u2;
		if (!(i & 1))
			out[i - from] = (float)(r * cos(a) * std), i++;
		if (i < to)
			out[i - from] = (float)(r * sin(a) * std), i++;
	}
}

typedef struct init_job {
	const zinf_model_config *cfg;
	const zinf_model_layout *lay;
	uint64_t seed;
	float *params;
	int nthreads, tid;
} init_job;

#define INIT_CHUNK (1 << 20) /* elements per work item */

static float
tensor_std(const zinf_model_config *cfg, const zinf_tensor_desc *t)
{
	if (cfg->arch == ZINF_ARCH_GPT2) {
		size_t n = strlen(t->hf_name);
		const char *suf = "c_proj.weight";
		if (n >= strlen(suf) && !strcmp(t->hf_name + n - strlen(suf), suf))
			return cfg->init_std / sqrtf(2.0f * (float)cfg->n_layer);
	}
	return cfg->init_std;
}

static void *
init_worker(void *arg)
{
	init_job *j = arg;
	const zinf_model_layout *lay = j->lay;
	int64_t item = 0;
	for (int ti = 0; ti < lay->ntensors; ti++) {
		const zinf_tensor_desc *t = &lay->tensors[ti];
		int64_t live = t->hf_rows * t->shape[1]; /* rows past hf_rows stay zero */
		for (int64_t from = 0; from < live; from += INIT_CHUNK, item++) {
			if (item % j->nthreads != j->tid)
				continue;
			int64_t to = from + INIT_CHUNK < live ? from + INIT_CHUNK : live;
			float *dst = j->params + t->offset + from;
			if (t->ndim == 1) {
				/* norm weights are 1, biases 0 */
				size_t n = strlen(t->hf_name);
				float v = n > 7 && !strcmp(t->hf_name + n - 7, ".weight") ? 1.0f
											 : 0.0f;
				for (int64_t i = 0; i < to - from; i++)
					dst[i] = v;
			} else {
				uint64_t key = zinf_model_tensor_key(j->seed, t->hf_name);
				zinf_model_normal_fill(key, from, to, tensor_std(j->cfg, t), dst);
			}
		}
	}
	return NULL;
}

/* Zeroes everything the tensors' live rows do not cover: alignment gaps, block tails and padded
 * vocabulary rows. */
void
zinf_model_zero_padding(const zinf_model_layout *lay, float *params)
{
	int64_t prev = 0;
	for (int ti = 0; ti < lay->ntensors; ti++) {
		const zinf_tensor_desc *t = &lay->tensors[ti];
		if (t->offset > prev)
			memset(params + prev, 0, (size_t)(t->offset - prev) * sizeof(float));
		int64_t live = t->hf_rows * t->shape[1];
		if (live < t->numel)
			memset(params + t->offset + live, 0,
			       (size_t)(t->numel - live) * sizeof(float));
		prev = t->offset + t->numel;
	}
	if (lay->total_numel > prev)
		memset(params + prev, 0, (size_t)(lay->total_numel - prev) * sizeof(float));
}

void
zinf_model_init_params(const zinf_model_config *cfg, const zinf_model_layout *lay,
		       uint64_t seed, float *params)
{
	zinf_model_zero_padding(lay, params);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int64_t items = lay->total_numel / INIT_CHUNK + lay->ntensors;
	int nt = ncpu > 0 ? (int)(ncpu < 64 ? ncpu : 64) : 1;
	if (nt > items)
		nt = (int)items;
	if (nt < 1)
		nt = 1;
	init_job jobs[64];
	pthread_t th[64];
	int started = 0;
	for (int i = 0; i < nt; i++)
		jobs[i] = (init_job){cfg, lay, seed, params, nt, i};
	for (int i = 1; i < nt; i++) {
		if (pthread_create(&th[i], NULL, init_worker, &jobs[i]))
			break;
		started = i;
	}
	/* Items of threads that could not start are done here: same values, any order. */
	init_worker(&jobs[0]);
	for (int i = started + 1; i < nt; i++)
		init_worker(&jobs[i]);
	for (int i = 1; i <= started; i++)
		pthread_join(th[i], NULL);
}

/* ---- FLOPs ---- */

double
zinf_model_flops_per_token(const zinf_model_config *c, int T)
{
	double C = c->d_model, F = c->d_ff, hd = c->head_dim;
	double q = (double)c->n_head * hd, kv = (double)c->n_kv_head * hd;
	double mlp = c->arch == ZINF_ARCH_LLAMA ? 3.0 * F * C : 2.0 * F * C;
	double per_layer = (q + 2.0 * kv) * C + C * q + mlp;
	double N = c->n_layer * per_layer + (double)c->vocab_size * C;
	return 6.0 * N + 12.0 * c->n_layer * (double)T * c->n_head * hd;
}
