/* CUDA fused Adam/AdamW and gradient statistics (norm, clip coefficient, inf/NaN check).
 *
 * The step is memory-bound: per element it moves 28 bytes with fp32 everything (read p, g, m,
 * v; write p, m, v) and does ~15 flops. So: each thread handles 4 consecutive elements with
 * 16-byte loads and stores (8-byte for 16-bit arrays), nothing is read twice, loads and stores
 * carry the streaming cache hint (the data is touched once), and the grid is as many resident
 * blocks as the SMs hold, striding over the chunks of one launch. Up to
 * ZINF_CUDA_CHUNKS_PER_LAUNCH chunk descriptors travel as a __grid_constant__ kernel parameter,
 * so a list of small tensors costs one launch, with no host-to-device copy of metadata.
 *
 * The norm is two-pass and deterministic: a fixed grid of ZINF_GRAD_PARTIALS blocks, each
 * thread summing squares in double over a fixed element set, a fixed shuffle tree per block,
 * then one block reducing the partials with the same tree. No atomics. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>

#include "adam_math.h"
#include "cuda_check.h"
#include "kernels/adam_cuda.h"

#define THREADS 256
#define VEC 4 /* elements per thread per tile */

extern "C" int
zinf_cuda_report(cudaError_t err, const char *stmt, const char *file, int line)
{
	int dev = -1;
	cudaGetDevice(&dev);
	fprintf(stderr, "zinf cuda: %s failed at %s:%d on device %d: %s: %s\n", stmt, file, line,
		dev, cudaGetErrorName(err), cudaGetErrorString(err));
	cudaGetLastError();
	return -EIO;
}

