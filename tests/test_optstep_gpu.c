/* engine/optstep on the GPU: GPU-stepped state (device cpu and nvme, buffer_count 1 and 3) vs
 * CPU-stepped state after 3 steps, within the kernels' tolerances (weight change within 1e-4
 * of the largest change, m and v within 1e-5 normwise); the bf16 copy written on the GPU is
 * the round-to-nearest-even of the GPU master; step_on cpu with device pointers is bit-identical
 * to step_on cpu with host pointers. ZeRO-3 parameter offload: step_on gpu with host gradients
 * (pinned and pageable) or device gradients and the 16-bit copy through param16_sink gives,
 * bit for bit, the state and every step's 16-bit copy of step_on gpu with device gradients and
 * a device param16_out (device cpu and nvme; buffer_count 1 reuses one slot per sub-group).
 * Exits 77 without a CUDA device. */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "engine/optstep.h"

enum { N = 300007, STEPS = 3 };

static char *g_dir;

static float
frand(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 11) / (double)(1ull << 53)) * 2.0f - 1.0f;
}

static void
init_params(float *p, float *m, float *v)
{
	uint64_t seed = 7;
	for (int i = 0; i < N; i++) {
		p[i] = frand(&seed);
		m[i] = 0.01f * frand(&seed);
		v[i] = 0.001f * fabsf(frand(&seed));
	}
}

static void
make_grads(float *g, uint16_t *gb, int t)
{
	uint64_t seed = 500 + (uint64_t)t;
	for (int i = 0; i < N; i++) {
		g[i] = frand(&seed);
		uint32_t u;
		memcpy(&u, &g[i], 4);
		gb[i] = (uint16_t)(u >> 16);
	}
}

static void
step_cfg(zinf_adam_cfg *cfg, zinf_dtype gd, int t)
{
	zinf_adam_cfg_init(cfg);
	cfg->lr = 1e-2f;
	cfg->step = t;
	cfg->grad_dtype = gd;
}

/* Step t's gradients in g (fp32) and gb (bf16); returns the one of dtype gd. */
static const void *
step_grads(float *g, uint16_t *gb, zinf_dtype gd, int t)
{
	make_grads(g, gb, t);
	return gd == ZINF_DTYPE_FP32 ? (const void *)g : (const void *)gb;
}

