/* engine: the training engine. What a DeepSpeed user writes as
 *
 *     engine = deepspeed.initialize(model, config)
 *     for batch in data:
 *         loss = engine(batch); engine.backward(loss); engine.step()
 *
 * is here
 *
 *     zinf_engine_create(&model_cfg, &ds_cfg, &opts, &e, err, sizeof err);
 *     for (...) {
 *         zinf_engine_forward(e, tokens, targets, &loss);
 *         zinf_engine_backward(e);
 *         zinf_engine_step(e);   // applies only at the gradient-accumulation boundary
 *     }
 *
 * The pieces below the engine are public too, so tests and tools can use them alone:
 *   - LR schedules (WarmupLR, WarmupDecayLR, WarmupCosineLR: DeepSpeed's formulas and names)
 *   - the dynamic fp16 loss scaler (DeepSpeed's DynamicLossScaler)
 *   - ZeRO partition ownership for world_size ranks (stage 0..3)
 *   - checkpoint folders (manifest + per-rank shard, written atomically)
 *
 * Errors: 0 or -errno; the message (one line naming the file/key/value, the limit and the
 * fix) is in `err` or zinf_engine_error(). Nothing here calls exit() or abort().
 * Threads: one caller thread per engine handle. */
#ifndef ZINF_ENGINE_ENGINE_H
#define ZINF_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/model.h"
#include "iosched/iosched.h"

struct zinf_comm;

