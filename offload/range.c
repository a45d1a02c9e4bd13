/* First-fit range allocator (GPU arena offsets, NVMe file offsets). Free ranges are kept
 * sorted and coalesced; alignment padding in front of an allocation stays free. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iosched/log.h"
#include "offload_internal.h"

int
off_ranges_init(off_ranges *r, uint64_t size)
{
	memset(r, 0, sizeof(*r));
	r->cap = 16;
	r->free = malloc(r->cap * sizeof(*r->free));
	if (!r->free)
		return -ENOMEM;
	r->size = size;
	if (size) {
		r->free[0] = (off_range){0, size};
		r->n = 1;
	}
	return 0;
}

void
off_ranges_fini(off_ranges *r)
{
	free(r->free);
	memset(r, 0, sizeof(*r));
}

static int
grow(off_ranges *r)
{
	if (r->n < r->cap)
		return 0;
	unsigned cap = r->cap * 2;
	off_range *f = realloc(r->free, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	r->free = f;
	r->cap = cap;
	return 0;
}

int
off_ranges_alloc(off_ranges *r, uint64_t len, uint64_t align, uint64_t *off)
{
	if (!len)
		return -EINVAL;
	for (unsigned i = 0; i < r->n; i++) {
		off_range *f = &r->free[i];
		uint64_t start = off_round_up(f->off, align);
		if (start - f->off > f->len || f->len - (start - f->off) < len)
			continue;
		uint64_t head = start - f->off, tail = f->len - head - len;
		if (head && tail) {
			if (grow(r))
				return -ENOMEM;
			f = &r->free[i];
			memmove(&r->free[i + 2], &r->free[i + 1], (r->n - i - 1) * sizeof(*f));
			r->free[i + 1] = (off_range){start + len, tail};
			f->len = head;
			r->n++;
		} else if (head) {
			f->len = head;
		} else if (tail) {
			f->off = start + len;
			f->len = tail;
		} else {
			memmove(&r->free[i], &r->free[i + 1], (r->n - i - 1) * sizeof(*f));
			r->n--;
		}
		r->in_use += len;
		r->allocs++;
		if (r->in_use > r->peak)
			r->peak = r->in_use;
		*off = start;
		return 0;
	}
	return -ENOBUFS;
}

int
off_ranges_free(off_ranges *r, uint64_t off, uint64_t len)
{
	unsigned i = 0;
	while (i < r->n && r->free[i].off < off)
		i++;
	r->in_use -= len;
	r->allocs--;
	bool join_prev = i > 0 && r->free[i - 1].off + r->free[i - 1].len == off;
	bool join_next = i < r->n && off + len == r->free[i].off;
	if (join_prev && join_next) {
		r->free[i - 1].len += len + r->free[i].len;
		memmove(&r->free[i], &r->free[i + 1], (r->n - i - 1) * sizeof(off_range));
		r->n--;
	} else if (join_prev) {
		r->free[i - 1].len += len;
	} else if (join_next) {
		r->free[i].off = off;
		r->free[i].len += len;
	} else {
		if (grow(r))
			return -ENOMEM;
		memmove(&r->free[i + 1], &r->free[i], (r->n - i) * sizeof(off_range));
		r->free[i] = (off_range){off, len};
		r->n++;
	}
	return 0;
}

uint64_t
off_ranges_largest(const off_ranges *r)
{
	uint64_t m = 0;
	for (unsigned i = 0; i < r->n; i++)
		if (r->free[i].len > m)
			m = r->free[i].len;
	return m;
}

void
off_vset_err(char *err, const char *subsys, const char *fmt, va_list ap)
{
	vsnprintf(err, OFF_ERR_LEN, fmt, ap);
	zinf_log(ZINF_LOG_ERROR, subsys, "%s", err);
}

void
off_set_err(char *err, const char *subsys, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	off_vset_err(err, subsys, fmt, ap);
	va_end(ap);
}

const char *
off_fmt_bytes(uint64_t b, char *buf, size_t len)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	unsigned i = 0;
	double v = (double)b;
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)b);
	else
		snprintf(buf, len, "%.2f %s (%llu bytes)", v, u[i], (unsigned long long)b);
	return buf;
}

const char *
offload_tier_name(offload_tier t)
{
	static const char *const n[] = {"gpu", "host", "nvme"};
	return (unsigned)t < OFFLOAD_TIER_COUNT ? n[t] : "?";
}
