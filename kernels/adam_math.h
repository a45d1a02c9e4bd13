/* Per-element optimizer math shared by the CPU backend (adam_cpu.c) and the CUDA kernels
 * (adam.cu): one definition of the update, of the 16-bit roundings and of the clip
 * coefficient, so the two backends cannot drift apart. Private to kernels/. The tests keep
 * their own, independent double-precision reference. */
#ifndef ZINF_KERNELS_ADAM_MATH_H
#define ZINF_KERNELS_ADAM_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/adam.h"

#ifdef __CUDACC__
#define ZINF_HD static __host__ __device__ __forceinline__
#else
#define ZINF_HD static inline __attribute__((always_inline))
#endif

/* Constants of one step, computed once on the host (bias corrections in double). */
typedef struct zinf_adam_coef {
	float beta1, beta2, omb1, omb2; /* omb = 1 - beta */
	float step_size;                /* lr / (1 - beta1^t) */
	float inv_bc2_sqrt;             /* 1 / sqrt(1 - beta2^t) */
	float eps;
	float l2;                       /* wd for Adam (L2 into the gradient), 0 for AdamW */
	float decay;                    /* 1 - lr * wd for AdamW, 1 for Adam */
	uint32_t seed;                  /* stochastic rounding of bf16 moments; from the step */
} zinf_adam_coef;

static inline zinf_adam_coef
zinf_adam_coef_make(const zinf_adam_cfg *cfg)
{
	zinf_adam_coef c;
	double t = (double)cfg->step;
	c.beta1 = cfg->beta1;
	c.beta2 = cfg->beta2;
	c.omb1 = (float)(1.0 - (double)cfg->beta1);
	c.omb2 = (float)(1.0 - (double)cfg->beta2);
	c.step_size = (float)((double)cfg->lr / (1.0 - pow((double)cfg->beta1, t)));
	c.inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow((double)cfg->beta2, t)));
	c.eps = cfg->eps;
	if (cfg->decay == ZINF_ADAM_DECAY_DECOUPLED) {
		c.l2 = 0.0f;
		c.decay = (float)(1.0 - (double)cfg->lr * (double)cfg->weight_decay);
	} else {
		c.l2 = cfg->weight_decay;
		c.decay = 1.0f;
	}
	c.seed = (uint32_t)cfg->step * 0x9E3779B9u;
	return c;
}

/* The update, on already unscaled/clipped gradient g (same order of operations as
 * torch's fused AdamW: decay, moments, denom = sqrt(v)/sqrt(bc2) + eps, p -= step_size*m/denom). */
ZINF_HD void
zinf_adam_update(const zinf_adam_coef *c, float g, float *p, float *m, float *v)
{
	float pp = *p;
	g = g + c->l2 * pp;
	float mm = c->beta1 * *m + c->omb1 * g;
	float vv = c->beta2 * *v + c->omb2 * (g * g);
	float denom = sqrtf(vv) * c->inv_bc2_sqrt + c->eps;
	*p = pp * c->decay - c->step_size * (mm / denom);
	*m = mm;
	*v = vv;
}

ZINF_HD uint32_t
zinf_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

ZINF_HD float
zinf_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

ZINF_HD float
zinf_bf16_to_f32(uint16_t h)
{
	return zinf_bits_f32((uint32_t)h << 16);
}

/* Round to nearest even; NaN stays NaN (quieted). */
ZINF_HD uint16_t
zinf_f32_to_bf16(float f)
{
	uint32_t u = zinf_f32_bits(f);
	uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
	return (uint16_t)(((u & 0x7FFFFFFFu) > 0x7F800000u) ? ((u >> 16) | 0x40u) : r);
}

/* Counter-based hash (lowbias32): the random bits for stochastic rounding of element `idx`. */
ZINF_HD uint32_t
zinf_hash32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7FEB352Du;
	x ^= x >> 15;
	x *= 0x846CA68Bu;
	x ^= x >> 16;
	return x;
}

/* Stochastic rounding to bf16: add 16 random bits below the kept mantissa and truncate, so the
 * expected stored value equals f (unbiased). NaN stays NaN. */
ZINF_HD uint16_t
zinf_f32_to_bf16_sr(float f, uint32_t rnd)
{
	uint32_t u = zinf_f32_bits(f);
	uint32_t r = (u + (rnd & 0xFFFFu)) >> 16;
	return (uint16_t)(((u & 0x7FFFFFFFu) > 0x7F800000u) ? ((u >> 16) | 0x40u) : r);
}

/* Random bits for moment `which` (0 = m, 1 = v) of element idx of chunk `chunk`. */
ZINF_HD uint32_t
zinf_sr_bits(uint32_t seed, uint32_t chunk, uint32_t idx, uint32_t which)
{
	return zinf_hash32(seed ^ zinf_hash32(idx * 2u + which + chunk * 0x85EBCA6Bu));
}

/* Clip coefficient from the global sum of squares of the loss-scaled gradients. */
ZINF_HD void
zinf_grad_finish(double sumsq, float loss_scale, float max_norm, float *norm, float *coef,
		 float *mult)
{
	float nrm = (float)(sqrt(sumsq) / (double)loss_scale);
	float cf = 1.0f;
	if (max_norm > 0.0f) {
		float q = max_norm / (nrm + 1e-6f);
		cf = q < 1.0f ? q : 1.0f;
	}
	*norm = nrm;
	*coef = cf;
	*mult = cf / loss_scale;
}

#endif
