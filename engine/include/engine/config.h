/* engine/config: DeepSpeed ds_config.json, read with cJSON into a caller-owned struct.
 *
 * Lifecycle: zinf_config_init_defaults() (DeepSpeed's defaults), zinf_config_load_file() (the
 * file plus HF-style command-line overrides), zinf_config_resolve() (world size and model:
 * batch relations, "auto" from the model, cross-key rules, nvme_path checks). Nothing is
 * allocated: the struct owns no memory and needs no free.
 *
 * Errors: 0 on success or a negative errno; `err` then holds one line that starts with the
 * config file's path and names the key, the value, the rule and the fix. -EINVAL: the config
 * is wrong (bad JSON, unknown key, type, range, unresolved "auto", conflicting settings).
 * Other codes: the file could not be read (-ENOENT, -EACCES, -EFBIG, -ENOMEM, ...).
 *
 * Every key remembers where its value came from (zinf_config_source) so `zinf config check`
 * can show file / default / auto / flag / derived per key.
 */
#ifndef ZINF_ENGINE_CONFIG_H
#define ZINF_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zinf_offload_device {
	ZINF_DEVICE_NONE = 0,
	ZINF_DEVICE_CPU = 1,
	ZINF_DEVICE_NVME = 2,
} zinf_offload_device;

typedef enum zinf_optimizer_type {
	ZINF_OPTIMIZER_ADAM = 0,  /* L2 weight decay added to the gradient */
	ZINF_OPTIMIZER_ADAMW = 1, /* decoupled weight decay */
} zinf_optimizer_type;

typedef enum zinf_scheduler_type {
	ZINF_SCHEDULER_NONE = 0, /* constant lr */
	ZINF_SCHEDULER_WARMUP_LR = 1,
	ZINF_SCHEDULER_WARMUP_DECAY_LR = 2,
	ZINF_SCHEDULER_WARMUP_COSINE_LR = 3,
} zinf_scheduler_type;

typedef enum zinf_warmup_type {
	ZINF_WARMUP_LOG = 0,
	ZINF_WARMUP_LINEAR = 1,
} zinf_warmup_type;

typedef enum zinf_aio_backend {
	ZINF_AIO_AUTO = 0, /* same order as iosched_backend */
	ZINF_AIO_IO_URING = 1,
	ZINF_AIO_LIBAIO = 2,
	ZINF_AIO_PSYNC = 3,
} zinf_aio_backend;

/* Where a key's value came from. */
typedef enum zinf_config_source {
	ZINF_SRC_DEFAULT = 0, /* not in the file: DeepSpeed's default */
	ZINF_SRC_FILE = 1,    /* written in the file */
	ZINF_SRC_AUTO = 2,    /* "auto" in the file, filled from a flag or the model */
	ZINF_SRC_FLAG = 3,    /* a command-line flag replaced it (--nvme_path) */
	ZINF_SRC_DERIVED = 4, /* computed from other keys (the third batch number) */
} zinf_config_source;
const char *zinf_config_source_name(zinf_config_source s);

/* Every key zinf reads, in file order of the DeepSpeed docs. Aliases (aio.intra_op_parallelism,
 * stage3_gather_fp16_weights_on_model_save) write the same field as the key they alias. */
