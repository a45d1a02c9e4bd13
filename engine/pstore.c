/* ZeRO-3 parameter store: per-block 16-bit slices in host memory or on NVMe. See pstore.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "offload/offload.h"
#include "pstore.h"

enum { P_NONE, P_FETCH, P_HOST, P_FILL, P_EVICT };

struct zinf_pstore {
	zinf_pstore_opts o;
	offload_swapper_t *sw;
	int n;
	int *ids;          /* chunk id per block */
	int *blk;          /* block per chunk id */
	unsigned char *st; /* nvme: P_* per block */
	bool *held;
	bool *unsaved;   /* its NVMe write-back failed: the host copy is the only valid one */
	int64_t *filled; /* elements written in this pass */
	unsigned busy;   /* FETCH + FILL + EVICT + held HOST */
	uint64_t cached; /* elements in unheld HOST copies */
	uint64_t max_bytes, total;
	int io_rc;
	char *whatbuf;
	int64_t *soff, *per;
	zinf_pstore_stats stats;
	double *wait_to; /* where a blocking poll adds its time (stats.wait_*_s) */
	char err[768];
};

__attribute__((format(printf, 3, 4))) static int
psfail(zinf_pstore *s, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return rc;
}

static uint64_t
round4k(uint64_t b)
{
	return (b + 4095) / 4096 * 4096;
}

static uint64_t
slice_bytes(const zinf_pstore *s, int b)
{
	return (uint64_t)s->o.per[b] * 2;
}

static void
host_stats(zinf_pstore *s)
{
	offload_tier_usage u;
	offload_host_pool_usage(offload_swapper_host_pool(s->sw), &u);
	s->stats.host_bytes = u.in_use;
	if (u.in_use > s->stats.host_peak)
		s->stats.host_peak = u.in_use;
}

