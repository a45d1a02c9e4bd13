/* zinf eval and zinf bench model: the models of engine/model.h run on the CPU (model_cpu.h,
 * fp32) or the GPU (model_gpu.h, bf16 weights and activations, fp32 gradients).
 *
 *   zinf eval --model M --data GLOB [--batches N --batch B --seq T]   mean loss over N batches
 *   zinf eval --model M --tokens FILE [--dump DIR]                    one forward + backward on a
 *                                                                     given batch; DIR gets the
 *                                                                     loss, logits and gradients
 *   zinf bench model --model M --batch B --seq T [--recompute]        forward+backward tokens/s
 *
 * --tokens FILE is the batch.bin of tests/fixtures/models/README.md (int32: magic, version, B,
 * T, tokens[B][T], targets[B][T], -100 = ignored). --dump DIR writes, for bench/model_vs_hf.py:
 *   DIR/outputs.safetensors  "loss" F32 [1], "logits" F32 [B, T, vocab_size]
 *   DIR/grads.safetensors    every parameter's gradient, F32, HF names and layouts (as
 *                            zinf_model_save_safetensors writes weights; tied lm_head omitted)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "engine/data.h"
#include "engine/model.h"
#include "engine/model_cpu.h"
#include "engine/model_gpu.h"
#include "engine/safetensors.h"
#include "harness.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/ops_cuda.h"
#endif

#define BATCH_MAGIC 0x5A424154
#define BATCH_VERSION 1
#define DEFAULT_SEED 1234

typedef enum devkind { DEV_AUTO = 0, DEV_CPU = 1, DEV_GPU = 2 } devkind;
static const char *const dev_names[] = {"auto", "cpu", "gpu", NULL};

/* ---- the model on the host: config, layout, fp32 parameters ---- */

typedef struct host_model {
	zinf_model_config cfg;
	zinf_model_layout lay;
	float *params;
	char weights[PATH_MAX]; /* "" when initialised from the seed */
} host_model;

static void
host_model_free(host_model *m)
{
	free(m->params);
	zinf_model_layout_free(&m->lay);
	memset(m, 0, sizeof(*m));
}

/* Resolves MODEL and loads its weights (or the seeded init). Exit code on failure: 2 when
 * MODEL itself is not usable (unknown preset, no or bad config.json), 1 when its weights
 * cannot be read. */
static int
host_model_open(const char *prog, const char *model, uint64_t seed, bool init_only,
		host_model *m)
{
	char err[1024];
	memset(m, 0, sizeof(*m));
	if (zinf_model_resolve(model, &m->cfg, m->weights, sizeof(m->weights), err, sizeof(err)) ||
	    zinf_model_config_validate(&m->cfg, err, sizeof(err)) ||
	    zinf_model_layout_init(&m->cfg, &m->lay, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 2;
	}
	size_t bytes = (size_t)m->lay.total_numel * sizeof(float);
	m->params = malloc(bytes);
	if (!m->params) {
		fprintf(stderr, "%s: out of host memory for %s's %" PRId64 " fp32 parameters (%.2f GiB)\n",
			prog, m->cfg.name, m->lay.total_numel, bytes / 1073741824.0);
		host_model_free(m);
		return 1;
	}
	if (init_only)
		m->weights[0] = '\0';
	if (m->weights[0]) {
		if (zinf_model_load_safetensors(m->weights, &m->cfg, &m->lay, m->params, err,
						sizeof(err))) {
			fprintf(stderr, "%s: %s\n", prog, err);
			host_model_free(m);
			return 1;
		}
	} else {
		zinf_model_init_params(&m->cfg, &m->lay, seed, m->params);
	}
	return 0;
}

static void
describe_weights(const host_model *m, uint64_t seed, char *buf, size_t len)
{
	if (m->weights[0])
		snprintf(buf, len, "weights %s", m->weights);
	else
		snprintf(buf, len, "random init (seed %" PRIu64 ")", seed);
}

/* ---- a runner: one micro-batch shape on the CPU or the GPU ---- */

typedef struct runner {
	devkind dev; /* DEV_CPU or DEV_GPU once opened */
	const host_model *m;
	int B, T;
	zinf_cpu_model *cpu;
	float *grads; /* CPU: host fp32 gradients */
	zinf_gpu_model *gpu;
	void *d_params; /* GPU: bf16 parameters */
	float *d_grads; /* GPU: fp32 gradients */
	uint64_t gpu_bytes;
} runner;

static const char *
runner_error(const runner *r)
{
	return r->dev == DEV_GPU ? zinf_gpu_model_error(r->gpu) : zinf_cpu_model_error(r->cpu);
}

#ifdef ZINF_HAVE_CUDA
static int
cuda_fail(const char *prog, const char *what, cudaError_t e)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, cudaGetErrorString(e));
	return e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

