/* ZeRO stage 3 across ranks (issue 9), the engine's private helper: every rank holds its shard
 * of every block (model.h layout) and the model's per-block hooks (model_hooks.h) gather a
 * block just before it is read and reduce-scatter its gradient right after its backward.
 *
 * Shard layout: block b (offset off_b, n_b elements) gives every rank per_b =
 * round_up(ceil(n_b / W), ZINF_BLOCK_ALIGN) slots; rank r owns [off_b + r*per_b, off_b +
 * min((r+1)*per_b, n_b)) as zero_partition.c's stage 3 says. The rank's packed shard is the
 * blocks' slots in block order, S = sum per_b elements (the same S on every rank); slots past
 * the owned count are padding and stay 0 (Adam keeps a zero parameter with zero gradient at 0).
 * That packed vector is the rank's optimizer partition (master, m, v, reduced gradients).
 *
 * CPU: the compute copy is a full-length fp32 parameter vector of which only gathered blocks
 * hold data; it and the gradient vector are anonymous NORESERVE mappings; releasing a block
 * returns its whole pages to the kernel (MADV_DONTNEED, which also zeroes gradients), so
 * resident parameter and gradient-scratch memory is bounded by the blocks live at once;
 * mincore() measures it. Collectives run synchronously from the hooks.
 *
 * GPU (zero3_gpu.c): no full-length vector. A gathered block lives in a device slot of W * per
 * bf16 elements (the all-gather lands there in place); the model finds it through the
 * params_at hook. Backward writes a block's gradient into a zeroed fp32 slot (grads_at),
 * grads_done reduce-scatters it in place and adds the rank's owned part into the packed
 * accumulator gpart (S fp32, device memory or pinned host memory), then the slot is free.
 * Slots come from a pool that grows to the most blocks live at once (held until the engine
 * goes; with a GPU memory budget, free slots and blocks kept for reuse are given back first).
 * Gathers and reductions run on the gather stream (the NCCL comm's stream, or a stream of our
 * own at W 1) ordered against the compute stream by events, so the next blocks' gathers
 * overlap the current block's compute:
 *   order     the first forward + backward records the sequence of params_needed calls
 *             (every forward starts a new pass); later passes follow it (a mismatch drops it
 *             and records again), like DeepSpeed's trace.
 *   prefetch  after params_needed(b), the blocks that come next are gathered ahead within
 *             stage3_prefetch_bucket_size elements (at least one block when it is > 0: the
 *             unit here is the block, not the tensor) and stage3_max_live_parameters.
 *   reuse     params_done(b) keeps b when its next use comes within stage3_max_reuse_distance
 *             elements (e.g. the last layers between forward and backward) and the live total
 *             stays under stage3_max_live_parameters.
 *   store     with offload_param (pstore.h) the rank's slices come from host memory or NVMe:
 *             host -> GPU copy into the slot's own part, then the in-place all-gather; NVMe
 *             reads for upcoming blocks start when their prefetch is due.
 *
 * Persistence: a block of fewer than stage3_param_persistence_threshold elements stays
 * gathered once gathered (until the next step changes the parameters). DeepSpeed applies the
 * threshold per parameter tensor; here it is per block (the unit that is gathered). */
#ifndef ZINF_ENGINE_ZERO3_H
#define ZINF_ENGINE_ZERO3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/comm.h"
#include "engine/model.h"
#include "engine/model_hooks.h"
#include "pstore.h"

typedef struct zinf_zero3_gpu zinf_zero3_gpu;

typedef struct zinf_zero3 {
	zinf_comm *comm;
	int W, rank, nblocks;
	bool gpu;
	void *stream; /* GPU: the model's compute stream */
	int64_t N, S, max_per;
	int64_t *off, *n, *per, *soff; /* per block: offset, numel, slots per rank, shard offset */
	int64_t *own_b, *own_n;       /* per block: this rank's owned range (absolute), count */
	bool *persist, *live; /* live: CPU only (the GPU state tracks its own) */
	/* CPU: the full-length fp32 params/grads mappings (owned here); unused on the GPU */
	void *params;
	float *grads;
	size_t map_bytes;
	/* the rank's packed shard the gathers read: CPU fp32 master, GPU bf16 copy (NULL with
	 * offload_param: the store holds it) */
	const void *shard;
	zinf_pstore *store; /* CPU with offload_param: the bf16 slices' home (pstore.h) */
	float *gacc;  /* CPU: packed reduced gradients, accumulated over micro-steps (S) */
	void *stage;  /* CPU: W * max_per fp32 */
	uint64_t live_bytes, live_peak;   /* gathered blocks, by block size */
	uint64_t res_param_peak, res_grad_peak; /* CPU: mincore-measured resident bytes */
	uint64_t gathers, reduces;
	uint64_t prefetched, reuse_kept, slot_peak; /* GPU */
	zinf_zero3_gpu *g;                           /* GPU state (zero3_gpu.c) */
	char err[512];
} zinf_zero3;

