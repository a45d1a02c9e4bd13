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
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "engine/safetensors.h"
#include "config_internal.h"
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
base_preset(zinf_model_config *c, zinf_arch arch, const char *name, int V, int T, int L, int H,
	    int KV, int C, int F, int hd)
{
	memset(c, 0, sizeof(*c));
	c->arch = arch;
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
	c->rope_scaling = ZINF_ROPE_NONE;
	c->bos_token_id = -1;
	c->eos_token_id = -1;
}

static void
gpt2_preset(zinf_model_config *c, const char *name, int V, int T, int L, int H, int C)
{
	base_preset(c, ZINF_ARCH_GPT2, name, V, T, L, H, H, C, 4 * C, C / H);
	c->tied = true;
	if (V == 50257) /* <|endoftext|> */
		c->bos_token_id = c->eos_token_id = 50256;
}

static void
llama_preset(zinf_model_config *c, const char *name, int V, int T, int L, int H, int KV, int C,
	     int F, int hd, float theta, bool tied)
{
	base_preset(c, ZINF_ARCH_LLAMA, name, V, T, L, H, KV, C, F, hd);
	c->tied = tied;
	c->rope_theta = theta;
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
	/* messages use the config.json names of the family */
	bool g = c->arch == ZINF_ARCH_GPT2;
	if ((rc = check_dim(n, "vocab_size", c->vocab_size, VOCAB_MAX, err, errlen)) ||
	    (rc = check_dim(n, g ? "n_positions" : "max_position_embeddings", c->max_seq, SEQ_MAX,
			    err, errlen)) ||
	    (rc = check_dim(n, g ? "n_layer" : "num_hidden_layers", c->n_layer, LAYER_MAX, err,
			    errlen)) ||
	    (rc = check_dim(n, g ? "n_head" : "num_attention_heads", c->n_head, DIM_MAX, err,
			    errlen)) ||
	    (rc = check_dim(n, g ? "n_head" : "num_key_value_heads", c->n_kv_head, DIM_MAX, err,
			    errlen)) ||
	    (rc = check_dim(n, g ? "n_embd" : "hidden_size", c->d_model, DIM_MAX, err, errlen)) ||
	    (rc = check_dim(n, g ? "n_inner" : "intermediate_size", c->d_ff, 4 * DIM_MAX, err,
			    errlen)) ||
	    (rc = check_dim(n, "head_dim", c->head_dim, DIM_MAX, err, errlen)))
		return rc;
	if (c->padded_vocab != round_up_int(c->vocab_size, ZINF_VOCAB_PAD))
		return FAIL(-EINVAL,
			    "model %s: padded_vocab %d is not vocab_size %d rounded up to %d (%d)",
			    n, c->padded_vocab, c->vocab_size, ZINF_VOCAB_PAD,
			    round_up_int(c->vocab_size, ZINF_VOCAB_PAD));
	if (c->n_head % c->n_kv_head)
		return FAIL(-EINVAL,
			    "model %s: num_attention_heads %d is not a multiple of "
			    "num_key_value_heads %d: grouped-query attention needs whole groups",
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
	/* bos/eos are only carried through to saved configs (zinf trains on tokenised shards),
	 * so ids past vocab_size are accepted as HF does: a small random GPT2Config keeps
	 * GPT-2's 50256. */
	if (c->bos_token_id < -1 || c->eos_token_id < -1)
		return FAIL(-EINVAL,
			    "model %s: bos_token_id %d / eos_token_id %d must be -1 (none) or a "
			    "token id >= 0",
			    n, c->bos_token_id, c->eos_token_id);
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

/* Initialises the elements [lo, hi) of the flat vector into params[0 .. hi-lo). */
typedef struct init_job {
	const zinf_model_config *cfg;
	const zinf_model_layout *lay;
	uint64_t seed;
	float *params;
	int64_t lo, hi;
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
		int64_t first = j->lo > t->offset ? j->lo - t->offset : 0;
		int64_t end = j->hi - t->offset < live ? j->hi - t->offset : live;
		for (int64_t from = first; from < end; from += INIT_CHUNK, item++) {
			if (item % j->nthreads != j->tid)
				continue;
			int64_t to = from + INIT_CHUNK < end ? from + INIT_CHUNK : end;
			float *dst = j->params + (t->offset + from - j->lo);
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

static void
init_window(const zinf_model_config *cfg, const zinf_model_layout *lay, uint64_t seed,
	    int64_t lo, int64_t hi, float *dst)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int64_t items = (hi - lo) / INIT_CHUNK + lay->ntensors;
	int nt = ncpu > 0 ? (int)(ncpu < 64 ? ncpu : 64) : 1;
	if (nt > items)
		nt = (int)items;
	if (nt < 1)
		nt = 1;
	init_job jobs[64];
	pthread_t th[64];
	int started = 0;
	for (int i = 0; i < nt; i++)
		jobs[i] = (init_job){cfg, lay, seed, dst, lo, hi, nt, i};
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

void
zinf_model_init_params(const zinf_model_config *cfg, const zinf_model_layout *lay,
		       uint64_t seed, float *params)
{
	zinf_model_zero_padding(lay, params);
	init_window(cfg, lay, seed, 0, lay->total_numel, params);
}

void
zinf_model_init_range(const zinf_model_config *cfg, const zinf_model_layout *lay, uint64_t seed,
		      int64_t offset, int64_t n, float *dst)
{
	memset(dst, 0, (size_t)n * sizeof(float)); /* gaps, tails, padded rows */
	init_window(cfg, lay, seed, offset, offset + n, dst);
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

/* ---- HF config.json ---- */

#define CONFIG_JSON_MAX (16u << 20)

typedef struct cfgp {
	const char *path;
	const cJSON *root;
	char *err;
	size_t errlen;
} cfgp;


/* An integer field; absent or null gives def. */
static int
get_int(cfgp *p, const cJSON *obj, const char *field, int def, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
	if (!v || cJSON_IsNull(v)) {
		/* a token id given as null is None in HF; absent is the class default */
		*out = v && strstr(field, "_token_id") ? -1 : def;
		return 0;
	}
	/* Llama 3.1+ eos_token_id: [128001, 128008, 128009]: the first one */
	if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0 && strstr(field, "_token_id"))
		v = cJSON_GetArrayItem(v, 0);
	double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
	if (!cJSON_IsNumber(v) || d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: %s: expected an integer, got %s%s", p->path, field,
				       zinf_cfg_json_kind(v), cJSON_IsNumber(v) ? " out of range or fractional" : "");
	*out = (int)d;
	return 0;
}

static int
get_float(cfgp *p, const cJSON *obj, const char *field, float def, float *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
	if (!v || cJSON_IsNull(v)) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsNumber(v))
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: %s: expected a number, got %s", p->path, field,
				       zinf_cfg_json_kind(v));
	*out = (float)v->valuedouble;
	return 0;
}

static int
get_bool(cfgp *p, const char *field, bool def, bool *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p->root, field);
	if (!v || cJSON_IsNull(v)) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsBool(v))
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: %s: expected true or false, got %s", p->path, field,
				       zinf_cfg_json_kind(v));
	*out = cJSON_IsTrue(v);
	return 0;
}

