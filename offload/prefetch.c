/* Prefetcher (see offload/prefetch.h). State per chunk id: how many issued positions hold it
 * and whether its fetch has completed; per position: issued, acquired, released. Issue order
 * is the access order, so a later position never takes budget before an earlier one. */
#define _GNU_SOURCE
#include "offload/prefetch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "offload_internal.h"

#define SUBSYS "offload: prefetch"

enum { C_NONE = 0, C_INFLIGHT, C_RESIDENT, C_FAILED };

struct offload_prefetch {
	offload_prefetch_backend be;
	int *order;
	uint64_t *sizes; /* by id */
	unsigned n, nids;
	uint64_t budget;
	unsigned max_inflight;
	unsigned *holders;       /* by id */
	int *cstate;             /* by id */
	int *cres;               /* by id: error of a failed fetch */
	unsigned char *released; /* by position */
	unsigned next_issue, next_acquire;
	uint64_t held;
	unsigned inflight;
	offload_prefetch_stats st;
};

void
offload_prefetch_opts_init(offload_prefetch_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->max_inflight = 4;
}

int
offload_prefetch_create(const offload_prefetch_opts *o, const offload_prefetch_backend *be,
                        offload_prefetch_t **out)
{
	*out = NULL;
	if (!o->n || !o->order || !o->sizes || !o->byte_budget || !o->max_inflight)
		return -EINVAL;
	unsigned nids = 0;
	for (unsigned i = 0; i < o->n; i++) {
		if (o->order[i] < 0)
			return -EINVAL;
		if ((unsigned)o->order[i] + 1 > nids)
			nids = (unsigned)o->order[i] + 1;
	}
	for (unsigned i = 0; i < o->n; i++)
		if (o->sizes[o->order[i]] > o->byte_budget) {
			zinf_log(ZINF_LOG_ERROR, SUBSYS,
			         "chunk %d (%llu bytes) is larger than the prefetch budget (%llu "
			         "bytes): raise the prefetch bucket size",
			         o->order[i], (unsigned long long)o->sizes[o->order[i]],
			         (unsigned long long)o->byte_budget);
			return -EINVAL;
		}
	offload_prefetch_t *pf = calloc(1, sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	pf->order = malloc(o->n * sizeof(int));
	pf->sizes = calloc(nids, sizeof(uint64_t));
	pf->holders = calloc(nids, sizeof(unsigned));
	pf->cstate = calloc(nids, sizeof(int));
	pf->cres = calloc(nids, sizeof(int));
	pf->released = calloc(o->n, 1);
	if (!pf->order || !pf->sizes || !pf->holders || !pf->cstate || !pf->cres || !pf->released) {
		offload_prefetch_destroy(pf);
		return -ENOMEM;
	}
	memcpy(pf->order, o->order, o->n * sizeof(int));
	for (unsigned i = 0; i < o->n; i++)
		pf->sizes[o->order[i]] = o->sizes[o->order[i]];
	pf->be = *be;
	pf->n = o->n;
	pf->nids = nids;
	pf->budget = o->byte_budget;
	pf->max_inflight = o->max_inflight;
	*out = pf;
	return 0;
}

void
offload_prefetch_destroy(offload_prefetch_t *pf)
{
	if (!pf)
		return;
	free(pf->order);
	free(pf->sizes);
	free(pf->holders);
	free(pf->cstate);
	free(pf->cres);
	free(pf->released);
	free(pf);
}

/* Takes completions; waits up to timeout_ms for one. */
static int
collect(offload_prefetch_t *pf, int timeout_ms)
{
	offload_prefetch_done d[32];
	int n = pf->be.poll(pf->be.ctx, d, 32, timeout_ms);
	for (int i = 0; i < n; i++) {
		int id = d[i].chunk;
		if (id < 0 || (unsigned)id >= pf->nids || pf->cstate[id] != C_INFLIGHT)
			continue;
		pf->inflight--;
		pf->cstate[id] = d[i].res ? C_FAILED : C_RESIDENT;
		pf->cres[id] = d[i].res;
	}
	return n < 0 ? n : 0;
}

/* Issues position next_issue if it fits; 1 issued, 0 blocked, -errno. */
static int
issue_one(offload_prefetch_t *pf)
{
	int id = pf->order[pf->next_issue];
	if (pf->holders[id]) { /* still held by an earlier position: share it */
		pf->holders[id]++;
		pf->next_issue++;
		return 1;
	}
	if (pf->held + pf->sizes[id] > pf->budget || pf->inflight >= pf->max_inflight)
		return 0;
	int ret = pf->be.fetch(pf->be.ctx, id);
	if (ret)
		return ret;
	pf->holders[id] = 1;
	pf->cstate[id] = C_INFLIGHT;
	pf->inflight++;
	pf->held += pf->sizes[id];
	pf->next_issue++;
	pf->st.fetches++;
	if (pf->held > pf->st.peak_bytes)
		pf->st.peak_bytes = pf->held;
	if (pf->inflight > pf->st.peak_inflight)
		pf->st.peak_inflight = pf->inflight;
	return 1;
}

int
offload_prefetch_pump(offload_prefetch_t *pf)
{
	int ret = collect(pf, 0);
	while (!ret && pf->next_issue < pf->n && (ret = issue_one(pf)) == 1)
		ret = 0;
	return ret < 0 ? ret : 0;
}

int
offload_prefetch_acquire(offload_prefetch_t *pf, int *chunk)
{
	if (pf->next_acquire >= pf->n)
		return -ENODATA;
	unsigned pos = pf->next_acquire;
	int id = pf->order[pos];
	bool issued = pf->next_issue > pos;
	int ret = offload_prefetch_pump(pf);
	if (ret)
		return ret;
	if (!issued && pf->next_issue <= pos) {
		/* Budget or slots are full: in-flight fetches free slots, only release frees bytes.
		 */
		while (pf->inflight >= pf->max_inflight && !(ret = collect(pf, -1)))
			;
		if (ret || (ret = offload_prefetch_pump(pf)))
			return ret;
		if (pf->next_issue <= pos) {
			zinf_log(ZINF_LOG_ERROR, SUBSYS,
			         "position %u (chunk %d, %llu bytes) cannot be fetched: %llu of "
			         "%llu "
			         "budget bytes are held by acquired positions: release them first",
			         pos, id, (unsigned long long)pf->sizes[id],
			         (unsigned long long)pf->held, (unsigned long long)pf->budget);
			return -ENOBUFS;
		}
	}
	if (pf->cstate[id] == C_RESIDENT && issued) {
		pf->st.hits++;
	} else if (pf->cstate[id] == C_RESIDENT) {
		pf->st.misses++; /* shared with an earlier holder, never waited: still a miss */
	} else {
		uint64_t t0 = pf->be.now_ns(pf->be.ctx);
		while (pf->cstate[id] == C_INFLIGHT)
			if ((ret = collect(pf, -1)))
				return ret;
		pf->st.stall_ns += pf->be.now_ns(pf->be.ctx) - t0;
		if (issued)
			pf->st.stalls++;
		else
			pf->st.misses++;
	}
	if (pf->cstate[id] == C_FAILED)
		return pf->cres[id] ? pf->cres[id] : -EIO;
	pf->next_acquire++;
	*chunk = id;
	return (int)pos;
}

int
offload_prefetch_release(offload_prefetch_t *pf, int pos)
{
	if (pos < 0 || (unsigned)pos >= pf->next_acquire || pf->released[pos])
		return -EINVAL;
	pf->released[pos] = 1;
	int id = pf->order[pos];
	if (--pf->holders[id] == 0) {
		pf->held -= pf->sizes[id];
		pf->cstate[id] = C_NONE;
		int ret = pf->be.release(pf->be.ctx, id);
		if (ret)
			return ret;
	}
	return offload_prefetch_pump(pf);
}

void
offload_prefetch_get_stats(const offload_prefetch_t *pf, offload_prefetch_stats *out)
{
	*out = pf->st;
}

/* ---- swapper backend ---- */

typedef struct sw_backend {
	offload_swapper_t *sw;
	offload_tier tier;
	offload_prefetch_done *q; /* fetch completions seen while waiting elsewhere */
	unsigned nq, cap;
} sw_backend;

static int
swb_take(sw_backend *b, const offload_event *ev, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (ev[i].op != OFFLOAD_OP_FETCH) { /* evictions from release() */
			if (ev[i].res)
				zinf_log(ZINF_LOG_ERROR, SUBSYS, "release of chunk %d failed: %s",
				         ev[i].chunk, offload_swapper_last_error(b->sw));
			continue;
		}
		if (b->nq == b->cap) {
			unsigned cap = b->cap ? b->cap * 2 : 64;
			offload_prefetch_done *q = realloc(b->q, cap * sizeof(*q));
			if (!q)
				return -ENOMEM;
			b->q = q;
			b->cap = cap;
		}
		b->q[b->nq++] = (offload_prefetch_done){ev[i].chunk, ev[i].res};
	}
	return 0;
}

