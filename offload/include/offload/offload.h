/* offload: the memory tiers of zinf and the movement of named chunks between them.
 *
 * Tiers, fastest first: GPU (one device arena), HOST (pinned or pageable buffers from a host
 * pool), NVME (preallocated swap files under one or more nvme_path folders, striped). Every tier
 * has a byte budget; asking for more is an error naming bytes requested, bytes in use, the budget
 * and the setting to change. Peaks are tracked per tier (offload_swapper_report()).
 *
 * Objects (opaque handles, create/destroy; destroy accepts NULL):
 *   offload_host_pool_t  exact-size host buffers, page-locked once (cudaHostRegister with a CUDA
 *                        device, else mlock) or pageable from a private jemalloc arena.
 *   offload_gpu_arena_t  one cudaMalloc per device carved by a sub-allocator (CUDA builds only;
 *                        create returns -ENODEV without CUDA or without a device).
 *   offload_nvme_t       swap files nvme_path/zinf-<run>/rank<r>/swap<i>, mode 0600,
 *                        fallocated at create, 4 KiB-aligned extents, striped over the paths;
 *                        removed on destroy and on SIGINT/SIGTERM (see offload_cleanup.h).
 *   offload_swapper_t    owns one of each tier plus an iosched handle and moves chunks.
 *
 * Errors: 0 or a count on success, a negative errno on failure; the handle keeps a one-line
 * message (…_last_error()) and the same line is logged at error level (ZINF_LOG).
 *
 * Threads: every function of one handle is called from one thread at a time.
 */
#ifndef ZINF_OFFLOAD_H
#define ZINF_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iosched/iosched.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum offload_tier {
	OFFLOAD_TIER_GPU = 0,
	OFFLOAD_TIER_HOST = 1,
	OFFLOAD_TIER_NVME = 2,
} offload_tier;
#define OFFLOAD_TIER_COUNT 3
#define OFFLOAD_ALIGN      4096u /* host buffers and NVMe extents */

const char *offload_tier_name(offload_tier t); /* "gpu", "host", "nvme" */

typedef struct offload_tier_usage {
	uint64_t budget; /* bytes the tier may hold */
	uint64_t in_use; /* bytes allocated now (rounded sizes) */
	uint64_t peak;   /* largest in_use seen */
	uint64_t allocs; /* live allocations */
} offload_tier_usage;

/* True when this build has CUDA and a device is usable. Otherwise false and `why` says which
 * ("built without CUDA", "cudaGetDeviceCount: no CUDA-capable device is detected"). */
bool offload_gpu_probe(char *why, size_t len);

/* ---- host pool (pinned.c) ---- */

typedef struct offload_host_pool offload_host_pool_t;

typedef enum offload_host_mode {
	OFFLOAD_HOST_PINNED_CUDA = 0, /* mmap + cudaHostRegister */
	OFFLOAD_HOST_PINNED_MLOCK,    /* mmap + mlock (no CUDA device) */
	OFFLOAD_HOST_PAGEABLE,        /* jemalloc arena; pin_memory false or fallback */
} offload_host_mode;
const char *offload_host_mode_name(offload_host_mode m);

typedef struct offload_host_pool_opts {
	uint64_t budget;     /* bytes; required (> 0); knob: host budget / buffer_count x size */
	bool pin_memory;     /* default true (DeepSpeed pin_memory) */
	bool allow_unpinned; /* page-locking refused by RLIMIT_MEMLOCK: use pageable and warn
	                      * (default false: the allocation fails with the ulimit hint) */
	/* Tests: replaces mlock(2); returns 0 or -errno. NULL: mlock. */
	int (*lock_hook)(void *addr, size_t len);
} offload_host_pool_opts;

void offload_host_pool_opts_init(offload_host_pool_opts *opts);
/* -EINVAL bad opts; -ENOMEM. */
int offload_host_pool_create(const offload_host_pool_opts *opts, offload_host_pool_t **out);
/* Frees every buffer still allocated. */
void offload_host_pool_destroy(offload_host_pool_t *p);
/* A buffer of at least `size` bytes (rounded up to 4 KiB, 4 KiB-aligned, so it can take
 * O_DIRECT I/O of the rounded length). -ENOBUFS: over budget; -ENOMEM: the system refused
 * (for page-locking: the message names RLIMIT_MEMLOCK and `ulimit -l`). */
