/* Memory report: the plan (budgets the options ask for, checked before anything is allocated)
 * and, for a live swapper, in-use and peak bytes per tier. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "offload_internal.h"

#define SUBSYS "offload: plan"

_Static_assert(sizeof(((offload_report *)0)->err) >= OFF_ERR_LEN, "report err holds a message");

static int
plan(const offload_swapper_opts *o, offload_report *r)
{
	memset(r, 0, sizeof(*r));
	char a[64], b[64];
	if (!o->buffer_count || !o->buffer_size || o->buffer_size % OFFLOAD_ALIGN) {
		off_set_err(r->err, SUBSYS,
		            "buffer_count must be > 0 (got %u) and buffer_size a multiple of 4096 "
		            "(got %" PRIu64 ")",
		            o->buffer_count, o->buffer_size);
		return -EINVAL;
	}
	if (!o->max_chunks || !o->max_ops || !o->host_budget) {
		off_set_err(r->err, SUBSYS, "host_budget, max_chunks and max_ops must be > 0");
		return -EINVAL;
	}
	if (o->nvme_path_count && !o->nvme_capacity) {
		off_set_err(r->err, SUBSYS, "nvme_path given but nvme_capacity is 0");
		return -EINVAL;
	}
	r->present[OFFLOAD_TIER_GPU] = o->gpu_budget > 0;
	r->present[OFFLOAD_TIER_HOST] = true;
	r->present[OFFLOAD_TIER_NVME] = o->nvme_path_count > 0;
	r->planned[OFFLOAD_TIER_GPU] = o->gpu_budget;
	r->planned[OFFLOAD_TIER_HOST] = o->host_budget;
	r->planned[OFFLOAD_TIER_NVME] = o->nvme_capacity;
	r->nvme_paths = o->nvme_path_count;
	r->host_mode = o->pin_memory ? OFFLOAD_HOST_PINNED_MLOCK : OFFLOAD_HOST_PAGEABLE;
	if (o->pin_memory && offload_gpu_probe(NULL, 0))
		r->host_mode = OFFLOAD_HOST_PINNED_CUDA;
	if (r->present[OFFLOAD_TIER_GPU] && r->present[OFFLOAD_TIER_NVME])
		r->staging_bytes = (uint64_t)o->buffer_count * o->buffer_size;
	if (r->staging_bytes > o->host_budget) {
		off_set_err(
		        r->err, SUBSYS,
		        "staging slots (buffer_count %u x buffer_size %" PRIu64 " = %s) exceed the "
		        "host budget %s: lower buffer_count/buffer_size or raise the host budget",
		        o->buffer_count, o->buffer_size,
		        off_fmt_bytes(r->staging_bytes, a, sizeof(a)),
		        off_fmt_bytes(o->host_budget, b, sizeof(b)));
		return -EINVAL;
	}
	return 0;
}

int
offload_plan(const offload_swapper_opts *o, offload_report *r, char *err, size_t err_len)
{
	int ret = plan(o, r);
	if (ret && err && err_len)
		snprintf(err, err_len, "%s", r->err);
	return ret;
}

static int put(char *buf, size_t len, size_t *at, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int
put(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(*at < len ? buf + *at : NULL, *at < len ? len - *at : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*at += (size_t)n;
	return n;
}

int
offload_report_format(const offload_report *r, char *buf, size_t len)
{
	size_t at = 0;
	if (len)
		buf[0] = 0;
	put(buf, len, &at, "%-5s %-8s %16s %16s %16s\n", "tier", "present", "planned", "in use",
	    "peak");
	for (unsigned t = 0; t < OFFLOAD_TIER_COUNT; t++)
		put(buf, len, &at, "%-5s %-8s %16" PRIu64 " %16" PRIu64 " %16" PRIu64 "\n",
		    offload_tier_name((offload_tier)t), r->present[t] ? "yes" : "no", r->planned[t],
		    r->usage[t].in_use, r->usage[t].peak);
	put(buf, len, &at, "host buffers: %s; staging %" PRIu64 " bytes; nvme paths: %u\n",
	    offload_host_mode_name(r->host_mode), r->staging_bytes, r->nvme_paths);
	return (int)at;
}
