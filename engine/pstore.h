/* ZeRO-3 parameter store (offload_param, issue 9), the engine's private helper: the rank's
 * packed 16-bit parameter shard (zero3.h layout: block b's slice is per[b] elements at packed
 * offset soff[b]) kept in host memory (device cpu) or on NVMe (device nvme) instead of on the
 * GPU, one swapper chunk (offload.h) per block.
 *
 * device cpu:  every block's slice lives in a host buffer (page-locked with pin_memory) for
 *              the whole run; acquire returns it at once.
 * device nvme: slices live in swap files under nvme_path/zinf-<run>-param/rank<r>/ and come
 *              to host memory on demand: at most buffer_count slices are being read, in use or
 *              being written at once (buffer_count host buffers of buffer_size elements; a
 *              block slice larger than buffer_size is refused at create, naming the size it
 *              needs). Slices already used may stay cached in host memory up to max_in_cpu
 *              elements (DeepSpeed's key) until the parameters change.
 *
 * Writes (the optimizer's 16-bit output, checkpoints, the initial weights) arrive as ranges
 * of the packed shard in ascending order; a block's slice is written out (nvme) once all its
 * elements arrived. The padding elements of a slice must be written too (they are 0).
 *
 * Errors: 0 or -errno with a one-line message in zinf_pstore_error() naming the block, the
 * file and the I/O error. Threads: one at a time. */
#ifndef ZINF_ENGINE_PSTORE_H
#define ZINF_ENGINE_PSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "iosched/iosched.h"

typedef struct zinf_pstore zinf_pstore;

typedef struct zinf_pstore_opts {
	int nblocks;
	const int64_t *soff, *per; /* [nblocks] packed offset and slice length (elements) */
	bool nvme;
	const char *nvme_path;
	unsigned buffer_count;
	uint64_t buffer_size; /* elements */
	uint64_t max_in_cpu;  /* elements */
	bool pin_memory;
	const char *run_id; /* NULL: the pid */
	unsigned rank;
	bool nvme_buffered;
	iosched_opts aio;
	const char *what; /* "<config path>: zero_optimization.offload_param" for messages */
} zinf_pstore_opts;

int zinf_pstore_create(const zinf_pstore_opts *o, zinf_pstore **out, char *err, size_t errlen);
void zinf_pstore_destroy(zinf_pstore *s);
const char *zinf_pstore_error(const zinf_pstore *s);

/* Elements [off, off + n) of the packed shard from src (16-bit values). Ranges must come in
 * ascending order within one write pass (a pass ends with zinf_pstore_flush). */
int zinf_pstore_write(zinf_pstore *s, uint64_t off, uint64_t n, const uint16_t *src);
/* Completes the pass: every slice written is on its home tier (nvme: on disk). A slice left
 * partly written is an error naming it. */
int zinf_pstore_flush(zinf_pstore *s);

/* Block b's slice in host memory. wait false: starts the read if needed and returns -EAGAIN
 * until it is there (or when no host buffer is free now); wait true: blocks until it is. The
 * pointer stays valid until zinf_pstore_release(b). */
int zinf_pstore_acquire(zinf_pstore *s, int b, bool wait, const uint16_t **host);
/* Read-ahead: starts bringing block b's slice to host memory without waiting. Returns 1 when
 * it is there or on its way (the caller then owes one zinf_pstore_acquire + release, or the
 * acquire/release pair at invalidation), 0 when no host buffer is free now, or -errno. */
int zinf_pstore_prefetch(zinf_pstore *s, int b);
/* The caller no longer reads block b's host copy (its copy to the GPU completed). */
void zinf_pstore_release(zinf_pstore *s, int b);
/* Host copies of blocks b the caller does not hold are dropped (the parameters changed). */
void zinf_pstore_drop_cached(zinf_pstore *s);

typedef struct zinf_pstore_stats {
	uint64_t nvme_read, nvme_written; /* bytes, cumulative */
	uint64_t host_bytes, host_peak;   /* host buffers (chunk copies) now / peak */
	uint64_t store_bytes;             /* the whole shard (16-bit) */
	/* seconds, cumulative: blocked on NVMe inside acquire/prefetch (reads), inside write
	 * (waiting for a free buffer) and inside flush; write_s: all of zinf_pstore_write
	 * (copies into the buffers + its waits) */
	double wait_read_s, wait_write_s, wait_flush_s, write_s;
	/* parts of write_s (nvme): host buffer allocation, copies, submitting the NVMe writes */
	double write_alloc_s, write_copy_s, write_submit_s;
} zinf_pstore_stats;
void zinf_pstore_get_stats(const zinf_pstore *s, zinf_pstore_stats *st);

#endif
