/* CPU backend of the fused optimizer step and the gradient statistics.
 *
 * Design: the element loops are written once (always-inline bodies whose dtype arguments are
 * compile-time constants at each call site) and compiled three times with function target
 * attributes: baseline, AVX2+FMA+F16C and AVX-512 (512-bit vectors). GCC auto-vectorises them
 * (-fno-math-errno lets sqrtf vectorise); the variant is picked at run time with
 * __builtin_cpu_supports. Threads: one pthread per extra worker per call, each on a contiguous
 * element range; the calling thread does the first range. A thread that cannot be created
 * has its range done by the caller, so a call never fails for lack of threads.
 *
 * Determinism of the norm: gradients are cut into fixed blocks of NORM_BLOCK elements per
 * chunk; each block is summed in double with 8 lane accumulators in a fixed order, and the
 * block sums are added in block order. The thread count never changes the result. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "adam_math.h"
#include "kernels/adam.h"

#define ADAM_MIN_PER_THREAD (1 << 16)
#define NORM_BLOCK (1 << 16)

/* ---- element loops ---------------------------------------------------------------------- */

/* gt: grad dtype; mt: moment dtype; pt: 0 = no 16-bit copy, else its dtype (1 bf16, 2 fp16). */
static inline __attribute__((always_inline)) void
adam_body(const zinf_adam_coef *cp, const int gt, const int mt, const int pt,
	  const zinf_adam_chunk *ch, uint32_t ci, int64_t b, int64_t e, float mult)
{
	const zinf_adam_coef c = *cp;
	float *restrict p = ch->param;
	const float *restrict g32 = (const float *)ch->grad;
	const uint16_t *restrict g16 = (const uint16_t *)ch->grad;
	const _Float16 *restrict gh = (const _Float16 *)ch->grad;
	float *restrict m32 = (float *)ch->m;
	float *restrict v32 = (float *)ch->v;
	uint16_t *restrict m16 = (uint16_t *)ch->m;
	uint16_t *restrict v16 = (uint16_t *)ch->v;
	uint16_t *restrict pb = (uint16_t *)ch->param16;
	_Float16 *restrict ph = (_Float16 *)ch->param16;

	for (int64_t i = b; i < e; i++) {
		float g;
		if (gt == ZINF_DTYPE_FP32)
			g = g32[i];
		else if (gt == ZINF_DTYPE_BF16)
			g = zinf_bf16_to_f32(g16[i]);
		else
			g = (float)gh[i];
		g *= mult;
		float pp = p[i], mm, vv;
		if (mt == ZINF_DTYPE_FP32) {
			mm = m32[i];
			vv = v32[i];
		} else {
			mm = zinf_bf16_to_f32(m16[i]);
			vv = zinf_bf16_to_f32(v16[i]);
		}
		zinf_adam_update(&c, g, &pp, &mm, &vv);
		p[i] = pp;
		if (mt == ZINF_DTYPE_FP32) {
			m32[i] = mm;
			v32[i] = vv;
		} else {
			m16[i] = zinf_f32_to_bf16_sr(mm, zinf_sr_bits(c.seed, ci, (uint32_t)i, 0));
			v16[i] = zinf_f32_to_bf16_sr(vv, zinf_sr_bits(c.seed, ci, (uint32_t)i, 1));
		}
		if (pt == ZINF_DTYPE_BF16)
			pb[i] = zinf_f32_to_bf16(pp);
		else if (pt == ZINF_DTYPE_FP16)
			ph[i] = (_Float16)pp;
	}
}

static inline __attribute__((always_inline)) float
load_grad(const int gt, const void *grad, int64_t i)
{
	if (gt == ZINF_DTYPE_FP32)
		return ((const float *)grad)[i];
	if (gt == ZINF_DTYPE_BF16)
		return zinf_bf16_to_f32(((const uint16_t *)grad)[i]);
	return (float)((const _Float16 *)grad)[i];
}

