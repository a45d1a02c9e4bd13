/* libaio backend: one io_context per worker, an iocb per piece slot, batched io_submit, an
 * eventfd signalled by each completion so the worker can sleep in poll() on it and on its
 * wake-up eventfd together. */
#define _GNU_SOURCE
#include <errno.h>
#include <libaio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "iosched_internal.h"

typedef struct aio_ctx {
	io_context_t ctx;
	int efd;
	struct iocb *iocbs;
	struct iocb **pending;
	unsigned npending;
	struct io_event *events;
	ios_piece *failed; /* pieces io_submit refused outright */
} aio_ctx;

static void
aio_free(aio_ctx *c)
{
	if (c->efd >= 0)
		close(c->efd);
	free(c->iocbs);
	free(c->pending);
	free(c->events);
	free(c);
}

static int
aio_init(ios_worker *w, char *why, size_t whylen)
{
	unsigned qd = w->ios->opts.queue_depth;
	aio_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->iocbs = calloc(qd, sizeof(*c->iocbs));
	c->pending = calloc(qd, sizeof(*c->pending));
	c->events = calloc(qd, sizeof(*c->events));
	if (c->efd < 0 || !c->iocbs || !c->pending || !c->events) {
		snprintf(why, whylen, "eventfd/calloc: %s", strerror(errno));
		aio_free(c);
		return -ENOMEM;
	}
	int rc = io_setup((int)qd, &c->ctx);
	if (rc < 0) {
		if (rc == -EAGAIN)
			snprintf(why, whylen,
				 "io_setup(%u): the system-wide AIO limit is exhausted (EAGAIN): raise "
				 "it with `sysctl -w fs.aio-max-nr=1048576` or lower queue_depth",
				 qd);
		else if (rc == -ENOSYS)
			snprintf(why, whylen, "io_setup: the kernel has no AIO support (ENOSYS)");
		else
			snprintf(why, whylen, "io_setup(%u): %s", qd, strerror(-rc));
		aio_free(c);
		return rc;
	}
	w->bctx = c;
	return 0;
}

static void
aio_fini(ios_worker *w)
{
	aio_ctx *c = w->bctx;
	io_destroy(c->ctx);
	aio_free(c);
	w->bctx = NULL;
}

static void
aio_prep(ios_worker *w, ios_piece *p)
{
	aio_ctx *c = w->bctx;
	struct iocb *cb = &c->iocbs[p->idx];
	int fd = w->ios->files[p->file].fd;
	if (p->op == IOSCHED_OP_READ)
		io_prep_pread(cb, fd, p->buf, p->len, (long long)p->offset);
	else
		io_prep_pwrite(cb, fd, p->buf, p->len, (long long)p->offset);
	io_set_eventfd(cb, c->efd);
	cb->data = p;
	c->pending[c->npending++] = cb;
}

static int
aio_submit(ios_worker *w)
{
	aio_ctx *c = w->bctx;
	while (c->npending) {
		int rc = io_submit(c->ctx, (long)c->npending, c->pending);
		if (rc == -EAGAIN || rc == -EINTR)
			return -EAGAIN; /* resources busy: keep them pending, try after reaping */
		if (rc < 0) {
			/* The first iocb was refused (bad fd, misalignment, ...): fail that piece. */
			ios_piece *p = c->pending[0]->data;
			p->result = rc;
			p->next = c->failed;
			c->failed = p;
			rc = 1;
		}
		memmove(c->pending, c->pending + rc, (c->npending - (unsigned)rc) * sizeof(*c->pending));
		c->npending -= (unsigned)rc;
	}
	return 0;
}

static int
aio_reap(ios_worker *w, ios_piece **done, unsigned max)
{
	aio_ctx *c = w->bctx;
	unsigned n = 0;
	while (c->failed && n < max) {
		done[n++] = c->failed;
		c->failed = c->failed->next;
	}
	if (n == max)
		return (int)n;
	struct timespec zero = {0, 0};
	int got = io_getevents(c->ctx, 0, (long)(max - n), c->events, &zero);
	for (int i = 0; i < got; i++) {
		ios_piece *p = c->events[i].data;
		p->result = (int64_t)(long)c->events[i].res;
		done[n++] = p;
	}
	return (int)n;
}

static void
drain(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

static void
aio_wait(ios_worker *w)
{
	aio_ctx *c = w->bctx;
	if (c->npending)
		(void)aio_submit(w);
	struct pollfd fds[2] = {{.fd = c->efd, .events = POLLIN}, {.fd = w->wake_fd, .events = POLLIN}};
	/* With pieces stuck on -EAGAIN, retry submission every millisecond. */
	int rc = poll(fds, 2, c->npending ? 1 : -1);
	if (rc > 0) {
		if (fds[0].revents)
			drain(c->efd);
		if (fds[1].revents)
			drain(w->wake_fd);
	}
}

const ios_backend_ops ios_backend_aio = {
	.name = "libaio",
	.init = aio_init,
	.fini = aio_fini,
	.prep = aio_prep,
	.submit = aio_submit,
	.reap = aio_reap,
	.wait = aio_wait,
};