/* bf16 parameters and zeroed fp32 gradients on the GPU: the fp32 vector goes up in chunks
 * through a staging buffer and is cast (round to nearest even) on the device. */
static int
gpu_upload(const char *prog, runner *r, bool need_grads)
{
	const zinf_model_layout *lay = &r->m->lay;
	int64_t n = lay->total_numel;
	int64_t chunk = n < (16 << 20) ? n : (16 << 20);
	float *stage = NULL;
	cudaError_t e;
	if ((e = cudaMalloc(&r->d_params, (size_t)n * 2)))
		return cuda_fail(prog, "GPU memory for the bf16 parameters", e);
	if ((e = cudaMalloc((void **)&stage, (size_t)chunk * sizeof(float))))
		return cuda_fail(prog, "GPU memory for the parameter staging buffer", e);
	int rc = 0;
	for (int64_t off = 0; off < n && !rc; off += chunk) {
		int64_t len = n - off < chunk ? n - off : chunk;
		if ((e = cudaMemcpy(stage, r->m->params + off, (size_t)len * sizeof(float),
				    cudaMemcpyHostToDevice)))
			rc = cuda_fail(prog, "copying the parameters to the GPU", e);
		else if ((rc = zinf_cast_f32_to_bf16((uint16_t *)r->d_params + off, stage, len, NULL)))
			fprintf(stderr, "%s: casting the parameters to bf16: error %d\n", prog, rc);
		else if ((e = cudaDeviceSynchronize()))
			rc = cuda_fail(prog, "casting the parameters to bf16", e);
	}
	cudaFree(stage);
	if (rc)
		return rc;
	r->gpu_bytes += (uint64_t)n * 2;
	if (!need_grads)
		return 0;
	if ((e = cudaMalloc((void **)&r->d_grads, (size_t)n * sizeof(float))))
		return cuda_fail(prog, "GPU memory for the fp32 gradients", e);
	if ((e = cudaMemset(r->d_grads, 0, (size_t)n * sizeof(float))))
		return cuda_fail(prog, "zeroing the gradients", e);
	r->gpu_bytes += (uint64_t)n * sizeof(float);
	return 0;
}

static int
gpu_grads_to_host(const char *prog, runner *r, float *out)
{
	cudaError_t e = cudaStreamSynchronize((cudaStream_t)zinf_gpu_model_stream(r->gpu));
	if (!e)
		e = cudaMemcpy(out, r->d_grads, (size_t)r->m->lay.total_numel * sizeof(float),
			       cudaMemcpyDeviceToHost);
	return e ? cuda_fail(prog, "copying the gradients from the GPU", e) : 0;
}

static void
gpu_free(runner *r)
{
	cudaFree(r->d_params);
	cudaFree(r->d_grads);
}
#else
static int
gpu_upload(const char *prog, runner *r, bool need_grads)
{
	(void)r;
	(void)need_grads;
	fprintf(stderr, "%s: this zinf was built without CUDA: use --device cpu\n", prog);
	return -ENODEV;
}

static int
gpu_grads_to_host(const char *prog, runner *r, float *out)
{
	(void)r;
	(void)out;
	fprintf(stderr, "%s: this zinf was built without CUDA\n", prog);
	return -ENODEV;
}

static void
gpu_free(runner *r)
{
	(void)r;
}
#endif

static void
runner_close(runner *r)
{
	if (r->gpu)
		zinf_gpu_model_destroy(r->gpu);
	if (r->dev == DEV_GPU)
		gpu_free(r);
	if (r->cpu)
		zinf_cpu_model_destroy(r->cpu);
	free(r->grads);
	memset(r, 0, sizeof(*r));
}

/* Opens the model for B x T on `dev`. DEV_AUTO takes the GPU when the GPU path opens it, and
 * otherwise (no GPU: -ENODEV; a model the GPU kernels do not take, e.g. head_dim 16) the CPU,
 * saying why on stderr. */
