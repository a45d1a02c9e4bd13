/* engine/config: the key table (every ds_config.json key zinf reads, its type, DeepSpeed's
 * default, its limits and how "auto" fills it), the HF-style override flags, and printing. */
#define _GNU_SOURCE
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const bool_names[] = {"false", "true"};
static const char *const device_names[] = {"none", "cpu", "nvme"};
static const char *const optimizer_names[] = {"Adam", "AdamW"};
static const char *const scheduler_names[] = {"none", "WarmupLR", "WarmupDecayLR",
                                              "WarmupCosineLR"};
static const char *const warmup_names[] = {"log", "linear"};
static const char *const backend_names[] = {"auto", "io_uring", "libaio", "psync"};

#define N(a)   ((int)(sizeof(a) / sizeof((a)[0])))
#define OFF(f) offsetof(zinf_config, f)
#define BIG    9.007199254740992e15 /* 2^53: integers a double holds exactly */
#define E(n)   n, N(n)

/* path, type, auto, ov, alias, sched, field, default, default2, min, max, names */
/* clang-format off */
static const cfg_key_def keys[ZINF_KEY_COUNT] = {
	[ZINF_KEY_TRAIN_BATCH_SIZE] = {"train_batch_size", CFG_INT, CFG_AUTO_BATCH, -1, -1, 0,
		OFF(train_batch_size), 0, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_TRAIN_MICRO_BATCH_SIZE_PER_GPU] = {"train_micro_batch_size_per_gpu", CFG_INT,
		CFG_AUTO_FLAG, ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE, -1, 0,
		OFF(train_micro_batch_size_per_gpu), 0, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_GRADIENT_ACCUMULATION_STEPS] = {"gradient_accumulation_steps", CFG_INT,
		CFG_AUTO_FLAG, ZINF_OV_GRADIENT_ACCUMULATION_STEPS, -1, 0,
		OFF(gradient_accumulation_steps), 1, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_GRADIENT_CLIPPING] = {"gradient_clipping", CFG_NUM, CFG_AUTO_FLAG,
		ZINF_OV_MAX_GRAD_NORM, -1, 0, OFF(gradient_clipping), 0, 0, 0, HUGE_VAL, NULL, 0},
	[ZINF_KEY_STEPS_PER_PRINT] = {"steps_per_print", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(steps_per_print), 10, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_WALL_CLOCK_BREAKDOWN] = {"wall_clock_breakdown", CFG_BOOL, CFG_AUTO_NO, -1, -1,
		0, OFF(wall_clock_breakdown), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_FP16_ENABLED] = {"fp16.enabled", CFG_BOOL, CFG_AUTO_SWITCH, ZINF_OV_FP16, -1, 0,
		OFF(fp16_enabled), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_FP16_AUTO_CAST] = {"fp16.auto_cast", CFG_BOOL, CFG_AUTO_NO, -1, -1, 0,
		OFF(fp16_auto_cast), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_FP16_LOSS_SCALE] = {"fp16.loss_scale", CFG_NUM, CFG_AUTO_NO, -1, -1, 0,
		OFF(fp16_loss_scale), 0, 0, 0, 3.4e38, NULL, 0},
	[ZINF_KEY_FP16_INITIAL_SCALE_POWER] = {"fp16.initial_scale_power", CFG_INT, CFG_AUTO_NO,
		-1, -1, 0, OFF(fp16_initial_scale_power), 16, 0, 0, 127, NULL, 0},
	[ZINF_KEY_FP16_LOSS_SCALE_WINDOW] = {"fp16.loss_scale_window", CFG_INT, CFG_AUTO_NO, -1,
		-1, 0, OFF(fp16_loss_scale_window), 1000, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_FP16_HYSTERESIS] = {"fp16.hysteresis", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(fp16_hysteresis), 2, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_FP16_MIN_LOSS_SCALE] = {"fp16.min_loss_scale", CFG_NUM, CFG_AUTO_NO, -1, -1, 0,
		OFF(fp16_min_loss_scale), 1, 0, 0, 3.4e38, NULL, 0},
	[ZINF_KEY_FP16_CONSECUTIVE_HYSTERESIS] = {"fp16.consecutive_hysteresis", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(fp16_consecutive_hysteresis), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_BF16_ENABLED] = {"bf16.enabled", CFG_BOOL, CFG_AUTO_SWITCH, ZINF_OV_BF16, -1, 0,
		OFF(bf16_enabled), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AC_PARTITION_ACTIVATIONS] = {"activation_checkpointing.partition_activations",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(ac_partition_activations), 0, 0, 0, 1, NULL,
		0},
	[ZINF_KEY_AC_CPU_CHECKPOINTING] = {"activation_checkpointing.cpu_checkpointing", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(ac_cpu_checkpointing), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AC_CONTIGUOUS_MEMORY] = {
		"activation_checkpointing.contiguous_memory_optimization", CFG_BOOL, CFG_AUTO_NO, -1,
		-1, 0, OFF(ac_contiguous_memory), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AC_NUMBER_CHECKPOINTS] = {"activation_checkpointing.number_checkpoints", CFG_INT,
		CFG_AUTO_NO, -1, -1, 0, OFF(ac_number_checkpoints), 0, 0, 0, BIG, NULL, 0},
	[ZINF_KEY_AC_SYNCHRONIZE] = {"activation_checkpointing.synchronize_checkpoint_boundary",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(ac_synchronize), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AC_PROFILE] = {"activation_checkpointing.profile", CFG_BOOL, CFG_AUTO_NO, -1, -1,
		0, OFF(ac_profile), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OPTIMIZER_TYPE] = {"optimizer.type", CFG_ENUM, CFG_AUTO_NO, -1, -1, 0,
		OFF(optimizer_type), ZINF_OPTIMIZER_ADAMW, 0, 0, 0, E(optimizer_names)},
	[ZINF_KEY_OPTIMIZER_LR] = {"optimizer.params.lr", CFG_NUM, CFG_AUTO_FLAG,
		ZINF_OV_LEARNING_RATE, -1, 0, OFF(lr), 1e-3, 0, 0, 1e3, NULL, 0},
	[ZINF_KEY_OPTIMIZER_BETAS] = {"optimizer.params.betas", CFG_PAIR, CFG_AUTO_FLAG,
		ZINF_OV_ADAM_BETA1, -1, 0, OFF(betas), 0.9, 0.999, 0, 0.999999999, NULL, 0},
	[ZINF_KEY_OPTIMIZER_EPS] = {"optimizer.params.eps", CFG_NUM, CFG_AUTO_FLAG,
		ZINF_OV_ADAM_EPSILON, -1, 0, OFF(eps), 1e-8, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OPTIMIZER_WEIGHT_DECAY] = {"optimizer.params.weight_decay", CFG_NUM,
		CFG_AUTO_FLAG, ZINF_OV_WEIGHT_DECAY, -1, 0, OFF(weight_decay), 0, 0, 0, 1e3, NULL,
		0},
	[ZINF_KEY_SCHEDULER_TYPE] = {"scheduler.type", CFG_ENUM, CFG_AUTO_NO, -1, -1, 0,
		OFF(scheduler_type), ZINF_SCHEDULER_NONE, 0, 0, 0, E(scheduler_names)},
	[ZINF_KEY_SCHED_WARMUP_MIN_LR] = {"scheduler.params.warmup_min_lr", CFG_NUM,
		CFG_AUTO_ZERO, -1, -1, SCHED_LR | SCHED_DECAY, OFF(warmup_min_lr), 0, 0, 0, 1e3,
		NULL, 0},
	[ZINF_KEY_SCHED_WARMUP_MAX_LR] = {"scheduler.params.warmup_max_lr", CFG_NUM,
		CFG_AUTO_FLAG, ZINF_OV_LEARNING_RATE, -1, SCHED_LR | SCHED_DECAY,
		OFF(warmup_max_lr), 1e-3, 0, 0, 1e3, NULL, 0},
	[ZINF_KEY_SCHED_WARMUP_NUM_STEPS] = {"scheduler.params.warmup_num_steps", CFG_INT,
		CFG_AUTO_FLAG, ZINF_OV_WARMUP_STEPS, -1, SCHED_LR | SCHED_DECAY | SCHED_COSINE,
		OFF(warmup_num_steps), 1000, 0, 0, BIG, NULL, 0},
	[ZINF_KEY_SCHED_WARMUP_TYPE] = {"scheduler.params.warmup_type", CFG_ENUM, CFG_AUTO_NO, -1,
		-1, SCHED_LR | SCHED_DECAY | SCHED_COSINE, OFF(warmup_type), ZINF_WARMUP_LOG, 0, 0,
		0, E(warmup_names)},
	[ZINF_KEY_SCHED_TOTAL_NUM_STEPS] = {"scheduler.params.total_num_steps", CFG_INT,
		CFG_AUTO_FLAG, ZINF_OV_MAX_STEPS, -1, SCHED_DECAY | SCHED_COSINE,
		OFF(total_num_steps), 0, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_SCHED_WARMUP_MIN_RATIO] = {"scheduler.params.warmup_min_ratio", CFG_NUM,
		CFG_AUTO_NO, -1, -1, SCHED_COSINE, OFF(warmup_min_ratio), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_SCHED_COS_MIN_RATIO] = {"scheduler.params.cos_min_ratio", CFG_NUM, CFG_AUTO_NO,
		-1, -1, SCHED_COSINE, OFF(cos_min_ratio), 1e-4, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_STAGE] = {"zero_optimization.stage", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(stage), 0, 0, 0, 3, NULL, 0},
	[ZINF_KEY_ZERO_OVERLAP_COMM] = {"zero_optimization.overlap_comm", CFG_BOOL, CFG_AUTO_NO,
		-1, -1, 0, OFF(overlap_comm), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_CONTIGUOUS_GRADIENTS] = {"zero_optimization.contiguous_gradients",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(contiguous_gradients), 1, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_SUB_GROUP_SIZE] = {"zero_optimization.sub_group_size", CFG_INT,
		CFG_AUTO_NO, -1, -1, 0, OFF(sub_group_size), 1e9, 0, 0, BIG, NULL, 0},
	[ZINF_KEY_ZERO_REDUCE_BUCKET_SIZE] = {"zero_optimization.reduce_bucket_size", CFG_INT,
		CFG_AUTO_HIDDEN_SQ, -1, -1, 0, OFF(reduce_bucket_size), 5e8, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_ZERO_ALLGATHER_BUCKET_SIZE] = {"zero_optimization.allgather_bucket_size",
		CFG_INT, CFG_AUTO_NO, -1, -1, 0, OFF(allgather_bucket_size), 5e8, 0, 1, BIG, NULL,
		0},
	[ZINF_KEY_ZERO_ALLGATHER_PARTITIONS] = {"zero_optimization.allgather_partitions",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(allgather_partitions), 1, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_REDUCE_SCATTER] = {"zero_optimization.reduce_scatter", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(reduce_scatter), 1, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_ROUND_ROBIN_GRADIENTS] = {"zero_optimization.round_robin_gradients",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(round_robin_gradients), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_ZERO_PREFETCH_BUCKET_SIZE] = {"zero_optimization.stage3_prefetch_bucket_size",
		CFG_INT, CFG_AUTO_HIDDEN_SQ_0_9, -1, -1, 0, OFF(prefetch_bucket_size), 5e7, 0, 0,
		BIG, NULL, 0},
	[ZINF_KEY_ZERO_PARAM_PERSISTENCE_THRESHOLD] = {
		"zero_optimization.stage3_param_persistence_threshold", CFG_INT,
		CFG_AUTO_HIDDEN_X10, -1, -1, 0, OFF(param_persistence_threshold), 1e5, 0, 0, BIG,
		NULL, 0},
	[ZINF_KEY_ZERO_MAX_LIVE_PARAMETERS] = {"zero_optimization.stage3_max_live_parameters",
		CFG_INT, CFG_AUTO_NO, -1, -1, 0, OFF(max_live_parameters), 1e9, 0, 0, BIG, NULL,
		0},
	[ZINF_KEY_ZERO_MAX_REUSE_DISTANCE] = {"zero_optimization.stage3_max_reuse_distance",
		CFG_INT, CFG_AUTO_NO, -1, -1, 0, OFF(max_reuse_distance), 1e9, 0, 0, BIG, NULL, 0},
	[ZINF_KEY_ZERO_GATHER_16BIT_ON_SAVE] = {
		"zero_optimization.stage3_gather_16bit_weights_on_model_save", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(gather_16bit_weights_on_model_save), 0, 0, 0, 1, NULL,
		0},
	[ZINF_KEY_ZERO_GATHER_FP16_ON_SAVE] = {
		"zero_optimization.stage3_gather_fp16_weights_on_model_save", CFG_BOOL,
		CFG_AUTO_NO, -1, ZINF_KEY_ZERO_GATHER_16BIT_ON_SAVE, 0,
		OFF(gather_16bit_weights_on_model_save), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OOPT_DEVICE] = {"zero_optimization.offload_optimizer.device", CFG_ENUM,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.device), ZINF_DEVICE_NONE, 0, 0, 0,
		E(device_names)},
	[ZINF_KEY_OOPT_NVME_PATH] = {"zero_optimization.offload_optimizer.nvme_path", CFG_STR,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.nvme_path), 0, 0, 0, 0, NULL, 0},
	[ZINF_KEY_OOPT_PIN_MEMORY] = {"zero_optimization.offload_optimizer.pin_memory", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.pin_memory), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OOPT_BUFFER_COUNT] = {"zero_optimization.offload_optimizer.buffer_count",
		CFG_INT, CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.buffer_count), 4, 0, 1,
		1024, NULL, 0},
	[ZINF_KEY_OOPT_FAST_INIT] = {"zero_optimization.offload_optimizer.fast_init", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.fast_init), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OOPT_PIPELINE_READ] = {"zero_optimization.offload_optimizer.pipeline_read",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.pipeline_read), 0, 0, 0, 1,
		NULL, 0},
	[ZINF_KEY_OOPT_PIPELINE_WRITE] = {"zero_optimization.offload_optimizer.pipeline_write",
		CFG_BOOL, CFG_AUTO_NO, -1, -1, 0, OFF(offload_optimizer.pipeline_write), 0, 0, 0,
		1, NULL, 0},
	[ZINF_KEY_OPARAM_DEVICE] = {"zero_optimization.offload_param.device", CFG_ENUM,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.device), ZINF_DEVICE_NONE, 0, 0, 0,
		E(device_names)},
	[ZINF_KEY_OPARAM_NVME_PATH] = {"zero_optimization.offload_param.nvme_path", CFG_STR,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.nvme_path), 0, 0, 0, 0, NULL, 0},
	[ZINF_KEY_OPARAM_PIN_MEMORY] = {"zero_optimization.offload_param.pin_memory", CFG_BOOL,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.pin_memory), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_OPARAM_BUFFER_COUNT] = {"zero_optimization.offload_param.buffer_count",
		CFG_INT, CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.buffer_count), 5, 0, 1, 1024,
		NULL, 0},
	[ZINF_KEY_OPARAM_BUFFER_SIZE] = {"zero_optimization.offload_param.buffer_size", CFG_INT,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.buffer_size), 1e8, 0, 1, BIG, NULL, 0},
	[ZINF_KEY_OPARAM_MAX_IN_CPU] = {"zero_optimization.offload_param.max_in_cpu", CFG_INT,
		CFG_AUTO_NO, -1, -1, 0, OFF(offload_param.max_in_cpu), 1e9, 0, 0, BIG, NULL, 0},
	[ZINF_KEY_AIO_BLOCK_SIZE] = {"aio.block_size", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_block_size), 1048576, 0, 4096, 1 << 30, NULL, 0},
	[ZINF_KEY_AIO_QUEUE_DEPTH] = {"aio.queue_depth", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_queue_depth), 8, 0, 1, 4096, NULL, 0},
	[ZINF_KEY_AIO_THREAD_COUNT] = {"aio.thread_count", CFG_INT, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_thread_count), 1, 0, 1, 256, NULL, 0},
	[ZINF_KEY_AIO_INTRA_OP_PARALLELISM] = {"aio.intra_op_parallelism", CFG_INT, CFG_AUTO_NO,
		-1, ZINF_KEY_AIO_THREAD_COUNT, 0, OFF(aio_thread_count), 1, 0, 1, 256, NULL, 0},
	[ZINF_KEY_AIO_SINGLE_SUBMIT] = {"aio.single_submit", CFG_BOOL, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_single_submit), 0, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AIO_OVERLAP_EVENTS] = {"aio.overlap_events", CFG_BOOL, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_overlap_events), 1, 0, 0, 1, NULL, 0},
	[ZINF_KEY_AIO_BACKEND] = {"aio.backend", CFG_ENUM, CFG_AUTO_NO, -1, -1, 0,
		OFF(aio_backend), ZINF_AIO_AUTO, 0, 0, 0, E(backend_names)},
};
/* clang-format on */