static uint16_t
bf16_rne(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

typedef struct result {
	float *p, *m, *v;
	uint16_t *p16;
} result;

static void
gpu_opts(zinf_optstep_opts *o, zinf_optstep_device dev, zinf_optstep_on on, bool dptrs,
         unsigned bc, const char *const *paths)
{
	zinf_optstep_opts_init(o);
	o->nparams = N;
	o->sub_group_size = 65536;
	o->device = dev;
	o->nvme_paths = paths;
	o->nvme_path_count = dev == ZINF_OPTSTEP_DEVICE_NVME ? 1 : 0;
	o->buffer_count = bc;
	/* fewer buffers than the full overlap needs: run with what fits (both flags tested) */
	o->pipeline_read = bc >= 2;
	o->pipeline_write = bc >= 3;
	o->step_on = on;
	o->device_ptrs = dptrs;
	o->allow_unpinned = true;
	o->aio.quiet = true;
}

/* Runs STEPS steps and reads the state back; steps16 (may be NULL): every step's 16-bit
 * copy, STEPS * N. */
static int
run(zinf_optstep_device dev, zinf_optstep_on on, bool dptrs, unsigned bc, zinf_dtype gd,
    result *out, uint16_t *steps16)
{
	const char *paths[1] = {g_dir};
	zinf_optstep_opts o;
	gpu_opts(&o, dev, on, dptrs, bc, paths);
	zinf_optstep_t *os;
	char err[512];
	int ret = zinf_optstep_create(&o, &os, err, sizeof(err));
	T_CHECK(ret == 0, "create: %s", err);
	if (ret)
		return ret;
	float *g = malloc(N * 4);
	uint16_t *gb = malloc(N * 2);
	void *dg = NULL, *dp16 = NULL;
	init_params(out->p, out->m, out->v);
	T_CHECK(zinf_optstep_load(os, out->p, out->m, out->v, 0) == 0, "load");
	if (dptrs) {
		T_CHECK(cudaMalloc(&dg, N * 4) == cudaSuccess, "cudaMalloc");
		T_CHECK(cudaMalloc(&dp16, N * 2) == cudaSuccess, "cudaMalloc");
	}
	for (int t = 1; t <= STEPS && !ret; t++) {
		zinf_adam_cfg cfg;
		step_cfg(&cfg, gd, t);
		const void *hg = step_grads(g, gb, gd, t);
		size_t glen = gd == ZINF_DTYPE_FP32 ? N * 4 : N * 2;
		if (dptrs) {
			cudaMemcpy(dg, hg, glen, cudaMemcpyHostToDevice);
			ret = zinf_optstep_step(os, dg, dp16, &cfg, 0.5f);
			if (steps16)
				cudaMemcpy(steps16 + (size_t)(t - 1) * N, dp16, N * 2,
				           cudaMemcpyDeviceToHost);
		} else {
			ret = zinf_optstep_step(os, hg, out->p16, &cfg, 0.5f);
		}
		T_CHECK(ret == 0, "step %d: %s", t, zinf_optstep_last_error(os));
	}
	if (dptrs)
		cudaMemcpy(out->p16, dp16, N * 2, cudaMemcpyDeviceToHost);
	if (!ret)
		T_CHECK((ret = zinf_optstep_read(os, out->p, out->m, out->v)) == 0, "read %s",
		        zinf_optstep_last_error(os));
	zinf_optstep_stats st;
	zinf_optstep_get_stats(os, &st);
	T_CHECK(st.peak_resident <= bc, "peak resident %u > %u", st.peak_resident, bc);
	cudaFree(dg);
	cudaFree(dp16);
	free(g);
	free(gb);
	zinf_optstep_destroy(os);
	return ret;
}

static void
res_alloc(result *r)
{
	r->p = malloc(N * 4);
	r->m = malloc(N * 4);
	r->v = malloc(N * 4);
	r->p16 = malloc(N * 2);
	if (!r->p || !r->m || !r->v || !r->p16)
		abort();
}

static void
res_free(result *r)
{
	free(r->p);
	free(r->m);
	free(r->v);
	free(r->p16);
}

/* ZeRO-3 parameter offload: gradients from pinned or pageable host memory (or the device), the
 * 16-bit copy through param16_sink. */
typedef enum grad_src { GRAD_PINNED, GRAD_PAGEABLE, GRAD_DEVICE } grad_src;

typedef struct sink_ctx {
	uint16_t *out; /* this step's 16-bit copy, N */
	uint64_t next, calls;
} sink_ctx;

static int
sink_cb(void *ctx, uint64_t offset, uint64_t n, const void *p16)
{
	sink_ctx *k = ctx;
	T_CHECK(offset == k->next && offset + n <= N, "sink called at %llu+%llu, expected %llu",
	        (unsigned long long)offset, (unsigned long long)n, (unsigned long long)k->next);
	if (offset + n <= N)
		memcpy(k->out + offset, p16, n * 2);
	k->next = offset + n;
	k->calls++;
	return 0;
}

static int
run_sink(zinf_optstep_device dev, grad_src src, unsigned bc, zinf_dtype gd, result *out,
         uint16_t *steps16)
{
	const char *paths[1] = {g_dir};
	sink_ctx k = {0};
	zinf_optstep_opts o;
	gpu_opts(&o, dev, ZINF_OPTSTEP_ON_GPU, src == GRAD_DEVICE, bc, paths);
	o.param16_sink = sink_cb;
	o.sink_ctx = &k;
	zinf_optstep_t *os;
	char err[512];
	int ret = zinf_optstep_create(&o, &os, err, sizeof(err));
	T_CHECK(ret == 0, "create: %s", err);
	if (ret)
		return ret;
	size_t esz = gd == ZINF_DTYPE_FP32 ? 4 : 2;
	float *g = malloc(N * 4);
	uint16_t *gb = malloc(N * 2);
	void *grads = NULL; /* what the step is given */
	if (src == GRAD_PINNED)
		T_CHECK(cudaMallocHost(&grads, N * esz) == cudaSuccess, "cudaMallocHost");
	else if (src == GRAD_DEVICE)
		T_CHECK(cudaMalloc(&grads, N * esz) == cudaSuccess, "cudaMalloc");
	else
		grads = malloc(N * esz);
	if (!g || !gb || !grads)
		abort();
	init_params(out->p, out->m, out->v);
	T_CHECK(zinf_optstep_load(os, out->p, out->m, out->v, 0) == 0, "load");
	uint64_t ng = zinf_optstep_subgroups(os);
	for (int t = 1; t <= STEPS && !ret; t++) {
		zinf_adam_cfg cfg;
		step_cfg(&cfg, gd, t);
		const void *hg = step_grads(g, gb, gd, t);
		if (src == GRAD_DEVICE)
			cudaMemcpy(grads, hg, N * esz, cudaMemcpyHostToDevice);
		else
			memcpy(grads, hg, N * esz);
		k = (sink_ctx){.out = steps16 + (size_t)(t - 1) * N};
		ret = zinf_optstep_step(os, grads, NULL, &cfg, 0.5f);
		T_CHECK(ret == 0, "step %d: %s", t, zinf_optstep_last_error(os));
		T_CHECK(k.calls == ng && k.next == N, "step %d: sink called %llu times up to %llu",
		        t, (unsigned long long)k.calls, (unsigned long long)k.next);
		/* host traffic: the state (device cpu), the gradient slices (host gradients)
		 * and the 16-bit copy */
		zinf_optstep_stats st;
		zinf_optstep_get_stats(os, &st);
		uint64_t state = dev == ZINF_OPTSTEP_DEVICE_CPU ? 12ull * N : 0;
		T_CHECK(st.bytes[OFFLOAD_TIER_HOST][0] ==
		                        state + (src == GRAD_DEVICE ? 0 : (uint64_t)N * esz) &&
		                st.bytes[OFFLOAD_TIER_HOST][1] == state + 2ull * N,
		        "step %d: host read %llu written %llu bytes", t,
		        (unsigned long long)st.bytes[OFFLOAD_TIER_HOST][0],
		        (unsigned long long)st.bytes[OFFLOAD_TIER_HOST][1]);
	}
	/* a param16_out next to the sink is refused */
	void *dummy = NULL;
	if (!ret && cudaMalloc(&dummy, N * 2) == cudaSuccess) {
		zinf_adam_cfg cfg;
		step_cfg(&cfg, gd, STEPS + 1);
		T_CHECK(zinf_optstep_step(os, grads, dummy, &cfg, 0.5f) == -EINVAL,
		        "param16_out with a sink accepted");
		cudaFree(dummy);
	}
	if (!ret)
		T_CHECK((ret = zinf_optstep_read(os, out->p, out->m, out->v)) == 0, "read %s",
		        zinf_optstep_last_error(os));
	if (src == GRAD_PINNED)
		cudaFreeHost(grads);
	else if (src == GRAD_DEVICE)
		cudaFree(grads);
	else
		free(grads);
	free(g);
	free(gb);
	zinf_optstep_destroy(os);
	return ret;
}

/* Sink runs against step_on gpu with device gradients and a device param16_out: bit-identical
 * state and 16-bit copies of every step. */
static void
test_sink(zinf_dtype gd)
{
	static const char *srcs[3] = {"pinned", "pageable", "device"};
	result base, sk;
	res_alloc(&base);
	res_alloc(&sk);
	uint16_t *b16 = malloc((size_t)STEPS * N * 2), *s16 = malloc((size_t)STEPS * N * 2);
	if (!b16 || !s16)
		abort();
	zinf_optstep_device devs[2] = {ZINF_OPTSTEP_DEVICE_CPU, ZINF_OPTSTEP_DEVICE_NVME};
	for (int d = 0; d < 2; d++) {
		unsigned bcs[2] = {1, 3};
		for (int b = 0; b < 2; b++) {
			if (run(devs[d], ZINF_OPTSTEP_ON_GPU, true, bcs[b], gd, &base, b16))
				continue;
			for (int src = 0; src < 3; src++) {
				char label[128];
				snprintf(label, sizeof(label), "sink %s bc=%u grads=%s grad=%s",
				         d ? "nvme" : "cpu", bcs[b], srcs[src], zinf_dtype_name(gd));
				memset(s16, 0xff, (size_t)STEPS * N * 2);
				if (run_sink(devs[d], (grad_src)src, bcs[b], gd, &sk, s16))
					continue;
				T_CHECK(!memcmp(base.p, sk.p, N * 4) &&
				                !memcmp(base.m, sk.m, N * 4) &&
				                !memcmp(base.v, sk.v, N * 4),
				        "%s: state differs from device grads + param16_out", label);
				T_CHECK(!memcmp(b16, s16, (size_t)STEPS * N * 2),
				        "%s: the sink's 16-bit copies differ from param16_out", label);
			}
		}
	}
	free(b16);
	free(s16);
	res_free(&base);
	res_free(&sk);
}

static double
rel_norm(const float *a, const float *b)
{
	double d = 0, n = 0;
	for (int i = 0; i < N; i++) {
		d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		n += (double)b[i] * b[i];
	}
	return sqrt(d) / (sqrt(n) + 1e-30);
}

static void
compare(const result *gpu, const result *cpu, const float *p0, const char *label)
{
	double maxchg = 0, maxdiff = 0;
	for (int i = 0; i < N; i++) {
		maxchg = fmax(maxchg, fabs((double)cpu->p[i] - p0[i]));
		maxdiff = fmax(maxdiff, fabs((double)gpu->p[i] - cpu->p[i]));
	}
	T_CHECK(maxdiff <= 1e-4 * maxchg, "%s: master differs by %g, largest change %g", label,
	        maxdiff, maxchg);
	double em = rel_norm(gpu->m, cpu->m), ev = rel_norm(gpu->v, cpu->v);
	T_CHECK(em <= 1e-5 && ev <= 1e-5, "%s: m %g v %g normwise", label, em, ev);
	int bad = 0;
	for (int i = 0; i < N; i++)
		bad += gpu->p16[i] != bf16_rne(gpu->p[i]);
	T_CHECK(bad == 0, "%s: %d bf16 copies are not the RNE of the master", label, bad);
}

int
main(void)
{
	char why[256];
	if (!offload_gpu_probe(why, sizeof(why))) {
		fprintf(stderr, "skip: %s\n", why);
		return T_EXIT_SKIP;
	}
	g_dir = t_mkdtemp("optstep-gpu");
	result p0, cpu, cpu_d, gpu;
	res_alloc(&p0);
	res_alloc(&cpu);
	res_alloc(&cpu_d);
	res_alloc(&gpu);
	init_params(p0.p, p0.m, p0.v);
	zinf_dtype gds[2] = {ZINF_DTYPE_FP32, ZINF_DTYPE_BF16};
	for (int gi = 0; gi < 2; gi++) {
		zinf_dtype gd = gds[gi];
		if (run(ZINF_OPTSTEP_DEVICE_CPU, ZINF_OPTSTEP_ON_CPU, false, 2, gd, &cpu, NULL))
			break;
		/* step_on cpu with device pointers: same bits as with host pointers */
		if (!run(ZINF_OPTSTEP_DEVICE_NVME, ZINF_OPTSTEP_ON_CPU, true, 2, gd, &cpu_d, NULL)) {
			T_CHECK(!memcmp(cpu.p, cpu_d.p, N * 4) && !memcmp(cpu.m, cpu_d.m, N * 4) &&
			                !memcmp(cpu.v, cpu_d.v, N * 4) &&
			                !memcmp(cpu.p16, cpu_d.p16, N * 2),
			        "%s: step_on cpu with device pointers differs",
			        zinf_dtype_name(gd));
		}
		zinf_optstep_device devs[2] = {ZINF_OPTSTEP_DEVICE_CPU, ZINF_OPTSTEP_DEVICE_NVME};
		unsigned bcs[2] = {1, 3};
		for (int d = 0; d < 2; d++) {
			for (int b = 0; b < 2; b++) {
				char label[96];
				snprintf(label, sizeof(label), "gpu %s bc=%u grad=%s",
				         d ? "nvme" : "cpu", bcs[b], zinf_dtype_name(gd));
				if (run(devs[d], ZINF_OPTSTEP_ON_GPU, true, bcs[b], gd, &gpu, NULL))
					continue;
				compare(&gpu, &cpu, p0.p, label);
			}
		}
		test_sink(gd);
	}
	res_free(&p0);
	res_free(&cpu);
	res_free(&cpu_d);
	res_free(&gpu);
	rmdir(g_dir);
	free(g_dir);
	if (t_failures) {
		fprintf(stderr, "%d check(s) failed\n", t_failures);
		return T_EXIT_FAIL;
	}
	printf("test_optstep_gpu: ok (GPU-stepped state matches CPU-stepped, cpu and nvme, "
	       "buffer_count 1 and 3, fp32 and bf16 grads; the sink with host gradients is "
	       "bit-identical)\n");
	return T_EXIT_PASS;
}