int
zinf_pstore_create(const zinf_pstore_opts *o, zinf_pstore **out, char *err, size_t errlen)
{
	*out = NULL;
	zinf_pstore *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "offload_param: out of memory");
		return -ENOMEM;
	}
	s->o = *o;
	s->o.what = s->whatbuf = strdup(s->o.what ? s->o.what : "offload_param");
	s->o.soff = s->o.per = NULL;
	s->n = o->nblocks;
	s->ids = calloc((size_t)s->n, sizeof(int));
	s->blk = calloc((size_t)s->n, sizeof(int));
	s->st = calloc((size_t)s->n, 1);
	s->held = calloc((size_t)s->n, sizeof(bool));
	s->unsaved = calloc((size_t)s->n, sizeof(bool));
	s->filled = calloc((size_t)s->n, sizeof(int64_t));
	s->soff = malloc((size_t)s->n * sizeof(int64_t));
	s->per = malloc((size_t)s->n * sizeof(int64_t));
	if (!s->ids || !s->blk || !s->st || !s->held || !s->unsaved || !s->filled || !s->whatbuf || !s->soff ||
	    !s->per) {
		snprintf(err, errlen, "%s: out of memory", o->what ? o->what : "offload_param");
		zinf_pstore_destroy(s);
		return -ENOMEM;
	}
	memcpy(s->soff, o->soff, (size_t)s->n * sizeof(int64_t));
	memcpy(s->per, o->per, (size_t)s->n * sizeof(int64_t));
	s->o.soff = s->soff;
	s->o.per = s->per;
	int bmax = 0;
	for (int b = 0; b < s->n; b++) {
		s->total += round4k(slice_bytes(s, b));
		if (slice_bytes(s, b) > s->max_bytes) {
			s->max_bytes = slice_bytes(s, b);
			bmax = b;
		}
	}
	s->stats.store_bytes = s->total;
	if (o->nvme && (uint64_t)o->per[bmax] > o->buffer_size) {
		snprintf(err, errlen, "%s.buffer_size %llu: block %d's slice on this rank is %lld "
		         "elements and one buffer holds a whole slice; set buffer_size to at least "
		         "%lld", s->o.what, (unsigned long long)o->buffer_size, bmax,
		         (long long)o->per[bmax], (long long)o->per[bmax]);
		zinf_pstore_destroy(s);
		return -EINVAL;
	}
	if (o->nvme && o->buffer_count < 2) {
		snprintf(err, errlen, "%s.buffer_count %u: parameter offload to NVMe needs at least "
		         "2 buffers (one block in use while the next is read); set it to 2 or more "
		         "(DeepSpeed's default is 5)", s->o.what, o->buffer_count);
		zinf_pstore_destroy(s);
		return -EINVAL;
	}
	offload_swapper_opts so;
	offload_swapper_opts_init(&so);
	uint64_t cache = o->max_in_cpu * 2 + (uint64_t)s->n * 4096;
	/* nvme: buffer_count buffers, one more for a slice whose write-back failed (kept until
	 * the next flush retries it), and the max_in_cpu cache */
	so.host_budget = o->nvme ? (uint64_t)(o->buffer_count + 1) * round4k(s->max_bytes) +
	                                   (cache < s->total ? cache : s->total)
	                         : s->total;
	so.pin_memory = o->pin_memory;
	so.allow_unpinned = true;
	so.max_chunks = (unsigned)s->n + 1;
	so.aio = o->aio;
	char rid[96];
	if (o->run_id)
		snprintf(rid, sizeof(rid), "%s-param", o->run_id);
	else
		snprintf(rid, sizeof(rid), "%ld-param", (long)getpid());
	so.run_id = rid;
	so.rank = o->rank;
	const char *paths[1] = {o->nvme_path};
	if (o->nvme) {
		so.nvme_paths = paths;
		so.nvme_path_count = 1;
		so.nvme_capacity = s->total;
		so.nvme_buffered = o->nvme_buffered;
	}
	char serr[512];
	int rc = offload_swapper_create(&so, &s->sw, serr, sizeof(serr));
	if (rc) {
		snprintf(err, errlen, "%s (device %s): %s", s->o.what, o->nvme ? "nvme" : "cpu", serr);
		zinf_pstore_destroy(s);
		return rc;
	}
	for (int b = 0; b < s->n; b++) {
		char name[32];
		snprintf(name, sizeof(name), "param.b%d", b);
		int id = offload_chunk_create(s->sw, name, slice_bytes(s, b));
		if (id < 0) {
			snprintf(err, errlen, "%s: chunk for block %d: %s", s->o.what, b,
			         offload_swapper_last_error(s->sw));
			zinf_pstore_destroy(s);
			return id;
		}
		s->ids[b] = id;
		if (id < s->n)
			s->blk[id] = b;
		if (!o->nvme) {
			void *p;
			if ((rc = offload_chunk_alloc(s->sw, id, OFFLOAD_TIER_HOST, &p))) {
				snprintf(err, errlen, "%s (device cpu): %llu bytes of host memory for "
				         "block %d: %s", s->o.what, (unsigned long long)slice_bytes(s, b),
				         b, offload_swapper_last_error(s->sw));
				zinf_pstore_destroy(s);
				return rc;
			}
			memset(p, 0, slice_bytes(s, b));
		}
	}
	host_stats(s);
	*out = s;
	return 0;
}

void
zinf_pstore_destroy(zinf_pstore *s)
{
	if (!s)
		return;
	offload_swapper_destroy(s->sw);
	free(s->ids);
	free(s->blk);
	free(s->st);
	free(s->held);
	free(s->unsaved);
	free(s->filled);
	free(s->whatbuf);
	free(s->soff);
	free(s->per);
	free(s);
}

const char *
zinf_pstore_error(const zinf_pstore *s)
{
	return s->err;
}


