/* zinf tune: measures the offload and aio settings on the user's disk with the engine's own swap
 * pattern, and writes them as a ds_config fragment the engine reads unchanged.
 *
 * One trial = one setting (backend, block_size, queue_depth, thread_count, buffer_count,
 * sub_group_size, pin_memory) on a fresh offload swapper configured as engine/optstep.c
 * configures it (host budget (k+1) x chunk + k staging slots, 12 B/param sub-group chunks):
 *   fill   every chunk written once (host -> NVMe, k in flight): the write rate;
 *   params parameter-sized chunks (2 B x sub_group_size) read into the work tier, k in flight
 *          (the forward/backward fetch of offload_param): the read rate;
 *   step   the pipelined optimizer step: sub-group i+1.. fetched (NVMe -> work tier) while i
 *          is written back (work tier -> NVMe), at most k resident: the mixed rate.
 * The work tier is the GPU when one is usable (NVMe -> pinned slot -> GPU and back), else host
 * memory. The score is (param + step bytes) / (param + step time).
 *
 * Search: coordinate descent from the config defaults, one knob at a time in the order above,
 * keeping a value only when it beats the best so far by 3% (noise); a trial projected below 60%
 * of the best after a quarter of its bytes is stopped (pruned). The bytes per trial are sized
 * from a first trial so all trials fit in --seconds.
 *
 * Outputs: a table (stdout), --out tuned.json (the fragment), tuned.report.json (rates,
 * trials and the fragment, read by `zinf plan --tuned`), tuned.svg (GB/s against each knob),
 * and with --merge FILE the merged config FILE -> FILE.tuned.json. */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "offload/offload.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define PROG "zinf tune"
#define MIN_BUDGET (64ull << 20)
#define STAGING_MAX (16ull << 20) /* offload_swapper_opts' default buffer_size, optstep's cap */

enum { K_BACKEND, K_BLOCK, K_QD, K_THREADS, K_BC, K_SG, K_PIN, K_COUNT };
static const char *const knob_names[K_COUNT] = {
        "backend", "block_size", "queue_depth", "thread_count", "buffer_count",
        "sub_group_size", "pin_memory"};
#define MAX_VALS 8

typedef struct setting {
	uint64_t v[K_COUNT]; /* backend as iosched_backend, pin as 0/1 */
} setting;

typedef struct trial {
	setting s;
	int knob; /* the knob this trial varied, -1 for the baseline */
	double score, write_gbs, read_gbs, mixed_gbs, secs;
	bool pruned, skipped;
	char note[160];
} trial;

typedef struct tuner {
	const char *dir;
	char dir_abs[PATH_MAX];
	uint64_t budget, volume, nvme_free;
	unsigned seconds;
	bool quick, gpu, tty, no_prune;
	uint64_t vals[K_COUNT][MAX_VALS];
	int nvals[K_COUNT];
	trial *trials;
	int ntrials, cap, planned;
	double best_score;
	uint64_t t_start;
	double pcie_gbs;
} tuner;

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf tune --nvme_path DIR [--host_budget SIZE] [--seconds N] [--out FILE]\n\n"
	        "  --nvme_path DIR      folder on the disk to tune (swap files are made and removed)\n"
	        "  --host_budget SIZE   host memory the offload buffers may use (default 16G, at\n"
	        "                       least 64M, at most the machine's RAM)\n"
	        "  --seconds N          time for the whole search (default 120)\n"
	        "  --quick              a few seconds, fewer values (tests)\n"
	        "  --out FILE           config fragment (default tuned.json); next to it\n"
	        "                       FILE.report.json (measurements, for zinf plan --tuned) and\n"
	        "                       FILE.svg (throughput against each setting)\n"
	        "  --merge CONFIG       also write CONFIG with the fragment merged in, as\n"
	        "                       CONFIG.tuned.json (CONFIG's name without .json)\n\n"
	        "%s\n",
	        BENCH_SIZE_HELP);
}

static uint64_t
round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Host bytes a setting needs: what optstep asks the swapper for with an NVMe home ((k+1)
 * chunks + k staging slots) plus k parameter buffers; through to the GPU, write-backs that
 * step down GPU -> host -> NVMe can hold another (k+1) host chunk copies while in flight
 * (seen on the H200: the default setting ran out of an unpadded budget). */
static uint64_t
host_need(const setting *s, bool gpu)
{
	uint64_t k = s->v[K_BC], full = round_up(12 * s->v[K_SG], 4096);
	uint64_t pch = round_up(2 * s->v[K_SG], 4096);
	return (k + 1) * full * (gpu ? 2 : 1) + k * (full < STAGING_MAX ? full : STAGING_MAX) +
	       k * pch;
}

