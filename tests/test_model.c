/* engine/model: presets against HF parameter counts, layout invariants, init determinism and
 * statistics, config.json and safetensors round trips, malformed inputs refused by name. */
#include "test_util.h"

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>

#include "engine/model.h"
#include "engine/safetensors.h"
#include "model_internal.h"

static char err[1024];

/* ---- presets and layout ---- */

static void
check_layout(const zinf_model_config *c, const zinf_model_layout *lay)
{
	const char *n = c->name;
	T_CHECK_EQ_I64(lay->nblocks, c->n_layer + 2);
	int64_t end = 0;
	for (int b = 0; b < lay->nblocks; b++) {
		T_CHECK(lay->block_offset[b] % ZINF_BLOCK_ALIGN == 0, "%s block %d at %lld", n, b,
			(long long)lay->block_offset[b]);
		T_CHECK(lay->block_numel[b] % ZINF_BLOCK_ALIGN == 0, "%s block %d numel", n, b);
		T_CHECK(lay->block_offset[b] == end, "%s block %d not right after block %d", n, b,
			b - 1);
		end = lay->block_offset[b] + lay->block_numel[b];
	}
	T_CHECK_EQ_I64(end, lay->total_numel);
	for (int l = 1; l < c->n_layer; l++)
		T_CHECK_EQ_I64(lay->block_numel[1 + l], lay->layer_numel);
	T_CHECK_EQ_I64(zinf_layer_base(lay, 0), lay->block_offset[1]);

	/* tensors: in offset order, inside their block, no overlap, aligned unless fused */
	int64_t prev_end = 0, counted = 0;
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *t = &lay->tensors[i];
		int64_t bs = lay->block_offset[t->block], be = bs + lay->block_numel[t->block];
		T_CHECK(t->offset >= prev_end, "%s: %s overlaps the previous tensor", n,
			t->hf_name);
		T_CHECK(t->offset >= bs && t->offset + t->numel <= be, "%s: %s outside block %d", n,
			t->hf_name, t->block);
		bool fused = strstr(t->hf_name, "k_proj") || strstr(t->hf_name, "v_proj") ||
			     strstr(t->hf_name, "up_proj");
		if (fused)
			T_CHECK(t->offset == prev_end, "%s: %s not adjacent to its partner", n,
				t->hf_name);
		else
			T_CHECK(t->offset % ZINF_BLOCK_ALIGN == 0, "%s: %s unaligned", n,
				t->hf_name);
		T_CHECK_EQ_I64(t->numel, t->shape[0] * t->shape[1]);
		T_CHECK(t->decay == (t->ndim == 2), "%s: %s decay flag", n, t->hf_name);
		if (t->hf_transposed) {
			T_CHECK_EQ_I64(t->hf_shape[0], t->shape[1]);
			T_CHECK_EQ_I64(t->hf_shape[1], t->shape[0]);
		} else if (t->ndim == 2) {
			T_CHECK_EQ_I64(t->hf_shape[0], t->hf_rows);
			T_CHECK_EQ_I64(t->hf_shape[1], t->shape[1]);
		}
		counted += t->hf_rows * t->shape[1];
		prev_end = t->offset + t->numel;
	}
	T_CHECK_EQ_I64(counted, lay->n_params);

	/* absolute offsets agree with the tensors */
	const zinf_tensor_desc *wte = &lay->tensors[0];
	T_CHECK_EQ_I64(wte->offset, lay->wte);
	T_CHECK_EQ_I64(wte->shape[0], c->padded_vocab);
	T_CHECK_EQ_I64(wte->hf_rows, c->vocab_size);
	T_CHECK_EQ_I64(lay->lm_head < 0, c->tied);
	int64_t hd = c->head_dim, H = c->n_head, KV = c->n_kv_head, C = c->d_model;
	const zinf_layer_offsets *o = &lay->layer;
	int64_t qkv_end = o->qkv_w + (H + 2 * KV) * hd * C;
	T_CHECK(o->o_w >= qkv_end, "%s: o_proj inside the fused qkv", n);
	if (c->arch == ZINF_ARCH_LLAMA) {
		T_CHECK(o->ln1_b == -1 && o->qkv_b == -1 && o->proj_b == -1, "%s: biases", n);
		T_CHECK(o->proj_w >= o->fc_w + 2 * (int64_t)c->d_ff * C, "%s: gate|up", n);
		T_CHECK_EQ_I64(lay->wpe, -1);
	} else {
		T_CHECK(o->qkv_b >= qkv_end, "%s: qkv bias", n);
		T_CHECK(lay->wpe > lay->wte, "%s: wpe", n);
	}
	/* the layer offsets point at the tensors of every layer */
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *t = &lay->tensors[i];
		if (t->block < 1 || t->block > c->n_layer)
			continue;
		int64_t rel = t->offset - lay->block_offset[t->block];
		bool known = rel == o->ln1_w || rel == o->ln1_b || rel == o->qkv_w ||
			     rel == o->qkv_b || rel == o->o_w || rel == o->o_b || rel == o->ln2_w ||
			     rel == o->ln2_b || rel == o->fc_w || rel == o->fc_b ||
			     rel == o->proj_w || rel == o->proj_b;
		bool fused = strstr(t->hf_name, "k_proj") || strstr(t->hf_name, "v_proj") ||
			     strstr(t->hf_name, "up_proj");
		T_CHECK(known != fused, "%s: %s at +%lld is not in zinf_layer_offsets", n,
			t->hf_name, (long long)rel);
	}
}

