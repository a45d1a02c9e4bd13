/* CPU forward/backward (engine/model_cpu.c) and its ops (kernels/ops_cpu.c).
 *
 *   ops: each forward against a plain double-precision reference written here; each backward
 *        against central finite differences of sum(out * R) (R random), the ops' norms,
 *        softmax and objective sums in double; rope's inverse; llama3 frequency bands.
 *   model: finite-difference gradient checks of the whole loss on tiny GPT-2 and LLaMA
 *        configs (GQA, tied and untied, llama3 rope, head_dim != d_model / n_head, T <
 *        max_seq, ignored targets), the largest-gradient entry and random entries of every
 *        tensor; backward accumulates (twice = 2x); padding rows untouched; bitwise the same
 *        results for 1, 2 and 5 threads; -EINVAL for out-of-range ids and bad shapes.
 *   fixtures: loss, logits and every gradient against PyTorch/HF (tests/fixtures/models/),
 *        relative error <= 1e-4.
 *
 * Finite differences run on the fp32 model, so the tolerance is set by fp32 rounding of the
 * loss (~1e-6 absolute) over the step: breaking any gradient by a factor (tried: dropping
 * the rope inverse, the GELU cubic term, a norm's mean term) fails by orders of magnitude. */
#include <math.h>

#include "engine/model_cpu.h"
#include "engine/safetensors.h"
#include "kernels/ops_cpu.h"
#include "test_util.h"

#ifndef ZINF_SOURCE_DIR
#define ZINF_SOURCE_DIR "."
#endif

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static float
urand(void) /* [-1, 1) */
{
	return (float)((t_rand(&rng) >> 40) * (2.0 / (1 << 24)) - 1.0);
}

static float *
rnd(int64_t n, float scale, float offset)
{
	float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	if (!p)
		abort();
	for (int64_t i = 0; i < n; i++)
		p[i] = offset + scale * urand();
	return p;
}

static float *
zeros(int64_t n)
{
	float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
	if (!p)
		abort();
	return p;
}

/* ---- finite differences ------------------------------------------------------------------ */

typedef double (*objective_fn)(void *ctx);

/* Compares g[i] to the central difference of f in x[i] for every i < n. Fails when
 * |fd - g| > tol * (|g| + |fd|)/2 + atol. Returns the number of failures. */
static int
fd_check(const char *what, float *x, const float *g, int64_t n, objective_fn f, void *ctx,
	 float h, double tol, double atol)
{
	int fails = 0;
	double worst = 0;
	for (int64_t i = 0; i < n; i++) {
		float x0 = x[i];
		x[i] = x0 + h;
		double fp = f(ctx);
		x[i] = x0 - h;
		double fm = f(ctx);
		x[i] = x0;
		double fd = (fp - fm) / (2.0 * h);
		double err = fabs(fd - g[i]), lim = tol * (fabs(fd) + fabs(g[i])) / 2 + atol;
		if (err / lim > worst)
			worst = err / lim;
		if (err > lim) {
			if (fails < 5)
				fprintf(stderr, "%s[%lld]: analytic %.7g, finite difference %.7g\n",
					what, (long long)i, g[i], fd);
			fails++;
		}
	}
	T_CHECK(fails == 0, "%s: %d of %lld gradients off (worst error/limit %.3g)", what, fails,
		(long long)n, worst);
	return fails;
}

static double
dot_d(const float *a, const float *r, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)a[i] * r[i];
	return s;
}

static int
close_to(const char *what, const float *got, const double *want, int64_t n, double tol)
{
	int bad = 0;
	for (int64_t i = 0; i < n; i++)
		if (fabs(got[i] - want[i]) > tol * (1.0 + fabs(want[i]))) {
			if (bad < 5)
				fprintf(stderr, "%s[%lld]: got %.8g, want %.8g\n", what, (long long)i,
					got[i], want[i]);
			bad++;
		}
	T_CHECK(bad == 0, "%s: %d of %lld values off", what, bad, (long long)n);
	return bad;
}

/* ---- ops: norms -------------------------------------------------------------------------- */

struct norm_t {
	zinf_pool *pool;
	int N, C, rms;
	float *x, *w, *b, *out, *mean, *rstd, *r;
};

static double
norm_obj(void *arg)
{
	struct norm_t *t = arg;
	if (t->rms)
		zinf_op_rmsnorm_fwd(t->pool, t->out, t->rstd, t->x, t->w, t->N, t->C, 1e-5f);
	else
		zinf_op_layernorm_fwd(t->pool, t->out, t->mean, t->rstd, t->x, t->w, t->b, t->N,
				      t->C, 1e-5f);
	return dot_d(t->out, t->r, (int64_t)t->N * t->C);
}

