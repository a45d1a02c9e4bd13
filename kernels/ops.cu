/* Transformer ops on CUDA (see kernels/include/kernels/ops_cuda.h for the contract).
 *
 * Everything is bandwidth-bound, so: 16-byte loads of 8 bf16 values where rows allow, fp32
 * math in registers, one warp per row for row reductions (norms), one block per row for the
 * vocabulary-wide softmax. Column reductions (norm weight / bias gradients) are two-pass with
 * a fixed chunking of the rows, so results do not depend on scheduling: no float atomics. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_check.h"
#include "kernels/ops_cuda.h"

typedef __nv_bfloat16 bf16;

#define COLSUM_CHUNKS 256 /* fixed row chunking of the column reductions */

namespace {

__device__ __forceinline__ void
load8(const bf16 *p, float *f)
{
	uint4 v = *reinterpret_cast<const uint4 *>(p);
	const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

__device__ __forceinline__ void
store8(bf16 *p, const float *f)
{
	uint4 v;
	__nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&v);
#pragma unroll
	for (int i = 0; i < 4; i++)
		h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
	*reinterpret_cast<uint4 *>(p) = v;
}

__device__ __forceinline__ float
round_bf16(float x)
{
	return __bfloat162float(__float2bfloat16_rn(x));
}

__device__ __forceinline__ float
warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* ---- casts ---- */

__global__ void
k_cast_f32_bf16(bf16 *dst, const float *src, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void
k_cast_bf16_f32(float *dst, const bf16 *src, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = __bfloat162float(src[i]);
}

__global__ void
k_cast_bf16_f32_2d(float *dst, const bf16 *src, int rows, int cols, int ld)
{
	int64_t n = (int64_t)rows * cols;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = i / cols, c = i % cols;
		dst[i] = __bfloat162float(src[r * ld + c]);
	}
}

/* ---- embedding ---- */

__global__ void
k_embed_fwd(bf16 *out, const int32_t *tok, const bf16 *wte, const bf16 *wpe, int N, int T, int C)
{
	int c8 = C / 8;
	int64_t total = (int64_t)N * c8;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int n = (int)(i / c8), c = (int)(i % c8) * 8;
		float a[8], b[8];
		load8(wte + (int64_t)tok[n] * C + c, a);
		if (wpe) {
			load8(wpe + (int64_t)(n % T) * C + c, b);
#pragma unroll
			for (int k = 0; k < 8; k++)
				a[k] += b[k];
		}
		store8(out + (int64_t)n * C + c, a);
	}
}

/* One block per distinct token: each thread owns columns and sums the token's positions in
 * increasing order. */
__global__ void
k_embed_bwd_wte(float *dwte, const bf16 *dout, const int32_t *uniq, const int32_t *start,
		const int32_t *pos, int C)
{
	int u = blockIdx.x;
	int p0 = start[u], p1 = start[u + 1];
	float *row = dwte + (int64_t)uniq[u] * C;
	for (int c = threadIdx.x * 2; c < C; c += blockDim.x * 2) {
		float a0 = 0.f, a1 = 0.f;
		for (int p = p0; p < p1; p++) {
			float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(
				dout + (int64_t)pos[p] * C + c));
			a0 += v.x;
			a1 += v.y;
		}
		row[c] += a0;
		row[c + 1] += a1;
	}
}

__global__ void
k_embed_bwd_wpe(float *dwpe, const bf16 *dout, int N, int T, int C)
{
	int64_t total = (int64_t)T * C;
	int nb = N / T;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float a = 0.f;
		for (int b = 0; b < nb; b++)
			a += __bfloat162float(dout[(int64_t)b * T * C + i]);
		dwpe[i] += a;
	}
}

/* ---- norms ---- */

