/* Causal self-attention, flash-style, on tensor cores (mma.sync m16n8k16 bf16 -> fp32).
 *
 * Forward: one CTA of 4 warps per (64-query block, batch, query head). Each warp owns 16 query
 * rows; Q stays in registers, 64-key K/V tiles stream through shared memory (double-buffered
 * with cp.async), scores and P live only in registers, and the softmax is online in fp32 in the
 * exp2 domain. Key blocks past the diagonal are never visited; only the diagonal block is
 * masked. Writes O (bf16) and lse (fp32, natural log) per query row.
 *
 * Backward (FlashAttention-2 order): a small pass computes D = rowsum(dO * O) per row; then one
 * CTA per (64-key block, batch, kv head) keeps its K/V tile in shared memory and walks the
 * query heads of its GQA group and the query blocks at or after the diagonal, recomputing
 * P = exp(S - lse). Each warp owns 16 keys: dK and dV accumulate in its registers (no atomics;
 * the group's heads sum there), dS goes through shared memory so that each warp can form
 * 16 rows of dS * K and add them into an fp32 dQ workspace with atomics. A last pass scales
 * dQ and converts it to bf16 in the qkv layout.
 *
 * Shared-memory tiles are [rows][hd] bf16 with the 16-byte chunks of row r XOR-swizzled by
 * (r & 7), so ldmatrix reads and cp.async writes are free of bank conflicts. Rows at or past T
 * are zero-filled on load and never stored. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_check.h"
#include "kernels/attention.h"

#define ATT_THREADS 128
#define BM 64 /* query rows per tile */
#define BN 64 /* key rows per tile */
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef __nv_bfloat16 bf16;

namespace {

/* ---- PTX wrappers ------------------------------------------------------------------------ */

__device__ __forceinline__ unsigned
smem_u32(const void *p)
{
	return (unsigned)__cvta_generic_to_shared(p);
}

/* 16-byte global -> shared copy; src_bytes 0 zero-fills the destination. */
__device__ __forceinline__ void
cp_async16(void *dst, const void *src, int src_bytes)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)),
		     "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void
cp_async4(void *dst, const void *src, int src_bytes)
{
	asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)),
		     "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void
