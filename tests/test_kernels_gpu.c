/* CUDA backend of kernels/adam_cuda.h: every variant against the independent double reference
 * (test_kernels_ref.h) and against the CPU backend, odd sizes and misaligned chunks, more
 * chunks than one launch takes, deterministic norm, and the device-side skip on overflow.
 * Exits 77 (skipped) when no CUDA device is present. */
#include <cuda_runtime_api.h>

#include "kernels/adam_cuda.h"
#include "test_kernels_ref.h"

#define CK(stmt)                                                                             \
	do {                                                                                 \
		cudaError_t e_ = (stmt);                                                     \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, "FAIL %s at %s:%d: %s\n", #stmt, __FILE__, __LINE__,  \
				cudaGetErrorString(e_));                                     \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

typedef struct dev_bufs {
	float *p;
	void *m, *v, *g;
	uint16_t *p16;
} dev_bufs;

static void
dev_upload(const tk_case *c, dev_bufs *d)
{
	size_t ms = tk_size(c->cfg.moment_dtype), gs = tk_size(c->cfg.grad_dtype), n = c->total;
	CK(cudaMalloc((void **)&d->p, 4 * n));
	CK(cudaMalloc(&d->m, ms * n));
	CK(cudaMalloc(&d->v, ms * n));
	CK(cudaMalloc(&d->g, gs * n));
	CK(cudaMalloc((void **)&d->p16, 2 * n));
	CK(cudaMemcpy(d->p, c->p, 4 * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d->m, c->m, ms * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d->v, c->v, ms * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d->g, c->g, gs * n, cudaMemcpyHostToDevice));
	CK(cudaMemcpy(d->p16, c->p16, 2 * n, cudaMemcpyHostToDevice));
}

/* Reference computed, outputs reset, everything on the device, chunks with device pointers. */
static void
dev_setup(tk_case *c, dev_bufs *d, zinf_adam_chunk *ch)
{
	tk_reference(c);
	tk_reset_outputs(c);
	dev_upload(c, d);
	tk_chunks(c, d->p, d->m, d->v, d->g, d->p16, ch);
}

static void
dev_download(tk_case *c, const dev_bufs *d)
{
	size_t ms = tk_size(c->cfg.moment_dtype), n = c->total;
	CK(cudaDeviceSynchronize());
	CK(cudaMemcpy(c->p, d->p, 4 * n, cudaMemcpyDeviceToHost));
	CK(cudaMemcpy(c->m, d->m, ms * n, cudaMemcpyDeviceToHost));
	CK(cudaMemcpy(c->v, d->v, ms * n, cudaMemcpyDeviceToHost));
	CK(cudaMemcpy(c->p16, d->p16, 2 * n, cudaMemcpyDeviceToHost));
}

static void
dev_free(dev_bufs *d)
{
	CK(cudaFree(d->p));
	CK(cudaFree(d->m));
	CK(cudaFree(d->v));
	CK(cudaFree(d->g));
	CK(cudaFree(d->p16));
}

/* GPU and CPU results of the same step agree (they share the per-element math; FMA
 * contraction differs, so fp32 agrees to a few ulps and bf16 moments to one bf16 ulp). */
static int
agree_with_cpu(tk_case *c, const char *label)
{
	size_t ms = tk_size(c->cfg.moment_dtype), n = c->total;
	float *pg = tk_alloc(4 * n);
	void *mg = tk_alloc(ms * n), *vg = tk_alloc(ms * n);
	memcpy(pg, c->p, 4 * n);
	memcpy(mg, c->m, ms * n);
	memcpy(vg, c->v, ms * n);
	tk_reset_outputs(c);
	zinf_adam_chunk ch[TK_MAXC];
	tk_chunks(c, c->p, c->m, c->v, c->g, c->p16, ch);
	zinf_cpu_opts o = {.nthreads = 2};
	int fails = 0;
	if (zinf_adam_step_cpu(&c->cfg, ch, c->nchunks, c->mult, &o))
		fails++;
	/* Normwise: the weight change against the largest change, fp32 moments against the
	 * largest moment, bf16 moments within one bf16 ulp (plus a floor for cancellation). */
	zinf_dtype mt = c->cfg.moment_dtype;
	double dmax = 0, mmax = 0, vmax = 0;
	for (int64_t i = 0; i < (int64_t)n; i++) {
		double d = fabs((double)c->p[i] - c->p0[i]);
		dmax = d > dmax ? d : dmax;
		d = fabs(tk_get(mt, c->m, i));
		mmax = d > mmax ? d : mmax;
		d = fabs(tk_get(mt, c->v, i));
		vmax = d > vmax ? d : vmax;
	}
	double ep = 0, em = 0, ev = 0;
	for (int64_t i = 0; i < (int64_t)n; i++) {
		double a = fabs((double)pg[i] - c->p[i]) / dmax;
		ep = a > ep ? a : ep;
		double mc = tk_get(mt, c->m, i), vc = tk_get(mt, c->v, i);
		double mk = tk_get(mt, mg, i), vk = tk_get(mt, vg, i);
		if (mt == ZINF_DTYPE_FP32) {
			a = fabs(mk - mc) / mmax;
			em = a > em ? a : em;
			a = fabs(vk - vc) / vmax;
			ev = a > ev ? a : ev;
		} else {
			a = fabs(mk - mc) / (fabs(mc) * 0x1p-7 + mmax * 1e-6);
			em = a > em ? a : em;
			a = fabs(vk - vc) / (fabs(vc) * 0x1p-7 + vmax * 1e-6);
			ev = a > ev ? a : ev;
		}
	}
	double tol = mt == ZINF_DTYPE_FP32 ? 1e-5 : 1.0;
	if (!(ep <= 1e-4) || !(em <= tol) || !(ev <= tol)) {
		fprintf(stderr, "FAIL %s: GPU vs CPU: p change %.3g (tol 1e-4) m %.3g v %.3g "
				"(tol %g)\n", label, ep, em, ev, tol);
		fails++;
	}
	free(pg), free(mg), free(vg);
	return fails;
}