/* One warp per row. */
__global__ void
k_norm_fwd(bf16 *out, bf16 *res_out, float *mean_out, float *rstd_out, const bf16 *res,
	   const bf16 *delta, const bf16 *w, const bf16 *b, int N, int C, float eps, int rms)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	const bf16 *xr = res + (int64_t)row * C;
	bf16 *ro = res_out + (int64_t)row * C;
	float sum = 0.f;
	for (int c = lane * 8; c < C; c += 256) {
		float x[8];
		load8(xr + c, x);
		if (delta) {
			float d[8];
			load8(delta + (int64_t)row * C + c, d);
#pragma unroll
			for (int k = 0; k < 8; k++)
				x[k] = round_bf16(x[k] + d[k]);
		}
		if (delta || ro != xr)
			store8(ro + c, x);
#pragma unroll
		for (int k = 0; k < 8; k++)
			sum += x[k];
	}
	/* the row is now in res_out (written by this same lane for the same elements) */
	float mean = rms ? 0.f : warp_sum(sum) / C;
	float var = 0.f;
	for (int c = lane * 8; c < C; c += 256) {
		float x[8];
		load8(ro + c, x);
#pragma unroll
		for (int k = 0; k < 8; k++)
			var += (x[k] - mean) * (x[k] - mean);
	}
	var = warp_sum(var) / C;
	float rstd = rsqrtf(var + eps);
	for (int c = lane * 8; c < C; c += 256) {
		float x[8], wv[8], bv[8];
		load8(ro + c, x);
		load8(w + c, wv);
		if (b)
			load8(b + c, bv);
#pragma unroll
		for (int k = 0; k < 8; k++)
			x[k] = (x[k] - mean) * rstd * wv[k] + (b ? bv[k] : 0.f);
		store8(out + (int64_t)row * C + c, x);
	}
	if (lane == 0) {
		if (mean_out)
			mean_out[row] = mean;
		rstd_out[row] = rstd;
	}
}

/* dx part: one warp per row, dres += dx. */
__global__ void
k_norm_bwd_dx(bf16 *dres, const bf16 *dout, const bf16 *x, const float *mean_in,
	      const float *rstd_in, const bf16 *w, int N, int C, int rms)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= N)
		return;
	float mean = rms ? 0.f : mean_in[row], rstd = rstd_in[row];
	const bf16 *xr = x + (int64_t)row * C, *dr = dout + (int64_t)row * C;
	float s1 = 0.f, s2 = 0.f;
	for (int c = lane * 8; c < C; c += 256) {
		float xv[8], dv[8], wv[8];
		load8(xr + c, xv);
		load8(dr + c, dv);
		load8(w + c, wv);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			float g = dv[k] * wv[k];
			s1 += g;
			s2 += g * (xv[k] - mean) * rstd;
		}
	}
	s1 = rms ? 0.f : warp_sum(s1) / C;
	s2 = warp_sum(s2) / C;
	bf16 *rr = dres + (int64_t)row * C;
	for (int c = lane * 8; c < C; c += 256) {
		float xv[8], dv[8], wv[8], r[8];
		load8(xr + c, xv);
		load8(dr + c, dv);
		load8(w + c, wv);
		load8(rr + c, r);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			float xh = (xv[k] - mean) * rstd;
			r[k] += rstd * (dv[k] * wv[k] - s1 - xh * s2);
		}
		store8(rr + c, r);
	}
}

/* Column sums over a fixed chunk of rows: partials[chunk][c] = sum dy*xhat (when x) and
 * partials[chunk][C + c] = sum dy (when with_b, or the only output when x is NULL). Two
 * columns per thread. */
