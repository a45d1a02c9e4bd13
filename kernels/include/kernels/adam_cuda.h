/* Fused Adam / AdamW and gradient statistics on CUDA: plain-C launchers taking a stream.
 * Types and semantics are those of kernels/adam.h; every pointer inside a chunk is a device
 * pointer. Launchers are asynchronous on `stream` and return 0, -EINVAL (bad arguments, with a
 * message on stderr) or -EIO (a CUDA call failed; the statement, file:line, device and CUDA
 * error are printed). Chunks whose pointers are all 16-byte aligned take the vectorised path;
 * others work, slower.
 * Chunks are processed ZINF_CUDA_CHUNKS_PER_LAUNCH at a time: one launch per that many. */
#ifndef ZINF_KERNELS_ADAM_CUDA_H
#define ZINF_KERNELS_ADAM_CUDA_H

#include <cuda_runtime_api.h>

#include "kernels/adam.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZINF_CUDA_CHUNKS_PER_LAUNCH 32
#define ZINF_GRAD_PARTIALS 1024

/* Device scratch for the two-pass norm: caller allocates sizeof(zinf_grad_scratch) bytes of
 * device memory and may reuse it for every call on the same stream. */
typedef struct zinf_grad_scratch {
	double partial[ZINF_GRAD_PARTIALS];
	int32_t nonfinite[ZINF_GRAD_PARTIALS];
} zinf_grad_scratch;

/* One step over all chunks. Each gradient is multiplied by grad_mult, and when d_stats (device
 * memory written by zinf_grad_stats_cuda) is not NULL also by d_stats->grad_mult, and the step
 * is skipped entirely (nothing written) when d_stats->found_inf is set: no host sync needed. */
int zinf_adam_step_cuda(const zinf_adam_cfg *cfg, const zinf_adam_chunk *chunks, int nchunks,
			float grad_mult, const zinf_grad_stats *d_stats, cudaStream_t stream);

/* Pass 1 + 2 of the norm: d_stats->sumsq and ->found_inf over all chunks' gradients, fixed
 * reduction order (ZINF_GRAD_PARTIALS blocks, then one block), no float atomics: the same
 * inputs give the same bits on any GPU. Then finishes the stats as zinf_grad_stats_finish. */
int zinf_grad_stats_cuda(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
			 float loss_scale, float max_norm, zinf_grad_stats *d_stats,
			 zinf_grad_scratch *d_scratch, cudaStream_t stream);

/* Only the sumsq/found_inf part (for callers that reduce sumsq over ranks in between) ... */
int zinf_grad_sumsq_cuda(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
			 zinf_grad_stats *d_stats, zinf_grad_scratch *d_scratch,
			 cudaStream_t stream);
/* ... and the finish on the device. */
int zinf_grad_stats_finish_cuda(zinf_grad_stats *d_stats, float loss_scale, float max_norm,
				cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
