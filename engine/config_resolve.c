/* engine/config: resolve a loaded config for a world size and a model (batch relations,
 * model-sized "auto", stage vs offload, NVMe paths) and plan its memory per tier. */
#define _GNU_SOURCE
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define FAIL(...) zinf_cfg_fail(cfg, err, errlen, __VA_ARGS__)

/* "auto" that a flag or the model must fill: fill from the model, or say what is missing. */
static int
resolve_auto(zinf_config *cfg, int64_t hidden, char *err, size_t errlen)
{
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		const cfg_key_def *d = zinf_cfg_key(k);
		if (!cfg->pending[k] || d->auto_kind == CFG_AUTO_BATCH)
			continue;
		int64_t *p = (int64_t *)((char *)cfg + d->off);
		switch (d->auto_kind) {
		case CFG_AUTO_HIDDEN_SQ:
		case CFG_AUTO_HIDDEN_SQ_0_9:
		case CFG_AUTO_HIDDEN_X10:
			if (hidden <= 0)
				return FAIL("%s is \"auto\" (%s) and no model is given: pass "
				            "--hidden H (the model's hidden size)",
				            d->path, zinf_config_key_auto_rule(k));
			if (d->auto_kind == CFG_AUTO_HIDDEN_SQ)
				*p = hidden * hidden;
			else if (d->auto_kind == CFG_AUTO_HIDDEN_SQ_0_9)
				*p = (int64_t)(0.9 * (double)hidden * (double)hidden);
			else
				*p = 10 * hidden;
			cfg->pending[k] = 0;
			break;
		case CFG_AUTO_FLAG:
			if (d->type == CFG_PAIR)
				return FAIL(
				        "%s is \"auto\" and nothing fills it: pass --adam_beta1 B1 "
				        "--adam_beta2 B2",
				        d->path);
			return FAIL("%s is \"auto\" and nothing fills it: pass %s %s", d->path,
			            zinf_config_key_auto_rule(k), d->type == CFG_INT ? "N" : "X");
		default:
			return FAIL("%s is \"auto\" and nothing fills it", d->path);
		}
	}
	return 0;
}

static int
mul3(int64_t a, int64_t b, int64_t c, int64_t *out)
{
	int64_t ab;
	return __builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, out) ? -1 : 0;
}

static int
resolve_batch(zinf_config *cfg, int64_t w, char *err, size_t errlen)
{
	unsigned char *src = cfg->src;
	bool hb = src[ZINF_KEY_TRAIN_BATCH_SIZE] == ZINF_SRC_FILE;
	bool hm = src[ZINF_KEY_TRAIN_MICRO_BATCH_SIZE_PER_GPU] != ZINF_SRC_DEFAULT;
	bool ha = src[ZINF_KEY_GRADIENT_ACCUMULATION_STEPS] != ZINF_SRC_DEFAULT;
	int64_t b = cfg->train_batch_size, m = cfg->train_micro_batch_size_per_gpu;
	int64_t a = cfg->gradient_accumulation_steps, prod;
	const char *B = "train_batch_size", *M = "train_micro_batch_size_per_gpu",
	           *A = "gradient_accumulation_steps";

	if (hb && hm && ha) {
		if (mul3(m, a, w, &prod))
			return FAIL("%s %lld x %s %lld x world size %lld overflows", M,
			            (long long)m, A, (long long)a, (long long)w);
		if (prod == b)
			return 0;
		char alt[256] = "";
		if (b % (m * a) == 0)
			snprintf(alt, sizeof(alt), ", or run on %lld ranks (--num_gpus %lld)",
			         (long long)(b / (m * a)), (long long)(b / (m * a)));
		else if (b % (m * w) == 0)
			snprintf(alt, sizeof(alt), ", or set %s to %lld", A,
			         (long long)(b / (m * w)));
		return FAIL("%s %lld != %s %lld x %s %lld x world size %lld (= %lld): set %s to "
		            "%lld%s",
		            B, (long long)b, M, (long long)m, A, (long long)a, (long long)w,
		            (long long)prod, B, (long long)prod, alt);
	}
	if (hb && (hm || ha)) {
		/* The given one of micro / accum and the world size divide the batch. */
		int64_t given = hm ? m : a;
		int key = hm ? ZINF_KEY_GRADIENT_ACCUMULATION_STEPS
		             : ZINF_KEY_TRAIN_MICRO_BATCH_SIZE_PER_GPU;
		const char *G = hm ? M : A, *D = hm ? A : M;
		int64_t gw;
		if (__builtin_mul_overflow(given, w, &gw))
			return FAIL("%s %lld x world size %lld overflows", G, (long long)given,
			            (long long)w);
		if (b % gw)
			return FAIL("%s %lld is not a multiple of %s %lld x world size %lld "
			            "(= %lld), so %s cannot be derived: set %s to a multiple of "
			            "%lld, or give %s",
			            B, (long long)b, G, (long long)given, (long long)w,
			            (long long)(given * w), D, B, (long long)(given * w), D);
		if (hm)
			cfg->gradient_accumulation_steps = b / (m * w);
		else
			cfg->train_micro_batch_size_per_gpu = b / (a * w);
		src[key] = ZINF_SRC_DERIVED;
		return 0;
	}
	if (hb) {
		if (b % w)
			return FAIL("%s %lld is not a multiple of world size %lld: set it to a "
			            "multiple of %lld, or give %s and %s",
			            B, (long long)b, (long long)w, (long long)w, M, A);
		cfg->train_micro_batch_size_per_gpu = b / w;
		src[ZINF_KEY_TRAIN_MICRO_BATCH_SIZE_PER_GPU] = ZINF_SRC_DERIVED;
		src[ZINF_KEY_GRADIENT_ACCUMULATION_STEPS] = ZINF_SRC_DERIVED;
		cfg->gradient_accumulation_steps = 1;
		return 0;
	}
	if (!hm)
		return FAIL("neither %s nor %s is set: give one (or \"auto\" with "
		            "--per_device_train_batch_size N)",
		            B, M);
	if (mul3(m, a, w, &prod))
		return FAIL("%s %lld x %s %lld x world size %lld overflows", M, (long long)m, A,
		            (long long)a, (long long)w);
	cfg->train_batch_size = prod;
	if (!cfg->pending[ZINF_KEY_TRAIN_BATCH_SIZE])
		src[ZINF_KEY_TRAIN_BATCH_SIZE] = ZINF_SRC_DERIVED;
	cfg->pending[ZINF_KEY_TRAIN_BATCH_SIZE] = 0;
	if (!ha)
		src[ZINF_KEY_GRADIENT_ACCUMULATION_STEPS] = ZINF_SRC_DEFAULT;
	return 0;
}