__global__ void
k_colsum_partial(float *partials, const bf16 *dy, const bf16 *x, const float *mean,
		 const float *rstd, int N, int C, int with_b, int rms)
{
	int c = (blockIdx.x * blockDim.x + threadIdx.x) * 2;
	int chunk = blockIdx.y;
	int per = (N + COLSUM_CHUNKS - 1) / COLSUM_CHUNKS;
	int r0 = chunk * per, r1 = min(N, r0 + per);
	if (c >= C)
		return;
	float w0 = 0.f, w1 = 0.f, b0 = 0.f, b1 = 0.f;
	for (int r = r0; r < r1; r++) {
		float2 d = __bfloat1622float2(
			*reinterpret_cast<const __nv_bfloat162 *>(dy + (int64_t)r * C + c));
		b0 += d.x;
		b1 += d.y;
		if (x) {
			float2 xv = __bfloat1622float2(
				*reinterpret_cast<const __nv_bfloat162 *>(x + (int64_t)r * C + c));
			float m = rms ? 0.f : mean[r], s = rstd[r];
			w0 += d.x * (xv.x - m) * s;
			w1 += d.y * (xv.y - m) * s;
		}
	}
	int ncols = x ? (with_b ? 2 * C : C) : C;
	float *p = partials + (int64_t)chunk * ncols;
	if (x) {
		p[c] = w0;
		p[c + 1] = w1;
		if (with_b) {
			p[C + c] = b0;
			p[C + c + 1] = b1;
		}
	} else {
		p[c] = b0;
		p[c + 1] = b1;
	}
}

__global__ void
k_colsum_final(float *out0, float *out1, const float *partials, int C, int ncols)
{
	int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= ncols)
		return;
	float a = 0.f;
	for (int k = 0; k < COLSUM_CHUNKS; k++)
		a += partials[(int64_t)k * ncols + c];
	if (c < C)
		out0[c] += a;
	else
		out1[c - C] += a;
}

/* ---- activations ---- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

__device__ __forceinline__ float
gelu_f(float x)
{
	float u = GELU_K * (x + 0.044715f * x * x * x);
	return 0.5f * x * (1.f + tanhf(u));
}

__device__ __forceinline__ float
gelu_grad(float x)
{
	float u = GELU_K * (x + 0.044715f * x * x * x);
	float t = tanhf(u);
	return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * GELU_K * (1.f + 3.f * 0.044715f * x * x);
}

__global__ void
k_gelu_fwd(bf16 *out, const bf16 *x, int64_t n8)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float v[8];
		load8(x + i * 8, v);
#pragma unroll
		for (int k = 0; k < 8; k++)
			v[k] = gelu_f(v[k]);
		store8(out + i * 8, v);
	}
}

__global__ void
k_gelu_bwd(bf16 *dx, const bf16 *dout, const bf16 *x, int64_t n8)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float v[8], d[8];
		load8(x + i * 8, v);
		load8(dout + i * 8, d);
#pragma unroll
		for (int k = 0; k < 8; k++)
			d[k] *= gelu_grad(v[k]);
		store8(dx + i * 8, d);
	}
}

__global__ void
k_swiglu_fwd(bf16 *out, const bf16 *h, int N, int F)
{
	int f8 = F / 8;
	int64_t total = (int64_t)N * f8;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t n = i / f8;
		int c = (int)(i % f8) * 8;
		float g[8], u[8];
		load8(h + n * 2 * F + c, g);
		load8(h + n * 2 * F + F + c, u);
#pragma unroll
		for (int k = 0; k < 8; k++)
			g[k] = g[k] / (1.f + expf(-g[k])) * u[k];
		store8(out + n * F + c, g);
	}
}

__global__ void
k_swiglu_bwd(bf16 *dh, const bf16 *dout, const bf16 *h, int N, int F)
{
	int f8 = F / 8;
	int64_t total = (int64_t)N * f8;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t n = i / f8;
		int c = (int)(i % f8) * 8;
		float g[8], u[8], d[8], dg[8], du[8];
		load8(h + n * 2 * F + c, g);
		load8(h + n * 2 * F + F + c, u);
		load8(dout + n * F + c, d);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			float s = 1.f / (1.f + expf(-g[k]));
			float silu = g[k] * s;
			du[k] = d[k] * silu;
			dg[k] = d[k] * u[k] * s * (1.f + g[k] * (1.f - s));
		}
		store8(dh + n * 2 * F + c, dg);
		store8(dh + n * 2 * F + F + c, du);
	}
}

/* ---- RoPE ---- */

