/* cuBLASLt GEMMs (see kernels/include/kernels/gemm.h).
 *
 * cuBLASLt is column-major; a row-major [r, c] matrix is the column-major [c, r] one, so
 * Y[M,N] = X[M,K] W[N,K]^T is computed as Y^T (N x M) = op_T(W) (N x K) * X^T (K x M), and so
 * on for the two backward products. Every layout is tight (ld = rows). A small cache keyed by
 * (transposes, m, n, k, output type, epilogue) keeps the matmul descriptor, the four layouts
 * and the heuristic's first algorithm; per call only the bias/aux pointers are set. */
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/gemm.h"

#define GEMM_CACHE 64

enum { EPI_NONE, EPI_BIAS, EPI_GELU_AUX_BIAS, EPI_DGELU };

typedef struct gemm_plan {
	int used;
	int ta, tb, f32_out, epi;
	int64_t m, n, k;
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t la, lb, lc;
	cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct zinf_gemm {
	cublasLtHandle_t lt;
	void *ws;
	size_t ws_bytes;
	gemm_plan plan[GEMM_CACHE];
	int nplan;
};

static int
lt_fail(cublasStatus_t st, const char *call, const gemm_plan *p)
{
	fprintf(stderr,
		"zinf gemm: %s failed (%s: %s) for m=%lld n=%lld k=%lld ta=%d tb=%d epilogue=%d "
		"out=%s\n",
		call, cublasLtGetStatusName(st), cublasLtGetStatusString(st), (long long)p->m,
		(long long)p->n, (long long)p->k, p->ta, p->tb, p->epi,
		p->f32_out ? "fp32" : "bf16");
	return -EIO;
}

#define LT_TRY(call, p)                                                                      \
	do {                                                                                 \
		cublasStatus_t st_ = (call);                                                 \
		if (st_ != CUBLAS_STATUS_SUCCESS)                                            \
			return lt_fail(st_, #call, p);                                       \
	} while (0)

int
zinf_gemm_create(size_t workspace_bytes, zinf_gemm **out)
{
	zinf_gemm *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->ws_bytes = workspace_bytes ? workspace_bytes : (32u << 20);
	cublasStatus_t st = cublasLtCreate(&g->lt);
	if (st != CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "zinf gemm: cublasLtCreate failed: %s (is libcublasLt present?)\n",
			cublasLtGetStatusString(st));
		free(g);
		return -EIO;
	}
	cudaError_t ce = cudaMalloc(&g->ws, g->ws_bytes);
	if (ce != cudaSuccess) {
		fprintf(stderr, "zinf gemm: cudaMalloc of the %zu-byte workspace failed: %s\n",
			g->ws_bytes, cudaGetErrorString(ce));
		cudaGetLastError();
		cublasLtDestroy(g->lt);
		free(g);
		return -ENOMEM;
	}
	*out = g;
	return 0;
}

static void
plan_free(gemm_plan *p)
{
	if (p->desc)
		cublasLtMatmulDescDestroy(p->desc);
	if (p->la)
		cublasLtMatrixLayoutDestroy(p->la);
	if (p->lb)
		cublasLtMatrixLayoutDestroy(p->lb);
	if (p->lc)
		cublasLtMatrixLayoutDestroy(p->lc);
	p->desc = NULL;
	p->la = p->lb = p->lc = NULL;
	p->used = 0;
}

void
zinf_gemm_destroy(zinf_gemm *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->nplan; i++)
		plan_free(&g->plan[i]);
	cudaFree(g->ws);
	cublasLtDestroy(g->lt);
	free(g);
}

static int
plan_build(zinf_gemm *g, gemm_plan *p)
{
	cublasOperation_t ta = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t tb = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cudaDataType_t ct = p->f32_out ? CUDA_R_32F : CUDA_R_16BF;
	LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), p);
	LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
	       p);
	LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
	       p);
	cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
	if (p->epi == EPI_BIAS)
		epi = CUBLASLT_EPILOGUE_BIAS;
	else if (p->epi == EPI_GELU_AUX_BIAS)
		epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
	else if (p->epi == EPI_DGELU)
		epi = CUBLASLT_EPILOGUE_DGELU;
	LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
					      sizeof(epi)),
	       p);
	if (p->epi == EPI_GELU_AUX_BIAS || p->epi == EPI_DGELU) {
		int64_t ld = p->m;
		cudaDataType_t at = CUDA_R_16BF;
		LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
						      &ld, sizeof(ld)),
		       p);
		LT_TRY(cublasLtMatmulDescSetAttribute(p->desc,
						      CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE,
						      &at, sizeof(at)),
		       p);
	}
	if (p->epi == EPI_BIAS || p->epi == EPI_GELU_AUX_BIAS) {
		cudaDataType_t bt = CUDA_R_16BF;
		LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
						      &bt, sizeof(bt)),
		       p);
	}
	/* stored shapes: op(A) is m x k, op(B) is k x n */
	LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, p->ta ? p->k : p->m,
					  p->ta ? p->m : p->k, p->ta ? p->k : p->m),
	       p);
	LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, p->tb ? p->n : p->k,
					  p->tb ? p->k : p->n, p->tb ? p->n : p->k),
	       p);
	LT_TRY(cublasLtMatrixLayoutCreate(&p->lc, ct, p->m, p->n, p->m), p);

	cublasLtMatmulPreference_t pref;
	LT_TRY(cublasLtMatmulPreferenceCreate(&pref), p);
	uint64_t wsb = g->ws_bytes;
	uint32_t align = 16;
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
					     sizeof(wsb));
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
					     &align, sizeof(align));
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
					     &align, sizeof(align));
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
					     &align, sizeof(align));
	cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
					     &align, sizeof(align));
	cublasLtMatmulHeuristicResult_t res;
	int found = 0;
	cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->la, p->lb, p->lc,
							    p->lc, pref, 1, &res, &found);
	cublasLtMatmulPreferenceDestroy(pref);
	if (st != CUBLAS_STATUS_SUCCESS)
		return lt_fail(st, "cublasLtMatmulAlgoGetHeuristic", p);
	if (!found) {
		fprintf(stderr,
			"zinf gemm: no cuBLASLt algorithm for m=%lld n=%lld k=%lld epilogue=%d "
			"(check the shape is a multiple of 8 and the workspace size)\n",
			(long long)p->m, (long long)p->n, (long long)p->k, p->epi);
		return -EINVAL;
	}
	p->algo = res.algo;
	return 0;
}

