/* engine/model: presets against HF parameter counts, layout invariants, init determinism and
 * statistics, config.json and safetensors round trips, malformed inputs refused by name. */
#include "test_util.h"

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>

#include "engine/model.h"

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
	T_CHECK(strstr(err, "n_kv_head 3") != NULL, "message: %s", err);
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

int
main(void)
{
	test_presets();
	test_init();
	return t_result("test_model");
}
