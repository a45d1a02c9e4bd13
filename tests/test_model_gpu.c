/* engine/model_gpu.c against the CPU oracle (engine/model_cpu.c) on the tiny presets.
 *
 * Both run from the same bf16-rounded weights (zinf_model_init_params, then rounded); the CPU
 * computes in fp32, the GPU with bf16 activations, so the checks are bf16-sized: loss within
 * 1e-2 relative, logits and every parameter tensor's gradient within 2e-2 relative L2 error.
 * Then exact properties of the GPU path itself: recompute on/off give bit-identical loss and
 * gradients, a second backward accumulates exactly (grads == 2x), the plain-kernel path
 * (ZINF_GPU_NO_EPILOGUE) matches the cuBLASLt GELU epilogue path, bad tokens are refused.
 * Exit 77 without a CUDA device. */
#include <cuda_runtime_api.h>
#include <math.h>

#include "engine/model.h"
#include "engine/model_cpu.h"
#include "engine/model_gpu.h"
#include "test_util.h"

static uint16_t
f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7f800000u) == 0x7f800000u)
		return (uint16_t)(u >> 16);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static float
bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static double
rel_l2(const float *a, const float *ref, int64_t n)
{
	double num = 0, den = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = (double)a[i] - ref[i];
		num += d * d;
		den += (double)ref[i] * ref[i];
	}
	if (den == 0)
		return num == 0 ? 0 : INFINITY;
	return sqrt(num / den);
}

typedef struct gpu_run {
	float loss;
	float *grads;  /* host copy, total_numel */
	float *logits; /* N*V */
} gpu_run;

/* Forward (+ logits) and backward on the GPU; backward_twice: a second backward on top. */
static int
run_gpu(const zinf_model_config *cfg, const zinf_model_layout *lay, const uint16_t *p16, int B,
	int T, bool recompute, const int32_t *tok, const int32_t *tgt, bool backward_twice,
	gpu_run *out)
{
	char err[512];
	zinf_gpu_model *m;
	zinf_gpu_model_opts o = {.B = B, .T = T, .recompute = recompute, .keep_logits = true};
	int rc = zinf_gpu_model_create(cfg, lay, &o, &m, err, sizeof(err));
	T_CHECK(rc == 0, "create %s: %s", cfg->name, err);
	if (rc)
		return rc;
	int64_t P = lay->total_numel, N = (int64_t)B * T;
	void *dp = NULL;
	float *dg = NULL;
	T_CHECK(cudaMalloc(&dp, 2 * P) == cudaSuccess, "cudaMalloc params");
	T_CHECK(cudaMalloc((void **)&dg, 4 * P) == cudaSuccess, "cudaMalloc grads");
	cudaMemcpy(dp, p16, 2 * P, cudaMemcpyHostToDevice);
	cudaMemset(dg, 0, 4 * P);
	out->grads = malloc(4 * P);
	out->logits = malloc(sizeof(float) * N * cfg->vocab_size);
	rc = zinf_gpu_forward(m, dp, tok, tgt);
	T_CHECK(rc == 0, "forward: %s", zinf_gpu_model_error(m));
	if (!rc)
		rc = zinf_gpu_loss(m, &out->loss);
	if (!rc)
		rc = zinf_gpu_logits(m, out->logits);
	if (!rc)
		rc = zinf_gpu_backward(m, dp, dg, 1.0f);
	if (!rc && backward_twice)
		rc = zinf_gpu_backward(m, dp, dg, 1.0f);
	T_CHECK(rc == 0, "gpu run: %s", zinf_gpu_model_error(m));
	cudaStreamSynchronize(zinf_gpu_model_stream(m));
	T_CHECK(cudaMemcpy(out->grads, dg, 4 * P, cudaMemcpyDeviceToHost) == cudaSuccess,
		"grads copy");
	if (!rc) { /* a token outside the vocabulary is refused, naming it */
		int32_t *bad = malloc(sizeof(int32_t) * N);
		memcpy(bad, tok, sizeof(int32_t) * N);
		bad[N - 1] = cfg->vocab_size;
		int r2 = zinf_gpu_forward(m, dp, bad, tgt);
		T_CHECK(r2 == -EINVAL && strstr(zinf_gpu_model_error(m), "tokens["),
			"bad token: rc %d msg '%s'", r2, zinf_gpu_model_error(m));
		free(bad);
	}
	zinf_gpu_model_destroy(m);
	cudaFree(dp);
	cudaFree(dg);
	return rc;
}

static void
free_run(gpu_run *r)
{
	free(r->grads);
	free(r->logits);
}