static const char *
fmt_val(int knob, uint64_t v, char *buf, size_t len)
{
	if (knob == K_BACKEND)
		snprintf(buf, len, "%s", iosched_backend_name((iosched_backend)v));
	else if (knob == K_PIN)
		snprintf(buf, len, "%s", v ? "true" : "false");
	else if (knob == K_BLOCK)
		bench_fmt_size_arg(v, buf, len);
	else if (knob == K_SG) {
		if (v % 1000000 == 0)
			snprintf(buf, len, "%" PRIu64 "M", v / 1000000);
		else
			snprintf(buf, len, "%" PRIu64, v);
	} else
		snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

#ifdef ZINF_HAVE_CUDA
/* pinned <-> GPU, both directions at once, 256 MiB each: per-direction GB/s, or 0. */
static double
measure_pcie(void)
{
	const size_t n = 256u << 20;
	void *h = NULL, *d = NULL;
	cudaStream_t s[2] = {0, 0};
	double gbs = 0;
	cudaError_t e = cudaMallocHost(&h, 2 * n);
	if (e == cudaSuccess)
		e = cudaMalloc(&d, 2 * n);
	for (int i = 0; i < 2 && e == cudaSuccess; i++)
		e = cudaStreamCreateWithFlags(&s[i], cudaStreamNonBlocking);
	for (int rep = 0; rep < 2 && e == cudaSuccess; rep++) { /* first = warm-up */
		uint64_t t0 = bench_now_ns();
		e = cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s[0]);
		if (e == cudaSuccess)
			e = cudaMemcpyAsync((char *)h + n, (char *)d + n, n, cudaMemcpyDeviceToHost,
			                    s[1]);
		if (e == cudaSuccess)
			e = cudaStreamSynchronize(s[0]);
		if (e == cudaSuccess)
			e = cudaStreamSynchronize(s[1]);
		gbs = (double)n / ((double)(bench_now_ns() - t0) * 1e-9) * 1e-9;
	}
	for (int i = 0; i < 2; i++)
		if (s[i])
			cudaStreamDestroy(s[i]);
	cudaFree(d);
	cudaFreeHost(h);
	return e == cudaSuccess ? gbs : 0;
}
#endif

/* Keeps up to k operations in flight over chunks [first, first + n): op 0 = write the chunk
 * from a host copy, 1 = fetch to the work tier then drop, 2 = fetch, mark dirty, write back.
 * Stops early (pruned) when the projected rate falls below `floor_gbs` after a quarter of the
 * bytes. Returns 0 or -errno; *secs the time, *bytes_done the bytes moved. */
static int
pump(offload_swapper_t *sw, const int *ids, uint64_t n, uint64_t chunk, unsigned k, int op,
     offload_tier work, double floor_gbs, double *secs, uint64_t *bytes_done, bool *pruned)
{
	uint64_t next = 0, done = 0, moved = 0;
	unsigned resident = 0;
	int ret = 0;
	bool stop = false;
	uint64_t t0 = bench_now_ns();
	*pruned = false;
	while ((done < n || resident) && !(stop && !resident)) {
		while (!ret && !stop && next < n && resident < k) {
			int id = ids[next];
			void *p;
			if (op == 0) {
				if ((ret = offload_chunk_alloc(sw, id, OFFLOAD_TIER_HOST, &p)))
					break;
				memset(p, (int)(next & 0xff) | 1, 4096);
				ret = offload_chunk_evict(sw, id, OFFLOAD_TIER_HOST, 0);
			} else {
				ret = offload_chunk_fetch(sw, id, work, 1);
			}
			if (ret)
				break;
			next++;
			resident++;
		}
		if (ret)
			stop = true;
		if (!resident)
			break;
		offload_event ev[32];
		int got = offload_poll(sw, ev, 32, 1, -1);
		if (got < 0) {
			ret = got;
			break;
		}
		for (int e = 0; e < got; e++) {
			if (ev[e].res < 0) {
				if (!ret)
					ret = ev[e].res;
				stop = true;
				resident--;
				continue;
			}
			if (op == 2 && ev[e].op == OFFLOAD_OP_FETCH && ev[e].tag == 1) {
				/* the step changed the sub-group: write it back as optstep does: from
				 * the GPU a fetch into NVMe (staged), then the GPU copy is dropped;
				 * from host memory an evict (evict steps down one tier only, so from
				 * the GPU it would stop in host memory) */
				int r = offload_chunk_dirty(sw, ev[e].chunk, work);
				if (!r)
					r = work == OFFLOAD_TIER_GPU
					            ? offload_chunk_fetch(sw, ev[e].chunk, OFFLOAD_TIER_NVME, 2)
					            : offload_chunk_evict(sw, ev[e].chunk, work, 2);
				moved += chunk;
				if (r) {
					if (!ret)
						ret = r;
					stop = true;
					resident--;
				}
				continue;
			}
			if (op == 1 || (op == 2 && work == OFFLOAD_TIER_GPU))
				(void)offload_chunk_drop(sw, ev[e].chunk, work);
			moved += chunk;
			resident--;
			done++;
		}
		double t = (double)(bench_now_ns() - t0) * 1e-9;
		uint64_t total = (op == 2 ? 2 : 1) * n * chunk;
		if (!stop && floor_gbs > 0 && moved * 4 >= total && t > 0.05 &&
		    (double)moved / t * 1e-9 < floor_gbs) {
			stop = true;
			*pruned = true;
		}
	}
	*secs = (double)(bench_now_ns() - t0) * 1e-9;
	*bytes_done = moved;
	return ret;
}