static void
test_norms(zinf_pool *pool)
{
	for (int rms = 0; rms < 2; rms++) {
		struct norm_t t = {.pool = pool, .N = 5, .C = 37, .rms = rms};
		int64_t n = (int64_t)t.N * t.C;
		t.x = rnd(n, 2.0f, 0.3f);
		t.w = rnd(t.C, 0.5f, 1.0f);
		t.b = rnd(t.C, 0.5f, 0.0f);
		t.out = zeros(n);
		t.mean = zeros(t.N);
		t.rstd = zeros(t.N);
		t.r = rnd(n, 1.0f, 0.0f);
		norm_obj(&t);
		double *want = calloc((size_t)n, sizeof(double));
		for (int i = 0; i < t.N; i++) {
			double mu = 0, var = 0;
			for (int c = 0; c < t.C; c++)
				mu += t.x[i * t.C + c] / (double)t.C;
			if (rms)
				mu = 0;
			for (int c = 0; c < t.C; c++)
				var += pow(t.x[i * t.C + c] - mu, 2) / t.C;
			for (int c = 0; c < t.C; c++)
				want[i * t.C + c] = (t.x[i * t.C + c] - mu) / sqrt(var + 1e-5) * t.w[c] +
						    (rms ? 0 : t.b[c]);
		}
		close_to(rms ? "rmsnorm fwd" : "layernorm fwd", t.out, want, n, 2e-6);
		free(want);

		/* dx accumulates: start from 1 and subtract it. */
		float *dx = rnd(n, 0, 1.0f), *dw = zeros(t.C), *db = zeros(t.C);
		if (rms)
			zinf_op_rmsnorm_bwd(pool, dx, dw, t.r, t.x, t.rstd, t.w, t.N, t.C);
		else
			zinf_op_layernorm_bwd(pool, dx, dw, db, t.r, t.x, t.mean, t.rstd, t.w, t.N,
					      t.C);
		for (int64_t i = 0; i < n; i++)
			dx[i] -= 1.0f;
		fd_check(rms ? "rmsnorm dx" : "layernorm dx", t.x, dx, n, norm_obj, &t, 1e-2f, 2e-3,
			 1e-4);
		fd_check(rms ? "rmsnorm dw" : "layernorm dw", t.w, dw, t.C, norm_obj, &t, 1e-2f, 2e-3,
			 1e-4);
		if (!rms)
			fd_check("layernorm db", t.b, db, t.C, norm_obj, &t, 1e-2f, 2e-3, 1e-4);
		free(t.x), free(t.w), free(t.b), free(t.out), free(t.mean), free(t.rstd), free(t.r);
		free(dx), free(dw), free(db);
	}
}

/* ---- ops: linear ------------------------------------------------------------------------- */

struct lin_t {
	zinf_pool *pool;
	int N, I, O;
	float *x, *w, *b, *out, *r;
};

static double
lin_obj(void *arg)
{
	struct lin_t *t = arg;
	zinf_op_linear_fwd(t->pool, t->out, t->x, t->w, t->b, t->N, t->I, t->O);
	return dot_d(t->out, t->r, (int64_t)t->N * t->O);
}

static void
test_linear(zinf_pool *pool)
{
	/* odd sizes: tails of every tile and of the 16-lane dot */
	struct lin_t t = {.pool = pool, .N = 19, .I = 37, .O = 70};
	int64_t nx = (int64_t)t.N * t.I, nw = (int64_t)t.O * t.I, no = (int64_t)t.N * t.O;
	t.x = rnd(nx, 1, 0), t.w = rnd(nw, 1, 0), t.b = rnd(t.O, 1, 0), t.out = zeros(no);
	t.r = rnd(no, 1, 0);
	lin_obj(&t);
	double *want = calloc((size_t)no, sizeof(double));
	for (int n = 0; n < t.N; n++)
		for (int o = 0; o < t.O; o++) {
			double s = t.b[o];
			for (int i = 0; i < t.I; i++)
				s += (double)t.x[n * t.I + i] * t.w[o * t.I + i];
			want[n * t.O + o] = s;
		}
	close_to("linear fwd", t.out, want, no, 1e-5);
	free(want);

	float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(t.O);
	zinf_op_linear_bwd(pool, dx, dw, db, t.r, t.x, t.w, t.N, t.I, t.O);
	fd_check("linear dx", t.x, dx, nx, lin_obj, &t, 1e-2f, 1e-3, 1e-4);
	fd_check("linear dw", t.w, dw, nw, lin_obj, &t, 1e-2f, 1e-3, 1e-4);
	fd_check("linear db", t.b, db, t.O, lin_obj, &t, 1e-2f, 1e-3, 1e-4);

	/* A second call adds exactly the same amount again. */
	float *dw2 = malloc((size_t)nw * sizeof(float)), *db2 = malloc((size_t)t.O * sizeof(float));
	memcpy(dw2, dw, (size_t)nw * sizeof(float));
	memcpy(db2, db, (size_t)t.O * sizeof(float));
	zinf_op_linear_bwd(pool, NULL, dw2, db2, t.r, t.x, t.w, t.N, t.I, t.O);
	int bad = 0;
	for (int64_t i = 0; i < nw; i++)
		bad += dw2[i] != 2 * dw[i];
	for (int i = 0; i < t.O; i++)
		bad += db2[i] != 2 * db[i];
	T_CHECK(bad == 0, "linear bwd twice: %d weight/bias gradients are not exactly doubled",
		bad);
	free(t.x), free(t.w), free(t.b), free(t.out), free(t.r), free(dx), free(dw), free(db);
	free(dw2), free(db2);
}

/* ---- ops: activations -------------------------------------------------------------------- */

struct act_t {
	zinf_pool *pool;
	int N, F, swiglu;
	float *x, *out, *r;
};

static double
act_obj(void *arg)
{
	struct act_t *t = arg;
	if (t->swiglu)
		zinf_op_swiglu_fwd(t->pool, t->out, t->x, t->N, t->F);
	else
		zinf_op_gelu_fwd(t->pool, t->out, t->x, (int64_t)t->N * t->F);
	return dot_d(t->out, t->r, (int64_t)t->N * t->F);
}