/* Sum of squares of [b, e) in double, 8 lanes, fixed order; *nf |= any inf/NaN. */
static inline __attribute__((always_inline)) double
sumsq_body(const int gt, const void *grad, int64_t b, int64_t e, uint32_t *nf)
{
	double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	uint32_t bad = 0;
	int64_t i = b;
	for (; i + 8 <= e; i += 8) {
		for (int j = 0; j < 8; j++) {
			float x = load_grad(gt, grad, i + j);
			bad |= (zinf_f32_bits(x) & 0x7F800000u) == 0x7F800000u;
			acc[j] += (double)x * (double)x;
		}
	}
	for (int j = 0; i < e; i++, j++) {
		float x = load_grad(gt, grad, i);
		bad |= (zinf_f32_bits(x) & 0x7F800000u) == 0x7F800000u;
		acc[j] += (double)x * (double)x;
	}
	*nf |= bad;
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#define ADAM_CASE(G, M, P)                                                                   \
	case (G) * 9 + (M) * 3 + (P):                                                        \
		adam_body(c, G, M, P, ch, ci, b, e, mult);                                   \
		break;

#define DEFINE_ISA_VARIANT(name, attr)                                                       \
	attr static void adam_range_##name(const zinf_adam_coef *c, int key,                 \
					   const zinf_adam_chunk *ch, uint32_t ci,           \
					   int64_t b, int64_t e, float mult)                 \
	{                                                                                    \
		switch (key) {                                                               \
			ADAM_CASE(0, 0, 0) ADAM_CASE(0, 0, 1) ADAM_CASE(0, 0, 2)             \
			ADAM_CASE(0, 1, 0) ADAM_CASE(0, 1, 1) ADAM_CASE(0, 1, 2)             \
			ADAM_CASE(1, 0, 0) ADAM_CASE(1, 0, 1) ADAM_CASE(1, 0, 2)             \
			ADAM_CASE(1, 1, 0) ADAM_CASE(1, 1, 1) ADAM_CASE(1, 1, 2)             \
			ADAM_CASE(2, 0, 0) ADAM_CASE(2, 0, 1) ADAM_CASE(2, 0, 2)             \
			ADAM_CASE(2, 1, 0) ADAM_CASE(2, 1, 1) ADAM_CASE(2, 1, 2)             \
		}                                                                            \
	}                                                                                    \
	attr static double sumsq_range_##name(int gt, const void *grad, int64_t b,           \
					      int64_t e, uint32_t *nf)                       \
	{                                                                                    \
		if (gt == ZINF_DTYPE_FP32)                                                   \
			return sumsq_body(ZINF_DTYPE_FP32, grad, b, e, nf);                  \
		if (gt == ZINF_DTYPE_BF16)                                                   \
			return sumsq_body(ZINF_DTYPE_BF16, grad, b, e, nf);                  \
		return sumsq_body(ZINF_DTYPE_FP16, grad, b, e, nf);                          \
	}

DEFINE_ISA_VARIANT(generic, )
#if defined(__x86_64__)
DEFINE_ISA_VARIANT(avx2, __attribute__((target("avx2,fma,f16c,bmi2"))))
DEFINE_ISA_VARIANT(avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,"
						 "f16c,bmi2,prefer-vector-width=512"))))
#endif

typedef void (*adam_range_fn)(const zinf_adam_coef *, int, const zinf_adam_chunk *, uint32_t,
			      int64_t, int64_t, float);
typedef double (*sumsq_range_fn)(int, const void *, int64_t, int64_t, uint32_t *);

/* ---- ISA selection ---------------------------------------------------------------------- */

int
zinf_cpu_isa_supported(zinf_cpu_isa isa)
{
	switch (isa) {
	case ZINF_CPU_ISA_AUTO:
	case ZINF_CPU_ISA_GENERIC:
		return 1;
#if defined(__x86_64__)
	case ZINF_CPU_ISA_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
		       __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
	case ZINF_CPU_ISA_AVX512:
		__builtin_cpu_init();
		return zinf_cpu_isa_supported(ZINF_CPU_ISA_AVX2) &&
		       __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
	default:
		return 0;
	}
}

zinf_cpu_isa
zinf_cpu_isa_resolve(zinf_cpu_isa want)
{
	if (want != ZINF_CPU_ISA_AUTO)
		return want;
	if (zinf_cpu_isa_supported(ZINF_CPU_ISA_AVX512))
		return ZINF_CPU_ISA_AVX512;
	if (zinf_cpu_isa_supported(ZINF_CPU_ISA_AVX2))
		return ZINF_CPU_ISA_AVX2;
	return ZINF_CPU_ISA_GENERIC;
}

const char *
zinf_cpu_isa_name(zinf_cpu_isa isa)
{
	switch (isa) {
	case ZINF_CPU_ISA_AUTO: return "auto";
	case ZINF_CPU_ISA_GENERIC: return "generic";
	case ZINF_CPU_ISA_AVX2: return "avx2";
	case ZINF_CPU_ISA_AVX512: return "avx512";
	}
	return "unknown";
}