/* Completed swapper operations -> block states. Waits for `min` of them. */
static int
poll(zinf_pstore *s, unsigned min)
{
	offload_event ev[16];
	unsigned out = offload_outstanding(s->sw);
	if (min > out)
		min = out;
	double t0 = min ? iosched_now_s() : 0;
	int n = offload_poll(s->sw, ev, 16, min, min ? -1 : 0);
	if (min && s->wait_to)
		*s->wait_to += iosched_now_s() - t0;
	if (n < 0)
		return psfail(s, n, "%s: polling the parameter swap: %s", s->o.what,
		              offload_swapper_last_error(s->sw));
	for (int i = 0; i < n; i++) {
		int b = ev[i].chunk >= 0 && ev[i].chunk < s->n ? s->blk[ev[i].chunk] : -1;
		if (b < 0)
			continue;
		uint64_t bytes = slice_bytes(s, b);
		bool fetch = ev[i].op == OFFLOAD_OP_FETCH;
		if (ev[i].res < 0 && !s->io_rc) { /* the first I/O error is the one reported */
			s->io_rc = ev[i].res;
			psfail(s, ev[i].res, "%s: %s block %d's parameters %s NVMe: %s", s->o.what,
			       fetch ? "reading" : "writing", b, fetch ? "from" : "to",
			       offload_swapper_last_error(s->sw));
		}
		if (fetch && ev[i].res < 0) {
			s->busy--;
			s->st[b] = P_NONE;
		} else if (fetch) {
			s->st[b] = P_HOST;
			s->held[b] = true; /* fetched for an acquire: its buffer stays busy */
			s->stats.nvme_read += bytes;
		} else if (ev[i].res < 0) {
			/* the new values stay in the host copy (the NVMe copy is stale); the next
			 * flush writes it again */
			s->busy--;
			s->st[b] = P_HOST;
			s->unsaved[b] = true;
			s->cached += (uint64_t)s->o.per[b];
		} else {
			s->busy--;
			s->st[b] = P_NONE;
			s->stats.nvme_written += bytes;
		}
	}
	host_stats(s);
	return 0;
}

/* Waits until fewer than buffer_count host buffers are busy. */
static int
room(zinf_pstore *s, bool wait)
{
	while (s->busy >= s->o.buffer_count) {
		if (!wait)
			return -EAGAIN;
		unsigned held = 0;
		for (int b = 0; b < s->n; b++)
			held += s->st[b] == P_HOST && s->held[b];
		if (held >= s->o.buffer_count)
			return psfail(s, -EDEADLK, "%s.buffer_count %u: %u blocks' parameters are in "
			              "use at once and one more is needed; raise buffer_count",
			              s->o.what, s->o.buffer_count, held);
		if (!offload_outstanding(s->sw))
			return psfail(s, -EIO, "%s.buffer_count %u: every buffer holds a block written "
			              "in part; write each block's slice whole before the next one's "
			              "exceeds the buffers", s->o.what, s->o.buffer_count);
		int rc = poll(s, 1);
		if (rc)
			return rc;
	}
	return 0;
}

static void
uncache(zinf_pstore *s, int b)
{
	/* a copy whose write-back failed is the only valid one: it stays (and counts) */
	if (s->st[b] == P_HOST && !s->held[b] &&
	    offload_chunk_drop(s->sw, s->ids[b], OFFLOAD_TIER_HOST) == 0) {
		s->cached -= (uint64_t)s->o.per[b];
		s->st[b] = P_NONE;
	}
}

static int write_range(zinf_pstore *s, uint64_t off, uint64_t n, const uint16_t *src);

int
zinf_pstore_write(zinf_pstore *s, uint64_t off, uint64_t n, const uint16_t *src)
{
	double t0 = iosched_now_s();
	s->wait_to = &s->stats.wait_write_s;
	int rc = write_range(s, off, n, src);
	s->stats.write_s += iosched_now_s() - t0;
	return rc;
}