cp_async_commit()
{
	asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void
cp_async_wait()
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void
ldsm_x4(unsigned r[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}

__device__ __forceinline__ void
ldsm_x4_t(unsigned r[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}

/* d += a * b, a 16x16 (row), b 16x8 (col), d 16x8 fp32. */
__device__ __forceinline__ void
mma(float d[4], const unsigned a[4], unsigned b0, unsigned b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned
pack_bf16(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *reinterpret_cast<unsigned *>(&v);
}

/* Two adjacent n8 tiles: d0 += a * (bb[0], bb[1]), d1 += a * (bb[2], bb[3]). */
__device__ __forceinline__ void
mma2(float d0[4], float d1[4], const unsigned a[4], const unsigned bb[4])
{
	mma(d0, a, bb[0], bb[1]);
	mma(d1, a, bb[2], bb[3]);
}

/* C fragments of n8 tiles 2kc and 2kc+1 (fp32) -> the bf16 A fragment of k-chunk kc. */
__device__ __forceinline__ void
pack_a(unsigned a[4], const float (*c)[4], int kc)
{
	a[0] = pack_bf16(c[2 * kc][0], c[2 * kc][1]);
	a[1] = pack_bf16(c[2 * kc][2], c[2 * kc][3]);
	a[2] = pack_bf16(c[2 * kc + 1][0], c[2 * kc + 1][1]);
	a[3] = pack_bf16(c[2 * kc + 1][2], c[2 * kc + 1][3]);
}

template <int N>
__device__ __forceinline__ void
zero_acc(float (&c)[N][4])
{
#pragma unroll
	for (int i = 0; i < N; i++)
		c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
}

/* ---- swizzled shared tiles --------------------------------------------------------------- */

/* Element (row, col) of a [rows][W] tile; col's 16-byte chunk is XORed with row & 7. */
template <int W>
__device__ __forceinline__ bf16 *
tile_at(bf16 *t, int row, int col)
{
	return t + row * W + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

/* Loads rows r0..r0+63 of a [T][ld] head slice (hd columns at base) into a swizzled tile,
 * zero-filling rows >= T. */
template <int HD>
__device__ __forceinline__ void
load_tile(bf16 *t, const bf16 *base, long long ld, int r0, int T)
{
	constexpr int CPR = HD / 8; /* 16-byte chunks per row */
	for (int i = threadIdx.x; i < 64 * CPR; i += ATT_THREADS) {
		int r = i / CPR, c = i % CPR;
		int gr = r0 + r;
		bool ok = gr < T;
		const bf16 *src = base + (long long)(ok ? gr : 0) * ld + c * 8;
		cp_async16(t + r * HD + ((c ^ (r & 7)) << 3), src, ok ? 16 : 0);
	}
}

/* A fragment (16x16 at row0, col0) of a row-major swizzled tile. */
template <int W>
__device__ __forceinline__ void
frag_a(unsigned a[4], bf16 *t, int row0, int col0, int lane)
{
	ldsm_x4(a, tile_at<W>(t, row0 + (lane & 15), col0 + ((lane >> 4) << 3)));
}

/* B fragments for two adjacent n8 tiles (rows n0..n0+15 of the tile are the n index, cols
 * k0..k0+15 the k index): r[0..1] for rows n0..n0+7, r[2..3] for n0+8..n0+15. */
template <int W>
__device__ __forceinline__ void
frag_b_nk(unsigned r[4], bf16 *t, int n0, int k0, int lane)
{
	ldsm_x4(r, tile_at<W>(t, n0 + (lane & 7) + ((lane >> 4) << 3), k0 + (((lane >> 3) & 1) << 3)));
}

/* B fragments for two adjacent n8 tiles from a [k][n] tile (rows k0..k0+15, cols n0..n0+15),
 * transposed by ldmatrix: r[0..1] for cols n0..n0+7, r[2..3] for n0+8..n0+15. */
template <int W>
__device__ __forceinline__ void
frag_b_kn(unsigned r[4], bf16 *t, int k0, int n0, int lane)
{
	ldsm_x4_t(r, tile_at<W>(t, k0 + (lane & 15), n0 + ((lane >> 4) << 3)));
}

/* ---- forward ----------------------------------------------------------------------------- */

/* 3 CTAs an SM at hd 64 (132 registers); 2 at hd 128. */
template <int HD>
__global__ void __launch_bounds__(ATT_THREADS, HD == 64 ? 3 : 2)
attn_fwd_kernel(const bf16 *__restrict__ qkv, bf16 *__restrict__ out, float *__restrict__ lse,
		int T, int H, int KV, float sl2)
{
	extern __shared__ __align__(128) unsigned char smem[];
	bf16 *sQ = reinterpret_cast<bf16 *>(smem);
	bf16 *sK = sQ + BM * HD; /* 2 buffers */
	bf16 *sV = sK + 2 * BN * HD;

	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int g = lane >> 2, tq = lane & 3;
	const int nqb = (T + BM - 1) / BM;
	const int qb = nqb - 1 - blockIdx.x; /* longest rows first */
	const int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / KV);
	const long long ld = (long long)(H + 2 * KV) * HD;
	const bf16 *qbase = qkv + (long long)b * T * ld + (long long)h * HD;
	const bf16 *kbase = qkv + (long long)b * T * ld + (long long)(H + kvh) * HD;
	const bf16 *vbase = kbase + (long long)KV * HD;
	const int q0 = qb * BM;
	const int nkb = (q0 + BM - 1) / BN + 1; /* key blocks up to and including the diagonal */

	load_tile<HD>(sQ, qbase, ld, q0, T);
	load_tile<HD>(sK, kbase, ld, 0, T);
	load_tile<HD>(sV, vbase, ld, 0, T);
	cp_async_commit();

	unsigned qf[HD / 16][4];
	float o[HD / 8][4];
	float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
	zero_acc(o);

	for (int j = 0; j < nkb; j++) {
		const int buf = j & 1;
		if (j + 1 < nkb) {
			load_tile<HD>(sK + (buf ^ 1) * BN * HD, kbase, ld, (j + 1) * BN, T);
			load_tile<HD>(sV + (buf ^ 1) * BN * HD, vbase, ld, (j + 1) * BN, T);
			cp_async_commit();
			cp_async_wait<1>();
		} else {
			cp_async_wait<0>();
		}
		__syncthreads();
		if (j == 0) {
#pragma unroll
			for (int kc = 0; kc < HD / 16; kc++)
				frag_a<HD>(qf[kc], sQ, warp * 16, kc * 16, lane);
		}
		bf16 *k = sK + buf * BN * HD, *v = sV + buf * BN * HD;

		float s[BN / 8][4];
		zero_acc(s);
#pragma unroll
		for (int kc = 0; kc < HD / 16; kc++) {
#pragma unroll
			for (int np = 0; np < BN / 16; np++) {
				unsigned bb[4];
				frag_b_nk<HD>(bb, k, np * 16, kc * 16, lane);
				mma2(s[2 * np], s[2 * np + 1], qf[kc], bb);
			}
		}

		/* scale into the exp2 domain, mask the diagonal block, online softmax */
		const bool diag = (j + 1) * BN > q0;
		float mx[2] = {m[0], m[1]};
#pragma unroll
		for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float x = s[nt][e] * sl2;
				if (diag) {
					int key = j * BN + nt * 8 + 2 * tq + (e & 1);
					int row = q0 + warp * 16 + g + (e >> 1) * 8;
					if (key > row)
						x = -INFINITY;
				}
				s[nt][e] = x;
				mx[e >> 1] = fmaxf(mx[e >> 1], x);
			}
		}
		float alpha[2];
#pragma unroll
		for (int r = 0; r < 2; r++) {
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
			alpha[r] = exp2f(m[r] - mx[r]); /* m = -inf on the first block: 0 */
			m[r] = mx[r];
			l[r] *= alpha[r];
		}
#pragma unroll
		for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float p = exp2f(s[nt][e] - m[e >> 1]);
				s[nt][e] = p;
				l[e >> 1] += p;
			}
		}
#pragma unroll
		for (int dt = 0; dt < HD / 8; dt++) {
			o[dt][0] *= alpha[0], o[dt][1] *= alpha[0];
			o[dt][2] *= alpha[1], o[dt][3] *= alpha[1];
		}

		/* O += P V, P straight from the score registers */
#pragma unroll
		for (int kc = 0; kc < BN / 16; kc++) {
			unsigned pa[4];
			pack_a(pa, s, kc);
#pragma unroll
			for (int dp = 0; dp < HD / 16; dp++) {
				unsigned bb[4];
				frag_b_kn<HD>(bb, v, kc * 16, dp * 16, lane);
				mma2(o[2 * dp], o[2 * dp + 1], pa, bb);
			}
		}
		__syncthreads(); /* this buffer is refilled next iteration */
	}

	const long long ldo = (long long)H * HD;
#pragma unroll
	for (int r = 0; r < 2; r++) {
		l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
		l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
		const int row = q0 + warp * 16 + g + r * 8;
		if (row >= T)
			continue;
		const float inv = 1.f / l[r];
		bf16 *dst = out + ((long long)b * T + row) * ldo + (long long)h * HD + 2 * tq;
#pragma unroll
		for (int dt = 0; dt < HD / 8; dt++)
			*reinterpret_cast<unsigned *>(dst + dt * 8) =
				pack_bf16(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
		if (tq == 0)
			lse[((long long)b * H + h) * T + row] = (m[r] + log2f(l[r])) * LN2;
	}
}

/* ---- backward ---------------------------------------------------------------------------- */

/* D[b,h,t] = sum_d dO * O, one warp per (row, head). */
template <int HD>
__global__ void __launch_bounds__(256)
attn_bwd_dot_kernel(const bf16 *__restrict__ out, const bf16 *__restrict__ dout,
		    float *__restrict__ D, int B, int T, int H)
{
	const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	const int lane = threadIdx.x & 31;
	if (w >= (long long)B * T * H)
		return;
	const long long bt = w / H;
	const int h = (int)(w % H);
	const long long off = bt * H * HD + (long long)h * HD;
	float acc = 0.f;
#pragma unroll
	for (int d = lane * 2; d < HD; d += 64) {
		__nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162 *>(out + off + d);
		__nv_bfloat162 c = *reinterpret_cast<const __nv_bfloat162 *>(dout + off + d);
		float2 af = __bfloat1622float2(a), cf = __bfloat1622float2(c);
		acc += af.x * cf.x + af.y * cf.y;
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		acc += __shfl_xor_sync(0xffffffffu, acc, o);
	if (lane == 0) {
		const long long b = bt / T, t = bt % T;
		D[(b * H + h) * T + t] = acc;
	}
}

/* dq (fp32 [B*T][H*HD], unscaled) -> dqkv q slots, bf16, times scale. 4 values a thread. */
template <int HD>
__global__ void __launch_bounds__(256)
attn_bwd_dq_kernel(const float *__restrict__ dq, bf16 *__restrict__ dqkv, long long n4, int H,
		   int KV, float scale)
{
	const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n4)
		return;
	const long long e = i * 4, row = e / ((long long)H * HD), col = e % ((long long)H * HD);
	float4 x = reinterpret_cast<const float4 *>(dq)[i];
	uint2 v = make_uint2(pack_bf16(x.x * scale, x.y * scale), pack_bf16(x.z * scale, x.w * scale));
	*reinterpret_cast<uint2 *>(dqkv + row * (long long)(H + 2 * KV) * HD + col) = v;
}

/* hd 64: capped at 168 registers for 3 CTAs an SM (4 bytes spill; +3% on the H200 over 2 CTAs
 * at 221 registers). hd 128 needs ~255 registers: 1 CTA's worth of limit. */
template <int HD>
__global__ void __launch_bounds__(ATT_THREADS, HD == 64 ? 3 : 1)
attn_bwd_kernel(const bf16 *__restrict__ qkv, const bf16 *__restrict__ dout,
		const float *__restrict__ lse, const float *__restrict__ D, float *__restrict__ dq,
		bf16 *__restrict__ dqkv, int T, int H, int KV, float sl2, float scale)
{
	extern __shared__ __align__(128) unsigned char smem[];
	bf16 *sK = reinterpret_cast<bf16 *>(smem);
	bf16 *sV = sK + BN * HD;
	bf16 *sQ = sV + BN * HD;        /* 2 buffers */
	bf16 *sdO = sQ + 2 * BM * HD;   /* 2 buffers */
	bf16 *sdS = sdO + 2 * BM * HD;  /* [key][query], BN x BM */
	float *sL = reinterpret_cast<float *>(sdS + BN * BM); /* 2 x BM, lse * log2e */
	float *sD = sL + 2 * BM;                               /* 2 x BM */

	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int g = lane >> 2, tq = lane & 3;
	const int kb = blockIdx.x;
	const int b = blockIdx.y / KV, kvh = blockIdx.y % KV, G = H / KV;
	const int nqb = (T + BM - 1) / BM;
	const int k0 = kb * BN;
	const int qb_first = k0 / BM; /* first query block that sees these keys */
	const int nq = nqb - qb_first, nit = G * nq;
	const long long ld = (long long)(H + 2 * KV) * HD, ldo = (long long)H * HD;
	const bf16 *kbase = qkv + (long long)b * T * ld + (long long)(H + kvh) * HD;
	const bf16 *vbase = kbase + (long long)KV * HD;

	load_tile<HD>(sK, kbase, ld, k0, T);
	load_tile<HD>(sV, vbase, ld, k0, T);

	/* stage iteration it (head, query block) into buffer buf */
	auto stage = [&](int it, int buf) {
		const int h = kvh * G + it / nq, q0 = (qb_first + it % nq) * BM;
		load_tile<HD>(sQ + buf * BM * HD, qkv + (long long)b * T * ld + (long long)h * HD, ld,
			      q0, T);
		load_tile<HD>(sdO + buf * BM * HD, dout + (long long)b * T * ldo + (long long)h * HD,
			      ldo, q0, T);
		if (threadIdx.x < 2 * BM) {
			const int r = threadIdx.x & (BM - 1), q = q0 + r;
			const float *src = (threadIdx.x < BM ? lse : D) + ((long long)b * H + h) * T;
			float *dst = (threadIdx.x < BM ? sL : sD) + buf * BM + r;
			cp_async4(dst, src + (q < T ? q : 0), q < T ? 4 : 0);
		}
	};
	stage(0, 0);
	cp_async_commit();

	float dk[HD / 8][4], dv[HD / 8][4];
	zero_acc(dk);
	zero_acc(dv);

	for (int it = 0; it < nit; it++) {
		const int buf = it & 1;
		if (it + 1 < nit) {
			stage(it + 1, buf ^ 1);
			cp_async_commit();
			cp_async_wait<1>();
		} else {
			cp_async_wait<0>();
		}
		__syncthreads();
		const int h = kvh * G + it / nq, qb = qb_first + it % nq, q0 = qb * BM;
		bf16 *q = sQ + buf * BM * HD, *d_o = sdO + buf * BM * HD;
		const float *lrow = sL + buf * BM, *drow = sD + buf * BM;

		/* S^T (this warp's 16 keys x 64 queries) = K Q^T; dP^T = V dO^T */
		float s[BM / 8][4], dp[BM / 8][4];
		zero_acc(s);
		zero_acc(dp);
#pragma unroll
		for (int kc = 0; kc < HD / 16; kc++) {
			unsigned ka[4], va[4];
			frag_a<HD>(ka, sK, warp * 16, kc * 16, lane);
			frag_a<HD>(va, sV, warp * 16, kc * 16, lane);
#pragma unroll
			for (int np = 0; np < BM / 16; np++) {
				unsigned bb[4];
				frag_b_nk<HD>(bb, q, np * 16, kc * 16, lane);
				mma2(s[2 * np], s[2 * np + 1], ka, bb);
				frag_b_nk<HD>(bb, d_o, np * 16, kc * 16, lane);
				mma2(dp[2 * np], dp[2 * np + 1], va, bb);
			}
		}

		/* P^T = exp(S - lse), masked; dS^T = P^T (dP^T - D) */
		const bool edge = qb == qb_first || q0 + BM > T;
#pragma unroll
		for (int nt = 0; nt < BM / 8; nt++) {
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int qc = nt * 8 + 2 * tq + (e & 1);
				float p = exp2f(fmaf(s[nt][e], sl2, -lrow[qc] * LOG2E)); /* lse is natural */
				if (edge) {
					const int key = k0 + warp * 16 + g + (e >> 1) * 8;
					if (key > q0 + qc || q0 + qc >= T)
						p = 0.f;
				}
				s[nt][e] = p;
				dp[nt][e] = p * (dp[nt][e] - drow[qc]);
			}
		}

		/* dV += P^T dO; dK += dS^T Q; dS^T to shared for dQ */
#pragma unroll
		for (int kc = 0; kc < BM / 16; kc++) {
			unsigned pa[4];
			pack_a(pa, s, kc);
			unsigned da[4];
			pack_a(da, dp, kc);
			const int kr = warp * 16 + g;
			*reinterpret_cast<unsigned *>(tile_at<BM>(sdS, kr, kc * 16 + 2 * tq)) = da[0];
			*reinterpret_cast<unsigned *>(tile_at<BM>(sdS, kr + 8, kc * 16 + 2 * tq)) = da[1];
			*reinterpret_cast<unsigned *>(tile_at<BM>(sdS, kr, kc * 16 + 8 + 2 * tq)) = da[2];
			*reinterpret_cast<unsigned *>(tile_at<BM>(sdS, kr + 8, kc * 16 + 8 + 2 * tq)) =
				da[3];
#pragma unroll
			for (int dpi = 0; dpi < HD / 16; dpi++) {
				unsigned bb[4];
				frag_b_kn<HD>(bb, d_o, kc * 16, dpi * 16, lane);
				mma2(dv[2 * dpi], dv[2 * dpi + 1], pa, bb);
				frag_b_kn<HD>(bb, q, kc * 16, dpi * 16, lane);
				mma2(dk[2 * dpi], dk[2 * dpi + 1], da, bb);
			}
		}
		__syncthreads();

		/* dQ rows warp*16.. (+)= dS K, over this block's 64 keys, 64 columns at a time */
		float *dqrow = dq + ((long long)b * T + q0 + warp * 16) * ldo + (long long)h * HD;
#pragma unroll
		for (int dh = 0; dh < HD / 64; dh++) {
			float acc[8][4];
			zero_acc(acc);
#pragma unroll
			for (int kc = 0; kc < BN / 16; kc++) {
				unsigned a[4];
				/* A = dS (queries x keys) read transposed from dS^T */
				ldsm_x4_t(a, tile_at<BM>(sdS, kc * 16 + (lane & 7) + ((lane >> 4) << 3),
							 warp * 16 + (((lane >> 3) & 1) << 3)));
#pragma unroll
				for (int dpi = 0; dpi < 4; dpi++) {
					unsigned bb[4];
					frag_b_kn<HD>(bb, sK, kc * 16, dh * 64 + dpi * 16, lane);
					mma2(acc[2 * dpi], acc[2 * dpi + 1], a, bb);
				}
			}
#pragma unroll
			for (int r = 0; r < 2; r++) {
				if (q0 + warp * 16 + g + r * 8 >= T)
					continue;
				float *dst = dqrow + (long long)(g + r * 8) * ldo + dh * 64 + 2 * tq;
#pragma unroll
				for (int nt = 0; nt < 8; nt++) /* one vector reduction (sm_90) */
					atomicAdd(reinterpret_cast<float2 *>(dst + nt * 8),
						  make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]));
			}
		}
		__syncthreads(); /* buffers and dS are reused */
	}

	/* dK (scaled), dV for this warp's 16 keys */