typedef enum zinf_config_key {
	ZINF_KEY_TRAIN_BATCH_SIZE,
	ZINF_KEY_TRAIN_MICRO_BATCH_SIZE_PER_GPU,
	ZINF_KEY_GRADIENT_ACCUMULATION_STEPS,
	ZINF_KEY_GRADIENT_CLIPPING,
	ZINF_KEY_STEPS_PER_PRINT,
	ZINF_KEY_WALL_CLOCK_BREAKDOWN,
	ZINF_KEY_FP16_ENABLED,
	ZINF_KEY_FP16_AUTO_CAST,
	ZINF_KEY_FP16_LOSS_SCALE,
	ZINF_KEY_FP16_INITIAL_SCALE_POWER,
	ZINF_KEY_FP16_LOSS_SCALE_WINDOW,
	ZINF_KEY_FP16_HYSTERESIS,
	ZINF_KEY_FP16_MIN_LOSS_SCALE,
	ZINF_KEY_FP16_CONSECUTIVE_HYSTERESIS,
	ZINF_KEY_BF16_ENABLED,
	ZINF_KEY_AC_PARTITION_ACTIVATIONS,
	ZINF_KEY_AC_CPU_CHECKPOINTING,
	ZINF_KEY_AC_CONTIGUOUS_MEMORY,
	ZINF_KEY_AC_NUMBER_CHECKPOINTS,
	ZINF_KEY_AC_SYNCHRONIZE,
	ZINF_KEY_AC_PROFILE,
	ZINF_KEY_OPTIMIZER_TYPE,
	ZINF_KEY_OPTIMIZER_LR,
	ZINF_KEY_OPTIMIZER_BETAS,
	ZINF_KEY_OPTIMIZER_EPS,
	ZINF_KEY_OPTIMIZER_WEIGHT_DECAY,
	ZINF_KEY_SCHEDULER_TYPE,
	ZINF_KEY_SCHED_WARMUP_MIN_LR,
	ZINF_KEY_SCHED_WARMUP_MAX_LR,
	ZINF_KEY_SCHED_WARMUP_NUM_STEPS,
	ZINF_KEY_SCHED_WARMUP_TYPE,
	ZINF_KEY_SCHED_TOTAL_NUM_STEPS,
	ZINF_KEY_SCHED_WARMUP_MIN_RATIO,
	ZINF_KEY_SCHED_COS_MIN_RATIO,
	ZINF_KEY_ZERO_STAGE,
	ZINF_KEY_ZERO_OVERLAP_COMM,
	ZINF_KEY_ZERO_CONTIGUOUS_GRADIENTS,
	ZINF_KEY_ZERO_SUB_GROUP_SIZE,
	ZINF_KEY_ZERO_REDUCE_BUCKET_SIZE,
	ZINF_KEY_ZERO_ALLGATHER_BUCKET_SIZE,
	ZINF_KEY_ZERO_ALLGATHER_PARTITIONS,
	ZINF_KEY_ZERO_REDUCE_SCATTER,
	ZINF_KEY_ZERO_ROUND_ROBIN_GRADIENTS,
	ZINF_KEY_ZERO_PREFETCH_BUCKET_SIZE,
	ZINF_KEY_ZERO_PARAM_PERSISTENCE_THRESHOLD,
	ZINF_KEY_ZERO_MAX_LIVE_PARAMETERS,
	ZINF_KEY_ZERO_MAX_REUSE_DISTANCE,
	ZINF_KEY_ZERO_GATHER_16BIT_ON_SAVE,
	ZINF_KEY_ZERO_GATHER_FP16_ON_SAVE, /* alias of the above (older DeepSpeed name) */
	ZINF_KEY_OOPT_DEVICE,
	ZINF_KEY_OOPT_NVME_PATH,
	ZINF_KEY_OOPT_PIN_MEMORY,
	ZINF_KEY_OOPT_BUFFER_COUNT,
	ZINF_KEY_OOPT_FAST_INIT,
	ZINF_KEY_OOPT_PIPELINE_READ,
	ZINF_KEY_OOPT_PIPELINE_WRITE,
	ZINF_KEY_OPARAM_DEVICE,
	ZINF_KEY_OPARAM_NVME_PATH,
	ZINF_KEY_OPARAM_PIN_MEMORY,
	ZINF_KEY_OPARAM_BUFFER_COUNT,
	ZINF_KEY_OPARAM_BUFFER_SIZE,
	ZINF_KEY_OPARAM_MAX_IN_CPU,
	ZINF_KEY_AIO_BLOCK_SIZE,
	ZINF_KEY_AIO_QUEUE_DEPTH,
	ZINF_KEY_AIO_THREAD_COUNT,
	ZINF_KEY_AIO_INTRA_OP_PARALLELISM, /* alias of aio.thread_count */
	ZINF_KEY_AIO_SINGLE_SUBMIT,
	ZINF_KEY_AIO_OVERLAP_EVENTS,
	ZINF_KEY_AIO_BACKEND,
	ZINF_KEY_COUNT
} zinf_config_key;

/* Full dotted path ("zero_optimization.offload_optimizer.buffer_count"); NULL out of range. */
const char *zinf_config_key_path(zinf_config_key k);
/* The key an alias writes, or k itself. */
zinf_config_key zinf_config_key_canonical(zinf_config_key k);
/* How "auto" is filled for this key ("--learning_rate", "model: hidden^2", ...); NULL when
 * "auto" is not accepted. */
const char *zinf_config_key_auto_rule(zinf_config_key k);

