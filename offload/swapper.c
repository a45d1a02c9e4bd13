/* Swapper: named chunks and the asynchronous moves between tiers.
 *
 * DESIGN. Every operation takes one entry of a fixed op table and ends exactly once on the
 * completed FIFO that offload_poll() drains. Three shapes:
 *   copy    HOST <-> GPU: one cudaMemcpyAsync on the H2D or D2H stream and an event;
 *   direct  HOST <-> NVME: iosched requests straight into/out of the chunk's 4 KiB-aligned host
 *           buffer (no extra copy);
 *   staged  NVME <-> GPU: buffer_size pieces through the pinned staging slots (registered with
 *           iosched and CUDA). Read piece -> H2D copy enqueued as soon as the read is reaped;
 *           D2H copy -> write submitted once its event has fired. Progress is made by polling
 *           iosched and cudaEventQuery, never by synchronising a stream.
 * A chunk has at most one operation in flight. Residency is a bit per tier; it changes only
 * when an operation succeeds, and a failed one releases the space it took for the destination,
 * so an error leaves every copy as it was. All calls come from one thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
typedef cudaEvent_t gpu_event;
#else
typedef void *gpu_event;
#endif

#include "offload_internal.h"

#define SUBSYS     "offload: swapper"
#define TAG_DIRECT (1ull << 63)

typedef struct chunk {
	bool used;
	char *name;
	uint64_t size;
	void *host, *gpu;
	offload_nvme_extent ext; /* ext.len == 0: no extent */
	unsigned valid;
	int op; /* -1: none */
} chunk;

enum { OP_FREE = 0, OP_ACTIVE, OP_DONE };
enum { SHAPE_NONE = 0, SHAPE_COPY, SHAPE_DIRECT, SHAPE_STAGED };

typedef struct op {
	int state, shape;
	int chunk;
	offload_op kind;
	offload_tier tier, src, dst;
	uint64_t tag;
	bool alloc_dst; /* destination space was taken by this op */
	bool drop_src;  /* evict: drop `tier` after success */
	int err;
	gpu_event ev; /* copy shape */
	bool ev_pending;
	unsigned reqs_left;  /* direct shape */
	bool submit_pending; /* direct shape: iosched was full */
	uint64_t npieces, next_piece, pieces_done;
	unsigned active; /* staged pieces holding a slot */
} op;

enum { SLOT_FREE = 0, SLOT_IO, SLOT_COPY };

typedef struct slot {
	void *buf;
	int state;
	int op;
	uint64_t piece;
	unsigned reqs_left;
	bool submit_pending;
	gpu_event ev;
} slot;

struct offload_swapper {
	offload_swapper_opts opts;
	iosched_t *ios;
	offload_host_pool_t *host;
	offload_gpu_arena_t *gpu;
	offload_nvme_t *nvme;
#ifdef ZINF_HAVE_CUDA
	cudaStream_t h2d, d2h;
#endif
	chunk *chunks;
	unsigned nchunks; /* high-water index */
	op *ops;
	unsigned *done_fifo, done_head, done_count;
	unsigned outstanding;
	slot *slots;
	unsigned nslots;
	iosched_req *scratch;
	unsigned scratch_cap;
	char err[OFF_ERR_LEN];
};

void
offload_swapper_opts_init(offload_swapper_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->host_budget = 1ull << 30;
	opts->buffer_count = 4;
	opts->buffer_size = 16ull << 20;
	opts->pin_memory = true;
	opts->signal_cleanup = true;
	opts->max_chunks = 65536;
	opts->max_ops = 256;
	iosched_opts_init(&opts->aio);
	opts->aio.max_requests = 16384;
}

/* ---- GPU helpers: the only #ifdefs of the data path ---- */

static int
gpu_copy(offload_swapper_t *sw, void *dst, const void *src, uint64_t len, bool h2d, gpu_event ev)
{
#ifdef ZINF_HAVE_CUDA
	cudaStream_t s = h2d ? sw->h2d : sw->d2h;
	cudaError_t e = cudaMemcpyAsync(dst, src, len,
	                                h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, s);
	if (e == cudaSuccess)
		e = cudaEventRecord(ev, s);
	if (e == cudaSuccess)
		return 0;
	(void)cudaGetLastError();
	off_set_err(sw->err, SUBSYS, "%s copy of %llu bytes failed: %s (%s)", h2d ? "H2D" : "D2H",
	            (unsigned long long)len, cudaGetErrorString(e), cudaGetErrorName(e));
	return -EIO;
#else
	return -ENODEV;
#endif
}