static void
test_presets(void)
{
	static const struct {
		const char *name;
		int64_t n_params;
	} want[] = {
		{"gpt2-124m", 124439808LL},  {"gpt2-350m", 354823168LL},
		{"gpt2-1.5b", 1557611200LL}, {"llama-1b", 1235814400LL},
		{"llama-3b", 3212749824LL},  {"llama-7b", 6738415616LL},
		{"gpt2-tiny", -1},           {"llama-tiny", -1},
	};
	int n = 0;
	for (const char *const *p = zinf_model_preset_names(); *p; p++)
		n++;
	T_CHECK_EQ_I64(n, (int)(sizeof(want) / sizeof(want[0])));
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		zinf_model_config c;
		zinf_model_layout lay;
		int rc = zinf_model_preset(want[i].name, &c, err, sizeof(err));
		T_CHECK(rc == 0, "%s: %s", want[i].name, err);
		if (rc)
			continue;
		rc = zinf_model_layout_init(&c, &lay, err, sizeof(err));
		T_CHECK(rc == 0, "%s: %s", want[i].name, err);
		if (rc)
			continue;
		if (want[i].n_params > 0)
			T_CHECK(lay.n_params == want[i].n_params, "%s: n_params %lld, HF has %lld",
				want[i].name, (long long)lay.n_params, (long long)want[i].n_params);
		T_CHECK(c.head_dim * c.n_head == c.d_model || c.arch == ZINF_ARCH_LLAMA,
			"%s head_dim", c.name);
		if (strstr(want[i].name, "tiny"))
			T_CHECK_EQ_I64(c.head_dim, 64);
		check_layout(&c, &lay);
		zinf_model_layout_free(&lay);
	}
	zinf_model_config c;
	T_CHECK(zinf_model_preset("gpt2-13b", &c, err, sizeof(err)) == -ENOENT, "unknown");
	T_CHECK(strstr(err, "gpt2-13b") && strstr(err, "llama-tiny"), "message: %s", err);

	/* GPT-2 124M: padded vocab and FLOPs (PaLM formula, computed by hand) */
	zinf_model_preset("gpt2-124m", &c, err, sizeof(err));
	T_CHECK_EQ_I64(c.padded_vocab, 50304);
	double N = 12.0 * (768.0 * 2304 + 768.0 * 768 + 2.0 * 768 * 3072) + 50257.0 * 768;
	double want_f = 6.0 * N + 12.0 * 12 * 1024 * 768;
	T_CHECK(fabs(zinf_model_flops_per_token(&c, 1024) - want_f) < 1.0, "flops %.0f vs %.0f",
		zinf_model_flops_per_token(&c, 1024), want_f);
	zinf_model_preset("llama-1b", &c, err, sizeof(err));
	T_CHECK(c.rope_scaling == ZINF_ROPE_LLAMA3 && c.rope_factor == 32.0f &&
			c.rope_original_max_pos == 8192 && c.tied && c.bos_token_id == 128000,
		"llama-1b rope/tied/bos");

	/* validation */
	zinf_model_preset("llama-tiny", &c, err, sizeof(err));
	c.n_kv_head = 3;
	T_CHECK(zinf_model_config_validate(&c, err, sizeof(err)) == -EINVAL, "kv 3");
	T_CHECK(strstr(err, "num_key_value_heads 3") != NULL, "message: %s", err);
	zinf_model_preset("gpt2-tiny", &c, err, sizeof(err));
	c.n_layer = 0;
	T_CHECK(zinf_model_config_validate(&c, err, sizeof(err)) == -EINVAL, "L 0");
	T_CHECK(strstr(err, "n_layer") != NULL, "message: %s", err);
}

/* ---- init ---- */

static void
test_init(void)
{
	zinf_model_config c;
	zinf_model_layout lay;
	for (int arch = 0; arch < 2; arch++) {
		zinf_model_preset(arch ? "llama-tiny" : "gpt2-tiny", &c, err, sizeof(err));
		c.n_layer = 8; /* enough elements for the statistics */
		if (zinf_model_layout_init(&c, &lay, err, sizeof(err))) {
			T_CHECK(0, "%s", err);
			return;
		}
		size_t n = (size_t)lay.total_numel;
		float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
		memset(a, 0x7f, n * sizeof(float)); /* garbage that init must overwrite */
		zinf_model_init_params(&c, &lay, 1234, a);
		zinf_model_init_params(&c, &lay, 1234, b);
		T_CHECK(!memcmp(a, b, n * sizeof(float)), "%s: init not deterministic", c.name);
		zinf_model_init_params(&c, &lay, 1235, b);
		T_CHECK(memcmp(a, b, n * sizeof(float)) != 0, "%s: seed ignored", c.name);
		/* init_range (fast_init, one sub-group at a time): windows that cut tensors, odd
		 * offsets, the padded tail; garbage in dst must be overwritten */
		int64_t win = 100003;
		for (int64_t off = 0; off < lay.total_numel; off += win) {
			int64_t len = off + win < lay.total_numel ? win : lay.total_numel - off;
			memset(b, 0x7f, (size_t)len * sizeof(float));
			zinf_model_init_range(&c, &lay, 1234, off, len, b);
			if (memcmp(a + off, b, (size_t)len * sizeof(float))) {
				T_CHECK(0, "%s: init_range at %lld differs from init_params", c.name,
					(long long)off);
				break;
			}
		}

		/* LLaMA: a layer's tensors do not depend on how many layers follow (GPT-2's
		 * c_proj std does, by design) */
		c.n_layer = 2;
		zinf_model_layout lay2;
		zinf_model_layout_init(&c, &lay2, err, sizeof(err));
		float *s = malloc((size_t)lay2.total_numel * sizeof(float));
		zinf_model_init_params(&c, &lay2, 1234, s);
		T_CHECK(arch == 0 || !memcmp(s + zinf_layer_base(&lay2, 1),
					     a + zinf_layer_base(&lay, 1),
					     (size_t)lay.layer_numel * sizeof(float)),
			"%s: layer 1 differs between 2 and 8 layers", c.name);
		free(s);
		zinf_model_layout_free(&lay2);
		c.n_layer = 8;

		/* statistics per tensor; padding zero */
		int64_t covered = 0;
		for (int i = 0; i < lay.ntensors; i++) {
			const zinf_tensor_desc *t = &lay.tensors[i];
			const float *p = a + t->offset;
			int64_t live = t->hf_rows * t->shape[1];
			covered += t->numel;
			for (int64_t j = live; j < t->numel; j++)
				if (p[j] != 0.0f) {
					T_CHECK(0, "%s: padding row of %s not zero", c.name,
						t->hf_name);
					break;
				}
			if (t->ndim == 1) {
				float want = strstr(t->hf_name, "bias") ? 0.0f : 1.0f;
				for (int64_t j = 0; j < live; j++)
					if (p[j] != want) {
						T_CHECK(0, "%s: %s[%lld] = %g, want %g", c.name,
							t->hf_name, (long long)j, p[j], want);
						break;
					}
				continue;
			}
			double sum = 0, sq = 0;
			for (int64_t j = 0; j < live; j++) {
				sum += p[j];
				sq += (double)p[j] * p[j];
			}
			double mean = sum / live, sd = sqrt(sq / live - mean * mean);
			double want = c.init_std;
			if (arch == 0 && strstr(t->hf_name, "c_proj.weight"))
				want /= sqrt(2.0 * c.n_layer);
			/* 5 sigma of the estimators at this size */
			double tol_sd = 5.0 * want / sqrt(2.0 * live);
			double tol_mean = 5.0 * want / sqrt((double)live);
			T_CHECK(fabs(sd - want) < tol_sd, "%s: %s std %g, want %g", c.name,
				t->hf_name, sd, want);
			T_CHECK(fabs(mean) < tol_mean, "%s: %s mean %g", c.name, t->hf_name, mean);
		}
		/* gaps between tensors are zero */
		int64_t zeros_in_gaps = 0, gaps = lay.total_numel - covered;
		int64_t prev = 0;
		for (int i = 0; i < lay.ntensors; i++) {
			for (int64_t j = prev; j < lay.tensors[i].offset; j++)
				zeros_in_gaps += a[j] == 0.0f;
			prev = lay.tensors[i].offset + lay.tensors[i].numel;
		}
		for (int64_t j = prev; j < lay.total_numel; j++)
			zeros_in_gaps += a[j] == 0.0f;
		T_CHECK_EQ_I64(zeros_in_gaps, gaps);
		free(a);
		free(b);
		zinf_model_layout_free(&lay);
	}
}