/* HF-trainer-style command-line values that fill "auto" (and must agree with numbers in the
 * file). --fp16 / --bf16 are switches: without them "enabled": "auto" resolves to false. */
typedef enum zinf_override {
	ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE,
	ZINF_OV_GRADIENT_ACCUMULATION_STEPS,
	ZINF_OV_MAX_GRAD_NORM,
	ZINF_OV_LEARNING_RATE,
	ZINF_OV_WEIGHT_DECAY,
	ZINF_OV_ADAM_BETA1,
	ZINF_OV_ADAM_BETA2,
	ZINF_OV_ADAM_EPSILON,
	ZINF_OV_WARMUP_STEPS,
	ZINF_OV_MAX_STEPS,
	ZINF_OV_FP16,
	ZINF_OV_BF16,
	ZINF_OV_COUNT
} zinf_override;

typedef struct zinf_config_overrides {
	unsigned given;              /* bit (1u << zinf_override) per flag given */
	/* Of those, the values that are a trainer's defaults rather than the user's flags: they
	 * fill "auto" keys only and never override or conflict with a value in the file (what
	 * HF Trainer does when it fills a DeepSpeed config). */
	unsigned soft;
	double value[ZINF_OV_COUNT]; /* its value (switches: 1) */
	const char *nvme_path;       /* --nvme_path DIR, or NULL; copied by load */
} zinf_config_overrides;

void zinf_config_overrides_init(zinf_config_overrides *ov);
/* "--learning_rate" for ZINF_OV_LEARNING_RATE. */
const char *zinf_config_override_flag(zinf_override o);
/* Parses argv[*i] (and its value, "--flag V" or "--flag=V") if it is one of the override
 * flags or --nvme_path, and advances *i past what it used. Returns 0 when consumed, -ENOENT
 * when argv[*i] is not an override flag (nothing consumed, err untouched), -EINVAL with a
 * message for a missing or bad value. --nvme_path points into argv. */
int zinf_config_override_arg(zinf_config_overrides *ov, int argc, char **argv, int *i, char *err,
                             size_t errlen);

#define ZINF_CONFIG_PATH_MAX 4096

typedef struct zinf_config_offload {
	zinf_offload_device device;
	char nvme_path[ZINF_CONFIG_PATH_MAX]; /* "" = not set */
	bool pin_memory;
	int64_t buffer_count;
	/* offload_optimizer only */
	bool fast_init, pipeline_read, pipeline_write;
	/* offload_param only */
	int64_t buffer_size; /* elements per parameter buffer */
	int64_t max_in_cpu;  /* elements kept in host memory when device is nvme */
} zinf_config_offload;

typedef struct zinf_config {
	char path[ZINF_CONFIG_PATH_MAX]; /* the file, prefix of every message */

	/* batch */
	int64_t train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps;
	double gradient_clipping; /* 0 = no clipping */
	int64_t steps_per_print;
	bool wall_clock_breakdown;

	/* precision */
	bool fp16_enabled, fp16_auto_cast, bf16_enabled;
	double fp16_loss_scale; /* 0 = dynamic */
	int64_t fp16_initial_scale_power, fp16_loss_scale_window, fp16_hysteresis;
	double fp16_min_loss_scale;
	bool fp16_consecutive_hysteresis;

	/* activation_checkpointing (DeepSpeed's section; recompute itself is switched on by the
	 * trainer, --gradient_checkpointing, as with HF + DeepSpeed). zinf recomputes per layer on
	 * the GPU and keeps each layer's input there: cpu_checkpointing true is refused, the others
	 * are accepted (they tune model-parallel activation partitioning zinf does not have). */
	bool ac_partition_activations, ac_cpu_checkpointing, ac_contiguous_memory;
	bool ac_synchronize, ac_profile;
	int64_t ac_number_checkpoints;

	/* optimizer */
	zinf_optimizer_type optimizer_type;
	double lr, betas[2], eps, weight_decay;

	/* scheduler */
	zinf_scheduler_type scheduler_type;
	double warmup_min_lr, warmup_max_lr;
	int64_t warmup_num_steps, total_num_steps; /* total 0 = not set */
	zinf_warmup_type warmup_type;
	double warmup_min_ratio, cos_min_ratio;

	/* zero_optimization */
	int64_t stage;
	bool overlap_comm, contiguous_gradients, allgather_partitions, reduce_scatter;
	bool round_robin_gradients, gather_16bit_weights_on_model_save;
	int64_t sub_group_size, reduce_bucket_size, allgather_bucket_size;
	int64_t prefetch_bucket_size, param_persistence_threshold;
	int64_t max_live_parameters, max_reuse_distance;
	zinf_config_offload offload_optimizer, offload_param;

	/* aio */
	int64_t aio_block_size, aio_queue_depth, aio_thread_count;
	bool aio_single_submit, aio_overlap_events;
	zinf_aio_backend aio_backend;

	/* bookkeeping */
	unsigned char src[ZINF_KEY_COUNT];     /* zinf_config_source per key */
	unsigned char pending[ZINF_KEY_COUNT]; /* "auto" not filled yet */
	zinf_config_overrides overrides;       /* as given to load (nvme_path: see below) */
	char nvme_override[ZINF_CONFIG_PATH_MAX];
	int64_t world_size, model_hidden; /* as given to resolve */
	bool resolved;
} zinf_config;

