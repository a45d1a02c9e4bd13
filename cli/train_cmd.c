/* zinf train: the DeepSpeed launcher-style training command over engine/engine.h.
 *
 * With no arguments it is the README's main job: gpt2-tiny, a built-in config, the embedded
 * default corpus byte-encoded into temporary shards, 200 steps on the GPU when one is usable,
 * else on the CPU. Exit codes: 0 ok, 1 runtime failure, 2 usage error or bad config. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "engine/config.h"
#include "engine/data.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "iosched/iosched.h"
#include "offload/offload.h"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf train [--config ds_config.json] [--model MODEL] [--data GLOB]\n"
	        "                  [--val_data GLOB --eval_steps N] [--steps N] [--seq_len T]\n"
	        "                  [--out DIR --save_steps N] [--resume DIR] [--export]\n"
	        "                  [--seed N] [--no_shuffle] [--gradient_checkpointing]\n"
	        "                  [--device auto|cpu|gpu] [--threads N]\n"
	        "                  [--num_gpus N] [--gpu_mem SIZE]\n"
	        "                  [HF-style overrides: --per_device_train_batch_size N\n"
	        "                   --gradient_accumulation_steps N --learning_rate X\n"
	        "                   --max_grad_norm X --weight_decay X --warmup_steps N ...]\n\n"
	        "--config (alias --deepspeed): a DeepSpeed ds_config.json; the overrides fill its\n"
	        "\"auto\" values. MODEL: a preset (%s...) or an HF folder.\n"
	        "--data: token shards (llm.c format). --out DIR --save_steps N writes\n"
	        "DIR/global_stepN/ (a shard per rank, and DIR/latest); --resume DIR continues\n"
	        "bit-exactly on as many ranks; zinf ckpt consolidate rebuilds weights; --export (or\n"
	        "stage3_gather_16bit_weights_on_model_save) adds model.safetensors + config.json.\n"
	        "--num_gpus N: data parallel over N ranks, the short form of `zinf launch --num_gpus N\n"
	        "-- train ...` (--device cpu: N CPU ranks); ZeRO stage 0-3 from the config (stage 3\n"
	        "shards parameters per layer). Under zinf launch (RANK set) the launcher's ranks are used.\n"
	        "--gpu_mem SIZE (e.g. 8G): GPU memory this rank's engine may use; ZeRO stage 3 fits\n"
	        "its gathered layers into what the fixed buffers leave (with offload_param the\n"
	        "parameters themselves live in host memory or on NVMe).\n"
	        "Without arguments: gpt2-tiny on the built-in corpus for 200 steps (GPU if usable).\n",
	        "gpt2-tiny, llama-tiny, gpt2-124m, ");
}

static const char builtin_config[] =
        "{\n"
        "  \"train_micro_batch_size_per_gpu\": \"auto\",\n"
        "  \"gradient_accumulation_steps\": \"auto\",\n"
        "  \"gradient_clipping\": \"auto\",\n"
        "  \"steps_per_print\": 10,\n"
        "  \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\", \"betas\": [0.9, 0.95],\n"
        "                \"eps\": 1e-8, \"weight_decay\": \"auto\"}},\n"
        "  \"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {\"warmup_num_steps\": \"auto\",\n"
        "                \"total_num_steps\": \"auto\", \"warmup_type\": \"linear\",\n"
        "                \"cos_min_ratio\": 0.1}},\n"
        "  \"bf16\": {\"enabled\": \"auto\"}\n"
        "}\n";


static void
fmt_time(double s, char *buf, size_t len)
{
	long t = (long)(s + 0.5);
	if (t >= 3600)
		snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

static int
parse_long(const char *flag, const char *v, long min, long *out)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || errno || *end || x < min) {
		fprintf(stderr, "zinf train: %s: '%s' is not an integer >= %ld\n", flag, v ? v : "",
		        min);
		return -1;
	}
	*out = x;
	return 0;
}

static void
set_default(zinf_config_overrides *ov, zinf_override o, double v)
{
	if (!(ov->given & (1u << o))) {
		ov->given |= 1u << o;
		ov->soft |= 1u << o;
		ov->value[o] = v;
	}
}

/* Mean loss over up to `batches` validation batches (the loader restarts each time). */
static int
validate(zinf_engine *e, zinf_loader *val, long batches, int32_t *tok, int32_t *tgt,
         double *mean)
{
	char err[1024];
	zinf_loader_reset(val);
	uint64_t n = zinf_loader_steps_per_epoch(val);
	if ((uint64_t)batches < n)
		n = (uint64_t)batches;
	double sum = 0;
	for (uint64_t i = 0; i < n; i++) {
		float loss;
		if (zinf_loader_next(val, tok, tgt, err, sizeof(err))) {
			fprintf(stderr, "zinf train: validation data: %s\n", err);
			return -1;
		}
		if (zinf_engine_eval(e, tok, tgt, &loss)) {
			fprintf(stderr, "zinf train: validation: %s\n", zinf_engine_error(e));
			return -1;
		}
		sum += loss;
	}
	*mean = n ? sum / (double)n : NAN;
	return 0;
}

