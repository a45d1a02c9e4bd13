/* Offloaded optimizer step: see engine/include/engine/optstep.h for the design and the state
 * after a failure. All movement goes through the swapper; this file only orders it.
 *
 * Per step, each sub-group walks IDLE -> FETCHING -> READY -> COMPUTING -> WRITING -> DONE.
 * `resident` counts sub-groups between FETCHING and WRITING (inclusive): it never exceeds
 * buffer_count, which bounds GPU (or host) memory; a sub-group leaves only when its write-back
 * completed. With the GPU, sub-group i's Adam is launched on our stream after offload_poll()
 * reported its fetch (the swapper reports a copy once its CUDA event fired), and its event slot
 * is i % buffer_count (unique among resident sub-groups).
 *
 * ZeRO-3 parameter offload (param16_sink, host gradients with step_on GPU) adds per-slot
 * buffers indexed the same way: slot i % buffer_count holds sub-group i's gradient slice
 * (device, copied H2D on our stream before its Adam) and its 16-bit output. For the 16-bit
 * output on the GPU the kernel writes a device slot and a cudaMemcpyAsync D2H into a pinned
 * host slot is queued before the sub-group's event, rather than letting the kernel write
 * pinned memory through UVA: the Adam kernel then streams only HBM (a zero-copy store
 * stalls its SMs on PCIe, some 50x narrower than HBM) and keeps its 16-byte vector path on
 * every GPU, the copy engine moves the 2 B/param, and the bits equal those of a device
 * param16_out. It costs buffer_count * sub_group_size * 2 B of GPU memory. The sink of i is
 * called when its event completed, in order because the stream completes in order; the host
 * slot is then free. A slot is reused by sub-group i + buffer_count at the earliest, whose
 * fetch needed a free resident place, i.e. some sub-group in [i, i + buffer_count) done,
 * which (in-order completion) means i's sink was already called; compute() checks it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/adam_cuda.h"
#endif

#include "engine/optstep.h"

#define EMSG 768

enum sg_state { SG_IDLE, SG_FETCHING, SG_READY, SG_COMPUTING, SG_WRITING, SG_DONE };

struct zinf_optstep {
	zinf_optstep_opts o;
	char *paths[OFFLOAD_NVME_MAX_PATHS];
	offload_swapper_t *sw;
	uint64_t ngroups;
	int *ids;
	int64_t *applied;  /* cfg.step last applied per sub-group */
	bool *pending_wb;  /* stepped copy in the work tier, home copy stale */
	unsigned char *st; /* sg_state during a step */
	offload_tier work, home;
	void *host_grads, *host_p16; /* step_on CPU with device pointers */
	size_t host_grads_len, host_p16_len;
	/* param16_sink: the 16-bit output handed to the sink; step_on CPU: one sub-group
	 * (malloc); step_on GPU: buffer_count pinned slots of p16_stride bytes */
	void *sink_buf;
	void *d_p16, *d_grads; /* step_on GPU: device slots (sink; host gradients) */
	size_t p16_stride, grad_stride;
	int64_t *slot_sg; /* step_on GPU with a sink: sub-group awaiting its sink per slot, -1 */
	zinf_optstep_stats stats;
	char err[EMSG];
#ifdef ZINF_HAVE_CUDA
	cudaStream_t stream;
	cudaEvent_t *events;
#endif
};

/* One step's loop state. */
typedef struct run {
	zinf_optstep_t *os;
	const zinf_adam_cfg *cfg;
	const void *grads;
	void *p16;
	float grad_mult;
	unsigned resident;
	uint64_t done;
	int fail;
	bool sink_failed; /* param16_sink returned an error: no further sink calls */
} run;

