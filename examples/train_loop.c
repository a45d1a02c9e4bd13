/* The standalone DeepSpeed training loop, in C against engine/engine.h:
 *
 *     model_engine, _, _, _ = deepspeed.initialize(model=model, config=ds_config)
 *     for step, batch in enumerate(loader):
 *         loss = model_engine(batch)
 *         model_engine.backward(loss)
 *         model_engine.step()
 *
 * A tiny GPT-2 (preset gpt2-tiny) learns a synthetic sequence task (each token determines the
 * next) on the CPU with AdamW, a warmup schedule and gradient accumulation 2.
 * Usage: train_loop [--steps N]. Exit 0 when the loss fell, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static const char ds_config[] =
        "{\n"
        "  \"train_micro_batch_size_per_gpu\": 4,\n"
        "  \"gradient_accumulation_steps\": 2,\n"
        "  \"gradient_clipping\": 1.0,\n"
        "  \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.003, \"weight_decay\": 0.01}},\n"
        "  \"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_min_lr\": 0,\n"
        "                \"warmup_max_lr\": 0.003, \"warmup_num_steps\": 5, \"warmup_type\": \"linear\"}}\n"
        "}\n";

#define T 32

/* One micro-batch: B rows of a sequence where token t is followed by (5t + 17) mod 251. */
static void
batch(int64_t k, int B, int32_t *tok, int32_t *tgt)
{
	for (int r = 0; r < B; r++) {
		int32_t t = (int32_t)(((uint64_t)(k * 8 + r) * 2654435761u) % 251);
		for (int i = 0; i <= T; i++) {
			if (i < T)
				tok[r * T + i] = t;
			if (i)
				tgt[r * T + i - 1] = t;
			t = (t * 5 + 17) % 251;
		}
	}
}

int
main(int argc, char **argv)
{
	int steps = 30;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
			steps = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: %s [--steps N]\n", argv[0]);
			return 2;
		}
	}
	char err[1024];
	zinf_model_config model;
	zinf_config cfg;
	zinf_config_init_defaults(&cfg);
	if (zinf_model_preset("gpt2-tiny", &model, err, sizeof(err)) ||
	    zinf_config_load_string("ds_config.json", ds_config, NULL, &cfg, err, sizeof(err)) ||
	    zinf_config_resolve(&cfg, 1, model.d_model, err, sizeof(err))) {
		fprintf(stderr, "train_loop: %s\n", err);
		return 1;
	}
	/* deepspeed.initialize */
	zinf_engine_opts opts;
	zinf_engine_opts_init(&opts);
	opts.seq_len = T;
	zinf_engine *engine;
	if (zinf_engine_create(&model, &cfg, &opts, &engine, err, sizeof(err))) {
		fprintf(stderr, "train_loop: %s\n", err);
		return 1;
	}
	int B = zinf_engine_micro_batch(engine);
	int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * T);
	int32_t *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
	float first = 0, last = 0;
	int rc = 0;
	int64_t micro_steps = (int64_t)steps * zinf_engine_accum_steps(engine);
	for (int64_t k = 0; k < micro_steps && !rc; k++) {
		float loss;
		batch(k, B, tok, tgt);
		rc = zinf_engine_forward(engine, tok, tgt, &loss); /* loss = engine(batch) */
		if (!rc)
			rc = zinf_engine_backward(engine); /* engine.backward(loss) */
		bool boundary = zinf_engine_at_boundary(engine);
		if (!rc)
			rc = zinf_engine_step(engine); /* engine.step() */
		if (rc)
			break;
		if (k == 0)
			first = loss;
		last = loss;
		if (boundary) {
			zinf_engine_stats st;
			zinf_engine_get_stats(engine, &st);
			printf("step %3lld  loss %.4f  lr %.2e  grad norm %.3f\n",
			       (long long)st.global_steps, (double)loss, st.lr, (double)st.grad_norm);
		}
	}
	if (rc)
		fprintf(stderr, "train_loop: %s\n", zinf_engine_error(engine));
	zinf_engine_destroy(engine);
	free(tok);
	free(tgt);
	if (rc)
		return 1;
	printf("loss %.4f -> %.4f\n", (double)first, (double)last);
	return last < first ? 0 : 1;
}
