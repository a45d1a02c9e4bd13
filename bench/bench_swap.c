/* zinf bench swap: chunk movement between the offload tiers, end to end through the swapper.
 *
 * --size bytes are cut into chunks of --buffer-size (the last may be shorter) and filled with a
 * per-chunk pattern (not timed). Each phase issues one operation per chunk, keeps as many in
 * flight as the swapper takes, and stops the clock when the last completes:
 *   host -> nvme, nvme -> host          iosched straight into/out of host buffers
 *   raw pinned -> gpu, gpu -> pinned,   the peer: plain cudaMemcpyAsync of the same pieces
 *   raw both                            between cudaHostAlloc'd memory and cudaMalloc'd memory
 *   host -> gpu, gpu -> host, both      the swapper's copy path
 *   nvme -> gpu, gpu -> nvme            staged through --buffer-count pinned slots
 * Every phase that lands data is checked byte for byte afterwards (not timed).
 * "bound" is the bandwidth of the slowest link the path crosses, each measured alone in this
 * run (nvme -> gpu: min(nvme -> host, raw pinned -> gpu)); "ratio" = measured / bound, so the
 * physical bound in seconds is bytes / bound and 1.00 means the path costs nothing extra.
 * Without a CUDA device the GPU phases are skipped and the reason printed.
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

#include "offload/offload.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define PROG      "zinf bench swap"
#define MAX_PATHS OFFLOAD_NVME_MAX_PATHS

typedef struct swap_args {
	uint64_t buffer_count, buffer_size, size;
	bool pin, json;
	const char *paths[MAX_PATHS];
	unsigned npaths;
	iosched_backend backend;
} swap_args;

typedef struct row {
	const char *name;
	uint64_t bytes;
	double seconds;
	double bound_gbs; /* 0: none */
	const char *bound_what;
	int check; /* 1 ok, 0 wrong data, -1 not checked */
	int err;
} row;

#define MAX_ROWS 16

typedef struct swap_ctx {
	const swap_args *a;
	offload_swapper_t *sw;
	int *ids;
	uint64_t *sizes;
	unsigned n;
	bool gpu;
	char gpu_why[256];
	row rows[MAX_ROWS];
	unsigned nrows;
	/* The raw peer's buffers, freed only after every timed phase: freeing GBs of device and
	 * pinned memory makes the driver busy for a while (the first swapper phase after such a
	 * free measured 20% slower on an H200). */
	void *raw_host, *raw_dev, *raw_dev2;
} swap_ctx;


static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf bench swap [--nvme-path DIR]... [options]\n\n"
	        "Moves --size bytes, in chunks of --buffer-size, between NVMe, host memory and "
	        "the\n"
	        "GPU through offload/ and reports GB/s (1e9 B/s) per path, the bound (slowest "
	        "link\n"
	        "of the path, measured alone in the same run) and measured/bound. Data is "
	        "checked.\n\n"
	        "options:\n"
	        "  --nvme-path DIR     swap folder; repeat to stripe over several (up to %d)\n"
	        "  --size S            bytes moved per phase (default 1G)\n"
	        "  --buffer-size S     chunk and staging-slot size, multiple of 4K (default 64M)\n"
	        "  --buffer-count N    staging slots for NVMe <-> GPU, 1..1024 (default 4)\n"
	        "  --pin-memory B      true: page-locked host buffers (default); false: pageable\n"
	        "  --backend NAME      auto|io_uring|libaio|psync (default auto)\n"
	        "  --json              one JSON object instead of the table\n"
	        "  -h, --help          this help\n\n"
	        "Without --nvme-path only host <-> GPU is measured; without a GPU only NVMe <-> "
	        "host.\n"
	        "%s.\nexit codes: 0 ok, 1 runtime failure or wrong data, 2 usage error\n",
	        MAX_PATHS, BENCH_SIZE_HELP);
}

