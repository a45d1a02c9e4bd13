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

__attribute__((format(printf, 3, 4))) static int
z3fail(zinf_zero3 *z, int rc, const char *fmt, ...)
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
		/* the staging buffer is allocated by zinf_zero3_set_gpu, once the engine has made
		 * the rank's device current (allocated here it landed on device 0 for every rank,
		 * and NCCL on ranks 1.. faulted writing into it: seen on 4 H200s) */
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
		cudaFree(z->stage);
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
zinf_zero3_set_gpu(zinf_zero3 *z, void *stream, void *d_p16, float *d_grads,
                   const void *d_shard16, char *err, size_t errlen)
{
	z->stream = stream;
	z->params = d_p16;
	z->grads = d_grads;
	z->shard = d_shard16;
#ifdef ZINF_HAVE_CUDA
	size_t stage_bytes = (size_t)z->max_per * (size_t)z->W * sizeof(float);
	if (!z->stage) {
		cudaError_t ce = cudaMalloc(&z->stage, stage_bytes);
		if (ce != cudaSuccess) {
			z->stage = NULL;
			snprintf(err, errlen, "ZeRO stage 3: %zu bytes of GPU staging for the largest "
			         "block's gather: %s", stage_bytes, cudaGetErrorString(ce));
			return -ENOMEM;
		}
	}
	return 0;
#else
	snprintf(err, errlen, "ZeRO stage 3 on the GPU in a build without CUDA");
	return -ENODEV;
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

static int
gather_block(zinf_zero3 *z, int b)
{
	size_t per = (size_t)z->per[b], n = (size_t)z->n[b];
	int rc;
	if (!z->gpu) {
		const float *src = (const float *)z->shard + z->soff[b];
		rc = zinf_comm_all_gather(z->comm, src, z->stage, per, ZINF_COMM_F32);
		if (!rc)
			memcpy((float *)z->params + z->off[b], z->stage, n * sizeof(float));
	} else {
#ifdef ZINF_HAVE_CUDA
		const uint16_t *src = (const uint16_t *)z->shard + z->soff[b];
		cudaStream_t cs = (cudaStream_t)zinf_comm_stream(z->comm);
		/* the compute stream may still read the region's old contents */
		rc = zinf_comm_wait_for_stream(z->comm, z->stream);
		if (!rc)
			rc = zinf_comm_all_gather_async(z->comm, src, z->stage, per, ZINF_COMM_BF16);
		if (!rc) {
			cudaError_t ce = cudaMemcpyAsync((uint16_t *)z->params + z->off[b], z->stage,
			                                 n * 2, cudaMemcpyDeviceToDevice, cs);
			if (ce != cudaSuccess)
				return z3fail(z, -EIO, "ZeRO stage 3: placing gathered block %d: %s", b,
				              cudaGetErrorString(ce));
			rc = zinf_comm_stream_wait_comm(z->comm, z->stream);
		}
#else
		rc = -ENODEV;
#endif
	}
	if (rc)
		return z3fail(z, rc, "ZeRO stage 3, rank %d: all-gathering block %d (%zu elements "
		              "per rank): %s", z->rank, b, per, zinf_comm_error(z->comm));
	z->gathers++;
	return 0;
}

static int
hook_needed(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
	if (z->live[b])
		return 0;
	int rc = gather_block(z, b);
	if (rc)
		return rc;
	z->live[b] = true;
	z->live_bytes += (uint64_t)z->n[b] * (z->gpu ? 2 : 4);
	if (z->live_bytes > z->live_peak)
		z->live_peak = z->live_bytes;
	measure(z, false);
	return 0;
}

static void
release_block(zinf_zero3 *z, int b)
{
	z->live[b] = false;
	z->live_bytes -= (uint64_t)z->n[b] * (z->gpu ? 2 : 4);
	if (!z->gpu)
		release_pages((float *)z->params + z->off[b], (size_t)z->n[b] * sizeof(float));
}

static int
hook_done(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
	if (z->live[b] && !z->persist[b])
		release_block(z, b);
	return 0;
}

static int
hook_grads(void *ctx, int b)
{
	zinf_zero3 *z = ctx;
	size_t per = (size_t)z->per[b], n = (size_t)z->n[b], W = (size_t)z->W;
	float *g = z->grads + z->off[b];
	float *mine = (float *)z->stage + (size_t)z->rank * per; /* in-place reduce-scatter */
	int rc;
	if (!z->gpu) {
		measure(z, true);
		memcpy(z->stage, g, n * sizeof(float));
		memset((float *)z->stage + n, 0, (W * per - n) * sizeof(float));
		rc = zinf_comm_reduce_scatter(z->comm, z->stage, mine, per, ZINF_COMM_F32,
		                              ZINF_COMM_SUM);
		if (!rc) {
			float *acc = z->gacc + z->soff[b];
			for (int64_t i = 0; i < z->own_n[b]; i++)
				acc[i] += mine[i];
			memset(g, 0, n * sizeof(float));
			release_pages(g, n * sizeof(float));
		}
	} else {
#ifdef ZINF_HAVE_CUDA
		/* keep the reduced sum of the owned range in place (the next backward adds to it;
		 * the other ranks' copies of it are zeroed, so the next reduce-scatter sums right) */
		cudaStream_t cs = (cudaStream_t)zinf_comm_stream(z->comm);
		rc = zinf_comm_wait_for_stream(z->comm, z->stream);
		cudaError_t ce = cudaSuccess;
		if (!rc) {
			ce = cudaMemcpyAsync(z->stage, g, n * sizeof(float), cudaMemcpyDeviceToDevice,
			                     cs);
			if (ce == cudaSuccess)
				ce = cudaMemsetAsync((float *)z->stage + n, 0, (W * per - n) * sizeof(float),
				                     cs);
		}
		if (!rc && ce == cudaSuccess)
			rc = zinf_comm_reduce_scatter_async(z->comm, z->stage, mine, per, ZINF_COMM_F32,
			                                    ZINF_COMM_SUM);
		if (!rc && ce == cudaSuccess) {
			size_t lo = (size_t)(z->own_b[b] - z->off[b]), on = (size_t)z->own_n[b];
			if (on)
				ce = cudaMemcpyAsync(z->grads + z->own_b[b], mine, on * sizeof(float),
				                     cudaMemcpyDeviceToDevice, cs);
			if (ce == cudaSuccess && lo)
				ce = cudaMemsetAsync(g, 0, lo * sizeof(float), cs);
			if (ce == cudaSuccess && lo + on < n)
				ce = cudaMemsetAsync(g + lo + on, 0, (n - lo - on) * sizeof(float), cs);
		}
		if (ce != cudaSuccess)
			return z3fail(z, -EIO, "ZeRO stage 3: moving block %d's gradients: %s", b,
			              cudaGetErrorString(ce));
		if (!rc)
			rc = zinf_comm_stream_wait_comm(z->comm, z->stream);
#else
		rc = -ENODEV;
#endif
	}
	if (rc)
		return z3fail(z, rc, "ZeRO stage 3, rank %d: reduce-scattering block %d's gradients "
		              "(%zu elements per rank): %s", z->rank, b, per, zinf_comm_error(z->comm));
	z->reduces++;
	return 0;
}

zinf_model_hooks
zinf_zero3_hooks(zinf_zero3 *z)
{
	return (zinf_model_hooks){.ctx = z, .params_needed = hook_needed, .params_done = hook_done,
	                          .grads_done = hook_grads};
}

void
zinf_zero3_invalidate(zinf_zero3 *z)
{
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
zinf_zero3_pack_grads_gpu(zinf_zero3 *z, float *d_gpart)
{
#ifdef ZINF_HAVE_CUDA
	for (int b = 0; b < z->nblocks; b++) {
		if (!z->own_n[b])
			continue;
		cudaError_t ce = cudaMemcpyAsync(d_gpart + z->soff[b], z->grads + z->own_b[b],
		                                 (size_t)z->own_n[b] * sizeof(float),
		                                 cudaMemcpyDeviceToDevice, (cudaStream_t)z->stream);
		if (ce != cudaSuccess)
			return z3fail(z, -EIO, "ZeRO stage 3: packing block %d's gradients: %s", b,
			              cudaGetErrorString(ce));
	}
	return 0;
#else
	(void)d_gpart;
	return z3fail(z, -ENODEV, "ZeRO stage 3 on the GPU in a build without CUDA");
#endif
}

int
zinf_zero3_gather_full(zinf_zero3 *z, const float *packed, float *out)
{
	int rc = 0;
	float *src = (float *)packed;
#ifdef ZINF_HAVE_CUDA
	if (z->gpu) {
		/* nccl wants device buffers */
		cudaError_t ce = cudaMalloc((void **)&src, (size_t)z->S * sizeof(float));
		if (ce == cudaSuccess)
			ce = cudaMemcpy(src, packed, (size_t)z->S * sizeof(float),
			                cudaMemcpyHostToDevice);
		if (ce != cudaSuccess) {
			if (src != packed)
				cudaFree(src);
			return z3fail(z, -EIO, "ZeRO stage 3: staging the fp32 shard on the GPU: %s",
			              cudaGetErrorString(ce));
		}
	}
#endif
	for (int b = 0; b < z->nblocks && !rc; b++) {
		rc = zinf_comm_all_gather(z->comm, src + z->soff[b], z->stage, (size_t)z->per[b],
		                          ZINF_COMM_F32);
		if (rc) {
			z3fail(z, rc, "ZeRO stage 3, rank %d: all-gathering block %d of the fp32 master: "
			       "%s", z->rank, b, zinf_comm_error(z->comm));
			break;
		}
		size_t bytes = (size_t)z->n[b] * sizeof(float);
		if (!z->gpu) {
			memcpy(out + z->off[b], z->stage, bytes);
			continue;
		}
#ifdef ZINF_HAVE_CUDA
		if (cudaMemcpy(out + z->off[b], z->stage, bytes, cudaMemcpyDeviceToHost) !=
		    cudaSuccess)
			rc = z3fail(z, -EIO, "ZeRO stage 3: copying gathered block %d to the host", b);
#endif
	}
#ifdef ZINF_HAVE_CUDA
	if (z->gpu)
		cudaFree(src);
#endif
	return rc;
}