int offload_host_alloc(offload_host_pool_t *p, uint64_t size, void **out);
/* ptr from offload_host_alloc; NULL is ignored. */
void offload_host_free(offload_host_pool_t *p, void *ptr);
/* Mode of the pool's buffers (the last allocation's, after a fallback). */
offload_host_mode offload_host_pool_mode(const offload_host_pool_t *p);
void offload_host_pool_usage(const offload_host_pool_t *p, offload_tier_usage *u);
const char *offload_host_pool_last_error(const offload_host_pool_t *p);

/* ---- GPU arena (gpu_arena.c) ---- */

typedef struct offload_gpu_arena offload_gpu_arena_t;

typedef struct offload_gpu_arena_opts {
	int device;      /* CUDA device ordinal, default 0 */
	uint64_t budget; /* bytes allocated once at create; required */
	uint64_t align;  /* sub-allocation alignment, power of two, default 256 */
} offload_gpu_arena_opts;

void offload_gpu_arena_opts_init(offload_gpu_arena_opts *opts);
/* -ENODEV: no CUDA in this build or no device (message says which); -ENOMEM: cudaMalloc of the
 * budget failed (message: bytes asked, bytes free on the device). */
int offload_gpu_arena_create(const offload_gpu_arena_opts *opts, offload_gpu_arena_t **out);
void offload_gpu_arena_destroy(offload_gpu_arena_t *a);
/* Device pointer of `size` bytes. -ENOBUFS: message names the tier, bytes asked, bytes free,
 * the largest free block and the budget. No cudaMalloc happens here. */
int offload_gpu_alloc(offload_gpu_arena_t *a, uint64_t size, void **dptr);
void offload_gpu_free(offload_gpu_arena_t *a, void *dptr);
void offload_gpu_arena_usage(const offload_gpu_arena_t *a, offload_tier_usage *u);
const char *offload_gpu_arena_last_error(const offload_gpu_arena_t *a);

/* ---- NVMe swap store (nvme_store.c) ---- */

typedef struct offload_nvme offload_nvme_t;
#define OFFLOAD_NVME_MAX_PATHS 16

typedef struct offload_nvme_opts {
	const char *const *paths; /* nvme_path folders; several = striping */
	unsigned npaths;
	const char *run_id;   /* folder zinf-<run_id>; NULL: "<pid>" */
	unsigned rank;        /* folder rank<rank> */
	uint64_t capacity;    /* swap bytes in total, split evenly over the paths; required */
	uint64_t stripe_size; /* bytes per stripe unit, multiple of 4 KiB, default 1 MiB */
	bool buffered;        /* no O_DIRECT (default false) */
	bool signal_cleanup;  /* remove files on SIGINT/SIGTERM (default true) */
} offload_nvme_opts;

void offload_nvme_opts_init(offload_nvme_opts *opts);
/* Checks every path first: exists (-ENOENT), is a folder (-ENOTDIR), is writable (-EACCES),
 * has capacity/npaths free bytes (statvfs; -ENOSPC) -- each message names the path and, for
 * space, bytes needed and available. Then creates the folders (0700) and the files (0600,
 * O_EXCL) and preallocates them, and opens them on `ios` (which must outlive the store).
 * On failure nothing is left behind and `err` (may be NULL) holds the message. */
int offload_nvme_create(const offload_nvme_opts *opts, iosched_t *ios, offload_nvme_t **out,
                        char *err, size_t err_len);
/* Closes and removes the files and the folders it created (the run folder only if empty). */
void offload_nvme_destroy(offload_nvme_t *s);

typedef struct offload_nvme_extent {
	uint64_t len;   /* bytes, rounded up to 4 KiB */
	unsigned first; /* file of stripe unit 0; unit k lives in file (first + k) % npaths */
	uint64_t base[OFFLOAD_NVME_MAX_PATHS];
	uint64_t bytes[OFFLOAD_NVME_MAX_PATHS]; /* per file; 0 = unused */
} offload_nvme_extent;