typedef struct zinf_zero3_gpu_opts {
	void *stream;         /* the model's compute stream */
	const void *shard16;  /* device packed bf16 shard (S); NULL with a store */
	zinf_pstore *store;   /* offload_param: the slices' home (host / NVMe) */
	float *gpart;         /* packed reduced gradients (S fp32; device or pinned host) */
	int64_t prefetch_bucket, max_live, max_reuse; /* elements (stage3_* keys) */
	uint64_t slot_budget; /* bytes of slots allowed; 0: no limit */
	bool overlap_comm;    /* false: the compute stream waits for each block's reduction */
} zinf_zero3_gpu_opts;

/* Sizes from the layout; CPU: maps the full params and grads vectors (z->params, z->grads) and
 * allocates the host staging. GPU: params/grads/shard pointers are set by the engine later
 * (zinf_zero3_set_gpu) and the staging is device memory. */
int zinf_zero3_init(zinf_zero3 *z, const zinf_model_layout *lay, zinf_comm *comm, int W,
                    int rank, bool gpu, int64_t persistence_threshold, char *err,
                    size_t errlen);
void zinf_zero3_free(zinf_zero3 *z);
int zinf_zero3_set_gpu(zinf_zero3 *z, const zinf_zero3_gpu_opts *o, char *err, size_t errlen);
/* GPU: a forward begins (the recorded block order starts over). No-op on the CPU. */
void zinf_zero3_begin_forward(zinf_zero3 *z);
/* GPU: the host waits for every gather and reduction in flight (before the shard or gpart
 * change or are read on the host). */
int zinf_zero3_quiesce(zinf_zero3 *z);
/* GPU: the next step's first reduction of each block overwrites the packed accumulator
 * instead of adding to it (no clearing pass over it). */
void zinf_zero3_grads_reset(zinf_zero3 *z);

zinf_model_hooks zinf_zero3_hooks(zinf_zero3 *z);

/* After the parameters changed (a step, a load): every block must be gathered again. */
void zinf_zero3_invalidate(zinf_zero3 *z);
/* full (N floats) -> packed shard (S floats, padding 0). */
void zinf_zero3_pack(const zinf_zero3 *z, const float *full, float *packed);
/* Checkpoints (the manifest's partition table counts owned elements only, in block order):
 * in place, the packed shard (S floats) -> its owned elements back to back (returns how many,
 * the table's numel for this rank), and back (padding slots set to 0). `buf` holds S floats. */
int64_t zinf_zero3_compact(const zinf_zero3 *z, float *buf);
void zinf_zero3_expand(const zinf_zero3 *z, float *buf);
/* The full fp32 vector from every rank's packed host shard (a collective): out gets N floats. */
int zinf_zero3_gather_full(zinf_zero3 *z, const float *packed, float *out);

/* Sets z->err from fmt and returns rc (zero3.c and zero3_gpu.c). */
int zinf_zero3_fail(zinf_zero3 *z, int rc, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* zero3_gpu.c */
int zinf_zero3_gpu_init(zinf_zero3 *z, const zinf_zero3_gpu_opts *o, char *err, size_t errlen);
void zinf_zero3_gpu_free(zinf_zero3 *z);
int zinf_zero3_gpu_needed(zinf_zero3 *z, int b);
int zinf_zero3_gpu_done(zinf_zero3 *z, int b);
int zinf_zero3_gpu_grads_done(zinf_zero3 *z, int b);
const void *zinf_zero3_gpu_params_at(zinf_zero3 *z, int b);
float *zinf_zero3_gpu_grads_at(zinf_zero3 *z, int b);
void zinf_zero3_gpu_begin_forward(zinf_zero3 *z);
int zinf_zero3_gpu_flush(zinf_zero3 *z);
int zinf_zero3_gpu_quiesce(zinf_zero3 *z);
void zinf_zero3_gpu_invalidate(zinf_zero3 *z);
void zinf_zero3_gpu_grads_reset(zinf_zero3 *z);

#endif