static int
runner_open(const char *prog, runner *r, const host_model *m, devkind dev, int B, int T,
	    int threads, bool recompute, bool keep_logits, bool need_grads)
{
	char err[1024];
	int rc;
	memset(r, 0, sizeof(*r));
	r->m = m;
	r->B = B;
	r->T = T;
	if (dev == DEV_GPU || dev == DEV_AUTO) {
		zinf_gpu_model_opts o = {.B = B, .T = T, .recompute = recompute,
					 .keep_logits = keep_logits, .device = 0};
		rc = zinf_gpu_model_create(&m->cfg, &m->lay, &o, &r->gpu, err, sizeof(err));
		if (rc && dev == DEV_AUTO) {
			fprintf(stderr, "%s: %s: running on the CPU\n", prog, err);
		} else if (rc) {
			fprintf(stderr, "%s: %s\n", prog, err);
			return rc;
		} else {
			r->dev = DEV_GPU;
			r->gpu_bytes = zinf_gpu_model_bytes(r->gpu);
			if ((rc = gpu_upload(prog, r, need_grads)))
				runner_close(r);
			return rc;
		}
	}
	r->dev = DEV_CPU;
	if (recompute)
		fprintf(stderr, "%s: --recompute applies to the GPU path; the CPU path keeps every "
				"activation\n", prog);
	if ((rc = zinf_cpu_model_create(&m->cfg, &m->lay, B, T, threads, &r->cpu, err,
					sizeof(err)))) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return rc;
	}
	if (need_grads) {
		r->grads = calloc((size_t)m->lay.total_numel, sizeof(float));
		if (!r->grads) {
			fprintf(stderr, "%s: out of host memory for the fp32 gradients (%" PRId64
					" floats)\n", prog, m->lay.total_numel);
			runner_close(r);
			return -ENOMEM;
		}
	}
	return 0;
}

/* One forward (and backward when `backward`). loss: NULL to skip reading it (on the GPU that
 * would synchronise); logits: NULL or [B*T, vocab_size]. */
static int
runner_step(const char *prog, runner *r, const int32_t *tok, const int32_t *tgt, bool backward,
	    float *loss, float *logits)
{
	int rc;
	if (r->dev == DEV_CPU) {
		float l;
		rc = zinf_cpu_forward(r->cpu, r->m->params, tok, tgt, &l, logits);
		if (!rc && backward)
			rc = zinf_cpu_backward(r->cpu, r->m->params, r->grads, 1.0f);
		if (!rc && loss)
			*loss = l;
	} else {
		rc = zinf_gpu_forward(r->gpu, r->d_params, tok, tgt);
		if (!rc && loss)
			rc = zinf_gpu_loss(r->gpu, loss);
		if (!rc && logits)
			rc = zinf_gpu_logits(r->gpu, logits);
		if (!rc && backward)
			rc = zinf_gpu_backward(r->gpu, r->d_params, r->d_grads, 1.0f);
	}
	if (rc)
		fprintf(stderr, "%s: %s\n", prog, runner_error(r));
	return rc;
}

/* ---- shared option parsing ---- */

typedef struct model_args {
	const char *model, *data, *tokens, *dump;
	uint64_t batches, B, T, threads, seed, steps, warmup;
	bool have_B, have_T, recompute, json;
	devkind dev;
} model_args;

/* Handles the options common to eval and bench model at argv[*i]: 1 consumed, 0 not ours,
 * -EINVAL after a message. */
static int
common_flag(const char *prog, int argc, char **argv, int *i, model_args *a)
{
	const char *v;
	int rc, ch;
	if ((rc = bench_flag_value(prog, argc, argv, i, "--model", &v)))
		return rc < 0 ? rc : (a->model = v, 1);
	if ((rc = bench_flag_value(prog, argc, argv, i, "--device", &v))) {
		if (rc < 0 || (ch = bench_parse_choice(prog, "--device", v, dev_names)) < 0)
			return -EINVAL;
		a->dev = (devkind)ch;
		return 1;
	}
	if ((rc = bench_flag_value(prog, argc, argv, i, "--batch", &v))) {
		if (rc < 0 || bench_parse_uint(prog, "--batch", v, 1, 1 << 16, &a->B))
			return -EINVAL;
		a->have_B = true;
		return 1;
	}
	if ((rc = bench_flag_value(prog, argc, argv, i, "--seq", &v))) {
		if (rc < 0 || bench_parse_uint(prog, "--seq", v, 1, 1 << 20, &a->T))
			return -EINVAL;
		a->have_T = true;
		return 1;
	}
	if ((rc = bench_flag_value(prog, argc, argv, i, "--threads", &v)))
		return rc < 0 || bench_parse_uint(prog, "--threads", v, 0, 4096, &a->threads) ? -EINVAL : 1;
	if ((rc = bench_flag_value(prog, argc, argv, i, "--seed", &v)))
		return rc < 0 || bench_parse_uint(prog, "--seed", v, 0, UINT64_MAX, &a->seed) ? -EINVAL : 1;
	return 0;
}

