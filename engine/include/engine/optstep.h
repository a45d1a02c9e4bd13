/* Offloaded optimizer step: Adam over fp32 master/m/v streamed from pinned host memory or NVMe.
 *
 * The rank's partition of N parameters is cut into sub-groups of `sub_group_size` elements
 * (the last may be shorter). Sub-group i is ONE swapper chunk "optstep.sgI" laid out as
 * [master | m | v], fp32, 12 bytes per parameter: one chunk means one NVMe extent, one fetch
 * and one write-back per sub-group (three chunks would triple the operations and events for
 * the same bytes, and a sub-group is only usable when all three are present anyway). The home
 * of every chunk is `device`: pinned host buffers (CPU) or NVMe swap files (NVME).
 *
 * A step visits the sub-groups in order with at most `buffer_count` of them resident in the
 * work tier at once (GPU memory for step_on GPU, host buffers for step_on CPU with NVMe):
 * fetches run ahead, Adam runs on sub-group i once its fetch has completed (offload_poll), and
 * the write-back of i is issued as soon as its Adam finished (GPU: a CUDA event per sub-group,
 * queried, never synchronised) without waiting before fetching/computing i+1.
 *   step_on GPU, device CPU:  host -H2D-> GPU, Adam on the GPU, GPU -D2H-> host.
 *   step_on GPU, device NVME: NVMe -> pinned staging -> GPU, Adam, GPU -> staging -> NVMe.
 *   step_on CPU, device NVME: NVMe -> host buffer, zinf_adam_step_cpu, host buffer -> NVMe.
 *   step_on CPU, device CPU:  zinf_adam_step_cpu in place, no movement.
 *
 * Errors: 0 or -errno; zinf_optstep_last_error() holds a one-line message.
 *
 * State after a failed step (-EIO etc.): every sub-group holds either its values after this
 * step or its values before it, never a mix: zinf_optstep_subgroup_step(os, i) says which
 * (the cfg.step it last applied). Once a failure is seen no new Adam is started; operations in
 * flight are finished: sub-groups already stepped are written back, fetched but unstepped
 * copies are dropped (their home copy is untouched). A sub-group whose write-back failed keeps
 * its stepped copy in the work tier (its home copy is stale, never half-written as far as the
 * engine reads it) and counts as stepped; the next step or zinf_optstep_read() first retries
 * that write-back. A sub-group whose fetch failed is unchanged. The message names the chunk,
 * the operation and the I/O error (path, offset, length, errno from the swapper).
 *
 * ZeRO-3 parameter offload: with a param16_sink and host gradients (device_ptrs false) neither
 * the gradients nor the 16-bit copy need a partition-sized array on the GPU, even with
 * step_on GPU: slices go through buffer_count per-slot GPU buffers.
 *
 * Threads: one thread at a time per handle. */
#ifndef ZINF_ENGINE_OPTSTEP_H
#define ZINF_ENGINE_OPTSTEP_H

#include <stdbool.h>
#include <stdint.h>

#include "iosched/iosched.h"
#include "kernels/adam.h"
#include "offload/offload.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zinf_optstep_device {
	ZINF_OPTSTEP_DEVICE_CPU = 0, /* pinned (or pageable) host memory */
	ZINF_OPTSTEP_DEVICE_NVME = 1,
} zinf_optstep_device;

typedef enum zinf_optstep_on {
	ZINF_OPTSTEP_ON_GPU = 0, /* fused CUDA Adam on streamed chunks */
	ZINF_OPTSTEP_ON_CPU = 1, /* CPU Adam on host copies (DeepSpeed's way) */
} zinf_optstep_on;

typedef int (*zinf_optstep_sink_fn)(void *ctx, uint64_t offset, uint64_t n, const void *p16);

typedef struct zinf_optstep_opts {
	uint64_t nparams;        /* N, this rank's partition; required */
	uint64_t sub_group_size; /* elements per sub-group; required (> 0) */
	zinf_optstep_device device;
	const char *const *nvme_paths; /* device NVME: required */
	unsigned nvme_path_count;
	const char *run_id; /* swap folder zinf-<run_id>; NULL: pid */
	unsigned rank;
	unsigned buffer_count; /* sub-groups resident in the work tier at once; default 4 */
	/* Overlap (both default true; DeepSpeed's keys of the same names, an explicit false turns
	 * that overlap off): pipeline_read fetches sub-groups ahead while one is being stepped;
	 * pipeline_write lets write-backs run while later sub-groups are fetched. buffer_count must
	 * be at least 1 + pipeline_read + pipeline_write (3 by default): fewer slots cannot hold
	 * the sub-groups that overlap, and create refuses them naming the minimum. */
	bool pipeline_read, pipeline_write;
	bool pin_memory;       /* default true */
	bool allow_unpinned;   /* page-locking refused: pageable with a warning (default false) */
	bool nvme_buffered;    /* no O_DIRECT (default false) */
	zinf_optstep_on step_on;
	/* grads and param16_out passed to zinf_optstep_step() are device pointers; with step_on
	 * CPU the grads are copied to host once per step and the 16-bit copy back to the GPU
	 * afterwards. false: host pointers. step_on GPU with host pointers (ZeRO-3 parameter
	 * offload: no partition-sized array on the GPU) copies each sub-group's gradient slice to
	 * a per-slot device buffer before its Adam (pinned grads overlap, pageable ones work,
	 * slower) and takes no param16_out: the 16-bit copy goes to param16_sink. */
	bool device_ptrs;
	/* 16-bit sink (NULL: none). When set, zinf_optstep_step() takes param16_out == NULL and
	 * hands each sub-group's updated cfg->param16_dtype values to
	 * param16_sink(sink_ctx, offset, n, p16): offset = its first element in the partition,
	 * n = its length, p16 = a HOST buffer valid only during the call. Guarantees: called on
	 * the caller's thread before zinf_optstep_step() returns, after that sub-group's Adam
	 * completed, exactly once per sub-group stepped by this call (also for those still in
	 * flight when a failure was seen: a sub-group is stepped iff its sink call was made),
	 * in ascending sub-group order (0, 1, 2, ...; a failed sub-group is skipped). Non-zero
	 * return: the step fails with that code (negative; -EIO for a positive one) and a
	 * message naming the sub-group and the code, with the failure semantics above (no new
	 * Adam; in-flight work finished, its sub-groups written back); the sink is not called
	 * again in that step, so sub-groups stepped after it have no 16-bit output. Any
	 * step_on / device / device_ptrs. With step_on GPU, buffer_count * sub_group_size
	 * 16-bit elements of GPU memory and as much pinned host memory are allocated at create. */
	zinf_optstep_sink_fn param16_sink;
	void *sink_ctx;
	int gpu_device;
	zinf_cpu_opts cpu; /* CPU Adam threads/ISA; default 1 thread, AUTO */
	iosched_opts aio;  /* iosched_opts_init() defaults; .fault for tests */
} zinf_optstep_opts;

