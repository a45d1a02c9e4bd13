/* iosched internals: the request/piece model shared by the core (iosched.c) and the backends.
 *
 * Ownership: a request slot (ios_request) belongs to the owner thread from iosched_submit()
 * until it is queued, then to the shared FIFO (q_lock), then to the pieces that workers claimed
 * from it; the worker that finishes its last piece moves it to the completion ring and frees the
 * slot (under q_lock). A piece (ios_piece) belongs to one worker for its whole life. */
#ifndef ZINF_IOSCHED_INTERNAL_H
#define ZINF_IOSCHED_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>

#include "iosched/iosched.h"

typedef struct ios_worker ios_worker;
typedef struct ios_request ios_request;

typedef struct ios_piece {
	ios_request *req;
	int file;
	unsigned op;
	char *buf;       /* current (remaining) range */
	uint64_t offset;
	uint64_t len;
	uint64_t done;   /* bytes finished so far */
	uint64_t total;  /* the piece's full length */
	uint64_t start_offset;
	uint64_t t_submit_ns;
	unsigned retries;
	unsigned idx;    /* index in the worker's piece array (backends key their state by it) */
	int64_t result;  /* set by the backend's reap: bytes or -errno */
	struct ios_piece *next;
} ios_piece;

struct ios_request {
	iosched_req r;
	uint64_t next_off;       /* next unclaimed byte, relative to r.offset (q_lock) */
	unsigned pieces_total;
	atomic_uint pieces_done;
	int err;                 /* first error (q_lock) */
	uint64_t err_off, err_len;
	ios_request *next;       /* FIFO / free list (q_lock) */
};

/* A backend drives one worker's kernel context. All calls come from that worker's thread. */
typedef struct ios_backend_ops {
	const char *name;
	/* Creates the context in w->bctx. On failure returns -errno and writes why into `why`. */
	int (*init)(ios_worker *w, char *why, size_t whylen);
	void (*fini)(ios_worker *w);
	/* Queues a piece; called only while fewer than queue_depth pieces are in flight. */
	void (*prep)(ios_worker *w, ios_piece *p);
	/* Hands queued pieces to the kernel. Returns 0 or -errno (pieces stay queued on -EAGAIN). */
	int (*submit)(ios_worker *w);
	/* Collects finished pieces without blocking; sets p->result. Returns the count. */
	int (*reap)(ios_worker *w, ios_piece **done, unsigned max);
	/* Blocks until a completion or a wake-up (iosched_wake) may be pending. */
	void (*wait)(ios_worker *w);
	/* Optional: fixed-file and fixed-buffer registration (owner thread, workers idle). */
	int (*file_set)(ios_worker *w, int idx, int fd);
	int (*buffers_set)(ios_worker *w, const struct iovec *iov, unsigned n);
} ios_backend_ops;

extern const ios_backend_ops ios_backend_uring;
extern const ios_backend_ops ios_backend_aio;
extern const ios_backend_ops ios_backend_psync;

typedef struct ios_file {
	int fd;            /* -1: slot free */
	bool direct;
	unsigned off_align, mem_align;
	char *path;
	atomic_uint outstanding;
	_Atomic uint64_t bytes, ops;
} ios_file;

typedef struct ios_wstats {
	_Atomic uint64_t bytes_read, bytes_written, pieces, retries, short_transfers;
	_Atomic uint64_t lat[IOSCHED_LAT_BUCKETS];
} ios_wstats;

struct ios_worker {
	iosched_t *ios;
	unsigned id;
	pthread_t thread;
	bool started;
	void *bctx;
	int wake_fd;           /* eventfd: the owner writes it when new work is queued */
	atomic_int sleeping;
	ios_piece *pieces;
	ios_piece *free_list;
	unsigned inflight;     /* pieces handed to prep and not yet finished */
	ios_piece *retry_head; /* pieces to resubmit (short transfer, EAGAIN) */
	ios_piece *synth_head; /* pieces finished without the kernel (fault injection) */
	ios_wstats st;
};

struct iosched {
	iosched_opts opts;
	iosched_fault fault;
	bool fault_on;
	_Atomic uint64_t fault_count;
	const ios_backend_ops *ops;
	iosched_backend backend;
	char reason[256];
	char err[1024];

	ios_worker *workers;
	unsigned nworkers;

	pthread_mutex_t q_lock;
	pthread_cond_t cpl_cond;   /* completions arrived / drain progress */
	ios_request *slots;
	ios_request *free_slots;
	ios_request *q_head, *q_tail; /* requests with unclaimed pieces */
	iosched_cpl *cpl_ring;
	unsigned cpl_head, cpl_count; /* ring of finished requests */
	unsigned outstanding;         /* submitted, not reaped */
	unsigned unfinished;          /* submitted, not yet in the completion ring */
	uint64_t reqs_completed, reqs_failed;
	bool cancelling;
	atomic_bool stopping;

	ios_file *files;
	struct iovec *bufs;
	unsigned nbufs;
};

/* The registered-buffer index containing [buf, buf+len), or -1. */
int ios_find_buffer(const iosched_t *ios, const void *buf, uint64_t len);
unsigned ios_lat_bucket(uint64_t ns);
/* Direct-I/O alignment of an open fd (statx STATX_DIOALIGN; 4096 when unknown). */
void ios_dio_alignment(int fd, unsigned *off_align, unsigned *mem_align);

#endif