/* ---- fp32 <-> 16-bit conversions ---- */

static float
f32_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void
test_convert(void)
{
	/* bf16: ties go to the even mantissa */
	T_CHECK_EQ_I64(zinf_f32_to_bf16(1.0f), 0x3f80);
	T_CHECK_EQ_I64(zinf_f32_to_bf16(f32_of(0x3f808000)), 0x3f80); /* 1 + 2^-8: tie, even */
	T_CHECK_EQ_I64(zinf_f32_to_bf16(f32_of(0x3f818000)), 0x3f82); /* 1 + 3*2^-8: tie, up */
	T_CHECK_EQ_I64(zinf_f32_to_bf16(f32_of(0x3f808001)), 0x3f81); /* above the tie */
	T_CHECK_EQ_I64(zinf_f32_to_bf16(-2.0f), 0xc000);
	T_CHECK(isnan(zinf_bf16_to_f32(zinf_f32_to_bf16(NAN))), "bf16 NaN");
	T_CHECK_EQ_I64(zinf_f32_to_bf16(f32_of(0x7f7fffff)), 0x7f80); /* FLT_MAX -> inf */
	/* f16 */
	T_CHECK_EQ_I64(zinf_f32_to_f16(1.0f), 0x3c00);
	T_CHECK_EQ_I64(zinf_f32_to_f16(65504.0f), 0x7bff);
	T_CHECK_EQ_I64(zinf_f32_to_f16(65519.0f), 0x7bff);
	T_CHECK_EQ_I64(zinf_f32_to_f16(65520.0f), 0x7c00);
	T_CHECK_EQ_I64(zinf_f32_to_f16(-INFINITY), 0xfc00);
	T_CHECK_EQ_I64(zinf_f32_to_f16(0x1p-24f), 0x0001);
	T_CHECK_EQ_I64(zinf_f32_to_f16(0x1p-25f), 0x0000);         /* tie to even 0 */
	T_CHECK_EQ_I64(zinf_f32_to_f16(0x1.8p-25f), 0x0001);       /* above the tie */
	T_CHECK_EQ_I64(zinf_f32_to_f16(0x3p-24f / 2.0f), 0x0002);   /* 1.5 units: tie, up */
	T_CHECK_EQ_I64(zinf_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);  /* tie, even */
	T_CHECK_EQ_I64(zinf_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);  /* tie, up */
	T_CHECK_EQ_I64(zinf_f32_to_f16(0x1.ffcp-15f), 0x0400);     /* rounds up to the min normal */
	T_CHECK(isnan(zinf_f16_to_f32(zinf_f32_to_f16(NAN))), "f16 NaN");
	/* every 16-bit value survives the trip through fp32 */
	int bad_b = 0, bad_h = 0;
	for (uint32_t v = 0; v < 65536; v++) {
		float b = zinf_bf16_to_f32((uint16_t)v), h = zinf_f16_to_f32((uint16_t)v);
		if (!isnan(b) && zinf_f32_to_bf16(b) != v)
			bad_b++;
		if (!isnan(h) && zinf_f32_to_f16(h) != v)
			bad_h++;
		if (isnan(h) != isnan(zinf_f16_to_f32(zinf_f32_to_f16(h))))
			bad_h++;
	}
	T_CHECK(!bad_b && !bad_h, "round trips: %d bf16, %d f16 values differ", bad_b, bad_h);
	/* f16 decode of known values */
	T_CHECK(zinf_f16_to_f32(0x3555) == 0x1.554p-2f, "f16 0x3555");
	T_CHECK(zinf_f16_to_f32(0x0001) == 0x1p-24f, "f16 min subnormal");
	T_CHECK(zinf_f16_to_f32(0x8400) == -0x1p-14f, "f16 -min normal");
}

/* ---- files ---- */

static char *tmpdir;

static const char *
tpath(const char *name)
{
	static char buf[4][4096];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, name);
	return buf[k];
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		abort();
	}
	fputs(text, f);
	fclose(f);
}

/* A safetensors file from a header text and data_len zero bytes (malformed ones on purpose);
 * hlen_override != 0 writes that header length instead of the real one. */
static void
write_raw_st(const char *path, const char *header, size_t data_len, uint64_t hlen_override)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		perror(path);
		abort();
	}
	uint64_t n = hlen_override ? hlen_override : strlen(header);
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)(n >> (8 * i));
	fwrite(len8, 1, 8, f);
	fputs(header, f);
	for (size_t i = 0; i < data_len; i++)
		fputc(0, f);
	fclose(f);
}

