/* iosched core: options, files, the shared request FIFO, workers, completions.
 *
 * DESIGN. Requests go into one FIFO guarded by q_lock. Each worker thread claims block_size
 * pieces from the head request while it has fewer than queue_depth pieces in flight, hands them
 * to its backend in a batch, and reaps completions without blocking; only when it has nothing
 * to hand over and nothing to reap does it sleep in the backend's wait (io_uring: one
 * io_uring_enter that also returns on a wake-up; libaio/psync: poll on two eventfds). The owner
 * wakes a worker only when the worker said it was about to sleep (Dekker-style flag), so a busy
 * pipeline costs no extra system calls. Pieces of one request may finish in any order on any
 * worker; the request completes when its last piece does. Guarantees: requests start in
 * submission order; each completes exactly once; a failure in one piece fails only its request
 * (the request's unclaimed pieces are then skipped). */
#define _GNU_SOURCE
#include "iosched_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "iosched/log.h"

#define SUBSYS "iosched"

static const char *const backend_names[] = {"auto", "io_uring", "libaio", "psync"};

int
iosched_backend_parse(const char *name, iosched_backend *out)
{
	for (unsigned i = 0; i < sizeof(backend_names) / sizeof(backend_names[0]); i++)
		if (name && !strcmp(name, backend_names[i])) {
			*out = (iosched_backend)i;
			return 0;
		}
	return -EINVAL;
}

const char *
iosched_backend_name(iosched_backend b)
{
	return (unsigned)b < 4 ? backend_names[b] : "?";
}

void
iosched_opts_init(iosched_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->backend = IOSCHED_BACKEND_AUTO;
	opts->queue_depth = 32;
	opts->block_size = 1u << 20;
	opts->thread_count = 1;
	opts->max_requests = 4096;
	opts->max_files = 64;
}

uint64_t
iosched_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double
iosched_now_s(void)
{
	return 1e-9 * (double)iosched_now_ns();
}

static void __attribute__((format(printf, 2, 3)))
set_err(iosched_t *ios, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ios->err, sizeof(ios->err), fmt, ap);
	va_end(ap);
}

const char *
iosched_last_error(const iosched_t *ios)
{
	return ios ? ios->err : "no iosched handle";
}

iosched_backend
iosched_get_backend(const iosched_t *ios)
{
	return ios->backend;
}

const char *
iosched_backend_reason(const iosched_t *ios)
{
	return ios->reason;
}

/* ---- requests and completions (q_lock held unless said otherwise) ---- */

static void
push_completion_locked(iosched_t *ios, ios_request *rq)
{
	unsigned cap = ios->opts.max_requests;
	iosched_cpl *c = &ios->cpl_ring[(ios->cpl_head + ios->cpl_count) % cap];
	c->tag = rq->r.tag;
	c->file = rq->r.file;
	c->op = rq->r.op;
	if (rq->err) {
		c->res = -rq->err;
		c->err_offset = rq->err_off;
		c->err_len = rq->err_len;
	} else {
		c->res = (int64_t)rq->r.len;
		c->err_offset = 0;
		c->err_len = 0;
	}
	ios->cpl_count++;
	ios->unfinished--;
	if (rq->err)
		ios->reqs_failed++;
	else
		ios->reqs_completed++;
	atomic_fetch_sub_explicit(&ios->files[rq->r.file].outstanding, 1, memory_order_relaxed);
	rq->next = ios->free_slots;
	ios->free_slots = rq;
	pthread_cond_broadcast(&ios->cpl_cond);
}

/* Marks `n` pieces of rq finished; completes the request with the last one. */
static void
pieces_finished_locked(iosched_t *ios, ios_request *rq, unsigned n)
{
	unsigned done = atomic_fetch_add_explicit(&rq->pieces_done, n, memory_order_acq_rel) + n;
	if (done == rq->pieces_total)
		push_completion_locked(ios, rq);
}

static void
fail_request_locked(ios_request *rq, int err, uint64_t off, uint64_t len)
{
	if (!rq->err) {
		rq->err = err;
		rq->err_off = off;
		rq->err_len = len;
	}
}

/* Removes the head request from the FIFO once it has no unclaimed pieces. */
static void
q_pop_head_locked(iosched_t *ios)
{
	ios_request *rq = ios->q_head;
	ios->q_head = rq->next;
	if (!ios->q_head)
		ios->q_tail = NULL;
	rq->next = NULL;
}

/* Claims up to `max` pieces for worker w. Requests that failed or were cancelled give up their
 * unclaimed pieces here. Returns the number claimed; they are linked through ->next. */