static void
test_activations(zinf_pool *pool)
{
	for (int sw = 0; sw < 2; sw++) {
		struct act_t t = {.pool = pool, .N = 3, .F = 23, .swiglu = sw};
		int64_t nin = (int64_t)t.N * t.F * (sw ? 2 : 1), nout = (int64_t)t.N * t.F;
		t.x = rnd(nin, 4.0f, 0), t.out = zeros(nout), t.r = rnd(nout, 1, 0);
		act_obj(&t);
		double *want = calloc((size_t)nout, sizeof(double));
		for (int n = 0; n < t.N; n++)
			for (int i = 0; i < t.F; i++) {
				if (sw) {
					double g = t.x[n * 2 * t.F + i], u = t.x[n * 2 * t.F + t.F + i];
					want[n * t.F + i] = g / (1 + exp(-g)) * u;
				} else {
					double x = t.x[n * t.F + i];
					want[n * t.F + i] =
						0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
				}
			}
		close_to(sw ? "swiglu fwd" : "gelu fwd", t.out, want, nout, 1e-6);
		free(want);
		float *dx = zeros(nin);
		if (sw)
			zinf_op_swiglu_bwd(pool, dx, t.r, t.x, t.N, t.F);
		else
			zinf_op_gelu_bwd(pool, dx, t.r, t.x, nout);
		fd_check(sw ? "swiglu dx" : "gelu dx", t.x, dx, nin, act_obj, &t, 1e-3f, 2e-3, 1e-4);
		free(t.x), free(t.out), free(t.r), free(dx);
	}
}

/* ---- ops: rope and attention ------------------------------------------------------------- */

static void
test_rope_table(void)
{
	/* llama3: hd 16, theta 10, original 32, factor 8, low 1, high 4: wavelengths below 8
	 * kept, above 32 divided by 8, between blended. */
	const int T = 7, hd = 16, h = hd / 2;
	zinf_rope_cfg rc = {.theta = 10, .llama3 = 1, .factor = 8, .low_freq_factor = 1,
			    .high_freq_factor = 4, .original_max_pos = 32};
	float cs[7 * 8], sn[7 * 8];
	zinf_op_rope_table(cs, sn, T, hd, &rc);
	int bands[3] = {0};
	double want_c[7 * 8], want_s[7 * 8];
	for (int i = 0; i < h; i++) {
		double inv = 1.0 / pow(10.0, 2.0 * i / hd), wl = 2 * M_PI / inv, f;
		if (wl < 32.0 / 4) {
			f = inv, bands[0]++;
		} else if (wl > 32.0 / 1) {
			f = inv / 8, bands[2]++;
		} else {
			double s = (32.0 / wl - 1) / (4 - 1);
			f = (1 - s) * inv / 8 + s * inv, bands[1]++;
		}
		for (int t = 0; t < T; t++) {
			want_c[t * h + i] = cos(t * f);
			want_s[t * h + i] = sin(t * f);
		}
	}
	T_CHECK(bands[0] && bands[1] && bands[2], "llama3 case covers bands %d %d %d", bands[0],
		bands[1], bands[2]);
	close_to("rope cos llama3", cs, want_c, T * h, 1e-5);
	close_to("rope sin llama3", sn, want_s, T * h, 1e-5);
}

struct attn_t {
	zinf_pool *pool;
	zinf_attn_shape s;
	int rope;
	float *qkv_in, *qkv, *out, *lse, *r, *cs, *sn;
};

static int64_t
qkv_len(zinf_attn_shape s)
{
	return (int64_t)s.B * s.T * (s.H + 2 * s.KV) * s.hd;
}

static double
attn_obj(void *arg)
{
	struct attn_t *t = arg;
	memcpy(t->qkv, t->qkv_in, (size_t)qkv_len(t->s) * sizeof(float));
	if (t->rope)
		zinf_op_rope_fwd(t->pool, t->qkv, t->cs, t->sn, t->s);
	zinf_op_attn_fwd(t->pool, t->out, t->lse, t->qkv, t->s, 1.0f / sqrtf((float)t->s.hd));
	return dot_d(t->out, t->r, (int64_t)t->s.B * t->s.T * t->s.H * t->s.hd);
}

/* Naive causal GQA attention in double, from the (already roped) qkv. */
static void
attn_ref(const float *qkv, zinf_attn_shape s, double *out)
{
	const int Q = (s.H + 2 * s.KV) * s.hd;
	double *p = calloc((size_t)s.T, sizeof(double));
	for (int b = 0; b < s.B; b++)
		for (int h = 0; h < s.H; h++)
			for (int t = 0; t < s.T; t++) {
				int g = h / (s.H / s.KV);
				const float *q = qkv + (b * s.T + t) * Q + h * s.hd;
				double mx = -1e300, sum = 0;
				for (int j = 0; j <= t; j++) {
					const float *k = qkv + (b * s.T + j) * Q + (s.H + g) * s.hd;
					double d = 0;
					for (int i = 0; i < s.hd; i++)
						d += (double)q[i] * k[i];
					p[j] = d / sqrt(s.hd);
					mx = p[j] > mx ? p[j] : mx;
				}
				for (int j = 0; j <= t; j++)
					sum += (p[j] = exp(p[j] - mx));
				double *o = out + (b * s.T + t) * s.H * s.hd + h * s.hd;
				for (int i = 0; i < s.hd; i++) {
					double a = 0;
					for (int j = 0; j <= t; j++)
						a += p[j] / sum *
						     qkv[(b * s.T + j) * Q + (s.H + s.KV + g) * s.hd + i];
					o[i] = a;
				}
			}
	free(p);
}

