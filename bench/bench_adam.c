/* zinf bench adam: throughput of one fused Adam/AdamW step (kernels/adam.h) on the GPU or CPU,
 * next to the copy bandwidth measured in the same run, so the result reads as a fraction of
 * what the memory can do. Self-contained (no harness dependency).
 *
 * Bytes counted per parameter: read p (4), grad (4|2), m and v (2 x 4|2); write p (4), m, v and
 * the optional 16-bit copy (2). fp32 everything, no copy: 28 B. Copy bandwidth counts bytes read
 * plus bytes written. Each run first checks one step against the CPU implementation (GPU) or
 * that all weights stay finite (CPU), and fails with exit 1 if not. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "kernels/adam.h"
#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/adam_cuda.h"
#endif

typedef struct adam_opts {
	int64_t params;
	int cuda;
	zinf_dtype grad, moments;
	int p16;               /* 0 none, else dtype */
	int threads, iters, warmup, json;
} adam_opts;

typedef struct adam_result {
	double ms_median, ms_min, ms_max;
	double copy_gbps;
	double check_err;
	int64_t check_n;
	char device[256];
} adam_result;

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: zinf bench adam [options]\n"
		"  --params N          parameters per step (K/M/G = 2^10/2^20/2^30; default 2^28 on\n"
		"                      cuda, 2^24 on cpu; 1 .. 2^34)\n"
		"  --device cuda|cpu   where the step runs (default cuda when built with CUDA)\n"
		"  --grad-dtype bf16|fp32|fp16   gradient dtype (default fp32)\n"
		"  --moments fp32|bf16 Adam m and v dtype (default fp32)\n"
		"  --param16 none|bf16|fp16      also write a 16-bit weight copy (default none)\n"
		"  --threads N         CPU worker threads (default: online CPUs; 1 .. 1024)\n"
		"  --iters N           timed steps (default 20; 1 .. 100000)\n"
		"  --warmup N          untimed steps first (default 3; 0 .. 1000)\n"
		"  --json              one JSON object on stdout instead of the table\n"
		"Prints time per step (median), Gparam/s, GB/s moved and the fraction of the copy\n"
		"bandwidth measured in the same run (cudaMemcpy device-to-device, or memcpy on cpu).\n");
}

static int
parse_int(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 0);
	int64_t mul = 1;
	if (end != s && *end && !end[1]) {
		switch (*end) {
		case 'k': case 'K': mul = 1ll << 10, end++; break;
		case 'm': case 'M': mul = 1ll << 20, end++; break;
		case 'g': case 'G': mul = 1ll << 30, end++; break;
		}
	}
	if (errno || end == s || *end || v < lo / mul || v > hi / mul || v * mul < lo) {
		fprintf(stderr, "zinf bench adam: %s %s: must be an integer in [%lld, %lld]\n", flag, s,
			(long long)lo, (long long)hi);
		return -1;
	}
	*out = v * mul;
	return 0;
}

static int
parse_dtype(const char *flag, const char *s, int allow_none, int allow_fp32, int *out)
{
	if (allow_none && !strcmp(s, "none"))
		*out = 0;
	else if (allow_fp32 && !strcmp(s, "fp32"))
		*out = ZINF_DTYPE_FP32;
	else if (!strcmp(s, "bf16"))
		*out = ZINF_DTYPE_BF16;
	else if (!strcmp(s, "fp16") && strcmp(flag, "--moments"))
		*out = ZINF_DTYPE_FP16;
	else {
		fprintf(stderr, "zinf bench adam: %s %s: must be one of %s\n", flag, s,
			!strcmp(flag, "--moments") ? "fp32, bf16"
			: allow_none ? "none, bf16, fp16" : "fp32, bf16, fp16");
		return -1;
	}
	return 0;
}