static int
get_string(cfgp *p, const cJSON *obj, const char *field, const char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
	if (!v || cJSON_IsNull(v)) {
		*out = NULL;
		return 0;
	}
	if (!cJSON_IsString(v))
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: %s: expected a string, got %s", p->path, field,
				       zinf_cfg_json_kind(v));
	*out = v->valuestring;
	return 0;
}

/* A boolean option whose value `bad` zinf does not implement. */
static int
refuse_bool(cfgp *p, const char *field, bool def, bool bad, const char *fix)
{
	bool v = def;
	int rc = get_bool(p, field, def, &v);
	if (rc)
		return rc;
	if (v == bad)
		return zinf_model_fail(p->err, p->errlen, -ENOTSUP,
				       "%s: %s = %s is not supported: %s", p->path, field,
				       bad ? "true" : "false", fix);
	return 0;
}

static int
check_act(cfgp *p, const char *field, const char *def, const char *ok1, const char *ok2)
{
	const char *act = NULL;
	int rc = get_string(p, p->root, field, &act);
	if (rc)
		return rc;
	if (!act)
		act = def;
	if (strcmp(act, ok1) && (!ok2 || strcmp(act, ok2)))
		return zinf_model_fail(p->err, p->errlen, -ENOTSUP,
				       "%s: %s = \"%s\" is not supported: zinf implements \"%s\"%s%s%s",
				       p->path, field, act, ok1, ok2 ? " and \"" : "",
				       ok2 ? ok2 : "", ok2 ? "\"" : "");
	return 0;
}