/* One trial. Returns 0 (score set, maybe skipped/pruned) or -errno for an I/O failure. */
static int
run_trial(tuner *t, trial *tr)
{
	const setting *s = &tr->s;
	uint64_t sg = s->v[K_SG], k = s->v[K_BC];
	uint64_t full = round_up(12 * sg, 4096), pch = round_up(2 * sg, 4096);
	/* settings whose sub-groups alone exceed the trial volume are skipped, but never the
	 * defaults or the tuned setting: they are the baseline and what the result rests on (a
	 * slow disk or a sanitizer build calibrates a small volume) */
	if ((k + 1) * full > 2 * t->volume && tr->knob >= 0) {
		char b1[32], b2[32];
		tr->skipped = true;
		snprintf(tr->note, sizeof(tr->note),
		         "%s per trial for %" PRIu64 " sub-groups, more than --seconds allows (%s)",
		         bench_fmt_size((k + 1) * full, b1, sizeof(b1)), k + 1,
		         bench_fmt_size(2 * t->volume, b2, sizeof(b2)));
		return 0;
	}
	if (host_need(s, t->gpu) > t->budget) {
		char b1[32], b2[32];
		tr->skipped = true;
		snprintf(tr->note, sizeof(tr->note), "needs %s of host memory, budget %s",
		         bench_fmt_size(host_need(s, t->gpu), b1, sizeof(b1)),
		         bench_fmt_size(t->budget, b2, sizeof(b2)));
		return 0;
	}
	uint64_t g = (t->volume + full - 1) / full;
	if (g < 2 * k)
		g = 2 * k;
	uint64_t gp = (g * full / 6 + pch - 1) / pch;
	if (gp < k)
		gp = k;
	const char *paths[1] = {t->dir_abs};
	offload_swapper_opts so;
	offload_swapper_opts_init(&so);
	so.buffer_count = (unsigned)k;
	so.buffer_size = full < STAGING_MAX ? full : STAGING_MAX;
	so.pin_memory = s->v[K_PIN] != 0;
	so.allow_unpinned = true;
	so.host_budget = host_need(s, t->gpu) + (1u << 20);
	if (t->gpu)
		so.gpu_budget = k * (full > pch ? full : pch) + (1u << 20);
	so.nvme_paths = paths;
	so.nvme_path_count = 1;
	so.nvme_capacity = g * round_up(full, 1u << 20) + gp * round_up(pch, 1u << 20);
	so.max_chunks = (unsigned)(g + gp + 16);
	so.max_ops = (unsigned)k + 8;
	char run[64];
	snprintf(run, sizeof(run), "tune-%d", (int)getpid());
	so.run_id = run;
	so.aio.backend = (iosched_backend)s->v[K_BACKEND];
	so.aio.block_size = s->v[K_BLOCK];
	so.aio.queue_depth = (unsigned)s->v[K_QD];
	so.aio.thread_count = (unsigned)s->v[K_THREADS];
	so.aio.quiet = true;
	offload_swapper_t *sw;
	char err[512];
	if (offload_swapper_create(&so, &sw, err, sizeof(err))) {
		tr->skipped = true;
		snprintf(tr->note, sizeof(tr->note), "cannot start: %.140s", err);
		return 0;
	}
	int *ids = calloc(g + gp, sizeof(*ids));
	int ret = ids ? 0 : -ENOMEM;
	for (uint64_t i = 0; !ret && i < g + gp; i++) {
		ids[i] = offload_chunk_create(sw, i < g ? "tune.sg" : "tune.param",
		                              i < g ? 12 * sg : 2 * sg);
		if (ids[i] < 0)
			ret = ids[i];
	}
	offload_tier work = t->gpu ? OFFLOAD_TIER_GPU : OFFLOAD_TIER_HOST;
	double tw = 0, tp = 0, ts = 0;
	uint64_t bw = 0, bp = 0, bs = 0;
	bool pr = false;
	double floor = t->best_score > 0 && !t->no_prune ? 0.6 * t->best_score : 0;
	if (!ret)
		ret = pump(sw, ids, g, full, (unsigned)k, 0, work, 0, &tw, &bw, &pr);
	if (!ret) {
		double t2 = 0;
		uint64_t b2 = 0;
		ret = pump(sw, ids + g, gp, pch, (unsigned)k, 0, work, 0, &t2, &b2, &pr);
		tw += t2;
		bw += b2;
	}
	if (!ret)
		ret = pump(sw, ids + g, gp, pch, (unsigned)k, 1, work, floor, &tp, &bp, &pr);
	if (!ret && !pr)
		ret = pump(sw, ids, g, full, (unsigned)k, 2, work, floor, &ts, &bs, &pr);
	if (ret)
		snprintf(tr->note, sizeof(tr->note), "%.150s", offload_swapper_last_error(sw));
	free(ids);
	offload_swapper_destroy(sw);
	if (ret)
		return ret;
	tr->pruned = pr;
	tr->write_gbs = tw > 0 ? (double)bw / tw * 1e-9 : 0;
	tr->read_gbs = tp > 0 ? (double)bp / tp * 1e-9 : 0;
	tr->mixed_gbs = ts > 0 ? (double)bs / ts * 1e-9 : 0;
	tr->score = tp + ts > 0 ? (double)(bp + bs) / (tp + ts) * 1e-9 : 0;
	tr->secs = tw + tp + ts;
	if (pr)
		snprintf(tr->note, sizeof(tr->note), "pruned: below 60%% of the best");
	return 0;
}