static int
check_nvme(zinf_config *cfg, const zinf_config_offload *o, int key, char *err, size_t errlen)
{
	const char *path = zinf_config_key_path(key);
	if (!*o->nvme_path)
		return FAIL("%.*s.device is nvme but %s is not set: add \"nvme_path\": \"DIR\" or "
		            "pass --nvme_path DIR",
		            (int)(strlen(path) - strlen(".nvme_path")), path, path);
	struct stat st;
	if (stat(o->nvme_path, &st))
		return FAIL("%s %s: %s: pass --nvme_path DIR with a folder on an NVMe disk", path,
		            o->nvme_path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return FAIL("%s %s is not a folder: pass --nvme_path DIR with a folder on an NVMe "
		            "disk",
		            path, o->nvme_path);
	return 0;
}

int
zinf_config_resolve(zinf_config *cfg, int64_t world_size, int64_t model_hidden, char *err,
                    size_t errlen)
{
	int rc;
	if (world_size < 1 || world_size > (1 << 20))
		return FAIL("world size %lld is out of range: pass --num_gpus between 1 and %d",
		            (long long)world_size, 1 << 20);
	if (model_hidden < 0 || model_hidden > (1 << 24))
		return FAIL("model hidden size %lld is out of range [1, %d]",
		            (long long)model_hidden, 1 << 24);
	cfg->world_size = world_size;
	cfg->model_hidden = model_hidden;
	if ((rc = resolve_auto(cfg, model_hidden, err, errlen)))
		return rc;
	if ((rc = resolve_batch(cfg, world_size, err, errlen)))
		return rc;

	zinf_scheduler_type st = cfg->scheduler_type;
	if ((st == ZINF_SCHEDULER_WARMUP_DECAY_LR || st == ZINF_SCHEDULER_WARMUP_COSINE_LR) &&
	    !cfg->total_num_steps)
		return FAIL("scheduler.params.total_num_steps is required by %s: set it, or write "
		            "\"auto\" and pass --max_steps N",
		            zinf_cfg_scheduler_name(st));
	if (cfg->total_num_steps && st != ZINF_SCHEDULER_NONE &&
	    cfg->warmup_num_steps > cfg->total_num_steps)
		return FAIL("scheduler.params.warmup_num_steps %lld is above total_num_steps %lld: "
		            "set warmup_num_steps to %lld or less",
		            (long long)cfg->warmup_num_steps, (long long)cfg->total_num_steps,
		            (long long)cfg->total_num_steps);

	const zinf_config_offload *oo = &cfg->offload_optimizer, *op = &cfg->offload_param;
	if (cfg->ac_cpu_checkpointing)
		return FAIL("activation_checkpointing.cpu_checkpointing is true: zinf keeps the "
		            "checkpointed layer inputs on the GPU and does not move them to host "
		            "memory; set it to false (recompute is switched on with "
		            "--gradient_checkpointing)");
	if (oo->device != ZINF_DEVICE_NONE && cfg->stage < 1)
		return FAIL("zero_optimization.offload_optimizer.device is %s but "
		            "zero_optimization.stage is 0: optimizer offload partitions the "
		            "optimizer state, set \"stage\" to 1, 2 or 3",
		            oo->device == ZINF_DEVICE_CPU ? "cpu" : "nvme");
	if (oo->device == ZINF_DEVICE_NVME && cfg->stage < 3)
		return FAIL("zero_optimization.offload_optimizer.device is nvme but "
		            "zero_optimization.stage is %lld: NVMe offload needs stage 3 (zinf "
		            "does not downgrade it): set \"stage\": 3, or use \"device\": \"cpu\"",
		            (long long)cfg->stage);
	if (op->device != ZINF_DEVICE_NONE && cfg->stage < 3)
		return FAIL("zero_optimization.offload_param.device is %s but "
		            "zero_optimization.stage is %lld: parameter offload needs stage 3 "
		            "(DeepSpeed ignores it silently): set \"stage\": 3, or remove "
		            "offload_param",
		            op->device == ZINF_DEVICE_CPU ? "cpu" : "nvme", (long long)cfg->stage);
	if (oo->device == ZINF_DEVICE_NVME &&
	    (rc = check_nvme(cfg, oo, ZINF_KEY_OOPT_NVME_PATH, err, errlen)))
		return rc;
	if (op->device == ZINF_DEVICE_NVME &&
	    (rc = check_nvme(cfg, op, ZINF_KEY_OPARAM_NVME_PATH, err, errlen)))
		return rc;
	if (cfg->aio_block_size % 4096) {
		int64_t lo = cfg->aio_block_size / 4096 * 4096;
		return FAIL("aio.block_size %lld is not a multiple of 4096 (O_DIRECT alignment): "
		            "set it to %lld or %lld",
		            (long long)cfg->aio_block_size, (long long)(lo ? lo : 4096),
		            (long long)(lo + 4096));
	}
	/* overlap_comm unset: on at every stage. DeepSpeed turns it on by default only for stage
	 * 3, because its overlap costs extra bucket buffers; zinf reduces the gradients in place
	 * (zero_bucket.h, zero3_gpu.c), so overlapping costs no memory. false in the file is
	 * honoured. */
	if (cfg->src[ZINF_KEY_ZERO_OVERLAP_COMM] == ZINF_SRC_DEFAULT)
		cfg->overlap_comm = true;
	cfg->resolved = true;
	return 0;
}

/* ---- memory plan ---- */

static zinf_tier
tier_of(zinf_offload_device d)
{
	return d == ZINF_DEVICE_NVME  ? ZINF_TIER_NVME
	       : d == ZINF_DEVICE_CPU ? ZINF_TIER_HOST
	                              : ZINF_TIER_GPU;
}

static void
plan_add(zinf_memory_plan *plan, const char *what, zinf_tier t, uint64_t bytes)
{
	if (plan->n_items >= ZINF_PLAN_MAX_ITEMS)
		return;
	plan->item[plan->n_items].what = what;
	plan->item[plan->n_items].tier = t;
	plan->item[plan->n_items].bytes = bytes;
	plan->n_items++;
	plan->per_tier[t] += bytes;
}

int
zinf_config_memory_plan(const zinf_config *cfg, uint64_t n_params, zinf_memory_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	if (!cfg->resolved || !n_params || n_params > (1ull << 50))
		return -EINVAL;
	uint64_t w = (uint64_t)cfg->world_size;
	uint64_t n = (n_params + w - 1) / w;
	uint64_t b = cfg->fp16_enabled || cfg->bf16_enabled ? 2 : 4;
	int64_t s = cfg->stage;
	zinf_tier opt = tier_of(cfg->offload_optimizer.device);
	zinf_tier par = s == 3 ? tier_of(cfg->offload_param.device) : ZINF_TIER_GPU;
	uint64_t opt_elems = s >= 1 ? n : n_params;

	plan->partition_elems = n;
	plan_add(plan, b == 2 ? "16-bit params" : "fp32 params", par, b * (s == 3 ? n : n_params));
	/* zinf accumulates gradients in fp32; with offload_param the reduced partition is in
	 * pinned host memory (the optimizer reads it there) */
	plan_add(plan, "fp32 grads", s == 3 && par != ZINF_TIER_GPU ? ZINF_TIER_HOST : ZINF_TIER_GPU,
	         4 * (s >= 2 ? n : n_params));
	if (b == 2)
		plan_add(plan, "fp32 master", opt, 4 * opt_elems);
	plan_add(plan, "Adam m (fp32)", opt, 4 * opt_elems);
	plan_add(plan, "Adam v (fp32)", opt, 4 * opt_elems);
	if (opt == ZINF_TIER_NVME) {
		uint64_t sg = cfg->sub_group_size > 0 && (uint64_t)cfg->sub_group_size < n
		                      ? (uint64_t)cfg->sub_group_size
		                      : n;
		plan_add(plan, "optimizer swap buffers", ZINF_TIER_HOST,
		         (uint64_t)cfg->offload_optimizer.buffer_count * sg * 4);
	}
	if (par == ZINF_TIER_NVME)
		plan_add(plan, "param swap buffers", ZINF_TIER_HOST,
		         (uint64_t)cfg->offload_param.buffer_count *
		                 (uint64_t)cfg->offload_param.buffer_size * b);
	return 0;
}