static int
parse_gpt2(cfgp *p, zinf_model_config *c)
{
	const cJSON *r = p->root;
	int rc, inner;
	if ((rc = get_int(p, r, "vocab_size", 50257, &c->vocab_size)) ||
	    (rc = get_int(p, r, "n_positions", 1024, &c->max_seq)) ||
	    (rc = get_int(p, r, "n_embd", 768, &c->d_model)) ||
	    (rc = get_int(p, r, "n_layer", 12, &c->n_layer)) ||
	    (rc = get_int(p, r, "n_head", 12, &c->n_head)) ||
	    (rc = get_int(p, r, "n_inner", 0, &inner)) ||
	    (rc = get_float(p, r, "layer_norm_epsilon", 1e-5f, &c->norm_eps)) ||
	    (rc = get_float(p, r, "initializer_range", 0.02f, &c->init_std)) ||
	    (rc = get_int(p, r, "bos_token_id", 50256, &c->bos_token_id)) ||
	    (rc = get_int(p, r, "eos_token_id", 50256, &c->eos_token_id)) ||
	    (rc = check_act(p, "activation_function", "gelu_new", "gelu_new",
			    "gelu_pytorch_tanh")) ||
	    (rc = refuse_bool(p, "tie_word_embeddings", true, false,
			      "GPT-2 in zinf ties lm_head to wte; remove the field")) ||
	    (rc = refuse_bool(p, "scale_attn_weights", true, false,
			      "attention scores are always scaled by 1/sqrt(head_dim)")) ||
	    (rc = refuse_bool(p, "scale_attn_by_inverse_layer_idx", false, true,
			      "set it to false")) ||
	    (rc = refuse_bool(p, "add_cross_attention", false, true,
			      "zinf trains decoder-only models; set it to false")))
		return rc;
	c->arch = ZINF_ARCH_GPT2;
	c->d_ff = inner > 0 ? inner : 4 * c->d_model;
	if (inner < 0)
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: n_inner = %d must be positive or null (4*n_embd)",
				       p->path, inner);
	c->n_kv_head = c->n_head;
	c->head_dim = c->n_head > 0 ? c->d_model / c->n_head : 0;
	if (c->n_head > 0 && c->d_model % c->n_head)
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: n_embd = %d is not a multiple of n_head = %d", p->path,
				       c->d_model, c->n_head);
	c->tied = true;
	return 0;
}

static int
parse_rope_scaling(cfgp *p, zinf_model_config *c)
{
	/* transformers 5 writes rope_parameters {rope_type, rope_theta, factor, ...}; older
	 * versions rope_theta at the top and rope_scaling (null for the default) */
	const char *key = "rope_parameters";
	const cJSON *rs = cJSON_GetObjectItemCaseSensitive(p->root, key);
	if (!rs || cJSON_IsNull(rs))
		rs = cJSON_GetObjectItemCaseSensitive(p->root, key = "rope_scaling");
	c->rope_scaling = ZINF_ROPE_NONE;
	if (!rs || cJSON_IsNull(rs))
		return 0;
	if (!cJSON_IsObject(rs))
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: %s: expected an object or null, got %s", p->path, key,
				       zinf_cfg_json_kind(rs));
	const char *type;
	int rc = get_float(p, rs, "rope_theta", c->rope_theta, &c->rope_theta);
	if (!rc)
		rc = get_string(p, rs, "rope_type", &type);
	if (!rc && !type)
		rc = get_string(p, rs, "type", &type); /* older transformers */
	if (rc)
		return rc;
	if (type && !strcmp(type, "default"))
		return 0;
	if (!type || strcmp(type, "llama3"))
		return zinf_model_fail(p->err, p->errlen, -ENOTSUP,
				       "%s: %s.rope_type = \"%s\" is not supported: zinf "
				       "implements \"llama3\" and \"default\"",
				       p->path, key, type ? type : "(missing)");
	static const char *const need[] = {"factor", "low_freq_factor", "high_freq_factor",
					   "original_max_position_embeddings"};
	for (int i = 0; i < 4; i++)
		if (!cJSON_GetObjectItemCaseSensitive(rs, need[i]))
			return zinf_model_fail(p->err, p->errlen, -EINVAL,
					       "%s: %s.%s is missing: llama3 scaling needs "
					       "factor, low_freq_factor, high_freq_factor and "
					       "original_max_position_embeddings",
					       p->path, key, need[i]);
	c->rope_scaling = ZINF_ROPE_LLAMA3;
	if ((rc = get_float(p, rs, "factor", 0, &c->rope_factor)) ||
	    (rc = get_float(p, rs, "low_freq_factor", 0, &c->rope_low_freq_factor)) ||
	    (rc = get_float(p, rs, "high_freq_factor", 0, &c->rope_high_freq_factor)) ||
	    (rc = get_int(p, rs, "original_max_position_embeddings", 0,
			  &c->rope_original_max_pos)))
		return rc;
	return 0;
}

