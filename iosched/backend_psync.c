/* psync backend: pread/pwrite on a pool of min(queue_depth, 64) threads per worker. Portable,
 * and the baseline the kernel-queue backends are compared with. Completions are handed back
 * through a list and an eventfd the worker sleeps on. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "iosched_internal.h"

typedef struct psync_ctx {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	ios_piece *todo_head, *todo_tail; /* lock */
	ios_piece *done_head;             /* lock */
	bool stop;                        /* lock */
	ios_piece *local_head, *local_tail; /* prepared, not yet submitted (worker only) */
	int efd;
	pthread_t *threads;
	unsigned nthreads;
	iosched_t *ios;
} psync_ctx;

static void *
psync_thread(void *arg)
{
	psync_ctx *c = arg;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		while (!c->todo_head && !c->stop)
			pthread_cond_wait(&c->cond, &c->lock);
		if (!c->todo_head && c->stop) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		ios_piece *p = c->todo_head;
		c->todo_head = p->next;
		if (!c->todo_head)
			c->todo_tail = NULL;
		pthread_mutex_unlock(&c->lock);

		int fd = c->ios->files[p->file].fd;
		ssize_t r;
		do
			r = p->op == IOSCHED_OP_READ ? pread(fd, p->buf, p->len, (off_t)p->offset)
						     : pwrite(fd, p->buf, p->len, (off_t)p->offset);
		while (r < 0 && errno == EINTR);
		p->result = r < 0 ? -errno : r;

		pthread_mutex_lock(&c->lock);
		p->next = c->done_head;
		c->done_head = p;
		pthread_mutex_unlock(&c->lock);
		uint64_t one = 1;
		ssize_t wr = write(c->efd, &one, sizeof(one));
		(void)wr;
	}
}

static void
psync_stop(psync_ctx *c)
{
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->nthreads; i++)
		pthread_join(c->threads[i], NULL);
	c->nthreads = 0;
}

static void
psync_free(psync_ctx *c)
{
	if (c->efd >= 0)
		close(c->efd);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->threads);
	free(c);
}

static int
psync_init(ios_worker *w, char *why, size_t whylen)
{
	unsigned n = w->ios->opts.queue_depth < 64 ? w->ios->opts.queue_depth : 64;
	psync_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	c->ios = w->ios;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->threads = calloc(n, sizeof(*c->threads));
	if (c->efd < 0 || !c->threads) {
		snprintf(why, whylen, "eventfd/calloc: %s", strerror(errno));
		psync_free(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		int rc = pthread_create(&c->threads[i], NULL, psync_thread, c);
		if (rc) {
			snprintf(why, whylen, "pthread_create: %s", strerror(rc));
			psync_stop(c);
			psync_free(c);
			return -rc;
		}
		c->nthreads++;
	}
	w->bctx = c;
	return 0;
}

static void
psync_fini(ios_worker *w)
{
	psync_ctx *c = w->bctx;
	psync_stop(c);
	psync_free(c);
	w->bctx = NULL;
}

static void
psync_prep(ios_worker *w, ios_piece *p)
{
	psync_ctx *c = w->bctx;
	p->next = NULL;
	if (c->local_tail)
		c->local_tail->next = p;
	else
		c->local_head = p;
	c->local_tail = p;
}

static int
psync_submit(ios_worker *w)
{
	psync_ctx *c = w->bctx;
	if (!c->local_head)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (c->todo_tail)
		c->todo_tail->next = c->local_head;
	else
		c->todo_head = c->local_head;
	c->todo_tail = c->local_tail;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	c->local_head = c->local_tail = NULL;
	return 0;
}

static int
psync_reap(ios_worker *w, ios_piece **done, unsigned max)
{
	psync_ctx *c = w->bctx;
	unsigned n = 0;
	pthread_mutex_lock(&c->lock);
	while (c->done_head && n < max) {
		done[n++] = c->done_head;
		c->done_head = c->done_head->next;
	}
	pthread_mutex_unlock(&c->lock);
	return (int)n;
}

static void
psync_wait(ios_worker *w)
{
	psync_ctx *c = w->bctx;
	struct pollfd fds[2] = {{.fd = c->efd, .events = POLLIN}, {.fd = w->wake_fd, .events = POLLIN}};
	if (poll(fds, 2, -1) > 0) {
		uint64_t v;
		if (fds[0].revents)
			while (read(c->efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
				;
		if (fds[1].revents)
			while (read(w->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
				;
	}
}

const ios_backend_ops ios_backend_psync = {
	.name = "psync",
	.init = psync_init,
	.fini = psync_fini,
	.prep = psync_prep,
	.submit = psync_submit,
	.reap = psync_reap,
	.wait = psync_wait,
};