/* 0 ok, 1 --help printed, 2 usage error. */
static int
parse(int argc, char **argv, adam_opts *o)
{
	int64_t v;
	int64_t params = -1;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (adam_opts){.grad = ZINF_DTYPE_FP32, .moments = ZINF_DTYPE_FP32, .iters = 20,
			 .warmup = 3, .threads = ncpu > 0 ? (int)ncpu : 1};
#ifdef ZINF_HAVE_CUDA
	o->cuda = 1;
#endif
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--json")) {
			o->json = 1;
			continue;
		}
		static const char *const valued[] = {"--params", "--device", "--grad-dtype",
						     "--moments", "--param16", "--threads",
						     "--iters", "--warmup"};
		int known = 0;
		for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
			known |= !strcmp(a, valued[k]);
		if (!known) {
			fprintf(stderr, "zinf bench adam: unknown option %s (see --help)\n", a);
			return 2;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "zinf bench adam: %s needs a value (see --help)\n", a);
			return 2;
		}
		const char *val = argv[++i];
		int d;
		if (!strcmp(a, "--params")) {
			if (parse_int(a, val, 1, 1ll << 34, &params))
				return 2;
		} else if (!strcmp(a, "--device")) {
			if (!strcmp(val, "cpu")) {
				o->cuda = 0;
			} else if (!strcmp(val, "cuda")) {
#ifndef ZINF_HAVE_CUDA
				fprintf(stderr, "zinf bench adam: --device cuda: this zinf was built "
						"without CUDA (configure with -DZINF_CUDA=ON)\n");
				return 2;
#endif
				o->cuda = 1;
			} else {
				fprintf(stderr, "zinf bench adam: --device %s: must be cuda or cpu\n", val);
				return 2;
			}
		} else if (!strcmp(a, "--grad-dtype")) {
			if (parse_dtype(a, val, 0, 1, &d))
				return 2;
			o->grad = (zinf_dtype)d;
		} else if (!strcmp(a, "--moments")) {
			if (parse_dtype(a, val, 0, 1, &d))
				return 2;
			o->moments = (zinf_dtype)d;
		} else if (!strcmp(a, "--param16")) {
			if (parse_dtype(a, val, 1, 0, &d))
				return 2;
			o->p16 = d;
		} else if (!strcmp(a, "--threads")) {
			if (parse_int(a, val, 1, 1024, &v))
				return 2;
			o->threads = (int)v;
		} else if (!strcmp(a, "--iters")) {
			if (parse_int(a, val, 1, 100000, &v))
				return 2;
			o->iters = (int)v;
		} else if (!strcmp(a, "--warmup")) {
			if (parse_int(a, val, 0, 1000, &v))
				return 2;
			o->warmup = (int)v;
		} else {
			fprintf(stderr, "zinf bench adam: unknown option %s (see --help)\n", a);
			return 2;
		}
	}
	o->params = params > 0 ? params : o->cuda ? 1ll << 28 : 1ll << 24;
	return 0;
}

static size_t
dsize(zinf_dtype t)
{
	return t == ZINF_DTYPE_FP32 ? 4 : 2;
}

static double
bytes_per_param(const adam_opts *o)
{
	return 8.0 + (double)dsize(o->grad) + 4.0 * (double)dsize(o->moments) + (o->p16 ? 2.0 : 0.0);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Deterministic pseudo-random inputs: p, g in [-1, 1), m in [-0.05, 0.05), v in [0, 0.01). */
static float
unit_hash(uint64_t i, uint64_t salt)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ salt * 0xBF58476D1CE4E5B9ull;
	x ^= x >> 31, x *= 0x94D049BB133111EBull, x ^= x >> 29;
	return (float)((x >> 40) * 0x1p-24);
}

static void
put(zinf_dtype t, void *a, int64_t i, float x)
{
	if (t == ZINF_DTYPE_FP32) {
		((float *)a)[i] = x;
	} else if (t == ZINF_DTYPE_BF16) {
		uint32_t u;
		memcpy(&u, &x, 4);
		((uint16_t *)a)[i] = (uint16_t)(u >> 16);
	} else {
		_Float16 h = (_Float16)x;
		memcpy((uint16_t *)a + i, &h, 2);
	}
}

