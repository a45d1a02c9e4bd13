/* cuBLASLt GEMMs for the linear layers, in the row-major terms of nn.Linear: bf16 inputs, fp32
 * compute; bf16 outputs for activations, fp32 outputs accumulated with beta = 1 for weight
 * gradients. Matmul descriptors, layouts and the heuristic's algorithm are cached per shape
 * in the handle, so steady-state calls do no descriptor work. One handle per stream/thread.
 *
 * Shapes: X [M, K] activations (M = tokens), W [N, K] weight (nn.Linear [out, in]),
 * Y [M, N]. All pointers device, 16-byte aligned; K and N multiples of 8.
 * Returns 0, -EINVAL (bad shape) or -EIO (a cuBLASLt/CUDA call failed); the message goes to
 * stderr naming the call, the shape and the status. */
#ifndef ZINF_KERNELS_GEMM_H
#define ZINF_KERNELS_GEMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zinf_gemm zinf_gemm;

/* workspace_bytes 0: 32 MiB. */
int zinf_gemm_create(size_t workspace_bytes, zinf_gemm **out);
void zinf_gemm_destroy(zinf_gemm *g);

/* Y = X @ W^T (+ bias[N]); with aux_pre (not NULL, needs bias): aux_pre = X @ W^T + bias and
 * Y = gelu_tanh(aux_pre) (the CUBLASLT_EPILOGUE_GELU_AUX_BIAS epilogue). bias may be NULL. */
int zinf_gemm_fwd(zinf_gemm *g, void *Y, const void *X, const void *W, const void *bias,
		  void *aux_pre, int M, int N, int K, void *stream);
/* dX = alpha * dY @ W (bf16, overwritten). With aux_pre (the forward's pre-GELU values, [M, K]):
 * dX = (alpha * dY @ W) * gelu'(aux_pre) (CUBLASLT_EPILOGUE_DGELU). */
int zinf_gemm_bwd_data(zinf_gemm *g, void *dX, const void *dY, const void *W,
		       const void *aux_pre, float alpha, int M, int N, int K, void *stream);
/* dW (fp32 [N, K]) += alpha * dY^T @ X. */
int zinf_gemm_bwd_weight(zinf_gemm *g, float *dW, const void *dY, const void *X, float alpha,
			 int M, int N, int K, void *stream);

#ifdef __cplusplus
}
#endif

#endif
