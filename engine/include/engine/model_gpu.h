/* GPU forward and backward of the models in model.h: bf16 weights and activations, fp32
 * accumulation, fp32 gradients, cuBLASLt GEMMs, fused kernels from kernels/.
 *
 * params: device bf16 vector in the model.h layout (same element offsets as the fp32 one).
 * grads:  device fp32 vector in the same layout; backward accumulates (+=) into it, so
 *         gradient accumulation over micro-batches is exact in fp32.
 * All work is enqueued on the handle's stream; only zinf_gpu_loss() synchronises.
 * Errors: 0 or -errno; zinf_gpu_model_error() holds a one-line message.
 * Without CUDA (ZINF_HAVE_CUDA unset) create returns -ENODEV with a message.
 * Environment: ZINF_GPU_NO_EPILOGUE=1 at create makes GPT-2 use separate GELU kernels instead of
 * the cuBLASLt GELU_AUX_BIAS / DGELU epilogues (tests compare the two). */
#ifndef ZINF_ENGINE_MODEL_GPU_H
#define ZINF_ENGINE_MODEL_GPU_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/model.h"
#include "engine/model_hooks.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zinf_gpu_model zinf_gpu_model;

typedef struct zinf_gpu_model_opts {
	int B, T;         /* micro-batch shape; T <= max_seq */
	bool recompute;   /* per-layer activation recompute in backward */
	bool keep_logits; /* tests: keep bf16->fp32 logits readable by zinf_gpu_logits */
	int device;       /* CUDA device ordinal */
} zinf_gpu_model_opts;

int zinf_gpu_model_create(const zinf_model_config *cfg, const zinf_model_layout *lay,
			  const zinf_gpu_model_opts *opts, zinf_gpu_model **out, char *err,
			  size_t errlen);
void zinf_gpu_model_destroy(zinf_gpu_model *m);
const char *zinf_gpu_model_error(const zinf_gpu_model *m);
void *zinf_gpu_model_stream(zinf_gpu_model *m); /* cudaStream_t */
/* Bytes of GPU memory the handle holds (activations, workspaces). */
uint64_t zinf_gpu_model_bytes(const zinf_gpu_model *m);

/* tokens, targets: host int32 [B][T] (copied on the stream); target < 0 ignored. Out-of-range
 * ids: -EINVAL naming the position and value (checked on the host). */
int zinf_gpu_forward(zinf_gpu_model *m, const void *params_bf16, const int32_t *tokens,
		     const int32_t *targets);
/* Mean loss of the last forward (synchronises the stream). */
int zinf_gpu_loss(zinf_gpu_model *m, float *loss);
/* Copy the last forward's logits [B*T, vocab_size] to host fp32 (needs keep_logits). */
int zinf_gpu_logits(zinf_gpu_model *m, float *host_logits);
/* After forward: grads += grad_scale * d(loss)/d(params). */
int zinf_gpu_backward(zinf_gpu_model *m, const void *params_bf16, float *grads_f32,
		      float grad_scale);

/* Per-block hooks (model_hooks.h; ZeRO stage 3), called on the host between enqueues; NULL
 * clears them. Copied. */
void zinf_gpu_model_set_hooks(zinf_gpu_model *m, const zinf_model_hooks *hooks);

#ifdef __cplusplus
}
#endif

#endif
