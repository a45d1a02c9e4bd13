/* CPU forward and backward of the transformer ops (fp32). See kernels/include/kernels/ops_cpu.h.
 *
 * Design: each op is a plain loop nest over its output, cut into items (rows, or tiles of
 * rows x columns) that zinf_pool_for() hands out in contiguous ranges, one per thread. Every
 * output element is produced by exactly one item with a summation order that does not depend
 * on the tiling, so results are bitwise the same for any thread count.
 *
 * Dot products accumulate in LANES independent lanes that are summed in a fixed order at the
 * end: GCC vectorises that without -ffast-math (a plain scalar reduction it must keep in
 * order). The 4-row variant dot4() shares the weight row's loads between four input rows and
 * gives bitwise the same results as dot() (same lanes, same order); ops_cpu.c is compiled with
 * -ffp-contract=off so that stays true on FMA targets. Weight gradients are axpy loops
 * (no reduction), accumulated per call in a small stack tile and then added to dw once.
 *
 * Threads: a persistent pool; a dispatch bumps a generation counter under the mutex, wakes the
 * workers, runs range 0 on the caller and waits for the others. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/ops_cpu.h"

#define POOL_MAX_THREADS 256

/* ---- thread pool ------------------------------------------------------------------------- */

struct pool_slot {
	struct zinf_pool *pool;
	int idx;
};

struct zinf_pool {
	int n; /* threads, the caller included */
	pthread_t *th;
	struct pool_slot *slots;
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	int pending, stop;
	void (*fn)(void *ctx, int64_t begin, int64_t end);
	void *ctx;
	int64_t items;
};

static void
pool_range(int64_t n, int nt, int i, int64_t *b, int64_t *e)
{
	*b = n * i / nt;
	*e = n * (i + 1) / nt;
}

static void *
pool_worker(void *arg)
{
	struct pool_slot *s = arg;
	struct zinf_pool *p = s->pool;
	uint64_t seen = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		void (*fn)(void *, int64_t, int64_t) = p->fn;
		void *ctx = p->ctx;
		int64_t b, e;
		pool_range(p->items, p->n, s->idx, &b, &e);
		pthread_mutex_unlock(&p->mu);
		if (b < e)
			fn(ctx, b, e);
		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int
zinf_pool_create(int threads, zinf_pool **out)
{
	*out = NULL;
	if (threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (int)n : 1;
	}
	if (threads > POOL_MAX_THREADS)
		threads = POOL_MAX_THREADS;
	zinf_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->th = calloc((size_t)threads, sizeof(*p->th));
	p->slots = calloc((size_t)threads, sizeof(*p->slots));
	if (!p->th || !p->slots) {
		free(p->th);
		free(p->slots);
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	p->n = 1;
	for (int i = 1; i < threads; i++) {
		p->slots[i] = (struct pool_slot){.pool = p, .idx = i};
		if (pthread_create(&p->th[i], NULL, pool_worker, &p->slots[i]))
			break; /* fewer threads: same results, only slower */
		p->n = i + 1;
	}
	*out = p;
	return 0;
}

void
zinf_pool_destroy(zinf_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->th[i], NULL);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->mu);
	free(p->th);
	free(p->slots);
	free(p);
}

int
zinf_pool_threads(const zinf_pool *p)
{
	return p ? p->n : 1;
}