static int
write_range(zinf_pstore *s, uint64_t off, uint64_t n, const uint16_t *src)
{
	/* the first block the range touches: blocks are in packed order */
	int lo = 0, hi = s->n - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if ((uint64_t)s->o.soff[mid] <= off)
			lo = mid;
		else
			hi = mid - 1;
	}
	uint64_t end = off + n;
	for (int b = lo; b < s->n && (uint64_t)s->o.soff[b] < end; b++) {
		uint64_t bs = (uint64_t)s->o.soff[b], be = bs + (uint64_t)s->o.per[b];
		uint64_t a = off > bs ? off : bs, z = end < be ? end : be;
		if (a >= z)
			continue;
		void *dst;
		if (!s->o.nvme) {
			dst = offload_chunk_ptr(s->sw, s->ids[b], OFFLOAD_TIER_HOST);
			if (!dst)
				return psfail(s, -EIO, "%s: block %d has no host copy", s->o.what, b);
			memcpy((uint16_t *)dst + (a - bs), src + (a - off), (z - a) * 2);
			s->filled[b] += (int64_t)(z - a);
			if (s->filled[b] >= s->o.per[b])
				s->filled[b] = 0; /* whole */
			continue;
		}
		int rc;
		if (s->held[b])
			return psfail(s, -EBUSY, "%s: block %d is written while in use", s->o.what, b);
		while (s->st[b] == P_FETCH || s->st[b] == P_EVICT)
			if ((rc = poll(s, 1)))
				return rc;
		if (s->held[b]) /* a read that landed for someone who did not give it back */
			return psfail(s, -EBUSY, "%s: block %d is written while in use", s->o.what, b);
		if (s->st[b] == P_HOST) { /* a cached copy: overwrite it in place */
			if ((rc = room(s, true)))
				return rc;
			s->cached -= (uint64_t)s->o.per[b];
			s->unsaved[b] = false;
			s->busy++;
			s->st[b] = P_FILL;
			s->filled[b] = 0;
		} else if (s->st[b] == P_NONE) {
			if ((rc = room(s, true)))
				return rc;
			void *p;
			double t0 = iosched_now_s();
			rc = offload_chunk_alloc(s->sw, s->ids[b], OFFLOAD_TIER_HOST, &p);
			s->stats.write_alloc_s += iosched_now_s() - t0;
			if (rc)
				return psfail(s, rc, "%s: a host buffer for block %d: %s", s->o.what, b,
				              offload_swapper_last_error(s->sw));
			s->busy++;
			s->st[b] = P_FILL;
			s->filled[b] = 0;
			host_stats(s);
		}
		dst = offload_chunk_ptr(s->sw, s->ids[b], OFFLOAD_TIER_HOST);
		if (!dst)
			return psfail(s, -EIO, "%s: block %d's host buffer is missing", s->o.what, b);
		double t0 = iosched_now_s();
		memcpy((uint16_t *)dst + (a - bs), src + (a - off), (z - a) * 2);
		double t1 = iosched_now_s();
		s->stats.write_copy_s += t1 - t0;
		s->filled[b] += (int64_t)(z - a);
		if (s->filled[b] < s->o.per[b])
			continue;
		rc = offload_chunk_dirty(s->sw, s->ids[b], OFFLOAD_TIER_HOST);
		if (!rc)
			rc = offload_chunk_evict(s->sw, s->ids[b], OFFLOAD_TIER_HOST, (uint64_t)b);
		s->stats.write_submit_s += iosched_now_s() - t1;
		if (rc)
			return psfail(s, rc, "%s: writing block %d's parameters to NVMe: %s",
			              s->o.what, b, offload_swapper_last_error(s->sw));
		s->st[b] = P_EVICT;
	}
	return 0;
}

int
zinf_pstore_flush(zinf_pstore *s)
{
	s->wait_to = &s->stats.wait_flush_s;
	for (int b = 0; b < s->n; b++)
		if ((!s->o.nvme && s->filled[b]) || s->st[b] == P_FILL)
			return psfail(s, -EIO, "%s: block %d's parameters were written in part (%lld "
			              "of %lld elements)", s->o.what, b, (long long)s->filled[b],
			              (long long)s->o.per[b]);
	if (!s->o.nvme)
		return 0;
	/* slices whose write-back failed in an earlier pass (one failed in this pass is reported
	 * first, and retried by the next flush) */
	for (int b = 0; b < s->n && !s->io_rc; b++) {
		if (!s->unsaved[b] || s->st[b] != P_HOST || s->held[b])
			continue;
		int rc = room(s, true);
		if (rc)
			return rc;
		s->unsaved[b] = false;
		s->cached -= (uint64_t)s->o.per[b];
		if ((rc = offload_chunk_dirty(s->sw, s->ids[b], OFFLOAD_TIER_HOST)) ||
		    (rc = offload_chunk_evict(s->sw, s->ids[b], OFFLOAD_TIER_HOST, (uint64_t)b)))
			return psfail(s, rc, "%s: writing block %d's parameters to NVMe again: %s",
			              s->o.what, b, offload_swapper_last_error(s->sw));
		s->busy++;
		s->st[b] = P_EVICT;
	}
	for (;;) {
		bool pending = false;
		for (int b = 0; b < s->n; b++)
			pending |= s->st[b] == P_EVICT;
		if (!pending)
			break;
		int rc = poll(s, 1);
		if (rc)
			return rc;
	}
	int rc = s->io_rc;
	s->io_rc = 0;
	return rc;
}