static void
test_attention(zinf_pool *pool)
{
	const zinf_attn_shape shapes[] = {{2, 5, 4, 2, 6}, {1, 7, 3, 3, 4}, {1, 4, 4, 1, 18}};
	for (int si = 0; si < 3; si++)
		for (int rope = 0; rope < 2; rope++) {
			struct attn_t t = {.pool = pool, .s = shapes[si], .rope = rope};
			zinf_attn_shape s = t.s;
			int64_t nq = qkv_len(s), no = (int64_t)s.B * s.T * s.H * s.hd;
			t.qkv_in = rnd(nq, 1.5f, 0), t.qkv = zeros(nq), t.out = zeros(no);
			t.lse = zeros((int64_t)s.B * s.H * s.T), t.r = rnd(no, 1, 0);
			t.cs = zeros((int64_t)s.T * s.hd / 2), t.sn = zeros((int64_t)s.T * s.hd / 2);
			zinf_rope_cfg rc = {.theta = 100.0f};
			zinf_op_rope_table(t.cs, t.sn, s.T, s.hd, &rc);
			attn_obj(&t);

			double *want = calloc((size_t)no, sizeof(double));
			attn_ref(t.qkv, s, want);
			close_to("attention fwd", t.out, want, no, 1e-5);
			free(want);
			if (rope) {
				/* rope on q/k only, rotation by t*inv_freq on pairs (i, i+hd/2) */
				const int Q = (s.H + 2 * s.KV) * s.hd, h = s.hd / 2;
				int bad = 0;
				for (int n = 0; n < s.B * s.T; n++)
					for (int c = 0; c < Q; c++) {
						int head = c / s.hd, i = c % s.hd, tt = n % s.T;
						double x = t.qkv_in[n * Q + c], y = x;
						if (head < s.H + s.KV) {
							int ii = i % h;
							double a = tt * (1.0 / pow(100.0, 2.0 * ii / s.hd));
							double o = t.qkv_in[n * Q + head * s.hd +
									    (i < h ? i + h : i - h)];
							y = i < h ? x * cos(a) - o * sin(a) : x * cos(a) + o * sin(a);
						}
						bad += fabs(t.qkv[n * Q + c] - y) > 1e-5;
					}
				T_CHECK(bad == 0, "rope fwd: %d values differ from the rotate_half formula",
					bad);
			}

			float *dqkv = zeros(nq), *work = zeros((int64_t)s.B * s.H * s.T);
			zinf_op_attn_bwd(pool, dqkv, work, t.qkv, t.out, t.r, t.lse, s,
					 1.0f / sqrtf((float)s.hd));
			if (rope)
				zinf_op_rope_bwd(pool, dqkv, t.cs, t.sn, s);
			char what[64];
			snprintf(what, sizeof what, "attention%s dqkv B%d T%d H%d KV%d hd%d",
				 rope ? "+rope" : "", s.B, s.T, s.H, s.KV, s.hd);
			fd_check(what, t.qkv_in, dqkv, nq, attn_obj, &t, 1e-2f, 3e-3, 2e-4);
			free(t.qkv_in), free(t.qkv), free(t.out), free(t.lse), free(t.r), free(t.cs);
			free(t.sn), free(dqkv), free(work);
		}
}

/* ---- ops: embedding and cross-entropy ----------------------------------------------------- */

struct ce_t {
	zinf_pool *pool;
	int N, V;
	float *logits, *lse;
	int32_t *tgt;
};

static double
ce_obj(void *arg)
{
	struct ce_t *t = arg;
	int64_t cnt;
	return zinf_op_ce_fwd(t->pool, t->lse, t->logits, t->tgt, t->N, t->V, &cnt);
}

static void
test_ce_embed(zinf_pool *pool)
{
	int32_t tgt[6] = {3, -100, 0, 10, 10, -1};
	struct ce_t t = {.pool = pool, .N = 6, .V = 11, .tgt = tgt};
	t.logits = rnd(66, 5.0f, 0), t.lse = zeros(6);
	int64_t cnt;
	double loss = zinf_op_ce_fwd(pool, t.lse, t.logits, tgt, t.N, t.V, &cnt), want = 0;
	for (int n = 0; n < t.N; n++) {
		if (tgt[n] < 0)
			continue;
		double s = 0;
		for (int v = 0; v < t.V; v++)
			s += exp(t.logits[n * t.V + v]);
		want += (log(s) - t.logits[n * t.V + tgt[n]]) / 4;
	}
	T_CHECK_EQ_I64(cnt, 4);
	T_CHECK(fabs(loss - want) < 1e-6 * want, "ce loss %.9g, want %.9g", loss, want);
	float *d = rnd(66, 1, 0);
	zinf_op_ce_bwd(pool, d, t.logits, t.lse, tgt, t.N, t.V, 1.0f / 4);
	fd_check("cross-entropy dlogits", t.logits, d, 66, ce_obj, &t, 1e-2f, 1e-3, 1e-5);
	int32_t none[2] = {-100, -100};
	T_CHECK(zinf_op_ce_fwd(pool, t.lse, t.logits, none, 2, t.V, &cnt) == 0.0 && cnt == 0,
		"no counted target: loss 0, count %lld", (long long)cnt);
	free(t.logits), free(t.lse), free(d);

	/* embedding: repeated tokens sum; positions sum over the batch */
	const int N = 6, T = 3, C = 5, V = 4;
	int32_t tok[6] = {1, 3, 1, 1, 0, 3};
	float *wte = rnd(V * C, 1, 0), *wpe = rnd(T * C, 1, 0), *out = zeros(N * C);
	zinf_op_embed_fwd(pool, out, tok, wte, wpe, N, T, C);
	int bad = 0;
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			bad += out[n * C + c] != wte[tok[n] * C + c] + wpe[(n % T) * C + c];
	T_CHECK(bad == 0, "embedding fwd: %d values wrong", bad);
	float *dout = rnd(N * C, 1, 0), *dwte = zeros(V * C), *dwpe = zeros(T * C);
	zinf_op_embed_bwd(pool, dwte, dwpe, dout, tok, N, T, C);
	double wte_want[4 * 5] = {0}, wpe_want[3 * 5] = {0};
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++) {
			wte_want[tok[n] * C + c] += dout[n * C + c];
			wpe_want[(n % T) * C + c] += dout[n * C + c];
		}
	close_to("embedding dwte", dwte, wte_want, V * C, 1e-6);
	close_to("embedding dwpe", dwpe, wpe_want, T * C, 1e-6);
	free(wte), free(wpe), free(out), free(dout), free(dwte), free(dwpe);
}