static void set_err(zinf_optstep_t *os, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
set_err(zinf_optstep_t *os, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(os->err, sizeof(os->err), fmt, ap);
	va_end(ap);
	fprintf(stderr, "zinf: optstep: %s\n", os->err);
}

static uint64_t
round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

static uint64_t
sg_len(const zinf_optstep_t *os, uint64_t i)
{
	uint64_t off = i * os->o.sub_group_size;
	uint64_t n = os->o.nparams - off;
	return n < os->o.sub_group_size ? n : os->o.sub_group_size;
}

static size_t
dtype_size(zinf_dtype t)
{
	return t == ZINF_DTYPE_FP32 ? 4 : 2;
}

void
zinf_optstep_opts_init(zinf_optstep_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->device = ZINF_OPTSTEP_DEVICE_CPU;
	opts->step_on = ZINF_OPTSTEP_ON_GPU;
	opts->device_ptrs = true;
	opts->buffer_count = 4;
	opts->pipeline_read = opts->pipeline_write = true;
	opts->pin_memory = true;
	opts->cpu.nthreads = 1;
	opts->cpu.isa = ZINF_CPU_ISA_AUTO;
	iosched_opts_init(&opts->aio);
}

const char *
zinf_optstep_last_error(const zinf_optstep_t *os)
{
	return os ? os->err : "optstep: no handle";
}

uint64_t
zinf_optstep_subgroups(const zinf_optstep_t *os)
{
	return os->ngroups;
}

int64_t
zinf_optstep_subgroup_step(const zinf_optstep_t *os, uint64_t i)
{
	return i < os->ngroups ? os->applied[i] : -1;
}

void
zinf_optstep_get_stats(const zinf_optstep_t *os, zinf_optstep_stats *out)
{
	*out = os->stats;
}

offload_swapper_t *
zinf_optstep_swapper(zinf_optstep_t *os)
{
	return os->sw;
}

static int
check_opts(const zinf_optstep_opts *o, char *msg, size_t len)
{
	if (!o->nparams) {
		snprintf(msg, len, "nparams is 0: the partition must hold at least one parameter");
		return -EINVAL;
	}
	if (!o->sub_group_size) {
		snprintf(msg, len,
		         "sub_group_size is 0: give the elements per sub-group (e.g. 1e9)");
		return -EINVAL;
	}
	if (!o->buffer_count) {
		snprintf(msg, len,
		         "buffer_count is 0: at least 1 sub-group must fit in the work "
		         "tier (2 or more overlap the transfers)");
		return -EINVAL;
	}
	unsigned min_bc = 1u + o->pipeline_read + o->pipeline_write;
	if (o->buffer_count < min_bc) {
		snprintf(msg, len,
		         "buffer_count %u is too small to overlap the step: pipeline_read %s and "
		         "pipeline_write %s need at least %u buffers (one being stepped%s%s); set "
		         "buffer_count >= %u, or set pipeline_read/pipeline_write false to run "
		         "without that overlap",
		         o->buffer_count, o->pipeline_read ? "true" : "false",
		         o->pipeline_write ? "true" : "false", min_bc,
		         o->pipeline_read ? ", one being read ahead" : "",
		         o->pipeline_write ? ", one being written back" : "", min_bc);
		return -EINVAL;
	}
	if (o->device != ZINF_OPTSTEP_DEVICE_CPU && o->device != ZINF_OPTSTEP_DEVICE_NVME) {
		snprintf(msg, len, "device %d is not cpu or nvme", (int)o->device);
		return -EINVAL;
	}
	if (o->step_on != ZINF_OPTSTEP_ON_GPU && o->step_on != ZINF_OPTSTEP_ON_CPU) {
		snprintf(msg, len, "step_on %d is not gpu or cpu", (int)o->step_on);
		return -EINVAL;
	}
	if (o->device == ZINF_OPTSTEP_DEVICE_NVME && (!o->nvme_paths || !o->nvme_path_count)) {
		snprintf(msg, len, "device nvme needs an nvme_path (none given)");
		return -EINVAL;
	}
	if (o->nvme_path_count > OFFLOAD_NVME_MAX_PATHS) {
		snprintf(msg, len, "%u nvme paths, at most %u", o->nvme_path_count,
		         OFFLOAD_NVME_MAX_PATHS);
		return -EINVAL;
	}
	if (o->nparams > (UINT64_MAX / 16) || o->sub_group_size > (UINT64_MAX / 16)) {
		snprintf(msg, len, "nparams %llu / sub_group_size %llu too large",
		         (unsigned long long)o->nparams, (unsigned long long)o->sub_group_size);
		return -EINVAL;
	}
	uint64_t g = (o->nparams + o->sub_group_size - 1) / o->sub_group_size;
	if (g > (1u << 24)) {
		snprintf(msg, len,
		         "%llu sub-groups (nparams / sub_group_size), at most %u: raise "
		         "sub_group_size",
		         (unsigned long long)g, 1u << 24);
		return -EINVAL;
	}
	return 0;
}

/* Per-slot buffers of the sink and of host gradients with step_on GPU (see the top). */
static int
slot_setup(zinf_optstep_t *os, char *msg, size_t len)
{
	const zinf_optstep_opts *o = &os->o;
	uint64_t e = o->sub_group_size < o->nparams ? o->sub_group_size : o->nparams;
	unsigned k = o->buffer_count;
	/* 256-byte slots keep every slot aligned for the vectorised Adam paths */
	os->p16_stride = round_up(e * 2, 256);
	os->grad_stride = round_up(e * 4, 256);
	if (o->step_on == ZINF_OPTSTEP_ON_CPU) {
		if (o->param16_sink && !(os->sink_buf = aligned_alloc(256, os->p16_stride))) {
			snprintf(msg, len, "out of memory for the %zu-byte 16-bit sink buffer",
			         os->p16_stride);
			return -ENOMEM;
		}
		return 0;
	}
#ifdef ZINF_HAVE_CUDA
	const char *what = NULL;
	size_t bytes = 0;
	cudaError_t e2 = cudaSuccess;
	if (o->param16_sink) {
		if (!(os->slot_sg = malloc(k * sizeof(*os->slot_sg)))) {
			snprintf(msg, len, "out of memory");
			return -ENOMEM;
		}
		for (unsigned i = 0; i < k; i++)
			os->slot_sg[i] = -1;
		bytes = k * os->p16_stride;
		what = "cudaMalloc of the 16-bit output slots";
		e2 = cudaMalloc(&os->d_p16, bytes);
		if (e2 == cudaSuccess) {
			what = "cudaMallocHost of the 16-bit sink slots";
			e2 = cudaMallocHost(&os->sink_buf, bytes);
		}
	}
	if (e2 == cudaSuccess && !o->device_ptrs) {
		bytes = k * os->grad_stride;
		what = "cudaMalloc of the gradient slots (host gradients with step_on gpu)";
		e2 = cudaMalloc(&os->d_grads, bytes);
	}
	if (e2 != cudaSuccess) {
		(void)cudaGetLastError();
		snprintf(msg, len,
		         "%s (buffer_count %u x sub_group_size %llu = %zu bytes) failed: %s; "
		         "lower buffer_count or sub_group_size",
		         what, k, (unsigned long long)o->sub_group_size, bytes,
		         cudaGetErrorString(e2));
		return -ENOMEM;
	}
	return 0;
#else
	(void)k;
	snprintf(msg, len, "step_on gpu needs a CUDA build");
	return -ENODEV;
#endif
}

static int
gpu_setup(zinf_optstep_t *os, char *msg, size_t len)
{
	bool need = os->o.step_on == ZINF_OPTSTEP_ON_GPU || os->o.device_ptrs;
	if (!need)
		return 0;
	char why[256];
	if (!offload_gpu_probe(why, sizeof(why))) {
		snprintf(msg, len,
		         "%s needs a CUDA device, but %s: use step_on cpu with host "
		         "pointers",
		         os->o.step_on == ZINF_OPTSTEP_ON_GPU ? "step_on gpu" : "device_ptrs", why);
		return -ENODEV;
	}
#ifdef ZINF_HAVE_CUDA
	cudaError_t e = cudaSetDevice(os->o.gpu_device);
	if (e == cudaSuccess)
		e = cudaStreamCreateWithFlags(&os->stream, cudaStreamNonBlocking);
	if (e == cudaSuccess) {
		os->events = calloc(os->o.buffer_count, sizeof(*os->events));
		if (!os->events)
			return -ENOMEM;
		for (unsigned i = 0; i < os->o.buffer_count && e == cudaSuccess; i++)
			e = cudaEventCreateWithFlags(&os->events[i], cudaEventDisableTiming);
	}
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		snprintf(msg, len, "CUDA setup on device %d failed: %s", os->o.gpu_device,
		         cudaGetErrorString(e));
		return -EIO;
	}
	return 0;
#else
	return -ENODEV;
#endif
}

