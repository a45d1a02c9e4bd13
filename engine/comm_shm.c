/* The shm backend: CPU ranks on one host exchange data through one POSIX shared-memory
 * segment (see comm.h for the determinism contract).
 *
 * Segment: a header (abort word, futex bell, per-rank arrival counters and call descriptors)
 * then one staging slot of slot_bytes per rank. Rank 0 creates it with a name unique to the run
 * (/zinf-comm-<pid>-<port>-<random>, mode 0600), hands the name out through the bootstrap, and
 * unlinks it as soon as every rank has mapped it: nothing is left in /dev/shm whatever way the
 * job ends afterwards (only a rank 0 killed inside those few milliseconds leaves one behind).
 *
 * A collective goes in chunks that fit the slots. Per chunk: every rank copies its part into
 * its own slot, barrier, every rank reads the slots it needs and computes its output in rank
 * order, barrier (so the slots may be reused). The first barrier of a call also checks that all
 * ranks called the same collective with the same count, dtype, op and root.
 *
 * Barrier k: a rank stores k into its arrival counter, rings the bell (futex word) and waits
 * until every counter is >= k: a short spin, then FUTEX_WAIT on the bell in 50 ms slices,
 * checking the abort word, whether peers still exist and the deadline. A rank that gives up
 * sets the abort word and message so its peers stop waiting too and report why. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"

#define SHM_MAGIC 0x7a73686du
#define DEFAULT_SLOT (4u << 20)

typedef struct shm_rank {
	_Atomic uint64_t arrive;
	uint64_t seq, count;
	int32_t kind, dt, op, root;
	char pad[64 - 40];
} shm_rank;

typedef struct shm_hdr {
	uint32_t magic, world;
	uint64_t slot_bytes, data_off;
	_Atomic int32_t abort_rank; /* -1: none */
	_Atomic uint32_t bell;
	char abort_msg[512];
	char pad[64 - ((8 + 16 + 8 + 512) % 64)];
	shm_rank ranks[];
} shm_hdr;

typedef struct shm_state {
	shm_hdr *h;
	size_t map_bytes;
	char *data;
	uint64_t barrier_k; /* barriers completed by this rank */
	char name[96];
} shm_state;

static long
futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

static void
ring(shm_hdr *h)
{
	atomic_fetch_add_explicit(&h->bell, 1, memory_order_release);
	futex(&h->bell, FUTEX_WAKE, 1 << 30, NULL);
}

static void
shm_abort(zinf_comm *c, shm_hdr *h)
{
	int32_t none = -1;
	if (atomic_compare_exchange_strong(&h->abort_rank, &none, c->rank)) {
		snprintf(h->abort_msg, sizeof(h->abort_msg), "%.500s", c->err);
		ring(h);
	}
}

/* Waits until every rank has arrived at barrier k. */
static int
shm_barrier(zinf_comm *c, shm_state *s, const comm_call *call)
{
	shm_hdr *h = s->h;
	uint64_t k = ++s->barrier_k;
	atomic_store_explicit(&h->ranks[c->rank].arrive, k, memory_order_release);
	ring(h);
	double t0 = comm_now(), next_check = t0 + 0.1;
	int spins = 0;
	for (;;) {
		uint32_t bell = atomic_load_explicit(&h->bell, memory_order_acquire);
		int missing[1024], nmiss = 0;
		for (int q = 0; q < c->world; q++)
			if (atomic_load_explicit(&h->ranks[q].arrive, memory_order_acquire) < k &&
			    nmiss < 1024)
				missing[nmiss++] = q;
		if (!nmiss)
			return 0;
		int ab = atomic_load_explicit(&h->abort_rank, memory_order_acquire);
		if (ab >= 0)
			return comm_fail(c, -EPIPE, "%s #%llu: rank %d gave up, so this rank stops "
			                 "too; its reason: %.400s", comm_kind_name(call->kind),
			                 (unsigned long long)call->seq, ab, h->abort_msg);
		if (spins < 2000) {
			spins++;
			continue;
		}
		double now = comm_now();
		if (now >= next_check) {
			char dead[512];
			if (comm_dead_peers(c, missing, nmiss, dead, sizeof(dead))) {
				int rc = comm_fail(c, -EPIPE, "%s #%llu: %s without arriving (waited %.1f "
				                   "s)", comm_kind_name(call->kind),
				                   (unsigned long long)call->seq, dead, now - t0);
				shm_abort(c, h);
				return rc;
			}
			next_check = now + 0.1;
		}
		if (now - t0 >= c->timeout_s) {
			char who[512];
			size_t off = 0;
			for (int i = 0; i < nmiss && off < sizeof(who); i++)
				off += snprintf(who + off, sizeof(who) - off, "%s%d", i ? ", " : "",
				                missing[i]);
			int rc = comm_fail(c, -ETIMEDOUT, "%s #%llu: rank(s) %s did not arrive within "
			                   "%.1f s (ZINF_COMM_TIMEOUT_S=%g): they died, hang, or run a "
			                   "different sequence of collectives", comm_kind_name(call->kind),
			                   (unsigned long long)call->seq, who, now - t0, c->timeout_s);
			shm_abort(c, h);
			return rc;
		}
		struct timespec ts = {0, 50 * 1000 * 1000};
		futex(&h->bell, FUTEX_WAIT, bell, &ts);
	}
}

