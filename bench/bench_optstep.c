/* zinf bench optstep: the offloaded optimizer step (engine/optstep) and its physical bound.
 *
 * --params N fp32 master/m/v (12 B/param) live in pinned host memory (--offload cpu) or NVMe
 * swap files (--offload nvme); each step streams them through --buffer-count sub-groups of
 * --sub-group-size elements and runs Adam on the GPU or the CPU (--step-on).
 *
 * The bound is measured in the same run, before the steps, over the same bytes:
 *   nvme:              write then read 12 B/param through a plain swapper (host <-> NVMe,
 *                      buffer-count in flight): bound = t_write + t_read (24 B/param).
 *   cpu + step-on gpu: plain cudaMemcpyAsync of 12 B/param H2D and 12 B/param D2H at once on
 *                      two streams between pinned and device buffers: bound = that time.
 *   cpu + step-on cpu: no movement: no bound (CPU Adam only).
 * ratio = median step time / bound.
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/optstep.h"
#include "offload/offload.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define PROG "zinf bench optstep"

typedef struct args {
	uint64_t params, sub_group_size, buffer_count, steps, threads;
	bool nvme, pin, on_cpu, json, pipe_read, pipe_write;
	const char *paths[OFFLOAD_NVME_MAX_PATHS];
	unsigned npaths;
} args;

static const char *const dev_names[] = {"cpu", "nvme", NULL};
static const char *const on_names[] = {"gpu", "cpu", NULL};

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf bench optstep --params N [options]\n\n"
	        "  --params N            parameters in the partition (required; K/M/G suffixes)\n"
	        "  --offload cpu|nvme    where fp32 master, m, v live (default cpu)\n"
	        "  --nvme-path DIR       swap folder (repeat to stripe; needed for nvme)\n"
	        "  --buffer-count K      sub-groups in flight (default 4)\n"
	        "  --sub-group-size S    elements per sub-group (default 100M)\n"
	        "  --pin-memory B        true|false (default true)\n"
	        "  --pipeline-read B     read sub-groups ahead of the step (default true)\n"
	        "  --pipeline-write B    write back while later ones are read (default true)\n"
	        "  --step-on gpu|cpu     where Adam runs (default gpu)\n"
	        "  --threads T           CPU Adam threads for --step-on cpu (default 1)\n"
	        "  --steps N             timed steps (default 3)\n"
	        "  --json                one JSON object on stdout\n\n"
	        "%s\n",
	        BENCH_SIZE_HELP);
}

static int
parse(int argc, char **argv, args *a)
{
	memset(a, 0, sizeof(*a));
	a->sub_group_size = 100000000;
	a->buffer_count = 4;
	a->steps = 3;
	a->pipe_read = a->pipe_write = true;
	a->threads = 1;
	a->pin = true;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *v;
		int r, c;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(arg, "--json")) {
			a->json = true;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--nvme-path", &v))) {
			if (r < 0 || bench_add_path(PROG, "--nvme-path", v, a->paths, &a->npaths,
			                          OFFLOAD_NVME_MAX_PATHS))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--params", &v))) {
			if (r < 0 ||
			    bench_parse_size(PROG, "--params", v, 1, 1ull << 40, &a->params))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--sub-group-size", &v))) {
			if (r < 0 || bench_parse_size(PROG, "--sub-group-size", v, 1, 1ull << 36,
			                              &a->sub_group_size))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--buffer-count", &v))) {
			if (r < 0 ||
			    bench_parse_uint(PROG, "--buffer-count", v, 1, 1024, &a->buffer_count))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--pipeline-read", &v))) {
			if (r < 0 || bench_parse_bool(PROG, "--pipeline-read", v, &a->pipe_read))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--pipeline-write", &v))) {
			if (r < 0 || bench_parse_bool(PROG, "--pipeline-write", v, &a->pipe_write))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--steps", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--steps", v, 1, 10000, &a->steps))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--threads", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--threads", v, 1, 1024, &a->threads))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--pin-memory", &v))) {
			if (r < 0 || bench_parse_bool(PROG, "--pin-memory", v, &a->pin))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--offload", &v))) {
			if (r < 0 || (c = bench_parse_choice(PROG, "--offload", v, dev_names)) < 0)
				return -EINVAL;
			a->nvme = c == 1;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--step-on", &v))) {
			if (r < 0 || (c = bench_parse_choice(PROG, "--step-on", v, on_names)) < 0)
				return -EINVAL;
			a->on_cpu = c == 1;
			continue;
		}
		fprintf(stderr, PROG ": unknown option '%s' (see zinf bench optstep --help)\n",
		        arg);
		return -EINVAL;
	}
	if (!a->params) {
		fprintf(stderr, PROG ": --params is required (e.g. --params 1G)\n");
		return -EINVAL;
	}
	if (a->nvme && !a->npaths) {
		fprintf(stderr, PROG ": --offload nvme needs --nvme-path DIR\n");
		return -EINVAL;
	}
	if (a->sub_group_size > a->params)
		a->sub_group_size = a->params;
	return 0;
}

/* NVMe bound: write then read the same chunk sizes through a plain swapper. Returns 0 and the
 * two times, or -errno. */
