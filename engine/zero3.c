/* ZeRO stage 3 across ranks: per-block gather / release / reduce-scatter behind the models'
 * hooks. See zero3.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "zero3.h"

int
zinf_zero3_fail(zinf_zero3 *z, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(z->err, sizeof(z->err), fmt, ap);
	va_end(ap);
	return rc;
}

int
zinf_zero3_init(zinf_zero3 *z, const zinf_model_layout *lay, zinf_comm *comm, int W, int rank,
                bool gpu, int64_t persistence_threshold, char *err, size_t errlen)
{
	*z = (zinf_zero3){0};
	z->comm = comm;
	z->W = W;
	z->rank = rank;
	z->gpu = gpu;
	z->N = lay->total_numel;
	int nb = z->nblocks = lay->nblocks;
	int64_t *arr = calloc((size_t)nb * 6, sizeof(int64_t));
	z->persist = calloc((size_t)nb, sizeof(bool));
	z->live = calloc((size_t)nb, sizeof(bool));
	if (!arr || !z->persist || !z->live) {
		free(arr);
		zinf_zero3_free(z);
		snprintf(err, errlen, "ZeRO stage 3: out of memory for %d blocks", nb);
		return -ENOMEM;
	}
	z->off = arr;
	z->n = arr + nb;
	z->per = arr + 2 * nb;
	z->soff = arr + 3 * nb;
	z->own_b = arr + 4 * nb;
	z->own_n = arr + 5 * nb;
	for (int b = 0; b < nb; b++) {
		int64_t n = lay->block_numel[b];
		int64_t per = (n + W - 1) / W;
		per = (per + ZINF_BLOCK_ALIGN - 1) / ZINF_BLOCK_ALIGN * ZINF_BLOCK_ALIGN;
		int64_t lo = (int64_t)rank * per, hi = lo + per;
		lo = lo < n ? lo : n;
		hi = hi < n ? hi : n;
		z->off[b] = lay->block_offset[b];
		z->n[b] = n;
		z->per[b] = per;
		z->soff[b] = z->S;
		z->own_b[b] = z->off[b] + lo;
		z->own_n[b] = hi - lo;
		z->S += per;
		if (per > z->max_per)
			z->max_per = per;
		z->persist[b] = n < persistence_threshold;
	}
	size_t stage_bytes = (size_t)z->max_per * (size_t)W * sizeof(float);
	if (gpu) {
#ifdef ZINF_HAVE_CUDA
		/* the GPU state is made by zinf_zero3_set_gpu, once the engine has made the rank's
		 * device current (device memory made here landed on device 0 for every rank, and
		 * NCCL on ranks 1.. faulted writing into it: seen on 4 H200s) */
		return 0;
#else
		zinf_zero3_free(z);
		snprintf(err, errlen, "ZeRO stage 3 on the GPU in a build without CUDA");
		return -ENODEV;
#endif
	}
	/* CPU: full-length params and grads as mappings whose pages come and go per block */
	long pg = sysconf(_SC_PAGESIZE);
	size_t bytes = (size_t)z->N * sizeof(float);
	bytes = (bytes + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
	               MAP_NORESERVE, -1, 0);
	void *g = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
	               MAP_NORESERVE, -1, 0);
	z->map_bytes = bytes;
	z->params = p == MAP_FAILED ? NULL : p;
	z->grads = g == MAP_FAILED ? NULL : g;
	z->stage = malloc(stage_bytes);
	if (!z->params || !z->grads || !z->stage) {
		zinf_zero3_free(z);
		snprintf(err, errlen, "ZeRO stage 3: out of memory mapping %zu bytes of parameter "
		         "and gradient space (%zu bytes of staging)", 2 * bytes, stage_bytes);
		return -ENOMEM;
	}
	return 0;
}

void
zinf_zero3_free(zinf_zero3 *z)
{
	if (z->gpu) {
#ifdef ZINF_HAVE_CUDA
		zinf_zero3_gpu_free(z);
#endif
	} else {
		if (z->params)
			munmap(z->params, z->map_bytes);
		if (z->grads)
			munmap(z->grads, z->map_bytes);
		free(z->stage);
	}
	free(z->off);
	free(z->persist);
	free(z->live);
	*z = (zinf_zero3){0};
}

int
zinf_zero3_set_gpu(zinf_zero3 *z, const zinf_zero3_gpu_opts *o, char *err, size_t errlen)
{
	z->stream = o->stream;
	z->shard = o->shard16;
#ifdef ZINF_HAVE_CUDA
	return zinf_zero3_gpu_init(z, o, err, errlen);
#else
	snprintf(err, errlen, "ZeRO stage 3 on the GPU in a build without CUDA");
	return -ENODEV;
#endif
}

void
zinf_zero3_begin_forward(zinf_zero3 *z)
{
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		zinf_zero3_gpu_begin_forward(z);
#else
	(void)z;
#endif
}

int
zinf_zero3_quiesce(zinf_zero3 *z)
{
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		return zinf_zero3_gpu_quiesce(z);
#else
	(void)z;
#endif
	return 0;
}