/* -ENOBUFS when the files are full (message: bytes asked, in use, capacity, knob). */
int offload_nvme_alloc(offload_nvme_t *s, uint64_t len, offload_nvme_extent *out);
void offload_nvme_free(offload_nvme_t *s, const offload_nvme_extent *e);
/* Fills iosched requests for bytes [off, off+len) of the extent with `buf` holding those bytes;
 * off and len multiples of 4 KiB, within e->len. Returns how many (<= max) or -E2BIG when more
 * than `max` are needed. Use offload_nvme_req_count() to size the array. */
int offload_nvme_reqs(const offload_nvme_t *s, const offload_nvme_extent *e, unsigned op, void *buf,
                      uint64_t off, uint64_t len, uint64_t tag, iosched_req *reqs, unsigned max);
unsigned offload_nvme_req_count(const offload_nvme_t *s, uint64_t off, uint64_t len);
unsigned offload_nvme_file_count(const offload_nvme_t *s);
const char *offload_nvme_file_path(const offload_nvme_t *s, unsigned i);
const char *offload_nvme_dir(const offload_nvme_t *s, unsigned i); /* .../zinf-<run>/rank<r> */
bool offload_nvme_is_direct(const offload_nvme_t *s);
void offload_nvme_usage(const offload_nvme_t *s, offload_tier_usage *u);
const char *offload_nvme_last_error(const offload_nvme_t *s);

/* ---- swapper (swapper.c) ---- */

typedef struct offload_swapper offload_swapper_t;

typedef struct offload_swapper_opts {
	uint64_t host_budget; /* chunk copies + staging slots; default 1 GiB */
	uint64_t gpu_budget;  /* 0 (default): no GPU tier */
	int gpu_device;
	unsigned buffer_count;         /* staging slots for NVMe <-> GPU, default 4 */
	uint64_t buffer_size;          /* bytes per slot, multiple of 4 KiB, default 16 MiB */
	bool pin_memory;               /* default true */
	bool allow_unpinned;           /* see offload_host_pool_opts */
	const char *const *nvme_paths; /* NULL / 0: no NVMe tier */
	unsigned nvme_path_count;
	uint64_t nvme_capacity;
	uint64_t stripe_size; /* 0: offload_nvme_opts default */
	const char *run_id;
	unsigned rank;
	bool nvme_buffered;
	bool signal_cleanup; /* default true */
	unsigned max_chunks; /* default 65536 */
	unsigned max_ops;    /* operations in flight, default 256 */
	iosched_opts aio;    /* iosched_opts_init() defaults; .fault for tests */
} offload_swapper_opts;

void offload_swapper_opts_init(offload_swapper_opts *opts);
/* Creates the tiers the options ask for. -ENODEV: gpu_budget > 0 without a usable GPU;
 * the tiers' own errors otherwise. On failure `err` (may be NULL) holds the message. */
int offload_swapper_create(const offload_swapper_opts *opts, offload_swapper_t **out, char *err,
                           size_t err_len);
/* Waits for operations in flight, then frees every tier (swap files are removed). */
void offload_swapper_destroy(offload_swapper_t *sw);
bool offload_swapper_has_tier(const offload_swapper_t *sw, offload_tier t);
const char *offload_swapper_last_error(const offload_swapper_t *sw);
offload_host_pool_t *offload_swapper_host_pool(offload_swapper_t *sw);
offload_nvme_t *offload_swapper_nvme(offload_swapper_t *sw);
iosched_t *offload_swapper_iosched(offload_swapper_t *sw);

/* A chunk: `size` bytes with a name (for messages), resident nowhere at first.
 * Returns its id >= 0; -ENOSPC when max_chunks exist; -EINVAL size 0. */
int offload_chunk_create(offload_swapper_t *sw, const char *name, uint64_t size);
/* Frees every copy. -EBUSY while an operation on it is in flight. */
int offload_chunk_destroy(offload_swapper_t *sw, int id);
/* Allocates a copy in `tier` (GPU or HOST) that becomes the only valid one (the caller fills
 * it); other copies are dropped. Budget errors as the tier's alloc. */