static void
progress(tuner *t, const trial *tr)
{
	double el = (double)(bench_now_ns() - t->t_start) * 1e-9;
	int done = t->ntrials;
	double eta = done ? el / done * (t->planned > done ? t->planned - done : 0) : 0;
	char v[32];
	const char *kn = tr->knob == -3 ? "confirm tuned" : tr->knob < 0 ? "defaults" : knob_names[tr->knob];
	fmt_val(tr->knob < 0 ? K_BLOCK : tr->knob, tr->knob < 0 ? tr->s.v[K_BLOCK] : tr->s.v[tr->knob],
	        v, sizeof(v));
	if (tr->knob < 0)
		snprintf(v, sizeof(v), "-");
	int w = 24, fill = t->planned ? done * w / t->planned : w;
	if (fill > w)
		fill = w;
	char bar[32];
	for (int i = 0; i < w; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[w] = 0;
	fprintf(stderr, "%s[%s] %2d/%-2d %-14s %-9s %6.2f GB/s  best %6.2f  ETA %3.0f s%s",
	        t->tty ? "\r" : "", bar, done, t->planned, kn, v, tr->score, t->best_score, eta,
	        t->tty ? "\033[K" : "\n");
}

static int
record(tuner *t, const trial *tr)
{
	if (t->ntrials == t->cap) {
		int nc = t->cap ? 2 * t->cap : 64;
		trial *nt = realloc(t->trials, (size_t)nc * sizeof(*nt));
		if (!nt)
			return -ENOMEM;
		t->trials = nt;
		t->cap = nc;
	}
	t->trials[t->ntrials++] = *tr;
	if (!tr->skipped && !tr->pruned && tr->score > t->best_score)
		t->best_score = tr->score;
	progress(t, tr);
	return 0;
}

/* ---- outputs ---- */

static cJSON *
fragment(const tuner *t, const setting *s)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *aio = cJSON_AddObjectToObject(j, "aio");
	cJSON_AddNumberToObject(aio, "block_size", (double)s->v[K_BLOCK]);
	cJSON_AddNumberToObject(aio, "queue_depth", (double)s->v[K_QD]);
	cJSON_AddNumberToObject(aio, "thread_count", (double)s->v[K_THREADS]);
	/* "auto" is the config's default and the loader takes no "auto" for this key: a
	 * setting that kept the default backend writes none */
	if ((iosched_backend)s->v[K_BACKEND] != IOSCHED_BACKEND_AUTO)
		cJSON_AddStringToObject(aio, "backend",
		                        iosched_backend_name((iosched_backend)s->v[K_BACKEND]));
	cJSON *z = cJSON_AddObjectToObject(j, "zero_optimization");
	cJSON_AddNumberToObject(z, "stage", 3);
	cJSON_AddNumberToObject(z, "sub_group_size", (double)s->v[K_SG]);
	cJSON *oo = cJSON_AddObjectToObject(z, "offload_optimizer");
	cJSON_AddStringToObject(oo, "device", "nvme");
	cJSON_AddStringToObject(oo, "nvme_path", t->dir_abs);
	cJSON_AddBoolToObject(oo, "pin_memory", s->v[K_PIN] != 0);
	cJSON_AddNumberToObject(oo, "buffer_count", (double)s->v[K_BC]);
	cJSON *op = cJSON_AddObjectToObject(z, "offload_param");
	cJSON_AddStringToObject(op, "device", "nvme");
	cJSON_AddStringToObject(op, "nvme_path", t->dir_abs);
	cJSON_AddBoolToObject(op, "pin_memory", s->v[K_PIN] != 0);
	cJSON_AddNumberToObject(op, "buffer_count", (double)s->v[K_BC]);
	cJSON_AddNumberToObject(op, "buffer_size", (double)s->v[K_SG]);
	return j;
}

static int
write_text(const char *path, const char *text)
{
	char tmp[PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, PROG ": cannot write %s: %s; pass --out in a writable folder\n", tmp,
		        strerror(errno));
		return -errno;
	}
	bool bad = fputs(text, f) < 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path)) {
		fprintf(stderr, PROG ": writing %s failed: %s\n", path, strerror(errno));
		unlink(tmp);
		return -EIO;
	}
	return 0;
}

static int
write_json(const char *path, const cJSON *j)
{
	char *text = cJSON_Print(j);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	char *t2 = malloc(n + 2);
	int ret = -ENOMEM;
	if (t2) {
		memcpy(t2, text, n);
		t2[n] = '\n';
		t2[n + 1] = 0;
		ret = write_text(path, t2);
	}
	free(t2);
	free(text);
	return ret;
}

/* path with ".json" (if present) replaced by `suffix` */
static void
sibling(const char *path, const char *suffix, char *out, size_t len)
{
	size_t n = strlen(path);
	if (n > 5 && !strcmp(path + n - 5, ".json"))
		n -= 5;
	snprintf(out, len, "%.*s%s", (int)n, path, suffix);
}

static void
merge_into(cJSON *dst, const cJSON *src)
{
	for (const cJSON *c = src->child; c; c = c->next) {
		cJSON *d = cJSON_GetObjectItemCaseSensitive(dst, c->string);
		if (d && cJSON_IsObject(d) && cJSON_IsObject(c)) {
			merge_into(d, c);
			continue;
		}
		cJSON *dup = cJSON_Duplicate(c, 1);
		if (!dup)
			continue;
		if (d)
			cJSON_ReplaceItemInObjectCaseSensitive(dst, c->string, dup);
		else
			cJSON_AddItemToObject(dst, c->string, dup);
	}
}

