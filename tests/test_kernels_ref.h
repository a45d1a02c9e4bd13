/* Shared by test_kernels_cpu.c and test_kernels_gpu.c: random chunk lists, an independent
 * double-precision Adam/AdamW reference (textbook form: m_hat / (sqrt(v_hat) + eps), its own
 * dtype decoding), and checks with per-dtype relative tolerances. Nothing here uses
 * kernels/adam_math.h. */
#ifndef ZINF_TEST_KERNELS_REF_H
#define ZINF_TEST_KERNELS_REF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/adam.h"

#define TK_MAXC 80
#define TK_GAP 3 /* poisoned elements between chunks: catch out-of-bounds writes */
#define TK_POISON16 0xFFFFu

typedef struct tk_case {
	int nchunks;
	int64_t off[TK_MAXC], n[TK_MAXC], total;
	zinf_adam_cfg cfg;
	int with_p16;
	float mult;
	float *p0, *p;            /* inputs / outputs (fp32 master) */
	void *m0, *v0, *m, *v;    /* moment dtype */
	void *g;                  /* grad dtype */
	uint16_t *p16;
	double *pr, *mr, *vr;     /* reference */
} tk_case;

static uint64_t tk_rng_state = 0x9E3779B97F4A7C15ull;

static double
tk_uniform(void) /* [0, 1) */
{
	uint64_t x = tk_rng_state;
	x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
	tk_rng_state = x;
	return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

static size_t
tk_size(zinf_dtype t)
{
	return t == ZINF_DTYPE_FP32 ? 4 : 2;
}

static double
tk_get(zinf_dtype t, const void *a, int64_t i)
{
	if (t == ZINF_DTYPE_FP32)
		return ((const float *)a)[i];
	uint16_t h = ((const uint16_t *)a)[i];
	if (t == ZINF_DTYPE_BF16) {
		uint32_t u = (uint32_t)h << 16;
		float f;
		memcpy(&f, &u, 4);
		return f;
	}
	_Float16 x;
	memcpy(&x, &h, 2);
	return (double)x;
}

/* Stores x as dtype t (bf16 by truncation: inputs only need to be some exact bf16 value). */
static void
tk_put(zinf_dtype t, void *a, int64_t i, double x)
{
	if (t == ZINF_DTYPE_FP32) {
		((float *)a)[i] = (float)x;
	} else if (t == ZINF_DTYPE_BF16) {
		float f = (float)x;
		uint32_t u;
		memcpy(&u, &f, 4);
		((uint16_t *)a)[i] = (uint16_t)(u >> 16);
	} else {
		_Float16 h = (_Float16)x;
		memcpy((uint16_t *)a + i, &h, 2);
	}
}

static void *
tk_alloc(size_t bytes)
{
	void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
	if (!p) {
		fprintf(stderr, "test: out of memory (%zu bytes)\n", bytes);
		exit(1);
	}
	return p;
}

/* sizes[]: chunk lengths; misalign: shift every chunk start off the 4-element grid. */
static void
tk_case_init(tk_case *c, const int64_t *sizes, int nchunks, int misalign,
	     const zinf_adam_cfg *cfg, int with_p16, float mult)
{
	memset(c, 0, sizeof *c);
	c->cfg = *cfg;
	c->with_p16 = with_p16;
	c->mult = mult;
	c->nchunks = nchunks;
	int64_t pos = 4;
	for (int i = 0; i < nchunks; i++) {
		pos = (pos + TK_GAP + 3) & ~(int64_t)3;
		if (misalign)
			pos += 1 + i % 3;
		c->off[i] = pos;
		c->n[i] = sizes[i];
		pos += sizes[i];
	}
	c->total = pos + TK_GAP + 4;
	size_t ms = tk_size(cfg->moment_dtype), gs = tk_size(cfg->grad_dtype);
	c->p0 = tk_alloc(4 * c->total);
	c->p = tk_alloc(4 * c->total);
	c->m0 = tk_alloc(ms * c->total);
	c->v0 = tk_alloc(ms * c->total);
	c->m = tk_alloc(ms * c->total);
	c->v = tk_alloc(ms * c->total);
	c->g = tk_alloc(gs * c->total);
	c->p16 = tk_alloc(2 * c->total);
	c->pr = tk_alloc(8 * c->total);
	c->mr = tk_alloc(8 * c->total);
	c->vr = tk_alloc(8 * c->total);
	/* Gradients are "loss scaled": the kernels multiply them by mult. */
	double gscale = 1.0 / mult;
	for (int64_t i = 0; i < c->total; i++) {
		c->p0[i] = (float)(2 * tk_uniform() - 1);
		int zero_state = tk_uniform() < 0.1; /* like the very first step */
		tk_put(cfg->moment_dtype, c->m0, i, zero_state ? 0 : 0.2 * (tk_uniform() - 0.5));
		tk_put(cfg->moment_dtype, c->v0, i, zero_state ? 0 : 0.01 * tk_uniform());
		double g = (2 * tk_uniform() - 1) * gscale;
		if (tk_uniform() < 0.01)
			g *= 1e-4; /* tiny gradients: eps matters */
		tk_put(cfg->grad_dtype, c->g, i, g);
	}
}

static void
tk_case_free(tk_case *c)
{
	void *all[] = {c->p0, c->p, c->m0, c->v0, c->m, c->v, c->g, c->p16, c->pr, c->mr, c->vr};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		free(all[i]);
}

/* Outputs := inputs; 16-bit copy poisoned (NaN in both bf16 and fp16). */
static void
tk_reset_outputs(tk_case *c)
{
	size_t ms = tk_size(c->cfg.moment_dtype);
	memcpy(c->p, c->p0, 4 * c->total);
	memcpy(c->m, c->m0, ms * c->total);
	memcpy(c->v, c->v0, ms * c->total);
	for (int64_t i = 0; i < c->total; i++)
		c->p16[i] = TK_POISON16;
}

static void
tk_chunks(const tk_case *c, float *p, void *m, void *v, const void *g, uint16_t *p16,
	  zinf_adam_chunk *out)
{
	size_t ms = tk_size(c->cfg.moment_dtype), gs = tk_size(c->cfg.grad_dtype);
	for (int i = 0; i < c->nchunks; i++) {
		int64_t o = c->off[i];
		out[i] = (zinf_adam_chunk){
			.param = p + o,
			.m = (char *)m + ms * o,
			.v = (char *)v + ms * o,
			.grad = (const char *)g + gs * o,
			.param16 = c->with_p16 ? p16 + o : NULL,
			.n = c->n[i],
		};
	}
}

/* The reference step, in double, straight from the papers' formulas. */
static void
tk_reference(tk_case *c)
{
	const zinf_adam_cfg *f = &c->cfg;
	double t = (double)f->step, b1 = f->beta1, b2 = f->beta2, lr = f->lr;
	double wd = f->weight_decay, eps = f->eps;
	for (int64_t i = 0; i < c->total; i++) {
		c->pr[i] = c->p0[i];
		c->mr[i] = tk_get(f->moment_dtype, c->m0, i);
		c->vr[i] = tk_get(f->moment_dtype, c->v0, i);
	}
	for (int k = 0; k < c->nchunks; k++) {
		for (int64_t i = c->off[k]; i < c->off[k] + c->n[k]; i++) {
			double p = c->p0[i];
			double g = tk_get(f->grad_dtype, c->g, i) * (double)c->mult;
			if (f->decay == ZINF_ADAM_DECAY_L2)
				g += wd * p;
			else
				p -= lr * wd * p;
			double m = b1 * c->mr[i] + (1 - b1) * g;
			double v = b2 * c->vr[i] + (1 - b2) * g * g;
			double mhat = m / (1 - pow(b1, t)), vhat = v / (1 - pow(b2, t));
			c->pr[i] = p - lr * mhat / (sqrt(vhat) + eps);
			c->mr[i] = m;
			c->vr[i] = v;
		}
	}
}

/* Round to nearest, ties to even, to bf16 (nearest of the two neighbours, computed in double)
 * or fp16 (the compiler's conversion). */
static uint16_t
tk_round16(zinf_dtype t, float f)
{
	if (t == ZINF_DTYPE_FP16) {
		_Float16 h = (_Float16)f;
		uint16_t b;
		memcpy(&b, &h, 2);
		return b;
	}
	uint32_t u;
	memcpy(&u, &f, 4);
	if (isnan(f))
		return (uint16_t)((u >> 16) | 0x40);
	uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
	float flo, fhi;
	memcpy(&flo, &lo, 4);
	memcpy(&fhi, &hi, 4);
	double dlo = fabs((double)f - flo), dhi = fabs((double)fhi - f);
	if (dlo < dhi || (dlo == dhi && ((lo >> 16) & 1) == 0))
		return (uint16_t)(lo >> 16);
	return (uint16_t)(hi >> 16);
}

static int
tk_in_chunk(const tk_case *c, int64_t i)
{
	for (int k = 0; k < c->nchunks; k++)
		if (i >= c->off[k] && i < c->off[k] + c->n[k])
			return 1;
	return 0;
}

/* Checks outputs (p, m, v, p16 as produced by a backend) against the reference.
 * Tolerances: the update delta (p - p0) to 1e-4 of the largest delta (fp32 rounding of p
 * itself is ~1e-7 * |p|, deltas ~lr); fp32 m, v to 1e-5 of the largest |m|, |v|; bf16 m, v
 * elementwise within one bf16 ulp (2^-7 relative; stochastic rounding); the 16-bit copy within
 * is the exact round-to-nearest-even of the backend's fp32 weight.
 * Elements outside the chunks must be untouched. Returns the number of failed checks. */
static int
tk_check(const tk_case *c, const char *label)
{
	const zinf_adam_cfg *f = &c->cfg;
	double dmax = 0, mmax = 0, vmax = 0;
	for (int64_t i = 0; i < c->total; i++) {
		double d = fabs(c->pr[i] - c->p0[i]);
		dmax = d > dmax ? d : dmax;
		mmax = fabs(c->mr[i]) > mmax ? fabs(c->mr[i]) : mmax;
		vmax = fabs(c->vr[i]) > vmax ? fabs(c->vr[i]) : vmax;
	}
	double ep = 0, em = 0, ev = 0, e16 = 0;
	int64_t bad_gap = -1, nan_at = -1, bad16 = -1;
	for (int64_t i = 0; i < c->total; i++) {
		int in = tk_in_chunk(c, i);
		double pk = c->p[i], mk = tk_get(f->moment_dtype, c->m, i);
		double vk = tk_get(f->moment_dtype, c->v, i);
		if (!in) {
			size_t ms = tk_size(f->moment_dtype);
			if (memcmp(&c->p[i], &c->p0[i], 4) ||
			    memcmp((char *)c->m + ms * i, (char *)c->m0 + ms * i, ms) ||
			    memcmp((char *)c->v + ms * i, (char *)c->v0 + ms * i, ms) ||
			    c->p16[i] != TK_POISON16)
				bad_gap = bad_gap < 0 ? i : bad_gap;
			continue;
		}
		if (!isfinite(pk) || !isfinite(mk) || !isfinite(vk))
			nan_at = nan_at < 0 ? i : nan_at;
		double e = fabs(pk - c->pr[i]) / dmax;
		ep = e > ep ? e : ep;
		if (f->moment_dtype == ZINF_DTYPE_FP32) {
			e = fabs(mk - c->mr[i]) / mmax;
			em = e > em ? e : em;
			e = fabs(vk - c->vr[i]) / vmax;
			ev = e > ev ? e : ev;
		} else {
			e = fabs(mk - c->mr[i]) / (fabs(c->mr[i]) * 0x1p-7 + mmax * 1e-6);
			em = e > em ? e : em;
			e = fabs(vk - c->vr[i]) / (fabs(c->vr[i]) * 0x1p-7 + vmax * 1e-6);
			ev = e > ev ? e : ev;
		}
		if (c->with_p16) {
			/* The copy must be the round-to-nearest-even of this backend's own fp32
			 * weight (which was checked against the reference above). */
			uint16_t want = tk_round16(f->param16_dtype, c->p[i]);
			if (c->p16[i] != want)
				e16 = e16 > 2 ? e16 : 2, bad16 = bad16 < 0 ? i : bad16;
		}
	}
	double tol_m = f->moment_dtype == ZINF_DTYPE_FP32 ? 1e-5 : 1.0;
	int fails = 0;
	if (!(ep <= 1e-4) || !(em <= tol_m) || !(ev <= tol_m) || !(e16 <= 1.0) || bad_gap >= 0 ||
	    nan_at >= 0) {
		fprintf(stderr,
			"FAIL %s: grad %s moments %s p16 %s %s step %lld: delta err %.3g (tol 1e-4), "
			"m err %.3g, v err %.3g (tol %g), p16 err %.3g (tol 1), first touched gap "
			"element %lld, first non-finite %lld, first wrong 16-bit copy %lld\n",
			label, zinf_dtype_name(f->grad_dtype), zinf_dtype_name(f->moment_dtype),
			c->with_p16 ? zinf_dtype_name(f->param16_dtype) : "none",
			f->decay == ZINF_ADAM_DECAY_L2 ? "adam-l2" : "adamw", (long long)f->step, ep,
			em, ev, tol_m, e16, (long long)bad_gap, (long long)nan_at, (long long)bad16);
		fails++;
	}
	return fails;
}

/* Reference sum of squares of the gradients inside the chunks (double; float squares are exact
 * in double). */
static double
tk_ref_sumsq(const tk_case *c)
{
	double s = 0;
	for (int k = 0; k < c->nchunks; k++)
		for (int64_t i = c->off[k]; i < c->off[k] + c->n[k]; i++) {
			double x = tk_get(c->cfg.grad_dtype, c->g, i);
			s += x * x;
		}
	return s;
}

/* Variant v of the full matrix (TK_NVARIANTS): grad dtype x moment dtype x 16-bit copy (none,
 * bf16, fp16) x decay mode x step 1 / 1000. Returns the gradient multiplier (clip 0.5 over a
 * loss scale of 1024 for fp16 gradients) and sets *with_p16. */
#define TK_NVARIANTS (3 * 2 * 3 * 2 * 2)
static float
tk_variant(int v, zinf_adam_cfg *cfg, int *with_p16)
{
	static const zinf_dtype gts[] = {ZINF_DTYPE_FP32, ZINF_DTYPE_BF16, ZINF_DTYPE_FP16};
	int si = v % 2, decay = v / 2 % 2, p16 = v / 4 % 3, mt = v / 12 % 2, gi = v / 24;
	zinf_adam_cfg_init(cfg);
	cfg->lr = 1e-2f;
	cfg->weight_decay = 0.1f;
	cfg->step = si ? 1000 : 1;
	cfg->decay = decay ? ZINF_ADAM_DECAY_DECOUPLED : ZINF_ADAM_DECAY_L2;
	cfg->grad_dtype = gts[gi];
	cfg->moment_dtype = mt ? ZINF_DTYPE_BF16 : ZINF_DTYPE_FP32;
	cfg->param16_dtype = p16 == 2 ? ZINF_DTYPE_FP16 : ZINF_DTYPE_BF16;
	*with_p16 = p16 != 0;
	return 0.5f / (gts[gi] == ZINF_DTYPE_FP16 ? 1024.0f : 1.0f);
}

/* Chunk sizes: odd, tiny, exactly one tile, crossing the CPU norm block (65536). */
static const int64_t tk_sizes[] = {1, 3, 4, 5, 17, 1000, 4097, 0, 65537, 70001, 2, 131072};
#define TK_NSIZES ((int)(sizeof tk_sizes / sizeof tk_sizes[0]))

#endif
