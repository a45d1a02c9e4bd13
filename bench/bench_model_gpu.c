/* Standalone timing loop for engine/model_gpu.c (kept out of ctest; `zinf bench model` is the
 * user-facing one): bench_model_gpu [preset] [B] [T] [recompute 0|1] [iters].
 * Prints forward+backward time per step, tokens/s = B*T / step time, and model TFLOP/s from
 * zinf_model_flops_per_token (the recompute forward not counted). Weights from
 * zinf_model_init_params, random tokens. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/model.h"
#include "engine/model_gpu.h"

static uint16_t
bf16_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

int
main(int argc, char **argv)
{
	const char *preset = argc > 1 ? argv[1] : "gpt2-124m";
	int B = argc > 2 ? atoi(argv[2]) : 16, T = argc > 3 ? atoi(argv[3]) : 1024;
	int recompute = argc > 4 ? atoi(argv[4]) : 0, iters = argc > 5 ? atoi(argv[5]) : 10;
	char err[512];
	zinf_model_config cfg;
	zinf_model_layout lay;
	if (zinf_model_preset(preset, &cfg, err, sizeof(err)) ||
	    zinf_model_layout_init(&cfg, &lay, err, sizeof(err))) {
		fprintf(stderr, "bench_model_gpu: %s\n", err);
		return 1;
	}
	int64_t P = lay.total_numel, N = (int64_t)B * T;
	float *p32 = malloc(4 * P);
	uint16_t *p16 = malloc(2 * P);
	int32_t *tok = malloc(4 * N), *tgt = malloc(4 * N);
	if (!p32 || !p16 || !tok || !tgt)
		return 1;
	zinf_model_init_params(&cfg, &lay, 1, p32);
	for (int64_t i = 0; i < P; i++)
		p16[i] = bf16_of(p32[i]);
	uint64_t s = 88172645463325252ull;
	for (int64_t n = 0; n < N; n++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		tok[n] = (int32_t)(s % (uint64_t)cfg.vocab_size);
	}
	for (int64_t n = 0; n < N; n++)
		tgt[n] = tok[(n + 1) % N];
	void *dp;
	float *dg;
	if (cudaMalloc(&dp, 2 * P) || cudaMalloc((void **)&dg, 4 * P)) {
		fprintf(stderr, "bench_model_gpu: cudaMalloc of params/grads failed\n");
		return 1;
	}
	cudaMemcpy(dp, p16, 2 * P, cudaMemcpyHostToDevice);
	cudaMemset(dg, 0, 4 * P);
	zinf_gpu_model *m;
	zinf_gpu_model_opts o = {.B = B, .T = T, .recompute = recompute != 0};
	int rc = zinf_gpu_model_create(&cfg, &lay, &o, &m, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_model_gpu: %s\n", err);
		return 1;
	}
	cudaStream_t st = zinf_gpu_model_stream(m);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	float loss = 0, best = 1e30f, total = 0;
	struct timespec w0, w1;
	for (int it = 0; it < iters + 2; it++) {
		if (it == 2)
			clock_gettime(CLOCK_MONOTONIC, &w0);
		cudaEventRecord(e0, st);
		rc = zinf_gpu_forward(m, dp, tok, tgt);
		if (!rc)
			rc = zinf_gpu_backward(m, dp, dg, 1.0f);
		if (rc) {
			fprintf(stderr, "bench_model_gpu: %s\n", zinf_gpu_model_error(m));
			return 1;
		}
		cudaEventRecord(e1, st);
		zinf_gpu_loss(m, &loss);
		float ms;
		cudaEventElapsedTime(&ms, e0, e1);
		if (it >= 2) { /* the first two build the cuBLASLt plans */
			total += ms;
			if (ms < best)
				best = ms;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &w1);
	double wall = (w1.tv_sec - w0.tv_sec) * 1e3 + (w1.tv_nsec - w0.tv_nsec) / 1e6;
	struct cudaDeviceProp prop;
	cudaGetDeviceProperties(&prop, 0);
	double avg = total / iters;
	double fpt = zinf_model_flops_per_token(&cfg, T);
	printf("%s on %s: B=%d T=%d recompute=%d: fwd+bwd %.2f ms avg (%.2f best), %.0f tokens/s, "
	       "%.1f model TFLOP/s, loss %.4f, %.2f GiB activations; host wall %.2f ms/step\n",
	       preset, prop.name, B, T, recompute, avg, best, N / (avg / 1e3),
	       fpt * N / (avg / 1e3) / 1e12, loss, zinf_gpu_model_bytes(m) / 1073741824.0, wall / iters);
	zinf_gpu_model_destroy(m);
	return 0;
}
