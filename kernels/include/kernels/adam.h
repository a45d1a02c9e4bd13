/* Fused Adam / AdamW, gradient norm, clipping and overflow checks: types and the CPU backend.
 *
 * One optimizer step reads, per element, the fp32 master weight, Adam's m and v and the
 * gradient, and writes the master weight, m, v and (optionally) a 16-bit copy of the weight,
 * in one pass. The gradient is multiplied by `grad_mult` first: that is clip_coef / loss_scale,
 * computed by zinf_grad_stats_*() below, so unscaling and clipping cost no extra pass.
 *
 * Work is described as a list of chunks (multi-tensor): each chunk is one contiguous run of
 * elements with its own pointers; all chunks of a call share the dtypes in zinf_adam_cfg.
 *
 * Errors: functions return 0 or a negative errno and never exit. -EINVAL (bad config or chunk,
 * with a line on stderr naming the field, value and limit), -ENOMEM (scratch or thread
 * allocation), -EAGAIN (pthread_create failed).
 * Thread rules: all functions are reentrant; the caller owns every buffer. */
#ifndef ZINF_KERNELS_ADAM_H
#define ZINF_KERNELS_ADAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zinf_dtype {
	ZINF_DTYPE_FP32 = 0,
	ZINF_DTYPE_BF16 = 1,
	ZINF_DTYPE_FP16 = 2,
} zinf_dtype;

const char *zinf_dtype_name(zinf_dtype t);

/* How weight decay enters the update. */
typedef enum zinf_adam_decay {
	ZINF_ADAM_DECAY_L2 = 0,        /* Adam: g += wd * p before the moments (torch.optim.Adam) */
	ZINF_ADAM_DECAY_DECOUPLED = 1, /* AdamW: p *= 1 - lr * wd (torch.optim.AdamW) */
} zinf_adam_decay;

typedef struct zinf_adam_cfg {
	float lr, beta1, beta2, eps, weight_decay;
	int64_t step;              /* 1-based step number, for bias correction */
	zinf_adam_decay decay;
	zinf_dtype grad_dtype;     /* FP32, BF16 or FP16 */
	zinf_dtype moment_dtype;   /* FP32, or BF16 (stochastically rounded; see kernels/README.md) */
	zinf_dtype param16_dtype;  /* BF16 or FP16: dtype of chunk.param16 where it is not NULL */
} zinf_adam_cfg;

/* Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.01, step 1, AdamW, all fp32, bf16 copy. */
void zinf_adam_cfg_init(zinf_adam_cfg *cfg);

/* Checks ranges (lr >= 0, 0 <= beta < 1, eps > 0, wd >= 0, step >= 1, dtypes); -EINVAL with a
 * message on stderr otherwise. Called by every step function. */
int zinf_adam_cfg_check(const zinf_adam_cfg *cfg);

typedef struct zinf_adam_chunk {
	float *param;       /* fp32 master weights, updated in place */
	void *m, *v;        /* Adam moments, cfg.moment_dtype, updated in place */
	const void *grad;   /* cfg.grad_dtype, read only */
	void *param16;      /* cfg.param16_dtype copy of the updated weights, or NULL for none */
	int64_t n;          /* elements; 0 is allowed */
} zinf_adam_chunk;

/* Result of the gradient check, host or device memory depending on the backend. */
typedef struct zinf_grad_stats {
	double sumsq;       /* sum of squares of the raw (still loss-scaled) gradients */
	float norm;         /* global L2 norm of the unscaled gradients: sqrt(sumsq) / loss_scale */
	float clip_coef;    /* min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 */
	float grad_mult;    /* clip_coef / loss_scale: what the step multiplies each gradient by */
	int32_t found_inf;  /* 1 when any gradient is inf or NaN: skip the step, lower the scale */
} zinf_grad_stats;

/* Fills norm, clip_coef and grad_mult from sumsq and found_inf (for example after the caller
 * summed sumsq and OR-ed found_inf over ranks). loss_scale > 0. */
void zinf_grad_stats_finish(zinf_grad_stats *s, float loss_scale, float max_norm);

/* ---- CPU backend ---------------------------------------------------------------------- */

typedef enum zinf_cpu_isa {
	ZINF_CPU_ISA_AUTO = 0,   /* best the CPU supports */
	ZINF_CPU_ISA_GENERIC,    /* baseline x86-64 / any architecture */
	ZINF_CPU_ISA_AVX2,       /* AVX2 + FMA + F16C */
	ZINF_CPU_ISA_AVX512,     /* AVX-512 F/BW/VL/DQ + FMA + F16C */
} zinf_cpu_isa;

typedef struct zinf_cpu_opts {
	int nthreads;       /* worker threads (pthreads), >= 1; small calls use fewer */
	zinf_cpu_isa isa;   /* AUTO normally; tests force each variant */
} zinf_cpu_opts;

/* The ISA that `want` resolves to on this CPU (AUTO -> best; an unsupported one -> -ENOTSUP
 * from the functions below). */
zinf_cpu_isa zinf_cpu_isa_resolve(zinf_cpu_isa want);
int zinf_cpu_isa_supported(zinf_cpu_isa isa);
const char *zinf_cpu_isa_name(zinf_cpu_isa isa);

/* One Adam/AdamW step over all chunks; gradients are multiplied by grad_mult. The caller skips
 * the call when zinf_grad_stats.found_inf is set. opts may be NULL (1 thread, AUTO). */
int zinf_adam_step_cpu(const zinf_adam_cfg *cfg, const zinf_adam_chunk *chunks, int nchunks,
		       float grad_mult, const zinf_cpu_opts *opts);

/* Sum of squares and inf/NaN flag of chunk[i].grad (grad_dtype) over all chunks, then
 * zinf_grad_stats_finish(). Deterministic: the summation order depends only on the chunk list,
 * not on the thread count. */
int zinf_grad_stats_cpu(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
			float loss_scale, float max_norm, const zinf_cpu_opts *opts,
			zinf_grad_stats *out);

#ifdef __cplusplus
}
#endif
#endif