void
zinf_pool_for(zinf_pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end),
	      void *ctx)
{
	if (n <= 0)
		return;
	if (!p || p->n == 1 || n == 1) {
		fn(ctx, 0, n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->items = n;
	p->pending = p->n - 1;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);

	int64_t b, e;
	pool_range(n, p->n, 0, &b, &e);
	if (b < e)
		fn(ctx, b, e);

	pthread_mutex_lock(&p->mu);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

/* ---- vector helpers ---------------------------------------------------------------------- */

#define LANES 16

static inline float
lanes_sum(const float *acc)
{
	float s = 0.0f;
	for (int j = 0; j < LANES; j++)
		s += acc[j];
	return s;
}

static inline float
dot(const float *restrict a, const float *restrict b, int n)
{
	float acc[LANES] = {0};
	int i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			acc[j] += a[i + j] * b[i + j];
	for (int j = 0; i < n; i++, j++)
		acc[j] += a[i] * b[i];
	return lanes_sum(acc);
}

/* out[k] = dot(x[k], w, n) for k < 4, bitwise. */
static inline void
dot4(const float *restrict x0, const float *restrict x1, const float *restrict x2,
     const float *restrict x3, const float *restrict w, int n, float *out)
{
	float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
	int i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++) {
			float wv = w[i + j];
			a0[j] += x0[i + j] * wv;
			a1[j] += x1[i + j] * wv;
			a2[j] += x2[i + j] * wv;
			a3[j] += x3[i + j] * wv;
		}
	for (int j = 0; i < n; i++, j++) {
		a0[j] += x0[i] * w[i];
		a1[j] += x1[i] * w[i];
		a2[j] += x2[i] * w[i];
		a3[j] += x3[i] * w[i];
	}
	out[0] = lanes_sum(a0);
	out[1] = lanes_sum(a1);
	out[2] = lanes_sum(a2);
	out[3] = lanes_sum(a3);
}

/* y += a * x */
static inline void
axpy(float *restrict y, float a, const float *restrict x, int n)
{
	for (int i = 0; i < n; i++)
		y[i] += a * x[i];
}

/* y += a0 x0 + a1 x1 + a2 x2 + a3 x3, added left to right: bitwise the same as four axpy()
 * calls in that order, with a quarter of the loads and stores of y. */
static inline void
axpy4(float *restrict y, const float *a, const float *restrict x0, const float *restrict x1,
      const float *restrict x2, const float *restrict x3, int n)
{
	const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
	for (int i = 0; i < n; i++)
		y[i] = (((y[i] + a0 * x0[i]) + a1 * x1[i]) + a2 * x2[i]) + a3 * x3[i];
}

static inline int64_t
ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

/* ---- embedding --------------------------------------------------------------------------- */

struct embed_ctx {
	float *out, *dwte, *dwpe;
	const float *wte, *wpe, *dout;
	const int32_t *tok;
	int N, T, C;
};

static void
embed_fwd_rows(void *arg, int64_t b, int64_t e)
{
	const struct embed_ctx *c = arg;
	for (int64_t n = b; n < e; n++) {
		float *o = c->out + n * c->C;
		const float *w = c->wte + (int64_t)c->tok[n] * c->C;
		if (c->wpe) {
			const float *pe = c->wpe + (n % c->T) * c->C;
			for (int i = 0; i < c->C; i++)
				o[i] = w[i] + pe[i];
		} else {
			memcpy(o, w, (size_t)c->C * sizeof(float));
		}
	}
}

void
zinf_op_embed_fwd(zinf_pool *p, float *out, const int32_t *tok, const float *wte, const float *wpe,
		  int N, int T, int C)
{
	struct embed_ctx c = {.out = out, .tok = tok, .wte = wte, .wpe = wpe, .N = N, .T = T, .C = C};
	zinf_pool_for(p, N, embed_fwd_rows, &c);
}

#define EMB_COLS 64

/* Items: column chunks; rows in order, so each element's sum order is fixed. Repeated tokens
 * add into dwte one after the other (the one op that does not form the call's sum first: that
 * would need a token sort). Positions are summed over the batch first, then added. */
static void
embed_bwd_cols(void *arg, int64_t b, int64_t e)
{
	const struct embed_ctx *c = arg;
	for (int64_t it = b; it < e; it++) {
		int c0 = (int)(it * EMB_COLS), c1 = c0 + EMB_COLS < c->C ? c0 + EMB_COLS : c->C;
		for (int64_t n = 0; n < c->N; n++) {
			float *d = c->dwte + (int64_t)c->tok[n] * c->C;
			const float *g = c->dout + n * c->C;
			for (int i = c0; i < c1; i++)
				d[i] += g[i];
		}
		if (!c->dwpe)
			continue;
		int B = c->N / c->T;
		for (int t = 0; t < c->T; t++) {
			float acc[EMB_COLS] = {0};
			for (int bb = 0; bb < B; bb++) {
				const float *g = c->dout + ((int64_t)bb * c->T + t) * c->C;
				for (int i = c0; i < c1; i++)
					acc[i - c0] += g[i];
			}
			float *d = c->dwpe + (int64_t)t * c->C;
			for (int i = c0; i < c1; i++)
				d[i] += acc[i - c0];
		}
	}
}

void
zinf_op_embed_bwd(zinf_pool *p, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
		  int N, int T, int C)
{
	struct embed_ctx c = {.dwte = dwte, .dwpe = dwpe, .dout = dout, .tok = tok,
			      .N = N, .T = T, .C = C};
	zinf_pool_for(p, ceil_div(C, EMB_COLS), embed_bwd_cols, &c);
}

/* ---- norms ------------------------------------------------------------------------------- */

struct norm_ctx {
	float *out, *mean, *rstd, *dx, *dw, *db;
	const float *x, *w, *b, *dout, *cmean, *crstd;
	int N, C;
	float eps;
	int rms;
};

static void
norm_fwd_rows(void *arg, int64_t rb, int64_t re)
{
	const struct norm_ctx *c = arg;
	for (int64_t n = rb; n < re; n++) {
		const float *x = c->x + n * c->C;
		float *o = c->out + n * c->C;
		double mu = 0.0, ss = 0.0;
		if (!c->rms) {
			for (int i = 0; i < c->C; i++)
				mu += x[i];
			mu /= c->C;
		}
		for (int i = 0; i < c->C; i++) {
			double d = x[i] - mu;
			ss += d * d;
		}
		float r = (float)(1.0 / sqrt(ss / c->C + (double)c->eps));
		float m = (float)mu;
		for (int i = 0; i < c->C; i++) {
			float v = (x[i] - m) * r * c->w[i];
			o[i] = c->b ? v + c->b[i] : v;
		}
		if (c->mean)
			c->mean[n] = m;
		c->rstd[n] = r;
	}
}

void
zinf_op_layernorm_fwd(zinf_pool *p, float *out, float *mean, float *rstd, const float *x,
		      const float *w, const float *b, int N, int C, float eps)
{
	struct norm_ctx c = {.out = out, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b,
			     .N = N, .C = C, .eps = eps};
	zinf_pool_for(p, N, norm_fwd_rows, &c);
}

void
zinf_op_rmsnorm_fwd(zinf_pool *p, float *out, float *rstd, const float *x, const float *w, int N,
		    int C, float eps)
{
	struct norm_ctx c = {.out = out, .rstd = rstd, .x = x, .w = w, .N = N, .C = C, .eps = eps,
			     .rms = 1};
	zinf_pool_for(p, N, norm_fwd_rows, &c);
}

/* xhat = (x - mean) * rstd (mean 0 for RMSNorm), g = dout * w:
 * LayerNorm dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); RMSNorm drops the mean(g). */
static void
norm_bwd_rows(void *arg, int64_t rb, int64_t re)
{
	const struct norm_ctx *c = arg;
	for (int64_t n = rb; n < re; n++) {
		const float *x = c->x + n * c->C, *dy = c->dout + n * c->C;
		float *dx = c->dx + n * c->C;
		float m = c->rms ? 0.0f : c->cmean[n], r = c->crstd[n];
		double sg = 0.0, sgx = 0.0;
		for (int i = 0; i < c->C; i++) {
			double g = (double)dy[i] * c->w[i];
			sg += g;
			sgx += g * ((x[i] - m) * r);
		}
		float mg = c->rms ? 0.0f : (float)(sg / c->C), mgx = (float)(sgx / c->C);
		for (int i = 0; i < c->C; i++) {
			float xh = (x[i] - m) * r;
			dx[i] += r * (dy[i] * c->w[i] - mg - xh * mgx);
		}
	}
}

#define NORM_COLS 64

static void
norm_bwd_cols(void *arg, int64_t b, int64_t e)
{
	const struct norm_ctx *c = arg;
	for (int64_t it = b; it < e; it++) {
		int c0 = (int)(it * NORM_COLS), c1 = c0 + NORM_COLS < c->C ? c0 + NORM_COLS : c->C;
		float aw[NORM_COLS] = {0}, ab[NORM_COLS] = {0};
		for (int64_t n = 0; n < c->N; n++) {
			const float *x = c->x + n * c->C, *dy = c->dout + n * c->C;
			float m = c->rms ? 0.0f : c->cmean[n], r = c->crstd[n];
			for (int i = c0; i < c1; i++) {
				aw[i - c0] += dy[i] * ((x[i] - m) * r);
				ab[i - c0] += dy[i];
			}
		}
		for (int i = c0; i < c1; i++) {
			c->dw[i] += aw[i - c0];
			if (c->db)
				c->db[i] += ab[i - c0];
		}
	}
}

void
zinf_op_layernorm_bwd(zinf_pool *p, float *dx, float *dw, float *db, const float *dout,
		      const float *x, const float *mean, const float *rstd, const float *w, int N,
		      int C)
{
	struct norm_ctx c = {.dx = dx, .dw = dw, .db = db, .dout = dout, .x = x, .cmean = mean,
			     .crstd = rstd, .w = w, .N = N, .C = C};
	zinf_pool_for(p, N, norm_bwd_rows, &c);
	zinf_pool_for(p, ceil_div(C, NORM_COLS), norm_bwd_cols, &c);
}

void
zinf_op_rmsnorm_bwd(zinf_pool *p, float *dx, float *dw, const float *dout, const float *x,
		    const float *rstd, const float *w, int N, int C)
{
	struct norm_ctx c = {.dx = dx, .dw = dw, .dout = dout, .x = x, .crstd = rstd, .w = w,
			     .N = N, .C = C, .rms = 1};
	zinf_pool_for(p, N, norm_bwd_rows, &c);
	zinf_pool_for(p, ceil_div(C, NORM_COLS), norm_bwd_cols, &c);
}

/* ---- linear ------------------------------------------------------------------------------ */

#define LIN_NB 16  /* rows of x per forward tile (multiple of 4) */
#define LIN_OB 64  /* rows of w per forward / dx tile */
#define LIN_WO 16  /* rows of dw per weight-gradient tile */
#define LIN_WI 256 /* columns of dw per weight-gradient tile */

struct lin_ctx {
	float *out, *dx, *dw, *db;
	const float *x, *w, *b, *dout;
	int N, I, O;
	int64_t n_ob, n_wi;
};

static void
lin_fwd_tiles(void *arg, int64_t tb, int64_t te)
{
	const struct lin_ctx *c = arg;
	const int I = c->I, O = c->O;
	for (int64_t it = tb; it < te; it++) {
		int n0 = (int)(it / c->n_ob * LIN_NB), o0 = (int)(it % c->n_ob * LIN_OB);
		int n1 = n0 + LIN_NB < c->N ? n0 + LIN_NB : c->N;
		int o1 = o0 + LIN_OB < O ? o0 + LIN_OB : O;
		int n = n0;
		for (; n + 4 <= n1; n += 4) {
			const float *x0 = c->x + (int64_t)n * I;
			for (int o = o0; o < o1; o++) {
				float r[4];
				dot4(x0, x0 + I, x0 + 2 * I, x0 + 3 * I, c->w + (int64_t)o * I, I, r);
				float bias = c->b ? c->b[o] : 0.0f;
				for (int k = 0; k < 4; k++)
					c->out[(int64_t)(n + k) * O + o] = r[k] + bias;
			}
		}
		for (; n < n1; n++)
			for (int o = o0; o < o1; o++)
				c->out[(int64_t)n * O + o] =
					dot(c->x + (int64_t)n * I, c->w + (int64_t)o * I, I) +
					(c->b ? c->b[o] : 0.0f);
	}
}

void
zinf_op_linear_fwd(zinf_pool *p, float *out, const float *x, const float *w, const float *b,
		   int N, int I, int O)
{
	struct lin_ctx c = {.out = out, .x = x, .w = w, .b = b, .N = N, .I = I, .O = O,
			    .n_ob = ceil_div(O, LIN_OB)};
	zinf_pool_for(p, ceil_div(N, LIN_NB) * c.n_ob, lin_fwd_tiles, &c);
}

/* dx[n] = sum over o (ascending) of dout[n, o] * w[o] */
static void
lin_bwd_dx_tiles(void *arg, int64_t tb, int64_t te)
{
	const struct lin_ctx *c = arg;
	const int I = c->I, O = c->O;
	for (int64_t it = tb; it < te; it++) {
		int n0 = (int)(it * LIN_NB), n1 = n0 + LIN_NB < c->N ? n0 + LIN_NB : c->N;
		memset(c->dx + (int64_t)n0 * I, 0, (size_t)(n1 - n0) * I * sizeof(float));
		for (int o0 = 0; o0 < O; o0 += LIN_OB) {
			int o1 = o0 + LIN_OB < O ? o0 + LIN_OB : O;
			for (int n = n0; n < n1; n++) {
				float *dx = c->dx + (int64_t)n * I;
				const float *dy = c->dout + (int64_t)n * O;
				const float *w = c->w + (int64_t)o0 * I;
				int o = o0;
				for (; o + 4 <= o1; o += 4, w += 4 * I)
					axpy4(dx, dy + o, w, w + I, w + 2 * I, w + 3 * I, I);
				for (; o < o1; o++, w += I)
					axpy(dx, dy[o], w, I);
			}
		}
	}
}

/* dw[o, i] += sum over n (ascending) of dout[n, o] * x[n, i]; db[o] += sum of dout[n, o]. */
static void
lin_bwd_dw_tiles(void *arg, int64_t tb, int64_t te)
{
	const struct lin_ctx *c = arg;
	const int I = c->I, O = c->O;
	for (int64_t it = tb; it < te; it++) {
		int o0 = (int)(it / c->n_wi * LIN_WO), i0 = (int)(it % c->n_wi * LIN_WI);
		int o1 = o0 + LIN_WO < O ? o0 + LIN_WO : O;
		int i1 = i0 + LIN_WI < I ? i0 + LIN_WI : I;
		float acc[LIN_WO][LIN_WI];
		float bacc[LIN_WO] = {0};
		for (int o = o0; o < o1; o++)
			memset(acc[o - o0], 0, sizeof(acc[0]));
		int64_t n = 0;
		for (; n + 4 <= c->N; n += 4) {
			const float *xr = c->x + n * I + i0;
			const float *dy = c->dout + n * O;
			for (int o = o0; o < o1; o++) {
				float a[4] = {dy[o], dy[O + o], dy[2 * O + o], dy[3 * O + o]};
				axpy4(acc[o - o0], a, xr, xr + I, xr + 2 * I, xr + 3 * I, i1 - i0);
				bacc[o - o0] = (((bacc[o - o0] + a[0]) + a[1]) + a[2]) + a[3];
			}
		}
		for (; n < c->N; n++) {
			const float *xr = c->x + n * I + i0;
			const float *dy = c->dout + n * O;
			for (int o = o0; o < o1; o++) {
				axpy(acc[o - o0], dy[o], xr, i1 - i0);
				bacc[o - o0] += dy[o];
			}
		}
		for (int o = o0; o < o1; o++) {
			float *d = c->dw + (int64_t)o * I;
			for (int i = i0; i < i1; i++)
				d[i] += acc[o - o0][i - i0];
			if (c->db && i0 == 0)
				c->db[o] += bacc[o - o0];
		}
	}
}

void
zinf_op_linear_bwd(zinf_pool *p, float *dx, float *dw, float *db, const float *dout,
		   const float *x, const float *w, int N, int I, int O)
{
	struct lin_ctx c = {.dx = dx, .dw = dw, .db = db, .dout = dout, .x = x, .w = w,
			    .N = N, .I = I, .O = O, .n_wi = ceil_div(I, LIN_WI)};
	if (dx)
		zinf_pool_for(p, ceil_div(N, LIN_NB), lin_bwd_dx_tiles, &c);
	zinf_pool_for(p, ceil_div(O, LIN_WO) * c.n_wi, lin_bwd_dw_tiles, &c);
}

/* ---- elementwise ------------------------------------------------------------------------- */

struct ew_ctx {
	float *y;
	const float *x, *dout;
	int F;
};

static void
add_chunks(void *arg, int64_t b, int64_t e)
{
	const struct ew_ctx *c = arg;
	for (int64_t i = b; i < e; i++)
		c->y[i] += c->x[i];
}

void
zinf_op_add(zinf_pool *p, float *y, const float *x, int64_t n)
{
	struct ew_ctx c = {.y = y, .x = x};
	zinf_pool_for(p, n, add_chunks, &c);
}

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

static void
gelu_fwd_range(void *arg, int64_t b, int64_t e)
{
	const struct ew_ctx *c = arg;
	for (int64_t i = b; i < e; i++) {
		float x = c->x[i];
		float u = GELU_K * (x + GELU_C * x * x * x);
		c->y[i] = 0.5f * x * (1.0f + tanhf(u));
	}
}

/* d/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = k (1 + 3 c x^2) */
static void
gelu_bwd_range(void *arg, int64_t b, int64_t e)
{
	const struct ew_ctx *c = arg;
	for (int64_t i = b; i < e; i++) {
		float x = c->x[i];
		float th = tanhf(GELU_K * (x + GELU_C * x * x * x));
		float du = GELU_K * (1.0f + 3.0f * GELU_C * x * x);
		c->y[i] = c->dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
	}
}

void
zinf_op_gelu_fwd(zinf_pool *p, float *out, const float *x, int64_t n)
{
	struct ew_ctx c = {.y = out, .x = x};
	zinf_pool_for(p, n, gelu_fwd_range, &c);
}

void
zinf_op_gelu_bwd(zinf_pool *p, float *dx, const float *dout, const float *x, int64_t n)
{
	struct ew_ctx c = {.y = dx, .x = x, .dout = dout};
	zinf_pool_for(p, n, gelu_bwd_range, &c);
}

static void
swiglu_fwd_rows(void *arg, int64_t b, int64_t e)
{
	const struct ew_ctx *c = arg;
	const int F = c->F;
	for (int64_t n = b; n < e; n++) {
		const float *g = c->x + n * 2 * F, *u = g + F;
		float *o = c->y + n * F;
		for (int i = 0; i < F; i++) {
			float s = 1.0f / (1.0f + expf(-g[i]));
			o[i] = g[i] * s * u[i];
		}
	}
}

/* silu'(g) = s (1 + g (1 - s)), s = sigmoid(g) */
static void
swiglu_bwd_rows(void *arg, int64_t b, int64_t e)
{
	const struct ew_ctx *c = arg;
	const int F = c->F;
	for (int64_t n = b; n < e; n++) {
		const float *g = c->x + n * 2 * F, *u = g + F, *dy = c->dout + n * F;
		float *dg = c->y + n * 2 * F, *du = dg + F;
		for (int i = 0; i < F; i++) {
			float s = 1.0f / (1.0f + expf(-g[i]));
			dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
			du[i] = dy[i] * g[i] * s;
		}
	}
}

void
zinf_op_swiglu_fwd(zinf_pool *p, float *out, const float *gu, int N, int F)
{
	struct ew_ctx c = {.y = out, .x = gu, .F = F};
	zinf_pool_for(p, N, swiglu_fwd_rows, &c);
}

void
zinf_op_swiglu_bwd(zinf_pool *p, float *dgu, const float *dout, const float *gu, int N, int F)
{
	struct ew_ctx c = {.y = dgu, .x = gu, .dout = dout, .F = F};
	zinf_pool_for(p, N, swiglu_bwd_rows, &c);
}

/* ---- rope -------------------------------------------------------------------------------- */

/* HF: inv_freq = 1 / theta^(arange(0, hd, 2) / hd) in fp32. llama3 (HF
 * _compute_llama3_parameters): wavelengths longer than original_max_pos / low_freq_factor are
 * divided by factor, shorter than original_max_pos / high_freq_factor kept, and in between
 * blended with smooth = (original_max_pos / wavelen - low) / (high - low). */
void
zinf_op_rope_table(float *cos_t, float *sin_t, int T, int hd, const zinf_rope_cfg *cfg)
{
	const int h = hd / 2;
	for (int i = 0; i < h; i++) {
		float inv = 1.0f / powf(cfg->theta, (float)(2 * i) / (float)hd);
		if (cfg->llama3) {
			double old = cfg->original_max_pos;
			double low_wl = old / cfg->low_freq_factor, high_wl = old / cfg->high_freq_factor;
			double wl = 2.0 * M_PI / inv, f = inv;
			if (wl > low_wl) {
				f = inv / cfg->factor;
			} else if (wl >= high_wl) {
				double sm = (old / wl - cfg->low_freq_factor) /
					    (cfg->high_freq_factor - cfg->low_freq_factor);
				f = (1.0 - sm) * inv / cfg->factor + sm * inv;
			}
			inv = (float)f;
		}
		for (int t = 0; t < T; t++) {
			float a = (float)t * inv;
			cos_t[(int64_t)t * h + i] = cosf(a);
			sin_t[(int64_t)t * h + i] = sinf(a);
		}
	}
}

struct rope_ctx {
	float *qkv;
	const float *cos_t, *sin_t;
	zinf_attn_shape s;
	float dir; /* +1 forward rotation, -1 its inverse (the backward) */
};

/* out[i] = x[i] cos - x[i+h] sin, out[i+h] = x[i+h] cos + x[i] sin (sin -> -sin inverts). */
static void
rope_rows(void *arg, int64_t b, int64_t e)
{
	const struct rope_ctx *c = arg;
	const int hd = c->s.hd, h = hd / 2, Q = (c->s.H + 2 * c->s.KV) * hd;
	for (int64_t n = b; n < e; n++) {
		int t = (int)(n % c->s.T);
		const float *cs = c->cos_t + (int64_t)t * h, *sn = c->sin_t + (int64_t)t * h;
		for (int head = 0; head < c->s.H + c->s.KV; head++) {
			float *x = c->qkv + n * Q + (int64_t)head * hd;
			for (int i = 0; i < h; i++) {
				float x1 = x[i], x2 = x[i + h], si = c->dir * sn[i];
				x[i] = x1 * cs[i] - x2 * si;
				x[i + h] = x2 * cs[i] + x1 * si;
			}
		}
	}
}

void
zinf_op_rope_fwd(zinf_pool *p, float *qkv, const float *cos_t, const float *sin_t,
		 zinf_attn_shape s)
{
	struct rope_ctx c = {.qkv = qkv, .cos_t = cos_t, .sin_t = sin_t, .s = s, .dir = 1.0f};
	zinf_pool_for(p, (int64_t)s.B * s.T, rope_rows, &c);
}

void
zinf_op_rope_bwd(zinf_pool *p, float *dqkv, const float *cos_t, const float *sin_t,
		 zinf_attn_shape s)
{
	struct rope_ctx c = {.qkv = dqkv, .cos_t = cos_t, .sin_t = sin_t, .s = s, .dir = -1.0f};
	zinf_pool_for(p, (int64_t)s.B * s.T, rope_rows, &c);
}

/* ---- attention --------------------------------------------------------------------------- */

struct attn_ctx {
	float *out, *lse, *dqkv, *work;
	const float *qkv, *cout, *dout, *clse;
	zinf_attn_shape s;
	float scale;
};

/* Row pointers of the qkv layout. */
static inline const float *
attn_q(const struct attn_ctx *c, int b, int t, int h)
{
	int64_t Q = (int64_t)(c->s.H + 2 * c->s.KV) * c->s.hd;
	return c->qkv + ((int64_t)b * c->s.T + t) * Q + (int64_t)h * c->s.hd;
}

static inline const float *
attn_k(const struct attn_ctx *c, int b, int t, int g)
{
	return attn_q(c, b, t, c->s.H + g);
}

static inline const float *
attn_v(const struct attn_ctx *c, int b, int t, int g)
{
	return attn_q(c, b, t, c->s.H + c->s.KV + g);
}

/* Score of query (b, h, t) against key j: the same expression in forward and backward. */
static inline float
attn_score(const struct attn_ctx *c, const float *q, int b, int j, int g)
{
	return dot(q, attn_k(c, b, j, g), c->s.hd) * c->scale;
}

/* Items (b, h, t). Pass 1: lse by an online max/sum in double; pass 2: out = sum_j
 * exp(s_j - lse) v_j, so out uses the same probabilities as the backward recomputes. */
static void
attn_fwd_rows(void *arg, int64_t rb, int64_t re)
{
	const struct attn_ctx *c = arg;
	const int T = c->s.T, H = c->s.H, hd = c->s.hd, R = c->s.H / c->s.KV;
	for (int64_t r = rb; r < re; r++) {
		int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H), g = h / R;
		const float *q = attn_q(c, b, t, h);
		double m = -INFINITY, l = 0.0;
		for (int j = 0; j <= t; j++) {
			double sc = attn_score(c, q, b, j, g);
			if (sc > m) {
				l = l * exp(m - sc) + 1.0;
				m = sc;
			} else {
				l += exp(sc - m);
			}
		}
		float lse = (float)(m + log(l));
		float *o = c->out + ((int64_t)b * T + t) * H * hd + (int64_t)h * hd;
		memset(o, 0, (size_t)hd * sizeof(float));
		for (int j = 0; j <= t; j++)
			axpy(o, expf(attn_score(c, q, b, j, g) - lse), attn_v(c, b, j, g), hd);
		c->lse[r] = lse;
	}
}