static int
parse_args(int argc, char **argv, swap_args *a)
{
	memset(a, 0, sizeof(*a));
	a->buffer_count = 4;
	a->buffer_size = 64ull << 20;
	a->size = 1ull << 30;
	a->pin = true;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *v = NULL;
		int r;
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
			                          MAX_PATHS))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--size", &v))) {
			if (r < 0 ||
			    bench_parse_size(PROG, "--size", v, 4096, 1ull << 44, &a->size))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--buffer-size", &v))) {
			if (r < 0 || bench_parse_size(PROG, "--buffer-size", v, 4096, 1ull << 32,
			                              &a->buffer_size))
				return -EINVAL;
			if (a->buffer_size % 4096) {
				fprintf(stderr,
				        PROG ": --buffer-size %s is not a multiple of 4096 (4K), "
				             "which direct I/O needs\n",
				        v);
				return -EINVAL;
			}
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--buffer-count", &v))) {
			if (r < 0 ||
			    bench_parse_uint(PROG, "--buffer-count", v, 1, 1024, &a->buffer_count))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--pin-memory", &v))) {
			if (r < 0 || bench_parse_bool(PROG, "--pin-memory", v, &a->pin))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--backend", &v))) {
			if (r < 0 || bench_parse_backend(PROG, "--backend", v, &a->backend))
				return -EINVAL;
			continue;
		}
		fprintf(stderr, PROG ": unknown option '%s' (see zinf bench swap --help)\n", arg);
		return -EINVAL;
	}
	if (a->size / a->buffer_size > 60000) {
		fprintf(stderr, PROG ": --size / --buffer-size is more than 60000 chunks: pass a "
		                     "larger --buffer-size\n");
		return -EINVAL;
	}
	return 0;
}

/* ---- pattern ---- */

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static void
fill(void *buf, uint64_t len, unsigned chunk)
{
	uint64_t *w = buf;
	for (uint64_t i = 0; i < len / 8; i++)
		w[i] = mix(((uint64_t)chunk << 40) ^ i);
	for (uint64_t i = len / 8 * 8; i < len; i++)
		((unsigned char *)buf)[i] = (unsigned char)(chunk + i);
}

static bool
check(const void *buf, uint64_t len, unsigned chunk)
{
	const uint64_t *w = buf;
	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != mix(((uint64_t)chunk << 40) ^ i))
			return false;
	for (uint64_t i = len / 8 * 8; i < len; i++)
		if (((const unsigned char *)buf)[i] != (unsigned char)(chunk + i))
			return false;
	return true;
}

/* ---- phases ---- */

static row *
add_row(swap_ctx *c, const char *name)
{
	row *r = &c->rows[c->nrows++];
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->check = -1;
	return r;
}

static double
gbs(const row *r)
{
	return r->seconds > 0 ? (double)r->bytes / r->seconds / 1e9 : 0;
}

/* Issues op(chunk, tier) for chunks [first, first+count) keeping the swapper full; returns 0 or
 * the first error. `also` (may be NULL) runs a second list at the same time. */
typedef struct job {
	unsigned first, count;
	offload_tier tier;
} job;

static int
run_jobs(swap_ctx *c, const job *jobs, unsigned njobs)
{
	unsigned next[2] = {0, 0}, done = 0, total = 0;
	int err = 0;
	for (unsigned j = 0; j < njobs; j++)
		total += jobs[j].count;
	while (done < total) {
		bool issued = true;
		while (issued) {
			issued = false;
			for (unsigned j = 0; j < njobs; j++) {
				if (next[j] == jobs[j].count)
					continue;
				int id = c->ids[jobs[j].first + next[j]];
				int ret = offload_chunk_fetch(c->sw, id, jobs[j].tier, 0);
				if (ret == -EAGAIN)
					continue;
				if (ret) {
					fprintf(stderr, PROG ": %s\n",
					        offload_swapper_last_error(c->sw));
					return ret;
				}
				next[j]++;
				issued = true;
			}
		}
		offload_event ev[64];
		int n = offload_poll(c->sw, ev, 64, 1, -1);
		if (n < 0)
			return n;
		for (int k = 0; k < n; k++)
			if (ev[k].res && !err) {
				err = ev[k].res;
				fprintf(stderr, PROG ": %s\n", offload_swapper_last_error(c->sw));
			}
		done += (unsigned)n;
	}
	return err;
}

static void
timed(swap_ctx *c, row *r, const job *jobs, unsigned njobs)
{
	uint64_t t0 = bench_now_ns();
	r->err = run_jobs(c, jobs, njobs);
	r->seconds = (double)(bench_now_ns() - t0) / 1e9;
	for (unsigned j = 0; j < njobs; j++)
		for (unsigned i = 0; i < jobs[j].count; i++)
			r->bytes += c->sizes[jobs[j].first + i];
}