static int
merge_config(const char *cfg_path, const cJSON *frag, char *out, size_t outlen)
{
	FILE *f = fopen(cfg_path, "r");
	if (!f) {
		fprintf(stderr, PROG ": --merge '%s': %s; pass an existing ds_config.json\n",
		        cfg_path, strerror(errno));
		return -ENOENT;
	}
	char *buf = NULL;
	size_t cap = 0, len = 0, got;
	do {
		if (len + 65536 > cap) {
			char *nb = realloc(buf, cap = cap ? 2 * cap : 131072);
			if (!nb || cap > (64u << 20)) {
				free(nb ? nb : buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
	} while (got);
	fclose(f);
	buf[len] = 0;
	cJSON *j = cJSON_Parse(buf);
	free(buf);
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		fprintf(stderr,
		        PROG ": --merge '%s': not a JSON object (check it: zinf config check %s)\n",
		        cfg_path, cfg_path);
		return -EINVAL;
	}
	merge_into(j, frag);
	sibling(cfg_path, ".tuned.json", out, outlen);
	int ret = write_json(out, j);
	cJSON_Delete(j);
	return ret;
}

static void
svg_text(FILE *f, double x, double y, const char *anchor, int size, const char *s)
{
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\">%s</text>\n", x,
	        y, anchor, size, s);
}

/* One panel per knob: the value tried (x) against GB/s (bar); the chosen value filled dark,
 * pruned trials hatched grey, skipped ones marked x. */
static int
write_svg(const tuner *t, const setting *best, const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, PROG ": cannot write %s: %s\n", path, strerror(errno));
		return -errno;
	}
	const int pw = 240, ph = 170, cols = 4;
	double ymax = 0;
	for (int i = 0; i < t->ntrials; i++)
		if (t->trials[i].score > ymax)
			ymax = t->trials[i].score;
	if (ymax <= 0)
		ymax = 1;
	int rows = (K_COUNT + cols - 1) / cols;
	fprintf(f,
	        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	        "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" "
	        "fill=\"white\"/>\n",
	        cols * pw, rows * ph + 30);
	char title[256];
	snprintf(title, sizeof(title), "zinf tune %.120s: GB/s (param read + optimizer read/write) per setting",
	         t->dir_abs);
	svg_text(f, 8, 18, "start", 13, title);
	for (int k = 0; k < K_COUNT; k++) {
		double x0 = (k % cols) * pw + 40, y0 = (k / cols) * ph + 40, w = pw - 55, h = ph - 60;
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
		           "stroke=\"#888\"/>\n",
		        x0, y0, w, h);
		svg_text(f, x0 + w / 2, y0 - 4, "middle", 11, knob_names[k]);
		char lab[32];
		snprintf(lab, sizeof(lab), "%.2f", ymax);
		svg_text(f, x0 - 3, y0 + 8, "end", 9, lab);
		svg_text(f, x0 - 3, y0 + h, "end", 9, "0");
		int n = t->nvals[k];
		for (int vi = 0; vi < n; vi++) {
			uint64_t v = t->vals[k][vi];
			const trial *tr = NULL;
			for (int i = 0; i < t->ntrials; i++) /* the trial that varied this knob */
				if (t->trials[i].knob == k && t->trials[i].s.v[k] == v)
					tr = &t->trials[i];
			double bw = w / n, bx = x0 + vi * bw + bw * 0.15;
			fmt_val(k, v, lab, sizeof(lab));
			svg_text(f, x0 + vi * bw + bw / 2, y0 + h + 12, "middle", 9, lab);
			if (!tr)
				continue;
			if (tr->skipped) {
				svg_text(f, x0 + vi * bw + bw / 2, y0 + h - 4, "middle", 10, "x");
				continue;
			}
			double bh = tr->score / ymax * h;
			const char *fill = v == best->v[k] ? "#1f4e9a" : tr->pruned ? "#bbb" : "#7fa7e0";
			fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
			           "fill=\"%s\"/>\n",
			        bx, y0 + h - bh, bw * 0.7, bh, fill);
		}
	}
	fprintf(f, "</svg>\n");
	return fclose(f) ? -EIO : 0;
}

/* ---- search ---- */