void
zinf_op_attn_fwd(zinf_pool *p, float *out, float *lse, const float *qkv, zinf_attn_shape s,
		 float scale)
{
	struct attn_ctx c = {.out = out, .lse = lse, .qkv = qkv, .s = s, .scale = scale};
	zinf_pool_for(p, (int64_t)s.B * s.H * s.T, attn_fwd_rows, &c);
}

static inline const float *
attn_row(const struct attn_ctx *c, const float *base, int b, int t, int h)
{
	return base + ((int64_t)b * c->s.T + t) * c->s.H * c->s.hd + (int64_t)h * c->s.hd;
}

/* work[(b, h, t)] = dout . out: sum_j p_j dp_j, the softmax backward's row term. */
static void
attn_bwd_rowsum(void *arg, int64_t rb, int64_t re)
{
	const struct attn_ctx *c = arg;
	const int T = c->s.T, H = c->s.H;
	for (int64_t r = rb; r < re; r++) {
		int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H);
		c->work[r] = dot(attn_row(c, c->dout, b, t, h), attn_row(c, c->cout, b, t, h), c->s.hd);
	}
}

/* p = exp(s - lse), dp = dout . v_j, ds = p (dp - D): dq = scale sum_j ds k_j. */
static void
attn_bwd_dq(void *arg, int64_t rb, int64_t re)
{
	const struct attn_ctx *c = arg;
	const int T = c->s.T, H = c->s.H, hd = c->s.hd, R = c->s.H / c->s.KV;
	const int64_t Q = (int64_t)(H + 2 * c->s.KV) * hd;
	for (int64_t r = rb; r < re; r++) {
		int t = (int)(r % T), h = (int)(r / T % H), b = (int)(r / T / H), g = h / R;
		const float *q = attn_q(c, b, t, h), *dy = attn_row(c, c->dout, b, t, h);
		float *dq = c->dqkv + ((int64_t)b * T + t) * Q + (int64_t)h * hd;
		memset(dq, 0, (size_t)hd * sizeof(float));
		for (int j = 0; j <= t; j++) {
			float pj = expf(attn_score(c, q, b, j, g) - c->clse[r]);
			float ds = pj * (dot(dy, attn_v(c, b, j, g), hd) - c->work[r]);
			axpy(dq, c->scale * ds, attn_k(c, b, j, g), hd);
		}
	}
}

