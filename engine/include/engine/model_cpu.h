/* CPU forward and backward (fp32, threads) of the models in model.h: the CPU backend of the
 * engine and the oracle for the GPU kernels. Same layer structure as the GPU path.
 *
 * Parameters and gradients are flat fp32 vectors in the model.h layout. Activations for one
 * micro-batch of B sequences of T tokens are owned by the zinf_cpu_model handle.
 * Errors: 0 or -errno; zinf_cpu_model_error() holds a one-line message.
 * Threads: one caller thread per handle; work is split over `threads` workers inside. */
#ifndef ZINF_ENGINE_MODEL_CPU_H
#define ZINF_ENGINE_MODEL_CPU_H

#include <stdint.h>

#include "engine/model.h"
#include "engine/model_hooks.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zinf_cpu_model zinf_cpu_model;

/* B sequences of T <= cfg->max_seq tokens. threads 0: online CPUs. cfg and lay must outlive
 * the handle. */
int zinf_cpu_model_create(const zinf_model_config *cfg, const zinf_model_layout *lay, int B, int T,
			  int threads, zinf_cpu_model **out, char *err, size_t errlen);
void zinf_cpu_model_destroy(zinf_cpu_model *m);
const char *zinf_cpu_model_error(const zinf_cpu_model *m);

/* tokens, targets: B*T int32 row-major [B][T]; a target < 0 is ignored (HF's -100). *loss is
 * the mean cross-entropy over counted targets (0 counted: loss 0). logits: optional
 * [B*T, vocab_size] output (unpadded). Token or target >= vocab_size: -EINVAL naming the
 * position and value. Keeps what backward needs. */
int zinf_cpu_forward(zinf_cpu_model *m, const float *params, const int32_t *tokens,
		     const int32_t *targets, float *loss, float *logits);

/* After zinf_cpu_forward with the same params: grads += grad_scale * d(loss)/d(params), for
 * every tensor (padding rows and alignment tails untouched). grad_scale folds in gradient
 * accumulation (1/steps) and loss scaling. */
int zinf_cpu_backward(zinf_cpu_model *m, const float *params, float *grads, float grad_scale);

/* Per-block hooks (model_hooks.h; ZeRO stage 3); NULL clears them. Copied. */
void zinf_cpu_model_set_hooks(zinf_cpu_model *m, const zinf_model_hooks *hooks);

#ifdef __cplusplus
}
#endif

#endif