/* 1 done, 0 not yet, -EIO failed. */
static int
gpu_event_done(offload_swapper_t *sw, gpu_event ev)
{
#ifdef ZINF_HAVE_CUDA
	cudaError_t e = cudaEventQuery(ev);
	if (e == cudaSuccess)
		return 1;
	if (e == cudaErrorNotReady)
		return 0;
	(void)cudaGetLastError();
	off_set_err(sw->err, SUBSYS, "copy failed: %s (%s)", cudaGetErrorString(e),
	            cudaGetErrorName(e));
	return -EIO;
#else
	return 1;
#endif
}

static int
gpu_event_create(gpu_event *ev)
{
#ifdef ZINF_HAVE_CUDA
	if (cudaEventCreateWithFlags(ev, cudaEventDisableTiming) != cudaSuccess) {
		(void)cudaGetLastError();
		return -ENOMEM;
	}
#else
	*ev = NULL;
#endif
	return 0;
}

static void
gpu_event_destroy(gpu_event ev)
{
#ifdef ZINF_HAVE_CUDA
	if (ev)
		cudaEventDestroy(ev);
#endif
}

/* ---- create / destroy ---- */

static int
fail_create(offload_swapper_t *sw, int ret, char *err, size_t err_len)
{
	if (err && err_len)
		snprintf(err, err_len, "%s", sw->err);
	offload_swapper_destroy(sw);
	return ret;
}

int
offload_swapper_create(const offload_swapper_opts *opts, offload_swapper_t **out, char *err,
                       size_t err_len)
{
	*out = NULL;
	offload_swapper_t *sw = calloc(1, sizeof(*sw));
	if (!sw)
		return -ENOMEM;
	sw->opts = *opts;
	const offload_swapper_opts *o = &sw->opts;
	int ret;
	offload_report plan;
	if ((ret = offload_plan(o, &plan, sw->err, sizeof(sw->err))))
		return fail_create(sw, ret, err, err_len);
	sw->chunks = calloc(o->max_chunks, sizeof(*sw->chunks));
	sw->ops = calloc(o->max_ops, sizeof(*sw->ops));
	sw->done_fifo = calloc(o->max_ops, sizeof(*sw->done_fifo));
	if (!sw->chunks || !sw->ops || !sw->done_fifo)
		return fail_create(sw, -ENOMEM, err, err_len);
	if ((ret = iosched_create(&o->aio, &sw->ios))) {
		off_set_err(sw->err, SUBSYS, "iosched: %s", "cannot start (see the message above)");
		return fail_create(sw, ret, err, err_len);
	}
	if (o->gpu_budget) {
		char why[256];
		if (!offload_gpu_probe(why, sizeof(why))) {
			off_set_err(sw->err, SUBSYS, "gpu_budget is %llu but %s: set it to 0",
			            (unsigned long long)o->gpu_budget, why);
			return fail_create(sw, -ENODEV, err, err_len);
		}
		offload_gpu_arena_opts go;
		offload_gpu_arena_opts_init(&go);
		go.device = o->gpu_device;
		go.budget = o->gpu_budget;
		if ((ret = offload_gpu_arena_create(&go, &sw->gpu))) {
			off_set_err(sw->err, SUBSYS, "gpu arena of %llu bytes could not be created",
			            (unsigned long long)o->gpu_budget);
			return fail_create(sw, ret, err, err_len);
		}
#ifdef ZINF_HAVE_CUDA
		if (cudaStreamCreateWithFlags(&sw->h2d, cudaStreamNonBlocking) != cudaSuccess ||
		    cudaStreamCreateWithFlags(&sw->d2h, cudaStreamNonBlocking) != cudaSuccess) {
			off_set_err(sw->err, SUBSYS, "cudaStreamCreate failed");
			return fail_create(sw, -ENOMEM, err, err_len);
		}
#endif
		for (unsigned i = 0; i < o->max_ops; i++)
			if (gpu_event_create(&sw->ops[i].ev))
				return fail_create(sw, -ENOMEM, err, err_len);
	}
	offload_host_pool_opts ho;
	offload_host_pool_opts_init(&ho);
	ho.budget = o->host_budget;
	ho.pin_memory = o->pin_memory;
	ho.allow_unpinned = o->allow_unpinned;
	if ((ret = offload_host_pool_create(&ho, &sw->host))) {
		off_set_err(sw->err, SUBSYS, "host pool could not be created");
		return fail_create(sw, ret, err, err_len);
	}
	if (o->nvme_path_count) {
		offload_nvme_opts no;
		offload_nvme_opts_init(&no);
		no.paths = o->nvme_paths;
		no.npaths = o->nvme_path_count;
		no.run_id = o->run_id;
		no.rank = o->rank;
		no.capacity = o->nvme_capacity;
		if (o->stripe_size)
			no.stripe_size = o->stripe_size;
		no.buffered = o->nvme_buffered;
		no.signal_cleanup = o->signal_cleanup;
		if ((ret = offload_nvme_create(&no, sw->ios, &sw->nvme, sw->err, sizeof(sw->err))))
			return fail_create(sw, ret, err, err_len);
	}
	if (sw->gpu && sw->nvme) {
		sw->slots = calloc(o->buffer_count, sizeof(*sw->slots));
		void **bufs = calloc(o->buffer_count, sizeof(*bufs));
		size_t *lens = calloc(o->buffer_count, sizeof(*lens));
		if (!sw->slots || !bufs || !lens) {
			free(bufs);
			free(lens);
			return fail_create(sw, -ENOMEM, err, err_len);
		}
		sw->nslots = o->buffer_count;
		for (unsigned i = 0; i < sw->nslots && !ret; i++) {
			ret = offload_host_alloc(sw->host, o->buffer_size, &sw->slots[i].buf);
			if (ret)
				snprintf(sw->err, sizeof(sw->err), "staging slots: %s",
				         offload_host_pool_last_error(sw->host));
			else if (gpu_event_create(&sw->slots[i].ev))
				ret = -ENOMEM;
			bufs[i] = sw->slots[i].buf;
			lens[i] = o->buffer_size;
		}
		if (!ret && (ret = iosched_register_buffers(sw->ios, bufs, lens, sw->nslots)))
			snprintf(sw->err, sizeof(sw->err), "%s", iosched_last_error(sw->ios));
		free(bufs);
		free(lens);
		if (ret)
			return fail_create(sw, ret, err, err_len);
	}
	*out = sw;
	return 0;
}