/* B*T must fit the int32 token counts of the model APIs; T must fit the model. */
static int
check_shape(const char *prog, const host_model *m, uint64_t B, uint64_t T)
{
	if ((int)T > m->cfg.max_seq) {
		fprintf(stderr, "%s: --seq %" PRIu64 " is longer than %s's max_seq %d: pass --seq %d or "
				"less\n", prog, T, m->cfg.name, m->cfg.max_seq, m->cfg.max_seq);
		return -EINVAL;
	}
	if (B * T >= (1u << 30)) {
		fprintf(stderr, "%s: --batch %" PRIu64 " x --seq %" PRIu64 " = %" PRIu64 " tokens: "
				"at most 2^30 - 1 per micro-batch\n", prog, B, T, B * T);
		return -EINVAL;
	}
	return 0;
}

/* ---- zinf eval ---- */

#define EVAL "zinf eval"

static void
eval_usage(FILE *f)
{
	fprintf(f,
		"usage: zinf eval --model DIR|PRESET --data GLOB [--batches N] [--batch B] [--seq T]\n"
		"                 [--device auto|cpu|gpu] [--threads N] [--seed S]\n"
		"       zinf eval --model DIR|PRESET --tokens FILE [--dump DIR] [--device ...]\n\n"
		"The first form prints the mean loss over N batches of B sequences of T tokens read\n"
		"from the token shards GLOB matches (llm.c layout, sorted by name, in order; the\n"
		"targets are the next tokens). Defaults: every batch of the data, B 4, T the model's\n"
		"max_seq capped at 1024.\n"
		"The second (developer) form runs one forward and backward on the batch in FILE\n"
		"(tests/fixtures/models/README.md: int32 magic 0x5A424154, version 1, B, T,\n"
		"tokens[B][T], targets[B][T], -100 = ignored), prints the loss and, with --dump, writes\n"
		"DIR/outputs.safetensors (loss [1], logits [B,T,vocab]) and DIR/grads.safetensors\n"
		"(every gradient under its HF name, HF layout, F32) for bench/model_vs_hf.py.\n\n"
		"MODEL is a folder with config.json (and model.safetensors; without it the weights are\n"
		"the family's init from --seed, default %d) or a preset: ",
		DEFAULT_SEED);
	const char *const *p = zinf_model_preset_names();
	for (int i = 0; p[i]; i++)
		fprintf(f, "%s%s", i ? " " : "", p[i]);
	fprintf(f, ".\n--device auto (default) takes the GPU (bf16) when there is one, else the CPU "
		   "(fp32,\n--threads N workers, 0 = every CPU).\n\n"
		   "exit codes: 0 ok, 1 runtime failure (weights, data, token out of range), 2 usage\n"
		   "error or unusable MODEL (unknown preset, missing or bad config.json)\n");
}

/* batch.bin: B, T and the B*T tokens and targets, malloc'd. */
static int
read_batch_file(const char *path, int *B, int *T, int32_t **tok, int32_t **tgt)
{
	char err[1024];
	char *buf = NULL;
	size_t len = 0;
	int rc = zinf_read_file(path, (size_t)1 << 31, &buf, &len, err, sizeof(err));
	if (rc) {
		fprintf(stderr, EVAL ": --tokens %s\n", err);
		return rc;
	}
	int32_t h[4] = {0};
	if (len < sizeof(h)) {
		fprintf(stderr, EVAL ": --tokens %s: %zu bytes, shorter than the 16-byte header "
				"(magic 0x%X, version, B, T)\n", path, len, BATCH_MAGIC);
		free(buf);
		return -EINVAL;
	}
	memcpy(h, buf, sizeof(h));
	if (h[0] != BATCH_MAGIC || h[1] != BATCH_VERSION || h[2] <= 0 || h[3] <= 0 ||
	    (int64_t)h[2] * h[3] >= (1 << 28)) {
		fprintf(stderr, EVAL ": --tokens %s: header magic 0x%X version %d B %d T %d: expected "
				"magic 0x%X version %d and 0 < B*T < 2^28 (tests/fixtures/models/README.md)\n",
			path, (unsigned)h[0], h[1], h[2], h[3], BATCH_MAGIC, BATCH_VERSION);
		free(buf);
		return -EINVAL;
	}
	size_t n = (size_t)h[2] * (size_t)h[3];
	size_t want = sizeof(h) + 2 * n * sizeof(int32_t);
	if (len != want) {
		fprintf(stderr, EVAL ": --tokens %s: %zu bytes, B %d x T %d needs exactly %zu "
				"(16-byte header, tokens, targets)\n", path, len, h[2], h[3], want);
		free(buf);
		return -EINVAL;
	}
	*tok = malloc(n * sizeof(int32_t));
	*tgt = malloc(n * sizeof(int32_t));
	if (!*tok || !*tgt) {
		free(*tok);
		free(*tgt);
		free(buf);
		return -ENOMEM;
	}
	memcpy(*tok, buf + sizeof(h), n * sizeof(int32_t));
	memcpy(*tgt, buf + sizeof(h) + n * sizeof(int32_t), n * sizeof(int32_t));
	free(buf);
	*B = h[2];
	*T = h[3];
	return 0;
}