#pragma unroll
	for (int r = 0; r < 2; r++) {
		const int key = k0 + warp * 16 + g + r * 8;
		if (key >= T)
			continue;
		bf16 *dkp = dqkv + ((long long)b * T + key) * ld + (long long)(H + kvh) * HD + 2 * tq;
		bf16 *dvp = dkp + (long long)KV * HD;
#pragma unroll
		for (int dt = 0; dt < HD / 8; dt++) {
			*reinterpret_cast<unsigned *>(dkp + dt * 8) =
				pack_bf16(dk[dt][2 * r] * scale, dk[dt][2 * r + 1] * scale);
			*reinterpret_cast<unsigned *>(dvp + dt * 8) =
				pack_bf16(dv[dt][2 * r], dv[dt][2 * r + 1]);
		}
	}
}

/* ---- host side --------------------------------------------------------------------------- */

int
check_shape(const char *fn, zinf_attn_shape s)
{
	if (s.hd != 64 && s.hd != 128) {
		fprintf(stderr, "%s: head_dim %d is not supported (64 or 128)\n", fn, s.hd);
		return -EINVAL;
	}
	if (s.B <= 0 || s.T <= 0 || s.H <= 0 || s.KV <= 0 || s.H % s.KV) {
		fprintf(stderr,
			"%s: bad shape B=%d T=%d H=%d KV=%d (all > 0, H a multiple of KV)\n", fn,
			s.B, s.T, s.H, s.KV);
		return -EINVAL;
	}
	if ((long long)s.B * s.H > 65535) {
		fprintf(stderr, "%s: B*H = %lld exceeds the grid limit 65535; split the batch\n", fn,
			(long long)s.B * s.H);
		return -EINVAL;
	}
	return 0;
}