static void drop_copy(offload_swapper_t *sw, chunk *c, offload_tier t);

void
offload_swapper_destroy(offload_swapper_t *sw)
{
	if (!sw)
		return;
	while (sw->outstanding) {
		offload_event ev[16];
		if (offload_poll(sw, ev, 16, 1, -1) < 0)
			break;
	}
	if (sw->chunks)
		for (unsigned i = 0; i < sw->nchunks; i++)
			if (sw->chunks[i].used)
				offload_chunk_destroy(sw, (int)i);
	for (unsigned i = 0; i < sw->nslots; i++) {
		offload_host_free(sw->host, sw->slots[i].buf);
		gpu_event_destroy(sw->slots[i].ev);
	}
	if (sw->ops)
		for (unsigned i = 0; i < sw->opts.max_ops; i++)
			gpu_event_destroy(sw->ops[i].ev);
#ifdef ZINF_HAVE_CUDA
	if (sw->h2d)
		cudaStreamDestroy(sw->h2d);
	if (sw->d2h)
		cudaStreamDestroy(sw->d2h);
#endif
	offload_nvme_destroy(sw->nvme);
	iosched_destroy(sw->ios);
	offload_host_pool_destroy(sw->host);
	offload_gpu_arena_destroy(sw->gpu);
	free(sw->slots);
	free(sw->scratch);
	free(sw->chunks);
	free(sw->ops);
	free(sw->done_fifo);
	free(sw);
}

bool
offload_swapper_has_tier(const offload_swapper_t *sw, offload_tier t)
{
	switch (t) {
	case OFFLOAD_TIER_GPU:
		return sw->gpu != NULL;
	case OFFLOAD_TIER_HOST:
		return sw->host != NULL;
	case OFFLOAD_TIER_NVME:
		return sw->nvme != NULL;
	}
	return false;
}

const char *
offload_swapper_last_error(const offload_swapper_t *sw)
{
	return sw ? sw->err : "no swapper";
}

offload_host_pool_t *
offload_swapper_host_pool(offload_swapper_t *sw)
{
	return sw->host;
}

offload_nvme_t *
offload_swapper_nvme(offload_swapper_t *sw)
{
	return sw->nvme;
}

iosched_t *
offload_swapper_iosched(offload_swapper_t *sw)
{
	return sw->ios;
}

unsigned
offload_outstanding(const offload_swapper_t *sw)
{
	return sw->outstanding;
}

/* ---- chunks ---- */