static void
same_config(const zinf_model_config *a, const zinf_model_config *b, const char *what)
{
	T_CHECK(a->arch == b->arch && a->vocab_size == b->vocab_size &&
			a->padded_vocab == b->padded_vocab && a->max_seq == b->max_seq &&
			a->n_layer == b->n_layer && a->n_head == b->n_head &&
			a->n_kv_head == b->n_kv_head && a->d_model == b->d_model &&
			a->d_ff == b->d_ff && a->head_dim == b->head_dim,
		"%s: dimensions differ", what);
	T_CHECK(a->norm_eps == b->norm_eps && a->init_std == b->init_std && a->tied == b->tied,
		"%s: eps %g/%g std %g/%g tied %d/%d", what, a->norm_eps, b->norm_eps, a->init_std,
		b->init_std, a->tied, b->tied);
	T_CHECK(a->rope_theta == b->rope_theta && a->rope_scaling == b->rope_scaling &&
			a->rope_factor == b->rope_factor &&
			a->rope_low_freq_factor == b->rope_low_freq_factor &&
			a->rope_high_freq_factor == b->rope_high_freq_factor &&
			a->rope_original_max_pos == b->rope_original_max_pos,
		"%s: rope differs", what);
	T_CHECK(a->bos_token_id == b->bos_token_id && a->eos_token_id == b->eos_token_id,
		"%s: bos %d/%d eos %d/%d", what, a->bos_token_id, b->bos_token_id,
		a->eos_token_id, b->eos_token_id);
}

/* The config.json of openai-community/gpt2 and of meta-llama/Llama-3.2-1B (fields as
 * published; the ones zinf ignores kept to show they are accepted). */
static const char gpt2_hf[] =
	"{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"],"
	" \"attn_pdrop\": 0.1, \"bos_token_id\": 50256, \"embd_pdrop\": 0.1,"
	" \"eos_token_id\": 50256, \"initializer_range\": 0.02, \"layer_norm_epsilon\": 1e-05,"
	" \"model_type\": \"gpt2\", \"n_ctx\": 1024, \"n_embd\": 768, \"n_head\": 12,"
	" \"n_layer\": 12, \"n_positions\": 1024, \"resid_pdrop\": 0.1,"
	" \"summary_activation\": null, \"summary_first_dropout\": 0.1,"
	" \"summary_proj_to_labels\": true, \"summary_type\": \"cls_index\","
	" \"summary_use_proj\": true, \"task_specific_params\": {\"text-generation\":"
	" {\"do_sample\": true, \"max_length\": 50}}, \"vocab_size\": 50257}";
static const char llama1b_hf[] =
	"{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false,"
	" \"attention_dropout\": 0.0, \"bos_token_id\": 128000, \"eos_token_id\": 128001,"
	" \"head_dim\": 64, \"hidden_act\": \"silu\", \"hidden_size\": 2048,"
	" \"initializer_range\": 0.02, \"intermediate_size\": 8192,"
	" \"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\","
	" \"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8,"
	" \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 32.0,"
	" \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
	" \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
	" \"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
	" \"transformers_version\": \"4.45.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}";

/* drops whitespace (the configs' strings hold none) */
static void
squeeze(char *s)
{
	char *d = s;
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n')
			*d++ = *s;
	*d = 0;
}