static int
write_dump(const char *dir, const host_model *m, int B, int T, float loss, const float *logits,
	   const float *grads)
{
	char err[1024], path[PATH_MAX];
	/* mkdir -p */
	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1;; p++) {
		bool end = *p == '\0';
		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(path, 0755) && errno != EEXIST) {
			fprintf(stderr, EVAL ": --dump %s: creating %s: %s\n", dir, path,
				strerror(errno));
			return -errno;
		}
		if (end)
			break;
		*p = '/';
	}
	zinf_st_spec specs[2] = {
		{.name = "loss", .dtype = ZINF_ST_F32, .ndim = 1, .shape = {1}},
		{.name = "logits", .dtype = ZINF_ST_F32, .ndim = 3,
		 .shape = {B, T, m->cfg.vocab_size}},
	};
	static const char *const meta[] = {"format", "zinf-model-dump", "version", "1", NULL};
	zinf_st_writer w;
	size_t nlog = (size_t)B * T * (size_t)m->cfg.vocab_size * sizeof(float);
	snprintf(path, sizeof(path), "%s/outputs.safetensors", dir);
	int rc = zinf_st_writer_open(&w, path, specs, 2, meta, err, sizeof(err));
	if (!rc)
		rc = zinf_st_writer_write(&w, &loss, sizeof(loss), err, sizeof(err));
	if (!rc)
		rc = zinf_st_writer_write(&w, logits, nlog, err, sizeof(err));
	if (!rc)
		rc = zinf_st_writer_finish(&w, err, sizeof(err));
	if (rc) {
		zinf_st_writer_abort(&w);
		fprintf(stderr, EVAL ": --dump %s\n", err);
		return rc;
	}
	snprintf(path, sizeof(path), "%s/grads.safetensors", dir);
	rc = zinf_model_save_safetensors(path, &m->cfg, &m->lay, grads, ZINF_SAVE_F32, err,
					 sizeof(err));
	if (rc)
		fprintf(stderr, EVAL ": --dump %s\n", err);
	return rc;
}

static const char *
dev_label(const runner *r)
{
	return r->dev == DEV_GPU ? "gpu (bf16)" : "cpu (fp32)";
}

/* --tokens FILE [--dump DIR] */
static int
eval_tokens(const model_args *a, const host_model *m)
{
	int B = 0, T = 0, rc;
	int32_t *tok = NULL, *tgt = NULL;
	float *logits = NULL, *grads = NULL;
	runner r = {0};
	if ((rc = read_batch_file(a->tokens, &B, &T, &tok, &tgt)))
		return 1;
	if ((a->have_B && a->B != (uint64_t)B) || (a->have_T && a->T != (uint64_t)T)) {
		fprintf(stderr, EVAL ": --tokens %s holds B %d x T %d; --batch/--seq say otherwise: "
				"drop them\n", a->tokens, B, T);
		rc = 2;
		goto out;
	}
	if (check_shape(EVAL, m, (uint64_t)B, (uint64_t)T)) {
		rc = 2;
		goto out;
	}
	bool dump = a->dump != NULL;
	if (runner_open(EVAL, &r, m, a->dev, B, T, (int)a->threads, false, dump, dump)) {
		rc = 1;
		goto out;
	}
	size_t nlog = (size_t)B * T * (size_t)m->cfg.vocab_size;
	if (dump) {
		logits = malloc(nlog * sizeof(float));
		grads = r.dev == DEV_GPU ? calloc((size_t)m->lay.total_numel, sizeof(float)) : NULL;
		if (!logits || (r.dev == DEV_GPU && !grads)) {
			fprintf(stderr, EVAL ": out of host memory for the logits/gradients\n");
			rc = 1;
			goto out;
		}
	}
	float loss = 0;
	if (runner_step(EVAL, &r, tok, tgt, dump, &loss, logits)) {
		rc = 1;
		goto out;
	}
	if (dump && r.dev == DEV_GPU && gpu_grads_to_host(EVAL, &r, grads)) {
		rc = 1;
		goto out;
	}
	printf("loss %.6f  (%s, B %d x T %d from %s, %s)\n", loss, m->cfg.name, B, T, a->tokens,
	       dev_label(&r));
	if (dump) {
		if (write_dump(a->dump, m, B, T, loss, logits, r.dev == DEV_GPU ? grads : r.grads)) {
			rc = 1;
			goto out;
		}
		printf("wrote %s/outputs.safetensors (loss, logits) and %s/grads.safetensors\n",
		       a->dump, a->dump);
	}
	rc = 0;
out:
	runner_close(&r);
	free(logits);
	free(grads);
	free(tok);
	free(tgt);
	return rc;
}