int
zinf_optstep_create(const zinf_optstep_opts *opts, zinf_optstep_t **out, char *err, size_t err_len)
{
	char msg[EMSG];
	*out = NULL;
	int ret = check_opts(opts, msg, sizeof(msg));
	if (ret) {
		fprintf(stderr, "zinf: optstep: %s\n", msg);
		if (err)
			snprintf(err, err_len, "optstep: %s", msg);
		return ret;
	}
	zinf_optstep_t *os = calloc(1, sizeof(*os));
	if (!os)
		return -ENOMEM;
	os->o = *opts;
	for (unsigned i = 0; i < opts->nvme_path_count; i++) {
		if (!(os->paths[i] = strdup(opts->nvme_paths[i]))) {
			ret = -ENOMEM;
			goto fail_msg;
		}
	}
	os->o.nvme_paths = (const char *const *)os->paths;
	if (opts->device != ZINF_OPTSTEP_DEVICE_NVME)
		os->o.nvme_path_count = 0;
	os->ngroups = (opts->nparams + opts->sub_group_size - 1) / opts->sub_group_size;
	os->work = opts->step_on == ZINF_OPTSTEP_ON_GPU ? OFFLOAD_TIER_GPU : OFFLOAD_TIER_HOST;
	os->home = opts->device == ZINF_OPTSTEP_DEVICE_NVME ? OFFLOAD_TIER_NVME : OFFLOAD_TIER_HOST;
	os->ids = calloc(os->ngroups, sizeof(*os->ids));
	os->applied = calloc(os->ngroups, sizeof(*os->applied));
	os->pending_wb = calloc(os->ngroups, sizeof(*os->pending_wb));
	os->st = calloc(os->ngroups, 1);
	if (!os->ids || !os->applied || !os->pending_wb || !os->st) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	snprintf(msg, sizeof(msg), "out of memory");
	if ((ret = gpu_setup(os, msg, sizeof(msg))))
		goto fail;
	if ((ret = slot_setup(os, msg, sizeof(msg))))
		goto fail;

	/* Sizes: one chunk of 12 B/param per sub-group, 4 KiB-rounded in host and NVMe. */
	uint64_t full = round_up(12 * opts->sub_group_size, OFFLOAD_ALIGN);
	uint64_t total = 0;
	for (uint64_t i = 0; i < os->ngroups; i++)
		total += round_up(12 * sg_len(os, i), OFFLOAD_ALIGN);
	unsigned k = opts->buffer_count;
	offload_swapper_opts so;
	offload_swapper_opts_init(&so);
	so.buffer_count = k;
	so.buffer_size = full < so.buffer_size ? full : so.buffer_size;
	so.pin_memory = opts->pin_memory;
	so.allow_unpinned = opts->allow_unpinned;
	so.gpu_device = opts->gpu_device;
	so.run_id = opts->run_id;
	so.rank = opts->rank;
	so.nvme_buffered = opts->nvme_buffered;
	so.max_chunks = os->ngroups > 16 ? (unsigned)os->ngroups : 16;
	so.max_ops = k + 8;
	so.aio = opts->aio;
	uint64_t staging = (uint64_t)k * so.buffer_size;
	if (os->home == OFFLOAD_TIER_HOST)
		so.host_budget = total + staging;
	else /* k work buffers (step_on cpu) or one for load/read, plus the staging slots */
		so.host_budget = (uint64_t)(k + 1) * full + staging;
	if (os->work == OFFLOAD_TIER_GPU)
		so.gpu_budget =
		        (uint64_t)k * round_up(12 * opts->sub_group_size, 4096) + (1u << 20);
	if (os->home == OFFLOAD_TIER_NVME) {
		so.nvme_paths = os->o.nvme_paths;
		so.nvme_path_count = os->o.nvme_path_count;
		uint64_t unit = (uint64_t)(1u << 20) * os->o.nvme_path_count;
		so.nvme_capacity = 0;
		for (uint64_t i = 0; i < os->ngroups; i++)
			so.nvme_capacity += round_up(12 * sg_len(os, i), unit);
	}
	if ((ret = offload_swapper_create(&so, &os->sw, msg, sizeof(msg))))
		goto fail;
	for (uint64_t i = 0; i < os->ngroups; i++) {
		char name[48];
		snprintf(name, sizeof(name), "optstep.sg%llu", (unsigned long long)i);
		int id = offload_chunk_create(os->sw, name, 12 * sg_len(os, i));
		if (id < 0) {
			ret = id;
			snprintf(msg, sizeof(msg), "chunk %s: %s", name,
			         offload_swapper_last_error(os->sw));
			goto fail;
		}
		os->ids[i] = id;
	}
	if (opts->step_on == ZINF_OPTSTEP_ON_CPU && opts->device_ptrs) {
		os->host_grads_len = opts->nparams * 4;
		os->host_p16_len = opts->param16_sink ? 0 : opts->nparams * 2; /* sink_buf */
#ifdef ZINF_HAVE_CUDA
		if (cudaMallocHost(&os->host_grads, os->host_grads_len) != cudaSuccess ||
		    (os->host_p16_len &&
		     cudaMallocHost(&os->host_p16, os->host_p16_len) != cudaSuccess)) {
			(void)cudaGetLastError();
			ret = -ENOMEM;
			snprintf(msg, sizeof(msg),
			         "cudaMallocHost of %zu bytes for the host copy of "
			         "the gradients failed",
			         os->host_grads_len);
			goto fail;
		}
#endif
	}
	*out = os;
	return 0;
fail_msg:
	snprintf(msg, sizeof(msg), "out of memory");
fail:
	fprintf(stderr, "zinf: optstep: %s\n", msg);
	if (err)
		snprintf(err, err_len, "optstep: %s", msg);
	zinf_optstep_destroy(os);
	return ret;
}