/* One thread per (row, rotated head, pair i). inverse: rotate by -angle (backward). */
__global__ void
k_rope(bf16 *qkv, const float *cs, int N, int T, int H, int KV, int hd, int inverse)
{
	int half = hd / 2, nh = H + KV;
	int64_t total = (int64_t)N * nh * half;
	int64_t ld = (int64_t)(H + 2 * KV) * hd;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int k = (int)(i % half);
		int64_t rh = i / half;
		int h = (int)(rh % nh);
		int64_t n = rh / nh;
		int t = (int)(n % T);
		float c = cs[((int64_t)t * half + k) * 2], s = cs[((int64_t)t * half + k) * 2 + 1];
		if (inverse)
			s = -s;
		bf16 *p = qkv + n * ld + (int64_t)h * hd;
		float a = __bfloat162float(p[k]), b = __bfloat162float(p[k + half]);
		p[k] = __float2bfloat16_rn(a * c - b * s);
		p[k + half] = __float2bfloat16_rn(b * c + a * s);
	}
}

/* ---- softmax + cross-entropy ---- */

__device__ __forceinline__ void
lse_merge(float &m, float &s, float m2, float s2)
{
	float mm = fmaxf(m, m2);
	if (mm == -INFINITY)
		return;
	s = s * expf(m - mm) + s2 * expf(m2 - mm);
	m = mm;
}

#define XENT_THREADS 512

__global__ void __launch_bounds__(XENT_THREADS)
k_xent(bf16 *logits, float *loss, const int32_t *tgt, int V, int Vp)
{
	__shared__ float sm_m[XENT_THREADS / 32], sm_s[XENT_THREADS / 32];
	__shared__ float bm, bs;
	int row = blockIdx.x;
	bf16 *lr = logits + (int64_t)row * Vp;
	int t = tgt[row];
	if (t < 0) {
		uint4 z = {0, 0, 0, 0};
		for (int c = threadIdx.x * 8; c < Vp; c += XENT_THREADS * 8)
			*reinterpret_cast<uint4 *>(lr + c) = z;
		if (threadIdx.x == 0)
			loss[row] = 0.f;
		return;
	}
	float m = -INFINITY, s = 0.f;
	for (int c = threadIdx.x * 8; c < Vp; c += XENT_THREADS * 8) {
		float v[8];
		load8(lr + c, v);
		float mm = m;
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (c + k < V)
				mm = fmaxf(mm, v[k]);
		if (mm == -INFINITY)
			continue;
		float a = s * expf(m - mm);
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (c + k < V)
				a += expf(v[k] - mm);
		m = mm;
		s = a;
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
		lse_merge(m, s, m2, s2);
	}
	if (threadIdx.x % 32 == 0) {
		sm_m[threadIdx.x / 32] = m;
		sm_s[threadIdx.x / 32] = s;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		float M = sm_m[0], S = sm_s[0];
		for (int w = 1; w < XENT_THREADS / 32; w++)
			lse_merge(M, S, sm_m[w], sm_s[w]);
		bm = M;
		bs = S;
		loss[row] = logf(S) + M - __bfloat162float(lr[t]);
	}
	__syncthreads();
	float M = bm, inv = 1.f / bs;
	for (int c = threadIdx.x * 8; c < Vp; c += XENT_THREADS * 8) {
		float v[8];
		load8(lr + c, v);
#pragma unroll
		for (int k = 0; k < 8; k++) {
			int j = c + k;
			v[k] = j < V ? expf(v[k] - M) * inv - (j == t ? 1.f : 0.f) : 0.f;
		}
		store8(lr + c, v);
	}
}

int
grid_for(int64_t n, int threads)
{
	int64_t b = (n + threads - 1) / threads;
	if (b > 132 * 32)
		b = 132 * 32;
	return b < 1 ? 1 : (int)b;
}