int
zinf_pstore_acquire(zinf_pstore *s, int b, bool wait, const uint16_t **host)
{
	*host = NULL;
	s->wait_to = &s->stats.wait_read_s;
	if (!s->o.nvme) {
		*host = offload_chunk_ptr(s->sw, s->ids[b], OFFLOAD_TIER_HOST);
		return *host ? 0 : psfail(s, -EIO, "%s: block %d has no host copy", s->o.what, b);
	}
	int rc = poll(s, 0);
	if (rc)
		return rc;
	for (;;) {
		switch (s->st[b]) {
		case P_HOST:
			if (!s->held[b]) { /* cached */
				if ((rc = room(s, wait)))
					return rc;
				s->cached -= (uint64_t)s->o.per[b];
				s->held[b] = true;
				s->busy++;
			}
			*host = offload_chunk_ptr(s->sw, s->ids[b], OFFLOAD_TIER_HOST);
			return *host ? 0 : psfail(s, -EIO, "%s: block %d's host copy is missing",
			                          s->o.what, b);
		case P_FETCH:
		case P_EVICT:
			if (!wait)
				return -EAGAIN;
			if ((rc = poll(s, 1)))
				return rc;
			break;
		case P_FILL:
			return psfail(s, -EBUSY, "%s: block %d is read while being written",
			              s->o.what, b);
		default: /* P_NONE */
			if (s->io_rc) {
				rc = s->io_rc;
				s->io_rc = 0;
				return rc;
			}
			if ((rc = room(s, wait)))
				return rc;
			if ((rc = offload_chunk_fetch(s->sw, s->ids[b], OFFLOAD_TIER_HOST,
			                              (uint64_t)b))) {
				if (rc == -EAGAIN && !wait)
					return rc;
				if (rc == -EAGAIN) { /* the swapper's operations are all in flight */
					if ((rc = poll(s, 1)))
						return rc;
					continue;
				}
				return psfail(s, rc, "%s: reading block %d's parameters from NVMe: %s",
				              s->o.what, b, offload_swapper_last_error(s->sw));
			}
			s->busy++;
			s->st[b] = P_FETCH;
			if (!wait)
				return -EAGAIN;
			break;
		}
	}
}

int
zinf_pstore_prefetch(zinf_pstore *s, int b)
{
	if (!s->o.nvme)
		return 1;
	int rc = poll(s, 0);
	if (rc)
		return rc;
	if (s->st[b] != P_NONE)
		return 1;
	if (s->io_rc || room(s, false))
		return 0;
	if ((rc = offload_chunk_fetch(s->sw, s->ids[b], OFFLOAD_TIER_HOST, (uint64_t)b)))
		return rc == -EAGAIN ? 0
		                     : psfail(s, rc, "%s: reading block %d's parameters from NVMe: %s",
		                              s->o.what, b, offload_swapper_last_error(s->sw));
	s->busy++;
	s->st[b] = P_FETCH;
	return 1;
}

void
zinf_pstore_release(zinf_pstore *s, int b)
{
	if (!s->o.nvme || s->st[b] != P_HOST || !s->held[b])
		return;
	s->held[b] = false;
	s->busy--;
	s->cached += (uint64_t)s->o.per[b];
	if (s->cached > s->o.max_in_cpu)
		uncache(s, b);
	host_stats(s);
}

void
zinf_pstore_drop_cached(zinf_pstore *s)
{
	if (!s->o.nvme)
		return;
	for (int b = 0; b < s->n; b++)
		uncache(s, b);
	host_stats(s);
}

void
zinf_pstore_get_stats(const zinf_pstore *s, zinf_pstore_stats *st)
{
	*st = s->stats;
}