/* Items (b, kv head g, key j): dk_j = scale sum ds q_t, dv_j = sum p dout_t over the group's
 * query heads (ascending) and t >= j (ascending). */
static void
attn_bwd_dkv(void *arg, int64_t rb, int64_t re)
{
	const struct attn_ctx *c = arg;
	const int T = c->s.T, H = c->s.H, KV = c->s.KV, hd = c->s.hd, R = H / KV;
	const int64_t Q = (int64_t)(H + 2 * KV) * hd;
	for (int64_t r = rb; r < re; r++) {
		int j = (int)(r % T), g = (int)(r / T % KV), b = (int)(r / T / KV);
		float *dk = c->dqkv + ((int64_t)b * T + j) * Q + (int64_t)(H + g) * hd;
		float *dv = c->dqkv + ((int64_t)b * T + j) * Q + (int64_t)(H + KV + g) * hd;
		memset(dk, 0, (size_t)hd * sizeof(float));
		memset(dv, 0, (size_t)hd * sizeof(float));
		const float *v = attn_v(c, b, j, g);
		for (int h = g * R; h < (g + 1) * R; h++)
			for (int t = j; t < T; t++) {
				int64_t row = ((int64_t)b * H + h) * T + t;
				const float *q = attn_q(c, b, t, h), *dy = attn_row(c, c->dout, b, t, h);
				float pj = expf(attn_score(c, q, b, j, g) - c->clse[row]);
				float ds = pj * (dot(dy, v, hd) - c->work[row]);
				axpy(dk, c->scale * ds, q, hd);
				axpy(dv, pj, dy, hd);
			}
	}
}