void
zinf_optstep_destroy(zinf_optstep_t *os)
{
	if (!os)
		return;
	offload_swapper_destroy(os->sw);
#ifdef ZINF_HAVE_CUDA
	if (os->events) {
		for (unsigned i = 0; i < os->o.buffer_count; i++)
			if (os->events[i])
				cudaEventDestroy(os->events[i]);
		free(os->events);
	}
	if (os->stream)
		cudaStreamDestroy(os->stream);
	if (os->host_grads)
		cudaFreeHost(os->host_grads);
	if (os->host_p16)
		cudaFreeHost(os->host_p16);
	if (os->d_p16)
		cudaFree(os->d_p16);
	if (os->d_grads)
		cudaFree(os->d_grads);
	if (os->sink_buf && os->o.step_on == ZINF_OPTSTEP_ON_GPU)
		cudaFreeHost(os->sink_buf);
#endif
	if (os->o.step_on == ZINF_OPTSTEP_ON_CPU)
		free(os->sink_buf);
	free(os->slot_sg);
	for (unsigned i = 0; i < OFFLOAD_NVME_MAX_PATHS; i++)
		free(os->paths[i]);
	free(os->ids);
	free(os->applied);
	free(os->pending_wb);
	free(os->st);
	free(os);
}

/* Waits for the single operation in flight and returns its result. */
static int
wait_one(zinf_optstep_t *os, offload_event *ev)
{
	int n = offload_poll(os->sw, ev, 1, 1, -1);
	if (n < 0)
		return n;
	return ev->res;
}

static void
io_err(zinf_optstep_t *os, uint64_t i, const char *what, int res)
{
	set_err(os, "sub-group %llu (chunk optstep.sg%llu): %s failed: %s (%s)",
	        (unsigned long long)i, (unsigned long long)i, what,
	        offload_swapper_last_error(os->sw), strerror(-res));
}

/* Issues the write-back of sub-group i, whose stepped copy is valid only in the work tier.
 * GPU -> NVMe is a fetch into NVMe (the staged path) followed by a drop of the GPU copy once it
 * completed; the other pairs are an evict (GPU -> host, host -> NVMe). */
static int
writeback_start(zinf_optstep_t *os, uint64_t i)
{
	int id = os->ids[i];
	if (os->work == OFFLOAD_TIER_GPU && os->home == OFFLOAD_TIER_NVME)
		return offload_chunk_fetch(os->sw, id, OFFLOAD_TIER_NVME, i);
	return offload_chunk_evict(os->sw, id, os->work, i);
}

/* The write-back's completion; 0 or the error. */
static int
writeback_done(zinf_optstep_t *os, uint64_t i, int res)
{
	if (res < 0)
		return res;
	if (os->work == OFFLOAD_TIER_GPU && os->home == OFFLOAD_TIER_NVME)
		return offload_chunk_drop(os->sw, os->ids[i], OFFLOAD_TIER_GPU);
	return 0;
}