/* --data GLOB */
static int
eval_data(const model_args *a, const host_model *m, uint64_t seed)
{
	char err[1024], wdesc[PATH_MAX + 32];
	int B = a->have_B ? (int)a->B : 4;
	int T = a->have_T ? (int)a->T : (m->cfg.max_seq < 1024 ? m->cfg.max_seq : 1024);
	if (check_shape(EVAL, m, (uint64_t)B, (uint64_t)T))
		return 2;
	zinf_loader_opts lo;
	zinf_loader_opts_init(&lo);
	lo.glob = a->data;
	lo.B = B;
	lo.T = T;
	lo.vocab_size = (uint64_t)m->cfg.vocab_size;
	lo.shuffle = false;
	zinf_loader *ld = NULL;
	if (zinf_loader_open(&ld, &lo, err, sizeof(err))) {
		fprintf(stderr, EVAL ": --data %s\n", err);
		return 1;
	}
	uint64_t avail = zinf_loader_steps_per_epoch(ld);
	uint64_t n = a->batches ? a->batches : avail;
	if (avail == 0 || n > avail) {
		fprintf(stderr, EVAL ": --data %s: %zu shard(s) hold %" PRIu64 " batches of B %d x "
				"T %d (+1 target token); asked for %" PRIu64 ": pass --batches %" PRIu64
				" or less, or a smaller --batch/--seq\n",
			a->data, zinf_loader_shard_count(ld), avail, B, T, n, avail);
		zinf_loader_close(ld);
		return avail == 0 ? 1 : 2;
	}
	runner r;
	size_t bt = (size_t)B * T;
	int32_t *tok = malloc(bt * sizeof(int32_t)), *tgt = malloc(bt * sizeof(int32_t));
	int rc = 1;
	if (!tok || !tgt) {
		fprintf(stderr, EVAL ": out of host memory for a batch\n");
		goto out_loader;
	}
	if (runner_open(EVAL, &r, m, a->dev, B, T, (int)a->threads, false, false, false))
		goto out_loader;
	double sum = 0;
	uint64_t t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		float loss;
		if (zinf_loader_next(ld, tok, tgt, err, sizeof(err))) {
			fprintf(stderr, EVAL ": --data %s\n", err);
			goto out_runner;
		}
		if (runner_step(EVAL, &r, tok, tgt, false, &loss, NULL))
			goto out_runner;
		if (!isfinite(loss)) {
			fprintf(stderr, EVAL ": batch %" PRIu64 ": loss is %f\n", i, loss);
			goto out_runner;
		}
		sum += loss;
	}
	double dt = (bench_now_ns() - t0) / 1e9;
	describe_weights(m, seed, wdesc, sizeof(wdesc));
	double mean = sum / (double)n;
	printf("mean loss %.6f over %" PRIu64 " batches of B %d x T %d (%" PRIu64 " tokens) from "
	       "%zu shard(s)\n", mean, n, B, T, n * bt, zinf_loader_shard_count(ld));
	printf("model %s, %s, %s; perplexity %.3f; %.0f tokens/s\n", m->cfg.name, wdesc,
	       dev_label(&r), exp(mean), dt > 0 ? n * bt / dt : 0.0);
	rc = 0;
out_runner:
	runner_close(&r);
out_loader:
	free(tok);
	free(tgt);
	zinf_loader_close(ld);
	return rc;
}

int
zinf_eval_main(int argc, char **argv)
{
	model_args a = {.seed = DEFAULT_SEED};
	for (int i = 1; i < argc; i++) {
		const char *v;
		int rc;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			eval_usage(stdout);
			return 0;
		}
		if ((rc = common_flag(EVAL, argc, argv, &i, &a)) < 0)
			return 2;
		if (rc)
			continue;
		if ((rc = bench_flag_value(EVAL, argc, argv, &i, "--data", &v))) {
			if (rc < 0)
				return 2;
			a.data = v;
		} else if ((rc = bench_flag_value(EVAL, argc, argv, &i, "--tokens", &v))) {
			if (rc < 0)
				return 2;
			a.tokens = v;
		} else if ((rc = bench_flag_value(EVAL, argc, argv, &i, "--dump", &v))) {
			if (rc < 0)
				return 2;
			a.dump = v;
		} else if ((rc = bench_flag_value(EVAL, argc, argv, &i, "--batches", &v))) {
			if (rc < 0 || bench_parse_uint(EVAL, "--batches", v, 1, UINT32_MAX, &a.batches))
				return 2;
		} else {
			fprintf(stderr, EVAL ": unknown option '%s' (see zinf eval --help)\n", argv[i]);
			return 2;
		}
	}
	if (!a.model || (!a.data == !a.tokens)) {
		fprintf(stderr, EVAL ": %s\n\n", !a.model ? "--model is required"
				    : "give exactly one of --data GLOB and --tokens FILE");
		eval_usage(stderr);
		return 2;
	}
	if (a.dump && !a.tokens) {
		fprintf(stderr, EVAL ": --dump needs --tokens FILE (one batch to dump)\n");
		return 2;
	}
	if (a.tokens && a.batches) {
		fprintf(stderr, EVAL ": --batches applies to --data; --tokens runs its one batch\n");
		return 2;
	}
	host_model m;
	int rc = host_model_open(EVAL, a.model, a.seed, false, &m);
	if (rc)
		return rc;
	if (!m.weights[0])
		fprintf(stderr, EVAL ": %s has no model.safetensors: random init (seed %" PRIu64 ")\n",
			a.model, a.seed);
	rc = a.tokens ? eval_tokens(&a, &m) : eval_data(&a, &m, a.seed);
	host_model_free(&m);
	return rc;
}