static chunk *
get_chunk(const offload_swapper_t *sw, int id)
{
	if (id < 0 || (unsigned)id >= sw->nchunks || !sw->chunks[id].used)
		return NULL;
	return &sw->chunks[id];
}

int
offload_chunk_create(offload_swapper_t *sw, const char *name, uint64_t size)
{
	if (!size)
		return -EINVAL;
	for (unsigned i = 0; i < sw->opts.max_chunks; i++) {
		chunk *c = &sw->chunks[i];
		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->name = strdup(name ? name : "?");
		if (!c->name)
			return -ENOMEM;
		c->used = true;
		c->size = size;
		c->op = -1;
		if (i >= sw->nchunks)
			sw->nchunks = i + 1;
		return (int)i;
	}
	off_set_err(sw->err, SUBSYS, "%u chunks exist: raise max_chunks", sw->opts.max_chunks);
	return -ENOSPC;
}

static void
drop_copy(offload_swapper_t *sw, chunk *c, offload_tier t)
{
	switch (t) {
	case OFFLOAD_TIER_GPU:
		offload_gpu_free(sw->gpu, c->gpu);
		c->gpu = NULL;
		break;
	case OFFLOAD_TIER_HOST:
		offload_host_free(sw->host, c->host);
		c->host = NULL;
		break;
	case OFFLOAD_TIER_NVME:
		if (c->ext.len)
			offload_nvme_free(sw->nvme, &c->ext);
		memset(&c->ext, 0, sizeof(c->ext));
		break;
	}
	c->valid &= ~(1u << t);
}

int
offload_chunk_destroy(offload_swapper_t *sw, int id)
{
	chunk *c = get_chunk(sw, id);
	if (!c)
		return -EINVAL;
	if (c->op >= 0)
		return -EBUSY;
	for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++)
		drop_copy(sw, c, (offload_tier)t);
	free(c->name);
	memset(c, 0, sizeof(*c));
	while (sw->nchunks && !sw->chunks[sw->nchunks - 1].used)
		sw->nchunks--;
	return 0;
}

static int
tier_check(offload_swapper_t *sw, offload_tier t)
{
	if ((unsigned)t >= OFFLOAD_TIER_COUNT)
		return -EINVAL;
	if (!offload_swapper_has_tier(sw, t)) {
		off_set_err(sw->err, SUBSYS, "the %s tier is not configured%s",
		            offload_tier_name(t),
		            t == OFFLOAD_TIER_GPU ? " (gpu_budget 0 or no GPU)"
		                                  : " (no nvme_path given)");
		return -ENODEV;
	}
	return 0;
}

/* Takes space for a copy in `t`; for NVME reuses a stale extent. *took says if it was new. */
static int
take_space(offload_swapper_t *sw, chunk *c, offload_tier t, bool *took)
{
	int ret = 0;
	*took = false;
	switch (t) {
	case OFFLOAD_TIER_GPU:
		if (c->gpu)
			return 0;
		if ((ret = offload_gpu_alloc(sw->gpu, c->size, &c->gpu)))
			snprintf(sw->err, sizeof(sw->err), "chunk %s: %s", c->name,
			         offload_gpu_arena_last_error(sw->gpu));
		break;
	case OFFLOAD_TIER_HOST:
		if (c->host)
			return 0;
		if ((ret = offload_host_alloc(sw->host, c->size, &c->host)))
			snprintf(sw->err, sizeof(sw->err), "chunk %s: %s", c->name,
			         offload_host_pool_last_error(sw->host));
		break;
	case OFFLOAD_TIER_NVME:
		if (c->ext.len)
			return 0;
		if ((ret = offload_nvme_alloc(sw->nvme, c->size, &c->ext)))
			snprintf(sw->err, sizeof(sw->err), "chunk %s: %s", c->name,
			         offload_nvme_last_error(sw->nvme));
		break;
	}
	*took = !ret;
	return ret;
}

int
offload_chunk_alloc(offload_swapper_t *sw, int id, offload_tier tier, void **ptr)
{
	chunk *c = get_chunk(sw, id);
	int ret;
	bool took;
	*ptr = NULL;
	if (!c || tier == OFFLOAD_TIER_NVME)
		return -EINVAL;
	if (c->op >= 0)
		return -EBUSY;
	if ((ret = tier_check(sw, tier)) || (ret = take_space(sw, c, tier, &took)))
		return ret;
	for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++)
		if (t != (unsigned)tier && t != OFFLOAD_TIER_NVME)
			drop_copy(sw, c, (offload_tier)t);
	c->valid = 1u << tier;
	*ptr = tier == OFFLOAD_TIER_GPU ? c->gpu : c->host;
	return 0;
}