/* Retries write-backs left by a failed step, one at a time. */
static int
flush_pending(zinf_optstep_t *os)
{
	for (uint64_t i = 0; i < os->ngroups; i++) {
		if (!os->pending_wb[i])
			continue;
		offload_event ev;
		int ret = writeback_start(os, i);
		if (!ret)
			ret = writeback_done(os, i, wait_one(os, &ev));
		if (ret) {
			io_err(os, i, "write-back retry", ret);
			return ret;
		}
		os->pending_wb[i] = false;
	}
	return 0;
}

typedef struct load_arrays {
	const float *master;
} load_arrays;

static int
fill_from_array(void *ctx, uint64_t offset, uint64_t n, float *dst)
{
	memcpy(dst, ((const load_arrays *)ctx)->master + offset, n * 4);
	return 0;
}

/* Writes every sub-group's state to its home tier, one host buffer per sub-group: master from
 * fill(), m and v from the arrays or zeros. With an NVMe home up to buffer_count writes are in
 * flight and each host buffer is released once written, so host memory stays O(buffers). */
static int
load_groups(zinf_optstep_t *os, zinf_optstep_fill_fn fill, void *ctx, const float *m,
            const float *v, int64_t step)
{
	int ret = flush_pending(os);
	if (ret)
		return ret;
	bool nvme = os->home == OFFLOAD_TIER_NVME;
	unsigned inflight = 0;
	offload_event ev;
	for (uint64_t i = 0; i < os->ngroups && !ret; i++) {
		uint64_t off = i * os->o.sub_group_size, n = sg_len(os, i);
		int id = os->ids[i];
		float *h;
		while (nvme && inflight >= os->o.buffer_count && !ret) {
			if ((ret = wait_one(os, &ev)))
				io_err(os, ev.tag, "load (write to nvme)", ret);
			inflight--;
		}
		if (ret)
			break;
		if ((ret = offload_chunk_alloc(os->sw, id, OFFLOAD_TIER_HOST, (void **)&h))) {
			io_err(os, i, "load (host buffer)", ret);
			break;
		}
		if ((ret = fill(ctx, off, n, h))) {
			set_err(os, "sub-group %llu: filling the initial values failed (%s)",
			        (unsigned long long)i, strerror(-ret));
			break;
		}
		if (m)
			memcpy(h + n, m + off, n * 4);
		else
			memset(h + n, 0, n * 4);
		if (v)
			memcpy(h + 2 * n, v + off, n * 4);
		else
			memset(h + 2 * n, 0, n * 4);
		if (nvme) {
			if ((ret = offload_chunk_evict(os->sw, id, OFFLOAD_TIER_HOST, i))) {
				io_err(os, i, "load (write to nvme)", ret);
				break;
			}
			inflight++;
		}
		os->applied[i] = step;
	}
	while (inflight--) { /* finish what was issued, keep the first error */
		int r = wait_one(os, &ev);
		if (r && !ret) {
			io_err(os, ev.tag, "load (write to nvme)", r);
			ret = r;
		}
	}
	return ret;
}

int
zinf_optstep_load(zinf_optstep_t *os, const float *master, const float *m, const float *v,
                  int64_t step)
{
	load_arrays a = {.master = master};
	return load_groups(os, fill_from_array, &a, m, v, step);
}

int
zinf_optstep_load_fill(zinf_optstep_t *os, zinf_optstep_fill_fn fill, void *ctx, int64_t step)
{
	return load_groups(os, fill, ctx, NULL, NULL, step);
}

int
zinf_optstep_read(zinf_optstep_t *os, float *master, float *m, float *v)
{
	int ret = flush_pending(os);
	if (ret)
		return ret;
	for (uint64_t i = 0; i < os->ngroups; i++) {
		uint64_t off = i * os->o.sub_group_size, n = sg_len(os, i);
		int id = os->ids[i];
		offload_event ev;
		bool fetched = false;
		if (os->home == OFFLOAD_TIER_NVME) {
			ret = offload_chunk_fetch(os->sw, id, OFFLOAD_TIER_HOST, i);
			if (!ret)
				ret = wait_one(os, &ev);
			if (ret) {
				io_err(os, i, "read (fetch to host)", ret);
				return ret;
			}
			fetched = true;
		}
		const float *h = offload_chunk_ptr(os->sw, id, OFFLOAD_TIER_HOST);
		if (!h) {
			set_err(os, "sub-group %llu: no host copy to read", (unsigned long long)i);
			return -EIO;
		}
		if (master)
			memcpy(master + off, h, n * 4);
		if (m)
			memcpy(m + off, h + n, n * 4);
		if (v)
			memcpy(v + off, h + 2 * n, n * 4);
		if (fetched && (ret = offload_chunk_drop(os->sw, id, OFFLOAD_TIER_HOST))) {
			io_err(os, i, "read (drop host copy)", ret);
			return ret;
		}
	}
	return 0;
}

static void
count(zinf_optstep_t *os, offload_tier from, offload_tier to, uint64_t bytes)
{
	if (from == to)
		return;
	os->stats.bytes[from][0] += bytes;
	os->stats.bytes[to][1] += bytes;
}