static int
gemm_run(zinf_gemm *g, int ta, int tb, int64_t m, int64_t n, int64_t k, int f32_out, int epi,
	 float alpha, float beta, const void *A, const void *B, void *D, const void *bias,
	 const void *aux, void *stream)
{
	gemm_plan *p = NULL;
	for (int i = 0; i < g->nplan; i++) {
		gemm_plan *q = &g->plan[i];
		if (q->ta == ta && q->tb == tb && q->m == m && q->n == n && q->k == k &&
		    q->f32_out == f32_out && q->epi == epi) {
			p = q;
			break;
		}
	}
	if (!p) {
		if (g->nplan == GEMM_CACHE) { /* full: recycle the oldest slot */
			plan_free(&g->plan[0]);
			for (int i = 1; i < GEMM_CACHE; i++)
				g->plan[i - 1] = g->plan[i];
			g->nplan--;
		}
		p = &g->plan[g->nplan];
		*p = (gemm_plan){.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .f32_out = f32_out,
				 .epi = epi};
		int rc = plan_build(g, p);
		if (rc) {
			plan_free(p);
			return rc;
		}
		p->used = 1;
		g->nplan++;
	}
	if (bias)
		LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
						      &bias, sizeof(bias)),
		       p);
	if (aux)
		LT_TRY(cublasLtMatmulDescSetAttribute(p->desc,
						      CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
						      &aux, sizeof(aux)),
		       p);
	LT_TRY(cublasLtMatmul(g->lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, D, p->lc, D, p->lc,
			      &p->algo, g->ws, g->ws_bytes, (cudaStream_t)stream),
	       p);
	return 0;
}

static int
check_shape(const char *what, int M, int N, int K)
{
	if (M > 0 && N > 0 && K > 0 && N % 8 == 0 && K % 8 == 0)
		return 0;
	fprintf(stderr, "zinf gemm: %s: M=%d N=%d K=%d: need positive sizes, N and K multiples of 8\n",
		what, M, N, K);
	return -EINVAL;
}

int
zinf_gemm_fwd(zinf_gemm *g, void *Y, const void *X, const void *W, const void *bias,
	      void *aux_pre, int M, int N, int K, void *stream)
{
	int rc = check_shape("fwd", M, N, K);
	if (rc)
		return rc;
	if (aux_pre && !bias) {
		fprintf(stderr, "zinf gemm: fwd with a GELU aux output needs a bias\n");
		return -EINVAL;
	}
	int epi = aux_pre ? EPI_GELU_AUX_BIAS : bias ? EPI_BIAS : EPI_NONE;
	return gemm_run(g, 1, 0, N, M, K, 0, epi, 1.f, 0.f, W, X, Y, bias, aux_pre, stream);
}

int
zinf_gemm_bwd_data(zinf_gemm *g, void *dX, const void *dY, const void *W, const void *aux_pre,
		   float alpha, int M, int N, int K, void *stream)
{
	int rc = check_shape("bwd_data", M, N, K);
	if (rc)
		return rc;
	return gemm_run(g, 0, 0, K, M, N, 0, aux_pre ? EPI_DGELU : EPI_NONE, alpha, 0.f, W, dY, dX,
			NULL, aux_pre, stream);
}

int
zinf_gemm_bwd_weight(zinf_gemm *g, float *dW, const void *dY, const void *X, float alpha, int M,
		     int N, int K, void *stream)
{
	int rc = check_shape("bwd_weight", M, N, K);
	if (rc)
		return rc;
	return gemm_run(g, 0, 1, K, N, M, 1, EPI_NONE, alpha, 1.f, X, dY, dW, NULL, NULL, stream);
}