/* ---- model ------------------------------------------------------------------------------- */

static void
tiny_gpt2(zinf_model_config *c)
{
	memset(c, 0, sizeof(*c));
	c->arch = ZINF_ARCH_GPT2;
	snprintf(c->name, sizeof c->name, "test-gpt2");
	c->vocab_size = 29, c->padded_vocab = 128, c->max_seq = 8, c->n_layer = 2;
	c->n_head = 2, c->n_kv_head = 2, c->d_model = 16, c->d_ff = 64, c->head_dim = 8;
	c->norm_eps = 1e-5f, c->init_std = 0.02f, c->tied = true;
	c->bos_token_id = c->eos_token_id = -1;
}

/* GQA 4 heads / 2 kv heads, head_dim 6 so H*hd = 24 != d_model 16. */
static void
tiny_llama(zinf_model_config *c, bool tied, bool llama3)
{
	memset(c, 0, sizeof(*c));
	c->arch = ZINF_ARCH_LLAMA;
	snprintf(c->name, sizeof c->name, "test-llama");
	c->vocab_size = 31, c->padded_vocab = 128, c->max_seq = 8, c->n_layer = 2;
	c->n_head = 4, c->n_kv_head = 2, c->d_model = 16, c->d_ff = 24, c->head_dim = 6;
	c->norm_eps = 1e-5f, c->init_std = 0.02f, c->tied = tied, c->rope_theta = 50.0f;
	c->bos_token_id = c->eos_token_id = -1;
	if (llama3) {
		c->rope_scaling = ZINF_ROPE_LLAMA3;
		c->rope_factor = 4, c->rope_low_freq_factor = 1, c->rope_high_freq_factor = 4;
		c->rope_original_max_pos = 8;
	}
}

/* Rows of a tensor that hold real values (vocab rows of embeddings / lm_head). */
static int64_t
real_numel(const zinf_tensor_desc *d)
{
	return d->ndim == 2 ? d->hf_rows * d->shape[1] : d->numel;
}

/* Random weights: 2-D uniform in +-0.5, norm weights 1 +- 0.2, biases +- 0.2. */
static void
random_params(const zinf_model_layout *lay, float *p)
{
	memset(p, 0, (size_t)lay->total_numel * sizeof(float));
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *d = &lay->tensors[i];
		bool norm_w = d->ndim == 1 && strstr(d->hf_name, "weight");
		for (int64_t k = 0; k < real_numel(d); k++)
			p[d->offset + k] = d->ndim == 2 ? 0.5f * urand() : (norm_w ? 1.0f : 0.0f) +
									    0.2f * urand();
	}
}

struct model_t {
	zinf_cpu_model *m;
	const float *params;
	const int32_t *tok, *tgt;
};

static double
model_obj(void *arg)
{
	struct model_t *t = arg;
	float loss = 0;
	int rc = zinf_cpu_forward(t->m, t->params, t->tok, t->tgt, &loss, NULL);
	if (rc)
		abort();
	return loss;
}

static void
make_batch(int B, int T, int V, int32_t *tok, int32_t *tgt)
{
	for (int i = 0; i < B * T; i++) {
		tok[i] = (int32_t)(t_rand(&rng) % (uint64_t)V);
		tgt[i] = (int32_t)(t_rand(&rng) % (uint64_t)V);
	}
	tgt[0] = -100; /* ignored */
	tgt[B * T - 2] = -1;
	tok[1] = tok[2] = 0; /* a repeated token */
	tgt[3] = V - 1;
}

