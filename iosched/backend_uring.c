/* io_uring backend: one ring per worker, fixed files (a sparse table of max_files slots) and
 * fixed buffers where the caller registered them, batched submission, completions reaped from
 * the shared CQ ring without a system call. The worker sleeps in io_uring_enter; a one-shot
 * poll on its wake eventfd turns an owner's wake-up into a completion. */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iosched_internal.h"

#define WAKE_TAG UINT64_MAX

typedef struct uring_ctx {
	struct io_uring ring;
	bool fixed_files;
	bool poll_armed;
} uring_ctx;

static void
read_probe(struct io_uring *ring, bool *ok, char *why, size_t whylen)
{
	*ok = true;
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	if (!probe)
		return; /* probing needs 5.6; READ/WRITE exist there too, so assume yes */
	if (!io_uring_opcode_supported(probe, IORING_OP_READ) ||
	    !io_uring_opcode_supported(probe, IORING_OP_WRITE) ||
	    !io_uring_opcode_supported(probe, IORING_OP_READ_FIXED) ||
	    !io_uring_opcode_supported(probe, IORING_OP_POLL_ADD)) {
		*ok = false;
		snprintf(why, whylen, "the kernel's io_uring lacks READ/WRITE/POLL_ADD (needs Linux "
				      ">= 5.6)");
	}
	io_uring_free_probe(probe);
}

static int
uring_init(ios_worker *w, char *why, size_t whylen)
{
	uring_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	unsigned entries = w->ios->opts.queue_depth + 1; /* + the wake-up poll */
	int rc = io_uring_queue_init(entries, &c->ring, 0);
	if (rc < 0) {
		switch (-rc) {
		case ENOSYS:
			snprintf(why, whylen, "io_uring_setup: the kernel has no io_uring (ENOSYS)");
			break;
		case EPERM:
			snprintf(why, whylen,
				 "io_uring_setup: not permitted (EPERM): kernel.io_uring_disabled is "
				 "set, or a seccomp/container policy forbids io_uring");
			break;
		case ENOMEM:
			snprintf(why, whylen,
				 "io_uring_setup: not enough locked memory for a ring of %u entries "
				 "(ENOMEM): raise `ulimit -l` or lower queue_depth",
				 entries);
			break;
		default:
			snprintf(why, whylen, "io_uring_setup: %s", strerror(-rc));
		}
		free(c);
		return rc;
	}
	bool ok;
	read_probe(&c->ring, &ok, why, whylen);
	if (!ok) {
		io_uring_queue_exit(&c->ring);
		free(c);
		return -ENOSYS;
	}
	/* Fixed files need Linux 5.19 for sparse tables; without them use plain fds. */
	c->fixed_files = io_uring_register_files_sparse(&c->ring, w->ios->opts.max_files) == 0;
	w->bctx = c;
	return 0;
}

static void
uring_fini(ios_worker *w)
{
	uring_ctx *c = w->bctx;
	/* Drop the ring's file and buffer references now: the kernel tears a ring down
	 * asynchronously, and until then the files would keep their filesystem busy (umount
	 * fails with EBUSY right after destroy). */
	if (c->fixed_files)
		(void)io_uring_unregister_files(&c->ring);
	(void)io_uring_unregister_buffers(&c->ring);
	io_uring_queue_exit(&c->ring);
	free(c);
	w->bctx = NULL;
}

static struct io_uring_sqe *
get_sqe(uring_ctx *c)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	if (!sqe) {
		/* Cannot happen while pieces <= queue_depth; flush and retry to be safe. */
		io_uring_submit(&c->ring);
		sqe = io_uring_get_sqe(&c->ring);
	}
	return sqe;
}

static void
uring_prep(ios_worker *w, ios_piece *p)
{
	uring_ctx *c = w->bctx;
	iosched_t *ios = w->ios;
	struct io_uring_sqe *sqe = get_sqe(c);
	if (!sqe) {
		p->result = -EBUSY;
		p->next = w->synth_head;
		w->synth_head = p;
		return;
	}
	int fd = c->fixed_files ? p->file : ios->files[p->file].fd;
	int bi = ios_find_buffer(ios, p->buf, p->len);
	unsigned len = (unsigned)p->len;
	if (p->op == IOSCHED_OP_READ) {
		if (bi >= 0)
			io_uring_prep_read_fixed(sqe, fd, p->buf, len, p->offset, bi);
		else
			io_uring_prep_read(sqe, fd, p->buf, len, p->offset);
	} else {
		if (bi >= 0)
			io_uring_prep_write_fixed(sqe, fd, p->buf, len, p->offset, bi);
		else
			io_uring_prep_write(sqe, fd, p->buf, len, p->offset);
	}
	if (c->fixed_files)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, p);
}

static int
uring_submit(ios_worker *w)
{
	uring_ctx *c = w->bctx;
	int rc;
	do
		rc = io_uring_submit(&c->ring);
	while (rc == -EINTR);
	if (rc == -EBUSY)
		rc = -EAGAIN; /* CQ overflow pressure: reap, then the SQEs go next time */
	return rc < 0 ? rc : 0;
}

static void
drain_eventfd(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

static int
uring_reap(ios_worker *w, ios_piece **done, unsigned max)
{
	uring_ctx *c = w->bctx;
	struct io_uring_cqe *cqes[64];
	unsigned n = 0;
	while (n < max) {
		unsigned want = max - n < 64 ? max - n : 64;
		unsigned got = io_uring_peek_batch_cqe(&c->ring, cqes, want);
		if (!got)
			break;
		for (unsigned i = 0; i < got; i++) {
			uint64_t ud = io_uring_cqe_get_data64(cqes[i]);
			if (ud == WAKE_TAG) {
				c->poll_armed = false;
				drain_eventfd(w->wake_fd);
				continue;
			}
			ios_piece *p = (ios_piece *)(uintptr_t)ud;
			p->result = cqes[i]->res;
			done[n++] = p;
		}
		io_uring_cq_advance(&c->ring, got);
	}
	return (int)n;
}

static void
uring_wait(ios_worker *w)
{
	uring_ctx *c = w->bctx;
	if (!c->poll_armed) {
		struct io_uring_sqe *sqe = get_sqe(c);
		if (!sqe)
			return;
		io_uring_prep_poll_add(sqe, w->wake_fd, POLLIN);
		io_uring_sqe_set_data64(sqe, WAKE_TAG);
		c->poll_armed = true;
	}
	struct io_uring_cqe *cqe;
	int rc = io_uring_submit_and_wait(&c->ring, 1);
	if (rc == -EINTR)
		(void)io_uring_peek_cqe(&c->ring, &cqe);
}

static int
uring_file_set(ios_worker *w, int idx, int fd)
{
	uring_ctx *c = w->bctx;
	if (!c->fixed_files)
		return 0;
	int rc = io_uring_register_files_update(&c->ring, (unsigned)idx, &fd, 1);
	return rc < 0 ? rc : 0;
}

static int
uring_buffers_set(ios_worker *w, const struct iovec *iov, unsigned n)
{
	uring_ctx *c = w->bctx;
	(void)io_uring_unregister_buffers(&c->ring); /* -ENXIO when none: fine */
	if (!n)
		return 0;
	return io_uring_register_buffers(&c->ring, iov, n);
}

const ios_backend_ops ios_backend_uring = {
	.name = "io_uring",
	.init = uring_init,
	.fini = uring_fini,
	.prep = uring_prep,
	.submit = uring_submit,
	.reap = uring_reap,
	.wait = uring_wait,
	.file_set = uring_file_set,
	.buffers_set = uring_buffers_set,
};