static int
test_step_matches_reference_and_cpu(void)
{
	int fails = 0, ncases = 0;
	for (int var = 0; var < TK_NVARIANTS; var++)
	for (int mis = 0; mis < 2; mis++) {
		zinf_adam_cfg cfg;
		int p16;
		float mult = tk_variant(var, &cfg, &p16);
		tk_case c;
		tk_case_init(&c, tk_sizes, TK_NSIZES, mis, &cfg, p16, mult);
		dev_bufs d;
		zinf_adam_chunk ch[TK_MAXC];
		dev_setup(&c, &d, ch);
		int rc = zinf_adam_step_cuda(&cfg, ch, c.nchunks, mult, NULL, 0);
		char label[64];
		snprintf(label, sizeof label, "gpu %s", mis ? "misaligned" : "aligned");
		if (rc) {
			fprintf(stderr, "FAIL %s: zinf_adam_step_cuda returned %d\n", label, rc);
			fails++;
		} else {
			dev_download(&c, &d);
			fails += tk_check(&c, label);
			fails += agree_with_cpu(&c, label);
		}
		ncases++;
		dev_free(&d);
		tk_case_free(&c);
	}
	printf("step_matches_reference_and_cpu: %d cases, %d failures\n", ncases, fails);
	return fails;
}

/* 70 chunks: three launches of ZINF_CUDA_CHUNKS_PER_LAUNCH. */
static int
test_many_chunks_span_launches(void)
{
	int64_t sizes[70];
	for (int i = 0; i < 70; i++)
		sizes[i] = tk_sizes[i % TK_NSIZES] % 5000 + i;
	zinf_adam_cfg cfg;
	zinf_adam_cfg_init(&cfg);
	cfg.step = 7;
	tk_case c;
	tk_case_init(&c, sizes, 70, 1, &cfg, 1, 1.0f);
	dev_bufs d;
	zinf_adam_chunk ch[TK_MAXC];
	dev_setup(&c, &d, ch);
	int fails = zinf_adam_step_cuda(&cfg, ch, 70, 1.0f, NULL, 0) != 0;
	dev_download(&c, &d);
	fails += tk_check(&c, "gpu 70 chunks");
	dev_free(&d);
	tk_case_free(&c);
	printf("many_chunks_span_launches: %d failures\n", fails);
	return fails;
}