static int
pick_isa(const zinf_cpu_opts *opts, adam_range_fn *af, sumsq_range_fn *sf)
{
	zinf_cpu_isa want = opts ? opts->isa : ZINF_CPU_ISA_AUTO;
	zinf_cpu_isa isa = zinf_cpu_isa_resolve(want);
	if (!zinf_cpu_isa_supported(isa)) {
		fprintf(stderr, "zinf adam: CPU ISA %s requested but this CPU or build lacks it; "
				"use auto\n", zinf_cpu_isa_name(isa));
		return -ENOTSUP;
	}
	switch (isa) {
#if defined(__x86_64__)
	case ZINF_CPU_ISA_AVX512:
		*af = adam_range_avx512;
		*sf = sumsq_range_avx512;
		return 0;
	case ZINF_CPU_ISA_AVX2:
		*af = adam_range_avx2;
		*sf = sumsq_range_avx2;
		return 0;
#endif
	default:
		*af = adam_range_generic;
		*sf = sumsq_range_generic;
		return 0;
	}
}

/* ---- threads ---------------------------------------------------------------------------- */

typedef struct par_task {
	void (*fn)(void *arg, int tid, int nthreads);
	void *arg;
	int tid, nthreads;
} par_task;

static void *
par_trampoline(void *p)
{
	par_task *t = p;
	t->fn(t->arg, t->tid, t->nthreads);
	return NULL;
}

/* Runs fn(arg, tid, n) for tid in [0, n); tid 0 on the caller. Never fails: a worker that
 * cannot be started has its share run by the caller after its own. */
static void
run_parallel(int n, void (*fn)(void *, int, int), void *arg)
{
	enum { MAXT = 256 };
	pthread_t th[MAXT];
	par_task task[MAXT];
	int started[MAXT] = {0};
	if (n > MAXT)
		n = MAXT;
	for (int t = 1; t < n; t++) {
		task[t] = (par_task){fn, arg, t, n};
		started[t] = pthread_create(&th[t], NULL, par_trampoline, &task[t]) == 0;
	}
	fn(arg, 0, n);
	for (int t = 1; t < n; t++) {
		if (started[t])
			pthread_join(th[t], NULL);
		else
			fn(arg, t, n);
	}
}

static int
threads_for(const zinf_cpu_opts *opts, int64_t work, int64_t min_per_thread)
{
	int64_t want = opts && opts->nthreads > 0 ? opts->nthreads : 1;
	int64_t cap = (work + min_per_thread - 1) / min_per_thread;
	if (cap < 1)
		cap = 1;
	return (int)(want < cap ? want : cap);
}

static int
check_chunks(const zinf_adam_chunk *chunks, int nchunks, int need_state, int64_t *total)
{
	if (nchunks < 0 || (nchunks > 0 && !chunks)) {
		fprintf(stderr, "zinf adam: nchunks = %d with chunks = %p\n", nchunks,
			(const void *)chunks);
		return -EINVAL;
	}
	int64_t sum = 0;
	for (int i = 0; i < nchunks; i++) {
		const zinf_adam_chunk *c = &chunks[i];
		if (c->n < 0) {
			fprintf(stderr, "zinf adam: chunk %d: n = %lld must be >= 0\n", i,
				(long long)c->n);
			return -EINVAL;
		}
		if (c->n > 0 && (!c->grad || (need_state && (!c->param || !c->m || !c->v)))) {
			fprintf(stderr, "zinf adam: chunk %d (n = %lld): param, m, v and grad must "
					"not be NULL\n", i, (long long)c->n);
			return -EINVAL;
		}
		sum += c->n;
	}
	*total = sum;
	return 0;
}

/* ---- Adam step -------------------------------------------------------------------------- */

typedef struct adam_job {
	zinf_adam_coef coef;
	const zinf_adam_chunk *chunks;
	int nchunks, key_base;
	int64_t total;
	float mult;
	adam_range_fn fn;
	zinf_dtype p16;
} adam_job;

static void
adam_worker(void *arg, int tid, int nt)
{
	const adam_job *j = arg;
	/* Range boundaries on multiples of 64 elements: whole cache lines per thread. */
	int64_t b = (j->total * tid / nt) & ~(int64_t)63;
	int64_t e = tid == nt - 1 ? j->total : (j->total * (tid + 1) / nt) & ~(int64_t)63;
	int64_t off = 0;
	for (int ci = 0; ci < j->nchunks && off < e; ci++) {
		const zinf_adam_chunk *c = &j->chunks[ci];
		int64_t cb = b > off ? b - off : 0;
		int64_t ce = e - off < c->n ? e - off : c->n;
		if (cb < ce) {
			int key = j->key_base + (c->param16 ? (int)j->p16 : 0);
			j->fn(&j->coef, key, c, (uint32_t)ci, cb, ce, j->mult);
		}
		off += c->n;
	}
}