static unsigned
claim_pieces(ios_worker *w, unsigned max, ios_piece **out)
{
	iosched_t *ios = w->ios;
	uint64_t bs = ios->opts.block_size;
	unsigned n = 0;
	ios_piece *head = NULL, **tail = &head;

	pthread_mutex_lock(&ios->q_lock);
	while (n < max && ios->q_head) {
		ios_request *rq = ios->q_head;
		if (rq->err || ios->cancelling) {
			if (!rq->err)
				fail_request_locked(rq, ECANCELED, rq->r.offset + rq->next_off,
						    rq->r.len - rq->next_off);
			unsigned claimed = (unsigned)((rq->next_off + bs - 1) / bs);
			unsigned skip = rq->pieces_total - claimed;
			rq->next_off = rq->r.len;
			q_pop_head_locked(ios);
			if (skip)
				pieces_finished_locked(ios, rq, skip);
			continue;
		}
		ios_piece *p = w->free_list;
		w->free_list = p->next;
		uint64_t len = rq->r.len - rq->next_off;
		if (len > bs)
			len = bs;
		p->req = rq;
		p->file = rq->r.file;
		p->op = rq->r.op;
		p->buf = (char *)rq->r.buf + rq->next_off;
		p->offset = rq->r.offset + rq->next_off;
		p->start_offset = p->offset;
		p->len = len;
		p->total = len;
		p->done = 0;
		p->retries = 0;
		p->next = NULL;
		rq->next_off += len;
		if (rq->next_off == rq->r.len)
			q_pop_head_locked(ios);
		*tail = p;
		tail = &p->next;
		n++;
	}
	pthread_mutex_unlock(&ios->q_lock);
	*out = head;
	return n;
}

static void
piece_release(ios_worker *w, ios_piece *p)
{
	p->req = NULL;
	p->next = w->free_list;
	w->free_list = p;
	w->inflight--;
}

/* A piece has finished for good: success (err == 0) or failure. */
static void
piece_finish(ios_worker *w, ios_piece *p, int err)
{
	iosched_t *ios = w->ios;
	ios_request *rq = p->req;
	if (!err) {
		ios_file *f = &ios->files[p->file];
		atomic_fetch_add_explicit(&f->bytes, p->total, memory_order_relaxed);
		atomic_fetch_add_explicit(&f->ops, 1, memory_order_relaxed);
		if (p->op == IOSCHED_OP_READ)
			atomic_fetch_add_explicit(&w->st.bytes_read, p->total, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&w->st.bytes_written, p->total, memory_order_relaxed);
	}
	pthread_mutex_lock(&ios->q_lock);
	if (err)
		fail_request_locked(rq, err, p->offset, p->len);
	pieces_finished_locked(ios, rq, 1);
	pthread_mutex_unlock(&ios->q_lock);
	piece_release(w, p);
}

/* Fault injection: decides the fate of a piece before it reaches the kernel.
 * Returns true if the piece was completed synthetically. */
static bool
fault_inject(ios_worker *w, ios_piece *p)
{
	iosched_t *ios = w->ios;
	const iosched_fault *f = &ios->fault;
	if (f->ops && !(f->ops & p->op))
		return false;
	uint64_t k = atomic_fetch_add_explicit(&ios->fault_count, 1, memory_order_relaxed) + 1;
	bool hit = f->repeat ? (k % f->nth == 0) : (k == f->nth);
	if (!hit)
		return false;
	if (f->err) {
		p->result = -f->err;
		p->next = w->synth_head;
		w->synth_head = p;
		return true;
	}
	/* Short transfer: run half the piece (kept aligned for O_DIRECT files). */
	unsigned a = ios->files[p->file].off_align;
	uint64_t half = (p->len / 2) / a * a;
	if (half > 0)
		p->len = half;
	return false;
}

static void
hand_to_backend(ios_worker *w, ios_piece *p)
{
	if (w->ios->fault_on && fault_inject(w, p))
		return;
	p->t_submit_ns = iosched_now_ns();
	w->ios->ops->prep(w, p);
}

/* Handles one reaped piece: success, short transfer, retryable error or failure. */
static void
piece_complete(ios_worker *w, ios_piece *p)
{
	int64_t res = p->result;
	if (p->t_submit_ns) {
		uint64_t dt = iosched_now_ns() - p->t_submit_ns;
		atomic_fetch_add_explicit(&w->st.lat[ios_lat_bucket(dt)], 1, memory_order_relaxed);
	}
	atomic_fetch_add_explicit(&w->st.pieces, 1, memory_order_relaxed);
	if (res < 0) {
		int e = (int)-res;
		if ((e == EINTR || e == EAGAIN) && p->retries < IOSCHED_MAX_RETRIES) {
			p->retries++;
			atomic_fetch_add_explicit(&w->st.retries, 1, memory_order_relaxed);
			p->next = w->retry_head;
			w->retry_head = p;
			return;
		}
		piece_finish(w, p, e);
		return;
	}
	if (res == 0 && p->len > 0) {
		/* Read at or past end of file, or a device that wrote nothing. */
		piece_finish(w, p, p->op == IOSCHED_OP_READ ? ENODATA : EIO);
		return;
	}
	p->done += (uint64_t)res;
	if (p->done < p->total) {
		atomic_fetch_add_explicit(&w->st.short_transfers, 1, memory_order_relaxed);
		p->buf += res;
		p->offset += (uint64_t)res;
		p->len = p->total - p->done;
		p->retries = 0;
		p->next = w->retry_head;
		w->retry_head = p;
		return;
	}
	p->offset = p->start_offset;
	p->len = p->total;
	piece_finish(w, p, 0);
}

