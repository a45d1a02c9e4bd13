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
 * Compute copy: a full-length parameter vector (CPU fp32, GPU bf16) of which only gathered
 * blocks hold data. On the CPU it and the gradient vector are anonymous NORESERVE mappings;
 * releasing a block returns its whole pages to the kernel (MADV_DONTNEED, which also zeroes
 * gradients), so resident parameter and gradient-scratch memory is bounded by the blocks live
 * at once; mincore() measures it. On the GPU both are plain allocations (releasing a block
 * frees nothing: the memory win there is the partitioned optimizer state and gradients only).
 *
 * Persistence: a block of fewer than stage3_param_persistence_threshold elements stays
 * gathered once gathered (until the next step changes the parameters). DeepSpeed applies the
 * threshold per parameter tensor; here it is per block (the unit that is gathered).
 *
 * Collectives run synchronously from the hooks (GPU: on the comm stream, ordered after the
 * compute stream's work and before its next work; no prefetch of the next block yet). */
#ifndef ZINF_ENGINE_ZERO3_H
#define ZINF_ENGINE_ZERO3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/comm.h"
#include "engine/model.h"
#include "engine/model_hooks.h"

typedef struct zinf_zero3 {
	zinf_comm *comm;
	int W, rank, nblocks;
	bool gpu;
	void *stream; /* GPU: the model's compute stream */
	int64_t N, S, max_per;
	int64_t *off, *n, *per, *soff; /* per block: offset, numel, slots per rank, shard offset */
	int64_t *own_b, *own_n;       /* per block: this rank's owned range (absolute), count */
	bool *persist, *live;
	/* full-length compute vectors: CPU fp32 params/grads (mappings owned here), GPU bf16
	 * params / fp32 grads (owned by the engine) */
	void *params;
	float *grads;
	size_t map_bytes;
	/* the rank's packed shard the gathers read: CPU fp32 master, GPU bf16 copy */
	const void *shard;
	float *gacc;  /* CPU: packed reduced gradients, accumulated over micro-steps (S) */
	void *stage;  /* W * max_per fp32 (host or device) */
	uint64_t live_bytes, live_peak;   /* gathered blocks, by block size */
	uint64_t res_param_peak, res_grad_peak; /* CPU: mincore-measured resident bytes */
	uint64_t gathers, reduces;
	char err[512];
} zinf_zero3;

/* Sizes from the layout; CPU: maps the full params and grads vectors (z->params, z->grads) and
 * allocates the host staging. GPU: params/grads/shard pointers are set by the engine later
 * (zinf_zero3_set_gpu) and the staging is device memory. */
int zinf_zero3_init(zinf_zero3 *z, const zinf_model_layout *lay, zinf_comm *comm, int W,
                    int rank, bool gpu, int64_t persistence_threshold, char *err,
                    size_t errlen);
void zinf_zero3_free(zinf_zero3 *z);
int zinf_zero3_set_gpu(zinf_zero3 *z, void *stream, void *d_p16, float *d_grads,
                       const void *d_shard16, char *err, size_t errlen);
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
/* GPU: the owned ranges of d_grads into the packed d_gpart (S fp32) on the compute stream. */
int zinf_zero3_pack_grads_gpu(zinf_zero3 *z, float *d_gpart);
/* The full fp32 vector from every rank's packed host shard (a collective): out gets N floats. */
int zinf_zero3_gather_full(zinf_zero3 *z, const float *packed, float *out);

#endif