static int
parse_llama(cfgp *p, zinf_model_config *c)
{
	const cJSON *r = p->root;
	int rc, hd, tp;
	if ((rc = get_int(p, r, "vocab_size", 32000, &c->vocab_size)) ||
	    (rc = get_int(p, r, "max_position_embeddings", 2048, &c->max_seq)) ||
	    (rc = get_int(p, r, "hidden_size", 4096, &c->d_model)) ||
	    (rc = get_int(p, r, "intermediate_size", 11008, &c->d_ff)) ||
	    (rc = get_int(p, r, "num_hidden_layers", 32, &c->n_layer)) ||
	    (rc = get_int(p, r, "num_attention_heads", 32, &c->n_head)) ||
	    (rc = get_int(p, r, "num_key_value_heads", c->n_head, &c->n_kv_head)) ||
	    (rc = get_int(p, r, "head_dim", 0, &hd)) ||
	    (rc = get_int(p, r, "pretraining_tp", 1, &tp)) ||
	    (rc = get_float(p, r, "rms_norm_eps", 1e-6f, &c->norm_eps)) ||
	    (rc = get_float(p, r, "initializer_range", 0.02f, &c->init_std)) ||
	    (rc = get_float(p, r, "rope_theta", 10000.0f, &c->rope_theta)) ||
	    (rc = get_bool(p, "tie_word_embeddings", false, &c->tied)) ||
	    (rc = get_int(p, r, "bos_token_id", 1, &c->bos_token_id)) ||
	    (rc = get_int(p, r, "eos_token_id", 2, &c->eos_token_id)) ||
	    (rc = check_act(p, "hidden_act", "silu", "silu", NULL)) ||
	    (rc = refuse_bool(p, "attention_bias", false, true,
			      "zinf's LLaMA has no attention biases; set it to false")) ||
	    (rc = refuse_bool(p, "mlp_bias", false, true,
			      "zinf's LLaMA has no MLP biases; set it to false")) ||
	    (rc = parse_rope_scaling(p, c)))
		return rc;
	c->arch = ZINF_ARCH_LLAMA;
	if (hd < 0)
		return zinf_model_fail(p->err, p->errlen, -EINVAL,
				       "%s: head_dim = %d must be positive or null", p->path, hd);
	if (hd > 0) {
		c->head_dim = hd;
	} else {
		if (c->n_head <= 0 || c->d_model % c->n_head)
			return zinf_model_fail(p->err, p->errlen, -EINVAL,
					       "%s: hidden_size = %d is not a multiple of "
					       "num_attention_heads = %d: set head_dim",
					       p->path, c->d_model, c->n_head);
		c->head_dim = c->d_model / c->n_head;
	}
	(void)tp; /* pretraining_tp only splits HF's matmuls; the math is the same */
	return 0;
}

static void
set_name(zinf_model_config *c, const char *name_or_path, const char *config_path)
{
	if (name_or_path && *name_or_path) {
		snprintf(c->name, sizeof(c->name), "%s", name_or_path);
		return;
	}
	/* the folder holding config.json */
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", config_path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	while (strlen(dir) > 1 && dir[strlen(dir) - 1] == '/')
		dir[strlen(dir) - 1] = 0;
	const char *base = strrchr(dir, '/');
	snprintf(c->name, sizeof(c->name), "%.63s", base && base[1] ? base + 1 : dir);
}