/* ---- zinf bench model ---- */

#define BENCH "zinf bench model"

static void
bench_usage(FILE *f)
{
	fprintf(f,
		"usage: zinf bench model --model PRESET|DIR [--batch B] [--seq T] [--recompute]\n"
		"                        [--steps N] [--warmup N] [--device auto|gpu|cpu]\n"
		"                        [--threads N] [--seed S] [--json]\n\n"
		"Times forward + backward (gradients accumulated in fp32, no optimizer step) of one\n"
		"micro-batch of B x T random tokens, N timed steps after the warm-up steps (defaults:\n"
		"B 8, T min(1024, max_seq), 10 steps, 3 warm-up). Weights: the family's init from\n"
		"--seed (a folder's model.safetensors is not read). Prints tokens/s, ms/step and\n"
		"achieved TFLOP/s with\n"
		"  FLOPs/token = 6*N + 12*n_layer*T*n_head*head_dim   (PaLM's count, as llm.c's MFU)\n"
		"  N = matmul weights incl. the lm_head, excluding position embeddings, norms, biases.\n"
		"--recompute (GPU) recomputes each layer's activations in backward: the model TFLOP/s\n"
		"uses the formula above; the hardware TFLOP/s adds the extra forward (x 4/3).\n");
}

static uint64_t
splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