/* Drops every copy of every chunk except the one in `keep`. */
static void
keep_only(swap_ctx *c, offload_tier keep)
{
	for (unsigned i = 0; i < c->n; i++)
		for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++)
			if (t != (unsigned)keep)
				offload_chunk_drop(c->sw, c->ids[i], (offload_tier)t);
}

static int
check_host(swap_ctx *c, unsigned first, unsigned count)
{
	for (unsigned i = first; i < first + count; i++) {
		const void *p = offload_chunk_ptr(c->sw, c->ids[i], OFFLOAD_TIER_HOST);
		if (!p || !check(p, c->sizes[i], i))
			return 0;
	}
	return 1;
}

#ifdef ZINF_HAVE_CUDA
static int
check_gpu(swap_ctx *c, unsigned first, unsigned count)
{
	void *tmp = malloc(c->a->buffer_size);
	int ok = tmp != NULL;
	for (unsigned i = first; ok && i < first + count; i++) {
		const void *d = offload_chunk_ptr(c->sw, c->ids[i], OFFLOAD_TIER_GPU);
		ok = d && cudaMemcpy(tmp, d, c->sizes[i], cudaMemcpyDeviceToHost) == cudaSuccess &&
		     check(tmp, c->sizes[i], i);
	}
	free(tmp);
	return ok;
}

/* The peer: plain cudaMemcpyAsync of the same pieces, one stream per direction. */
static int
raw_copies(swap_ctx *c, row *h2d, row *d2h, row *both)
{
	const swap_args *a = c->a;
	void *host = NULL, *dev = NULL, *dev2 = NULL;
	cudaStream_t s1 = NULL, s2 = NULL;
	int ret = -ENOMEM;
	if (cudaHostAlloc(&host, a->size, cudaHostAllocDefault) != cudaSuccess ||
	    cudaMalloc(&dev, a->size) != cudaSuccess || cudaMalloc(&dev2, a->size) != cudaSuccess ||
	    cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) != cudaSuccess ||
	    cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) != cudaSuccess) {
		fprintf(stderr,
		        PROG ": raw copies: cannot allocate %" PRIu64 " bytes pinned + 2x on "
		             "the GPU: lower --size\n",
		        a->size);
		goto out;
	}
	memset(host, 1, a->size);
	/* Pass -1 warms up (untimed): the first copies into freshly allocated memory on the lent
	 * H200 ran ~20% slower than every later pass, whichever code issued them. */
	for (int pass = -1; pass < 3; pass++) {
		row *r = pass == 0 ? h2d : pass == 1 ? d2h : both;
		uint64_t t0 = bench_now_ns();
		for (uint64_t off = 0; off < a->size; off += a->buffer_size) {
			uint64_t len =
			        a->size - off < a->buffer_size ? a->size - off : a->buffer_size;
			if (pass != 1)
				cudaMemcpyAsync((char *)dev + off, (char *)host + off, len,
				                cudaMemcpyHostToDevice, s1);
			if (pass != 0)
				cudaMemcpyAsync((char *)host + off, (char *)dev2 + off, len,
				                cudaMemcpyDeviceToHost, s2);
		}
		cudaStreamSynchronize(s1);
		cudaStreamSynchronize(s2);
		if (pass < 0)
			continue;
		r->seconds = (double)(bench_now_ns() - t0) / 1e9;
		r->bytes = pass == 2 ? 2 * a->size : a->size;
	}
	ret = cudaGetLastError() == cudaSuccess ? 0 : -EIO;
out:
	if (s1)
		cudaStreamDestroy(s1);
	if (s2)
		cudaStreamDestroy(s2);
	c->raw_host = host;
	c->raw_dev = dev;
	c->raw_dev2 = dev2;
	return ret;
}

static void
raw_release(swap_ctx *c)
{
	cudaFreeHost(c->raw_host);
	cudaFree(c->raw_dev);
	cudaFree(c->raw_dev2);
	c->raw_host = c->raw_dev = c->raw_dev2 = NULL;
}
#endif

