/* iosched: asynchronous file I/O for zinf.
 *
 * One iosched_t owns `thread_count` workers. Each worker is a thread with its own backend
 * context (an io_uring ring, a libaio context, or a share of the pread/pwrite pool) and at most
 * `queue_depth` pieces in flight. A request submitted with iosched_submit() is split into
 * `block_size` pieces; workers claim pieces from one shared FIFO, so one large request runs on
 * every worker at once and requests start in submission order. A request completes exactly once,
 * through iosched_reap(), when all of its pieces have finished.
 *
 * Errors: functions return 0 or a count on success and a negative errno on failure. A failure
 * that the caller caused (bad alignment, unknown file, closed handle) also leaves a message in
 * iosched_last_error(). An I/O error is carried by the request's completion (res < 0) together
 * with the file, offset and length of the piece that failed; iosched_cpl_describe() turns it into
 * a message. An error in one request never disturbs other requests in flight.
 *
 * Retries: short transfers are resubmitted for the remainder; EINTR and EAGAIN are retried
 * (bounded, see IOSCHED_MAX_RETRIES); everything else fails the request.
 *
 * Threads: iosched_submit, iosched_reap, iosched_file_open/close and iosched_register_buffers
 * are called from one thread at a time (the owner); workers are internal.
 */
#ifndef ZINF_IOSCHED_H
#define ZINF_IOSCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iosched iosched_t;

typedef enum iosched_backend {
	IOSCHED_BACKEND_AUTO = 0, /* io_uring, else libaio, else psync; says once which and why */
	IOSCHED_BACKEND_IO_URING,
	IOSCHED_BACKEND_LIBAIO,
	IOSCHED_BACKEND_PSYNC, /* pread/pwrite on a thread pool */
} iosched_backend;

/* "auto", "io_uring", "libaio", "psync" -> enum; returns -EINVAL for anything else. */
int iosched_backend_parse(const char *name, iosched_backend *out);
const char *iosched_backend_name(iosched_backend b);

/* Fault injection, for tests. Counting every piece submitted to the kernel from 1, piece
 * number `nth` (and, if `repeat`, every `nth` after it) fails with -err instead of running, or,
 * if err == 0, runs with half its length so the short-transfer path is exercised. Only pieces
 * whose op matches `ops` (IOSCHED_OP_READ / _WRITE bits, 0 = both) are counted. */
typedef struct iosched_fault {
	uint64_t nth;
	int err;
	bool repeat;
	unsigned ops;
} iosched_fault;

typedef struct iosched_opts {
	iosched_backend backend;
	unsigned queue_depth;  /* pieces in flight per worker; 1..4096, default 32 */
	uint64_t block_size;   /* piece size in bytes; multiple of 4096, default 1 MiB */
	unsigned thread_count; /* workers; 1..64, default 1 */
	unsigned max_requests; /* requests submitted and not yet reaped; default 4096 */
	unsigned max_files;    /* files open at once; default 64 */
	bool quiet;            /* don't log the backend choice */
	const iosched_fault *fault; /* NULL: off (no cost) */
} iosched_opts;

/* Fills DeepSpeed-compatible defaults where they exist (block_size 1 MiB, thread_count 1) and
 * our own elsewhere. */
void iosched_opts_init(iosched_opts *opts);

/* The monotonic clock (CLOCK_MONOTONIC), for timing: nanoseconds and seconds. One clock for
 * every layer's timers, so their figures compare. */
uint64_t iosched_now_ns(void);
double iosched_now_s(void);

/* Validates opts (message names the option, value and limit), creates the workers.
 * -EINVAL bad option; -ENOSYS/-EPERM/-ENOMEM: the requested backend cannot start (the message
 * says why and what to change); with AUTO, only when no backend can start. */
int iosched_create(const iosched_opts *opts, iosched_t **out);
/* Cancels what has not started, waits for what has, frees everything. Accepts NULL. */
void iosched_destroy(iosched_t *ios);

iosched_backend iosched_get_backend(const iosched_t *ios);
/* Why the backend was chosen (AUTO) or "requested". */
const char *iosched_backend_reason(const iosched_t *ios);
const char *iosched_last_error(const iosched_t *ios);

/* Opening files. */
enum {
	IOSCHED_OPEN_READ = 0,
	IOSCHED_OPEN_WRITE = 1 << 0,    /* read+write */
	IOSCHED_OPEN_CREATE = 1 << 1,   /* O_CREAT */
	IOSCHED_OPEN_EXCL = 1 << 2,     /* O_EXCL: refuse an existing file */
	IOSCHED_OPEN_BUFFERED = 1 << 3, /* no O_DIRECT */
	IOSCHED_OPEN_TRUNC = 1 << 4,
};