/* FD check of the largest-|grad| entry and 3 random entries of every tensor. */
static void
model_fd(const char *name, const zinf_model_config *cfg, const zinf_model_layout *lay, int B,
	 int T)
{
	char err[512];
	zinf_cpu_model *m = NULL;
	int rc = zinf_cpu_model_create(cfg, lay, B, T, 2, &m, err, sizeof err);
	T_CHECK(rc == 0, "%s: create: %s", name, err);
	if (rc)
		return;
	float *p = malloc((size_t)lay->total_numel * sizeof(float));
	float *g = zeros(lay->total_numel);
	int32_t tok[64], tgt[64];
	random_params(lay, p);
	make_batch(B, T, cfg->vocab_size, tok, tgt);
	float loss;
	T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == 0, "%s forward: %s", name,
		zinf_cpu_model_error(m));
	T_CHECK(zinf_cpu_backward(m, p, g, 1.0f) == 0, "%s backward: %s", name,
		zinf_cpu_model_error(m));
	T_CHECK(isfinite(loss) && loss > 0, "%s: loss %g", name, loss);

	struct model_t t = {.m = m, .params = p, .tok = tok, .tgt = tgt};
	int fails = 0, checked = 0;
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *d = &lay->tensors[i];
		int64_t n = real_numel(d), idx[4], best = 0;
		for (int64_t k = 1; k < n; k++)
			if (fabsf(g[d->offset + k]) > fabsf(g[d->offset + best]))
				best = k;
		idx[0] = best;
		for (int k = 1; k < 4; k++)
			idx[k] = (int64_t)(t_rand(&rng) % (uint64_t)n);
		for (int k = 0; k < 4; k++) {
			char what[160];
			snprintf(what, sizeof what, "%s %s", name, d->hf_name);
			int64_t o = d->offset + idx[k];
			fails += fd_check(what, p + o, g + o, 1, model_obj, &t, 1e-2f, 2e-2, 2e-4);
			checked++;
		}
	}
	printf("%s: loss %.5f, %d gradient entries checked by finite differences, %d off\n", name,
	       loss, checked, fails);
	zinf_cpu_model_destroy(m);
	free(p), free(g);
}

/* Run forward + backward with `threads`; returns loss and fills logits and grads (grads start
 * from `init`). */
static int
run_model(const zinf_model_config *cfg, const zinf_model_layout *lay, int B, int T, int threads,
	  const float *p, const int32_t *tok, const int32_t *tgt, float *loss, float *logits,
	  float *g, int nbackward)
{
	char err[512];
	zinf_cpu_model *m;
	int rc = zinf_cpu_model_create(cfg, lay, B, T, threads, &m, err, sizeof err);
	if (rc) {
		fprintf(stderr, "create: %s\n", err);
		return rc;
	}
	rc = zinf_cpu_forward(m, p, tok, tgt, loss, logits);
	for (int i = 0; !rc && i < nbackward; i++)
		rc = zinf_cpu_backward(m, p, g, 0.5f);
	if (rc)
		fprintf(stderr, "run: %s\n", zinf_cpu_model_error(m));
	zinf_cpu_model_destroy(m);
	return rc;
}

static void
test_model_properties(const char *name, const zinf_model_config *cfg,
		      const zinf_model_layout *lay)
{
	const int B = 2, T = 6;
	int64_t P = lay->total_numel, NL = (int64_t)B * T * cfg->vocab_size;
	float *p = malloc((size_t)P * sizeof(float));
	random_params(lay, p);
	int32_t tok[12], tgt[12];
	make_batch(B, T, cfg->vocab_size, tok, tgt);

	/* thread-count independence, bitwise */
	float loss1, *lg1 = zeros(NL), *g1 = zeros(P);
	T_CHECK(run_model(cfg, lay, B, T, 1, p, tok, tgt, &loss1, lg1, g1, 1) == 0, "%s", name);
	for (int th = 2; th <= 5; th += 3) {
		float loss, *lg = zeros(NL), *g = zeros(P);
		T_CHECK(run_model(cfg, lay, B, T, th, p, tok, tgt, &loss, lg, g, 1) == 0, "%s", name);
		T_CHECK(loss == loss1 && !memcmp(lg, lg1, (size_t)NL * 4) &&
				!memcmp(g, g1, (size_t)P * 4),
			"%s: %d threads give other results than 1 thread (loss %.9g vs %.9g)", name,
			th, loss, loss1);
		free(lg), free(g);
	}

	/* backward twice = 2x once (tied embeddings and repeated tokens add row by row: 1e-6) */
	float loss2, *g2 = zeros(P);
	T_CHECK(run_model(cfg, lay, B, T, 3, p, tok, tgt, &loss2, NULL, g2, 2) == 0, "%s", name);
	int bad = 0;
	double gmax = 0;
	for (int64_t i = 0; i < P; i++)
		gmax = fmax(gmax, fabs(g1[i]));
	for (int64_t i = 0; i < P; i++)
		bad += fabs(g2[i] - 2 * g1[i]) > 1e-6 * gmax;
	T_CHECK(bad == 0 && gmax > 0, "%s: backward twice: %d entries are not 2x one backward",
		name, bad);

	/* padding rows and alignment tails untouched: start grads at 7 everywhere */
	float *g7 = malloc((size_t)P * sizeof(float));
	bool *real = calloc((size_t)P, 1);
	for (int64_t i = 0; i < P; i++)
		g7[i] = 7.0f;
	for (int i = 0; i < lay->ntensors; i++)
		memset(real + lay->tensors[i].offset, 1, (size_t)real_numel(&lay->tensors[i]));
	T_CHECK(run_model(cfg, lay, B, T, 2, p, tok, tgt, &loss2, NULL, g7, 1) == 0, "%s", name);
	bad = 0;
	for (int64_t i = 0; i < P; i++)
		bad += !real[i] && g7[i] != 7.0f;
	T_CHECK(bad == 0, "%s: backward wrote %d padding / alignment entries", name, bad);

	/* logits output is the unpadded [B*T, V] the loss was computed from */
	double ce = 0;
	int cnt = 0;
	for (int n = 0; n < B * T; n++) {
		if (tgt[n] < 0)
			continue;
		double s = 0;
		for (int v = 0; v < cfg->vocab_size; v++)
			s += exp(lg1[(int64_t)n * cfg->vocab_size + v]);
		ce += log(s) - lg1[(int64_t)n * cfg->vocab_size + tgt[n]];
		cnt++;
	}
	T_CHECK(fabs(ce / cnt - loss1) < 1e-5 * loss1, "%s: loss %.7g, from the logits %.7g", name,
		loss1, ce / cnt);
	free(p), free(lg1), free(g1), free(g2), free(g7), free(real);
}