void
zinf_zero3_grads_reset(zinf_zero3 *z)
{
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		zinf_zero3_gpu_grads_reset(z);
#else
	(void)z;
#endif
}

/* ---- CPU residency ---- */

/* Returns the pages wholly inside [p, p + len) to the kernel (they read back as zeros); the
 * partial pages at the ends stay (they hold a neighbour block's data). */
static void
release_pages(void *p, size_t len)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + pg - 1) / pg * pg, b = ((uintptr_t)p + len) / pg * pg;
	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Resident bytes of a mapping (mincore). */
static uint64_t
resident(void *p, size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = (len + pg - 1) / pg;
	unsigned char *vec = malloc(np ? np : 1);
	if (!vec || mincore(p, len, vec)) {
		free(vec);
		return 0;
	}
	uint64_t n = 0;
	for (size_t i = 0; i < np; i++)
		n += vec[i] & 1;
	free(vec);
	return n * pg;
}

static void
measure(zinf_zero3 *z, bool grads)
{
	if (z->gpu)
		return;
	uint64_t r = resident(grads ? (void *)z->grads : z->params, z->map_bytes);
	uint64_t *peak = grads ? &z->res_grad_peak : &z->res_param_peak;
	if (r > *peak)
		*peak = r;
}

/* ---- hooks ---- */

/* CPU: block b's full parameters into the params mapping. The rank's slice comes from the
 * fp32 shard, or with offload_param from the store (bf16, widened here; NVMe slices are read
 * on demand); at W > 1 it is all-gathered in the staging buffer. */
static int
gather_block(zinf_zero3 *z, int b)
{
	size_t per = (size_t)z->per[b], n = (size_t)z->n[b];
	/* the rank's slice: the fp32 shard itself, or widened from the store into its place in
	 * the staging (the all-gather then runs in place) */
	float *mine = (float *)z->stage + (size_t)z->rank * per;
	const float *src = z->shard ? (const float *)z->shard + z->soff[b] : NULL;
	int rc;
	if (z->store) {
		const uint16_t *h;
		if ((rc = zinf_pstore_acquire(z->store, b, true, &h)))
			return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: block %d's parameters: %s",
			                       z->rank, b, zinf_pstore_error(z->store));
		for (size_t i = 0; i < per; i++)
			mine[i] = zinf_comm_bf16_to_f32(h[i]);
		zinf_pstore_release(z->store, b);
		src = mine;
	}
	if (z->W == 1 && src != mine)
		memcpy(mine, src, per * sizeof(float));
	if (z->W > 1 && (rc = zinf_comm_all_gather(z->comm, src, z->stage, per, ZINF_COMM_F32)))
		return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: all-gathering block %d (%zu elements "
		              "per rank): %s", z->rank, b, per, zinf_comm_error(z->comm));
	memcpy((float *)z->params + z->off[b], z->stage, n * sizeof(float));
	z->gathers++;
	return 0;
}

static int
hook_needed(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		return zinf_zero3_gpu_needed(z, b);
#endif
	if (z->live[b])
		return 0;
	int rc = gather_block(z, b);
	if (rc)
		return rc;
	z->live[b] = true;
	z->live_bytes += (uint64_t)z->n[b] * 4;
	if (z->live_bytes > z->live_peak)
		z->live_peak = z->live_bytes;
	measure(z, false);
	return 0;
}

static void
release_block(zinf_zero3 *z, int b)
{
	z->live[b] = false;
	z->live_bytes -= (uint64_t)z->n[b] * 4;
	release_pages((float *)z->params + z->off[b], (size_t)z->n[b] * sizeof(float));
}

static int
hook_done(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		return zinf_zero3_gpu_done(z, b);
#endif
	if (z->live[b] && !z->persist[b])
		release_block(z, b);
	return 0;
}

static int
hook_grads(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
#ifdef ZINF_HAVE_CUDA
	if (z->g)
		return zinf_zero3_gpu_grads_done(z, b);
#endif
	size_t per = (size_t)z->per[b], n = (size_t)z->n[b], W = (size_t)z->W;
	float *g = z->grads + z->off[b];
	float *mine = (float *)z->stage + (size_t)z->rank * per; /* in-place reduce-scatter */
	measure(z, true);
	memcpy(z->stage, g, n * sizeof(float));
	memset((float *)z->stage + n, 0, (W * per - n) * sizeof(float));
	int rc = W == 1 ? 0 /* one rank (offload_param): its slice is the whole block */
	                : zinf_comm_reduce_scatter(z->comm, z->stage, mine, per, ZINF_COMM_F32,
	                                           ZINF_COMM_SUM);
	if (rc)
		return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: reduce-scattering block %d's gradients "
		              "(%zu elements per rank): %s", z->rank, b, per, zinf_comm_error(z->comm));
	float *acc = z->gacc + z->soff[b];
	for (int64_t i = 0; i < z->own_n[b]; i++)
		acc[i] += mine[i];
	memset(g, 0, n * sizeof(float));
	release_pages(g, n * sizeof(float));
	z->reduces++;
	return 0;
}