static void
test_config_json(void)
{
	zinf_model_config a, b;
	/* every preset: save -> load gives the same config */
	for (const char *const *p = zinf_model_preset_names(); *p; p++) {
		zinf_model_preset(*p, &a, err, sizeof(err));
		int rc = zinf_model_config_save(&a, tpath("config.json"), err, sizeof(err));
		T_CHECK(rc == 0, "%s: save: %s", *p, err);
		rc = zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err));
		T_CHECK(rc == 0, "%s: load: %s", *p, err);
		same_config(&a, &b, *p);
		T_CHECK(!strcmp(a.name, b.name), "%s: name %s", *p, b.name);
	}
	/* what HF reads (whitespace dropped before matching) */
	char *text;
	size_t len;
	zinf_model_preset("llama-1b", &a, err, sizeof(err));
	zinf_model_config_save(&a, tpath("config.json"), err, sizeof(err));
	if (!zinf_read_file(tpath("config.json"), 1 << 20, &text, &len, err, sizeof(err))) {
		squeeze(text);
		T_CHECK(strstr(text, "\"LlamaForCausalLM\"") && strstr(text, "\"model_type\":\"llama\"") &&
				strstr(text, "\"rms_norm_eps\":1e-05") &&
				strstr(text, "\"rope_theta\":500000.0") &&
				strstr(text, "\"rope_type\":\"llama3\"") &&
				strstr(text, "\"factor\":32.0"),
			"llama config.json text:\n%s", text);
		free(text);
	}
	zinf_model_preset("gpt2-124m", &a, err, sizeof(err));
	zinf_model_config_save(&a, tpath("config.json"), err, sizeof(err));
	if (!zinf_read_file(tpath("config.json"), 1 << 20, &text, &len, err, sizeof(err))) {
		squeeze(text);
		T_CHECK(strstr(text, "\"GPT2LMHeadModel\"") && strstr(text, "\"n_inner\":null") &&
				strstr(text, "\"layer_norm_epsilon\":1e-05") &&
				strstr(text, "\"activation_function\":\"gelu_new\""),
			"gpt2 config.json text:\n%s", text);
		free(text);
	}

	/* the published configs give the presets */
	write_text(tpath("config.json"), gpt2_hf);
	T_CHECK(zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err)) == 0, "%s",
		err);
	zinf_model_preset("gpt2-124m", &a, err, sizeof(err));
	same_config(&a, &b, "openai-community/gpt2");
	write_text(tpath("config.json"), llama1b_hf);
	T_CHECK(zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err)) == 0, "%s",
		err);
	zinf_model_preset("llama-1b", &a, err, sizeof(err));
	same_config(&a, &b, "Llama-3.2-1B");

	/* transformers 5 writes rope_parameters (this is its save of the Llama-3.2-1B config) */
	write_text(tpath("config.json"),
		   "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false,"
		   " \"attention_dropout\": 0.0, \"bos_token_id\": 128000, \"eos_token_id\": 128001,"
		   " \"head_dim\": 64, \"hidden_act\": \"silu\", \"hidden_size\": 2048,"
		   " \"initializer_range\": 0.02, \"intermediate_size\": 8192,"
		   " \"max_position_embeddings\": 131072, \"mlp_bias\": false,"
		   " \"model_type\": \"llama\", \"num_attention_heads\": 32,"
		   " \"num_hidden_layers\": 16, \"num_key_value_heads\": 8, \"pad_token_id\": null,"
		   " \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_parameters\": {"
		   "\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
		   " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0,"
		   " \"rope_type\": \"llama3\"}, \"tie_word_embeddings\": true,"
		   " \"transformers_version\": \"5.24.0\", \"use_cache\": true,"
		   " \"vocab_size\": 128256}");
	T_CHECK(zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err)) == 0, "%s",
		err);
	same_config(&a, &b, "Llama-3.2-1B via transformers 5");

	/* Llama 3.1 style eos list; legacy rope "type"; defaults for absent fields */
	write_text(tpath("config.json"),
		   "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 512,"
		   " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 512,"
		   " \"eos_token_id\": [7, 8, 9], \"rope_scaling\": {\"type\": \"llama3\","
		   " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
		   " \"original_max_position_embeddings\": 8192}}");
	T_CHECK(zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err)) == 0, "%s",
		err);
	T_CHECK(b.eos_token_id == 7 && b.n_kv_head == 4 && b.head_dim == 64 && !b.tied &&
			b.rope_scaling == ZINF_ROPE_LLAMA3 && b.rope_factor == 8.0f &&
			b.norm_eps == 1e-6f && b.rope_theta == 10000.0f,
		"llama defaults: eos %d kv %d hd %d", b.eos_token_id, b.n_kv_head, b.head_dim);

	/* refused, naming the field and the value */
	static const struct {
		const char *json, *want1, *want2;
	} bad[] = {
		{"{\"model_type\": \"llama\", \"attention_bias\": true}", "attention_bias", "true"},
		{"{\"model_type\": \"llama\", \"mlp_bias\": true}", "mlp_bias", "true"},
		{"{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"yarn\", "
		 "\"factor\": 4.0}}",
		 "rope_scaling.rope_type", "yarn"},
		{"{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_type\": \"linear\", "
		 "\"rope_theta\": 10000.0, \"factor\": 4.0}}",
		 "rope_parameters.rope_type", "linear"},
		{"{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\"}}",
		 "rope_scaling.factor", "missing"},
		{"{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "hidden_act", "gelu"},
		{"{\"model_type\": \"gpt2\", \"activation_function\": \"relu\"}",
		 "activation_function", "relu"},
		{"{\"model_type\": \"gpt2\", \"tie_word_embeddings\": false}", "tie_word_embeddings",
		 "false"},
		{"{\"model_type\": \"gpt2\", \"scale_attn_by_inverse_layer_idx\": true}",
		 "scale_attn_by_inverse_layer_idx", "true"},
		{"{\"model_type\": \"mistral\"}", "model_type", "mistral"},
		{"{\"n_layer\": 12}", "model_type", "missing"},
		{"{\"model_type\": \"gpt2\", \"n_layer\": \"12\"}", "n_layer", "a string"},
		{"{\"model_type\": \"gpt2\", \"n_head\": 2.5}", "n_head", "fractional"},
		{"{\"model_type\": \"gpt2\", \"n_embd\": 100, \"n_head\": 12}", "n_embd", "100"},
		{"{\"model_type\": \"llama\", \"num_key_value_heads\": 5}", "num_key_value_heads 5",
		 "num_attention_heads 32"},
		{"{\"model_type\": \"llama\", \"num_hidden_layers\": 0}", "num_hidden_layers", "0"},
		{"{\"model_type\": \"gpt2\", \"n_layer\": 12,", "malformed JSON", "config.json"},
		{"[1, 2]", "not an object", "config.json"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_text(tpath("config.json"), bad[i].json);
		err[0] = 0;
		int rc = zinf_model_config_load(tpath("config.json"), &b, err, sizeof(err));
		T_CHECK(rc < 0, "accepted: %s", bad[i].json);
		if (getenv("T_VERBOSE"))
			printf("%s\n", err);
		T_CHECK(strstr(err, bad[i].want1) && strstr(err, bad[i].want2) &&
				strstr(err, "config.json"),
			"%s: message lacks '%s'/'%s': %s", bad[i].json, bad[i].want1,
			bad[i].want2, err);
	}

	/* resolve: preset, folder, folder without config.json */
	char w[4096];
	T_CHECK(zinf_model_resolve("llama-tiny", &b, w, sizeof(w), err, sizeof(err)) == 0 &&
			!w[0] && b.arch == ZINF_ARCH_LLAMA,
		"resolve preset: %s", err);
	mkdir(tpath("m"), 0755);
	zinf_model_preset("gpt2-tiny", &a, err, sizeof(err));
	zinf_model_config_save(&a, tpath("m/config.json"), err, sizeof(err));
	T_CHECK(zinf_model_resolve(tpath("m"), &b, w, sizeof(w), err, sizeof(err)) == 0 && !w[0],
		"resolve folder: %s", err);
	same_config(&a, &b, "resolve");
	write_text(tpath("m/model.safetensors"), "");
	T_CHECK(zinf_model_resolve(tpath("m"), &b, w, sizeof(w), err, sizeof(err)) == 0 &&
			!strcmp(w, tpath("m/model.safetensors")),
		"resolve weights: %s", w);
	unlink(tpath("m/model.safetensors"));
	write_text(tpath("m/model.safetensors.index.json"), "{}");
	T_CHECK(zinf_model_resolve(tpath("m"), &b, w, sizeof(w), err, sizeof(err)) == 0 &&
			!strcmp(w, tpath("m/model.safetensors.index.json")),
		"resolve sharded weights: %s", w);
	mkdir(tpath("empty"), 0755);
	T_CHECK(zinf_model_resolve(tpath("empty"), &b, w, sizeof(w), err, sizeof(err)) == -ENOENT &&
			strstr(err, "config.json"),
		"resolve empty folder: %s", err);
	T_CHECK(zinf_model_resolve("no-such-model", &b, w, sizeof(w), err, sizeof(err)) ==
				-ENOENT &&
			strstr(err, "no-such-model") && strstr(err, "gpt2-124m"),
		"resolve unknown: %s", err);
}

/* ---- safetensors ---- */

/* params as they come back through a 16-bit file */
static float
through(zinf_save_dtype d, float v)
{
	if (d == ZINF_SAVE_BF16)
		return zinf_bf16_to_f32(zinf_f32_to_bf16(v));
	if (d == ZINF_SAVE_F16)
		return zinf_f16_to_f32(zinf_f32_to_f16(v));
	return v;
}

static void
test_roundtrip(const char *preset)
{
	zinf_model_config c;
	zinf_model_layout lay;
	zinf_model_preset(preset, &c, err, sizeof(err));
	if (zinf_model_layout_init(&c, &lay, err, sizeof(err))) {
		T_CHECK(0, "%s", err);
		return;
	}
	size_t n = (size_t)lay.total_numel;
	float *p = malloc(n * 4), *q = malloc(n * 4);
	zinf_model_init_params(&c, &lay, 7, p);
	const char *path = tpath("model.safetensors");
	for (int d = ZINF_SAVE_F32; d <= ZINF_SAVE_F16; d++) {
		int rc = zinf_model_save_safetensors(path, &c, &lay, p, (zinf_save_dtype)d, err,
						     sizeof(err));
		T_CHECK(rc == 0, "%s save dtype %d: %s", preset, d, err);
		memset(q, 0x55, n * 4);
		rc = zinf_model_load_safetensors(path, &c, &lay, q, err, sizeof(err));
		T_CHECK(rc == 0, "%s load dtype %d: %s", preset, d, err);
		size_t diff = 0;
		for (size_t i = 0; i < n; i++) {
			float want = through((zinf_save_dtype)d, p[i]);
			diff += memcmp(&q[i], &want, 4) != 0;
		}
		T_CHECK(diff == 0, "%s dtype %d: %zu of %zu values differ", preset, d, diff, n);
	}
	/* the file as HF sees it: names, HF shapes, Conv1D transposed, no tied lm_head */
	zinf_model_save_safetensors(path, &c, &lay, p, ZINF_SAVE_F32, err, sizeof(err));
	zinf_st_file f;
	if (zinf_st_open(path, &f, err, sizeof(err))) {
		T_CHECK(0, "%s", err);
		goto out;
	}
	T_CHECK_EQ_I64(f.ntensors, lay.ntensors);
	T_CHECK(f.data_start % 8 == 0, "header not padded to 8: %llu",
		(unsigned long long)f.data_start);
	T_CHECK(!zinf_st_find(&f, "lm_head.weight") == c.tied, "lm_head present iff untied");
	int64_t C = c.d_model;
	if (c.arch == ZINF_ARCH_GPT2) {
		const zinf_st_tensor *t = zinf_st_find(&f, "transformer.h.1.attn.c_attn.weight");
		T_CHECK(t && t->ndim == 2 && t->shape[0] == C && t->shape[1] == 3 * C,
			"c_attn shape");
		const zinf_st_tensor *e = zinf_st_find(&f, "transformer.wte.weight");
		T_CHECK(e && e->shape[0] == c.vocab_size, "wte rows");
		if (t) {
			/* file [in=i][out=o] == zinf [o][i] */
			const float *w = p + zinf_layer_base(&lay, 1) + lay.layer.qkv_w;
			int64_t i = 5, o = 3 * C - 2;
			float v;
			zinf_st_read(&f, t, (uint64_t)(i * 3 * C + o) * 4, &v, 4, err, sizeof(err));
			T_CHECK(v == w[o * C + i], "Conv1D transpose: %g vs %g", v, w[o * C + i]);
		}
	} else {
		const zinf_st_tensor *t = zinf_st_find(&f, "model.layers.1.self_attn.k_proj.weight");
		T_CHECK(t && t->shape[0] == (int64_t)c.n_kv_head * c.head_dim && t->shape[1] == C,
			"k_proj shape");
		T_CHECK(zinf_st_find(&f, "model.layers.0.mlp.up_proj.weight") != NULL, "up_proj");
	}
	zinf_st_close(&f);
out:
	free(p);
	free(q);
	zinf_model_layout_free(&lay);
}

/* Writes the tensors of lay to path like zinf does, but with names passed through rename()
 * (NULL drops the tensor), a shape override for one tensor, and extra 1-element tensors. */
typedef const char *(*rename_fn)(const char *name, char *buf);

static void
write_variant(const char *path, const zinf_model_layout *lay, const float *p, rename_fn rn,
	      const char *reshape, const char *const *extra)
{
	zinf_st_spec specs[128];
	int n = 0;
	char names[128][128];
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *t = &lay->tensors[i];
		const char *nm = rn ? rn(t->hf_name, names[n]) : t->hf_name;
		if (!nm)
			continue;
		specs[n] = (zinf_st_spec){.name = nm, .dtype = ZINF_ST_F32, .ndim = t->ndim,
					  .shape = {t->hf_shape[0], t->hf_shape[1]}};
		if (reshape && !strcmp(t->hf_name, reshape))
			specs[n].shape[0]--;
		n++;
	}
	for (int i = 0; extra && extra[i]; i++)
		specs[n++] = (zinf_st_spec){.name = extra[i], .dtype = ZINF_ST_F32, .ndim = 1,
					    .shape = {1}};
	zinf_st_writer w;
	if (zinf_st_writer_open(&w, path, specs, n, NULL, err, sizeof(err))) {
		T_CHECK(0, "%s", err);
		return;
	}
	int k = 0;
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *t = &lay->tensors[i];
		if (rn && !rn(t->hf_name, names[127]))
			continue;
		int64_t cnt = specs[k].shape[0] * (t->ndim == 2 ? specs[k].shape[1] : 1);
		float *tmp = calloc((size_t)cnt, 4);
		if (cnt != t->hf_rows * t->shape[1]) {
			/* the reshaped tensor: zeros */
		} else if (t->hf_transposed) {
			int64_t in = t->shape[1], out = t->shape[0];
			for (int64_t a = 0; a < in; a++)
				for (int64_t b = 0; b < out; b++)
					tmp[a * out + b] = p[t->offset + b * in + a];
		} else {
			memcpy(tmp, p + t->offset, (size_t)cnt * 4);
		}
		zinf_st_writer_write(&w, tmp, (size_t)cnt * 4, err, sizeof(err));
		free(tmp);
		k++;
	}
	float z = 0;
	for (int i = 0; extra && extra[i]; i++)
		zinf_st_writer_write(&w, &z, 4, err, sizeof(err));
	T_CHECK(zinf_st_writer_finish(&w, err, sizeof(err)) == 0, "%s", err);
}