static void
describe(const shm_rank *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s #%llu (count %llu, %s, op %d, root %d)",
	         comm_kind_name((comm_kind)r->kind), (unsigned long long)r->seq,
	         (unsigned long long)r->count, r->dt == ZINF_COMM_BF16 ? "bf16" : "f32", r->op,
	         r->root);
}

static int
check_same(zinf_comm *c, shm_state *s)
{
	const shm_rank *me = &s->h->ranks[c->rank];
	for (int q = 0; q < c->world; q++) {
		const shm_rank *o = &s->h->ranks[q];
		if (o->seq == me->seq && o->kind == me->kind && o->count == me->count &&
		    o->dt == me->dt && o->op == me->op && o->root == me->root)
			continue;
		char a[160], b[160];
		describe(me, a, sizeof(a));
		describe(o, b, sizeof(b));
		int rc = comm_fail(c, -EPROTO, "ranks disagree on the collective: this rank called %s, "
		                   "rank %d called %s (every rank must issue the same collectives "
		                   "in the same order)", a, q, b);
		shm_abort(c, s->h);
		return rc;
	}
	return 0;
}

static inline float
load_el(const void *p, size_t i, zinf_comm_dtype dt)
{
	if (dt == ZINF_COMM_BF16)
		return zinf_comm_bf16_to_f32(((const uint16_t *)p)[i]);
	return ((const float *)p)[i];
}

static inline void
store_el(void *p, size_t i, zinf_comm_dtype dt, float v)
{
	if (dt == ZINF_COMM_BF16)
		((uint16_t *)p)[i] = zinf_comm_f32_to_bf16(v);
	else
		((float *)p)[i] = v;
}

/* out[i] = reduce over q = 0..W-1 of slot q at element offset `at`, in rank order. */
static void
reduce_slots(zinf_comm *c, shm_state *s, size_t at, size_t n, const comm_call *call, void *out)
{
	size_t es = comm_dtype_size(call->dt);
	size_t sb = s->h->slot_bytes;
	if (call->dt == ZINF_COMM_F32 && call->op != ZINF_COMM_MAX) {
		float *o = out;
		const float *s0 = (const float *)(s->data) + at;
		float tmp[256];
		for (size_t i0 = 0; i0 < n; i0 += 256) {
			size_t m = n - i0 < 256 ? n - i0 : 256;
			memcpy(tmp, s0 + i0, m * 4);
			for (int q = 1; q < c->world; q++) {
				const float *sq = (const float *)(s->data + q * sb) + at + i0;
				for (size_t i = 0; i < m; i++)
					tmp[i] += sq[i];
			}
			if (call->op == ZINF_COMM_AVG)
				for (size_t i = 0; i < m; i++)
					tmp[i] /= (float)c->world;
			memcpy(o + i0, tmp, m * 4);
		}
		return;
	}
	for (size_t i = 0; i < n; i++) {
		float acc = load_el(s->data + at * es, i, call->dt);
		for (int q = 1; q < c->world; q++) {
			float v = load_el(s->data + q * sb + at * es, i, call->dt);
			if (call->op == ZINF_COMM_MAX)
				acc = acc != acc || v != v ? NAN : v > acc ? v : acc; /* NaN wins */
			else
				acc += v;
		}
		if (call->op == ZINF_COMM_AVG)
			acc /= (float)c->world;
		store_el(out, i, call->dt, acc);
	}
}