static void
fail_with(run *r, int ret)
{
	if (!r->fail)
		r->fail = ret;
}

/* Sub-group i finished its Adam: it is stepped; write it back (or nothing to move). */
static void
stepped(run *r, uint64_t i)
{
	zinf_optstep_t *os = r->os;
	os->applied[i] = r->cfg->step;
	if (os->work == os->home) { /* step_on cpu, device cpu: in place */
		os->st[i] = SG_DONE;
		r->resident--;
		r->done++;
		return;
	}
	int ret = offload_chunk_dirty(os->sw, os->ids[i], os->work);
	if (!ret)
		ret = writeback_start(os, i);
	if (ret) {
		/* the stepped copy stays in the work tier; retried before the next use */
		if (!r->fail)
			io_err(os, i, "write-back", ret);
		fail_with(r, ret);
		os->pending_wb[i] = true;
		os->st[i] = SG_DONE;
		r->resident--;
		r->done++;
		return;
	}
	os->st[i] = SG_WRITING;
}

/* Hands sub-group i's 16-bit output (host memory) to the sink; see optstep.h. */
static void
call_sink(run *r, uint64_t i, const void *p16)
{
	zinf_optstep_t *os = r->os;
	if (r->sink_failed)
		return;
	uint64_t off = i * os->o.sub_group_size, n = sg_len(os, i);
	int rc = os->o.param16_sink(os->o.sink_ctx, off, n, p16);
	if (!rc)
		return;
	r->sink_failed = true;
	if (!r->fail)
		set_err(os,
		        "sub-group %llu (elements %llu..%llu): param16_sink returned %d (%s); "
		        "the step stopped: earlier sub-groups were handed to the sink, this one "
		        "and those still in flight are stepped without it, later ones unchanged "
		        "(zinf_optstep_subgroup_step tells)",
		        (unsigned long long)i, (unsigned long long)off,
		        (unsigned long long)(off + n - 1), rc,
		        rc < 0 ? strerror(-rc) : "not a negative errno");
	fail_with(r, rc < 0 ? rc : -EIO);
}

static int
compute(run *r, uint64_t i)
{
	zinf_optstep_t *os = r->os;
	const zinf_adam_cfg *cfg = r->cfg;
	uint64_t off = i * os->o.sub_group_size, n = sg_len(os, i);
	float *base = offload_chunk_ptr(os->sw, os->ids[i], os->work);
	if (!base) {
		set_err(os, "sub-group %llu: fetched copy missing in %s", (unsigned long long)i,
		        offload_tier_name(os->work));
		return -EIO;
	}
	zinf_adam_chunk c = {
	        .param = base,
	        .m = base + n,
	        .v = base + 2 * n,
	        .grad = (const char *)r->grads + off * dtype_size(cfg->grad_dtype),
	        .param16 = r->p16 ? (char *)r->p16 + off * dtype_size(cfg->param16_dtype) : NULL,
	        .n = (int64_t)n,
	};
	int ret;
	if (os->work == OFFLOAD_TIER_HOST) {
		if (os->o.param16_sink)
			c.param16 = os->sink_buf;
		ret = zinf_adam_step_cpu(cfg, &c, 1, r->grad_mult, &os->o.cpu);
		if (ret) {
			set_err(os, "sub-group %llu: CPU Adam failed: %s", (unsigned long long)i,
			        strerror(-ret));
			return ret;
		}
		stepped(r, i);
		if (os->o.param16_sink)
			call_sink(r, i, os->sink_buf);
		return 0;
	}
#ifdef ZINF_HAVE_CUDA
	unsigned slot = (unsigned)(i % os->o.buffer_count);
	if (os->d_grads) { /* host gradients: this sub-group's slice to its device slot */
		size_t glen = n * dtype_size(cfg->grad_dtype);
		void *dg = (char *)os->d_grads + slot * os->grad_stride;
		cudaError_t e = cudaMemcpyAsync(dg, c.grad, glen, cudaMemcpyHostToDevice,
		                                os->stream);
		if (e != cudaSuccess) {
			(void)cudaGetLastError();
			set_err(os, "sub-group %llu: copy of its gradients (%zu bytes) to the GPU "
			        "failed: %s",
			        (unsigned long long)i, glen, cudaGetErrorString(e));
			return -EIO;
		}
		count(os, OFFLOAD_TIER_HOST, OFFLOAD_TIER_GPU, glen);
		c.grad = dg;
	}
	if (os->o.param16_sink) {
		if (os->slot_sg[slot] >= 0) {
			set_err(os, "sub-group %llu: 16-bit slot %u still holds sub-group %lld "
			        "awaiting its sink (internal)",
			        (unsigned long long)i, slot, (long long)os->slot_sg[slot]);
			return -EIO;
		}
		c.param16 = (char *)os->d_p16 + slot * os->p16_stride;
	}
	ret = zinf_adam_step_cuda(cfg, &c, 1, r->grad_mult, NULL, os->stream);
	if (!ret && os->o.param16_sink) {
		if (cudaMemcpyAsync((char *)os->sink_buf + slot * os->p16_stride, c.param16,
		                    n * 2, cudaMemcpyDeviceToHost, os->stream) != cudaSuccess)
			ret = -EIO;
		else
			count(os, OFFLOAD_TIER_GPU, OFFLOAD_TIER_HOST, n * 2);
	}
	if (!ret && cudaEventRecord(os->events[slot], os->stream) != cudaSuccess)
		ret = -EIO;
	if (ret) {
		(void)cudaGetLastError();
		set_err(os, "sub-group %llu: CUDA Adam launch failed (%s)", (unsigned long long)i,
		        strerror(-ret));
		return ret;
	}
	if (os->o.param16_sink)
		os->slot_sg[slot] = (int64_t)i;
	os->st[i] = SG_COMPUTING;
	return 0;
#else
	return -ENODEV;
#endif
}