static bool
queue_has_work(iosched_t *ios)
{
	pthread_mutex_lock(&ios->q_lock);
	bool has = ios->q_head != NULL;
	pthread_mutex_unlock(&ios->q_lock);
	return has;
}

static void *
worker_main(void *arg)
{
	ios_worker *w = arg;
	iosched_t *ios = w->ios;
	const ios_backend_ops *ops = ios->ops;
	unsigned qd = ios->opts.queue_depth;
	ios_piece **done = calloc(qd, sizeof(*done));
	if (!done) {
		zinf_log(ZINF_LOG_ERROR, SUBSYS, "worker %u: out of memory", w->id);
		return NULL;
	}
	for (;;) {
		bool progressed = false;
		/* Resubmissions first: they belong to requests already started. */
		while (w->retry_head) {
			ios_piece *p = w->retry_head;
			w->retry_head = p->next;
			hand_to_backend(w, p);
			progressed = true;
		}
		if (w->inflight < qd) {
			ios_piece *p;
			unsigned n = claim_pieces(w, qd - w->inflight, &p);
			w->inflight += n;
			while (p) {
				ios_piece *next = p->next;
				hand_to_backend(w, p);
				p = next;
			}
			progressed |= n > 0;
		}
		if (progressed) {
			int rc = ops->submit(w);
			if (rc < 0 && rc != -EAGAIN)
				zinf_log(ZINF_LOG_ERROR, SUBSYS, "worker %u: submit: %s", w->id,
					 strerror(-rc));
		}
		while (w->synth_head) {
			ios_piece *p = w->synth_head;
			w->synth_head = p->next;
			p->t_submit_ns = 0;
			piece_complete(w, p);
			progressed = true;
		}
		int n = ops->reap(w, done, qd);
		for (int i = 0; i < n; i++)
			piece_complete(w, done[i]);
		if (n > 0 || w->retry_head || w->synth_head)
			continue;
		if (progressed)
			continue;
		if (atomic_load(&ios->stopping) && w->inflight == 0)
			break;
		/* About to sleep: announce it, then look once more, so a submit that raced with us
		 * either sees the flag (and wakes us) or is seen here. */
		atomic_store(&w->sleeping, 1);
		if (w->inflight < qd && queue_has_work(ios)) {
			atomic_store(&w->sleeping, 0);
			continue;
		}
		if (atomic_load(&ios->stopping) && w->inflight == 0) {
			atomic_store(&w->sleeping, 0);
			break;
		}
		ops->wait(w);
		atomic_store(&w->sleeping, 0);
	}
	free(done);
	return NULL;
}

static void
wake_worker(ios_worker *w)
{
	uint64_t one = 1;
	ssize_t r;
	do
		r = write(w->wake_fd, &one, sizeof(one));
	while (r < 0 && errno == EINTR);
}

static void
wake_sleepers(iosched_t *ios, bool all)
{
	for (unsigned i = 0; i < ios->nworkers; i++)
		if (all || atomic_load(&ios->workers[i].sleeping))
			wake_worker(&ios->workers[i]);
}

/* ---- create / destroy ---- */

static int
validate_opts(const iosched_opts *o, char *err, size_t errlen)
{
	if (o->queue_depth < 1 || o->queue_depth > 4096) {
		snprintf(err, errlen,
			 "queue_depth %u is out of range: it must be 1..4096 (aio.queue_depth); "
			 "8 to 128 suits NVMe",
			 o->queue_depth);
		return -EINVAL;
	}
	if (o->block_size < 4096 || o->block_size % 4096 || o->block_size > (1ull << 30)) {
		snprintf(err, errlen,
			 "block_size %llu is invalid: it must be a multiple of 4096 between 4 KiB and "
			 "1 GiB (aio.block_size); 1 MiB (1048576) is a good start",
			 (unsigned long long)o->block_size);
		return -EINVAL;
	}
	if (o->thread_count < 1 || o->thread_count > 64) {
		snprintf(err, errlen,
			 "thread_count %u is out of range: it must be 1..64 (aio.thread_count)",
			 o->thread_count);
		return -EINVAL;
	}
	if (o->max_requests < 1 || o->max_requests > (1u << 20)) {
		snprintf(err, errlen, "max_requests %u is out of range: it must be 1..1048576",
			 o->max_requests);
		return -EINVAL;
	}
	if (o->max_files < 1 || o->max_files > 65536) {
		snprintf(err, errlen, "max_files %u is out of range: it must be 1..65536",
			 o->max_files);
		return -EINVAL;
	}
	if ((unsigned)o->backend > IOSCHED_BACKEND_PSYNC) {
		snprintf(err, errlen, "backend %d is unknown: use auto, io_uring, libaio or psync",
			 (int)o->backend);
		return -EINVAL;
	}
	if (o->fault && o->fault->nth == 0) {
		snprintf(err, errlen, "fault.nth must be >= 1");
		return -EINVAL;
	}
	return 0;
}