/* RANK / WORLD_SIZE / LOCAL_RANK as zinf launch (or torchrun, Slurm) sets them. */
static int
env_int(const char *name, int dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	char *end;
	long x = strtol(v, &end, 10);
	return *end || x < 0 || x > (1 << 20) ? -1 : (int)x;
}

/* `zinf train --num_gpus N ...`: re-run as `zinf launch --num_gpus N [--cpu] -- train ...`
 * without the --num_gpus pair. */
static int
train_launch(int argc, char **argv, int at, long n)
{
	char **v = calloc((size_t)argc + 1, sizeof(char *));
	if (!v) {
		fprintf(stderr, "zinf train: out of memory\n");
		return 1;
	}
	int k = 0, cpu = 0;
	v[k++] = (char *)"train";
	for (int i = 1; i < argc; i++) {
		if (i == at) {
			i++;
			continue;
		}
		if (!strcmp(argv[i], "--device") && i + 1 < argc && !strcmp(argv[i + 1], "cpu"))
			cpu = 1;
		v[k++] = argv[i];
	}
	char why[256];
	if (!cpu && !offload_gpu_probe(why, sizeof(why))) {
		int dev = 0;
		for (int i = 1; i < argc; i++)
			dev |= !strcmp(argv[i], "--device") && i + 1 < argc && !strcmp(argv[i + 1], "gpu");
		if (dev) {
			fprintf(stderr, "zinf train: --num_gpus %ld --device gpu: no usable GPU (%s); use "
			        "--device cpu for CPU ranks\n", n, why);
			free(v);
			return 2;
		}
		cpu = 1;
	}
	int rc = zinf_launch_command((int)n, cpu, k, v);
	free(v);
	return rc;
}