int
check_width(const char *op, const char *what, int64_t v)
{
	if (v % 8 == 0 && v > 0)
		return 0;
	fprintf(stderr, "zinf ops: %s: %s = %lld must be a positive multiple of 8 (16-byte rows)\n",
		op, what, (long long)v);
	return -EINVAL;
}

__global__ void
k_add_f32(float *__restrict__ dst, const float *__restrict__ src, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		dst[i] += src[i];
}

} /* namespace */

#define LAUNCH_CHECK(what, st) ZINF_CUDA_CHECK_LAUNCH_RETURN(what, (cudaStream_t)(st))

extern "C" int
zinf_cast_f32_to_bf16(void *dst, const float *src, int64_t n, void *stream)
{
	if (n <= 0)
		return 0;
	k_cast_f32_bf16<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>((bf16 *)dst, src, n);
	LAUNCH_CHECK("cast", stream);
	return 0;
}

extern "C" int
zinf_add_f32_cuda(float *dst, const float *src, int64_t n, void *stream)
{
	if (n <= 0)
		return 0;
	k_add_f32<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(dst, src, n);
	LAUNCH_CHECK("add", stream);
	return 0;
}

extern "C" int
zinf_cast_bf16_to_f32(float *dst, const void *src, int64_t n, void *stream)
{
	if (n <= 0)
		return 0;
	k_cast_bf16_f32<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(dst, (const bf16 *)src,
									   n);
	LAUNCH_CHECK("cast", stream);
	return 0;
}

extern "C" int
zinf_cast_bf16_to_f32_2d(float *dst, const void *src, int rows, int cols, int ld, void *stream)
{
	int64_t n = (int64_t)rows * cols;
	if (n <= 0)
		return 0;
	k_cast_bf16_f32_2d<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(
		dst, (const bf16 *)src, rows, cols, ld);
	LAUNCH_CHECK("cast2d", stream);
	return 0;
}

extern "C" int
zinf_embed_fwd_cuda(void *out, const int32_t *tok, const void *wte, const void *wpe, int N, int T,
		    int C, void *stream)
{
	int rc = check_width("embed_fwd", "C", C);
	if (rc)
		return rc;
	k_embed_fwd<<<grid_for((int64_t)N * C / 8, 256), 256, 0, (cudaStream_t)stream>>>(
		(bf16 *)out, tok, (const bf16 *)wte, (const bf16 *)wpe, N, T, C);
	LAUNCH_CHECK("embed_fwd", stream);
	return 0;
}

extern "C" int
zinf_embed_plan(const int32_t *tok, int N, int V, int32_t *uniq, int32_t *start, int32_t *pos,
		int32_t *count)
{
	memset(count, 0, sizeof(*count) * (size_t)V);
	for (int n = 0; n < N; n++)
		count[tok[n]]++;
	int nu = 0, off = 0;
	for (int v = 0; v < V; v++) {
		if (!count[v])
			continue;
		uniq[nu] = v;
		start[nu] = off;
		int c = count[v];
		count[v] = off; /* becomes the fill cursor */
		off += c;
		nu++;
	}
	start[nu] = off;
	for (int n = 0; n < N; n++)
		pos[count[tok[n]]++] = n;
	return nu;
}

extern "C" int
zinf_embed_bwd_cuda(float *dwte, float *dwpe, const void *dout, const int32_t *uniq,
		    const int32_t *start, const int32_t *pos, int nuniq, int N, int T, int C,
		    void *stream)
{
	int rc = check_width("embed_bwd", "C", C);
	if (rc)
		return rc;
	cudaStream_t st = (cudaStream_t)stream;
	if (nuniq > 0) {
		int threads = C / 2 < 256 ? C / 2 : 256;
		k_embed_bwd_wte<<<nuniq, threads, 0, st>>>(dwte, (const bf16 *)dout, uniq, start,
							  pos, C);
		LAUNCH_CHECK("embed_bwd_wte", st);
	}
	if (dwpe) {
		k_embed_bwd_wpe<<<grid_for((int64_t)T * C, 256), 256, 0, st>>>(
			dwpe, (const bf16 *)dout, N, T, C);
		LAUNCH_CHECK("embed_bwd_wpe", st);
	}
	return 0;
}