/* Opens `path` and returns a file index >= 0 for requests. O_DIRECT unless BUFFERED; a
 * filesystem that refuses O_DIRECT (tmpfs) falls back to buffered I/O with one warning.
 * -errno from open(2) with a message naming the path. */
int iosched_file_open(iosched_t *ios, const char *path, unsigned flags, mode_t mode);
/* Closes after its requests have completed; -EBUSY if requests on it are in flight. */
int iosched_file_close(iosched_t *ios, int file);
/* Direct-I/O alignment for the file: 1 when buffered. Offsets, lengths and buffer addresses of
 * requests on a direct file must be multiples of it. */
unsigned iosched_file_alignment(const iosched_t *ios, int file);
bool iosched_file_is_direct(const iosched_t *ios, int file);
const char *iosched_file_path(const iosched_t *ios, int file);

/* Registers buffers with the kernel (io_uring fixed buffers) so I/O into them skips page
 * pinning per request. Requests whose buffer lies inside a registered range use them
 * automatically. Replaces any earlier set; only while nothing is in flight (-EBUSY). On
 * backends without registration it records the ranges and returns 0. -ENOMEM: the memlock
 * limit is too small (message says `ulimit -l`). */
int iosched_register_buffers(iosched_t *ios, void *const *bufs, const size_t *lens, unsigned n);

enum { IOSCHED_OP_READ = 1, IOSCHED_OP_WRITE = 2 };

typedef struct iosched_req {
	uint64_t tag; /* returned in the completion */
	int file;
	unsigned op; /* IOSCHED_OP_READ or IOSCHED_OP_WRITE */
	void *buf;
	uint64_t offset;
	uint64_t len;
} iosched_req;

/* Queues requests. Returns the number accepted (all of them) or a negative errno, in which case
 * none of the batch was accepted and none will complete:
 * -EINVAL: bad file index, op, zero length, or O_DIRECT misalignment (the message names the
 *          required alignment and the offending offset, length or address);
 * -EAGAIN: max_requests already outstanding: reap first;
 * -ESHUTDOWN: the handle is draining. */
int iosched_submit(iosched_t *ios, const iosched_req *reqs, unsigned n);

typedef struct iosched_cpl {
	uint64_t tag;
	int64_t res;          /* bytes transferred (== len) or -errno */
	int file;
	unsigned op;
	uint64_t err_offset;  /* when res < 0: the piece that failed */
	uint64_t err_len;
} iosched_cpl;

/* Reaps up to `max` completions into `out`. Waits until at least `min` are available or
 * `timeout_ms` passes (-1: no limit; 0: poll). Returns the count (may be < min on timeout),
 * or -EINVAL when min > max or min exceeds what is outstanding. */
int iosched_reap(iosched_t *ios, iosched_cpl *out, unsigned max, unsigned min, int timeout_ms);

/* Requests submitted and not yet reaped. */
unsigned iosched_outstanding(const iosched_t *ios);

/* Stops claiming new pieces: requests not yet started complete with -ECANCELED; those in flight
 * finish. Then waits until everything has completed (reap them afterwards). */
void iosched_cancel_all(iosched_t *ios);

/* "read of /x/y at offset 4096 length 1048576 failed: Input/output error (EIO)" + hints. */
int iosched_cpl_describe(const iosched_t *ios, const iosched_cpl *cpl, char *buf, size_t len);

/* Statistics. Latency is per piece, from handing it to the kernel to its completion. */
#define IOSCHED_LAT_BUCKETS 256
typedef struct iosched_stats {
	uint64_t bytes_read, bytes_written;
	uint64_t reqs_completed, reqs_failed;
	uint64_t pieces, retries, short_transfers;
	uint64_t lat_hist[IOSCHED_LAT_BUCKETS]; /* log-linear buckets, see iosched_lat_bucket_ns */
} iosched_stats;

void iosched_get_stats(const iosched_t *ios, iosched_stats *out);
void iosched_reset_stats(iosched_t *ios);
/* Upper edge of histogram bucket i in nanoseconds. */
uint64_t iosched_lat_bucket_ns(unsigned i);
/* Latency percentile (0..100) in nanoseconds from a histogram; 0 if empty. */
uint64_t iosched_lat_percentile_ns(const iosched_stats *s, double pct);
/* Per-file counters. */
int iosched_file_stats(const iosched_t *ios, int file, uint64_t *bytes, uint64_t *ops);

#define IOSCHED_MAX_RETRIES 64

#ifdef __cplusplus
}
#endif
#endif
