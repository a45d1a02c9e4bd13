/* Prefetcher: keeps fetches ahead of a known access order within a byte budget.
 *
 * The order is a list of chunk ids (a chunk may appear more than once, e.g. forward then
 * backward). Fetches are issued strictly in that order while the bytes held (fetched or in
 * flight, not yet released) fit `byte_budget` and fewer than `max_inflight` are in flight
 * (buffer_count): that is the back-pressure. A chunk needed again while still held is not
 * fetched twice. acquire() takes the next position and waits until its chunk is resident:
 * resident already = hit; fetched but in flight = stall (the wait is timed); not yet issued =
 * miss (issued now, then waited for, also timed). release() gives a position's bytes back.
 *
 * The movement itself is behind a backend vtable: offload_prefetch_swapper_backend() adapts a
 * swapper; tests pass a fake backend and clock. All calls from one thread.
 */
#ifndef ZINF_OFFLOAD_PREFETCH_H
#define ZINF_OFFLOAD_PREFETCH_H

#include <stdint.h>

#include "offload/offload.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct offload_prefetch offload_prefetch_t;

typedef struct offload_prefetch_done {
	int chunk;
	int res; /* 0 or -errno */
} offload_prefetch_done;

typedef struct offload_prefetch_backend {
	void *ctx;
	/* Start making `chunk` resident. 0: one completion will come from poll; -errno: none. */
	int (*fetch)(void *ctx, int chunk);
	/* Up to `max` completions; waits up to timeout_ms (-1 forever) for at least one. Returns
	 * the count or -errno. */
	int (*poll)(void *ctx, offload_prefetch_done *out, unsigned max, int timeout_ms);
	/* The chunk is no longer needed where it was fetched to. 0 or -errno. */
	int (*release)(void *ctx, int chunk);
	/* Monotonic clock in nanoseconds (stall time). */
	uint64_t (*now_ns)(void *ctx);
} offload_prefetch_backend;

typedef struct offload_prefetch_opts {
	const int *order;      /* chunk ids in access order (copied) */
	const uint64_t *sizes; /* bytes per chunk id, indexed by id, for ids in order (copied) */
	unsigned n;            /* positions */
	uint64_t byte_budget;  /* e.g. stage3_prefetch_bucket_size; required */
	unsigned max_inflight; /* fetches in flight, default 4 (buffer_count) */
} offload_prefetch_opts;

typedef struct offload_prefetch_stats {
	uint64_t hits, stalls, misses;
	uint64_t stall_ns;   /* time acquire() waited, stalls and misses together */
	uint64_t fetches;    /* backend fetches issued */
	uint64_t peak_bytes; /* most bytes held at once */
	unsigned peak_inflight;
} offload_prefetch_stats;

void offload_prefetch_opts_init(offload_prefetch_opts *opts);
/* -EINVAL: empty order, bad id, or a chunk larger than byte_budget (message logged naming it
 * and the knob). The backend struct is copied. */
int offload_prefetch_create(const offload_prefetch_opts *opts, const offload_prefetch_backend *be,
                            offload_prefetch_t **out);
void offload_prefetch_destroy(offload_prefetch_t *pf);
/* Issues what the budget allows (call after create to start early; acquire calls it too). */
int offload_prefetch_pump(offload_prefetch_t *pf);
/* Waits for the next position's chunk; returns the position >= 0 and sets *chunk. -ENODATA at
 * the end of the order; -ENOBUFS when the budget is full of acquired, unreleased positions;
 * the backend's error when the fetch failed. */
int offload_prefetch_acquire(offload_prefetch_t *pf, int *chunk);
/* Position from acquire; -EINVAL if not acquired or already released. */
int offload_prefetch_release(offload_prefetch_t *pf, int pos);
void offload_prefetch_get_stats(const offload_prefetch_t *pf, offload_prefetch_stats *out);

/* Backend over a swapper: fetch = offload_chunk_fetch(tier), release = drop the copy in `tier`
 * (or evict it when it is the only one). `ctx_out` must be freed with
 * offload_prefetch_swapper_backend_free after the prefetcher is destroyed. */
int offload_prefetch_swapper_backend(offload_swapper_t *sw, offload_tier tier,
                                     offload_prefetch_backend *out);
void offload_prefetch_swapper_backend_free(offload_prefetch_backend *be);

#ifdef __cplusplus
}
#endif
#endif