/* Drops an unstepped fetched copy after a failure (its home copy is valid). */
static void
discard(run *r, uint64_t i)
{
	zinf_optstep_t *os = r->os;
	if (os->work != os->home)
		(void)offload_chunk_drop(os->sw, os->ids[i], os->work);
	os->st[i] = SG_DONE;
	r->resident--;
	r->done++;
}

/* GPU: sub-groups whose Adam finished go to write-back. Returns how many moved. */
static unsigned
check_gpu(run *r, uint64_t lo, uint64_t hi)
{
	unsigned moved = 0;
#ifdef ZINF_HAVE_CUDA
	zinf_optstep_t *os = r->os;
	for (uint64_t i = lo; i < hi; i++) {
		if (os->st[i] != SG_COMPUTING)
			continue;
		cudaError_t e = cudaEventQuery(os->events[i % os->o.buffer_count]);
		if (e == cudaErrorNotReady)
			break; /* in stream order: later ones are not done either */
		moved++;
		unsigned slot = (unsigned)(i % os->o.buffer_count);
		if (os->slot_sg)
			os->slot_sg[slot] = -1;
		if (e != cudaSuccess) {
			(void)cudaGetLastError();
			set_err(os, "sub-group %llu: CUDA Adam failed: %s", (unsigned long long)i,
			        cudaGetErrorString(e));
			fail_with(r, -EIO);
			discard(r, i);
			continue;
		}
		stepped(r, i);
		if (os->o.param16_sink) /* in order: the stream completes in order */
			call_sink(r, i, (const char *)os->sink_buf + slot * os->p16_stride);
	}
#else
	(void)r;
	(void)lo;
	(void)hi;
#endif
	return moved;
}

static void
on_event(run *r, const offload_event *ev)
{
	zinf_optstep_t *os = r->os;
	uint64_t i = ev->tag;
	uint64_t bytes = 12 * sg_len(os, i);
	if (i >= os->ngroups)
		return;
	if (os->st[i] == SG_FETCHING) {
		if (ev->res < 0) {
			if (!r->fail)
				io_err(os, i, "fetch", ev->res);
			fail_with(r, ev->res);
			os->st[i] = SG_DONE;
			r->resident--;
			r->done++;
			return;
		}
		os->stats.fetches++;
		count(os, os->home, os->work, bytes);
		os->st[i] = SG_READY;
		if (r->fail)
			discard(r, i);
		return;
	}
	if (os->st[i] == SG_WRITING) {
		int ret = writeback_done(os, i, ev->res);
		if (ret) {
			if (!r->fail)
				io_err(os, i, "write-back", ret);
			fail_with(r, ret);
			os->pending_wb[i] = true;
		} else {
			os->stats.writebacks++;
			count(os, os->work, os->home, bytes);
		}
		os->st[i] = SG_DONE;
		r->resident--;
		r->done++;
	}
}


#ifdef ZINF_HAVE_CUDA
static int
cuda_copy(zinf_optstep_t *os, void *dst, const void *src, size_t len, enum cudaMemcpyKind kind,
          const char *what)
{
	cudaError_t e = cudaMemcpyAsync(dst, src, len, kind, os->stream);
	if (e == cudaSuccess)
		e = cudaStreamSynchronize(os->stream);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		set_err(os, "%s (%zu bytes) failed: %s", what, len, cudaGetErrorString(e));
		return -EIO;
	}
	return 0;
}
#endif

/* Whether sub-group nf may start fetching under the pipeline flags (the buffer_count bound is
 * checked by the caller). Only the last buffer_count sub-groups can still be resident. */
static bool
may_fetch(const zinf_optstep_t *os, uint64_t nf, uint64_t nc)
{
	if (os->o.pipeline_read && os->o.pipeline_write)
		return true;
	if (!os->o.pipeline_read && nf != nc)
		return false; /* an earlier sub-group is fetched but not yet stepped */
	uint64_t k = os->o.buffer_count, from = nf > k ? nf - k : 0;
	for (uint64_t i = from; i < nf; i++) {
		if (!os->o.pipeline_read && os->st[i] == SG_COMPUTING)
			return false;
		if (!os->o.pipeline_write && os->st[i] == SG_WRITING)
			return false;
	}
	return true;
}