int offload_chunk_alloc(offload_swapper_t *sw, int id, offload_tier tier, void **ptr);
/* The copy in `tier` if it is valid and no operation is in flight, else NULL. GPU: device
 * pointer. NVME: NULL always. */
void *offload_chunk_ptr(offload_swapper_t *sw, int id, offload_tier tier);
/* The caller changed the copy in `tier`: every other copy becomes stale (GPU/HOST copies are
 * freed; the NVMe extent is kept for the next write). -ENODATA if `tier` holds no copy. */
int offload_chunk_dirty(offload_swapper_t *sw, int id, offload_tier tier);
/* Drops the copy in `tier` synchronously when another valid copy exists; -EBUSY when it is the
 * only one (use offload_chunk_evict) or an operation is in flight. */
int offload_chunk_drop(offload_swapper_t *sw, int id, offload_tier tier);

typedef struct offload_chunk_info {
	const char *name;
	uint64_t size;
	unsigned valid; /* bit (1 << tier) per tier holding a valid copy */
	bool busy;      /* an operation is in flight */
} offload_chunk_info;
int offload_chunk_info_get(const offload_swapper_t *sw, int id, offload_chunk_info *out);

/* Asynchronous operations. 0: exactly one event will be returned by offload_poll(); -errno:
 * none will. -EBUSY: an operation on this chunk is in flight; -EAGAIN: max_ops in flight
 * (poll first); -ENODATA: the chunk has no valid copy; -ENODEV: tier absent.
 *
 * fetch: makes a valid copy in `tier` from the nearest valid one (NVMe -> GPU and GPU -> NVMe
 *        pass through the pinned staging slots, buffer_size bytes at a time, chained on a copy
 *        stream with CUDA events). Other copies stay valid. Already valid: completes at once.
 * evict: drops the copy in `tier`; when it is the only valid one it is first written to the
 *        next lower tier present (GPU -> HOST, else NVME; HOST -> NVME); -ENOSPC when there is
 *        no lower tier.
 * On failure (event res < 0) the chunk's copies and residency are as before the operation and
 * the destination's space is released; offload_swapper_last_error() has the message (path,
 * offset, length, errno for I/O). */
int offload_chunk_fetch(offload_swapper_t *sw, int id, offload_tier tier, uint64_t tag);
int offload_chunk_evict(offload_swapper_t *sw, int id, offload_tier tier, uint64_t tag);

typedef enum offload_op { OFFLOAD_OP_FETCH = 1, OFFLOAD_OP_EVICT = 2 } offload_op;

typedef struct offload_event {
	int chunk;
	offload_op op;
	offload_tier tier; /* the tier named in the call */
	int res;           /* 0 or -errno */
	uint64_t tag;
} offload_event;

/* Drives every operation forward and returns up to `max` finished ones. Waits until `min` are
 * available or timeout_ms passes (-1 forever, 0 poll). Returns the count or -EINVAL (min > max
 * or min > operations outstanding). */
int offload_poll(offload_swapper_t *sw, offload_event *out, unsigned max, unsigned min,
                 int timeout_ms);
unsigned offload_outstanding(const offload_swapper_t *sw);

/* ---- memory report (report.c) ---- */

typedef struct offload_report {
	bool present[OFFLOAD_TIER_COUNT];
	uint64_t planned[OFFLOAD_TIER_COUNT];         /* budget the options ask for */
	offload_tier_usage usage[OFFLOAD_TIER_COUNT]; /* zeros when made by offload_plan */
	offload_host_mode host_mode;
	uint64_t staging_bytes; /* buffer_count x buffer_size, part of planned[HOST] */
	unsigned nvme_paths;
	char err[512]; /* offload_plan's message when it fails */
} offload_report;

/* The plan for `opts`, before anything is allocated. -EINVAL when the options are
 * inconsistent (staging larger than the host budget, ...); `err` (may be NULL) says which. */
int offload_plan(const offload_swapper_opts *opts, offload_report *out, char *err, size_t err_len);
void offload_swapper_report(const offload_swapper_t *sw, offload_report *out);
/* Multi-line table: tier, present, planned, in use, peak. Returns chars written (like
 * snprintf, may exceed len). */
int offload_report_format(const offload_report *r, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