static void
workers_stop(iosched_t *ios)
{
	atomic_store(&ios->stopping, true);
	for (unsigned i = 0; i < ios->nworkers; i++) {
		ios_worker *w = &ios->workers[i];
		if (w->started) {
			wake_worker(w);
			pthread_join(w->thread, NULL);
			w->started = false;
		}
	}
}

static void
workers_free(iosched_t *ios)
{
	for (unsigned i = 0; i < ios->nworkers; i++) {
		ios_worker *w = &ios->workers[i];
		if (w->bctx)
			ios->ops->fini(w);
		if (w->wake_fd >= 0)
			close(w->wake_fd);
		free(w->pieces);
	}
	free(ios->workers);
	ios->workers = NULL;
	ios->nworkers = 0;
}

/* Creates the workers' backend contexts with `ops`. On failure leaves none behind. */
static int
workers_init(iosched_t *ios, const ios_backend_ops *ops, char *why, size_t whylen)
{
	unsigned n = ios->opts.thread_count, qd = ios->opts.queue_depth;
	ios->ops = ops;
	ios->workers = calloc(n, sizeof(*ios->workers));
	if (!ios->workers)
		return -ENOMEM;
	ios->nworkers = n;
	for (unsigned i = 0; i < n; i++) {
		ios_worker *w = &ios->workers[i];
		w->ios = ios;
		w->id = i;
		w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		w->pieces = calloc(qd, sizeof(*w->pieces));
		if (w->wake_fd < 0 || !w->pieces) {
			snprintf(why, whylen, "eventfd/calloc: %s", strerror(errno));
			workers_free(ios);
			return -ENOMEM;
		}
		for (unsigned k = 0; k < qd; k++) {
			w->pieces[k].idx = k;
			w->pieces[k].next = k + 1 < qd ? &w->pieces[k + 1] : NULL;
		}
		w->free_list = &w->pieces[0];
		int rc = ops->init(w, why, whylen);
		if (rc < 0) {
			w->bctx = NULL;
			workers_free(ios);
			return rc;
		}
	}
	return 0;
}

static int
workers_start(iosched_t *ios)
{
	for (unsigned i = 0; i < ios->nworkers; i++) {
		ios_worker *w = &ios->workers[i];
		int rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc) {
			set_err(ios, "cannot start I/O worker thread %u: %s", i, strerror(rc));
			workers_stop(ios);
			return -rc;
		}
		w->started = true;
	}
	return 0;
}