static const char *
strip_transformer(const char *name, char *buf)
{
	snprintf(buf, 128, "%s", strncmp(name, "transformer.", 12) ? name : name + 12);
	return buf;
}

static const char *
shard1(const char *name, char *buf)
{
	(void)buf;
	return strstr(name, ".h.1.") || strstr(name, "ln_f") ? NULL : name;
}

static const char *
shard2(const char *name, char *buf)
{
	return shard1(name, buf) ? NULL : name;
}

static const char *drop_name;

static const char *
drop_one(const char *name, char *buf)
{
	(void)buf;
	return strcmp(name, drop_name) ? name : NULL;
}

/* load must fail with rc < 0, a message holding want1 and want2, and params untouched */
static void
expect_refused(const char *path, const zinf_model_config *c, const zinf_model_layout *lay,
	       const char *want1, const char *want2, const char *what)
{
	size_t n = (size_t)lay->total_numel;
	float *q = malloc(n * 4);
	memset(q, 0x55, n * 4);
	err[0] = 0;
	int rc = zinf_model_load_safetensors(path, c, lay, q, err, sizeof(err));
	T_CHECK(rc < 0, "%s: accepted", what);
	if (getenv("T_VERBOSE"))
		printf("%s: %s\n", what, err);
	T_CHECK(strstr(err, want1) && (!want2 || strstr(err, want2)) && strstr(err, path),
		"%s: message lacks '%s'/'%s' or the path: %s", what, want1, want2 ? want2 : "",
		err);
	size_t touched = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &q[i], 4);
		touched += u != 0x55555555u;
	}
	T_CHECK(touched == 0, "%s: a refused load wrote %zu values", what, touched);
	free(q);
}