#ifdef __cplusplus
extern "C" {
#endif

/* ---- LR schedules (schedule.c) ---------------------------------------------------------
 * DeepSpeed counts scheduler iterations from -1 (`last_batch_iteration`) and calls the
 * scheduler's step() after every optimizer step that was applied (a step skipped for fp16
 * overflow does not advance it). So optimizer step k (1-based, applied steps only) runs with
 * the lr of iteration k - 2; iteration -1 (before any step) gives warmup_min_lr (WarmupLR,
 * WarmupDecayLR) or 0 (WarmupCosineLR), as DeepSpeed does. With w = max(2, warmup_num_steps):
 *   gamma_warm(i) = log(i + 1) / log(w)  (warmup_type log)   or   i / w  (linear)
 *   WarmupLR:       lr(i) = min + (max - min) * (i < w ? gamma_warm(i) : 1)
 *   WarmupDecayLR:  lr(i) = min + (max - min) * (i < w ? gamma_warm(i)
 *                             : max(0, (total - i) / max(1, total - w)))
 *   WarmupCosineLR: ratio(i) = i < w ? warmup_min_ratio + gamma_warm(i) * (1 - warmup_min_ratio)
 *                   : max(0, cos_min_ratio + (1 - cos_min_ratio) *
 *                            (1 + cos(pi * (i - w + 1) / (total - w))) / 2);  lr = lr_opt * ratio
 *                   (total - w <= 0, a division by zero in DeepSpeed, is taken as 1 here)
 *   none:           lr(i) = optimizer lr
 * min/max = warmup_min_lr/warmup_max_lr, total = total_num_steps, lr_opt = optimizer.params.lr. */
typedef struct zinf_lr_schedule {
	zinf_scheduler_type type;
	zinf_warmup_type warmup_type;
	double min_lr, max_lr;     /* WarmupLR / WarmupDecayLR */
	double base_lr;            /* optimizer lr: WarmupCosineLR's org_lr, and `none` */
	int64_t warmup_num_steps;  /* as configured; the formulas use max(2, it) */
	int64_t total_num_steps;   /* WarmupDecayLR / WarmupCosineLR */
	double warmup_min_ratio, cos_min_ratio;
	int64_t last_batch_iteration; /* -1 before the first step(); saved in checkpoints */
} zinf_lr_schedule;

/* From a resolved config's scheduler and optimizer blocks; last_batch_iteration -1.
 * -EINVAL when WarmupDecayLR/WarmupCosineLR has no total_num_steps (names the key and the
 * fix: --max_steps or a number in the file). */
int zinf_lr_schedule_init(zinf_lr_schedule *s, const zinf_config *cfg, char *err, size_t errlen);
/* lr at scheduler iteration `it` (it < 0: the value before the first step). */
double zinf_lr_schedule_at(const zinf_lr_schedule *s, int64_t it);
/* DeepSpeed's scheduler.step(): last_batch_iteration += 1; returns the new lr. */
double zinf_lr_schedule_step(zinf_lr_schedule *s);
/* The current lr: zinf_lr_schedule_at(s, s->last_batch_iteration). */
double zinf_lr_schedule_lr(const zinf_lr_schedule *s);

/* ---- loss scaler (schedule.c) -----------------------------------------------------------
 * DeepSpeed's DynamicLossScaler: scale starts at 2^initial_scale_power. On overflow: if
 * hysteresis is used up (cur_hysteresis == 1, or hysteresis == 1) the scale is divided by 2
 * (not below min_loss_scale; an overflow AT min_loss_scale is an error, as in DeepSpeed),
 * else cur_hysteresis -= 1. Without overflow: consecutive_hysteresis restores cur_hysteresis;
 * every loss_scale_window iterations since the last overflow the scale doubles (and
 * cur_hysteresis is restored). A static scaler (fp16.loss_scale > 0) never changes; bf16 and
 * fp32 use a static scale of 1. Every overflow skips the step in all precisions. */
typedef struct zinf_loss_scaler {
	bool dynamic;
	double cur_scale;
	double scale_factor;   /* 2 */
	int64_t scale_window;  /* loss_scale_window */
	double min_scale;      /* min_loss_scale */
	int64_t delayed_shift; /* hysteresis */
	int64_t cur_hysteresis;
	bool consecutive_hysteresis;
	int64_t cur_iter, last_overflow_iter; /* last_overflow_iter -1: none yet */
} zinf_loss_scaler;

/* fp16 with loss_scale 0: dynamic from the fp16 block; fp16 with loss_scale > 0: static at it;
 * otherwise static 1. consecutive_hysteresis from fp16.consecutive_hysteresis (default false). */
void zinf_loss_scaler_init(zinf_loss_scaler *ls, const zinf_config *cfg);
/* One boundary's outcome. Fills msg (may be NULL) on an overflow with one line naming the
 * old and new scale (or the hysteresis change). -ERANGE: overflow with the scale already at
 * min_loss_scale (the message names min_loss_scale and the fix); the state is unchanged. */
int zinf_loss_scaler_update(zinf_loss_scaler *ls, bool overflow, char *msg, size_t msglen);

/* ---- ZeRO partitions (zero_partition.c) -------------------------------------------------
 * Which elements of the flat parameter vector (model.h layout) each rank owns, for
 * optimizer state (fp32 master, m, v), gradients and 16-bit parameters:
 *   stage 0: nothing partitioned (every rank holds and steps everything)
 *   stage 1: optimizer state partitioned            stage 2: + gradients
 *   stage 3: + parameters
 * Stages 1 and 2 cut the whole vector into world_size contiguous ranges; stage 3 cuts every
 * block (embeddings, each layer, head) separately, so a layer can be gathered on its own.
 * A segment of n elements gives each rank per = round_up(ceil(n / W), align) elements: rank
 * r owns [r*per, min((r+1)*per, n)) (clamped; trailing ranks may own less, or nothing). Every
 * owned range starts at a multiple of `align` elements from its segment's start (segments
 * start aligned in the model layout), so 16-byte vector loads and O_DIRECT-friendly sizes
 * hold. The partition a rank holds is the union of its ranges, in vector order. */
typedef struct zinf_zero_range {
	int64_t begin, end; /* element offsets in the flat vector, end exclusive */
} zinf_zero_range;

typedef struct zinf_zero_partition {
	int stage, world_size, rank;
	int64_t total_numel, align;
	bool opt_partitioned, grads_partitioned, params_partitioned;
	int nranges;
	zinf_zero_range *ranges; /* owned by this rank (empty ranges left out) */
	int64_t owned_numel;     /* sum of the ranges */
	int64_t max_owned_numel; /* the largest rank's share (buffers sized for any rank) */
	int nseg;                /* the segments partitioned (1 below stage 3) */
	int64_t *seg_offset, *seg_numel;
} zinf_zero_partition;

/* Segments: nseg (offset, numel) pairs covering [0, total_numel) in order (the model's blocks;
 * stages 0-2 merge them into one). align > 0. -EINVAL naming the bad value. */
int zinf_zero_partition_init(zinf_zero_partition *p, int stage, int world_size, int rank,
                             const int64_t *seg_offset, const int64_t *seg_numel, int nseg,
                             int64_t align, char *err, size_t errlen);
void zinf_zero_partition_free(zinf_zero_partition *p);
/* The rank that owns optimizer state element `elem` (stage 0: the caller's rank, as every rank
 * holds everything), or -1 out of range. */
int zinf_zero_owner(const zinf_zero_partition *p, int64_t elem);
/* Elements of each kind this rank holds: optimizer state, gradients, 16-bit parameters. */
int64_t zinf_zero_opt_numel(const zinf_zero_partition *p);
int64_t zinf_zero_grad_numel(const zinf_zero_partition *p);
int64_t zinf_zero_param_numel(const zinf_zero_partition *p);

/* ---- checkpoint folders (checkpoint.c) --------------------------------------------------
 * DIR/TAG/ (TAG = global_stepN by default) holds
 *   manifest.json          format, version, global step, world size, stage, model, precision,
 *                          optimizer step, loss scaler, LR scheduler, lr, RNG, counters
 *   rank<R>.bin            per-rank shard: header + sections (fp32 master, Adam m, Adam v, each
 *                          over the rank's owned elements; client bytes, e.g. the data loader's
 *                          state), each with a 64-bit FNV-1a checksum verified on load
 *   model.safetensors, config.json   optional consolidated 16-bit export (HF names)
 * Written into DIR/.TAG.tmp-XXXXXX, every file fsync'ed, the folder fsync'ed, renamed to
 * DIR/TAG (an older DIR/TAG is replaced), DIR fsync'ed, then DIR/latest (the tag, one line)
 * written the same way: a crash leaves either the old or the new checkpoint, never a mix. */
#define ZINF_CKPT_MAX_SECTIONS 8

typedef struct zinf_ckpt_section {
	char name[32];
	const void *data; /* write: the bytes; read: NULL (see zinf_ckpt_shard_read) */
	uint64_t len;
} zinf_ckpt_section;

/* The staging folder for a tag: creates DIR (and parents) if needed, then a fresh
 * DIR/.TAG.tmp-XXXXXX; its path goes to tmp. */
int zinf_ckpt_begin(const char *dir, const char *tag, char *tmp, size_t tmplen, char *err,
                    size_t errlen);
/* Writes `name` (a file inside the staging folder) with the bytes and fsyncs it. */
int zinf_ckpt_write_file(const char *folder, const char *name, const void *data, size_t len,
                         char *err, size_t errlen);
/* Writes rank<R>.bin with the sections. */
int zinf_ckpt_shard_write(const char *folder, int rank, const zinf_ckpt_section *sec, int nsec,
                          char *err, size_t errlen);
/* fsyncs the staging folder, renames it to DIR/TAG, fsyncs DIR, then updates DIR/latest. */
int zinf_ckpt_commit(const char *dir, const char *tag, const char *tmp, char *err,
                     size_t errlen);
/* Removes a staging folder after a failure (best effort). */
void zinf_ckpt_abort(const char *tmp);

/* Reads rank<R>.bin from a tag folder. Each out[i] gets the section named names[i]: a malloc'ed
 * buffer (caller frees) and its length in lens[i]. A missing section, bad magic, truncated
 * file or checksum mismatch: -EINVAL (-EIO for the checksum) naming the file and section. */
int zinf_ckpt_shard_read(const char *folder, int rank, const char *const *names, int n,
                         void **out, uint64_t *lens, char *err, size_t errlen);
/* DIR/latest's tag when DIR holds one, else DIR itself when it holds manifest.json: the tag
 * folder's path goes to folder. -ENOENT naming both paths otherwise. */
int zinf_ckpt_find(const char *dir, char *folder, size_t folderlen, char *err, size_t errlen);
/* Reads a whole small file (manifest) into a NUL-terminated malloc'ed string. */
int zinf_ckpt_read_text(const char *path, char **out, char *err, size_t errlen);

/* ---- the engine (engine.c) --------------------------------------------------------------- */

typedef enum zinf_engine_device {
	ZINF_ENGINE_CPU = 0, /* fp32 forward/backward on the CPU (model_cpu.h) */
	ZINF_ENGINE_GPU = 1, /* bf16 forward/backward on the GPU (model_gpu.h), fp32 master */
} zinf_engine_device;

typedef struct zinf_engine_opts {
	zinf_engine_device device;
	uint64_t seed;       /* weight init when no weights file */
	const char *weights; /* model.safetensors to start from; NULL or "": seeded init */
	/* Ranks (data parallel + ZeRO stages 0-3, engine.c): world_size > 1 needs a comm, `comm`
	 * when given (borrowed, must outlive the engine, same rank and world size), else one made
	 * from the environment (RANK, MASTER_ADDR, ... as zinf launch sets them; shm for CPU
	 * engines, nccl on gpu_device for GPU engines). Stage 3 shards parameters per block. */
	int rank, world_size;
	struct zinf_comm *comm;
	int threads;          /* CPU threads for the model and CPU Adam; 0: online CPUs */
	int seq_len;          /* T of every micro-batch; required, <= max_seq */
	bool recompute;       /* activation checkpointing (GPU path) */
	int gpu_device;
	const char *run_id;   /* NVMe swap folder zinf-<run_id>; NULL: pid */
	bool nvme_buffered;   /* no O_DIRECT for the optimizer swap files (tmpfs) */
	const iosched_fault *fault; /* tests: injected I/O errors in the optimizer swap */
	/* GPU: device memory this engine may use (bytes; 0: no limit), measured from the device's
	 * used memory when the engine starts. ZeRO stage 3 fits its gathered blocks into what the
	 * fixed buffers leave (releasing blocks kept for reuse first) and fails naming the budget
	 * when one block does not fit; the memory report gives the measured peak. */
	uint64_t gpu_mem_budget;
} zinf_engine_opts;

void zinf_engine_opts_init(zinf_engine_opts *o); /* CPU, seed 1234, rank 0 of 1, seq_len 0 */

typedef struct zinf_engine zinf_engine;

/* cfg must be resolved (zinf_config_resolve) for opts->world_size ranks; cfg and mcfg are
 * copied. Micro-batch B = cfg->train_micro_batch_size_per_gpu. */
int zinf_engine_create(const zinf_model_config *mcfg, const zinf_config *cfg,
                       const zinf_engine_opts *opts, zinf_engine **out, char *err,
                       size_t errlen);
void zinf_engine_destroy(zinf_engine *e);
const char *zinf_engine_error(const zinf_engine *e);

/* One micro-batch: tokens and targets are B*T int32 ([B][T]); a target < 0 is ignored.
 * *loss: mean cross-entropy (unscaled). */
int zinf_engine_forward(zinf_engine *e, const int32_t *tokens, const int32_t *targets,
                        float *loss);
/* Gradients of the last forward, accumulated: scaled by loss_scale / accumulation steps.
 * At world size > 1 (stages 0-2) the backward also reduces them across the ranks (every
 * backward at stage 2, the accumulation boundary's at stages 0-1), so there one backward per
 * micro-step, then zinf_engine_step(), is required: a second backward of the boundary's
 * micro-step (stages 0-1) or a boundary step without one is refused. A backward that fails
 * there leaves the ranks out of step: the engine refuses to continue (restart the job). */
int zinf_engine_backward(zinf_engine *e);
/* Counts a micro-step; at the accumulation boundary: unscale, global-norm clip
 * (gradient_clipping), overflow check (skip + lower scale), Adam/AdamW with the scheduled lr,
 * then the scheduler step. Between boundaries it does nothing else (at world size > 1 it
 * waits for the backward's reductions, reporting a failed or timed-out collective). */
int zinf_engine_step(zinf_engine *e);
bool zinf_engine_at_boundary(const zinf_engine *e); /* the next step() is a boundary */
/* Loss of a batch without touching gradients (validation). */
int zinf_engine_eval(zinf_engine *e, const int32_t *tokens, const int32_t *targets, float *loss);

/* The lr the next optimizer step uses; set replaces it until the scheduler's next step (no
 * scheduler: for good). */
double zinf_engine_get_lr(const zinf_engine *e);
void zinf_engine_set_lr(zinf_engine *e, double lr);

typedef enum zinf_step_outcome {
	ZINF_STEP_NONE = 0,    /* no boundary yet */
	ZINF_STEP_APPLIED = 1, /* the last boundary stepped */
	ZINF_STEP_SKIPPED = 2, /* the last boundary found inf/NaN gradients and skipped */
} zinf_step_outcome;

typedef struct zinf_engine_stats {
	int64_t global_steps;    /* boundaries passed (applied + skipped), DeepSpeed's global_steps */
	int64_t micro_steps;
	int64_t skipped_steps;
	int64_t optimizer_steps; /* applied (Adam's step count) */
	zinf_step_outcome last;
	double loss_scale;       /* current */
	float grad_norm;         /* last boundary, unscaled, before clipping */
	double lr;               /* the lr of the last applied step */
	char last_msg[256];      /* last overflow message ("" none) */
	/* wall_clock_breakdown: seconds summed since create (or stats reset) */
	double t_forward, t_backward, t_step, t_io;
	uint64_t tokens; /* trained tokens (B*T per micro-step) */
	uint64_t opt_bytes_read, opt_bytes_written; /* optimizer swap traffic, summed */
	uint64_t opt_nvme_read, opt_nvme_written;   /* of which NVMe, summed */
	uint64_t host_pinned_peak; /* optimizer offload: most host (pinned) buffer bytes held */
	/* stages 0-2 at world size > 1: gradient buckets reduced during the backward
	 * (zero_optimization.reduce_bucket_size) and the collectives they took, summed */
	uint64_t grad_buckets, grad_collectives;
	/* offload_param (the 16-bit parameter store), summed since create: NVMe bytes; seconds
	 * blocked on its NVMe reads (gathers), on a free host buffer while the optimizer writes
	 * its output, and in the end-of-step flush; and all of the optimizer's writes into the
	 * store, copies included */
	uint64_t param_nvme_read, param_nvme_written;
	double t_param_read_wait, t_param_buffer_wait, t_param_flush, t_param_write;
	double t_param_write_alloc, t_param_write_copy, t_param_write_submit; /* parts of it */
} zinf_engine_stats;
void zinf_engine_get_stats(const zinf_engine *e, zinf_engine_stats *s);

/* What this rank holds, in bytes, by buffer (actual allocations):
 *   param_bytes         the compute copy of the parameters (CPU fp32, GPU bf16): the full
 *                       vector (padded to world_size * partition) below stage 3
 *   grad_bytes          gradients kept between micro-steps: the full vector at stages 0-1, the
 *                       rank's partition at stage 2 on the CPU (GPU stage 2 keeps the full
 *                       buffer: the partition is reduced in place inside it)
 *   grad_scratch_bytes  the full-vector buffer the whole-model backward writes before its
 *                       reduce-scatter (stage 2 on the CPU at world size > 1; 0 otherwise)
 *   opt_bytes[tier]     fp32 master + Adam m + v held by this rank (OFFLOAD_TIER_GPU, _HOST,
 *                       _NVME); an in-memory CPU engine's master is the owned part of the
 *                       parameter copy, so only m + v are counted here
 *   opt_numel           elements whose optimizer state this rank owns (its ZeRO partition)
 * Stage 3 at world size > 1 (CPU): param_bytes = the packed fp32 shard + param_gathered_peak,
 * the most bytes of gathered blocks resident at once (mincore of the compute vector);
 * grad_bytes = the packed reduced gradients, grad_scratch_bytes = the most resident bytes of
 * the full-length gradient vector (blocks between their backward and their reduce-scatter);
 * opt_bytes cover the packed shard, whose per-block padding slots opt_numel leaves out.
 * GPU: the full bf16 and fp32 vectors are still allocated (counted), param_gathered_peak is
 * the bytes of blocks gathered at once. */
typedef struct zinf_engine_memory {
	uint64_t param_bytes, grad_bytes, grad_scratch_bytes;
	uint64_t opt_bytes[3];
	int64_t opt_numel;
	uint64_t param_gathered_peak; /* stage 3 at world size > 1; 0 otherwise */
	/* GPU: bytes of device memory this engine used (cudaMemGetInfo, sampled after create and
	 * after every step) and the stage-3 slot pool's peak; offload_param: where the 16-bit
	 * parameters live (1 host, 2 nvme; 0 GPU) and the host bytes their buffers peaked at */
	uint64_t gpu_used_peak, gpu_slot_peak;
	int param_tier;
	uint64_t param_host_peak, param_nvme_read, param_nvme_written;
} zinf_engine_memory;
void zinf_engine_get_memory(const zinf_engine *e, zinf_engine_memory *m);

/* The model and its fp32 master weights: the full vector on every rank (at world size > 1 and
 * stage >= 1 on the GPU this is a collective: every rank must call it). */
const zinf_model_config *zinf_engine_model(const zinf_engine *e);
const zinf_model_layout *zinf_engine_layout(const zinf_engine *e);
int zinf_engine_master(zinf_engine *e, float *out); /* total_numel floats */
int zinf_engine_micro_batch(const zinf_engine *e);
int zinf_engine_seq_len(const zinf_engine *e);
int64_t zinf_engine_accum_steps(const zinf_engine *e);

/* Checkpoint at a boundary (-EBUSY mid-accumulation). tag NULL: "global_step<N>". client:
 * bytes stored in this rank's shard (e.g. the data loader's state), returned by load.
 * export16: also model.safetensors (bf16) + config.json (forced on by the config's
 * stage3_gather_16bit_weights_on_model_save). */
int zinf_engine_save(zinf_engine *e, const char *dir, const char *tag, const void *client,
                     size_t client_len, bool export16);
/* Restores everything save wrote from DIR (its `latest`) or a tag folder. *client gets a
 * malloc'ed copy of the client bytes (caller frees; may be NULL when not wanted). The model
 * and config must match the checkpoint's (numel, precision, stage, world size, accumulation:
 * each mismatch named). */
int zinf_engine_load(zinf_engine *e, const char *dir, void **client, size_t *client_len);

#ifdef __cplusplus
}
#endif

#endif