void
zinf_op_attn_bwd(zinf_pool *p, float *dqkv, float *work, const float *qkv, const float *out,
		 const float *dout, const float *lse, zinf_attn_shape s, float scale)
{
	struct attn_ctx c = {.dqkv = dqkv, .work = work, .qkv = qkv, .cout = out, .dout = dout,
			     .clse = lse, .s = s, .scale = scale};
	int64_t rows = (int64_t)s.B * s.H * s.T;
	zinf_pool_for(p, rows, attn_bwd_rowsum, &c);
	zinf_pool_for(p, rows, attn_bwd_dq, &c);
	zinf_pool_for(p, (int64_t)s.B * s.KV * s.T, attn_bwd_dkv, &c);
}

/* ---- cross-entropy ----------------------------------------------------------------------- */

struct ce_ctx {
	float *lse, *dlogits;
	const float *logits, *clse;
	const int32_t *tgt;
	int V;
	float scale;
};

static void
ce_fwd_rows(void *arg, int64_t b, int64_t e)
{
	const struct ce_ctx *c = arg;
	for (int64_t n = b; n < e; n++) {
		const float *l = c->logits + n * c->V;
		float m = l[0];
		for (int v = 1; v < c->V; v++)
			m = l[v] > m ? l[v] : m;
		double s = 0.0;
		for (int v = 0; v < c->V; v++)
			s += exp((double)l[v] - m);
		c->lse[n] = (float)(m + log(s));
	}
}