static int
nvme_bound(const args *a, double *t_write, double *t_read)
{
	uint64_t g = (a->params + a->sub_group_size - 1) / a->sub_group_size;
	uint64_t full = (12 * a->sub_group_size + 4095) / 4096 * 4096;
	offload_swapper_opts so;
	offload_swapper_opts_init(&so);
	so.host_budget = (a->buffer_count + 1) * full + a->buffer_count * (16u << 20);
	so.pin_memory = a->pin;
	so.allow_unpinned = true;
	so.nvme_paths = a->paths;
	so.nvme_path_count = a->npaths;
	so.nvme_capacity = g * ((full + (1u << 20) * a->npaths) / ((1u << 20) * a->npaths) *
	                        ((1u << 20) * a->npaths));
	so.max_chunks = g > 16 ? (unsigned)g : 16;
	so.max_ops = (unsigned)a->buffer_count + 8;
	so.run_id = "bench-optstep-bound";
	so.aio.quiet = true;
	offload_swapper_t *sw;
	char err[512];
	int ret = offload_swapper_create(&so, &sw, err, sizeof(err));
	if (ret) {
		fprintf(stderr, PROG ": bound: %s\n", err);
		return ret;
	}
	int *ids = calloc(g, sizeof(*ids));
	if (!ids) {
		offload_swapper_destroy(sw);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < g; i++) {
		uint64_t n = a->params - i * a->sub_group_size;
		n = n < a->sub_group_size ? n : a->sub_group_size;
		ids[i] = offload_chunk_create(sw, "bound", 12 * n);
	}
	for (int phase = 0; phase < 2 && !ret; phase++) {
		uint64_t next = 0, done = 0;
		unsigned inflight = 0;
		uint64_t t0 = bench_now_ns();
		while (done < g && !ret) {
			while (next < g && inflight < a->buffer_count) {
				void *p;
				if (phase == 0) {
					if ((ret = offload_chunk_alloc(sw, ids[next],
					                               OFFLOAD_TIER_HOST, &p)))
						break;
					memset(p, (int)(next & 0xff), 4096);
					ret = offload_chunk_evict(sw, ids[next], OFFLOAD_TIER_HOST,
					                          next);
				} else {
					ret = offload_chunk_fetch(sw, ids[next], OFFLOAD_TIER_HOST,
					                          next);
				}
				if (ret)
					break;
				next++;
				inflight++;
			}
			offload_event ev[32];
			int n = ret ? 0 : offload_poll(sw, ev, 32, 1, -1);
			for (int e = 0; e < n; e++) {
				if (ev[e].res < 0 && !ret)
					ret = ev[e].res;
				if (phase == 1 && ev[e].res == 0)
					offload_chunk_drop(sw, ev[e].chunk, OFFLOAD_TIER_HOST);
				inflight--;
				done++;
			}
			if (n < 0)
				ret = n;
		}
		double s = (double)(bench_now_ns() - t0) * 1e-9;
		*(phase == 0 ? t_write : t_read) = s;
	}
	if (ret)
		fprintf(stderr, PROG ": bound: %s\n", offload_swapper_last_error(sw));
	free(ids);
	offload_swapper_destroy(sw);
	return ret;
}

#ifdef ZINF_HAVE_CUDA
/* PCIe bound: 12 B/param each way at once, sub-group pieces over a ring of buffers. */
static int
pcie_bound(const args *a, double *secs)
{
	uint64_t piece = 12 * a->sub_group_size, total = 12 * a->params;
	unsigned k = (unsigned)a->buffer_count;
	void *h = NULL, *d = NULL;
	cudaStream_t s[2] = {0, 0};
	cudaError_t e = cudaMallocHost(&h, 2 * k * piece);
	if (e == cudaSuccess)
		e = cudaMalloc(&d, 2 * k * piece);
	if (e == cudaSuccess)
		e = cudaStreamCreateWithFlags(&s[0], cudaStreamNonBlocking);
	if (e == cudaSuccess)
		e = cudaStreamCreateWithFlags(&s[1], cudaStreamNonBlocking);
	if (e == cudaSuccess) {
		memset(h, 1, 2 * k * piece);
		uint64_t t0 = bench_now_ns();
		unsigned slot = 0;
		for (uint64_t off = 0; off < total && e == cudaSuccess; off += piece, slot++) {
			uint64_t len = total - off < piece ? total - off : piece;
			char *hs = (char *)h + (uint64_t)(slot % k) * piece;
			char *ds = (char *)d + (uint64_t)(slot % k) * piece;
			uint64_t hi = (uint64_t)k * piece;
			e = cudaMemcpyAsync(ds, hs, len, cudaMemcpyHostToDevice, s[0]);
			if (e == cudaSuccess)
				e = cudaMemcpyAsync(hs + hi, ds + hi, len, cudaMemcpyDeviceToHost,
				                    s[1]);
		}
		if (e == cudaSuccess)
			e = cudaStreamSynchronize(s[0]);
		if (e == cudaSuccess)
			e = cudaStreamSynchronize(s[1]);
		*secs = (double)(bench_now_ns() - t0) * 1e-9;
	}
	if (e != cudaSuccess)
		fprintf(stderr, PROG ": PCIe bound: %s\n", cudaGetErrorString(e));
	for (int i = 0; i < 2; i++)
		if (s[i])
			cudaStreamDestroy(s[i]);
	cudaFree(d);
	cudaFreeHost(h);
	return e == cudaSuccess ? 0 : -EIO;
}
#endif