namespace {

struct AdamChunkDesc {
	float *p;
	void *m, *v;
	const void *g;
	void *p16;
	long long n;
	unsigned ci;  /* index in the caller's whole list: seeds stochastic rounding */
	int vec;      /* all pointers aligned for the vector path */
};

struct AdamBatch {
	AdamChunkDesc c[ZINF_CUDA_CHUNKS_PER_LAUNCH];
	long long tile0[ZINF_CUDA_CHUNKS_PER_LAUNCH + 1]; /* first tile of each chunk; last = total */
	int nchunks;
};

struct NormBatch {
	const void *g[ZINF_CUDA_CHUNKS_PER_LAUNCH];
	long long n[ZINF_CUDA_CHUNKS_PER_LAUNCH];
	long long tile0[ZINF_CUDA_CHUNKS_PER_LAUNCH + 1];
	int vec[ZINF_CUDA_CHUNKS_PER_LAUNCH];
	int nchunks;
};

__device__ __forceinline__ float
h16_to_f32(unsigned bits, int dtype)
{
	if (dtype == ZINF_DTYPE_BF16)
		return zinf_bf16_to_f32((uint16_t)bits);
	return __half2float(__ushort_as_half((unsigned short)bits));
}

__device__ __forceinline__ unsigned
f32_to_h16(float f, int dtype)
{
	if (dtype == ZINF_DTYPE_BF16)
		return zinf_f32_to_bf16(f);
	return __half_as_ushort(__float2half_rn(f));
}

/* Loads 4 consecutive elements (tile q of the array) as floats. */
template <int DT>
__device__ __forceinline__ void
load4(const void *base, long long q, float x[4])
{
	if (DT == ZINF_DTYPE_FP32) {
		float4 a = __ldcs(reinterpret_cast<const float4 *>(base) + q);
		x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
	} else {
		uint2 a = __ldcs(reinterpret_cast<const uint2 *>(base) + q);
		x[0] = h16_to_f32(a.x & 0xFFFFu, DT), x[1] = h16_to_f32(a.x >> 16, DT);
		x[2] = h16_to_f32(a.y & 0xFFFFu, DT), x[3] = h16_to_f32(a.y >> 16, DT);
	}
}

template <int DT>
__device__ __forceinline__ float
load1(const void *base, long long i)
{
	if (DT == ZINF_DTYPE_FP32)
		return reinterpret_cast<const float *>(base)[i];
	return h16_to_f32(reinterpret_cast<const unsigned short *>(base)[i], DT);
}

template <int GT, int MT, int PT>
__device__ __forceinline__ void
adam_tile_vec(const AdamChunkDesc &d, long long q, const zinf_adam_coef &c, float mult)
{
	float g[4], p[4], m[4], v[4];
	load4<GT>(d.g, q, g);
	load4<ZINF_DTYPE_FP32>(d.p, q, p);
	load4<MT>(d.m, q, m);
	load4<MT>(d.v, q, v);
#pragma unroll
	for (int k = 0; k < 4; k++)
		zinf_adam_update(&c, g[k] * mult, &p[k], &m[k], &v[k]);
	__stcs(reinterpret_cast<float4 *>(d.p) + q, make_float4(p[0], p[1], p[2], p[3]));
	if (MT == ZINF_DTYPE_FP32) {
		__stcs(reinterpret_cast<float4 *>(d.m) + q, make_float4(m[0], m[1], m[2], m[3]));
		__stcs(reinterpret_cast<float4 *>(d.v) + q, make_float4(v[0], v[1], v[2], v[3]));
	} else {
		unsigned mb[4], vb[4];
		uint32_t e0 = (uint32_t)(q * 4);
#pragma unroll
		for (int k = 0; k < 4; k++) {
			mb[k] = zinf_f32_to_bf16_sr(m[k], zinf_sr_bits(c.seed, d.ci, e0 + k, 0));
			vb[k] = zinf_f32_to_bf16_sr(v[k], zinf_sr_bits(c.seed, d.ci, e0 + k, 1));
		}
		__stcs(reinterpret_cast<uint2 *>(d.m) + q,
		       make_uint2(mb[0] | (mb[1] << 16), mb[2] | (mb[3] << 16)));
		__stcs(reinterpret_cast<uint2 *>(d.v) + q,
		       make_uint2(vb[0] | (vb[1] << 16), vb[2] | (vb[3] << 16)));
	}
	if (d.p16) {
		unsigned h[4];
#pragma unroll
		for (int k = 0; k < 4; k++)
			h[k] = f32_to_h16(p[k], PT);
		__stcs(reinterpret_cast<uint2 *>(d.p16) + q,
		       make_uint2(h[0] | (h[1] << 16), h[2] | (h[3] << 16)));
	}
}

template <int GT, int MT, int PT>
__device__ __forceinline__ void
adam_elem(const AdamChunkDesc &d, long long i, const zinf_adam_coef &c, float mult)
{
	float g = load1<GT>(d.g, i) * mult;
	float p = d.p[i];
	float m = load1<MT>(d.m, i), v = load1<MT>(d.v, i);
	zinf_adam_update(&c, g, &p, &m, &v);
	d.p[i] = p;
	if (MT == ZINF_DTYPE_FP32) {
		reinterpret_cast<float *>(d.m)[i] = m;
		reinterpret_cast<float *>(d.v)[i] = v;
	} else {
		reinterpret_cast<unsigned short *>(d.m)[i] =
			zinf_f32_to_bf16_sr(m, zinf_sr_bits(c.seed, d.ci, (uint32_t)i, 0));
		reinterpret_cast<unsigned short *>(d.v)[i] =
			zinf_f32_to_bf16_sr(v, zinf_sr_bits(c.seed, d.ci, (uint32_t)i, 1));
	}
	if (d.p16)
		reinterpret_cast<unsigned short *>(d.p16)[i] = (unsigned short)f32_to_h16(p, PT);
}

template <int GT, int MT, int PT>
__global__ void __launch_bounds__(THREADS)
adam_kernel(const __grid_constant__ AdamBatch b, const zinf_adam_coef c, float mult,
	    const zinf_grad_stats *stats)
{
	if (stats) {
		if (stats->found_inf)
			return; /* fp16 overflow: skip the whole step */
		mult *= stats->grad_mult;
	}
	const long long ntiles = b.tile0[b.nchunks];
	const long long stride = (long long)gridDim.x * blockDim.x;
	int ci = 0;
	for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < ntiles;
	     t += stride) {
		while (t >= b.tile0[ci + 1])
			ci++;
		const AdamChunkDesc &d = b.c[ci];
		long long q = t - b.tile0[ci];
		long long e0 = q * VEC;
		if (d.vec && e0 + VEC <= d.n) {
			adam_tile_vec<GT, MT, PT>(d, q, c, mult);
		} else {
			long long e1 = e0 + VEC < d.n ? e0 + VEC : d.n;
			for (long long i = e0; i < e1; i++)
				adam_elem<GT, MT, PT>(d, i, c, mult);
		}
	}
}