double
zinf_op_ce_fwd(zinf_pool *p, float *lse, const float *logits, const int32_t *tgt, int N, int V,
	       int64_t *count)
{
	struct ce_ctx c = {.lse = lse, .logits = logits, .tgt = tgt, .V = V};
	zinf_pool_for(p, N, ce_fwd_rows, &c);
	double sum = 0.0;
	int64_t cnt = 0;
	for (int64_t n = 0; n < N; n++) {
		if (tgt[n] < 0)
			continue;
		sum += (double)lse[n] - logits[n * V + tgt[n]];
		cnt++;
	}
	*count = cnt;
	return cnt ? sum / (double)cnt : 0.0;
}

static void
ce_bwd_rows(void *arg, int64_t b, int64_t e)
{
	const struct ce_ctx *c = arg;
	for (int64_t n = b; n < e; n++) {
		const float *l = c->logits + n * c->V;
		float *d = c->dlogits + n * c->V;
		if (c->tgt[n] < 0) {
			memset(d, 0, (size_t)c->V * sizeof(float));
			continue;
		}
		float ls = c->clse[n];
		for (int v = 0; v < c->V; v++)
			d[v] = c->scale * expf(l[v] - ls);
		d[c->tgt[n]] -= c->scale;
	}
}

void
zinf_op_ce_bwd(zinf_pool *p, float *dlogits, const float *logits, const float *lse,
	       const int32_t *tgt, int N, int V, float scale)
{
	struct ce_ctx c = {.dlogits = dlogits, .logits = logits, .clse = lse, .tgt = tgt, .V = V,
			   .scale = scale};
	zinf_pool_for(p, N, ce_bwd_rows, &c);
}