void *
offload_chunk_ptr(offload_swapper_t *sw, int id, offload_tier tier)
{
	chunk *c = get_chunk(sw, id);
	if (!c || c->op >= 0 || !(c->valid & (1u << tier)))
		return NULL;
	return tier == OFFLOAD_TIER_GPU ? c->gpu : tier == OFFLOAD_TIER_HOST ? c->host : NULL;
}

int
offload_chunk_dirty(offload_swapper_t *sw, int id, offload_tier tier)
{
	chunk *c = get_chunk(sw, id);
	if (!c)
		return -EINVAL;
	if (c->op >= 0)
		return -EBUSY;
	if (!(c->valid & (1u << tier)))
		return -ENODATA;
	for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++)
		if (t != (unsigned)tier && t != OFFLOAD_TIER_NVME)
			drop_copy(sw, c, (offload_tier)t);
	c->valid = 1u << tier; /* the NVMe extent stays, stale, for the next write */
	return 0;
}

int
offload_chunk_drop(offload_swapper_t *sw, int id, offload_tier tier)
{
	chunk *c = get_chunk(sw, id);
	if (!c || (unsigned)tier >= OFFLOAD_TIER_COUNT)
		return -EINVAL;
	if (c->op >= 0 || (c->valid & ~(1u << tier)) == 0)
		return -EBUSY;
	drop_copy(sw, c, tier);
	return 0;
}

int
offload_chunk_info_get(const offload_swapper_t *sw, int id, offload_chunk_info *out)
{
	chunk *c = get_chunk(sw, id);
	if (!c)
		return -EINVAL;
	out->name = c->name;
	out->size = c->size;
	out->valid = c->valid;
	out->busy = c->op >= 0;
	return 0;
}

/* ---- operations ---- */

static int
scratch_reserve(offload_swapper_t *sw, unsigned n)
{
	if (n <= sw->scratch_cap)
		return 0;
	iosched_req *r = realloc(sw->scratch, n * sizeof(*r));
	if (!r)
		return -ENOMEM;
	sw->scratch = r;
	sw->scratch_cap = n;
	return 0;
}

/* Submits I/O for bytes [off, off+len) of the chunk's extent. 0, -EAGAIN (retry later) or a
 * failure; *nreqs gets the request count. */
static int
submit_io(offload_swapper_t *sw, chunk *c, unsigned iop, void *buf, uint64_t off, uint64_t len,
          uint64_t tag, unsigned *nreqs)
{
	len = off_round_up(len, OFFLOAD_ALIGN);
	unsigned max = offload_nvme_req_count(sw->nvme, off, len);
	if (scratch_reserve(sw, max))
		return -ENOMEM;
	int n = offload_nvme_reqs(sw->nvme, &c->ext, iop, buf, off, len, tag, sw->scratch, max);
	if (n < 0)
		return n;
	int ret = iosched_submit(sw->ios, sw->scratch, (unsigned)n);
	if (ret == -EAGAIN)
		return ret;
	if (ret < 0) {
		off_set_err(sw->err, SUBSYS, "chunk %s: %s", c->name, iosched_last_error(sw->ios));
		return ret;
	}
	*nreqs = (unsigned)n;
	return 0;
}

static void
finish_op(offload_swapper_t *sw, unsigned oi)
{
	op *o = &sw->ops[oi];
	chunk *c = &sw->chunks[o->chunk];
	if (o->err) {
		if (o->alloc_dst)
			drop_copy(sw, c, o->dst); /* dst was not valid: residency unchanged */
	} else {
		c->valid |= 1u << o->dst;
		if (o->drop_src)
			drop_copy(sw, c, o->tier);
	}
	c->op = -1;
	o->state = OP_DONE;
	sw->done_fifo[(sw->done_head + sw->done_count) % sw->opts.max_ops] = oi;
	sw->done_count++;
}

static void
op_fail(offload_swapper_t *sw, op *o, int err)
{
	if (!o->err)
		o->err = err;
}