/* Deterministic block sum of a double: shuffle tree per warp, warps added in order. */
template <int NT>
__device__ __forceinline__ double
block_sum(double x)
{
	__shared__ double warp_sum[NT / 32];
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		x += __shfl_down_sync(0xFFFFFFFFu, x, o);
	if ((threadIdx.x & 31) == 0)
		warp_sum[threadIdx.x >> 5] = x;
	__syncthreads();
	double s = 0.0;
	if (threadIdx.x == 0)
		for (int w = 0; w < NT / 32; w++)
			s += warp_sum[w];
	return s; /* valid in thread 0 */
}

template <int GT>
__global__ void __launch_bounds__(THREADS)
sumsq_kernel(const __grid_constant__ NormBatch b, zinf_grad_scratch *s)
{
	const long long ntiles = b.tile0[b.nchunks];
	const long long stride = (long long)gridDim.x * blockDim.x;
	double acc = 0.0;
	unsigned bad = 0;
	int ci = 0;
	for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < ntiles;
	     t += stride) {
		while (t >= b.tile0[ci + 1])
			ci++;
		long long q = t - b.tile0[ci], e0 = q * VEC, n = b.n[ci];
		float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
		if (b.vec[ci] && e0 + VEC <= n) {
			load4<GT>(b.g[ci], q, x);
		} else {
			for (long long i = e0; i < n && i < e0 + VEC; i++)
				x[i - e0] = load1<GT>(b.g[ci], i);
		}
#pragma unroll
		for (int k = 0; k < 4; k++) {
			bad |= (zinf_f32_bits(x[k]) & 0x7F800000u) == 0x7F800000u;
			acc += (double)x[k] * (double)x[k];
		}
	}
	int any = __syncthreads_or((int)bad);
	double sum = block_sum<THREADS>(acc);
	if (threadIdx.x == 0) {
		s->partial[blockIdx.x] = sum;
		s->nonfinite[blockIdx.x] = any;
	}
}

/* One block of ZINF_GRAD_PARTIALS threads: adds this launch's partials into the stats. */
__global__ void __launch_bounds__(ZINF_GRAD_PARTIALS)
sumsq_reduce_kernel(const zinf_grad_scratch *s, zinf_grad_stats *st)
{
	int any = __syncthreads_or(s->nonfinite[threadIdx.x]);
	double sum = block_sum<ZINF_GRAD_PARTIALS>(s->partial[threadIdx.x]);
	if (threadIdx.x == 0) {
		st->sumsq += sum;
		st->found_inf |= any ? 1 : 0;
	}
}

__global__ void
stats_finish_kernel(zinf_grad_stats *st, float loss_scale, float max_norm)
{
	zinf_grad_finish(st->sumsq, loss_scale, max_norm, &st->norm, &st->clip_coef,
			 &st->grad_mult);
}

int
check_chunks(const zinf_adam_chunk *chunks, int nchunks, int need_state)
{
	if (nchunks < 0 || (nchunks > 0 && !chunks)) {
		fprintf(stderr, "zinf adam cuda: nchunks = %d with chunks = %p\n", nchunks,
			(const void *)chunks);
		return -EINVAL;
	}
	for (int i = 0; i < nchunks; i++) {
		const zinf_adam_chunk *c = &chunks[i];
		if (c->n < 0 || (c->n > 0 && (!c->grad || (need_state &&
							   (!c->param || !c->m || !c->v))))) {
			fprintf(stderr, "zinf adam cuda: chunk %d: n = %lld (must be >= 0) and "
					"param, m, v, grad must not be NULL\n", i, (long long)c->n);
			return -EINVAL;
		}
	}
	return 0;
}

size_t
dtype_size(int dt)
{
	return dt == ZINF_DTYPE_FP32 ? 4 : 2;
}

bool
aligned(const void *p, size_t elem)
{
	return ((uintptr_t)p % (elem * VEC)) == 0;
}