int
iosched_create(const iosched_opts *opts, iosched_t **out)
{
	char err[512];
	*out = NULL;
	iosched_opts o;
	if (opts)
		o = *opts;
	else
		iosched_opts_init(&o);
	int rc = validate_opts(&o, err, sizeof(err));
	if (rc < 0) {
		zinf_log(ZINF_LOG_ERROR, SUBSYS, "%s", err);
		return rc;
	}
	iosched_t *ios = calloc(1, sizeof(*ios));
	if (!ios)
		return -ENOMEM;
	ios->opts = o;
	if (o.fault) {
		ios->fault = *o.fault;
		ios->fault_on = true;
	}
	ios->opts.fault = NULL;
	pthread_mutex_init(&ios->q_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ios->cpl_cond, &ca);
	pthread_condattr_destroy(&ca);

	ios->slots = calloc(o.max_requests, sizeof(*ios->slots));
	ios->cpl_ring = calloc(o.max_requests, sizeof(*ios->cpl_ring));
	ios->files = calloc(o.max_files, sizeof(*ios->files));
	if (!ios->slots || !ios->cpl_ring || !ios->files) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < o.max_requests; i++)
		ios->slots[i].next = i + 1 < o.max_requests ? &ios->slots[i + 1] : NULL;
	ios->free_slots = &ios->slots[0];
	for (unsigned i = 0; i < o.max_files; i++)
		ios->files[i].fd = -1;

	/* Backend choice. */
	static const struct {
		iosched_backend kind;
		const ios_backend_ops *ops;
	} order[] = {
		{IOSCHED_BACKEND_IO_URING, &ios_backend_uring},
		{IOSCHED_BACKEND_LIBAIO, &ios_backend_aio},
		{IOSCHED_BACKEND_PSYNC, &ios_backend_psync},
	};
	char why_all[512] = "";
	rc = -ENOSYS;
	for (unsigned i = 0; i < 3; i++) {
		if (o.backend != IOSCHED_BACKEND_AUTO && o.backend != order[i].kind)
			continue;
		char why[256] = "";
		rc = workers_init(ios, order[i].ops, why, sizeof(why));
		if (rc == 0) {
			ios->backend = order[i].kind;
			if (o.backend == IOSCHED_BACKEND_AUTO)
				snprintf(ios->reason, sizeof(ios->reason), "auto: %s%s",
					 why_all[0] ? why_all : "io_uring is available",
					 why_all[0] ? "" : "");
			else
				snprintf(ios->reason, sizeof(ios->reason), "requested");
			break;
		}
		size_t used = strlen(why_all);
		snprintf(why_all + used, sizeof(why_all) - used, "%s unavailable (%s); ",
			 backend_names[order[i].kind], why);
		if (o.backend != IOSCHED_BACKEND_AUTO) {
			set_err(ios, "the %s backend cannot start: %s", backend_names[order[i].kind],
				why);
			zinf_log(ZINF_LOG_ERROR, SUBSYS, "%s", ios->err);
			goto fail;
		}
	}
	if (rc < 0) {
		zinf_log(ZINF_LOG_ERROR, SUBSYS, "no I/O backend can start: %s", why_all);
		goto fail;
	}
	if (o.backend == IOSCHED_BACKEND_AUTO && !o.quiet) {
		if (ios->backend == IOSCHED_BACKEND_IO_URING)
			zinf_log(ZINF_LOG_INFO, SUBSYS, "using io_uring (auto)");
		else
			zinf_log(ZINF_LOG_WARN, SUBSYS, "using %s: %s", backend_names[ios->backend],
				 why_all);
	}
	rc = workers_start(ios);
	if (rc < 0) {
		workers_free(ios);
		goto fail;
	}
	*out = ios;
	return 0;
fail:
	free(ios->slots);
	free(ios->cpl_ring);
	free(ios->files);
	pthread_mutex_destroy(&ios->q_lock);
	pthread_cond_destroy(&ios->cpl_cond);
	free(ios);
	return rc;
}

void
iosched_cancel_all(iosched_t *ios)
{
	pthread_mutex_lock(&ios->q_lock);
	ios->cancelling = true;
	pthread_mutex_unlock(&ios->q_lock);
	wake_sleepers(ios, true);
	pthread_mutex_lock(&ios->q_lock);
	while (ios->unfinished > 0) {
		/* Workers drop cancelled requests when they next claim; keep them looking. */
		if (ios->q_head) {
			pthread_mutex_unlock(&ios->q_lock);
			wake_sleepers(ios, true);
			pthread_mutex_lock(&ios->q_lock);
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 10 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&ios->cpl_cond, &ios->q_lock, &ts);
	}
	ios->cancelling = false;
	pthread_mutex_unlock(&ios->q_lock);
}

void
iosched_destroy(iosched_t *ios)
{
	if (!ios)
		return;
	iosched_cancel_all(ios);
	workers_stop(ios);
	workers_free(ios);
	for (unsigned i = 0; i < ios->opts.max_files; i++)
		if (ios->files[i].fd >= 0) {
			close(ios->files[i].fd);
			free(ios->files[i].path);
		}
	free(ios->bufs);
	free(ios->files);
	free(ios->slots);
	free(ios->cpl_ring);
	pthread_mutex_destroy(&ios->q_lock);
	pthread_cond_destroy(&ios->cpl_cond);
	free(ios);
}

/* ---- files ---- */

static bool
file_valid(const iosched_t *ios, int file)
{
	return file >= 0 && (unsigned)file < ios->opts.max_files && ios->files[file].fd >= 0;
}