#ifdef ZINF_HAVE_CUDA
static const void *
hook_params_at(void *ctx, int b)
{
	return zinf_zero3_gpu_params_at(ctx, b);
}

static float *
hook_grads_at(void *ctx, int b)
{
	return zinf_zero3_gpu_grads_at(ctx, b);
}
#endif

zinf_model_hooks
zinf_zero3_hooks(zinf_zero3 *z)
{
	zinf_model_hooks h = {.ctx = z, .params_needed = hook_needed, .params_done = hook_done,
	                      .grads_done = hook_grads};
#ifdef ZINF_HAVE_CUDA
	if (z->gpu) {
		h.params_at = hook_params_at;
		h.grads_at = hook_grads_at;
	}
#endif
	return h;
}

void
zinf_zero3_invalidate(zinf_zero3 *z)
{
#ifdef ZINF_HAVE_CUDA
	if (z->g) {
		zinf_zero3_gpu_invalidate(z);
		return;
	}
#endif
	for (int b = 0; b < z->nblocks; b++)
		if (z->live[b])
			release_block(z, b);
}

void
zinf_zero3_pack(const zinf_zero3 *z, const float *full, float *packed)
{
	memset(packed, 0, (size_t)z->S * sizeof(float));
	for (int b = 0; b < z->nblocks; b++)
		memcpy(packed + z->soff[b], full + z->own_b[b], (size_t)z->own_n[b] * sizeof(float));
}

int64_t
zinf_zero3_compact(const zinf_zero3 *z, float *buf)
{
	/* the owned count before block b never exceeds soff[b]: every move goes down */
	int64_t at = 0;
	for (int b = 0; b < z->nblocks; b++) {
		memmove(buf + at, buf + z->soff[b], (size_t)z->own_n[b] * sizeof(float));
		at += z->own_n[b];
	}
	return at;
}

void
zinf_zero3_expand(const zinf_zero3 *z, float *buf)
{
	int64_t at = 0;
	for (int b = 0; b < z->nblocks; b++)
		at += z->own_n[b];
	/* from the last block back: every move goes up */
	for (int b = z->nblocks - 1; b >= 0; b--) {
		at -= z->own_n[b];
		memmove(buf + z->soff[b], buf + at, (size_t)z->own_n[b] * sizeof(float));
		memset(buf + z->soff[b] + z->own_n[b], 0,
		       (size_t)(z->per[b] - z->own_n[b]) * sizeof(float));
	}
}

int
zinf_zero3_gather_full(zinf_zero3 *z, const float *packed, float *out)
{
	int rc = 0;
	if (z->W == 1) {
		for (int b = 0; b < z->nblocks; b++)
			memcpy(out + z->off[b], packed + z->soff[b], (size_t)z->n[b] * sizeof(float));
		return 0;
	}
	float *stage = z->stage;
#ifdef ZINF_HAVE_CUDA
	if (z->gpu) {
		/* nccl wants device buffers: one block at a time through a temporary one */
		cudaError_t ce = cudaMalloc((void **)&stage, (size_t)z->max_per * (size_t)z->W *
		                                                     sizeof(float));
		if (ce != cudaSuccess)
			return zinf_zero3_fail(z, -ENOMEM, "ZeRO stage 3: GPU staging for gathering the fp32 "
			              "master: %s", cudaGetErrorString(ce));
	}
#endif
	for (int b = 0; b < z->nblocks && !rc; b++) {
		size_t per = (size_t)z->per[b], bytes = (size_t)z->n[b] * sizeof(float);
		if (!z->gpu) {
			rc = zinf_comm_all_gather(z->comm, packed + z->soff[b], stage, per,
			                          ZINF_COMM_F32);
		} else {
#ifdef ZINF_HAVE_CUDA
			float *mine = stage + (size_t)z->rank * per;
			if (cudaMemcpy(mine, packed + z->soff[b], per * sizeof(float),
			               cudaMemcpyHostToDevice) != cudaSuccess)
				rc = zinf_zero3_fail(z, -EIO, "ZeRO stage 3: copying block %d's master to the "
				            "GPU", b);
			if (!rc)
				rc = zinf_comm_all_gather(z->comm, mine, stage, per, ZINF_COMM_F32);
#endif
		}
		if (rc) {
			if (!z->err[0])
				zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: all-gathering block %d of the fp32 "
				       "master: %s", z->rank, b, zinf_comm_error(z->comm));
			break;
		}
		if (!z->gpu) {
			memcpy(out + z->off[b], stage, bytes);
			continue;
		}
#ifdef ZINF_HAVE_CUDA
		if (cudaMemcpy(out + z->off[b], stage, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
			rc = zinf_zero3_fail(z, -EIO, "ZeRO stage 3: copying gathered block %d to the host", b);
#endif
	}
#ifdef ZINF_HAVE_CUDA
	if (z->gpu)
		cudaFree(stage);
#endif
	return rc;
}