static int
parse_args(int argc, char **argv, tuner *t, const char **out, const char **merge)
{
	uint64_t secs = 0, budget = 16ull << 30;
	bool have_budget = false;
	*out = "tuned.json";
	*merge = NULL;
	for (int i = 1; i < argc; i++) {
		const char *v;
		int r;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(argv[i], "--quick")) {
			t->quick = true;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--nvme_path", &v)) ||
		    (r = bench_flag_value(PROG, argc, argv, &i, "--nvme-path", &v))) {
			if (r < 0)
				return -EINVAL;
			t->dir = v;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--host_budget", &v))) {
			if (r < 0 || bench_parse_size(PROG, "--host_budget", v, 1, 1ull << 50, &budget))
				return -EINVAL;
			have_budget = true;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--seconds", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--seconds", v, 1, 3600, &secs))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--out", &v))) {
			if (r < 0)
				return -EINVAL;
			*out = v;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--merge", &v))) {
			if (r < 0)
				return -EINVAL;
			*merge = v;
			continue;
		}
		fprintf(stderr, PROG ": unknown option '%s' (see zinf tune --help)\n", argv[i]);
		return -EINVAL;
	}
	if (!t->dir) {
		fprintf(stderr, PROG ": --nvme_path DIR is required: the folder on the disk to tune\n");
		return -EINVAL;
	}
	struct stat st;
	if (stat(t->dir, &st)) {
		fprintf(stderr,
		        PROG ": --nvme_path '%s': %s: pass an existing folder on the disk to tune\n",
		        t->dir, strerror(errno));
		return -EINVAL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr,
		        PROG ": --nvme_path '%s': not a folder: pass the folder (mount point) on the "
		        "disk to tune\n",
		        t->dir);
		return -EINVAL;
	}
	if (access(t->dir, W_OK | X_OK)) {
		fprintf(stderr,
		        PROG ": --nvme_path '%s': not writable (%s): pass a folder you can write, or "
		        "fix its permissions\n",
		        t->dir, strerror(errno));
		return -EINVAL;
	}
	if (!realpath(t->dir, t->dir_abs))
		snprintf(t->dir_abs, sizeof(t->dir_abs), "%s", t->dir);
	if (!have_budget && t->quick)
		budget = 256ull << 20;
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
	char b1[32], b2[32];
	if (budget < MIN_BUDGET) {
		fprintf(stderr,
		        PROG ": --host_budget %s: below %s, the least the smallest setting needs (4 "
		        "sub-groups of 1M parameters at 12 B, staging and parameter buffers): pass "
		        "--host_budget 1G or more\n",
		        bench_fmt_size(budget, b1, sizeof(b1)), bench_fmt_size(MIN_BUDGET, b2, sizeof(b2)));
		return -EINVAL;
	}
	if (ram && budget > ram) {
		fprintf(stderr,
		        PROG ": --host_budget %s: more than this machine's %s of RAM: pass at most "
		        "--host_budget %s\n",
		        bench_fmt_size(budget, b1, sizeof(b1)), bench_fmt_size(ram, b2, sizeof(b2)),
		        bench_fmt_size_arg(ram / 2 / (1u << 20) * (1u << 20), b2, sizeof(b2)));
		return -EINVAL;
	}
	t->budget = budget;
	t->seconds = secs ? (unsigned)secs : t->quick ? 5 : 120;
	struct statvfs vf;
	if (!statvfs(t->dir_abs, &vf))
		t->nvme_free = (uint64_t)vf.f_bavail * vf.f_frsize;
	return 0;
}

static void
set_vals(tuner *t)
{
	static const uint64_t be[] = {IOSCHED_BACKEND_IO_URING, IOSCHED_BACKEND_LIBAIO,
	                              IOSCHED_BACKEND_PSYNC};
	static const uint64_t blk[] = {256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20};
	static const uint64_t blkq[] = {512 << 10, 1 << 20, 2 << 20};
	static const uint64_t qd[] = {4, 8, 16, 32, 64, 128}, qdq[] = {8, 32};
	static const uint64_t th[] = {1, 2, 4}, thq[] = {1, 2};
	static const uint64_t bc[] = {3, 4, 6, 8}, bcq[] = {3, 4, 6};
	static const uint64_t sg[] = {1000000, 4000000, 16000000, 64000000, 100000000,
	                              256000000};
	static const uint64_t sgq[] = {1000000, 4000000};
	static const uint64_t pin[] = {1, 0};
#define SET(k, arr)                                                                             \
	do {                                                                                    \
		memcpy(t->vals[k], arr, sizeof(arr));                                           \
		t->nvals[k] = (int)(sizeof(arr) / sizeof(arr[0]));                              \
	} while (0)
	SET(K_BACKEND, be);
	SET(K_PIN, pin);
	if (t->quick) {
		SET(K_BLOCK, blkq);
		SET(K_QD, qdq);
		SET(K_THREADS, thq);
		SET(K_BC, bcq);
		SET(K_SG, sgq);
	} else {
		SET(K_BLOCK, blk);
		SET(K_QD, qd);
		SET(K_THREADS, th);
		SET(K_BC, bc);
		SET(K_SG, sg);
	}
#undef SET
}

static void
print_table(const tuner *t, const trial *base, const setting *best)
{
	printf("%-15s %-10s %9s %9s %9s %9s  %s\n", "knob", "value", "GB/s", "read", "write",
	       "r+w", "note");
	for (int i = 0; i < t->ntrials; i++) {
		const trial *tr = &t->trials[i];
		char v[32];
		int k = tr->knob;
		if (k < 0)
			snprintf(v, sizeof(v), "-");
		else
			fmt_val(k, tr->s.v[k], v, sizeof(v));
		printf("%-15s %-10s %9.3f %9.3f %9.3f %9.3f  %s%s\n",
		       k == -3 ? "(tuned)" : k < 0 ? "(defaults)" : knob_names[k],
		       v, tr->score, tr->read_gbs, tr->write_gbs, tr->mixed_gbs,
		       k >= 0 && tr->s.v[k] == best->v[k] && !tr->skipped ? "* " : "", tr->note);
	}
	printf("\nbest setting:");
	for (int k = 0; k < K_COUNT; k++) {
		char v[32];
		printf(" %s=%s", knob_names[k], fmt_val(k, best->v[k], v, sizeof(v)));
	}
	printf("\n");
	(void)base;
}