int
iosched_file_open(iosched_t *ios, const char *path, unsigned flags, mode_t mode)
{
	int slot = -1;
	for (unsigned i = 0; i < ios->opts.max_files; i++)
		if (ios->files[i].fd < 0) {
			slot = (int)i;
			break;
		}
	if (slot < 0) {
		set_err(ios, "%s: cannot open: %u files are open already (max_files); close some",
			path, ios->opts.max_files);
		return -EMFILE;
	}
	int oflags = O_CLOEXEC | ((flags & IOSCHED_OPEN_WRITE) ? O_RDWR : O_RDONLY);
	if (flags & IOSCHED_OPEN_CREATE)
		oflags |= O_CREAT;
	if (flags & IOSCHED_OPEN_EXCL)
		oflags |= O_EXCL;
	if (flags & IOSCHED_OPEN_TRUNC)
		oflags |= O_TRUNC;
	bool direct = !(flags & IOSCHED_OPEN_BUFFERED);
	int fd = open(path, oflags | (direct ? O_DIRECT : 0), mode);
	if (fd < 0 && direct && errno == EINVAL) {
		/* tmpfs and some FUSE filesystems refuse O_DIRECT. */
		fd = open(path, oflags, mode);
		if (fd >= 0)
			zinf_log(ZINF_LOG_WARN, SUBSYS,
				 "%s: the filesystem refuses O_DIRECT; using buffered I/O (the page "
				 "cache will hold a copy of the data)",
				 path);
		direct = false;
	}
	if (fd < 0) {
		int e = errno;
		const char *hint = "";
		if (e == ENOENT)
			hint = " (does the folder exist?)";
		else if (e == EACCES || e == EROFS)
			hint = " (is the path writable by this user, and the filesystem mounted rw?)";
		else if (e == EEXIST)
			hint = " (the file exists and was not created by this run; remove it or pick "
			       "another path)";
		set_err(ios, "%s: cannot open: %s%s", path, strerror(e), hint);
		return -e;
	}
	ios_file *f = &ios->files[slot];
	f->direct = direct;
	if (direct)
		ios_dio_alignment(fd, &f->off_align, &f->mem_align);
	else
		f->off_align = f->mem_align = 1;
	f->path = strdup(path);
	if (!f->path) {
		close(fd);
		return -ENOMEM;
	}
	atomic_store(&f->outstanding, 0);
	atomic_store(&f->bytes, 0);
	atomic_store(&f->ops, 0);
	for (unsigned i = 0; i < ios->nworkers; i++)
		if (ios->ops->file_set) {
			int rc = ios->ops->file_set(&ios->workers[i], slot, fd);
			if (rc < 0) {
				for (unsigned k = 0; k < i; k++)
					ios->ops->file_set(&ios->workers[k], slot, -1);
				set_err(ios, "%s: cannot register the file with io_uring: %s", path,
					strerror(-rc));
				free(f->path);
				f->path = NULL;
				close(fd);
				return rc;
			}
		}
	/* Publishing fd last: workers only see it through requests queued under q_lock. */
	f->fd = fd;
	return slot;
}

int
iosched_file_close(iosched_t *ios, int file)
{
	if (!file_valid(ios, file)) {
		set_err(ios, "file index %d is not open", file);
		return -EBADF;
	}
	ios_file *f = &ios->files[file];
	if (atomic_load(&f->outstanding)) {
		set_err(ios, "%s: %u requests on it are still in flight; reap them before closing",
			f->path, atomic_load(&f->outstanding));
		return -EBUSY;
	}
	for (unsigned i = 0; i < ios->nworkers; i++)
		if (ios->ops->file_set)
			ios->ops->file_set(&ios->workers[i], file, -1);
	int rc = close(f->fd) < 0 ? -errno : 0;
	f->fd = -1;
	free(f->path);
	f->path = NULL;
	return rc;
}

unsigned
iosched_file_alignment(const iosched_t *ios, int file)
{
	return file_valid(ios, file) ? ios->files[file].off_align : 0;
}

bool
iosched_file_is_direct(const iosched_t *ios, int file)
{
	return file_valid(ios, file) && ios->files[file].direct;
}

const char *
iosched_file_path(const iosched_t *ios, int file)
{
	return file_valid(ios, file) ? ios->files[file].path : "(closed file)";
}

int
iosched_file_stats(const iosched_t *ios, int file, uint64_t *bytes, uint64_t *ops)
{
	if (!file_valid(ios, file))
		return -EBADF;
	*bytes = atomic_load(&ios->files[file].bytes);
	*ops = atomic_load(&ios->files[file].ops);
	return 0;
}

/* ---- registered buffers ---- */

int
ios_find_buffer(const iosched_t *ios, const void *buf, uint64_t len)
{
	const char *b = buf;
	for (unsigned i = 0; i < ios->nbufs; i++) {
		const char *base = ios->bufs[i].iov_base;
		if (b >= base && b + len <= base + ios->bufs[i].iov_len)
			return (int)i;
	}
	return -1;
}

int
iosched_register_buffers(iosched_t *ios, void *const *bufs, const size_t *lens, unsigned n)
{
	if (ios->outstanding) {
		set_err(ios, "cannot register buffers while %u requests are outstanding; reap them "
			     "first",
			ios->outstanding);
		return -EBUSY;
	}
	struct iovec *iov = NULL;
	if (n) {
		iov = calloc(n, sizeof(*iov));
		if (!iov)
			return -ENOMEM;
		for (unsigned i = 0; i < n; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = lens[i];
		}
	}
	/* Workers are idle (nothing outstanding), so their contexts can be changed here. */
	for (unsigned i = 0; i < ios->nworkers; i++)
		if (ios->ops->buffers_set) {
			int rc = ios->ops->buffers_set(&ios->workers[i], iov, n);
			if (rc < 0) {
				for (unsigned k = 0; k <= i; k++)
					ios->ops->buffers_set(&ios->workers[k], NULL, 0);
				free(ios->bufs);
				ios->bufs = NULL;
				ios->nbufs = 0;
				free(iov);
				if (rc == -ENOMEM)
					set_err(ios,
						"cannot register %u buffers with io_uring: locked-memory "
						"limit too small (raise `ulimit -l`, e.g. to unlimited, or "
						"register fewer bytes)",
						n);
				else
					set_err(ios, "cannot register %u buffers with io_uring: %s", n,
						strerror(-rc));
				return rc;
			}
		}
	free(ios->bufs);
	ios->bufs = iov;
	ios->nbufs = n;
	return 0;
}