int
zinf_train_main(int argc, char **argv)
{
	const char *config = NULL, *model = "gpt2-tiny", *data = NULL, *val_data = NULL;
	const char *out = NULL, *resume = NULL, *device = "auto";
	long steps = 200, seq_len = 64, save_steps = 0, eval_steps = 0, seed = 1234, threads = 0;
	bool export16 = false, steps_given = false, no_shuffle = false, recompute = false;
	uint64_t gpu_mem = 0;
	char err[2048];
	zinf_config_overrides ov;
	zinf_config_overrides_init(&ov);

	int world = env_int("WORLD_SIZE", 1), rank = env_int("RANK", 0);
	int local_rank = env_int("LOCAL_RANK", 0);
	if (world < 1 || rank < 0 || rank >= world || local_rank < 0) {
		fprintf(stderr, "zinf train: RANK %s / WORLD_SIZE %s / LOCAL_RANK %s: need integers "
		        "with 0 <= RANK < WORLD_SIZE (zinf launch sets them)\n", getenv("RANK"),
		        getenv("WORLD_SIZE"), getenv("LOCAL_RANK"));
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--num_gpus"))
			continue;
		long n;
		if (i + 1 >= argc || parse_long("--num_gpus", argv[i + 1], 1, &n))
			return 2;
		if (getenv("RANK")) /* already a launched rank: the launcher's world counts */
			break;
		if (n > 1)
			return train_launch(argc, argv, i, n);
		break;
	}

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		int rc = zinf_config_override_arg(&ov, argc, argv, &i, err, sizeof(err));
		if (rc == 0) {
			i--; /* it advanced past what it used; the loop adds one */
			continue;
		}
		if (rc != -ENOENT) {
			fprintf(stderr, "zinf train: %s\n", err);
			return 2;
		}
		long x;
		if (!strcmp(a, "--no_shuffle")) {
			no_shuffle = true;
			continue;
		}
		if (!strcmp(a, "--gradient_checkpointing")) {
			recompute = true;
			continue;
		}
		if (!strcmp(a, "--export")) {
			export16 = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "zinf train: %s needs a value (see zinf train --help)\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--config") || !strcmp(a, "--deepspeed") ||
		    !strcmp(a, "--deepspeed_config"))
			config = v;
		else if (!strcmp(a, "--model"))
			model = v;
		else if (!strcmp(a, "--data"))
			data = v;
		else if (!strcmp(a, "--val_data"))
			val_data = v;
		else if (!strcmp(a, "--out"))
			out = v;
		else if (!strcmp(a, "--resume"))
			resume = v;
		else if (!strcmp(a, "--device"))
			device = v;
		else if (!strcmp(a, "--num_gpus"))
			; /* handled above */
		else if (!strcmp(a, "--gpu_mem")) {
			if (zinf_cli_parse_size("zinf train", a, v, &gpu_mem))
				return 2;
		}
		else if (!strcmp(a, "--steps") || !strcmp(a, "--seq_len") ||
		         !strcmp(a, "--save_steps") || !strcmp(a, "--eval_steps") ||
		         !strcmp(a, "--seed") || !strcmp(a, "--threads")) {
			if (parse_long(a, v, !strcmp(a, "--steps") || !strcmp(a, "--seq_len") ? 1 : 0,
			               &x))
				return 2;
			if (!strcmp(a, "--steps")) {
				steps = x;
				steps_given = true;
			} else if (!strcmp(a, "--seq_len")) {
				seq_len = x;
			} else if (!strcmp(a, "--save_steps")) {
				save_steps = x;
			} else if (!strcmp(a, "--eval_steps")) {
				eval_steps = x;
			} else if (!strcmp(a, "--seed")) {
				seed = x;
			} else {
				threads = x;
			}
		} else {
			fprintf(stderr, "zinf train: unknown option '%s'\n\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "gpu")) {
		fprintf(stderr, "zinf train: --device %s: use auto, cpu or gpu\n", device);
		return 2;
	}
	if (save_steps && !out) {
		fprintf(stderr, "zinf train: --save_steps needs --out DIR (where checkpoints go)\n");
		return 2;
	}
	if (ov.given & (1u << ZINF_OV_MAX_STEPS)) {
		if (steps_given && (long)ov.value[ZINF_OV_MAX_STEPS] != steps) {
			fprintf(stderr, "zinf train: --steps %ld and --max_steps %.0f disagree\n",
			        steps, ov.value[ZINF_OV_MAX_STEPS]);
			return 2;
		}
		steps = (long)ov.value[ZINF_OV_MAX_STEPS];
	}

	char why[256];
	bool gpu = !strcmp(device, "gpu") || (!strcmp(device, "auto") &&
	                                      offload_gpu_probe(why, sizeof(why)));
	if (gpu_mem && !gpu) {
		fprintf(stderr, "zinf train: --gpu_mem bounds the GPU memory of a GPU run, and this "
		        "run is on the CPU (%s); drop --gpu_mem or run on a GPU\n",
		        strcmp(device, "cpu") ? "no usable GPU" : "--device cpu");
		return 2;
	}
	/* what "auto" becomes when no flag says */
	set_default(&ov, ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE, 8);
	set_default(&ov, ZINF_OV_GRADIENT_ACCUMULATION_STEPS, 1);
	set_default(&ov, ZINF_OV_MAX_GRAD_NORM, 1.0);
	set_default(&ov, ZINF_OV_LEARNING_RATE, 3e-3);
	set_default(&ov, ZINF_OV_WEIGHT_DECAY, 0.01);
	set_default(&ov, ZINF_OV_WARMUP_STEPS, steps / 10 > 2 ? (double)(steps / 10) : 2);
	set_default(&ov, ZINF_OV_MAX_STEPS, (double)steps);
	if (gpu && !config)
		set_default(&ov, ZINF_OV_BF16, 1);

	zinf_model_config mc;
	char weights[4096];
	if (zinf_model_resolve(model, &mc, weights, sizeof(weights), err, sizeof(err))) {
		fprintf(stderr, "zinf train: --model: %s\n", err);
		return 2;
	}
	zinf_config cfg;
	zinf_config_init_defaults(&cfg);
	int rc = config ? zinf_config_load_file(config, &ov, &cfg, err, sizeof(err))
	                : zinf_config_load_string("(built-in config)", builtin_config, &ov, &cfg,
	                                          err, sizeof(err));
	if (!rc)
		rc = zinf_config_resolve(&cfg, world, mc.d_model, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s\n", err);
		return rc == -EINVAL ? 2 : 1;
	}

	/* data: the given glob, or the built-in corpus byte-encoded into temporary shards */
	char tmpdir[4096], train_path[4200], val_path[4200];
	bool made_data = false;
	if (!data) {
		const char *base = getenv("TMPDIR");
		snprintf(tmpdir, sizeof(tmpdir), "%s/zinf-train-XXXXXX", base && *base ? base : "/tmp");
		if (!mkdtemp(tmpdir)) {
			fprintf(stderr, "zinf train: cannot create %s: %s\n", tmpdir, strerror(errno));
			return 1;
		}
		snprintf(train_path, sizeof(train_path), "%s/train.bin", tmpdir);
		snprintf(val_path, sizeof(val_path), "%s/val.bin", tmpdir);
		if (zinf_data_write_default_shards(train_path, val_path, 0.05, err, sizeof(err))) {
			fprintf(stderr, "zinf train: built-in corpus: %s\n", err);
			rmdir(tmpdir);
			return 1;
		}
		made_data = true;
		data = train_path;
		if (!val_data) {
			val_data = val_path;
			if (!eval_steps)
				eval_steps = steps / 4 > 0 ? steps / 4 : 1;
		}
		printf("zinf train: built-in corpus (%u KiB of generated English-like text, byte "
		       "tokens) in %s\n", ZINF_DEFAULT_CORPUS_BYTES >> 10, tmpdir);
	}

	int code = 1;
	zinf_engine *e = NULL;
	zinf_loader *tl = NULL, *vl = NULL;
	int32_t *tok = NULL, *tgt = NULL;
	zinf_engine_opts eo;
	zinf_engine_opts_init(&eo);
	eo.device = gpu ? ZINF_ENGINE_GPU : ZINF_ENGINE_CPU;
	eo.seed = (uint64_t)seed;
	eo.recompute = recompute;
	if (recompute && !gpu)
		fprintf(stderr, "zinf train: note: --gradient_checkpointing recomputes on the GPU "
		                "model only; the CPU model keeps every activation\n");
	eo.weights = weights[0] ? weights : NULL;
	eo.seq_len = (int)seq_len;
	eo.threads = (int)threads;
	eo.rank = rank;
	eo.world_size = world;
	eo.gpu_device = local_rank;
	eo.gpu_mem_budget = gpu_mem;
	rc = zinf_engine_create(&mc, &cfg, &eo, &e, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "zinf train: %s\n", err);
		code = rc == -EINVAL ? 2 : 1;
		goto out;
	}
	int B = zinf_engine_micro_batch(e);
	zinf_loader_opts lo;
	zinf_loader_opts_init(&lo);
	lo.glob = data;
	lo.B = B;
	lo.T = (int)seq_len;
	lo.vocab_size = (uint64_t)mc.vocab_size;
	lo.shuffle = !no_shuffle;
	lo.seed = (uint64_t)seed;
	lo.rank = rank;
	lo.world_size = world;
	if (zinf_loader_open(&tl, &lo, err, sizeof(err))) {
		fprintf(stderr, "zinf train: --data: %s\n", err);
		goto out;
	}
	if (val_data && eval_steps) {
		lo.glob = val_data;
		lo.shuffle = false;
		if (zinf_loader_open(&vl, &lo, err, sizeof(err))) {
			fprintf(stderr, "zinf train: --val_data: %s\n", err);
			goto out;
		}
	}
	tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)seq_len);
	tgt = malloc(sizeof(int32_t) * (size_t)B * (size_t)seq_len);
	if (!tok || !tgt) {
		fprintf(stderr, "zinf train: out of memory\n");
		goto out;
	}
	if (resume) {
		void *client = NULL;
		size_t clen = 0;
		zinf_loader_state ls;
		if (zinf_engine_load(e, resume, &client, &clen)) {
			fprintf(stderr, "zinf train: --resume: %s\n", zinf_engine_error(e));
			goto out;
		}
		rc = zinf_loader_state_decode(client, clen, &ls, err, sizeof(err));
		if (!rc)
			rc = zinf_loader_set_state(tl, &ls, err, sizeof(err));
		free(client);
		if (rc) {
			fprintf(stderr, "zinf train: --resume %s: data loader state: %s (resume with "
			        "the same --data, batch size and --seq_len)\n", resume, err);
			goto out;
		}
	}
	zinf_engine_stats st;
	zinf_engine_get_stats(e, &st);
	int64_t start = st.global_steps;
	int64_t A = zinf_engine_accum_steps(e);
	printf("zinf train: %s (%.2fM params) on %s, %s, micro-batch %d x %ld tokens x %lld "
	       "accumulation, %ld steps%s\n", mc.name, (double)zinf_engine_layout(e)->n_params / 1e6,
	       gpu ? "GPU" : "CPU",
	       cfg.fp16_enabled                                              ? "fp16"
	       : cfg.bf16_enabled                                            ? "bf16"
	       : cfg.offload_param.device != ZINF_DEVICE_NONE && cfg.stage == 3
	               ? "fp32 on bf16-stored parameters (offload_param)"
	               : "fp32",
	       B, seq_len, (long long)A, steps, start ? " (resumed)" : "");
	if (world > 1) {
		zinf_engine_memory em;
		zinf_engine_get_memory(e, &em);
		printf("rank %d of %d, ZeRO stage %lld: optimizer state for %lld of %lld elements "
		       "(%.1f MiB), gradients %.1f MiB; losses below are this rank's batches\n", rank,
		       world, (long long)cfg.stage, (long long)em.opt_numel,
		       (long long)zinf_engine_layout(e)->total_numel,
		       (double)(em.opt_bytes[0] + em.opt_bytes[1] + em.opt_bytes[2]) / 1048576.0,
		       (double)em.grad_bytes / 1048576.0);
	}
	if (start)
		printf("resumed at step %lld from %s\n", (long long)start, resume);

	double t0 = iosched_now_s(), tlast = t0;
	uint64_t tok_last = st.tokens, tok_start = st.tokens;
	float first_loss = NAN, last_loss = NAN, loss_avg = 0;
	int nloss = 0;
	double val_loss = NAN;
	for (int64_t s = start; s < steps; s++) {
		double lsum = 0;
		for (int64_t a = 0; a < A; a++) {
			float loss;
			if (zinf_loader_next(tl, tok, tgt, err, sizeof(err))) {
				fprintf(stderr, "zinf train: data: %s\n", err);
				goto out;
			}
			rc = zinf_engine_forward(e, tok, tgt, &loss);
			if (!rc)
				rc = zinf_engine_backward(e);
			if (!rc)
				rc = zinf_engine_step(e);
			if (rc) {
				fprintf(stderr, "zinf train: step %lld: %s\n", (long long)s + 1,
				        zinf_engine_error(e));
				goto out;
			}
			lsum += loss;
		}
		float loss = (float)(lsum / (double)A);
		if (isnan(first_loss))
			first_loss = loss;
		last_loss = loss;
		loss_avg += loss;
		nloss++;
		zinf_engine_get_stats(e, &st);
		if (st.last == ZINF_STEP_SKIPPED)
			printf("%s\n", st.last_msg);
		int64_t done = s + 1;
		if (done % cfg.steps_per_print == 0 || done == steps) {
			double t = iosched_now_s();
			double tps = (double)(st.tokens - tok_last) / (t - tlast);
			char eta[32];
			fmt_time((double)(steps - done) * (t - t0) / (double)(done - start), eta,
			         sizeof(eta));
			printf("step %5lld/%ld | loss %.4f | lr %.3e | grad norm %.3f | loss scale %g | "
			       "%.0f tok/s | ETA %s\n", (long long)done, steps, (double)(loss_avg / nloss),
			       st.lr, (double)st.grad_norm, st.loss_scale, tps, eta);
			if (cfg.wall_clock_breakdown)
				printf("  time: forward %.1f ms | backward %.1f ms | step %.1f ms | io "
				       "%.1f ms (cumulative per step)\n",
				       1e3 * st.t_forward / (double)(done - start),
				       1e3 * st.t_backward / (double)(done - start),
				       1e3 * st.t_step / (double)(done - start),
				       1e3 * st.t_io / (double)(done - start));
			if (cfg.wall_clock_breakdown &&
			    cfg.offload_optimizer.device != ZINF_DEVICE_NONE)
				printf("  optimizer offload: nvme read %.2f GB + written %.2f GB per step | "
				       "host buffers peak %.3f GiB\n",
				       1e-9 * (double)st.opt_nvme_read / (double)(done - start),
				       1e-9 * (double)st.opt_nvme_written / (double)(done - start),
				       (double)st.host_pinned_peak / (double)(1u << 30));
			if (cfg.wall_clock_breakdown && cfg.stage == 3 &&
			    cfg.offload_param.device != ZINF_DEVICE_NONE) {
				/* since create: the initial write is in the first step's share */
				double k = 1.0 / (double)(done - start);
				printf("  parameter store: nvme read %.2f GB + written %.2f GB | waiting for "
				       "reads %.1f ms, for buffers %.1f ms, in flush %.1f ms | optimizer "
				       "writes %.1f ms (buffer allocation %.1f, copies %.1f, submitting "
				       "%.1f) (per step)\n",
				       1e-9 * (double)st.param_nvme_read * k,
				       1e-9 * (double)st.param_nvme_written * k,
				       1e3 * st.t_param_read_wait * k, 1e3 * st.t_param_buffer_wait * k,
				       1e3 * st.t_param_flush * k, 1e3 * st.t_param_write * k,
				       1e3 * st.t_param_write_alloc * k, 1e3 * st.t_param_write_copy * k,
				       1e3 * st.t_param_write_submit * k);
			}
			fflush(stdout);
			tlast = t;
			tok_last = st.tokens;
			loss_avg = 0;
			nloss = 0;
		}
		if (vl && (done % eval_steps == 0 || done == steps)) {
			if (validate(e, vl, 20, tok, tgt, &val_loss))
				goto out;
			printf("step %5lld/%ld | val loss %.4f\n", (long long)done, steps, val_loss);
		}
		if (save_steps && (done % save_steps == 0 || done == steps)) {
			zinf_loader_state ls;
			uint8_t buf[ZINF_LOADER_STATE_BYTES];
			zinf_loader_get_state(tl, &ls);
			zinf_loader_state_encode(&ls, buf);
			if (zinf_engine_save(e, out, NULL, buf, sizeof(buf), export16)) {
				fprintf(stderr, "zinf train: %s\n", zinf_engine_error(e));
				goto out;
			}
			if (rank == 0)
				printf("saved %s/global_step%lld\n", out, (long long)done);
		}
	}
	double total = iosched_now_s() - t0;
	zinf_engine_get_stats(e, &st);
	char tt[32];
	fmt_time(total, tt, sizeof(tt));
	printf("done: %lld steps in %s | first loss %.4f, last %.4f | %.0f tok/s | %lld skipped "
	       "steps\n", (long long)(steps - start), tt, (double)first_loss, (double)last_loss,
	       total > 0 ? (double)(st.tokens - tok_start) / total : 0.0,
	       (long long)st.skipped_steps);
	if (!isnan(val_loss))
		printf("final val loss %.4f\n", val_loss);
	if (gpu) {
		zinf_engine_memory em;
		zinf_engine_get_memory(e, &em);
		const double G = (double)(1u << 30);
		printf("memory: GPU %.2f GiB used at peak (cudaMemGetInfo, this engine)", (double)em.gpu_used_peak / G);
		if (gpu_mem)
			printf(", budget %.2f GiB", (double)gpu_mem / G);
		if (em.gpu_slot_peak)
			printf(" | stage-3 slots peak %.2f GiB", (double)em.gpu_slot_peak / G);
		if (em.param_tier)
			printf(" | 16-bit params on %s: %.2f GiB, host buffers peak %.2f GiB, NVMe "
			       "read %.2f GB written %.2f GB", em.param_tier == 2 ? "NVMe" : "host",
			       (double)em.param_bytes / G, (double)em.param_host_peak / G,
			       1e-9 * (double)em.param_nvme_read, 1e-9 * (double)em.param_nvme_written);
		printf("\n");
	}
	code = 0;
out:
	free(tok);
	free(tgt);
	zinf_loader_close(tl);
	zinf_loader_close(vl);
	zinf_engine_destroy(e);
	if (made_data) {
		unlink(train_path);
		unlink(val_path);
		rmdir(tmpdir);
	}
	return code;
}
