/* Shared by the engine tests (test_engine.c, test_zero.c): the tiny GPT-2 they train and the
 * learnable rows of every step. The includer defines TT (tokens per row) first. */
#ifndef ZINF_TESTS_ENGINE_TINY_H
#define ZINF_TESTS_ENGINE_TINY_H

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

#endif