/* ---- submit / reap ---- */

static int
check_req(iosched_t *ios, const iosched_req *r, unsigned i)
{
	if (!file_valid(ios, r->file)) {
		set_err(ios, "request %u: file index %d is not open", i, r->file);
		return -EINVAL;
	}
	const ios_file *f = &ios->files[r->file];
	if (r->op != IOSCHED_OP_READ && r->op != IOSCHED_OP_WRITE) {
		set_err(ios, "request %u on %s: op %u is neither read (1) nor write (2)", i, f->path,
			r->op);
		return -EINVAL;
	}
	if (r->len == 0 || !r->buf) {
		set_err(ios, "request %u on %s: %s", i, f->path,
			r->len == 0 ? "length is 0" : "buffer is NULL");
		return -EINVAL;
	}
	if (r->offset + r->len < r->offset) {
		set_err(ios, "request %u on %s: offset %llu + length %llu overflows", i, f->path,
			(unsigned long long)r->offset, (unsigned long long)r->len);
		return -EINVAL;
	}
	if (f->direct) {
		unsigned a = f->off_align, m = f->mem_align;
		const char *what = NULL;
		unsigned long long val = 0;
		if (r->offset % a) {
			what = "offset";
			val = r->offset;
		} else if (r->len % a) {
			what = "length";
			val = r->len;
		} else if ((uintptr_t)r->buf % m) {
			set_err(ios,
				"request %u on %s: O_DIRECT needs the buffer address aligned to %u bytes, "
				"got %p (%llu bytes past a boundary); allocate with posix_memalign(%u) "
				"or open the file buffered",
				i, f->path, m, r->buf, (unsigned long long)((uintptr_t)r->buf % m), m);
			return -EINVAL;
		}
		if (what) {
			set_err(ios,
				"request %u on %s: O_DIRECT needs offsets and lengths that are multiples "
				"of %u bytes; %s %llu is not (offset %llu, length %llu); round it to a "
				"multiple of %u or open the file buffered",
				i, f->path, a, what, val, (unsigned long long)r->offset,
				(unsigned long long)r->len, a);
			return -EINVAL;
		}
	}
	return 0;
}

int
iosched_submit(iosched_t *ios, const iosched_req *reqs, unsigned n)
{
	if (n == 0)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		int rc = check_req(ios, &reqs[i], i);
		if (rc < 0)
			return rc;
	}
	uint64_t bs = ios->opts.block_size;
	pthread_mutex_lock(&ios->q_lock);
	if (ios->cancelling || atomic_load(&ios->stopping)) {
		pthread_mutex_unlock(&ios->q_lock);
		set_err(ios, "the I/O scheduler is shutting down; no new requests");
		return -ESHUTDOWN;
	}
	if (ios->opts.max_requests - ios->outstanding < n) {
		unsigned out = ios->outstanding;
		pthread_mutex_unlock(&ios->q_lock);
		set_err(ios, "%u requests are outstanding and %u more would pass max_requests (%u): "
			     "reap completions first",
			out, n, ios->opts.max_requests);
		return -EAGAIN;
	}
	for (unsigned i = 0; i < n; i++) {
		ios_request *rq = ios->free_slots;
		ios->free_slots = rq->next;
		rq->r = reqs[i];
		rq->next_off = 0;
		rq->pieces_total = (unsigned)((reqs[i].len + bs - 1) / bs);
		atomic_store_explicit(&rq->pieces_done, 0, memory_order_relaxed);
		rq->err = 0;
		rq->next = NULL;
		if (ios->q_tail)
			ios->q_tail->next = rq;
		else
			ios->q_head = rq;
		ios->q_tail = rq;
		atomic_fetch_add_explicit(&ios->files[reqs[i].file].outstanding, 1,
					  memory_order_relaxed);
	}
	ios->outstanding += n;
	ios->unfinished += n;
	pthread_mutex_unlock(&ios->q_lock);
	wake_sleepers(ios, false);
	return (int)n;
}