int
zinf_adam_step_cpu(const zinf_adam_cfg *cfg, const zinf_adam_chunk *chunks, int nchunks,
		   float grad_mult, const zinf_cpu_opts *opts)
{
	int rc = zinf_adam_cfg_check(cfg);
	if (rc)
		return rc;
	adam_job j;
	rc = check_chunks(chunks, nchunks, 1, &j.total);
	if (rc)
		return rc;
	sumsq_range_fn unused;
	rc = pick_isa(opts, &j.fn, &unused);
	if (rc)
		return rc;
	j.coef = zinf_adam_coef_make(cfg);
	j.chunks = chunks;
	j.nchunks = nchunks;
	j.key_base = (int)cfg->grad_dtype * 9 + (int)cfg->moment_dtype * 3;
	j.mult = grad_mult;
	j.p16 = cfg->param16_dtype;
	run_parallel(threads_for(opts, j.total, ADAM_MIN_PER_THREAD), adam_worker, &j);
	return 0;
}

/* ---- gradient statistics ---------------------------------------------------------------- */

typedef struct norm_job {
	const zinf_adam_chunk *chunks;
	const int64_t *block0;   /* first block index of each chunk; [nchunks] = total blocks */
	int nchunks;
	int gt;
	sumsq_range_fn fn;
	double *partial;         /* one per block */
	uint32_t *nonfinite;     /* one per thread */
} norm_job;

static void
norm_worker(void *arg, int tid, int nt)
{
	norm_job *j = arg;
	int64_t nb = j->block0[j->nchunks];
	int64_t b = nb * tid / nt, e = nb * (tid + 1) / nt;
	uint32_t nf = 0;
	int ci = 0;
	for (int64_t k = b; k < e; k++) {
		while (k >= j->block0[ci + 1])
			ci++;
		const zinf_adam_chunk *c = &j->chunks[ci];
		int64_t lo = (k - j->block0[ci]) * NORM_BLOCK;
		int64_t hi = lo + NORM_BLOCK < c->n ? lo + NORM_BLOCK : c->n;
		j->partial[k] = j->fn(j->gt, c->grad, lo, hi, &nf);
	}
	j->nonfinite[tid] = nf;
}

int
zinf_grad_stats_cpu(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
		    float loss_scale, float max_norm, const zinf_cpu_opts *opts,
		    zinf_grad_stats *out)
{
	int64_t total;
	int rc = check_chunks(chunks, nchunks, 0, &total);
	if (rc)
		return rc;
	if ((unsigned)grad_dtype > ZINF_DTYPE_FP16 || !(loss_scale > 0.0f) || !out) {
		fprintf(stderr, "zinf grad stats: grad_dtype = %d (fp32/bf16/fp16), loss_scale = %g "
				"(must be > 0), out = %p (must not be NULL)\n",
			(int)grad_dtype, loss_scale, (void *)out);
		return -EINVAL;
	}
	norm_job j = {.chunks = chunks, .nchunks = nchunks, .gt = (int)grad_dtype};
	adam_range_fn unused;
	rc = pick_isa(opts, &unused, &j.fn);
	if (rc)
		return rc;
	int64_t *block0 = malloc(sizeof(int64_t) * ((size_t)nchunks + 1));
	if (!block0)
		return -ENOMEM;
	block0[0] = 0;
	for (int i = 0; i < nchunks; i++)
		block0[i + 1] = block0[i] + (chunks[i].n + NORM_BLOCK - 1) / NORM_BLOCK;
	int64_t nb = block0[nchunks];
	int nt = threads_for(opts, total, NORM_BLOCK);
	double *partial = malloc(sizeof(double) * (size_t)(nb > 0 ? nb : 1));
	uint32_t *nonfinite = calloc((size_t)nt, sizeof(uint32_t));
	if (!partial || !nonfinite) {
		free(block0);
		free(partial);
		free(nonfinite);
		return -ENOMEM;
	}
	j.block0 = block0;
	j.partial = partial;
	j.nonfinite = nonfinite;
	run_parallel(nt, norm_worker, &j);
	double sum = 0.0;
	for (int64_t k = 0; k < nb; k++)
		sum += partial[k];
	uint32_t nf = 0;
	for (int t = 0; t < nt; t++)
		nf |= nonfinite[t];
	free(block0);
	free(partial);
	free(nonfinite);
	out->sumsq = sum;
	out->found_inf = nf ? 1 : 0;
	zinf_grad_stats_finish(out, loss_scale, max_norm);
	return 0;
}