static void
fill_inputs(const adam_opts *o, int64_t n, float *p, void *g, void *m, void *v)
{
	for (int64_t i = 0; i < n; i++) {
		p[i] = 2 * unit_hash(i, 1) - 1;
		put(o->grad, g, i, 2 * unit_hash(i, 2) - 1);
		put(o->moments, m, i, 0.1f * (unit_hash(i, 3) - 0.5f));
		put(o->moments, v, i, 0.01f * unit_hash(i, 4));
	}
}

static void *
xalloc(size_t bytes)
{
	void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
	if (!p)
		fprintf(stderr, "zinf bench adam: cannot allocate %zu bytes of host memory\n", bytes);
	return p;
}

static void
init_cfg(const adam_opts *o, zinf_adam_cfg *cfg)
{
	zinf_adam_cfg_init(cfg);
	cfg->grad_dtype = o->grad;
	cfg->moment_dtype = o->moments;
	cfg->param16_dtype = o->p16 ? (zinf_dtype)o->p16 : ZINF_DTYPE_BF16;
}

/* ---- CPU ---------------------------------------------------------------------------------- */

typedef struct copy_job {
	char *dst;
	const char *src;
	size_t bytes;
} copy_job;

static void *
copy_worker(void *arg)
{
	copy_job *j = arg;
	memcpy(j->dst, j->src, j->bytes);
	return NULL;
}

static double
cpu_copy_gbps(size_t bytes, int threads)
{
	char *a = xalloc(bytes), *b = xalloc(bytes);
	if (!a || !b) {
		free(a), free(b);
		return 0;
	}
	memset(a, 1, bytes);
	memset(b, 2, bytes);
	double best = 1e30;
	pthread_t th[1024];
	copy_job job[1024];
	for (int r = 0; r < 5; r++) {
		double t0 = now_ms();
		size_t per = (bytes / (size_t)threads) & ~(size_t)63;
		for (int t = 0; t < threads; t++) {
			size_t off = per * (size_t)t;
			job[t] = (copy_job){b + off, a + off, t == threads - 1 ? bytes - off : per};
			if (t && pthread_create(&th[t], NULL, copy_worker, &job[t]))
				copy_worker(&job[t]), th[t] = 0;
		}
		copy_worker(&job[0]);
		for (int t = 1; t < threads; t++)
			if (th[t])
				pthread_join(th[t], NULL);
		double ms = now_ms() - t0;
		best = ms < best ? ms : best;
	}
	free(a), free(b);
	return 2.0 * (double)bytes / (best * 1e-3) / 1e9;
}

static int
run_cpu(const adam_opts *o, adam_result *r)
{
	int64_t n = o->params;
	float *p = xalloc(4 * n);
	void *g = xalloc(dsize(o->grad) * n), *m = xalloc(dsize(o->moments) * n);
	void *v = xalloc(dsize(o->moments) * n), *p16 = o->p16 ? xalloc(2 * n) : NULL;
	double *ms = calloc((size_t)o->iters, sizeof(double));
	int rc = 1;
	if (!p || !g || !m || !v || (o->p16 && !p16) || !ms)
		goto out;
	fill_inputs(o, n, p, g, m, v);
	zinf_adam_cfg cfg;
	init_cfg(o, &cfg);
	zinf_cpu_opts co = {.nthreads = o->threads, .isa = ZINF_CPU_ISA_AUTO};
	zinf_adam_chunk ch = {.param = p, .m = m, .v = v, .grad = g, .param16 = p16, .n = n};
	for (int it = 0; it < o->warmup + o->iters; it++) {
		cfg.step = it + 1;
		double t0 = now_ms();
		int e = zinf_adam_step_cpu(&cfg, &ch, 1, 1.0f, &co);
		double t1 = now_ms();
		if (e) {
			fprintf(stderr, "zinf bench adam: zinf_adam_step_cpu failed: %s\n", strerror(-e));
			goto out;
		}
		if (it >= o->warmup)
			ms[it - o->warmup] = t1 - t0;
	}
	qsort(ms, (size_t)o->iters, sizeof(double), cmp_double);
	r->ms_median = ms[o->iters / 2], r->ms_min = ms[0], r->ms_max = ms[o->iters - 1];
	r->check_n = n < (1 << 20) ? n : (1 << 20);
	r->check_err = 0;
	for (int64_t i = 0; i < r->check_n; i++)
		if (!isfinite(p[i]) || fabsf(p[i]) > 2.0f)
			r->check_err = INFINITY;
	snprintf(r->device, sizeof r->device, "cpu (%s, %d threads)",
		 zinf_cpu_isa_name(zinf_cpu_isa_resolve(ZINF_CPU_ISA_AUTO)), o->threads);
	size_t cb = 4 * (size_t)n > (256u << 20) ? 4 * (size_t)n : (256u << 20);
	r->copy_gbps = cpu_copy_gbps(cb, o->threads);
	rc = r->check_err == 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "zinf bench adam: check failed: weights not finite after the run\n");