int
iosched_reap(iosched_t *ios, iosched_cpl *out, unsigned max, unsigned min, int timeout_ms)
{
	if (min > max) {
		set_err(ios, "reap: min %u > max %u", min, max);
		return -EINVAL;
	}
	pthread_mutex_lock(&ios->q_lock);
	if (min > ios->outstanding) {
		unsigned o = ios->outstanding;
		pthread_mutex_unlock(&ios->q_lock);
		set_err(ios, "reap: waiting for %u completions but only %u requests are outstanding",
			min, o);
		return -EINVAL;
	}
	if (min > 0 && ios->cpl_count < min && timeout_ms != 0) {
		struct timespec ts;
		if (timeout_ms > 0) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += timeout_ms / 1000;
			ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
		}
		while (ios->cpl_count < min) {
			int rc = timeout_ms > 0
					 ? pthread_cond_timedwait(&ios->cpl_cond, &ios->q_lock, &ts)
					 : pthread_cond_wait(&ios->cpl_cond, &ios->q_lock);
			if (rc == ETIMEDOUT)
				break;
		}
	}
	unsigned n = ios->cpl_count < max ? ios->cpl_count : max;
	unsigned cap = ios->opts.max_requests;
	for (unsigned i = 0; i < n; i++)
		out[i] = ios->cpl_ring[(ios->cpl_head + i) % cap];
	ios->cpl_head = (ios->cpl_head + n) % cap;
	ios->cpl_count -= n;
	ios->outstanding -= n;
	pthread_mutex_unlock(&ios->q_lock);
	return (int)n;
}

unsigned
iosched_outstanding(const iosched_t *ios)
{
	iosched_t *m = (iosched_t *)ios;
	pthread_mutex_lock(&m->q_lock);
	unsigned o = m->outstanding;
	pthread_mutex_unlock(&m->q_lock);
	return o;
}

int
iosched_cpl_describe(const iosched_t *ios, const iosched_cpl *c, char *buf, size_t len)
{
	const char *op = c->op == IOSCHED_OP_READ ? "read" : "write";
	const char *path = iosched_file_path(ios, c->file);
	if (c->res >= 0)
		return snprintf(buf, len, "%s of %s: %lld bytes", op, path, (long long)c->res);
	int e = (int)-c->res;
	const char *hint = "";
	switch (e) {
	case ENOSPC:
		hint = "; the filesystem is full: free space or point nvme_path at a larger disk";
		break;
	case EDQUOT:
		hint = "; the disk quota is exhausted";
		break;
	case EIO:
		hint = "; the device reported an I/O error: check `dmesg` and the drive's health";
		break;
	case EINVAL:
		if (file_valid(ios, c->file) && ios->files[c->file].direct)
			hint = "; with O_DIRECT this usually means an offset, length or buffer that is "
			       "not aligned to the device's logical block size";
		break;
	case ENODATA:
		hint = "; the read reached the end of the file";
		break;
	case EROFS:
		hint = "; the filesystem is read-only";
		break;
	case ECANCELED:
		hint = "; cancelled before it started";
		break;
	default:
		break;
	}
	return snprintf(buf, len, "%s of %s at offset %llu length %llu failed: %s (errno %d)%s", op,
			path, (unsigned long long)c->err_offset, (unsigned long long)c->err_len,
			strerror(e), e, hint);
}

void
iosched_get_stats(const iosched_t *ios, iosched_stats *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock((pthread_mutex_t *)&ios->q_lock);
	s->reqs_completed = ios->reqs_completed;
	s->reqs_failed = ios->reqs_failed;
	pthread_mutex_unlock((pthread_mutex_t *)&ios->q_lock);
	for (unsigned i = 0; i < ios->nworkers; i++) {
		const ios_wstats *w = &ios->workers[i].st;
		s->bytes_read += atomic_load_explicit(&w->bytes_read, memory_order_relaxed);
		s->bytes_written += atomic_load_explicit(&w->bytes_written, memory_order_relaxed);
		s->pieces += atomic_load_explicit(&w->pieces, memory_order_relaxed);
		s->retries += atomic_load_explicit(&w->retries, memory_order_relaxed);
		s->short_transfers += atomic_load_explicit(&w->short_transfers, memory_order_relaxed);
		for (unsigned b = 0; b < IOSCHED_LAT_BUCKETS; b++)
			s->lat_hist[b] += atomic_load_explicit(&w->lat[b], memory_order_relaxed);
	}
}

void
iosched_reset_stats(iosched_t *ios)
{
	pthread_mutex_lock(&ios->q_lock);
	ios->reqs_completed = ios->reqs_failed = 0;
	pthread_mutex_unlock(&ios->q_lock);
	for (unsigned i = 0; i < ios->nworkers; i++) {
		ios_wstats *w = &ios->workers[i].st;
		atomic_store(&w->bytes_read, 0);
		atomic_store(&w->bytes_written, 0);
		atomic_store(&w->pieces, 0);
		atomic_store(&w->retries, 0);
		atomic_store(&w->short_transfers, 0);
		for (unsigned b = 0; b < IOSCHED_LAT_BUCKETS; b++)
			atomic_store(&w->lat[b], 0);
	}
}