static void
test_model_errors(const zinf_model_config *cfg, const zinf_model_layout *lay)
{
	char err[512];
	zinf_cpu_model *m = NULL;
	T_CHECK(zinf_cpu_model_create(cfg, lay, 1, cfg->max_seq + 1, 1, &m, err, sizeof err) ==
				-EINVAL && strstr(err, "max_seq"),
		"T > max_seq: %s", err);
	T_CHECK(zinf_cpu_model_create(cfg, lay, 0, 4, 1, &m, err, sizeof err) == -EINVAL,
		"B = 0 accepted");
	int rc = zinf_cpu_model_create(cfg, lay, 2, 4, 2, &m, err, sizeof err);
	T_CHECK(rc == 0, "create: %s", err);
	if (rc)
		return;
	float *p = zeros(lay->total_numel), *g = zeros(lay->total_numel), loss = -1;
	int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	T_CHECK(zinf_cpu_backward(m, p, g, 1) == -EINVAL, "backward before forward accepted");
	tok[5] = cfg->vocab_size;
	T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == -EINVAL &&
			strstr(zinf_cpu_model_error(m), "token 29 at sequence 1 position 1"),
		"token == vocab_size: %s", zinf_cpu_model_error(m));
	tok[5] = -3;
	T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == -EINVAL &&
			strstr(zinf_cpu_model_error(m), "token -3"),
		"negative token: %s", zinf_cpu_model_error(m));
	T_CHECK(zinf_cpu_backward(m, p, g, 1) == -EINVAL, "backward after a failed forward");
	tok[5] = 5;
	tgt[7] = 1000;
	T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == -EINVAL &&
			strstr(zinf_cpu_model_error(m), "target 1000 at sequence 1 position 3"),
		"target >= vocab_size: %s", zinf_cpu_model_error(m));
	/* all targets ignored: loss 0, no gradient */
	for (int i = 0; i < 8; i++)
		tgt[i] = -100;
	T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == 0 && loss == 0.0f,
		"all ignored: loss %g", loss);
	T_CHECK(zinf_cpu_backward(m, p, g, 1) == 0, "all ignored backward");
	int nz = 0;
	for (int64_t i = 0; i < lay->total_numel; i++)
		nz += g[i] != 0;
	T_CHECK(nz == 0, "all ignored: %d nonzero gradients", nz);
	zinf_cpu_model_destroy(m);
	free(p), free(g);
}

static void
test_models(void)
{
	struct {
		const char *name;
		zinf_model_config cfg;
	} cases[4];
	tiny_gpt2(&cases[0].cfg), cases[0].name = "gpt2";
	tiny_llama(&cases[1].cfg, true, false), cases[1].name = "llama-gqa-tied";
	tiny_llama(&cases[2].cfg, false, false), cases[2].name = "llama-gqa-untied";
	tiny_llama(&cases[3].cfg, false, true), cases[3].name = "llama-llama3-untied";
	for (int i = 0; i < 4; i++) {
		char err[512];
		zinf_model_layout lay;
		int rc = zinf_model_layout_init(&cases[i].cfg, &lay, err, sizeof err);
		T_CHECK(rc == 0, "%s layout: %s", cases[i].name, err);
		if (rc)
			continue;
		model_fd(cases[i].name, &cases[i].cfg, &lay, 2, 5); /* T 5 < max_seq 8 */
		test_model_properties(cases[i].name, &cases[i].cfg, &lay);
		if (i == 0)
			test_model_errors(&cases[i].cfg, &lay);
		zinf_model_layout_free(&lay);
	}
}

/* ---- PyTorch / HF fixtures --------------------------------------------------------------- */

static int
read_f32(const zinf_st_file *f, const char *name, float *out, int64_t n)
{
	char err[512];
	const zinf_st_tensor *t = zinf_st_find(f, name);
	if (!t || t->dtype != ZINF_ST_F32 || t->numel != n) {
		fprintf(stderr, "%s: tensor %s missing or not F32 [%lld]\n", f->path, name,
			(long long)n);
		return -EINVAL;
	}
	int rc = zinf_st_read(f, t, 0, out, (size_t)n * 4, err, sizeof err);
	if (rc)
		fprintf(stderr, "%s\n", err);
	return rc;
}

/* The reference gradients, stored under the parameters' HF names in the HF layout (GPT-2
 * Conv1D [in, out], unpadded vocab rows; a tied lm_head is absent), into the flat layout. Read
 * here rather than with the weights loader so a loader bug cannot hide a gradient bug. */
static int
read_grads(const zinf_st_file *f, const zinf_model_layout *lay, float *g)
{
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *d = &lay->tensors[i];
		int64_t n = real_numel(d);
		float *tmp = zeros(n);
		int rc = read_f32(f, d->hf_name, tmp, n);
		if (!rc && d->hf_transposed) { /* file [in, out] -> zinf [out, in] */
			int64_t rows = d->shape[0], cols = d->shape[1];
			for (int64_t r = 0; r < rows; r++)
				for (int64_t c = 0; c < cols; c++)
					g[d->offset + r * cols + c] = tmp[c * rows + r];
		} else if (!rc) {
			memcpy(g + d->offset, tmp, (size_t)n * sizeof(float));
		}
		free(tmp);
		if (rc)
			return rc;
	}
	return 0;
}