int
zinf_model_config_load(const char *path, zinf_model_config *c, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc = zinf_read_file(path, CONFIG_JSON_MAX, &buf, &len, err, errlen);
	if (rc)
		return rc;
	memset(c, 0, sizeof(*c));
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithOpts(buf, &end, 1);
	if (!root || !cJSON_IsObject(root)) {
		size_t at = root ? 0 : (size_t)((end ? end : buf + len) - buf);
		cJSON_Delete(root);
		free(buf);
		if (at || !len)
			return FAIL(-EINVAL,
				    "%s: malformed JSON at byte %zu: an HF config.json is one "
				    "object { ... }",
				    path, at);
		return FAIL(-EINVAL, "%s: the top level is not an object: an HF config.json is "
				     "one object { ... }", path);
	}
	cfgp p = {.path = path, .root = root, .err = err, .errlen = errlen};
	const char *type, *name;
	rc = get_string(&p, root, "model_type", &type);
	if (!rc)
		rc = get_string(&p, root, "_name_or_path", &name);
	if (!rc && !type)
		rc = FAIL(-EINVAL, "%s: model_type is missing: set it to \"gpt2\" or \"llama\"",
			  path);
	if (!rc) {
		if (!strcmp(type, "gpt2"))
			rc = parse_gpt2(&p, c);
		else if (!strcmp(type, "llama"))
			rc = parse_llama(&p, c);
		else
			rc = FAIL(-ENOTSUP,
				  "%s: model_type = \"%s\" is not supported: zinf trains \"gpt2\" "
				  "and \"llama\" models",
				  path, type);
	}
	if (!rc) {
		set_name(c, name, path);
		c->padded_vocab = round_up_int(c->vocab_size > 0 ? c->vocab_size : 1,
					       ZINF_VOCAB_PAD);
		rc = zinf_model_config_validate(c, err, errlen);
		if (rc) { /* the message names the model; put the file first */
			char tmp[512];
			snprintf(tmp, sizeof(tmp), "%s", err);
			FAIL(rc, "%s: %s", path, tmp);
		}
	}
	cJSON_Delete(root);
	free(buf);
	return rc;
}

/* The shortest decimal that reads back as the same float, as a JSON number with a '.' or an
 * exponent so Python reads a float. */
static cJSON *
float_item(float v)
{
	char s[48];
	for (int prec = 6; prec <= 9; prec++) {
		snprintf(s, sizeof(s), "%.*g", prec, (double)v);
		if (strtof(s, NULL) == v)
			break;
	}
	if (!strpbrk(s, ".e"))
		strcat(s, ".0");
	return cJSON_CreateRaw(s);
}

static void
add_int_or_null(cJSON *o, const char *k, int v)
{
	if (v < 0)
		cJSON_AddNullToObject(o, k);
	else
		cJSON_AddNumberToObject(o, k, v);
}