static int
test_norm_deterministic_and_overflow_skips_step(void)
{
	int fails = 0;
	const zinf_dtype gts[] = {ZINF_DTYPE_FP32, ZINF_DTYPE_BF16, ZINF_DTYPE_FP16};
	zinf_grad_stats *ds;
	zinf_grad_scratch *scratch;
	CK(cudaMalloc((void **)&ds, sizeof *ds));
	CK(cudaMalloc((void **)&scratch, sizeof *scratch));
	for (int gi = 0; gi < 3; gi++) {
		zinf_adam_cfg cfg;
		zinf_adam_cfg_init(&cfg);
		cfg.grad_dtype = gts[gi];
		float ls = gts[gi] == ZINF_DTYPE_FP16 ? 1024.0f : 1.0f;
		int64_t sizes[40];
		for (int i = 0; i < 40; i++)
			sizes[i] = tk_sizes[i % TK_NSIZES];
		tk_case c;
		tk_case_init(&c, sizes, 40, gi & 1, &cfg, 0, 1.0f / ls);
		tk_reset_outputs(&c);
		dev_bufs d;
		dev_upload(&c, &d);
		zinf_adam_chunk ch[TK_MAXC];
		tk_chunks(&c, d.p, d.m, d.v, d.g, d.p16, ch);
		double ref = tk_ref_sumsq(&c), ref_norm = sqrt(ref) / ls;
		float max_norm = (float)(ref_norm * 0.3);
		zinf_grad_stats s1, s2;
		int rc = zinf_grad_stats_cuda(ch, 40, cfg.grad_dtype, ls, max_norm, ds, scratch, 0);
		CK(cudaMemcpy(&s1, ds, sizeof s1, cudaMemcpyDeviceToHost));
		rc |= zinf_grad_stats_cuda(ch, 40, cfg.grad_dtype, ls, max_norm, ds, scratch, 0);
		CK(cudaMemcpy(&s2, ds, sizeof s2, cudaMemcpyDeviceToHost));
		double ref_coef = max_norm / (ref_norm + 1e-6);
		if (rc || fabs(s1.sumsq - ref) > 1e-12 * ref || s1.found_inf ||
		    fabs(s1.clip_coef - ref_coef) > 1e-6 * ref_coef ||
		    fabs(s1.grad_mult - ref_coef / ls) > 1e-6 * ref_coef / ls) {
			fprintf(stderr, "FAIL gpu grad stats %s: rc %d sumsq %.17g ref %.17g coef %g ref "
					"%g found_inf %d\n", zinf_dtype_name(gts[gi]), rc, s1.sumsq, ref,
				s1.clip_coef, ref_coef, s1.found_inf);
			fails++;
		}
		if (memcmp(&s1.sumsq, &s2.sumsq, sizeof(double))) {
			fprintf(stderr, "FAIL gpu grad stats not deterministic: %.17g vs %.17g\n",
				s1.sumsq, s2.sumsq);
			fails++;
		}
		/* The step driven by the device stats: clipped and unscaled by grad_mult. */
		c.mult = s1.grad_mult;
		tk_reference(&c);
		if (zinf_adam_step_cuda(&cfg, ch, 40, 1.0f, ds, 0))
			fails++;
		dev_download(&c, &d);
		fails += tk_check(&c, "gpu step with device grad stats");
		/* Overflow: one inf (then NaN) gradient; the step must write nothing. */
		const double bads[] = {INFINITY, NAN};
		for (int b = 0; b < 2; b++) {
			int64_t at = c.off[20] + c.n[20] / 2;
			double keep = tk_get(cfg.grad_dtype, c.g, at);
			tk_put(cfg.grad_dtype, c.g, at, bads[b]);
			tk_reset_outputs(&c);
			size_t gs = tk_size(cfg.grad_dtype);
			CK(cudaMemcpy((char *)d.g + gs * at, (char *)c.g + gs * at, gs,
				      cudaMemcpyHostToDevice));
			CK(cudaMemcpy(d.p, c.p, 4 * c.total, cudaMemcpyHostToDevice));
			rc = zinf_grad_stats_cuda(ch, 40, cfg.grad_dtype, ls, max_norm, ds, scratch, 0);
			rc |= zinf_adam_step_cuda(&cfg, ch, 40, 1.0f, ds, 0);
			CK(cudaMemcpy(&s1, ds, sizeof s1, cudaMemcpyDeviceToHost));
			float *pk = tk_alloc(4 * c.total);
			CK(cudaMemcpy(pk, d.p, 4 * c.total, cudaMemcpyDeviceToHost));
			if (rc || s1.found_inf != 1 || memcmp(pk, c.p0, 4 * c.total)) {
				fprintf(stderr, "FAIL gpu overflow %s (%g): rc %d found_inf %d, weights "
						"%s\n", zinf_dtype_name(gts[gi]), bads[b], rc, s1.found_inf,
					memcmp(pk, c.p0, 4 * c.total) ? "CHANGED" : "unchanged");
				fails++;
			}
			free(pk);
			tk_put(cfg.grad_dtype, c.g, at, keep);
			CK(cudaMemcpy((char *)d.g + gs * at, (char *)c.g + gs * at, gs,
				      cudaMemcpyHostToDevice));
		}
		dev_free(&d);
		tk_case_free(&c);
	}
	CK(cudaFree(ds));
	CK(cudaFree(scratch));
	printf("norm_deterministic_and_overflow_skips_step: %d failures\n", fails);
	return fails;
}

int
main(void)
{
	int ndev = 0;
	cudaError_t e = cudaGetDeviceCount(&ndev);
	if (e != cudaSuccess || ndev == 0) {
		printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
		return 77;
	}
	struct cudaDeviceProp prop;
	CK(cudaGetDeviceProperties(&prop, 0));
	printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
	int fails = test_step_matches_reference_and_cpu();
	fails += test_many_chunks_span_launches();
	fails += test_norm_deterministic_and_overflow_skips_step();
	printf("%s\n", fails ? "FAILED" : "ok");
	return fails ? 1 : 0;
}
