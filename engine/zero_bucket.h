/* ZeRO stages 0-2 at world size > 1 (issue 9), the engine's private helper: the gradients are
 * reduced in buckets while the backward still runs, from the model's grads_done hook
 * (model_hooks.h), instead of in one collective after it.
 *
 * The model finishes blocks in the order L+1, L, ..., 0 and block offsets grow with the block
 * index (model.h layout), so what is final at any time is a suffix [lo, Np) of the padded
 * gradient vector. Once the finished but unreduced range [lo, hi) holds reduce_bucket_size
 * elements (and always at block 0, the last), it is reduced in place:
 *   stage 0     all-reduce (every rank needs every gradient);
 *   stages 1-2  reduce to the owner: the part of the range inside rank r's partition
 *               [r * per, (r + 1) * per) is summed onto rank r only (ncclReduce, root r), the
 *               same bytes on the wire as the reduce-scatter it replaces.
 * No collective covers more than reduce_bucket_size elements; a block larger than that is
 * reduced in pieces. The whole vector in one bucket (a model smaller than reduce_bucket_size)
 * is one reduce-scatter at stages 1-2, and nothing overlaps then: as in DeepSpeed, overlap
 * needs buckets smaller than the model. The reduction is in place, so there is no bucket
 * buffer: unlike DeepSpeed, overlapping costs no memory.
 *
 * GPU: collectives go on the comm stream after the compute stream's work so far (the backward
 * of the blocks in the range), so the backward of the blocks before them overlaps the
 * reduction; `overlap` false makes the compute stream wait for each bucket (overlap_comm false).
 * The compute stream always waits for the last bucket, so whatever follows the backward (the
 * optimizer, stage 2's clearing, the next backward) sees the reduced gradients. CPU (shm): the
 * collectives complete inside the hook; the results are the same bits as the one-shot
 * reduce-scatter / all-reduce (the shm backend sums in rank order either way).
 *
 * Every rank issues the same collectives in the same order: the hook sequence depends only on
 * the model config (model_hooks.h), and the bucket boundaries only on the layout. A grads_done
 * out of that order is refused (-EPROTO) rather than reducing a range twice. */
#ifndef ZINF_ENGINE_ZERO_BUCKET_H
#define ZINF_ENGINE_ZERO_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/comm.h"
#include "engine/model_hooks.h"

typedef struct zinf_zero_bucket {
	/* set by the engine */
	zinf_comm *comm;
	void *stream;                /* GPU: the model's cudaStream_t; NULL: CPU */
	float *grads;                /* the padded gradient vector (Np elements) */
	const int64_t *block_offset; /* [nblocks], ascending, block_offset[0] == 0 */
	int nblocks;
	int64_t Np, per;             /* rank r's partition: [r * per, (r + 1) * per) */
	int64_t bucket;              /* reduce_bucket_size: elements per collective, at most */
	bool all_reduce;             /* stage 0 */
	bool overlap;                /* overlap_comm */
	/* state */
	bool armed;      /* this backward reduces (set by zinf_zero_bucket_arm) */
	int64_t hi;      /* finished gradients in [lo, hi) are not reduced yet */
	int64_t issued;  /* collectives issued since creation */
	int64_t flushes; /* buckets reduced since creation */
	char err[512];
} zinf_zero_bucket;

/* Checks the settings: 0, or -EINVAL with the reason in z->err. */
int zinf_zero_bucket_check(zinf_zero_bucket *z);
/* Before a backward: `on` when this backward's gradients are to be reduced (every backward at
 * stage 2; the accumulation boundary's at stages 0-1). */
void zinf_zero_bucket_arm(zinf_zero_bucket *z, bool on);
/* true when the last armed backward reduced everything (its grads_done(0) ran and succeeded);
 * cleared by the next arm. */
bool zinf_zero_bucket_done(const zinf_zero_bucket *z);
/* The hooks to give the model: grads_done only. */
zinf_model_hooks zinf_zero_bucket_hooks(zinf_zero_bucket *z);

#endif