#ifdef ZINF_HAVE_CUDA
static double
min_pos(double x, double y)
{
	return x <= 0 ? y : y <= 0 ? x : x < y ? x : y;
}
#endif

static int
run(swap_ctx *c)
{
	const swap_args *a = c->a;
	bool nvme = a->npaths > 0;
	job all_host = {0, c->n, OFFLOAD_TIER_HOST}, all_nvme = {0, c->n, OFFLOAD_TIER_NVME};
	row *nw = NULL, *nr = NULL;
	/* Start: every chunk on the host only. */
	for (unsigned i = 0; i < c->n; i++) {
		void *p;
		int ret = offload_chunk_alloc(c->sw, c->ids[i], OFFLOAD_TIER_HOST, &p);
		if (ret) {
			fprintf(stderr, PROG ": %s\n", offload_swapper_last_error(c->sw));
			return ret;
		}
		fill(p, c->sizes[i], i);
	}
	if (nvme) {
		nw = add_row(c, "host -> nvme");
		timed(c, nw, &all_nvme, 1);
		keep_only(c, OFFLOAD_TIER_NVME);
		nr = add_row(c, "nvme -> host");
		timed(c, nr, &all_host, 1);
		nr->check = check_host(c, 0, c->n);
	}
#ifdef ZINF_HAVE_CUDA
	if (c->gpu) {
		job all_gpu = {0, c->n, OFFLOAD_TIER_GPU};
		row *rh = add_row(c, "raw pinned -> gpu"), *rd = add_row(c, "raw gpu -> pinned"),
		    *rb = add_row(c, "raw both directions");
		int ret = raw_copies(c, rh, rd, rb);
		if (ret)
			return ret;
		/* Warm-up, untimed: place every chunk in the GPU arena once, then drop it there. */
		if ((ret = run_jobs(c, &all_gpu, 1)))
			return ret;
		for (unsigned i = 0; i < c->n; i++)
			offload_chunk_drop(c->sw, c->ids[i], OFFLOAD_TIER_GPU);
		row *h = add_row(c, "host -> gpu");
		h->bound_gbs = gbs(rh);
		h->bound_what = "raw pinned -> gpu";
		timed(c, h, &all_gpu, 1);
		h->check = check_gpu(c, 0, c->n);
		keep_only(c, OFFLOAD_TIER_GPU);
		row *d = add_row(c, "gpu -> host");
		d->bound_gbs = gbs(rd);
		d->bound_what = "raw gpu -> pinned";
		timed(c, d, &all_host, 1);
		d->check = check_host(c, 0, c->n);
		/* Both: first half host -> gpu while the second half goes gpu -> host. */
		unsigned half = c->n / 2;
		for (unsigned i = 0; i < c->n; i++)
			offload_chunk_drop(c->sw, c->ids[i],
			                   i < half ? OFFLOAD_TIER_GPU : OFFLOAD_TIER_HOST);
		if (half) {
			job both[2] = {{0, half, OFFLOAD_TIER_GPU},
			               {half, c->n - half, OFFLOAD_TIER_HOST}};
			row *b = add_row(c, "host <-> gpu both");
			b->bound_gbs = gbs(rb);
			b->bound_what = "raw both directions";
			timed(c, b, both, 2);
			b->check = check_gpu(c, 0, half) && check_host(c, half, c->n - half);
		}
		if (nvme) {
			/* Chunks on the GPU only (fetch the first half back), then GPU -> NVMe. */
			job back = {0, c->n, OFFLOAD_TIER_GPU};
			if ((ret = run_jobs(c, &back, 1)))
				return ret;
			keep_only(c, OFFLOAD_TIER_GPU);
			row *gn = add_row(c, "gpu -> nvme (staged)");
			gn->bound_gbs = min_pos(gbs(nw), gbs(rd));
			gn->bound_what = "min(host -> nvme, raw gpu -> pinned)";
			timed(c, gn, &all_nvme, 1);
			keep_only(c, OFFLOAD_TIER_NVME);
			row *ng = add_row(c, "nvme -> gpu (staged)");
			ng->bound_gbs = min_pos(gbs(nr), gbs(rh));
			ng->bound_what = "min(nvme -> host, raw pinned -> gpu)";
			timed(c, ng, &all_gpu, 1);
			ng->check = check_gpu(c, 0, c->n); /* checks the gpu -> nvme leg too */
		}
	}
#endif
	return 0;
}