static int
swb_fetch(void *ctx, int chunk)
{
	sw_backend *b = ctx;
	offload_event ev[16];
	int ret;
	/* An eviction from an earlier release may still run on this chunk: let it finish. */
	while ((ret = offload_chunk_fetch(b->sw, chunk, b->tier, 0)) == -EBUSY || ret == -EAGAIN) {
		int n = offload_poll(b->sw, ev, 16, 1, -1);
		if (n < 0 || (ret = swb_take(b, ev, (unsigned)n)))
			return n < 0 ? n : ret;
	}
	return ret;
}

static int
swb_poll(void *ctx, offload_prefetch_done *out, unsigned max, int timeout_ms)
{
	sw_backend *b = ctx;
	offload_event ev[16];
	if (!b->nq && offload_outstanding(b->sw)) {
		int n = offload_poll(b->sw, ev, 16, 1, timeout_ms);
		if (n < 0)
			return n;
		int ret = swb_take(b, ev, (unsigned)n);
		if (ret)
			return ret;
	}
	unsigned n = b->nq < max ? b->nq : max;
	if (!n)
		return 0;
	memcpy(out, b->q, n * sizeof(*out));
	memmove(b->q, b->q + n, (b->nq - n) * sizeof(*out));
	b->nq -= n;
	return (int)n;
}

static int
swb_release(void *ctx, int chunk)
{
	sw_backend *b = ctx;
	if (offload_chunk_drop(b->sw, chunk, b->tier) == 0)
		return 0;
	return offload_chunk_evict(b->sw, chunk, b->tier, 0);
}

static uint64_t
swb_now(void *ctx)
{
	(void)ctx;
	return iosched_now_ns();
}

int
offload_prefetch_swapper_backend(offload_swapper_t *sw, offload_tier tier,
                                 offload_prefetch_backend *out)
{
	sw_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->sw = sw;
	b->tier = tier;
	*out = (offload_prefetch_backend){.ctx = b,
	                                  .fetch = swb_fetch,
	                                  .poll = swb_poll,
	                                  .release = swb_release,
	                                  .now_ns = swb_now};
	return 0;
}

void
offload_prefetch_swapper_backend_free(offload_prefetch_backend *be)
{
	sw_backend *b = be->ctx;
	if (b)
		free(b->q);
	free(b);
	be->ctx = NULL;
}