static void
advance_direct(offload_swapper_t *sw, unsigned oi)
{
	op *o = &sw->ops[oi];
	chunk *c = &sw->chunks[o->chunk];
	if (o->submit_pending) {
		unsigned iop = o->dst == OFFLOAD_TIER_NVME ? IOSCHED_OP_WRITE : IOSCHED_OP_READ;
		int ret =
		        submit_io(sw, c, iop, c->host, 0, c->size, TAG_DIRECT | oi, &o->reqs_left);
		if (ret == -EAGAIN)
			return;
		o->submit_pending = false;
		if (ret)
			op_fail(sw, o, ret);
	}
	if (!o->submit_pending && !o->reqs_left)
		finish_op(sw, oi);
}

static void
advance_copy(offload_swapper_t *sw, unsigned oi)
{
	op *o = &sw->ops[oi];
	int q = gpu_event_done(sw, o->ev);
	if (q == 0)
		return;
	if (q < 0)
		op_fail(sw, o, q);
	o->ev_pending = false;
	finish_op(sw, oi);
}

static void
slot_release(offload_swapper_t *sw, slot *s, bool piece_ok)
{
	op *o = &sw->ops[s->op];
	s->state = SLOT_FREE;
	o->active--;
	if (piece_ok)
		o->pieces_done++;
}

/* Moves one staged slot forward. */
static void
advance_slot(offload_swapper_t *sw, unsigned si)
{
	slot *s = &sw->slots[si];
	op *o = &sw->ops[s->op];
	chunk *c = &sw->chunks[o->chunk];
	bool to_gpu = o->dst == OFFLOAD_TIER_GPU;
	uint64_t off = s->piece * sw->opts.buffer_size;
	uint64_t len = c->size - off < sw->opts.buffer_size ? c->size - off : sw->opts.buffer_size;
	int ret;
	if (s->state == SLOT_IO) {
		if (s->submit_pending && o->err) { /* the op already failed: don't start more I/O */
			s->submit_pending = false;
			slot_release(sw, s, false);
			return;
		}
		if (s->submit_pending) {
			ret = submit_io(sw, c, to_gpu ? IOSCHED_OP_READ : IOSCHED_OP_WRITE, s->buf,
			                off, len, si, &s->reqs_left);
			if (ret == -EAGAIN)
				return;
			s->submit_pending = false;
			if (ret)
				op_fail(sw, o, ret);
		}
		if (s->reqs_left)
			return;
		if (!to_gpu || o->err) {
			slot_release(sw, s, !o->err);
			return;
		}
		if ((ret = gpu_copy(sw, (char *)c->gpu + off, s->buf, len, true, s->ev))) {
			op_fail(sw, o, ret);
			slot_release(sw, s, false);
			return;
		}
		s->state = SLOT_COPY;
	} else if (s->state == SLOT_COPY) {
		int q = gpu_event_done(sw, s->ev);
		if (q == 0)
			return;
		if (q < 0 || o->err || to_gpu) {
			if (q < 0)
				op_fail(sw, o, q);
			slot_release(sw, s, q > 0 && !o->err);
			return;
		}
		s->state = SLOT_IO;
		s->submit_pending = true;
		advance_slot(sw, si);
	}
}

static void
advance_staged(offload_swapper_t *sw, unsigned oi)
{
	op *o = &sw->ops[oi];
	chunk *c = &sw->chunks[o->chunk];
	for (unsigned si = 0; si < sw->nslots && !o->err && o->next_piece < o->npieces; si++) {
		slot *s = &sw->slots[si];
		if (s->state != SLOT_FREE)
			continue;
		s->op = (int)oi;
		s->piece = o->next_piece++;
		o->active++;
		if (o->dst == OFFLOAD_TIER_GPU) {
			s->state = SLOT_IO;
			s->submit_pending = true;
		} else {
			uint64_t off = s->piece * sw->opts.buffer_size;
			uint64_t len = c->size - off < sw->opts.buffer_size ? c->size - off
			                                                    : sw->opts.buffer_size;
			int ret = gpu_copy(sw, s->buf, (char *)c->gpu + off, len, false, s->ev);
			if (ret) {
				op_fail(sw, o, ret);
				slot_release(sw, s, false);
				break;
			}
			s->state = SLOT_COPY;
		}
		advance_slot(sw, si);
	}
	if (!o->active && (o->err || o->pieces_done == o->npieces))
		finish_op(sw, oi);
}

