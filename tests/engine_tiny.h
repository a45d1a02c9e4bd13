/* Shared by the engine tests (test_engine.c, test_zero.c): the tiny GPT-2 they train and the
 * learnable rows of every step. The includer defines TT (tokens per row) first. */
#ifndef ZINF_TESTS_ENGINE_TINY_H
#define ZINF_TESTS_ENGINE_TINY_H

#include "engine/config.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "test_util.h"

static zinf_model_config g_mc;

static void
tiny_model(void)
{
	char err[512];
	if (zinf_model_preset("gpt2-tiny", &g_mc, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		exit(T_EXIT_FAIL);
	}
	g_mc.vocab_size = 256;
	g_mc.padded_vocab = 256;
	g_mc.d_model = 64;
	g_mc.n_head = g_mc.n_kv_head = 2;
	g_mc.head_dim = 32;
	g_mc.d_ff = 256;
	g_mc.n_layer = 2;
	g_mc.max_seq = 64;
	if (zinf_model_config_validate(&g_mc, err, sizeof(err))) {
		fprintf(stderr, "tiny model: %s\n", err);
		exit(T_EXIT_FAIL);
	}
}

/* Row r of step s: a learnable sequence (each token determines the next) from a start that
 * depends on (s, r) only, so any run can replay any step. */
static void
make_rows(int64_t s, int r0, int nrows, int32_t *tok, int32_t *tgt)
{
	for (int r = 0; r < nrows; r++) {
		uint64_t x = (uint64_t)(s * 131 + r0 + r) * 0x9E3779B97F4A7C15ULL;
		int32_t t = (int32_t)((x >> 40) % 256);
		for (int i = 0; i <= TT; i++) {
			if (i < TT)
				tok[r * TT + i] = t;
			if (i > 0)
				tgt[r * TT + i - 1] = t;
			t = (t * 5 + 17) % 251;
		}
	}
}


/* The multi-rank tests' engine (test_zero.c, test_ckpt.c): AdamW + WarmupDecayLR + clipping,
 * psync NVMe I/O, micro-batch `micro` x accumulation `accum`, ZeRO `stage`. `top` is inserted at
 * the top level (e.g. an fp16 block ending in ", "), `zero_extra` inside zero_optimization
 * (starting with ", "). Rank `rank` of `world`, seed `seed`, swap run id `run_id`. */
static inline int
tiny_engine(int stage, int micro, int accum, const char *top, const char *zero_extra, int rank,
            int world, uint64_t seed, const char *run_id, zinf_engine **e, char *err,
            size_t errlen)
{
	char json[4096];
	snprintf(json, sizeof(json),
	         "{\"train_micro_batch_size_per_gpu\": %d, \"gradient_accumulation_steps\": %d, "
	         "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.004, "
	         "\"weight_decay\": 0.01}}, \"gradient_clipping\": 0.5, %s"
	         "\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_max_lr\": "
	         "0.004, \"warmup_num_steps\": 3, \"total_num_steps\": 20}}, "
	         "\"zero_optimization\": {\"stage\": %d, \"sub_group_size\": 20000%s}, "
	         "\"aio\": {\"backend\": \"psync\"}}",
	         micro, accum, top ? top : "", stage, zero_extra ? zero_extra : "");
	zinf_config cfg;
	zinf_config_init_defaults(&cfg);
	int r = zinf_config_load_string(run_id, json, NULL, &cfg, err, errlen);
	if (!r)
		r = zinf_config_resolve(&cfg, world, g_mc.d_model, err, errlen);
	if (r)
		return r;
	zinf_engine_opts o;
	zinf_engine_opts_init(&o);
	o.seq_len = TT;
	o.threads = 1;
	o.seed = seed;
	o.rank = rank;
	o.world_size = world;
	o.run_id = run_id;
	o.nvme_buffered = true;
	return zinf_engine_create(&g_mc, &cfg, &o, e, err, errlen);
}

#endif