/* max |got - want| / max |want| over a tensor: one scale per tensor, so entries near zero
 * do not dominate. */
static double
rel_err(const float *got, const float *want, int64_t n)
{
	double e = 0, s = 0;
	for (int64_t i = 0; i < n; i++) {
		e = fmax(e, fabs((double)got[i] - want[i]));
		s = fmax(s, fabs((double)want[i]));
	}
	return s > 0 ? e / s : e;
}

static void
test_fixture(const char *name)
{
	char dir[1024], path[1200], err[512], weights[1200];
	snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", ZINF_SOURCE_DIR, name);
	zinf_model_config cfg;
	zinf_model_layout lay;
	int rc = zinf_model_resolve(dir, &cfg, weights, sizeof weights, err, sizeof err);
	T_CHECK(rc == 0, "%s: %s", name, err);
	if (rc)
		return;
	rc = zinf_model_layout_init(&cfg, &lay, err, sizeof err);
	T_CHECK(rc == 0, "%s: %s", name, err);
	if (rc)
		return;
	float *p = zeros(lay.total_numel), *g = zeros(lay.total_numel);
	float *gref = zeros(lay.total_numel);
	rc = zinf_model_load_safetensors(weights, &cfg, &lay, p, err, sizeof err);
	T_CHECK(rc == 0, "%s: %s", name, err);

	int32_t hdr[4], *tok = NULL, *tgt = NULL;
	snprintf(path, sizeof path, "%s/batch.bin", dir);
	FILE *fb = fopen(path, "rb");
	T_CHECK(fb && fread(hdr, 4, 4, fb) == 4 && hdr[0] == 0x5A424154 && hdr[1] == 1,
		"%s: bad header", path);
	int B = fb ? hdr[2] : 0, T = fb ? hdr[3] : 0;
	if (!rc && fb && B > 0 && T > 0) {
		tok = malloc((size_t)B * T * 4), tgt = malloc((size_t)B * T * 4);
		T_CHECK(fread(tok, 4, (size_t)B * T, fb) == (size_t)B * T &&
				fread(tgt, 4, (size_t)B * T, fb) == (size_t)B * T,
			"%s: short", path);
	}
	if (fb)
		fclose(fb);

	zinf_st_file ref;
	snprintf(path, sizeof path, "%s/reference.safetensors", dir);
	if (!rc && tok && zinf_st_open(path, &ref, err, sizeof err) == 0) {
		int64_t NL = (int64_t)B * T * cfg.vocab_size;
		float want_loss, *want_logits = zeros(NL), *logits = zeros(NL), loss;
		if (!read_f32(&ref, "loss", &want_loss, 1) &&
		    !read_f32(&ref, "logits", want_logits, NL) && !read_grads(&ref, &lay, gref) &&
		    !run_model(&cfg, &lay, B, T, 2, p, tok, tgt, &loss, logits, g, 0)) {
			zinf_cpu_model *m;
			/* grad_scale 1 (run_model uses 0.5 for the properties test) */
			T_CHECK(zinf_cpu_model_create(&cfg, &lay, B, T, 2, &m, err, sizeof err) == 0,
				"%s", err);
			T_CHECK(zinf_cpu_forward(m, p, tok, tgt, &loss, NULL) == 0 &&
					zinf_cpu_backward(m, p, g, 1.0f) == 0,
				"%s", zinf_cpu_model_error(m));
			zinf_cpu_model_destroy(m);
			double el = fabs(loss - want_loss) / fabs(want_loss);
			double eg = rel_err(logits, want_logits, NL);
			T_CHECK(el <= 1e-4, "%s: loss %.7g, PyTorch %.7g", name, loss, want_loss);
			T_CHECK(eg <= 1e-4, "%s: logits relative error %.3g", name, eg);
			double worst = 0;
			const char *wname = "";
			for (int i = 0; i < lay.ntensors; i++) {
				const zinf_tensor_desc *d = &lay.tensors[i];
				double e = rel_err(g + d->offset, gref + d->offset, real_numel(d));
				T_CHECK(e <= 1e-4, "%s: gradient of %s: relative error %.3g", name,
					d->hf_name, e);
				if (e >= worst)
					worst = e, wname = d->hf_name;
			}
			printf("fixture %s: loss %.6f (PyTorch %.6f), logits rel err %.2g, worst "
			       "gradient rel err %.2g (%s)\n",
			       name, loss, want_loss, eg, worst, wname);
		}
		free(want_logits), free(logits);
		zinf_st_close(&ref);
	} else if (!rc && tok) {
		T_CHECK(0, "%s", err);
	}
	free(tok), free(tgt), free(p), free(g), free(gref);
	zinf_model_layout_free(&lay);
}

int
main(void)
{
	zinf_pool *pool;
	if (zinf_pool_create(3, &pool))
		return T_EXIT_FAIL;
	test_norms(pool);
	test_linear(pool);
	test_activations(pool);
	test_rope_table();
	test_attention(pool);
	test_ce_embed(pool);
	zinf_pool_destroy(pool);
	test_models();
	const char *fixtures[] = {"gpt2-small", "llama-gqa-tied", "llama-gqa-untied",
				  "llama-rope3"};
	for (int i = 0; i < 4; i++)
		test_fixture(fixtures[i]);
	return t_result("test_model_cpu");
}