static void
reap_io(offload_swapper_t *sw, int timeout_ms)
{
	iosched_cpl cpl[64];
	unsigned min = timeout_ms != 0 && iosched_outstanding(sw->ios) ? 1 : 0;
	int n = iosched_reap(sw->ios, cpl, 64, min, timeout_ms);
	for (int i = 0; i < n; i++) {
		op *o;
		if (cpl[i].tag & TAG_DIRECT) {
			o = &sw->ops[cpl[i].tag & ~TAG_DIRECT];
			o->reqs_left--;
		} else {
			slot *s = &sw->slots[cpl[i].tag];
			o = &sw->ops[s->op];
			s->reqs_left--;
		}
		if (cpl[i].res < 0) {
			char msg[OFF_ERR_LEN - 64];
			iosched_cpl_describe(sw->ios, &cpl[i], msg, sizeof(msg));
			off_set_err(sw->err, SUBSYS, "chunk %s: %s", sw->chunks[o->chunk].name,
			            msg);
			op_fail(sw, o, (int)cpl[i].res);
		}
	}
}

static void
progress(offload_swapper_t *sw)
{
	reap_io(sw, 0);
	for (unsigned si = 0; si < sw->nslots; si++)
		if (sw->slots[si].state != SLOT_FREE)
			advance_slot(sw, si);
	for (unsigned oi = 0; oi < sw->opts.max_ops; oi++) {
		op *o = &sw->ops[oi];
		if (o->state != OP_ACTIVE)
			continue;
		if (o->shape == SHAPE_COPY)
			advance_copy(sw, oi);
		else if (o->shape == SHAPE_DIRECT)
			advance_direct(sw, oi);
		else if (o->shape == SHAPE_STAGED)
			advance_staged(sw, oi);
	}
}

/* Picks where a copy for `dst` comes from. */
static offload_tier
pick_src(const chunk *c, offload_tier dst)
{
	static const offload_tier pref[OFFLOAD_TIER_COUNT][2] = {
	        [OFFLOAD_TIER_GPU] = {OFFLOAD_TIER_HOST, OFFLOAD_TIER_NVME},
	        [OFFLOAD_TIER_HOST] = {OFFLOAD_TIER_GPU, OFFLOAD_TIER_NVME},
	        [OFFLOAD_TIER_NVME] = {OFFLOAD_TIER_HOST, OFFLOAD_TIER_GPU},
	};
	return c->valid & (1u << pref[dst][0]) ? pref[dst][0] : pref[dst][1];
}

static int
start_op(offload_swapper_t *sw, int id, offload_op kind, offload_tier tier, offload_tier dst,
         bool drop_src, bool immediate, uint64_t tag)
{
	chunk *c = &sw->chunks[id];
	unsigned oi;
	for (oi = 0; oi < sw->opts.max_ops; oi++)
		if (sw->ops[oi].state == OP_FREE)
			break;
	if (oi == sw->opts.max_ops)
		return -EAGAIN;
	op *o = &sw->ops[oi];
	gpu_event ev = o->ev;
	memset(o, 0, sizeof(*o));
	o->ev = ev;
	o->state = OP_ACTIVE;
	o->chunk = id;
	o->kind = kind;
	o->tier = tier;
	o->dst = dst;
	o->drop_src = drop_src;
	o->tag = tag;
	sw->outstanding++;
	c->op = (int)oi;
	if (immediate || (c->valid & (1u << dst))) { /* nothing to move */
		finish_op(sw, oi);
		return 0;
	}
	o->src = pick_src(c, dst);
	int ret = take_space(sw, c, dst, &o->alloc_dst);
	if (ret) {
		c->op = -1;
		o->state = OP_FREE;
		sw->outstanding--;
		return ret;
	}
	bool gpu_side = o->src == OFFLOAD_TIER_GPU || dst == OFFLOAD_TIER_GPU;
	bool nvme_side = o->src == OFFLOAD_TIER_NVME || dst == OFFLOAD_TIER_NVME;
	if (gpu_side && nvme_side) {
		o->shape = SHAPE_STAGED;
		o->npieces = (c->size + sw->opts.buffer_size - 1) / sw->opts.buffer_size;
		advance_staged(sw, oi);
	} else if (gpu_side) {
		o->shape = SHAPE_COPY;
		bool h2d = dst == OFFLOAD_TIER_GPU;
		ret = gpu_copy(sw, h2d ? c->gpu : c->host, h2d ? c->host : c->gpu, c->size, h2d,
		               o->ev);
		if (ret) {
			op_fail(sw, o, ret);
			finish_op(sw, oi);
		} else {
			o->ev_pending = true;
		}
	} else {
		o->shape = SHAPE_DIRECT;
		o->submit_pending = true;
		advance_direct(sw, oi);
	}
	return 0;
}