int
zinf_bench_model_main(int argc, char **argv)
{
	model_args a = {.seed = DEFAULT_SEED, .steps = 10, .warmup = 3};
	for (int i = 1; i < argc; i++) {
		const char *v;
		int rc;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			bench_usage(stdout);
			return 0;
		}
		if ((rc = common_flag(BENCH, argc, argv, &i, &a)) < 0)
			return 2;
		if (rc)
			continue;
		if (!strcmp(argv[i], "--recompute")) {
			a.recompute = true;
		} else if (!strcmp(argv[i], "--json")) {
			a.json = true;
		} else if ((rc = bench_flag_value(BENCH, argc, argv, &i, "--steps", &v))) {
			if (rc < 0 || bench_parse_uint(BENCH, "--steps", v, 1, 1000000, &a.steps))
				return 2;
		} else if ((rc = bench_flag_value(BENCH, argc, argv, &i, "--warmup", &v))) {
			if (rc < 0 || bench_parse_uint(BENCH, "--warmup", v, 0, 1000000, &a.warmup))
				return 2;
		} else {
			fprintf(stderr, BENCH ": unknown option '%s' (see zinf bench model --help)\n",
				argv[i]);
			return 2;
		}
	}
	if (!a.model) {
		fprintf(stderr, BENCH ": --model is required\n\n");
		bench_usage(stderr);
		return 2;
	}
	host_model m;
	int rc = host_model_open(BENCH, a.model, a.seed, true, &m);
	if (rc)
		return rc;
	int B = a.have_B ? (int)a.B : 8;
	int T = a.have_T ? (int)a.T : (m.cfg.max_seq < 1024 ? m.cfg.max_seq : 1024);
	runner r;
	size_t bt = (size_t)B * T;
	int32_t *tok = NULL, *tgt = NULL;
	rc = 2;
	if (check_shape(BENCH, &m, (uint64_t)B, (uint64_t)T))
		goto out_model;
	rc = 1;
	tok = malloc(bt * sizeof(int32_t));
	tgt = malloc(bt * sizeof(int32_t));
	if (!tok || !tgt) {
		fprintf(stderr, BENCH ": out of host memory for a batch\n");
		goto out_model;
	}
	uint64_t s = a.seed ^ 0xD1B54A32D192ED03ull;
	int32_t prev = (int32_t)(splitmix(&s) % (uint64_t)m.cfg.vocab_size);
	for (size_t i = 0; i < bt; i++) {
		tok[i] = prev;
		prev = (int32_t)(splitmix(&s) % (uint64_t)m.cfg.vocab_size);
		tgt[i] = prev;
	}
	if (runner_open(BENCH, &r, &m, a.dev, B, T, (int)a.threads, a.recompute, false, true))
		goto out_model;
	float loss = 0;
	for (uint64_t i = 0; i < a.warmup; i++)
		if (runner_step(BENCH, &r, tok, tgt, true, NULL, NULL))
			goto out_runner;
	/* the loss read synchronises the GPU: the clock starts with the queue empty */
	if (a.warmup && r.dev == DEV_GPU && zinf_gpu_loss(r.gpu, &loss)) {
		fprintf(stderr, BENCH ": %s\n", runner_error(&r));
		goto out_runner;
	}
	uint64_t t0 = bench_now_ns();
	for (uint64_t i = 0; i < a.steps; i++)
		if (runner_step(BENCH, &r, tok, tgt, true, i + 1 == a.steps && r.dev == DEV_CPU ? &loss
							: NULL, NULL))
			goto out_runner;
	if (r.dev == DEV_GPU && zinf_gpu_loss(r.gpu, &loss)) {
		fprintf(stderr, BENCH ": %s\n", runner_error(&r));
		goto out_runner;
	}
	double dt = (bench_now_ns() - t0) / 1e9;
	if (!isfinite(loss)) {
		fprintf(stderr, BENCH ": the loss is %f after %" PRIu64 " steps: the run is broken\n",
			loss, a.steps + a.warmup);
		goto out_runner;
	}
	const zinf_model_config *c = &m.cfg;
	double fpt = zinf_model_flops_per_token(c, T);
	double attn = 12.0 * c->n_layer * (double)T * c->n_head * c->head_dim;
	double nmat = (fpt - attn) / 6.0;
	double tps = (double)bt * a.steps / dt;
	double tflops = tps * fpt / 1e12;
	double hw = a.recompute && r.dev == DEV_GPU ? tflops * 4.0 / 3.0 : tflops;
	if (a.json) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "bench", "model");
		cJSON_AddStringToObject(j, "model", c->name);
		cJSON_AddStringToObject(j, "device", r.dev == DEV_GPU ? "gpu" : "cpu");
		cJSON_AddNumberToObject(j, "B", B);
		cJSON_AddNumberToObject(j, "T", T);
		cJSON_AddBoolToObject(j, "recompute", a.recompute && r.dev == DEV_GPU);
		cJSON_AddNumberToObject(j, "steps", (double)a.steps);
		cJSON_AddNumberToObject(j, "warmup", (double)a.warmup);
		cJSON_AddNumberToObject(j, "params", (double)m.lay.n_params);
		cJSON_AddNumberToObject(j, "matmul_params", nmat);
		cJSON_AddNumberToObject(j, "flops_per_token", fpt);
		cJSON_AddNumberToObject(j, "tokens_per_s", tps);
		cJSON_AddNumberToObject(j, "ms_per_step", dt * 1e3 / (double)a.steps);
		cJSON_AddNumberToObject(j, "model_tflops", tflops);
		cJSON_AddNumberToObject(j, "hw_tflops", hw);
		cJSON_AddNumberToObject(j, "loss", loss);
		cJSON_AddNumberToObject(j, "gpu_bytes", (double)r.gpu_bytes);
		rc = bench_json_emit(j) ? 1 : 0;
	} else {
		printf("model %s (%" PRId64 " params), %s, B %d x T %d%s, %" PRIu64 " steps after %"
		       PRIu64 " warm-up\n", c->name, m.lay.n_params, dev_label(&r), B, T,
		       a.recompute && r.dev == DEV_GPU ? ", recompute" : "", a.steps, a.warmup);
		printf("FLOPs/token = 6*N + 12*n_layer*T*n_head*head_dim = 6*%.0f + 12*%d*%d*%d*%d = "
		       "%.4g\n", nmat, c->n_layer, T, c->n_head, c->head_dim, fpt);
		printf("%.1f tokens/s  %.2f ms/step  %.2f TFLOP/s (model)", tps,
		       dt * 1e3 / (double)a.steps, tflops);
		if (hw != tflops)
			printf("  %.2f TFLOP/s (hardware, with the recomputed forward)", hw);
		printf("\nloss %.4f", loss);
		if (r.dev == DEV_GPU)
			printf("  GPU memory %.2f GiB (params, grads, activations, workspaces)",
			       r.gpu_bytes / 1073741824.0);
		printf("\n");
		rc = 0;
	}
out_runner:
	runner_close(&r);
out_model:
	free(tok);
	free(tgt);
	host_model_free(&m);
	return rc;
}