static void
print_table(const swap_ctx *c)
{
	const swap_args *a = c->a;
	offload_report rep;
	offload_swapper_report(c->sw, &rep);
	char s1[32], s2[32];
	printf("zinf bench swap: %s in %u chunks of %s; buffer_count %" PRIu64
	       "; host buffers %s\n",
	       bench_fmt_size(a->size, s1, sizeof(s1)), c->n,
	       bench_fmt_size(a->buffer_size, s2, sizeof(s2)), a->buffer_count,
	       offload_host_mode_name(rep.host_mode));
	if (a->npaths) {
		offload_nvme_t *nv = offload_swapper_nvme(c->sw);
		iosched_t *ios = offload_swapper_iosched(c->sw);
		printf("nvme: %u path(s), %s, backend %s:", a->npaths,
		       offload_nvme_is_direct(nv) ? "O_DIRECT" : "buffered",
		       iosched_backend_name(iosched_get_backend(ios)));
		for (unsigned i = 0; i < a->npaths; i++)
			printf(" %s", a->paths[i]);
		printf("\n");
	}
	if (!c->gpu)
		printf("gpu: %s; measuring NVMe <-> host only\n", c->gpu_why);
	printf("%-22s %10s %9s %9s %9s %7s  %s\n", "path", "bytes", "seconds", "GB/s", "bound",
	       "ratio", "data");
	for (unsigned i = 0; i < c->nrows; i++) {
		const row *r = &c->rows[i];
		char bound[16] = "-", ratio[16] = "-";
		if (r->bound_gbs > 0) {
			snprintf(bound, sizeof(bound), "%.2f", r->bound_gbs);
			snprintf(ratio, sizeof(ratio), "%.2f", gbs(r) / r->bound_gbs);
		}
		printf("%-22s %10" PRIu64 " %9.4f %9.2f %9s %7s  %s\n", r->name, r->bytes,
		       r->seconds, gbs(r), bound, ratio,
		       r->err         ? "ERROR"
		       : r->check < 0 ? "-"
		       : r->check     ? "ok"
		                      : "WRONG");
		if (r->bound_gbs > 0)
			printf("%-22s   bound: %s; physical bound %.4f s\n", "", r->bound_what,
			       (double)r->bytes / (r->bound_gbs * 1e9));
	}
	char buf[1024];
	offload_report_format(&rep, buf, sizeof(buf));
	printf("memory (bytes):\n%s", buf);
}

static int
print_json(const swap_ctx *c)
{
	const swap_args *a = c->a;
	cJSON *o = cJSON_CreateObject(), *rows = cJSON_CreateArray(), *paths = cJSON_CreateArray();
	if (!o || !rows || !paths)
		return -ENOMEM;
	offload_report rep;
	offload_swapper_report(c->sw, &rep);
	cJSON_AddStringToObject(o, "bench", "swap");
	cJSON_AddNumberToObject(o, "size", (double)a->size);
	cJSON_AddNumberToObject(o, "buffer_size", (double)a->buffer_size);
	cJSON_AddNumberToObject(o, "buffer_count", (double)a->buffer_count);
	cJSON_AddNumberToObject(o, "chunks", c->n);
	cJSON_AddBoolToObject(o, "pin_memory", a->pin);
	cJSON_AddStringToObject(o, "host_mode", offload_host_mode_name(rep.host_mode));
	cJSON_AddBoolToObject(o, "gpu", c->gpu);
	if (!c->gpu)
		cJSON_AddStringToObject(o, "gpu_reason", c->gpu_why);
	for (unsigned i = 0; i < a->npaths; i++)
		cJSON_AddItemToArray(paths, cJSON_CreateString(a->paths[i]));
	cJSON_AddItemToObject(o, "nvme_paths", paths);
	if (a->npaths)
		cJSON_AddStringToObject(
		        o, "backend",
		        iosched_backend_name(iosched_get_backend(offload_swapper_iosched(c->sw))));
	for (unsigned i = 0; i < c->nrows; i++) {
		const row *r = &c->rows[i];
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "path", r->name);
		cJSON_AddNumberToObject(j, "bytes", (double)r->bytes);
		cJSON_AddNumberToObject(j, "seconds", r->seconds);
		cJSON_AddNumberToObject(j, "gb_per_s", gbs(r));
		if (r->bound_gbs > 0) {
			cJSON_AddNumberToObject(j, "bound_gb_per_s", r->bound_gbs);
			cJSON_AddStringToObject(j, "bound", r->bound_what);
			cJSON_AddNumberToObject(j, "bound_seconds",
			                        (double)r->bytes / (r->bound_gbs * 1e9));
			cJSON_AddNumberToObject(j, "ratio", gbs(r) / r->bound_gbs);
		}
		cJSON_AddStringToObject(j, "data",
		                        r->err         ? "error"
		                        : r->check < 0 ? "unchecked"
		                        : r->check     ? "ok"
		                                       : "wrong");
		cJSON_AddItemToArray(rows, j);
	}
	cJSON_AddItemToObject(o, "results", rows);
	cJSON *mem = cJSON_CreateObject();
	for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++) {
		cJSON *m = cJSON_CreateObject();
		cJSON_AddBoolToObject(m, "present", rep.present[t]);
		cJSON_AddNumberToObject(m, "planned", (double)rep.planned[t]);
		cJSON_AddNumberToObject(m, "peak", (double)rep.usage[t].peak);
		cJSON_AddItemToObject(mem, offload_tier_name((offload_tier)t), m);
	}
	cJSON_AddItemToObject(o, "memory", mem);
	return bench_json_emit(o);
}