/* DeepSpeed's defaults; path "(defaults)". */
void zinf_config_init_defaults(zinf_config *cfg);

/* Reads and checks `path` over the defaults already in cfg (call init_defaults first), then
 * applies `overrides` (NULL = none): "auto" keys that a flag fills are filled; a flag that
 * contradicts a number written in the file is an error. Keys needing the world size or the
 * model stay pending until resolve. */
int zinf_config_load_file(const char *path, const zinf_config_overrides *overrides,
                          zinf_config *cfg, char *err, size_t errlen);

/* Same, from a string already in memory; `name` stands for the path in messages. */
int zinf_config_load_string(const char *name, const char *json, const zinf_config_overrides *ov,
                            zinf_config *cfg, char *err, size_t errlen);

/* Completes the config for `world_size` ranks and a model of hidden size `model_hidden`
 * (0 = unknown: an "auto" that needs it is an error naming --hidden). Batch: any two of
 * batch / micro / accumulation give the third, and batch = micro x accum x world must hold.
 * Checks stage vs offload devices and that each NVMe path is an existing folder. Call once
 * per load: the numbers it derives count as given afterwards. */
int zinf_config_resolve(zinf_config *cfg, int64_t world_size, int64_t model_hidden, char *err,
                        size_t errlen);

/* The value of key k as text ("64", "true", "nvme", "[0.9, 0.999]", "auto (pending)"). */
void zinf_config_format_value(const zinf_config *cfg, zinf_config_key k, char *buf, size_t len);

/* ---- memory plan (config_plan.c) ----
 * Bytes per rank for a model of n_params parameters under the resolved config. With
 * N = ceil(n_params / W) the per-rank partition (W = world size) and b = 2 (fp16/bf16) or 4:
 *   16-bit params   b x (stage 3 ? N : n_params)   tier: offload_param.device (stage 3) else GPU
 *   gradients       b x (stage >= 2 ? N : n_params)                          tier: GPU
 *   fp32 master     4 x (stage >= 1 ? N : n_params), 0 when training in fp32 (params are it)
 *   Adam m, Adam v  4 x (stage >= 1 ? N : n_params) each   tier: offload_optimizer.device
 *   NVMe staging    optimizer on NVMe: buffer_count x min(sub_group_size, N) x 4 host bytes;
 *                   params on NVMe: buffer_count x buffer_size x b host bytes.
 * Activations and temporary all-gather buffers are not counted. */
typedef enum zinf_tier {
	ZINF_TIER_GPU = 0,
	ZINF_TIER_HOST = 1,
	ZINF_TIER_NVME = 2,
	ZINF_TIER_COUNT
} zinf_tier;
const char *zinf_tier_name(zinf_tier t);

#define ZINF_PLAN_MAX_ITEMS 8
typedef struct zinf_memory_plan {
	struct {
		const char *what; /* "fp32 master", ... */
		zinf_tier tier;
		uint64_t bytes;
	} item[ZINF_PLAN_MAX_ITEMS];
	int n_items;
	uint64_t per_tier[ZINF_TIER_COUNT];
	uint64_t partition_elems; /* N */
} zinf_memory_plan;

/* -EINVAL when cfg is not resolved or n_params is 0. */
int zinf_config_memory_plan(const zinf_config *cfg, uint64_t n_params, zinf_memory_plan *plan);

#ifdef __cplusplus
}
#endif

#endif
