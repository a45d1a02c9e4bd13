/* engine/optstep on the GPU: GPU-stepped state (device cpu and nvme, buffer_count 1 and 3) vs
 * CPU-stepped state after 3 steps, within the kernels' tolerances (weight change within 1e-4
 * of the largest change, m and v within 1e-5 normwise); the bf16 copy written on the GPU is
 * the round-to-nearest-even of the GPU master; step_on cpu with device pointers is bit-identical
 * to step_on cpu with host pointers. Exits 77 without a CUDA device. */
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

/* Runs STEPS steps and reads the state back. */
static int
run(zinf_optstep_device dev, zinf_optstep_on on, bool dptrs, unsigned bc, zinf_dtype gd,
    result *out)
{
	const char *paths[1] = {g_dir};
	zinf_optstep_opts o;
	zinf_optstep_opts_init(&o);
	o.nparams = N;
	o.sub_group_size = 65536;
	o.device = dev;
	o.nvme_paths = paths;
	o.nvme_path_count = dev == ZINF_OPTSTEP_DEVICE_NVME ? 1 : 0;
	o.buffer_count = bc;
	/* fewer buffers than the full overlap needs: run with what fits (both flags tested) */
	o.pipeline_read = bc >= 2;
	o.pipeline_write = bc >= 3;
	o.step_on = on;
	o.device_ptrs = dptrs;
	o.allow_unpinned = true;
	o.aio.quiet = true;
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
		zinf_adam_cfg_init(&cfg);
		cfg.lr = 1e-2f;
		cfg.step = t;
		cfg.grad_dtype = gd;
		make_grads(g, gb, t);
		const void *hg = gd == ZINF_DTYPE_FP32 ? (const void *)g : (const void *)gb;
		size_t glen = gd == ZINF_DTYPE_FP32 ? N * 4 : N * 2;
		if (dptrs) {
			cudaMemcpy(dg, hg, glen, cudaMemcpyHostToDevice);
			ret = zinf_optstep_step(os, dg, dp16, &cfg, 0.5f);
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
		if (run(ZINF_OPTSTEP_DEVICE_CPU, ZINF_OPTSTEP_ON_CPU, false, 2, gd, &cpu))
			break;
		/* step_on cpu with device pointers: same bits as with host pointers */
		if (!run(ZINF_OPTSTEP_DEVICE_NVME, ZINF_OPTSTEP_ON_CPU, true, 2, gd, &cpu_d)) {
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
				if (run(devs[d], ZINF_OPTSTEP_ON_GPU, true, bcs[b], gd, &gpu))
					continue;
				compare(&gpu, &cpu, p0.p, label);
			}
		}
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
	       "buffer_count 1 and 3, fp32 and bf16 grads)\n");
	return T_EXIT_PASS;
}