int
zinf_bench_swap_main(int argc, char **argv)
{
	swap_args a;
	int ret = parse_args(argc, argv, &a);
	if (ret)
		return ret > 0 ? 0 : 2;
	swap_ctx c;
	memset(&c, 0, sizeof(c));
	c.a = &a;
	c.gpu = offload_gpu_probe(c.gpu_why, sizeof(c.gpu_why));
	if (!c.gpu && !a.npaths) {
		fprintf(stderr,
		        PROG ": nothing to measure: %s, and no --nvme-path was given: pass "
		             "--nvme-path DIR\n",
		        c.gpu_why);
		return 2;
	}
	c.n = (unsigned)((a.size + a.buffer_size - 1) / a.buffer_size);
	offload_swapper_opts o;
	offload_swapper_opts_init(&o);
	o.buffer_count = (unsigned)a.buffer_count;
	o.buffer_size = a.buffer_size;
	o.pin_memory = a.pin;
	o.host_budget = a.size + (uint64_t)c.n * 4096 + a.buffer_count * a.buffer_size;
	o.gpu_budget = c.gpu ? a.size + (uint64_t)c.n * 256 : 0;
	o.nvme_paths = a.paths;
	o.nvme_path_count = a.npaths;
	o.nvme_capacity =
	        a.size + (uint64_t)c.n * a.npaths * 4096 + (uint64_t)a.npaths * (1u << 20);
	o.aio.backend = a.backend;
	o.aio.quiet = a.json;
	char err[512];
	if ((ret = offload_swapper_create(&o, &c.sw, err, sizeof(err)))) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	c.ids = calloc(c.n, sizeof(*c.ids));
	c.sizes = calloc(c.n, sizeof(*c.sizes));
	ret = c.ids && c.sizes ? 0 : -ENOMEM;
	for (unsigned i = 0; i < c.n && !ret; i++) {
		uint64_t off = (uint64_t)i * a.buffer_size;
		c.sizes[i] = a.size - off < a.buffer_size ? a.size - off : a.buffer_size;
		int id = offload_chunk_create(c.sw, "bench", c.sizes[i]);
		if (id < 0)
			ret = id;
		else
			c.ids[i] = id;
	}
	if (!ret)
		ret = run(&c);
#ifdef ZINF_HAVE_CUDA
	raw_release(&c);
#endif
	bool bad = ret != 0;
	for (unsigned i = 0; i < c.nrows; i++)
		bad |= c.rows[i].err != 0 || c.rows[i].check == 0;
	if (c.nrows) {
		if (a.json)
			print_json(&c);
		else
			print_table(&c);
	}
	offload_swapper_destroy(c.sw);
	free(c.ids);
	free(c.sizes);
	return bad ? 1 : 0;
}