int
zinf_tune_main(int argc, char **argv)
{
	tuner t;
	memset(&t, 0, sizeof(t));
	const char *out, *merge;
	int ret = parse_args(argc, argv, &t, &out, &merge);
	if (ret)
		return ret > 0 ? 0 : 2;
	char why[256];
	t.gpu = offload_gpu_probe(why, sizeof(why));
	t.tty = isatty(2);
	set_vals(&t);
#ifdef ZINF_HAVE_CUDA
	if (t.gpu)
		t.pcie_gbs = measure_pcie();
#endif
	/* defaults: the config's (aio queue_depth 8, block 1M, 1 thread, buffer_count 4,
	 * pin_memory), sub_group_size the largest candidate <= DeepSpeed's 1e9 that fits */
	setting cur;
	cur.v[K_BACKEND] = IOSCHED_BACKEND_AUTO;
	cur.v[K_BLOCK] = 1 << 20;
	cur.v[K_QD] = 8;
	cur.v[K_THREADS] = 1;
	cur.v[K_BC] = 4;
	cur.v[K_PIN] = 1;
	cur.v[K_SG] = t.vals[K_SG][0]; /* calibration; the default is chosen below */
	t.planned = 5; /* baseline + 4 confirm runs */
	for (int k = 0; k < K_COUNT; k++)
		t.planned += t.nvals[k];
	printf("zinf tune: %s, host budget %.2f GiB, %u s, work tier %s%s\n", t.dir_abs,
	       (double)t.budget / (1 << 30), t.seconds, t.gpu ? "GPU" : "host",
	       t.gpu ? "" : " (no GPU: NVMe <-> host only)");

	/* calibrate the bytes per trial: a first run of the defaults */
	t.t_start = bench_now_ns();
	t.volume = t.quick ? (48ull << 20) : (512ull << 20);
	if (t.nvme_free && t.volume > t.nvme_free / 4)
		t.volume = t.nvme_free / 4 / (1u << 20) * (1u << 20);
	if (t.volume < (16u << 20)) {
		fprintf(stderr, PROG ": --nvme_path '%s': only %" PRIu64 " MiB free, need 64 MiB\n",
		        t.dir_abs, t.nvme_free >> 20);
		return 1;
	}
	trial cal = {.s = cur, .knob = -1};
	if ((ret = run_trial(&t, &cal)) || cal.skipped) {
		fprintf(stderr, PROG ": the default setting failed on %s: %s\n", t.dir_abs,
		        cal.note[0] ? cal.note : strerror(-ret));
		return 1;
	}
	/* aim each trial at --seconds / (planned trials), minus the calibration's time */
	double per = ((double)t.seconds - cal.secs) / t.planned;
	if (per < 0.05)
		per = 0.05;
	double scale = per / (cal.secs > 1e-3 ? cal.secs : 1e-3);
	uint64_t v = (uint64_t)((double)t.volume * scale);
	uint64_t vmax = t.nvme_free ? t.nvme_free / 4 : (64ull << 30);
	if (v > vmax)
		v = vmax;
	if (v > (32ull << 30))
		v = 32ull << 30;
	if (v < (16u << 20))
		v = 16u << 20;
	t.volume = v / (1u << 20) * (1u << 20);
	/* default sub_group_size: the largest candidate <= 1e8 that fits the budget and the bytes
	 * a trial may move (DeepSpeed's 1e9 needs 48 GB of buffers) */
	for (int i = 0; i < t.nvals[K_SG]; i++) {
		setting s = cur;
		s.v[K_SG] = t.vals[K_SG][i];
		uint64_t full = round_up(12 * s.v[K_SG], 4096);
		if (s.v[K_SG] <= 100000000 && host_need(&s, t.gpu) <= t.budget &&
		    (s.v[K_BC] + 1) * full <= 2 * t.volume)
			cur.v[K_SG] = s.v[K_SG];
	}

	trial base = {.s = cur, .knob = -1};
	if ((ret = run_trial(&t, &base)) || base.skipped) {
		fprintf(stderr, PROG ": the default setting failed on %s: %s\n", t.dir_abs,
		        base.note[0] ? base.note : strerror(-ret));
		return 1;
	}
	snprintf(base.note, sizeof(base.note), "baseline, %.0f MiB of optimizer state per trial",
	         (double)t.volume / (1 << 20));
	if (record(&t, &base))
		return 1;
	double best = base.score;
	trial best_tr = base;
	bool late = false;
	for (int k = 0; k < K_COUNT; k++) {
		uint64_t chosen = cur.v[k];
		for (int i = 0; i < t.nvals[k]; i++) {
			trial tr = {.s = cur, .knob = k};
			tr.s.v[k] = t.vals[k][i];
			/* past the time: the remaining values keep their current setting */
			if (!late && (double)(bench_now_ns() - t.t_start) * 1e-9 > 0.85 * t.seconds) {
				late = true;
				printf("%s--seconds %u reached: the remaining values are not tried\n",
				       t.tty ? "\n" : "", t.seconds);
			}
			if (late)
				continue;
			if (k == K_BACKEND && tr.s.v[k] == cur.v[k])
				continue;
			if ((ret = run_trial(&t, &tr))) {
				fprintf(stderr, "%s" PROG ": trial failed: %s\n", t.tty ? "\n" : "",
				        tr.note);
				free(t.trials);
				return 1;
			}
			if (record(&t, &tr))
				return 1;
			if (!tr.skipped && !tr.pruned && tr.score > best * 1.03) {
				best = tr.score;
				chosen = tr.s.v[k];
				best_tr = tr;
			}
		}
		cur.v[k] = chosen;
		if (k == K_BACKEND && cur.v[k] == IOSCHED_BACKEND_AUTO) {
			/* write the backend auto picks: io_uring, else libaio (first that started) */
			for (int i = 0; i < t.ntrials; i++)
				if (t.trials[i].knob == K_BACKEND && !t.trials[i].skipped) {
					cur.v[k] = t.trials[i].s.v[k];
					break;
				}
		}
	}
	/* confirm: defaults and the tuned setting alternately, unpruned; the tuned one is kept
	 * only if it is faster on average (search maxima are biased upward by noise) */
	double sum_def = 0, sum_tun = 0;
	trial conf_tun = best_tr;
	t.no_prune = true;
	for (int r = 0; r < 2; r++) {
		for (int w = 0; w < 2; w++) {
			trial tr = {.s = w ? cur : base.s, .knob = w ? -3 : -2};
			if ((ret = run_trial(&t, &tr)) || tr.skipped) {
				fprintf(stderr, "%s" PROG ": confirm run failed: %s\n", t.tty ? "\n" : "",
				        tr.note);
				free(t.trials);
				return 1;
			}
			snprintf(tr.note, sizeof(tr.note), "confirm %d/2", r + 1);
			if (record(&t, &tr))
				return 1;
			*(w ? &sum_tun : &sum_def) += tr.score;
			if (w && r == 1)
				conf_tun = tr;
		}
	}
	t.no_prune = false;
	base.score = sum_def / 2;
	best_tr = conf_tun;
	best_tr.score = sum_tun / 2;
	if (best_tr.score < base.score) {
		printf("the tuned setting was not faster than the defaults when confirmed: keeping "
		       "the defaults\n");
		cur = base.s;
		for (int i = 0; i < t.ntrials; i++) /* the backend auto picked */
			if (t.trials[i].knob == K_BACKEND && !t.trials[i].skipped) {
				cur.v[K_BACKEND] = t.trials[i].s.v[K_BACKEND];
				break;
			}
		best_tr.score = base.score;
	}
	if (t.tty)
		fprintf(stderr, "\n");
	print_table(&t, &base, &cur);
	double el = (double)(bench_now_ns() - t.t_start) * 1e-9;
	printf("confirmed: defaults %.3f GB/s, tuned %.3f GB/s (%.2fx); tuned read %.3f, write %.3f, read+write "
	       "%.3f GB/s; %d trials in %.1f s\n",
	       base.score, best_tr.score, best_tr.score / base.score, best_tr.read_gbs,
	       best_tr.write_gbs, best_tr.mixed_gbs, t.ntrials, el);
	if (t.gpu)
		printf("PCIe pinned <-> GPU: %.2f GB/s each way at once\n", t.pcie_gbs);

	/* outputs */
	cJSON *frag = fragment(&t, &cur);
	cJSON *rep = cJSON_CreateObject();
	cJSON *m = cJSON_AddObjectToObject(rep, "zinf_tune");
	cJSON_AddStringToObject(m, "nvme_path", t.dir_abs);
	cJSON_AddNumberToObject(m, "read_GBps", best_tr.read_gbs);
	cJSON_AddNumberToObject(m, "write_GBps", best_tr.write_gbs);
	cJSON_AddNumberToObject(m, "mixed_GBps", best_tr.mixed_gbs);
	cJSON_AddNumberToObject(m, "score_GBps", best_tr.score);
	cJSON_AddNumberToObject(m, "default_score_GBps", base.score);
	cJSON_AddNumberToObject(m, "pcie_GBps", t.pcie_gbs);
	cJSON_AddNumberToObject(m, "nvme_free_bytes", (double)t.nvme_free);
	cJSON_AddNumberToObject(m, "host_budget", (double)t.budget);
	cJSON_AddNumberToObject(m, "bytes_per_trial", (double)t.volume);
	cJSON_AddStringToObject(m, "work_tier", t.gpu ? "gpu" : "host");
	cJSON_AddNumberToObject(m, "seconds", el);
	cJSON *arr = cJSON_AddArrayToObject(m, "trials");
	for (int i = 0; i < t.ntrials; i++) {
		const trial *tr = &t.trials[i];
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "knob", tr->knob == -3   ? "confirm tuned"
		                                   : tr->knob == -2 ? "confirm defaults"
		                                   : tr->knob < 0   ? "defaults"
		                                                    : knob_names[tr->knob]);
		for (int k = 0; k < K_COUNT; k++) {
			char vb[32];
			cJSON_AddStringToObject(o, knob_names[k], fmt_val(k, tr->s.v[k], vb, sizeof(vb)));
		}
		cJSON_AddNumberToObject(o, "GBps", tr->score);
		cJSON_AddNumberToObject(o, "read_GBps", tr->read_gbs);
		cJSON_AddNumberToObject(o, "write_GBps", tr->write_gbs);
		cJSON_AddNumberToObject(o, "mixed_GBps", tr->mixed_gbs);
		cJSON_AddBoolToObject(o, "pruned", tr->pruned);
		cJSON_AddBoolToObject(o, "skipped", tr->skipped);
		cJSON_AddStringToObject(o, "note", tr->note);
		cJSON_AddItemToArray(arr, o);
	}
	cJSON_AddItemToObject(rep, "config", cJSON_Duplicate(frag, 1));
	char rpath[PATH_MAX], spath[PATH_MAX], mpath[PATH_MAX];
	sibling(out, ".report.json", rpath, sizeof(rpath));
	sibling(out, ".svg", spath, sizeof(spath));
	int rc = 0;
	if (write_json(out, frag) || write_json(rpath, rep) || write_svg(&t, &cur, spath))
		rc = 1;
	else
		printf("wrote %s (config fragment), %s, %s\n", out, rpath, spath);
	if (!rc && merge) {
		if (merge_config(merge, frag, mpath, sizeof(mpath)))
			rc = 1;
		else
			printf("wrote %s (%s with the tuned settings)\n", mpath, merge);
	}
	cJSON_Delete(frag);
	cJSON_Delete(rep);
	free(t.trials);
	return rc;
}