out:
	free(p), free(g), free(m), free(v), free(p16), free(ms);
	return rc;
}

/* ---- CUDA --------------------------------------------------------------------------------- */

#ifdef ZINF_HAVE_CUDA
#define BCK(stmt)                                                                            \
	do {                                                                                 \
		cudaError_t e_ = (stmt);                                                     \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, "zinf bench adam: %s failed at %s:%d: %s\n", #stmt,   \
				__FILE__, __LINE__, cudaGetErrorString(e_));                 \
			goto out;                                                            \
		}                                                                            \
	} while (0)

static int
run_cuda(const adam_opts *o, adam_result *r)
{
	int64_t n = o->params;
	size_t gs = dsize(o->grad), mss = dsize(o->moments);
	int64_t hn = n < (1 << 20) ? n : (1 << 20); /* host copy for the check */
	float *dp = NULL, *hp = NULL, *hp_out = NULL;
	void *dg = NULL, *dm = NULL, *dv = NULL, *dp16 = NULL, *hg = NULL, *hm = NULL, *hv = NULL;
	void *cpy_a = NULL, *cpy_b = NULL;
	cudaEvent_t e0 = NULL, e1 = NULL;
	cudaStream_t st = NULL;
	double *ms = calloc((size_t)o->iters, sizeof(double));
	int rc = 1;
	struct cudaDeviceProp prop;
	int dev;
	BCK(cudaGetDevice(&dev));
	BCK(cudaGetDeviceProperties(&prop, dev));
	snprintf(r->device, sizeof r->device, "%.200s, %d SMs", prop.name, prop.multiProcessorCount);
	BCK(cudaStreamCreate(&st));
	BCK(cudaEventCreate(&e0));
	BCK(cudaEventCreate(&e1));
	BCK(cudaMalloc((void **)&dp, 4 * n));
	BCK(cudaMalloc(&dg, gs * n));
	BCK(cudaMalloc(&dm, mss * n));
	BCK(cudaMalloc(&dv, mss * n));
	if (o->p16)
		BCK(cudaMalloc(&dp16, 2 * n));
	/* Inputs: fill a host block of up to 2^20 and tile it over the device arrays. */
	hp = xalloc(4 * hn), hp_out = xalloc(4 * hn);
	hg = xalloc(gs * hn), hm = xalloc(mss * hn), hv = xalloc(mss * hn);
	if (!hp || !hp_out || !hg || !hm || !hv || !ms)
		goto out;
	fill_inputs(o, hn, hp, hg, hm, hv);
	for (int64_t off = 0; off < n; off += hn) {
		int64_t k = n - off < hn ? n - off : hn;
		BCK(cudaMemcpy(dp + off, hp, 4 * k, cudaMemcpyHostToDevice));
		BCK(cudaMemcpy((char *)dg + gs * off, hg, gs * k, cudaMemcpyHostToDevice));
		BCK(cudaMemcpy((char *)dm + mss * off, hm, mss * k, cudaMemcpyHostToDevice));
		BCK(cudaMemcpy((char *)dv + mss * off, hv, mss * k, cudaMemcpyHostToDevice));
	}
	zinf_adam_cfg cfg;
	init_cfg(o, &cfg);
	zinf_adam_chunk ch = {.param = dp, .m = dm, .v = dv, .grad = dg, .param16 = dp16, .n = n};
	/* Check: step 1 on the GPU vs the CPU implementation on the first hn elements. */
	int e = zinf_adam_step_cuda(&cfg, &ch, 1, 1.0f, NULL, st);
	if (e) {
		fprintf(stderr, "zinf bench adam: zinf_adam_step_cuda failed (%d)\n", e);
		goto out;
	}
	BCK(cudaStreamSynchronize(st));
	BCK(cudaMemcpy(hp_out, dp, 4 * hn, cudaMemcpyDeviceToHost));
	zinf_adam_chunk hc = {.param = hp, .m = hm, .v = hv, .grad = hg, .n = hn};
	zinf_cpu_opts co = {.nthreads = o->threads};
	if (zinf_adam_step_cpu(&cfg, &hc, 1, 1.0f, &co))
		goto out;
	r->check_n = hn;
	r->check_err = 0;
	for (int64_t i = 0; i < hn; i++) {
		double d = fabs((double)hp_out[i] - hp[i]) / (fabs(hp[i]) + 1e-3);
		r->check_err = d > r->check_err || d != d ? d : r->check_err;
	}
	if (!(r->check_err < 1e-5)) {
		fprintf(stderr, "zinf bench adam: GPU step disagrees with the CPU step: max rel err "
				"%.3g over %lld params (limit 1e-5)\n", r->check_err, (long long)hn);
		goto out;
	}
	for (int it = 0; it < o->warmup + o->iters; it++) {
		cfg.step = it + 2;
		BCK(cudaEventRecord(e0, st));
		e = zinf_adam_step_cuda(&cfg, &ch, 1, 1.0f, NULL, st);
		BCK(cudaEventRecord(e1, st));
		BCK(cudaEventSynchronize(e1));
		if (e)
			goto out;
		float t;
		BCK(cudaEventElapsedTime(&t, e0, e1));
		if (it >= o->warmup)
			ms[it - o->warmup] = t;
	}
	qsort(ms, (size_t)o->iters, sizeof(double), cmp_double);
	r->ms_median = ms[o->iters / 2], r->ms_min = ms[0], r->ms_max = ms[o->iters - 1];
	/* Copy bandwidth: 1 GiB device-to-device, median of 11, read + write counted. */
	size_t cb = 1u << 30;
	BCK(cudaMalloc(&cpy_a, cb));
	BCK(cudaMalloc(&cpy_b, cb));
	BCK(cudaMemset(cpy_a, 1, cb));
	double cms[11];
	for (int i = 0; i < 13; i++) {
		BCK(cudaEventRecord(e0, st));
		BCK(cudaMemcpyAsync(cpy_b, cpy_a, cb, cudaMemcpyDeviceToDevice, st));
		BCK(cudaEventRecord(e1, st));
		BCK(cudaEventSynchronize(e1));
		float t;
		BCK(cudaEventElapsedTime(&t, e0, e1));
		if (i >= 2)
			cms[i - 2] = t;
	}
	qsort(cms, 11, sizeof(double), cmp_double);
	r->copy_gbps = 2.0 * (double)cb / (cms[5] * 1e-3) / 1e9;
	rc = 0;
out:
	cudaFree(dp), cudaFree(dg), cudaFree(dm), cudaFree(dv), cudaFree(dp16);
	cudaFree(cpy_a), cudaFree(cpy_b);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	if (st)
		cudaStreamDestroy(st);
	free(hp), free(hp_out), free(hg), free(hm), free(hv), free(ms);
	return rc;
}
#endif

