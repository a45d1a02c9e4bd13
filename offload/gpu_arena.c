/* GPU arena: one cudaMalloc of the whole budget at create, carved by the first-fit range
 * allocator, so the steady state never calls cudaMalloc/cudaFree. Without CUDA in the build,
 * or without a usable device, create fails with -ENODEV and says which. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "offload_internal.h"

#define SUBSYS "offload: gpu arena"

bool
offload_gpu_probe(char *why, size_t len)
{
#ifdef ZINF_HAVE_CUDA
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		if (why)
			snprintf(why, len, "no GPU tier: cudaGetDeviceCount failed: %s (%s)",
			         cudaGetErrorString(e), cudaGetErrorName(e));
		return false;
	}
	if (n == 0) {
		if (why)
			snprintf(why, len, "no GPU tier: cudaGetDeviceCount found 0 devices");
		return false;
	}
	if (why)
		snprintf(why, len, "%d CUDA device(s)", n);
	return true;
#else
	if (why)
		snprintf(why, len,
		         "no GPU tier: this zinf was built without CUDA "
		         "(configure with -DZINF_CUDA=ON on a machine with the toolkit)");
	return false;
#endif
}

struct offload_gpu_arena {
	offload_gpu_arena_opts opts;
	char *base;
	off_ranges ranges;
	/* live allocations: offset -> length, for free() */
	struct {
		uint64_t off, len;
	} * live;
	unsigned nlive, cap;
	char err[OFF_ERR_LEN];
};

void
offload_gpu_arena_opts_init(offload_gpu_arena_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->align = 256;
}

int
offload_gpu_arena_create(const offload_gpu_arena_opts *opts, offload_gpu_arena_t **out)
{
	*out = NULL;
	char why[256];
	if (!offload_gpu_probe(why, sizeof(why))) {
		zinf_log(ZINF_LOG_ERROR, SUBSYS, "%s", why);
		return -ENODEV;
	}
	if (!opts->budget || !opts->align || (opts->align & (opts->align - 1))) {
		zinf_log(ZINF_LOG_ERROR, SUBSYS,
		         "gpu budget must be > 0 (got %llu) and align a power of two (got %llu)",
		         (unsigned long long)opts->budget, (unsigned long long)opts->align);
		return -EINVAL;
	}
#ifdef ZINF_HAVE_CUDA
	offload_gpu_arena_t *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->opts = *opts;
	if (off_ranges_init(&a->ranges, opts->budget)) {
		free(a);
		return -ENOMEM;
	}
	cudaError_t e = cudaSetDevice(opts->device);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&a->base, opts->budget);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		char x[64], y[64];
		zinf_log(
		        ZINF_LOG_ERROR, SUBSYS,
		        "gpu tier: cudaMalloc of the %s budget on device %d failed: %s; %s free on "
		        "the device: lower the gpu budget",
		        off_fmt_bytes(opts->budget, x, sizeof(x)), opts->device,
		        cudaGetErrorString(e), off_fmt_bytes(fr, y, sizeof(y)));
		off_ranges_fini(&a->ranges);
		free(a);
		return e == cudaErrorMemoryAllocation ? -ENOMEM : -ENODEV;
	}
	*out = a;
	return 0;
#else
	return -ENODEV;
#endif
}

void
offload_gpu_arena_destroy(offload_gpu_arena_t *a)
{
	if (!a)
		return;
#ifdef ZINF_HAVE_CUDA
	cudaFree(a->base);
#endif
	off_ranges_fini(&a->ranges);
	free(a->live);
	free(a);
}

int
offload_gpu_alloc(offload_gpu_arena_t *a, uint64_t size, void **dptr)
{
	*dptr = NULL;
	if (!size)
		return -EINVAL;
	uint64_t len = off_round_up(size, a->opts.align), off;
	if (a->nlive == a->cap) {
		unsigned cap = a->cap ? a->cap * 2 : 64;
		void *n = realloc(a->live, cap * sizeof(*a->live));
		if (!n)
			return -ENOMEM;
		a->live = n;
		a->cap = cap;
	}
	int ret = off_ranges_alloc(&a->ranges, len, a->opts.align, &off);
	if (ret) {
		char x[64], y[64], z[64], w[64], v[64];
		off_set_err(
		        a->err, SUBSYS,
		        "gpu tier out of memory: %s requested, %s free (largest free block %s), "
		        "%s in use, budget %s: raise the gpu budget or lower buffer_size",
		        off_fmt_bytes(len, x, sizeof(x)),
		        off_fmt_bytes(a->ranges.size - a->ranges.in_use, y, sizeof(y)),
		        off_fmt_bytes(off_ranges_largest(&a->ranges), z, sizeof(z)),
		        off_fmt_bytes(a->ranges.in_use, w, sizeof(w)),
		        off_fmt_bytes(a->ranges.size, v, sizeof(v)));
		return ret;
	}
	a->live[a->nlive].off = off;
	a->live[a->nlive].len = len;
	a->nlive++;
	*dptr = a->base + off;
	return 0;
}

void
offload_gpu_free(offload_gpu_arena_t *a, void *dptr)
{
	if (!dptr)
		return;
	uint64_t off = (uint64_t)((char *)dptr - a->base);
	for (unsigned i = 0; i < a->nlive; i++) {
		if (a->live[i].off != off)
			continue;
		off_ranges_free(&a->ranges, off, a->live[i].len);
		a->live[i] = a->live[--a->nlive];
		return;
	}
	zinf_log(ZINF_LOG_ERROR, SUBSYS, "free of %p, which this arena did not allocate", dptr);
}

void
offload_gpu_arena_usage(const offload_gpu_arena_t *a, offload_tier_usage *u)
{
	u->budget = a->ranges.size;
	u->in_use = a->ranges.in_use;
	u->peak = a->ranges.peak;
	u->allocs = a->ranges.allocs;
}

const char *
offload_gpu_arena_last_error(const offload_gpu_arena_t *a)
{
	return a ? a->err : "no gpu arena";
}