static int
shm_run(zinf_comm *c, const comm_call *call)
{
	shm_state *s = c->impl;
	shm_hdr *h = s->h;
	shm_rank *me = &h->ranks[c->rank];
	size_t es = comm_dtype_size(call->dt), W = (size_t)c->world, sb = h->slot_bytes;
	char *slot = s->data + c->rank * sb;
	const char *send = call->send;
	char *recv = call->recv;
	me->seq = call->seq;
	me->kind = call->kind;
	me->count = call->count;
	me->dt = call->dt;
	me->op = call->op;
	me->root = call->kind == COMM_BROADCAST || call->kind == COMM_REDUCE ? call->root : 0;
	/* Elements per chunk (per rank block for reduce_scatter). */
	size_t per = call->kind == COMM_REDUCE_SCATTER ? sb / (W * es) : sb / es;
	size_t n_total = call->kind == COMM_BARRIER ? 0 : call->count;
	size_t o = 0;
	bool first = true;
	int rc;
	do {
		size_t n = n_total - o < per ? n_total - o : per;
		switch (call->kind) {
		case COMM_ALL_GATHER:
		case COMM_ALL_REDUCE:
		case COMM_REDUCE:
			memcpy(slot, send + o * es, n * es);
			break;
		case COMM_REDUCE_SCATTER:
			for (size_t q = 0; q < W; q++)
				memcpy(slot + q * n * es, send + (q * call->count + o) * es, n * es);
			break;
		case COMM_BROADCAST:
			if (c->rank == call->root)
				memcpy(slot, send + o * es, n * es);
			break;
		case COMM_BARRIER:
			break;
		}
		if ((rc = shm_barrier(c, s, call)))
			return rc;
		if (first && (rc = check_same(c, s)))
			return rc;
		first = false;
		switch (call->kind) {
		case COMM_ALL_GATHER:
			for (size_t q = 0; q < W; q++)
				memcpy(recv + (q * call->count + o) * es, s->data + q * sb, n * es);
			break;
		case COMM_ALL_REDUCE:
			reduce_slots(c, s, 0, n, call, recv + o * es);
			break;
		case COMM_REDUCE_SCATTER:
			reduce_slots(c, s, (size_t)c->rank * n, n, call, recv + o * es);
			break;
		case COMM_REDUCE:
			if (c->rank == call->root)
				reduce_slots(c, s, 0, n, call, recv + o * es);
			break;
		case COMM_BROADCAST:
			if (c->rank != call->root)
				memcpy(recv + o * es, s->data + call->root * sb, n * es);
			break;
		case COMM_BARRIER:
			break;
		}
		if ((rc = shm_barrier(c, s, call)))
			return rc;
		o += n;
	} while (o < n_total);
	return 0;
}

static void
shm_destroy(zinf_comm *c)
{
	shm_state *s = c->impl;
	if (!s)
		return;
	if (s->h && c->broken)
		shm_abort(c, s->h);
	if (s->h)
		munmap(s->h, s->map_bytes);
	free(s);
	c->impl = NULL;
}

static const comm_backend_ops shm_ops = {
	.name = "shm",
	.run = shm_run,
	.destroy = shm_destroy,
};