static const char *const sections[] = {
        "",
        "fp16",
        "bf16",
        "optimizer",
        "optimizer.params",
        "scheduler",
        "scheduler.params",
        "zero_optimization",
        "zero_optimization.offload_optimizer",
        "zero_optimization.offload_param",
        "aio",
        "activation_checkpointing",
};

const cfg_key_def *
zinf_cfg_key(int k)
{
	return k >= 0 && k < ZINF_KEY_COUNT ? &keys[k] : NULL;
}

const char *
zinf_cfg_section(int i)
{
	return i >= 0 && i < N(sections) ? sections[i] : NULL;
}

int
zinf_cfg_fail(const zinf_config *cfg, char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		int n = snprintf(err, errlen, "%s: ", cfg->path);
		if (n >= 0 && (size_t)n < errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

int
zinf_cfg_is_section(const char *path)
{
	for (int i = 0; i < N(sections); i++)
		if (!strcmp(path, sections[i]))
			return 1;
	return 0;
}

const char *
zinf_cfg_scheduler_name(zinf_scheduler_type t)
{
	return (unsigned)t < (unsigned)N(scheduler_names) ? scheduler_names[t] : "?";
}

const char *
zinf_config_key_path(zinf_config_key k)
{
	return zinf_cfg_key((int)k) ? keys[k].path : NULL;
}

zinf_config_key
zinf_config_key_canonical(zinf_config_key k)
{
	const cfg_key_def *d = zinf_cfg_key((int)k);
	return d && d->alias_of >= 0 ? (zinf_config_key)d->alias_of : k;
}

const char *
zinf_config_source_name(zinf_config_source s)
{
	static const char *const names[] = {"default", "file", "auto", "flag", "derived"};
	return (unsigned)s < (unsigned)N(names) ? names[s] : "?";
}

const char *
zinf_tier_name(zinf_tier t)
{
	static const char *const names[] = {"GPU", "host", "NVMe"};
	return (unsigned)t < (unsigned)N(names) ? names[t] : "?";
}

/* ---- override flags ---- */

static const struct {
	const char *flag;
	int is_int, is_switch;
	double min, max;
} ov_defs[ZINF_OV_COUNT] = {
        [ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE] = {"--per_device_train_batch_size", 1, 0, 1, BIG},
        [ZINF_OV_GRADIENT_ACCUMULATION_STEPS] = {"--gradient_accumulation_steps", 1, 0, 1, BIG},
        [ZINF_OV_MAX_GRAD_NORM] = {"--max_grad_norm", 0, 0, 0, HUGE_VAL},
        [ZINF_OV_LEARNING_RATE] = {"--learning_rate", 0, 0, 0, 1e3},
        [ZINF_OV_WEIGHT_DECAY] = {"--weight_decay", 0, 0, 0, 1e3},
        [ZINF_OV_ADAM_BETA1] = {"--adam_beta1", 0, 0, 0, 0.999999999},
        [ZINF_OV_ADAM_BETA2] = {"--adam_beta2", 0, 0, 0, 0.999999999},
        [ZINF_OV_ADAM_EPSILON] = {"--adam_epsilon", 0, 0, 0, 1},
        [ZINF_OV_WARMUP_STEPS] = {"--warmup_steps", 1, 0, 0, BIG},
        [ZINF_OV_MAX_STEPS] = {"--max_steps", 1, 0, 1, BIG},
        [ZINF_OV_FP16] = {"--fp16", 0, 1, 0, 1},
        [ZINF_OV_BF16] = {"--bf16", 0, 1, 0, 1},
};

void
zinf_config_overrides_init(zinf_config_overrides *ov)
{
	memset(ov, 0, sizeof(*ov));
}

const char *
zinf_config_override_flag(zinf_override o)
{
	return (unsigned)o < ZINF_OV_COUNT ? ov_defs[o].flag : "?";
}

const char *
zinf_config_key_auto_rule(zinf_config_key k)
{
	const cfg_key_def *d = zinf_cfg_key((int)k);
	if (!d)
		return NULL;
	switch (d->auto_kind) {
	case CFG_AUTO_FLAG:
		if (d->type == CFG_PAIR)
			return "--adam_beta1 and --adam_beta2";
		return ov_defs[d->ov].flag;
	case CFG_AUTO_SWITCH:
		return d->ov == ZINF_OV_FP16 ? "--fp16 (absent: false)" : "--bf16 (absent: false)";
	case CFG_AUTO_ZERO:
		return "0 (as the HF trainer fills it)";
	case CFG_AUTO_BATCH:
		return "micro x accumulation x world size";
	case CFG_AUTO_HIDDEN_SQ:
		return "hidden^2 of the model";
	case CFG_AUTO_HIDDEN_SQ_0_9:
		return "0.9 x hidden^2 of the model";
	case CFG_AUTO_HIDDEN_X10:
		return "10 x hidden of the model";
	default:
		return NULL;
	}
}

/* The length of `flag` when arg is "--flag" or "--flag=V", else 0. */
static size_t
match_flag(const char *arg, const char *flag)
{
	size_t n = strlen(flag);
	if (strncmp(arg, flag, n) || (arg[n] && arg[n] != '='))
		return 0;
	return n;
}

int
zinf_config_override_arg(zinf_config_overrides *ov, int argc, char **argv, int *i, char *err,
                         size_t errlen)
{
	const char *arg = argv[*i];
	int o = -1;
	size_t n = match_flag(arg, "--nvme_path");
	if (!n) {
		for (int k = 0; k < ZINF_OV_COUNT && o < 0; k++)
			if ((n = match_flag(arg, ov_defs[k].flag)))
				o = k;
		if (o < 0)
			return -ENOENT;
	}
	if (o >= 0 && ov_defs[o].is_switch) {
		if (arg[n] == '=') {
			snprintf(err, errlen, "%s is a switch and takes no value", ov_defs[o].flag);
			return -EINVAL;
		}
		ov->given |= 1u << o;
		ov->value[o] = 1;
		(*i)++;
		return 0;
	}
	const char *flag = o >= 0 ? ov_defs[o].flag : "--nvme_path";
	const char *val = NULL;
	int used = 1;
	if (arg[n] == '=')
		val = arg + n + 1;
	else if (*i + 1 < argc) {
		val = argv[*i + 1];
		used = 2;
	}
	if (!val || !*val) {
		snprintf(err, errlen, "%s needs a value", flag);
		return -EINVAL;
	}
	if (o < 0) {
		ov->nvme_path = val;
		*i += used;
		return 0;
	}
	char *end = NULL;
	errno = 0;
	double v = strtod(val, &end);
	if (errno || end == val || *end || isnan(v)) {
		snprintf(err, errlen, "%s '%s' is not a number", flag, val);
		return -EINVAL;
	}
	if (ov_defs[o].is_int && v != floor(v)) {
		snprintf(err, errlen, "%s %s is not a whole number", flag, val);
		return -EINVAL;
	}
	if (v < ov_defs[o].min || v > ov_defs[o].max) {
		snprintf(err, errlen, "%s %s is out of range: pass a value in [%g, %g]", flag, val,
		         ov_defs[o].min, ov_defs[o].max);
		return -EINVAL;
	}
	ov->given |= 1u << o;
	ov->value[o] = v;
	*i += used;
	return 0;
}

/* ---- printing ---- */

void
zinf_config_format_value(const zinf_config *cfg, zinf_config_key k, char *buf, size_t len)
{
	const cfg_key_def *d = zinf_cfg_key((int)k);
	if (!d || !len) {
		if (len)
			buf[0] = 0;
		return;
	}
	if (cfg->pending[zinf_config_key_canonical(k)]) {
		snprintf(buf, len, "auto (not resolved)");
		return;
	}
	const char *p = (const char *)cfg + d->off;
	switch (d->type) {
	case CFG_BOOL:
		snprintf(buf, len, "%s", bool_names[*(const bool *)p ? 1 : 0]);
		break;
	case CFG_INT:
		if (!*(const int64_t *)p && d->min >= 1)
			snprintf(buf, len, "(not set)");
		else
			snprintf(buf, len, "%lld", (long long)*(const int64_t *)p);
		break;
	case CFG_NUM:
		snprintf(buf, len, "%.9g", *(const double *)p);
		break;
	case CFG_ENUM: {
		int v = *(const int *)p;
		snprintf(buf, len, "%s", v >= 0 && v < d->n_names ? d->names[v] : "?");
		break;
	}
	case CFG_STR:
		snprintf(buf, len, "%s", *p ? p : "(not set)");
		break;
	case CFG_PAIR:
		snprintf(buf, len, "[%.9g, %.9g]", ((const double *)p)[0], ((const double *)p)[1]);
		break;
	}
}