typedef struct zinf_optstep zinf_optstep_t;

/* Defaults: device CPU, step_on GPU, device_ptrs true, buffer_count 4, pin_memory true,
 * pipeline_read and pipeline_write true. */
void zinf_optstep_opts_init(zinf_optstep_opts *opts);
/* -EINVAL for bad opts (buffer_count 0, sub_group_size 0, nparams 0, NVME without a path,
 * step_on CPU dtype or pointer mismatch), -ENODEV for step_on GPU without CUDA or a device,
 * the swapper's errors otherwise; `err` (may be NULL) holds the message. The state is
 * allocated but undefined until zinf_optstep_load(). */
int zinf_optstep_create(const zinf_optstep_opts *opts, zinf_optstep_t **out, char *err,
                        size_t err_len);
void zinf_optstep_destroy(zinf_optstep_t *os);
const char *zinf_optstep_last_error(const zinf_optstep_t *os);

/* Sets the state from host arrays of N floats (m, v may be NULL: zeros) and writes it to its
 * home tier. Every sub-group's step becomes `step` (0 for a fresh optimizer). */
int zinf_optstep_load(zinf_optstep_t *os, const float *master, const float *m, const float *v,
                      int64_t step);
/* fast_init: builds the home copy (pinned buffers or NVMe swap files) from the initial
 * weights without a host copy of the whole partition. fill(ctx, offset, n, dst) writes the
 * fp32 master values of elements [offset, offset + n) into dst and returns 0 or -errno; it is
 * called once per sub-group, in order, with one sub-group's host buffer; m and v start at 0.
 * With an NVMe home up to buffer_count sub-groups are being written at once and each host
 * buffer is released when its write completes, so host memory stays O(buffer_count). */
typedef int (*zinf_optstep_fill_fn)(void *ctx, uint64_t offset, uint64_t n, float *dst);
int zinf_optstep_load_fill(zinf_optstep_t *os, zinf_optstep_fill_fn fill, void *ctx,
                           int64_t step);
/* Copies the state to host arrays of N floats (any may be NULL). */
int zinf_optstep_read(zinf_optstep_t *os, float *master, float *m, float *v);

/* One Adam step over all sub-groups with cfg (cfg->step, lr, ...; moment_dtype must be FP32).
 * grads: N elements of cfg->grad_dtype; param16_out: N elements of cfg->param16_dtype or NULL;
 * device or host pointers per opts.device_ptrs. param16_out must be NULL when opts has a
 * param16_sink, and with step_on GPU and host pointers (-EINVAL otherwise). grad_mult as
 * zinf_adam_step_cpu. The gradients must be complete when called (the step runs on its own
 * non-blocking stream and does not wait for the caller's streams); param16_out is complete
 * when it returns. */
int zinf_optstep_step(zinf_optstep_t *os, const void *grads, void *param16_out,
                      const zinf_adam_cfg *cfg, float grad_mult);

uint64_t zinf_optstep_subgroups(const zinf_optstep_t *os);
/* cfg.step last applied to sub-group i, or -1 for a bad i. */
int64_t zinf_optstep_subgroup_step(const zinf_optstep_t *os, uint64_t i);

typedef struct zinf_optstep_stats {
	uint64_t bytes[OFFLOAD_TIER_COUNT][2]; /* last step: [tier][0 read from, 1 written to] */
	uint64_t fetches, writebacks;          /* last step */
	unsigned peak_resident;                /* most sub-groups in the work tier at once */
	double seconds;                        /* last step, wall time */
} zinf_optstep_stats;
void zinf_optstep_get_stats(const zinf_optstep_t *os, zinf_optstep_stats *out);
offload_swapper_t *zinf_optstep_swapper(zinf_optstep_t *os);

#ifdef __cplusplus
}
#endif
#endif