/* ---- report ------------------------------------------------------------------------------- */

static void
report(const adam_opts *o, const adam_result *r)
{
	double bpp = bytes_per_param(o);
	double gparams = (double)o->params / (r->ms_median * 1e-3) / 1e9;
	double gbps = gparams * bpp;
	double frac = r->copy_gbps > 0 ? gbps / r->copy_gbps : 0;
	const char *p16 = o->p16 ? zinf_dtype_name((zinf_dtype)o->p16) : "none";
	if (o->json) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "bench", "adam");
		cJSON_AddStringToObject(j, "device", o->cuda ? "cuda" : "cpu");
		cJSON_AddStringToObject(j, "device_name", r->device);
		cJSON_AddNumberToObject(j, "params", (double)o->params);
		cJSON_AddStringToObject(j, "grad_dtype", zinf_dtype_name(o->grad));
		cJSON_AddStringToObject(j, "moments", zinf_dtype_name(o->moments));
		cJSON_AddStringToObject(j, "param16", p16);
		cJSON_AddNumberToObject(j, "threads", o->cuda ? 0 : o->threads);
		cJSON_AddNumberToObject(j, "iters", o->iters);
		cJSON_AddNumberToObject(j, "ms_per_step", r->ms_median);
		cJSON_AddNumberToObject(j, "ms_min", r->ms_min);
		cJSON_AddNumberToObject(j, "ms_max", r->ms_max);
		cJSON_AddNumberToObject(j, "gparams_per_s", gparams);
		if (!o->cuda)
			cJSON_AddNumberToObject(j, "gparams_per_s_per_thread", gparams / o->threads);
		cJSON_AddNumberToObject(j, "bytes_per_param", bpp);
		cJSON_AddNumberToObject(j, "gb_per_s", gbps);
		cJSON_AddNumberToObject(j, "copy_gb_per_s", r->copy_gbps);
		cJSON_AddNumberToObject(j, "copy_fraction", frac);
		cJSON_AddNumberToObject(j, "check_params", (double)r->check_n);
		cJSON_AddNumberToObject(j, "check_max_rel_err", r->check_err);
		char *s = cJSON_PrintUnformatted(j);
		printf("%s\n", s);
		free(s);
		cJSON_Delete(j);
		return;
	}
	printf("zinf bench adam: %s [%s], %lld params, grad %s, moments %s, param16 %s\n",
	       o->cuda ? "cuda" : "cpu", r->device, (long long)o->params,
	       zinf_dtype_name(o->grad), zinf_dtype_name(o->moments), p16);
	printf("  time/step   %.3f ms median (min %.3f, max %.3f; %d iters after %d warmup)\n",
	       r->ms_median, r->ms_min, r->ms_max, o->iters, o->warmup);
	printf("  throughput  %.2f Gparam/s", gparams);
	if (!o->cuda)
		printf(" (%.2f per thread)", gparams / o->threads);
	printf(", %.1f GB/s moved (%.0f B/param)\n", gbps, bpp);
	printf("  copy bw     %.1f GB/s (%s, read + write)\n", r->copy_gbps,
	       o->cuda ? "cudaMemcpy D2D, 1 GiB" : "memcpy");
	printf("  fraction    %.1f%% of copy bandwidth\n", 100 * frac);
	printf("  check       %s on %lld params: %.2g\n",
	       o->cuda ? "max rel err vs CPU step" : "weights finite", (long long)r->check_n,
	       r->check_err);
}

int
zinf_bench_adam_main(int argc, char **argv)
{
	adam_opts o;
	int prc = parse(argc, argv, &o);
	if (prc == 1)
		return 0;
	if (prc)
		return 2;
	adam_result r;
	memset(&r, 0, sizeof r);
	int rc;
#ifdef ZINF_HAVE_CUDA
	if (o.cuda)
		rc = run_cuda(&o, &r);
	else
#endif
		rc = run_cpu(&o, &r);
	if (rc)
		return 1;
	report(&o, &r);
	return 0;
}