static void
test_load_variants(void)
{
	zinf_model_config c, cl;
	zinf_model_layout lay, layl;
	zinf_model_preset("gpt2-tiny", &c, err, sizeof(err));
	zinf_model_preset("llama-tiny", &cl, err, sizeof(err));
	if (zinf_model_layout_init(&c, &lay, err, sizeof(err)) ||
	    zinf_model_layout_init(&cl, &layl, err, sizeof(err))) {
		T_CHECK(0, "%s", err);
		return;
	}
	size_t n = (size_t)lay.total_numel;
	float *p = malloc(n * 4), *q = malloc(n * 4);
	zinf_model_init_params(&c, &lay, 3, p);
	char path[4096]; /* tpath's buffers rotate */
	snprintf(path, sizeof(path), "%s", tpath("v.safetensors"));

	/* the hub's gpt2 file: no "transformer." prefix, attn.bias buffers, a tied lm_head */
	static const char *const extras[] = {"h.0.attn.bias", "h.1.attn.masked_bias",
					     "lm_head.weight", NULL};
	write_variant(path, &lay, p, strip_transformer, NULL, extras);
	T_CHECK(zinf_model_load_safetensors(path, &c, &lay, q, err, sizeof(err)) == 0, "%s",
		err);
	T_CHECK(!memcmp(p, q, n * 4), "hub-style gpt2 file loads other values");

	/* sharded: layer 1 and the head in a second file, named by an index */
	write_variant(tpath("s1.safetensors"), &lay, p, shard1, NULL, extras);
	write_variant(tpath("s2.safetensors"), &lay, p, shard2, NULL, NULL);
	write_text(tpath("m.safetensors.index.json"),
		   "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {"
		   "\"transformer.wte.weight\": \"s1.safetensors\","
		   " \"transformer.h.1.ln_1.weight\": \"s2.safetensors\","
		   " \"transformer.h.0.ln_1.weight\": \"s1.safetensors\"}}");
	memset(q, 0, n * 4);
	T_CHECK(zinf_model_load_safetensors(tpath("m.safetensors.index.json"), &c, &lay, q, err,
					    sizeof(err)) == 0,
		"%s", err);
	T_CHECK(!memcmp(p, q, n * 4), "sharded load gives other values");
	unlink(tpath("s2.safetensors"));
	expect_refused(tpath("m.safetensors.index.json"), &c, &lay, "s2.safetensors",
		       "No such file", "missing shard");
	write_variant(tpath("s2.safetensors"), &lay, p, shard2, NULL, NULL);
	write_text(tpath("m.safetensors.index.json"),
		   "{\"weight_map\": {\"transformer.wte.weight\": \"s1.safetensors\"}}");
	expect_refused(tpath("m.safetensors.index.json"), &c, &lay,
		       "transformer.h.1.ln_1.weight", "missing", "shard left out of the index");

	/* missing tensor, wrong shape, unexpected tensor */
	drop_name = "transformer.h.1.mlp.c_fc.bias";
	write_variant(path, &lay, p, drop_one, NULL, NULL);
	expect_refused(path, &c, &lay, "transformer.h.1.mlp.c_fc.bias", "missing", "missing");
	write_variant(path, &lay, p, NULL, "transformer.h.0.attn.c_proj.weight", NULL);
	expect_refused(path, &c, &lay, "transformer.h.0.attn.c_proj.weight", "[127, 128]",
		       "wrong shape");
	static const char *const stray[] = {"transformer.h.2.ln_1.weight", NULL};
	write_variant(path, &lay, p, NULL, NULL, stray);
	expect_refused(path, &c, &lay, "transformer.h.2.ln_1.weight", "not part", "stray");

	/* untied LLaMA without lm_head */
	size_t nl = (size_t)layl.total_numel;
	float *pl = malloc(nl * 4);
	zinf_model_init_params(&cl, &layl, 3, pl);
	drop_name = "lm_head.weight";
	write_variant(path, &layl, pl, drop_one, NULL, NULL);
	expect_refused(path, &cl, &layl, "lm_head.weight", "tie_word_embeddings",
		       "llama lm_head");
	/* gpt2 weights under a llama config */
	write_variant(path, &lay, p, NULL, NULL, NULL);
	expect_refused(path, &cl, &layl, "model.embed_tokens.weight", "missing", "family");

	/* truncated: a good file minus its last 100 bytes */
	zinf_model_save_safetensors(path, &c, &lay, p, ZINF_SAVE_BF16, err, sizeof(err));
	struct stat st;
	stat(path, &st);
	T_CHECK(truncate(path, st.st_size - 100) == 0, "truncate");
	expect_refused(path, &c, &lay, "transformer.ln_f.bias", "truncated", "truncated");

	/* malformed headers */
	write_raw_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], ", 0, 0);
	expect_refused(path, &c, &lay, "header", "JSON", "bad header JSON");
	write_raw_st(path, "{}", 16, 1000000);
	expect_refused(path, &c, &lay, "header length 1000000", "end of the", "length > file");
	write_raw_st(path, "{}", 0, (uint64_t)1 << 40);
	expect_refused(path, &c, &lay, "header length", "not a safetensors", "huge length");
	write_raw_st(path, "abc", 0, 0);
	expect_refused(path, &c, &lay, "header", "JSON", "3-byte junk");
	FILE *f = fopen(path, "wb");
	fputs("abc", f);
	fclose(f);
	expect_refused(path, &c, &lay, "shorter than the 8-byte", NULL, "tiny file");
	write_raw_st(path,
		     "{\"transformer.wte.weight\": {\"dtype\": \"Q4\", \"shape\": [2],"
		     " \"data_offsets\": [0, 8]}}",
		     8, 0);
	expect_refused(path, &c, &lay, "transformer.wte.weight", "Q4", "unknown dtype");
	write_raw_st(path,
		     "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 12]}}", 12,
		     0);
	expect_refused(path, &c, &lay, "tensor w", "needs 8", "size mismatch");
	write_raw_st(path,
		     "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
		     " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
		     12, 0);
	expect_refused(path, &c, &lay, "overlaps", "tensor y", "overlap");
	write_raw_st(path,
		     "{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8,
		     0);
	expect_refused(path, &c, &lay, "tensor x", "shape[0]", "negative dim");
	write_raw_st(path,
		     "{\"__metadata__\": {\"format\": 3}, \"x\": {\"dtype\": \"F32\", \"shape\":"
		     " [2], \"data_offsets\": [0, 8]}}",
		     8, 0);
	expect_refused(path, &c, &lay, "__metadata__.format", NULL, "metadata not a string");

	/* a supported-by-safetensors dtype zinf does not load, in an otherwise fine file */
	{
		zinf_st_spec specs[64];
		int k = 0;
		for (int i = 0; i < lay.ntensors; i++) {
			const zinf_tensor_desc *t = &lay.tensors[i];
			specs[k++] = (zinf_st_spec){
				.name = t->hf_name,
				.dtype = strstr(t->hf_name, "ln_f.weight") ? ZINF_ST_F64
									    : ZINF_ST_F32,
				.ndim = t->ndim,
				.shape = {t->hf_shape[0], t->hf_shape[1]}};
		}
		zinf_st_writer w;
		zinf_st_writer_open(&w, path, specs, k, NULL, err, sizeof(err));
		char *zeros = calloc(1, 1 << 20);
		uint64_t left = w.end;
		while (left) {
			size_t m = left < (1u << 20) ? (size_t)left : (1u << 20);
			zinf_st_writer_write(&w, zeros, m, err, sizeof(err));
			left -= m;
		}
		free(zeros);
		T_CHECK(zinf_st_writer_finish(&w, err, sizeof(err)) == 0, "%s", err);
		expect_refused(path, &c, &lay, "transformer.ln_f.weight", "F64", "F64 dtype");
	}

	/* the writer refuses short or long data and leaves no file behind */
	{
		zinf_st_spec s = {.name = "x", .dtype = ZINF_ST_BF16, .ndim = 2, .shape = {2, 3}};
		zinf_st_writer w;
		const char *wp = tpath("w.safetensors");
		unlink(wp);
		T_CHECK(zinf_st_writer_open(&w, wp, &s, 1, NULL, err, sizeof(err)) == 0, "%s", err);
		char buf[16] = {0};
		T_CHECK(zinf_st_writer_write(&w, buf, 14, err, sizeof(err)) == -EINVAL,
			"overlong write");
		T_CHECK(zinf_st_writer_write(&w, buf, 10, err, sizeof(err)) == 0, "%s", err);
		T_CHECK(zinf_st_writer_finish(&w, err, sizeof(err)) == -EINVAL &&
				strstr(err, "10 of"),
			"short finish: %s", err);
		zinf_st_writer_abort(&w);
		T_CHECK(access(wp, F_OK) != 0, "aborted file exists");
	}
	free(p);
	free(q);
	free(pl);
	zinf_model_layout_free(&lay);
	zinf_model_layout_free(&layl);
}

static void
rm_tree(void)
{
	static const char *const files[] = {"config.json", "model.safetensors", "v.safetensors",
					    "m/config.json", "m/model.safetensors.index.json", "m", "empty",
					    "w.safetensors", "s1.safetensors", "s2.safetensors",
					    "m.safetensors.index.json", NULL};
	for (int i = 0; files[i]; i++)
		if (unlink(tpath(files[i])))
			rmdir(tpath(files[i]));
	rmdir(tmpdir);
}

int
main(void)
{
	tmpdir = t_mkdtemp("test_model");
	test_presets();
	test_init();
	test_convert();
	test_config_json();
	test_roundtrip("gpt2-tiny");
	test_roundtrip("llama-tiny");
	test_load_variants();
	rm_tree();
	free(tmpdir);
	return t_result("test_model");
}