int
zinf_optstep_step(zinf_optstep_t *os, const void *grads, void *param16_out,
                  const zinf_adam_cfg *cfg, float grad_mult)
{
	if (!grads || !cfg) {
		set_err(os, "step: grads and cfg are required");
		return -EINVAL;
	}
	int ret = zinf_adam_cfg_check(cfg);
	if (ret) {
		set_err(os, "step: bad Adam configuration (see the line above)");
		return ret;
	}
	if (cfg->moment_dtype != ZINF_DTYPE_FP32) {
		set_err(os, "step: moment_dtype %s: the offloaded state is fp32 (12 B/param)",
		        zinf_dtype_name(cfg->moment_dtype));
		return -EINVAL;
	}
	double t0 = iosched_now_s();
	memset(&os->stats.bytes, 0, sizeof(os->stats.bytes));
	os->stats.fetches = os->stats.writebacks = 0;
	if (os->o.param16_sink && param16_out) {
		set_err(os, "step: param16_out given with a param16_sink: the 16-bit copy goes to "
		        "the sink, pass param16_out NULL");
		return -EINVAL;
	}
	if (os->work == OFFLOAD_TIER_GPU && !os->o.device_ptrs && param16_out) {
		set_err(os, "step: param16_out given with step_on gpu and host gradients "
		        "(device_ptrs false): set param16_sink and pass param16_out NULL");
		return -EINVAL;
	}
	if ((ret = flush_pending(os)))
		return ret;
	run r = {.os = os, .cfg = cfg, .grads = grads, .p16 = param16_out, .grad_mult = grad_mult};
	if (os->host_grads) {
#ifdef ZINF_HAVE_CUDA
		size_t glen = os->o.nparams * dtype_size(cfg->grad_dtype);
		if ((ret = cuda_copy(os, os->host_grads, grads, glen, cudaMemcpyDeviceToHost,
		                     "copy of the gradients to the host")))
			return ret;
		os->stats.bytes[OFFLOAD_TIER_GPU][0] += glen;
		os->stats.bytes[OFFLOAD_TIER_HOST][1] += glen;
		r.grads = os->host_grads;
		r.p16 = param16_out ? os->host_p16 : NULL;
#endif
	}
	memset(os->st, SG_IDLE, os->ngroups);
	uint64_t nf = 0, nc = 0, g = os->ngroups;
	unsigned k = os->o.buffer_count;
	os->stats.peak_resident = 0;
	while (r.done < g) {
		bool progress = false;
		while (!r.fail && nf < g && r.resident < k && may_fetch(os, nf, nc)) {
			ret = offload_chunk_fetch(os->sw, os->ids[nf], os->work, nf);
			if (ret == -EAGAIN)
				break;
			if (ret) {
				io_err(os, nf, "fetch", ret);
				fail_with(&r, ret);
				break;
			}
			os->st[nf++] = SG_FETCHING;
			r.resident++;
			if (r.resident > os->stats.peak_resident)
				os->stats.peak_resident = r.resident;
			progress = true;
		}
		if (r.fail && nc < nf) {
			/* no new Adam after a failure: drop what is fetched and unstepped */
			for (uint64_t i = nc; i < nf; i++)
				if (os->st[i] == SG_READY)
					discard(&r, i);
		}
		while (!r.fail && nc < nf && os->st[nc] == SG_READY) {
			ret = compute(&r, nc);
			if (ret) {
				fail_with(&r, ret);
				discard(&r, nc);
			}
			nc++;
			progress = true;
		}
		if (os->work == OFFLOAD_TIER_GPU && check_gpu(&r, 0, nf))
			progress = true;
		if (r.fail && !offload_outstanding(os->sw)) {
			bool busy = false;
			for (uint64_t i = 0; i < nf; i++)
				busy |= os->st[i] != SG_DONE;
			if (!busy)
				break; /* the rest were never fetched: unchanged */
		}
		unsigned out = offload_outstanding(os->sw);
		bool gpu_busy = false;
		if (os->work == OFFLOAD_TIER_GPU)
			for (uint64_t i = 0; i < nf && !gpu_busy; i++)
				gpu_busy = os->st[i] == SG_COMPUTING;
		if (!out) {
			if (!progress && !gpu_busy) {
				set_err(os, "step: pipeline stalled at sub-group %llu (internal)",
				        (unsigned long long)nc);
				fail_with(&r, -EIO);
				break;
			}
			continue;
		}
		offload_event evs[32];
		bool wait = !progress && !gpu_busy;
		int n = offload_poll(os->sw, evs, 32, wait ? 1 : 0, wait ? -1 : 0);
		if (n < 0) {
			set_err(os, "step: offload_poll failed: %s", strerror(-n));
			fail_with(&r, n);
			break;
		}
		for (int e = 0; e < n; e++)
			on_event(&r, &evs[e]);
	}
	if (!r.fail && os->host_grads && param16_out) {
#ifdef ZINF_HAVE_CUDA
		size_t plen = os->o.nparams * dtype_size(cfg->param16_dtype);
		if ((ret = cuda_copy(os, param16_out, os->host_p16, plen, cudaMemcpyHostToDevice,
		                     "copy of the 16-bit parameters to the GPU")))
			fail_with(&r, ret);
		os->stats.bytes[OFFLOAD_TIER_HOST][0] += plen;
		os->stats.bytes[OFFLOAD_TIER_GPU][1] += plen;
#endif
	}
#ifdef ZINF_HAVE_CUDA
	/* a failed launch may leave a gradient copy of ours queued: nothing may read the
	 * caller's buffers after we return */
	if (r.fail && os->work == OFFLOAD_TIER_GPU && cudaStreamSynchronize(os->stream))
		(void)cudaGetLastError();
#endif
	os->stats.seconds = iosched_now_s() - t0;
	return r.fail;
}
