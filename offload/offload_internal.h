/* Private to offload/: the range allocator shared by the GPU arena and the NVMe files, error
 * formatting, CUDA error conversion. */
#ifndef ZINF_OFFLOAD_INTERNAL_H
#define ZINF_OFFLOAD_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "iosched/log.h"
#include "offload/offload.h"

#define OFF_ERR_LEN 512

/* First-fit allocator over [0, size): a sorted array of free ranges, coalesced on free. */
typedef struct off_range {
	uint64_t off, len;
} off_range;

typedef struct off_ranges {
	off_range *free; /* sorted by off, never adjacent */
	unsigned n, cap;
	uint64_t size, in_use, peak;
	uint64_t allocs;
} off_ranges;

int off_ranges_init(off_ranges *r, uint64_t size);
void off_ranges_fini(off_ranges *r);
/* Offset of a free range of `len` bytes aligned to `align` (power of two). -ENOBUFS when none;
 * -ENOMEM when the free list cannot grow. */
int off_ranges_alloc(off_ranges *r, uint64_t len, uint64_t align, uint64_t *off);
/* Returns the range; -ENOMEM only if the free list cannot grow (range is then lost). */
int off_ranges_free(off_ranges *r, uint64_t off, uint64_t len);
uint64_t off_ranges_largest(const off_ranges *r);

/* snprintf into err[OFF_ERR_LEN] and log at error level under `subsys`. */
void off_set_err(char *err, const char *subsys, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void off_vset_err(char *err, const char *subsys, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));
/* "1.50 GiB" */
const char *off_fmt_bytes(uint64_t b, char *buf, size_t len);

static inline uint64_t
off_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

#endif