extern "C" int
zinf_norm_fwd_cuda(void *out, void *res_out, float *mean, float *rstd, const void *res,
		   const void *delta, const void *w, const void *b, int N, int C, float eps,
		   int rms, void *stream)
{
	int rc = check_width("norm_fwd", "C", C);
	if (rc)
		return rc;
	const int rows_per_block = 8;
	k_norm_fwd<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block, 0,
		     (cudaStream_t)stream>>>((bf16 *)out, (bf16 *)res_out, rms ? NULL : mean, rstd,
					     (const bf16 *)res, (const bf16 *)delta,
					     (const bf16 *)w, rms ? NULL : (const bf16 *)b, N, C,
					     eps, rms);
	LAUNCH_CHECK("norm_fwd", stream);
	return 0;
}

extern "C" size_t
zinf_colsum_partials_bytes(int cols)
{
	return (size_t)COLSUM_CHUNKS * (size_t)cols * sizeof(float);
}

static int
colsum(float *out0, float *out1, const void *dy, const void *x, const float *mean,
       const float *rstd, int N, int C, int rms, float *partials, cudaStream_t st)
{
	int with_b = x && out1;
	int ncols = x ? (with_b ? 2 * C : C) : C;
	dim3 grid((C / 2 + 127) / 128, COLSUM_CHUNKS);
	k_colsum_partial<<<grid, 128, 0, st>>>(partials, (const bf16 *)dy, (const bf16 *)x, mean,
					       rstd, N, C, with_b, rms);
	LAUNCH_CHECK("colsum_partial", st);
	k_colsum_final<<<(ncols + 255) / 256, 256, 0, st>>>(out0, out1, partials, C, ncols);
	LAUNCH_CHECK("colsum_final", st);
	return 0;
}

extern "C" int
zinf_norm_bwd_cuda(void *dres, float *dw, float *db, const void *dout, const void *x,
		   const float *mean, const float *rstd, const void *w, int N, int C, int rms,
		   float *partials, void *stream)
{
	int rc = check_width("norm_bwd", "C", C);
	if (rc)
		return rc;
	cudaStream_t st = (cudaStream_t)stream;
	const int rows_per_block = 8;
	k_norm_bwd_dx<<<(N + rows_per_block - 1) / rows_per_block, 32 * rows_per_block, 0, st>>>(
		(bf16 *)dres, (const bf16 *)dout, (const bf16 *)x, mean, rstd, (const bf16 *)w, N,
		C, rms);
	LAUNCH_CHECK("norm_bwd_dx", st);
	return colsum(dw, rms ? NULL : db, dout, x, mean, rstd, N, C, rms, partials, st);
}

extern "C" int
zinf_bias_grad_cuda(float *db, const void *dy, int N, int C, float *partials, void *stream)
{
	int rc = check_width("bias_grad", "C", C);
	if (rc)
		return rc;
	return colsum(db, NULL, dy, NULL, NULL, NULL, N, C, 0, partials, (cudaStream_t)stream);
}

extern "C" int
zinf_gelu_fwd_cuda(void *out, const void *x, int64_t n, void *stream)
{
	int rc = check_width("gelu_fwd", "n", n);
	if (rc)
		return rc;
	k_gelu_fwd<<<grid_for(n / 8, 256), 256, 0, (cudaStream_t)stream>>>((bf16 *)out,
									  (const bf16 *)x, n / 8);
	LAUNCH_CHECK("gelu_fwd", stream);
	return 0;
}

extern "C" int
zinf_gelu_bwd_cuda(void *dx, const void *dout, const void *x, int64_t n, void *stream)
{
	int rc = check_width("gelu_bwd", "n", n);
	if (rc)
		return rc;
	k_gelu_bwd<<<grid_for(n / 8, 256), 256, 0, (cudaStream_t)stream>>>(
		(bf16 *)dx, (const bf16 *)dout, (const bf16 *)x, n / 8);
	LAUNCH_CHECK("gelu_bwd", stream);
	return 0;
}