int
offload_chunk_fetch(offload_swapper_t *sw, int id, offload_tier tier, uint64_t tag)
{
	chunk *c = get_chunk(sw, id);
	int ret;
	if (!c)
		return -EINVAL;
	if ((ret = tier_check(sw, tier)))
		return ret;
	if (c->op >= 0)
		return -EBUSY;
	if (!c->valid) {
		off_set_err(sw->err, SUBSYS, "chunk %s has no valid copy to fetch from", c->name);
		return -ENODATA;
	}
	return start_op(sw, id, OFFLOAD_OP_FETCH, tier, tier, false, false, tag);
}

int
offload_chunk_evict(offload_swapper_t *sw, int id, offload_tier tier, uint64_t tag)
{
	chunk *c = get_chunk(sw, id);
	int ret;
	if (!c)
		return -EINVAL;
	if ((ret = tier_check(sw, tier)))
		return ret;
	if (c->op >= 0)
		return -EBUSY;
	if (!(c->valid & (1u << tier))) {
		drop_copy(sw, c, tier); /* a stale extent: release it */
		return start_op(sw, id, OFFLOAD_OP_EVICT, tier, tier, false, true, tag);
	}
	if (c->valid & ~(1u << tier)) {
		offload_tier other =
		        (c->valid & (1u << OFFLOAD_TIER_HOST)) && tier != OFFLOAD_TIER_HOST
		                ? OFFLOAD_TIER_HOST
		                : pick_src(c, tier);
		return start_op(sw, id, OFFLOAD_OP_EVICT, tier, other, true, false, tag);
	}
	offload_tier lower;
	if (tier == OFFLOAD_TIER_GPU && sw->host)
		lower = OFFLOAD_TIER_HOST;
	else if (tier != OFFLOAD_TIER_NVME && sw->nvme)
		lower = OFFLOAD_TIER_NVME;
	else {
		off_set_err(sw->err, SUBSYS,
		            "chunk %s: cannot evict its only copy from %s: no "
		            "lower tier (give an nvme_path)",
		            c->name, offload_tier_name(tier));
		return -ENOSPC;
	}
	return start_op(sw, id, OFFLOAD_OP_EVICT, tier, lower, true, false, tag);
}

int
offload_poll(offload_swapper_t *sw, offload_event *out, unsigned max, unsigned min, int timeout_ms)
{
	if (min > max || min > sw->outstanding)
		return -EINVAL;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		progress(sw);
		if (sw->done_count >= min || timeout_ms == 0)
			break;
		struct timespec t1;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		if (timeout_ms > 0 && el >= timeout_ms)
			break;
		/* Block in iosched only when no GPU copy is waiting to be noticed. */
		bool gpu_wait = false;
		for (unsigned i = 0; i < sw->nslots && !gpu_wait; i++)
			gpu_wait = sw->slots[i].state == SLOT_COPY;
		for (unsigned i = 0; i < sw->opts.max_ops && !gpu_wait; i++)
			gpu_wait = sw->ops[i].state == OP_ACTIVE && sw->ops[i].ev_pending;
		if (gpu_wait)
			sched_yield();
		else if (iosched_outstanding(sw->ios))
			reap_io(sw, 10);
	}
	unsigned n = 0;
	while (n < max && sw->done_count) {
		unsigned oi = sw->done_fifo[sw->done_head];
		sw->done_head = (sw->done_head + 1) % sw->opts.max_ops;
		sw->done_count--;
		op *o = &sw->ops[oi];
		out[n++] = (offload_event){.chunk = o->chunk,
		                           .op = o->kind,
		                           .tier = o->tier,
		                           .res = o->err,
		                           .tag = o->tag};
		o->state = OP_FREE;
		sw->outstanding--;
	}
	return (int)n;
}

void
offload_swapper_report(const offload_swapper_t *sw, offload_report *r)
{
	offload_plan(&sw->opts, r, NULL, 0);
	r->present[OFFLOAD_TIER_GPU] = sw->gpu != NULL;
	r->present[OFFLOAD_TIER_NVME] = sw->nvme != NULL;
	if (sw->gpu)
		offload_gpu_arena_usage(sw->gpu, &r->usage[OFFLOAD_TIER_GPU]);
	offload_host_pool_usage(sw->host, &r->usage[OFFLOAD_TIER_HOST]);
	r->host_mode = offload_host_pool_mode(sw->host);
	r->staging_bytes = (uint64_t)sw->nslots * sw->opts.buffer_size;
	if (sw->nvme)
		offload_nvme_usage(sw->nvme, &r->usage[OFFLOAD_TIER_NVME]);
}