int
comm_shm_create(zinf_comm *c, comm_boot *b, size_t slot_bytes, char *err, size_t errlen)
{
	shm_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	c->ops = &shm_ops;
	c->impl = s;
	if (!slot_bytes)
		slot_bytes = DEFAULT_SLOT;
	slot_bytes = (slot_bytes + 63) & ~(size_t)63;
	if (slot_bytes < (size_t)c->world * 64)
		slot_bytes = (size_t)c->world * 64; /* reduce_scatter needs >= 1 element per block */
	size_t data_off = (sizeof(shm_hdr) + sizeof(shm_rank) * c->world + 4095) & ~(size_t)4095;
	/* Rank 0's sizes are the job's: they travel with the name. */
	struct {
		char name[96];
		uint64_t slot_bytes;
	} desc = {"", slot_bytes};
	int fd = -1, rc = 0;
	if (c->world == 1) {
		s->map_bytes = data_off + slot_bytes;
		void *m = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		if (m == MAP_FAILED) {
			rc = -errno;
			snprintf(err, errlen, "comm shm: cannot map %zu bytes: %s", s->map_bytes,
			         strerror(-rc));
			goto fail;
		}
		s->h = m;
	} else if (c->rank == 0) {
		unsigned rnd = (unsigned)(comm_now() * 1e9) ^ (unsigned)getpid() * 2654435761u;
		snprintf(desc.name, sizeof(desc.name), "/zinf-comm-%d-%08x", (int)getpid(), rnd);
		s->map_bytes = data_off + slot_bytes * c->world;
		fd = shm_open(desc.name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "comm shm: shm_open(%s): %s (is /dev/shm mounted and "
			         "writable?)", desc.name, strerror(-rc));
			goto fail;
		}
		snprintf(s->name, sizeof(s->name), "%s", desc.name);
		rc = -posix_fallocate(fd, 0, (off_t)s->map_bytes);
		if (rc) {
			snprintf(err, errlen, "comm shm: cannot reserve %zu bytes in /dev/shm for %d "
			         "ranks x %zu-byte slots: %s (free /dev/shm, or in a container give it "
			         "more room, e.g. docker --shm-size)", s->map_bytes, c->world,
			         slot_bytes, strerror(-rc));
			goto fail;
		}
	}
	if (c->world > 1) {
		if ((rc = comm_boot_bcast(b, &desc, sizeof(desc), err, errlen)))
			goto fail;
		if (c->rank != 0) {
			desc.name[sizeof(desc.name) - 1] = 0;
			slot_bytes = desc.slot_bytes;
			s->map_bytes = data_off + slot_bytes * c->world;
			fd = shm_open(desc.name, O_RDWR | O_CLOEXEC, 0600);
			if (fd < 0) {
				rc = -errno;
				snprintf(err, errlen, "comm shm: rank %d cannot open rank 0's segment %s: "
				         "%s (the shm backend needs every rank on one host; across hosts "
				         "use nccl)", c->rank, desc.name, strerror(-rc));
				goto fail;
			}
		}
		void *m = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			rc = -errno;
			snprintf(err, errlen, "comm shm: cannot map %zu bytes of %s: %s", s->map_bytes,
			         desc.name, strerror(-rc));
			goto fail;
		}
		s->h = m;
		close(fd);
		fd = -1;
	}
	if (c->rank == 0) {
		s->h->magic = SHM_MAGIC;
		s->h->world = (uint32_t)c->world;
		s->h->slot_bytes = slot_bytes;
		s->h->data_off = data_off;
		atomic_store(&s->h->abort_rank, -1);
	}
	if (c->world > 1 && (rc = comm_boot_barrier(b, err, errlen)))
		goto fail;
	if (c->rank == 0 && s->name[0]) {
		shm_unlink(s->name);
		s->name[0] = 0;
	}
	if (s->h->magic != SHM_MAGIC || s->h->world != (uint32_t)c->world) {
		snprintf(err, errlen, "comm shm: segment %s is not this job's (magic %#x, world %u)",
		         desc.name, s->h->magic, s->h->world);
		rc = -EPROTO;
		goto fail;
	}
	s->data = (char *)s->h + data_off;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	if (s->name[0])
		shm_unlink(s->name);
	if (s->h)
		munmap(s->h, s->map_bytes);
	free(s);
	c->impl = NULL;
	c->ops = NULL;
	return rc;
}