static void
check_model(const char *name, int B, int T)
{
	char err[512];
	zinf_model_config cfg;
	zinf_model_layout lay;
	T_CHECK(zinf_model_preset(name, &cfg, err, sizeof(err)) == 0, "%s", err);
	T_CHECK(zinf_model_layout_init(&cfg, &lay, err, sizeof(err)) == 0, "%s", err);
	int64_t P = lay.total_numel, N = (int64_t)B * T, V = cfg.vocab_size;
	float *p32 = malloc(4 * P);
	uint16_t *p16 = malloc(2 * P);
	zinf_model_init_params(&cfg, &lay, 1234, p32);
	for (int64_t i = 0; i < P; i++) {
		p16[i] = f32_to_bf16(p32[i]);
		p32[i] = bf16_to_f32(p16[i]);
	}
	int32_t *tok = malloc(sizeof(int32_t) * N), *tgt = malloc(sizeof(int32_t) * N);
	uint64_t s = 42;
	for (int64_t n = 0; n < N; n++)
		tok[n] = (int32_t)(t_rand(&s) % (uint64_t)V);
	for (int64_t n = 0; n < N; n++) /* next token, some positions ignored (HF's -100) */
		tgt[n] = (n % 7 == 3) ? -100 : (n + 1 < N ? tok[n + 1] : tok[0]);

	/* CPU oracle */
	zinf_cpu_model *cm;
	T_CHECK(zinf_cpu_model_create(&cfg, &lay, B, T, 0, &cm, err, sizeof(err)) == 0, "%s",
		err);
	float closs = 0, *clog = malloc(sizeof(float) * N * V), *cgrad = calloc((size_t)P, 4);
	T_CHECK(zinf_cpu_forward(cm, p32, tok, tgt, &closs, clog) == 0, "cpu forward: %s",
		zinf_cpu_model_error(cm));
	T_CHECK(zinf_cpu_backward(cm, p32, cgrad, 1.0f) == 0, "cpu backward: %s",
		zinf_cpu_model_error(cm));
	zinf_cpu_model_destroy(cm);

	gpu_run g = {0}, gr = {0}, g2 = {0};
	if (run_gpu(&cfg, &lay, p16, B, T, false, tok, tgt, false, &g) == 0) {
		double lrel = fabs(g.loss - closs) / fabs(closs);
		printf("%s B=%d T=%d: loss gpu %.6f cpu %.6f (rel %.2e)\n", name, B, T, g.loss,
		       closs, lrel);
		T_CHECK(lrel <= 1e-2, "%s loss gpu %f cpu %f", name, g.loss, closs);
		double le = rel_l2(g.logits, clog, N * V);
		printf("%s: logits rel L2 %.2e\n", name, le);
		T_CHECK(le <= 2e-2, "%s logits rel L2 %.3e", name, le);
		double worst = 0;
		const char *worst_name = "";
		for (int i = 0; i < lay.ntensors; i++) {
			const zinf_tensor_desc *t = &lay.tensors[i];
			double e = rel_l2(g.grads + t->offset, cgrad + t->offset, t->numel);
			T_CHECK(e <= 2e-2, "%s grad %s rel L2 %.3e", name, t->hf_name, e);
			if (e > worst) {
				worst = e;
				worst_name = t->hf_name;
			}
		}
		printf("%s: %d gradient tensors, worst rel L2 %.2e (%s)\n", name, lay.ntensors,
		       worst, worst_name);
	}
	/* recompute: bit-identical loss and gradients; a second backward adds exactly */
	if (run_gpu(&cfg, &lay, p16, B, T, true, tok, tgt, true, &gr) == 0 && g.grads) {
		T_CHECK(gr.loss == g.loss, "%s recompute loss %.9g vs %.9g", name, gr.loss, g.loss);
		int64_t diff = 0;
		for (int64_t i = 0; i < P; i++)
			diff += gr.grads[i] != 2.0f * g.grads[i];
		T_CHECK(diff == 0, "%s: recompute + double backward: %lld of %lld grads != 2x",
			name, (long long)diff, (long long)P);
		printf("%s: recompute on/off and 2x accumulation: %lld differing values\n", name,
		       (long long)diff);
	}
	/* plain kernels instead of the cuBLASLt bias/GELU epilogues */
	if (cfg.arch == ZINF_ARCH_GPT2) {
		setenv("ZINF_GPU_NO_EPILOGUE", "1", 1);
		if (run_gpu(&cfg, &lay, p16, B, T, false, tok, tgt, false, &g2) == 0 && g.grads) {
			double e = rel_l2(g2.grads, g.grads, P);
			printf("%s: epilogue vs plain kernels: loss %.6f vs %.6f, grads rel L2 %.2e\n",
			       name, g.loss, g2.loss, e);
			T_CHECK(fabs(g2.loss - g.loss) <= 1e-3 * fabs(g.loss), "%s plain loss %f",
				name, g2.loss);
			T_CHECK(e <= 1e-2, "%s plain-kernel grads rel L2 %.3e", name, e);
		}
		unsetenv("ZINF_GPU_NO_EPILOGUE");
	}
	free_run(&g);
	free_run(&gr);
	free_run(&g2);
	free(clog);
	free(cgrad);
	free(tok);
	free(tgt);
	free(p32);
	free(p16);
	zinf_model_layout_free(&lay);
}

int
main(void)
{
	int ndev = 0;
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
		printf("test_model_gpu: no CUDA device, skipped\n");
		return T_EXIT_SKIP;
	}
	check_model("gpt2-tiny", 2, 128);
	check_model("llama-tiny", 2, 128);
	check_model("gpt2-tiny", 1, 72); /* T not a multiple of the attention tiles */
	return t_result("test_model_gpu");
}