int
grid_for(const void *kernel, long long ntiles, int *grid)
{
	int dev, sms, per_sm;
	ZINF_CUDA_CHECK_RETURN(cudaGetDevice(&dev));
	ZINF_CUDA_CHECK_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
	ZINF_CUDA_CHECK_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel,
									       THREADS, 0));
	long long want = (ntiles + THREADS - 1) / THREADS;
	long long full = (long long)sms * (per_sm > 0 ? per_sm : 1);
	*grid = (int)(want < full ? want : full);
	return 0;
}

template <int GT, int MT, int PT>
int
adam_launch_all(const zinf_adam_cfg *cfg, const zinf_adam_chunk *chunks, int nchunks,
		float mult, const zinf_grad_stats *d_stats, cudaStream_t stream)
{
	const zinf_adam_coef coef = zinf_adam_coef_make(cfg);
	const void *kernel = reinterpret_cast<const void *>(adam_kernel<GT, MT, PT>);
	for (int b0 = 0; b0 < nchunks; b0 += ZINF_CUDA_CHUNKS_PER_LAUNCH) {
		AdamBatch b;
		memset(&b, 0, sizeof b);
		b.nchunks = 0;
		b.tile0[0] = 0;
		for (int i = b0; i < nchunks && i < b0 + ZINF_CUDA_CHUNKS_PER_LAUNCH; i++) {
			const zinf_adam_chunk *c = &chunks[i];
			AdamChunkDesc &d = b.c[b.nchunks];
			d.p = c->param;
			d.m = c->m;
			d.v = c->v;
			d.g = c->grad;
			d.p16 = c->param16;
			d.n = c->n;
			d.ci = (unsigned)i;
			d.vec = aligned(c->param, 4) && aligned(c->m, dtype_size(MT)) &&
				aligned(c->v, dtype_size(MT)) && aligned(c->grad, dtype_size(GT)) &&
				(!c->param16 || aligned(c->param16, 2));
			b.tile0[b.nchunks + 1] = b.tile0[b.nchunks] + (c->n + VEC - 1) / VEC;
			b.nchunks++;
		}
		long long ntiles = b.tile0[b.nchunks];
		if (ntiles == 0)
			continue;
		int grid;
		int rc = grid_for(kernel, ntiles, &grid);
		if (rc)
			return rc;
		adam_kernel<GT, MT, PT><<<grid, THREADS, 0, stream>>>(b, coef, mult, d_stats);
		ZINF_CUDA_CHECK_LAUNCH_RETURN("adam_kernel", stream);
	}
	return 0;
}

template <int GT>
int
sumsq_launch_all(const zinf_adam_chunk *chunks, int nchunks, zinf_grad_stats *d_stats,
		 zinf_grad_scratch *d_scratch, cudaStream_t stream)
{
	ZINF_CUDA_CHECK_RETURN(cudaMemsetAsync(d_stats, 0, sizeof *d_stats, stream));
	for (int b0 = 0; b0 < nchunks; b0 += ZINF_CUDA_CHUNKS_PER_LAUNCH) {
		NormBatch b;
		memset(&b, 0, sizeof b);
		for (int i = b0; i < nchunks && i < b0 + ZINF_CUDA_CHUNKS_PER_LAUNCH; i++) {
			int k = b.nchunks++;
			b.g[k] = chunks[i].grad;
			b.n[k] = chunks[i].n;
			b.vec[k] = aligned(chunks[i].grad, dtype_size(GT));
			b.tile0[k + 1] = b.tile0[k] + (chunks[i].n + VEC - 1) / VEC;
		}
		if (b.tile0[b.nchunks] == 0)
			continue;
		/* Fixed grid, independent of the device: same bits on every GPU. */
		sumsq_kernel<GT><<<ZINF_GRAD_PARTIALS, THREADS, 0, stream>>>(b, d_scratch);
		ZINF_CUDA_CHECK_LAUNCH_RETURN("sumsq_kernel", stream);
		sumsq_reduce_kernel<<<1, ZINF_GRAD_PARTIALS, 0, stream>>>(d_scratch, d_stats);
		ZINF_CUDA_CHECK_LAUNCH_RETURN("sumsq_reduce_kernel", stream);
	}
	return 0;
}

} // namespace