int
check_align(const char *fn, const char *what, const void *p)
{
	if ((uintptr_t)p % 16) {
		fprintf(stderr, "%s: %s pointer %p is not 16-byte aligned\n", fn, what, p);
		return -EINVAL;
	}
	return 0;
}

template <int HD>
size_t
fwd_smem()
{
	return (size_t)(BM + 4 * BN) * HD * sizeof(bf16);
}

template <int HD>
size_t
bwd_smem()
{
	return (size_t)(2 * BN + 4 * BM) * HD * sizeof(bf16) + BN * BM * sizeof(bf16) +
	       4 * BM * sizeof(float);
}

template <int HD>
int
fwd_launch(const void *qkv, void *out, float *lse, zinf_attn_shape s, float scale,
	   cudaStream_t st)
{
	const size_t sm = fwd_smem<HD>();
	ZINF_CUDA_CHECK_RETURN(cudaFuncSetAttribute(
		attn_fwd_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
	dim3 grid((s.T + BM - 1) / BM, s.B * s.H);
	attn_fwd_kernel<HD><<<grid, ATT_THREADS, sm, st>>>(
		(const bf16 *)qkv, (bf16 *)out, lse, s.T, s.H, s.KV, scale * LOG2E);
	ZINF_CUDA_CHECK_LAUNCH_RETURN("attn_fwd", st);
	return 0;
}

template <int HD>
int
bwd_launch(const void *qkv, const void *out, const void *dout, const float *lse, void *dqkv,
	   void *ws, zinf_attn_shape s, float scale, cudaStream_t st)
{
	const long long rows = (long long)s.B * s.T;
	float *dq = (float *)ws;
	float *D = dq + rows * s.H * HD;
	ZINF_CUDA_CHECK_RETURN(cudaMemsetAsync(dq, 0, sizeof(float) * rows * s.H * HD, st));
	const long long nw = rows * s.H;
	attn_bwd_dot_kernel<HD><<<(unsigned)((nw + 7) / 8), 256, 0, st>>>(
		(const bf16 *)out, (const bf16 *)dout, D, s.B, s.T, s.H);
	ZINF_CUDA_CHECK_LAUNCH_RETURN("attn_bwd_dot", st);

	const size_t sm = bwd_smem<HD>();
	ZINF_CUDA_CHECK_RETURN(cudaFuncSetAttribute(
		attn_bwd_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
	dim3 grid((s.T + BN - 1) / BN, s.B * s.KV);
	attn_bwd_kernel<HD><<<grid, ATT_THREADS, sm, st>>>(
		(const bf16 *)qkv, (const bf16 *)dout, lse, D, dq, (bf16 *)dqkv, s.T, s.H, s.KV,
		scale * LOG2E, scale);
	ZINF_CUDA_CHECK_LAUNCH_RETURN("attn_bwd", st);

	const long long n4 = rows * s.H * HD / 4;
	attn_bwd_dq_kernel<HD><<<(unsigned)((n4 + 255) / 256), 256, 0, st>>>(
		dq, (bf16 *)dqkv, n4, s.H, s.KV, scale);
	ZINF_CUDA_CHECK_LAUNCH_RETURN("attn_bwd_dq", st);
	return 0;
}

} /* namespace */

extern "C" int
zinf_attn_fwd_bf16(const void *qkv, void *out, float *lse, zinf_attn_shape s, float scale,
		   void *stream)
{
	static const char fn[] = "zinf_attn_fwd_bf16";
	int rc = check_shape(fn, s);
	if (!rc)
		rc = check_align(fn, "qkv", qkv);
	if (!rc)
		rc = check_align(fn, "out", out);
	if (rc)
		return rc;
	cudaStream_t st = (cudaStream_t)stream;
	return s.hd == 64 ? fwd_launch<64>(qkv, out, lse, s, scale, st)
			  : fwd_launch<128>(qkv, out, lse, s, scale, st);
}

extern "C" size_t
zinf_attn_bwd_workspace_bytes(zinf_attn_shape s)
{
	const size_t rows = (size_t)s.B * s.T;
	return sizeof(float) * rows * s.H * s.hd + sizeof(float) * rows * s.H;
}

extern "C" int
zinf_attn_bwd_bf16(const void *qkv, const void *out, const void *dout, const float *lse,
		   void *dqkv, void *workspace, zinf_attn_shape s, float scale, void *stream)
{
	static const char fn[] = "zinf_attn_bwd_bf16";
	int rc = check_shape(fn, s);
	if (!rc)
		rc = check_align(fn, "qkv", qkv);
	if (!rc)
		rc = check_align(fn, "dout", dout);
	if (!rc)
		rc = check_align(fn, "dqkv", dqkv);
	if (!rc)
		rc = check_align(fn, "workspace", workspace);
	if (rc)
		return rc;
	cudaStream_t st = (cudaStream_t)stream;
	return s.hd == 64 ? bwd_launch<64>(qkv, out, dout, lse, dqkv, workspace, s, scale, st)
			  : bwd_launch<128>(qkv, out, dout, lse, dqkv, workspace, s, scale, st);
}