extern "C" int
zinf_swiglu_fwd_cuda(void *out, const void *h, int N, int F, void *stream)
{
	int rc = check_width("swiglu_fwd", "F", F);
	if (rc)
		return rc;
	k_swiglu_fwd<<<grid_for((int64_t)N * F / 8, 256), 256, 0, (cudaStream_t)stream>>>(
		(bf16 *)out, (const bf16 *)h, N, F);
	LAUNCH_CHECK("swiglu_fwd", stream);
	return 0;
}

extern "C" int
zinf_swiglu_bwd_cuda(void *dh, const void *dout, const void *h, int N, int F, void *stream)
{
	int rc = check_width("swiglu_bwd", "F", F);
	if (rc)
		return rc;
	k_swiglu_bwd<<<grid_for((int64_t)N * F / 8, 256), 256, 0, (cudaStream_t)stream>>>(
		(bf16 *)dh, (const bf16 *)dout, (const bf16 *)h, N, F);
	LAUNCH_CHECK("swiglu_bwd", stream);
	return 0;
}

static int
rope(void *qkv, const float *cs, int B, int T, int H, int KV, int hd, int inverse, void *stream)
{
	int rc = check_width("rope", "head_dim", hd);
	if (rc)
		return rc;
	int64_t n = (int64_t)B * T * (H + KV) * (hd / 2);
	k_rope<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>((bf16 *)qkv, cs, B * T, T, H, KV,
								  hd, inverse);
	LAUNCH_CHECK("rope", stream);
	return 0;
}

extern "C" int
zinf_rope_fwd_cuda(void *qkv, const float *cos_sin, int B, int T, int H, int KV, int hd,
		   void *stream)
{
	return rope(qkv, cos_sin, B, T, H, KV, hd, 0, stream);
}

extern "C" int
zinf_rope_bwd_cuda(void *dqkv, const float *cos_sin, int B, int T, int H, int KV, int hd,
		   void *stream)
{
	return rope(dqkv, cos_sin, B, T, H, KV, hd, 1, stream);
}

extern "C" void
zinf_rope_table(float *out, int T, int hd, double theta, int llama3, double factor,
		double low_freq_factor, double high_freq_factor, int original_max_pos)
{
	int half = hd / 2;
	for (int i = 0; i < half; i++) {
		double inv = pow(theta, -2.0 * i / hd);
		if (llama3 && factor > 0) {
			double lo_wl = original_max_pos / low_freq_factor;
			double hi_wl = original_max_pos / high_freq_factor;
			double wl = 2.0 * M_PI / inv;
			if (wl > lo_wl) {
				inv = inv / factor;
			} else if (wl >= hi_wl) {
				double sm = (original_max_pos / wl - low_freq_factor) /
					    (high_freq_factor - low_freq_factor);
				inv = (1.0 - sm) * inv / factor + sm * inv;
			}
		}
		for (int t = 0; t < T; t++) {
			out[((size_t)t * half + i) * 2] = (float)cos(t * inv);
			out[((size_t)t * half + i) * 2 + 1] = (float)sin(t * inv);
		}
	}
}

extern "C" int
zinf_xent_fwd_bwd_cuda(void *logits, float *loss, const int32_t *tgt, int N, int V, int Vp,
		       void *stream)
{
	int rc = check_width("xent", "padded vocab", Vp);
	if (rc)
		return rc;
	if (V > Vp) {
		fprintf(stderr, "zinf ops: xent: vocab %d > padded vocab %d\n", V, Vp);
		return -EINVAL;
	}
	k_xent<<<N, XENT_THREADS, 0, (cudaStream_t)stream>>>((bf16 *)logits, loss, tgt, V, Vp);
	LAUNCH_CHECK("xent", stream);
	return 0;
}