static int
cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

int
zinf_bench_optstep_main(int argc, char **argv)
{
	args a;
	int ret = parse(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 2;
	char why[256];
	bool gpu = offload_gpu_probe(why, sizeof(why));
	if (!a.on_cpu && !gpu) {
		fprintf(stderr,
		        PROG ": --step-on gpu needs a CUDA device, but %s: pass --step-on cpu\n",
		        why);
		return 1;
	}

	/* Bound first, on the same bytes. */
	double t_write = 0, t_read = 0, t_pcie = 0, bound = 0;
	const char *bound_what = "none (no data movement: CPU Adam in place)";
	if (a.nvme) {
		if ((ret = nvme_bound(&a, &t_write, &t_read)))
			return 1;
		bound = t_write + t_read;
		bound_what = "nvme write + read of 24 B/param (plain swapper, host <-> nvme)";
	} else if (!a.on_cpu) {
#ifdef ZINF_HAVE_CUDA
		if ((ret = pcie_bound(&a, &t_pcie)))
			return 1;
		bound = t_pcie;
		bound_what = "PCIe H2D + D2H of 12 B/param each, concurrent (cudaMemcpyAsync)";
#endif
	}

	zinf_optstep_opts o;
	zinf_optstep_opts_init(&o);
	o.nparams = a.params;
	o.sub_group_size = a.sub_group_size;
	o.device = a.nvme ? ZINF_OPTSTEP_DEVICE_NVME : ZINF_OPTSTEP_DEVICE_CPU;
	o.nvme_paths = a.paths;
	o.nvme_path_count = a.npaths;
	o.buffer_count = (unsigned)a.buffer_count;
	o.pipeline_read = a.pipe_read;
	o.pipeline_write = a.pipe_write;
	o.pin_memory = a.pin;
	o.allow_unpinned = true;
	o.step_on = a.on_cpu ? ZINF_OPTSTEP_ON_CPU : ZINF_OPTSTEP_ON_GPU;
	o.device_ptrs = gpu;
	o.run_id = "bench-optstep";
	o.cpu.nthreads = (int)a.threads;
	o.aio.quiet = true;
	zinf_optstep_t *os = NULL;
	char err[768];
	void *grads = NULL, *p16 = NULL;
	float *init = NULL;
	double *times = calloc(a.steps, sizeof(*times));
	int rc = 1;
	if (!times)
		goto out;
	if ((ret = zinf_optstep_create(&o, &os, err, sizeof(err)))) {
		fprintf(stderr, PROG ": %s\n", err);
		goto out;
	}
	/* Initial state in sub-group pieces would avoid a host copy; the bench keeps it simple:
	 * one host array of N floats for the master weights (m = v = 0). */
	if (!(init = malloc(a.params * 4)))
		goto out;
	for (uint64_t i = 0; i < a.params; i++)
		init[i] = (float)(i % 1000) * 1e-3f;
	if ((ret = zinf_optstep_load(os, init, NULL, NULL, 0))) {
		fprintf(stderr, PROG ": load: %s\n", zinf_optstep_last_error(os));
		goto out;
	}
	free(init);
	init = NULL;
	if (gpu) {
#ifdef ZINF_HAVE_CUDA
		if (cudaMalloc(&grads, a.params * 4) != cudaSuccess ||
		    cudaMalloc(&p16, a.params * 2) != cudaSuccess ||
		    cudaMemset(grads, 0, a.params * 4) != cudaSuccess) {
			fprintf(stderr, PROG ": cudaMalloc of the gradients failed\n");
			goto out;
		}
#endif
	} else {
		grads = calloc(a.params, 4);
		p16 = calloc(a.params, 2);
		if (!grads || !p16)
			goto out;
	}
	zinf_optstep_stats st = {0};
	for (uint64_t s = 0; s < a.steps; s++) {
		zinf_adam_cfg cfg;
		zinf_adam_cfg_init(&cfg);
		cfg.step = (int64_t)s + 1;
		uint64_t t0 = bench_now_ns();
		if ((ret = zinf_optstep_step(os, grads, p16, &cfg, 1.0f))) {
			fprintf(stderr, PROG ": step %llu: %s\n", (unsigned long long)s + 1,
			        zinf_optstep_last_error(os));
			goto out;
		}
		times[s] = (double)(bench_now_ns() - t0) * 1e-9;
		zinf_optstep_get_stats(os, &st);
	}
	qsort(times, a.steps, sizeof(*times), cmp_double);
	double med = times[a.steps / 2];
	double ratio = bound > 0 ? med / bound : 0;
	const char *tn[OFFLOAD_TIER_COUNT] = {"gpu", "host", "nvme"};
	if (a.json) {
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "bench", "optstep");
		cJSON_AddNumberToObject(j, "params", (double)a.params);
		cJSON_AddStringToObject(j, "offload", a.nvme ? "nvme" : "cpu");
		cJSON_AddStringToObject(j, "step_on", a.on_cpu ? "cpu" : "gpu");
		cJSON_AddNumberToObject(j, "buffer_count", (double)a.buffer_count);
		cJSON_AddNumberToObject(j, "sub_group_size", (double)a.sub_group_size);
		cJSON_AddBoolToObject(j, "pin_memory", a.pin);
		cJSON_AddNumberToObject(j, "steps", (double)a.steps);
		cJSON_AddNumberToObject(j, "step_s_median", med);
		cJSON_AddNumberToObject(j, "step_s_min", times[0]);
		cJSON_AddNumberToObject(j, "step_s_max", times[a.steps - 1]);
		cJSON *b = cJSON_AddObjectToObject(j, "bytes_per_step");
		for (int t = 0; t < OFFLOAD_TIER_COUNT; t++) {
			cJSON *x = cJSON_AddObjectToObject(b, tn[t]);
			cJSON_AddNumberToObject(x, "read", (double)st.bytes[t][0]);
			cJSON_AddNumberToObject(x, "written", (double)st.bytes[t][1]);
		}
		cJSON_AddNumberToObject(j, "peak_resident_subgroups", st.peak_resident);
		cJSON_AddNumberToObject(j, "bound_s", bound);
		cJSON_AddStringToObject(j, "bound_what", bound_what);
		cJSON_AddNumberToObject(j, "nvme_write_s", t_write);
		cJSON_AddNumberToObject(j, "nvme_read_s", t_read);
		cJSON_AddNumberToObject(j, "pcie_s", t_pcie);
		cJSON_AddNumberToObject(j, "ratio", ratio);
		if (bench_json_emit(j))
			goto out;
	} else {
		char b1[32];
		printf("optstep: %s params, offload %s, step on %s, sub-group %llu, buffer_count "
		       "%llu, pin %s\n",
		       bench_fmt_size_arg(a.params, b1, sizeof(b1)), a.nvme ? "nvme" : "cpu",
		       a.on_cpu ? "cpu" : "gpu", (unsigned long long)a.sub_group_size,
		       (unsigned long long)a.buffer_count, a.pin ? "true" : "false");
		printf("step time: median %.4f s (min %.4f, max %.4f, %llu steps)\n", med, times[0],
		       times[a.steps - 1], (unsigned long long)a.steps);
		printf("bytes per step:\n");
		for (int t = 0; t < OFFLOAD_TIER_COUNT; t++)
			printf("  %-5s read %14llu  written %14llu  (%.2f + %.2f B/param)\n", tn[t],
			       (unsigned long long)st.bytes[t][0],
			       (unsigned long long)st.bytes[t][1],
			       (double)st.bytes[t][0] / (double)a.params,
			       (double)st.bytes[t][1] / (double)a.params);
		if (bound > 0)
			printf("bound: %.4f s = %s\nratio step/bound: %.3f\n", bound, bound_what,
			       ratio);
		else
			printf("bound: %s\n", bound_what);
		if (a.nvme)
			printf("  nvme write %.4f s (%.2f GB/s), read %.4f s (%.2f GB/s)\n",
			       t_write, 12e-9 * (double)a.params / t_write, t_read,
			       12e-9 * (double)a.params / t_read);
	}
	rc = 0;
out:
	if (gpu) {
#ifdef ZINF_HAVE_CUDA
		cudaFree(grads);
		cudaFree(p16);
#endif
	} else {
		free(grads);
		free(p16);
	}
	free(init);
	free(times);
	zinf_optstep_destroy(os);
	return rc;
}