int
zinf_model_config_save(const zinf_model_config *c, const char *path, char *err, size_t errlen)
{
	int rc = zinf_model_config_validate(c, err, errlen);
	if (rc)
		return rc;
	cJSON *o = cJSON_CreateObject();
	cJSON *arch = cJSON_CreateArray();
	bool gpt2 = c->arch == ZINF_ARCH_GPT2;
	cJSON_AddItemToArray(arch, cJSON_CreateString(gpt2 ? "GPT2LMHeadModel"
							    : "LlamaForCausalLM"));
	cJSON_AddItemToObject(o, "architectures", arch);
	cJSON_AddStringToObject(o, "model_type", gpt2 ? "gpt2" : "llama");
	cJSON_AddStringToObject(o, "_name_or_path", c->name);
	cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
	if (gpt2) {
		cJSON_AddNumberToObject(o, "n_positions", c->max_seq);
		cJSON_AddNumberToObject(o, "n_ctx", c->max_seq);
		cJSON_AddNumberToObject(o, "n_embd", c->d_model);
		cJSON_AddNumberToObject(o, "n_layer", c->n_layer);
		cJSON_AddNumberToObject(o, "n_head", c->n_head);
		if (c->d_ff == 4 * c->d_model)
			cJSON_AddNullToObject(o, "n_inner");
		else
			cJSON_AddNumberToObject(o, "n_inner", c->d_ff);
		cJSON_AddStringToObject(o, "activation_function", "gelu_new");
		cJSON_AddItemToObject(o, "layer_norm_epsilon", float_item(c->norm_eps));
		/* zinf trains without dropout */
		cJSON_AddItemToObject(o, "resid_pdrop", float_item(0.0f));
		cJSON_AddItemToObject(o, "embd_pdrop", float_item(0.0f));
		cJSON_AddItemToObject(o, "attn_pdrop", float_item(0.0f));
		cJSON_AddTrueToObject(o, "scale_attn_weights");
	} else {
		cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq);
		cJSON_AddNumberToObject(o, "hidden_size", c->d_model);
		cJSON_AddNumberToObject(o, "intermediate_size", c->d_ff);
		cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layer);
		cJSON_AddNumberToObject(o, "num_attention_heads", c->n_head);
		cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_head);
		cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
		cJSON_AddStringToObject(o, "hidden_act", "silu");
		cJSON_AddItemToObject(o, "rms_norm_eps", float_item(c->norm_eps));
		cJSON_AddItemToObject(o, "rope_theta", float_item(c->rope_theta));
		if (c->rope_scaling == ZINF_ROPE_LLAMA3) {
			cJSON *rs = cJSON_CreateObject();
			cJSON_AddStringToObject(rs, "rope_type", "llama3");
			cJSON_AddItemToObject(rs, "factor", float_item(c->rope_factor));
			cJSON_AddItemToObject(rs, "low_freq_factor",
					      float_item(c->rope_low_freq_factor));
			cJSON_AddItemToObject(rs, "high_freq_factor",
					      float_item(c->rope_high_freq_factor));
			cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
						c->rope_original_max_pos);
			cJSON_AddItemToObject(o, "rope_scaling", rs);
		} else {
			cJSON_AddNullToObject(o, "rope_scaling");
		}
		cJSON_AddFalseToObject(o, "attention_bias");
		cJSON_AddFalseToObject(o, "mlp_bias");
		cJSON_AddItemToObject(o, "attention_dropout", float_item(0.0f));
		cJSON_AddNumberToObject(o, "pretraining_tp", 1);
	}
	cJSON_AddItemToObject(o, "initializer_range", float_item(c->init_std));
	cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tied);
	add_int_or_null(o, "bos_token_id", c->bos_token_id);
	add_int_or_null(o, "eos_token_id", c->eos_token_id);
	cJSON_AddTrueToObject(o, "use_cache");
	char *text = cJSON_Print(o);
	cJSON_Delete(o);
	if (!text)
		return FAIL(-ENOMEM, "%s: out of memory formatting config.json", path);
	size_t n = strlen(text);
	char *withnl = realloc(text, n + 2);
	if (!withnl) {
		free(text);
		return FAIL(-ENOMEM, "%s: out of memory formatting config.json", path);
	}
	withnl[n] = '\n';
	withnl[n + 1] = 0;
	rc = zinf_write_file_atomic(path, withnl, n + 1, err, errlen);
	free(withnl);
	return rc;
}

int
zinf_model_resolve(const char *model, zinf_model_config *cfg, char *weights, size_t weightslen,
		   char *err, size_t errlen)
{
	if (weights && weightslen)
		weights[0] = 0;
	struct stat st;
	if (stat(model, &st) || !S_ISDIR(st.st_mode)) {
		if (!strchr(model, '/'))
			return zinf_model_preset(model, cfg, err, errlen);
		return FAIL(-ENOENT,
			    "model '%s': not a folder with config.json (and not a preset name: "
			    "`zinf` lists presets in its help)",
			    model);
	}
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/config.json", model);
	if (n < 0 || (size_t)n >= sizeof(path))
		return FAIL(-ENAMETOOLONG, "model folder '%s': path too long", model);
	if (access(path, R_OK))
		return FAIL(-ENOENT,
			    "%s: missing: a model folder holds an HF config.json (and optionally "
			    "model.safetensors)",
			    path);
	int rc = zinf_model_config_load(path, cfg, err, errlen);
	if (rc)
		return rc;
	snprintf(path, sizeof(path), "%s/model.safetensors", model);
	if (!access(path, F_OK)) {
		if (weights && (size_t)snprintf(weights, weightslen, "%s", path) >= weightslen)
			return FAIL(-ENAMETOOLONG, "%s: path longer than %zu bytes", path,
				    weightslen);
		return 0;
	}
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", model);
	if (!access(path, F_OK) && weights &&
	    (size_t)snprintf(weights, weightslen, "%s", path) >= weightslen)
		return FAIL(-ENAMETOOLONG, "%s: path longer than %zu bytes", path, weightslen);
	return 0;
}