extern "C" int
zinf_adam_step_cuda(const zinf_adam_cfg *cfg, const zinf_adam_chunk *chunks, int nchunks,
		    float grad_mult, const zinf_grad_stats *d_stats, cudaStream_t stream)
{
	int rc = zinf_adam_cfg_check(cfg);
	if (rc)
		return rc;
	rc = check_chunks(chunks, nchunks, 1);
	if (rc)
		return rc;
	const int key = cfg->grad_dtype * 4 + cfg->moment_dtype * 2 +
			(cfg->param16_dtype == ZINF_DTYPE_FP16);
#define ADAM_CUDA_CASE(G, M, P16)                                                            \
	case (G) * 4 + (M) * 2 + ((P16) == ZINF_DTYPE_FP16):                                  \
		return adam_launch_all<G, M, P16>(cfg, chunks, nchunks, grad_mult, d_stats, stream);
	switch (key) {
		ADAM_CUDA_CASE(0, 0, 1) ADAM_CUDA_CASE(0, 0, 2)
		ADAM_CUDA_CASE(0, 1, 1) ADAM_CUDA_CASE(0, 1, 2)
		ADAM_CUDA_CASE(1, 0, 1) ADAM_CUDA_CASE(1, 0, 2)
		ADAM_CUDA_CASE(1, 1, 1) ADAM_CUDA_CASE(1, 1, 2)
		ADAM_CUDA_CASE(2, 0, 1) ADAM_CUDA_CASE(2, 0, 2)
		ADAM_CUDA_CASE(2, 1, 1) ADAM_CUDA_CASE(2, 1, 2)
	}
#undef ADAM_CUDA_CASE
	return -EINVAL;
}

extern "C" int
zinf_grad_sumsq_cuda(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
		     zinf_grad_stats *d_stats, zinf_grad_scratch *d_scratch, cudaStream_t stream)
{
	int rc = check_chunks(chunks, nchunks, 0);
	if (rc)
		return rc;
	if (!d_stats || !d_scratch) {
		fprintf(stderr, "zinf grad stats cuda: d_stats = %p and d_scratch = %p must be "
				"device memory\n", (void *)d_stats, (void *)d_scratch);
		return -EINVAL;
	}
	switch (grad_dtype) {
	case ZINF_DTYPE_FP32:
		return sumsq_launch_all<ZINF_DTYPE_FP32>(chunks, nchunks, d_stats, d_scratch, stream);
	case ZINF_DTYPE_BF16:
		return sumsq_launch_all<ZINF_DTYPE_BF16>(chunks, nchunks, d_stats, d_scratch, stream);
	case ZINF_DTYPE_FP16:
		return sumsq_launch_all<ZINF_DTYPE_FP16>(chunks, nchunks, d_stats, d_scratch, stream);
	}
	fprintf(stderr, "zinf grad stats cuda: grad_dtype = %d is not fp32, bf16 or fp16\n",
		(int)grad_dtype);
	return -EINVAL;
}

extern "C" int
zinf_grad_stats_finish_cuda(zinf_grad_stats *d_stats, float loss_scale, float max_norm,
			    cudaStream_t stream)
{
	if (!d_stats || !(loss_scale > 0.0f)) {
		fprintf(stderr, "zinf grad stats cuda: loss_scale = %g must be > 0, d_stats = %p\n",
			loss_scale, (void *)d_stats);
		return -EINVAL;
	}
	stats_finish_kernel<<<1, 1, 0, stream>>>(d_stats, loss_scale, max_norm);
	ZINF_CUDA_CHECK_LAUNCH_RETURN("stats_finish_kernel", stream);
	return 0;
}

extern "C" int
zinf_grad_stats_cuda(const zinf_adam_chunk *chunks, int nchunks, zinf_dtype grad_dtype,
		     float loss_scale, float max_norm, zinf_grad_stats *d_stats,
		     zinf_grad_scratch *d_scratch, cudaStream_t stream)
{
	if (!(loss_scale > 0.0f)) {
		fprintf(stderr, "zinf grad stats cuda: loss_scale = %g must be > 0\n", loss_scale);
		return -EINVAL;
	}
	int rc = zinf_grad_sumsq_cuda(chunks, nchunks, grad_dtype, d_stats, d_scratch, stream);
	if (rc)
		return rc;
	return zinf_grad_stats_finish_cuda(d_stats, loss_scale, max_norm, stream);
}
