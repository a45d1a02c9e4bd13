/* Timing tool for kernels/attention.h (not a ctest): forward and backward of causal attention at
 * a given shape, reported as TFLOP/s with the causal FLOP count fwd = 4*B*H*T^2*hd/2 and
 * bwd = 2.5 x fwd. Usage: bench_attention [B T H KV hd [iters]] (default GPT-2 124M:
 * 32 1024 12 12 64). Inputs are random bf16 in [-1, 1). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/attention.h"

#define CK(stmt)                                                                             \
	do {                                                                                 \
		cudaError_t e_ = (stmt);                                                     \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, "bench_attention: %s failed: %s\n", #stmt,           \
				cudaGetErrorString(e_));                                     \
			return 1;                                                            \
		}                                                                            \
	} while (0)

__global__ void
fill_kernel(__nv_bfloat16 *p, size_t n, unsigned seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		unsigned x = (unsigned)i * 2654435761u ^ seed;
		x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
		p[i] = __float2bfloat16((float)(x >> 8) / (float)(1 << 24) * 2.f - 1.f);
	}
}

int
main(int argc, char **argv)
{
	zinf_attn_shape s = {32, 1024, 12, 12, 64};
	int iters = 20;
	if (argc >= 6) {
		s.B = atoi(argv[1]), s.T = atoi(argv[2]), s.H = atoi(argv[3]);
		s.KV = atoi(argv[4]), s.hd = atoi(argv[5]);
	}
	if (argc >= 7)
		iters = atoi(argv[6]);
	const size_t rows = (size_t)s.B * s.T, ld = (size_t)(s.H + 2 * s.KV) * s.hd;
	const size_t ldo = (size_t)s.H * s.hd;
	void *qkv, *out, *dout, *dqkv, *ws;
	float *lse;
	CK(cudaMalloc(&qkv, 2 * rows * ld));
	CK(cudaMalloc(&dqkv, 2 * rows * ld));
	CK(cudaMalloc(&out, 2 * rows * ldo));
	CK(cudaMalloc(&dout, 2 * rows * ldo));
	CK(cudaMalloc((void **)&lse, 4 * rows * s.H));
	CK(cudaMalloc(&ws, zinf_attn_bwd_workspace_bytes(s)));
	fill_kernel<<<1024, 256>>>((__nv_bfloat16 *)qkv, rows * ld, 1);
	fill_kernel<<<1024, 256>>>((__nv_bfloat16 *)dout, rows * ldo, 2);
	CK(cudaDeviceSynchronize());
	const float scale = 1.f / sqrtf((float)s.hd);
	cudaEvent_t e0, e1, e2;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	CK(cudaEventCreate(&e2));
	for (int i = 0; i < 3; i++) /* warm-up */
		if (zinf_attn_fwd_bf16(qkv, out, lse, s, scale, NULL) ||
		    zinf_attn_bwd_bf16(qkv, out, dout, lse, dqkv, ws, s, scale, NULL))
			return 1;
	CK(cudaEventRecord(e0));
	for (int i = 0; i < iters; i++)
		zinf_attn_fwd_bf16(qkv, out, lse, s, scale, NULL);
	CK(cudaEventRecord(e1));
	for (int i = 0; i < iters; i++)
		zinf_attn_bwd_bf16(qkv, out, dout, lse, dqkv, ws, s, scale, NULL);
	CK(cudaEventRecord(e2));
	CK(cudaEventSynchronize(e2));
	float tf, tb;
	CK(cudaEventElapsedTime(&tf, e0, e1));
	CK(cudaEventElapsedTime(&tb, e1, e2));
	tf /= iters, tb /= iters;
	const double fl = 4.0 * s.B * s.H * (double)s.T * s.T * s.hd / 2;
	cudaDeviceProp prop;
	CK(cudaGetDeviceProperties(&prop, 0));
	printf("%s B=%d T=%d H=%d KV=%d hd=%d: fwd %.3f ms %.1f TFLOP/s, bwd %.3f ms %.1f "
	       "TFLOP/s\n",
	       prop.name, s.B, s.T, s.H, s.KV, s.hd, tf, fl / tf / 1e9, tb, 2.5 * fl / tb / 1e9);
	return 0;
}
