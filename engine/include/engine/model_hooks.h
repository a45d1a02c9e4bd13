/* Per-block hooks of the CPU and GPU models (model_cpu.h, model_gpu.h): how ZeRO stage 3 runs
 * whole-model forward/backward over parameters that are sharded per block (model.h layout:
 * block 0 embeddings, 1..n_layer the layers, n_layer + 1 final norm + untied head).
 *
 * With hooks set, the model calls, with the block index:
 *   params_needed  before it reads any of the block's parameters in this pass (forward,
 *                  backward, recompute); the engine makes the block's region of the parameter
 *                  vector valid (gathers it);
 *   params_done    when this pass reads no more of the block's parameters for now (the engine
 *                  may release the region; a later params_needed brings it back);
 *   grads_done     in backward, once the block's gradient of this micro-batch is complete
 *                  (nothing more is added to its region of grads): the engine reduces it.
 * Every backward calls grads_done once for every block, in the order L+1, L, ..., 1, 0, and the
 * sequence of calls depends only on the model config (not on the data: a micro-batch without
 * counted targets still walks every block), so ranks issuing collectives from the hooks stay
 * in step. Tied embeddings: block 0 is needed again for the head at the end of forward and
 * the start of backward. GPU model: the hooks run on the host between enqueues; work they
 * enqueue must be ordered against the model's stream (zinf_gpu_model_stream).
 * A hook returns 0 or -errno; the model stops the pass and returns that value, with a message
 * naming the block and the hook (the hook's owner keeps the details).
 * No hooks set (the default): the models run exactly as without this header.
 *
 * GPU model only, optional: params_at(b) (called between params_needed(b) and params_done(b))
 * says where block b's bf16 parameters are for now, and grads_at(b) (called in backward before
 * the first write of block b's gradient in this backward, valid until grads_done(b)) where its
 * fp32 gradient accumulates; both point at the block's first element (element block_offset[b]
 * of the full vector). A NULL function means the caller's full-length vector; when set, the
 * model uses what they return (grads_at NULL: the hook failed, the pass stops with an error).
 * ZeRO stage 3 uses them to keep only gathered blocks on the GPU. */
#ifndef ZINF_ENGINE_MODEL_HOOKS_H
#define ZINF_ENGINE_MODEL_HOOKS_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zinf_model_hooks {
	void *ctx;
	int (*params_needed)(void *ctx, int block);
	int (*params_done)(void *ctx, int block);
	int (*grads_done)(void *ctx, int block);
	const void *(*params_at)(void *ctx, int block);
	float *(*grads_at)(void *ctx, int block);
} zinf_model_hooks;

/* The hook calls of a backward that computes nothing (no counted target), in a real backward's
 * order: head (and tied block 0) needed and done, grads_done L+1, then per layer needed, done,
 * grads_done, then grads_done 0. Returns 0 or the first failing hook's value, with the block
 * and the hook's name. Both models use it, so their call sequences cannot drift apart. */
static inline int
zinf_model_hooks_backward_walk(const zinf_model_hooks *h, int n_layer, bool tied, int *block,
                               const char **name)
{
	int L = n_layer, rc = 0;
#define ZINF_HOOK_(fn, b)                                                                    \
	do {                                                                                 \
		if (h->fn && (rc = h->fn(h->ctx, (b)))) {                                    \
			*block = (b);                                                        \
			*name = #fn;                                                         \
			return rc;                                                           \
		}                                                                            \
	} while (0)
	ZINF_HOOK_(params_needed, L + 1);
	if (tied)
		ZINF_HOOK_(params_needed, 0);
	ZINF_HOOK_(params_done, L + 1);
	if (tied)
		ZINF_HOOK_(params_done, 0);
	ZINF_HOOK_(grads_done, L + 1);
	for (int l = L - 1; l >= 0; l--) {
		ZINF_HOOK_(params_needed, l + 1);
		ZINF_HOOK_(params_done, l + 1);
		ZINF_HOOK_(grads_done, l + 1);
	}
	ZINF_HOOK_(grads_done, 0);
#undef ZINF_HOOK_
	return 0;
}

#ifdef __cplusplus
}
#endif

#endif
