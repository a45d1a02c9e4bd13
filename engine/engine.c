/* The training engine: forward / backward / step over one model, the ds_config's precision,
 * accumulation, clipping, loss scaling, optimizer, schedule and offload settings, and
 * checkpoints. See engine/include/engine/engine.h.
 *
 * State per device:
 *   CPU: params (fp32, the master itself when the optimizer state is in memory; a working copy
 *        refreshed from the offloaded master after each step otherwise), grads (fp32,
 *        accumulated), m and v (in memory) or an optstep handle (offload cpu|nvme, CPU Adam).
 *        fp16: the accumulated gradients are converted to fp16 at the boundary (a value past
 *        65504 becomes inf, as an fp16 gradient would), so the overflow check and the skip run
 *        exactly as on fp16 hardware; forward and backward stay fp32.
 *   GPU: bf16 parameters for zinf_gpu_forward, fp32 gradients, fp32 master + m + v on the GPU
 *        (fused CUDA Adam writes the bf16 copy) or an optstep handle (step_on GPU). fp16
 *        configs run the bf16 model with fp16 loss scaling and the overflow check on the fp32
 *        gradients: the GPU model has no fp16 kernels.
 * The optimizer covers the rank's ZeRO partition (zero_partition.c); at world size 1 that is
 * the whole vector at every stage.
 *
 * Several ranks (one engine per process, a comm between them), stages 0-2. Below stage 3 the
 * partition is one contiguous range [pb, pb + pn) of the flat vector; every rank's range is
 * `per` elements long in a vector padded to W * per (the last rank's tail is padding), which is
 * what in-place reduce-scatter / all-gather need. Backward scales by 1 / (accum * W) and the
 * collectives SUM, which is the average over ranks.
 *   The reductions of stages 0-2 run inside the backward that needs them, in buckets of
 *   reduce_bucket_size elements as blocks finish (zero_bucket.h), in place.
 *   stage 0: the boundary's backward all-reduces the gradients; every rank steps everything.
 *   stage 1: the boundary's backward reduces each partition's gradients onto its owner, in
 *            place (the rank's block at grads + pb); Adam runs over the partition (m, v are pn
 *            long, the offload handle covers pn); the updated partition is all-gathered into
 *            the full parameter copy (fp32 on the CPU, bf16 on the GPU).
 *   stage 2: every backward reduces (as stage 1). CPU: afterwards into a partition-sized
 *            accumulator (the full buffer is scratch, cleared after each reduce). GPU: in place;
 *            the rest of the buffer is cleared so the next backward adds to the reduced block
 *            (sum over ranks of zeros outside each rank's own block), no extra kernel.
 *   Grad norm: partition sums of squares all-gathered and summed in rank order (the same bits
 *   on every rank), found_inf OR-ed; stage 0 needs none (the reduced gradients are identical).
 * Stage 3 at world size > 1, or at any size with offload_param (zero3.c, zero3_gpu.c): the
 * partition is the rank's packed shard of every block (pb 0, pn = S slots); the model's
 * per-block hooks gather a block before it is read and release it after (blocks under
 * stage3_param_persistence_threshold stay), and reduce-scatter a block's gradient as soon as its
 * backward is done into gpart / d_gpart, the packed accumulator (GPU: device memory, or pinned
 * host memory with offload_param). CPU: the gathers fill a full-length mapping whose pages come
 * and go. GPU: no full-length vector; gathered blocks and gradients live in zero3's slots and
 * gathers run ahead in the recorded order. Adam runs over the packed shard (CPU: `shard`, the
 * fp32 master; GPU: d_master + d_shard16, the bf16 copy the gathers read; or, CPU and GPU, the
 * offloaded optimizer with its 16-bit output streamed to the parameter store, pstore.c, whose
 * bf16 slices the gathers then read); after a step every block is stale and is gathered again
 * when next needed. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/adam_cuda.h"
#endif

#include "engine/ckpt.h"
#include "engine/comm.h"
#include "engine/engine.h"
#include "engine/model_cpu.h"
#include "engine/model_gpu.h"
#include "engine/optstep.h"
#include "iosched/iosched.h"
#include "iosched/log.h"
#include "kernels/adam.h"
#include "zero3.h"
#include "zero_bucket.h"

#define EMSG 1024

struct zinf_engine {
	zinf_model_config mc;
	zinf_config cfg;
	zinf_engine_opts o;
	char weights[4096];
	char run_id[64];
	zinf_model_layout lay;
	zinf_zero_partition part;
	int B, T;
	int64_t accum, N;
	zinf_dtype grad_dtype; /* what the optimizer reads: FP32, or FP16 (fp16 on the CPU) */

	/* ranks: W = world size; the rank's partition [pb, pb + pn), `per` long per rank, the
	 * full buffers Np = W * per long (stage 0 and W 1: pb 0, pn = per = Np = N) */
	zinf_comm *comm;
	bool own_comm;
	int W, rank;
	int64_t pb, pn, per, Np;
	bool part_grads; /* stage 2 at W > 1: reduce-scatter after every backward */
	float *gpart;    /* CPU stage 2: the partition's accumulated gradients (pn) */
	zinf_zero3 *z3;  /* stage 3 at W > 1 (zero3.h); NULL otherwise */
	float *shard;    /* CPU stage 3: the packed fp32 master shard (pn = S) */
	/* stages 0-2 at W > 1: gradients reduced in buckets from the backward's grads_done hook
	 * (zero_bucket.h); `reduced`: the gradients of this accumulation window are reduced */
	zinf_zero_bucket zb;
	bool reduced;
	int zb_broken; /* a backward failed with reductions issued: the ranks are out of step */

	/* CPU */
	zinf_cpu_model *cpu;
	float *params, *grads, *m, *v;
	uint16_t *grads16;
	zinf_cpu_opts cpu_opts;

	/* optimizer state offload (cpu | nvme) */
	zinf_optstep_t *os;
	iosched_fault fault;

	/* GPU */
	zinf_gpu_model *gpu;
#ifdef ZINF_HAVE_CUDA
	cudaStream_t stream;
	uint16_t *d_p16;
	float *d_grads, *d_master, *d_m, *d_v;
	zinf_grad_stats *d_stats;
	zinf_grad_scratch *d_scratch;
	zinf_grad_stats *d_gather; /* W records: the ranks' partition statistics */
	uint16_t *d_shard16;       /* stage 3: the packed bf16 shard (pn); NULL with a store */
	float *d_gpart;            /* stage 3: the packed reduced gradients (pn) */
	bool gpart_host;           /* offload_param: d_gpart is pinned host memory */
#endif
	zinf_pstore *pstore;       /* offload_param: the 16-bit shard's home (pstore.h) */
	uint64_t gpu_base, gpu_peak; /* device bytes used when the engine started / peak since */

	zinf_lr_schedule sched;
	zinf_loss_scaler scaler;
	double lr;
	bool lr_overridden;
	bool have_forward;
	zinf_engine_stats st;
	char err[EMSG];
};

static void gpu_sample(zinf_engine *e);

/* --gpu_mem: device memory left free for kernel images CUDA loads after the engine measured
 * its fixed buffers (lazy module loading). */
#define GPU_LAZY_RESERVE (64ull << 20)

#ifdef ZINF_HAVE_CUDA
/* Device bytes in use now beyond what was in use when the engine started (gpu_base), 0 when
 * it cannot be read. */
static uint64_t
gpu_used(const zinf_engine *e)
{
	size_t fr = 0, tot = 0;
	if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
		(void)cudaGetLastError();
		return 0;
	}
	uint64_t used = tot - fr;
	return used > e->gpu_base ? used - e->gpu_base : 0;
}
#endif


__attribute__((format(printf, 3, 4))) static int
fail(zinf_engine *e, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->err, sizeof(e->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *
zinf_engine_error(const zinf_engine *e)
{
	return e ? e->err : "no engine";
}

void
zinf_engine_opts_init(zinf_engine_opts *o)
{
	*o = (zinf_engine_opts){0};
	o->device = ZINF_ENGINE_CPU;
	o->seed = 1234;
	o->world_size = 1;
}

static bool
on_gpu(const zinf_engine *e)
{
	return e->o.device == ZINF_ENGINE_GPU;
}

static void
set_err_from(zinf_engine *e, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s", e->err);
}

/* ---- optimizer state ---------------------------------------------------------------------- */

/* The config's aio section (and the tests' fault injection) for an offload's I/O. */
static void
aio_opts(zinf_engine *e, iosched_opts *a)
{
	iosched_opts_init(a);
	a->backend = (iosched_backend)e->cfg.aio_backend;
	a->queue_depth = (unsigned)e->cfg.aio_queue_depth;
	a->block_size = (uint64_t)e->cfg.aio_block_size;
	a->thread_count = (unsigned)e->cfg.aio_thread_count;
	a->quiet = true;
	if (e->o.fault) {
		e->fault = *e->o.fault;
		a->fault = &e->fault;
	}
}

/* GPU-stepped optimizer: buffer_count sub-groups sit in GPU memory at once (12 B per element,
 * 18 B with offload_param: the gradient slice and the 16-bit output too). DeepSpeed configs
 * often say sub_group_size 1e9 (DeepSpeed steps on the CPU), which would take tens of GiB of
 * GPU memory here; the sub-group is capped so the buffers take at most 1/8 of the GPU (1/4 of
 * --gpu_mem when given), with a warning naming the value used. Adam is elementwise: the
 * sub-group size changes memory and overlap, never the result. */
static void
gpu_sub_group_cap(zinf_engine *e, zinf_optstep_opts *so)
{
#ifdef ZINF_HAVE_CUDA
	size_t fr = 0, tot = 0;
	if (!on_gpu(e) || cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
		(void)cudaGetLastError();
		return;
	}
	uint64_t cap_bytes = (uint64_t)tot / 8;
	if (e->o.gpu_mem_budget && e->o.gpu_mem_budget / 4 < cap_bytes)
		cap_bytes = e->o.gpu_mem_budget / 4;
	uint64_t per = e->cfg.offload_param.device != ZINF_DEVICE_NONE ? 18 : 12;
	uint64_t k = so->buffer_count ? so->buffer_count : 1;
	uint64_t cap = cap_bytes / (k * per) / (1u << 20) * (1u << 20); /* whole Mi elements */
	if (cap < (1u << 20))
		cap = 1u << 20;
	if (so->sub_group_size <= cap)
		return;
	if (e->o.rank == 0)
		zinf_log(ZINF_LOG_WARN, "engine",
		         "%s: zero_optimization.sub_group_size %llu: %u GPU work buffers of it would "
		         "take %.1f GiB; stepping %llu elements at a time instead (%.1f GiB, 1/%s); set "
		         "sub_group_size to choose", e->cfg.path,
		         (unsigned long long)so->sub_group_size, (unsigned)k,
		         (double)(k * per * so->sub_group_size) / (double)(1u << 30),
		         (unsigned long long)cap, (double)(k * per * cap) / (double)(1u << 30),
		         e->o.gpu_mem_budget ? "4 of --gpu_mem" : "8 of the GPU's memory");
	so->sub_group_size = cap;
#else
	(void)e;
	(void)so;
#endif
}

/* offload_param: the optimizer's 16-bit output goes to the parameter store. */
static int
pstore_sink(void *ctx, uint64_t off, uint64_t n, const void *p16)
{
	zinf_engine *e = ctx;
	return zinf_pstore_write(e->pstore, off, n, p16);
}

static int
optstep_open(zinf_engine *e)
{
	const zinf_config_offload *oo = &e->cfg.offload_optimizer;
	zinf_optstep_opts so;
	zinf_optstep_opts_init(&so);
	so.nparams = (uint64_t)e->pn;
	uint64_t sg = e->cfg.sub_group_size > 0 ? (uint64_t)e->cfg.sub_group_size : so.nparams;
	so.sub_group_size = sg < so.nparams ? sg : so.nparams;
	so.device = oo->device == ZINF_DEVICE_NVME ? ZINF_OPTSTEP_DEVICE_NVME
	                                          : ZINF_OPTSTEP_DEVICE_CPU;
	const char *paths[1] = {oo->nvme_path};
	if (oo->device == ZINF_DEVICE_NVME) {
		so.nvme_paths = paths;
		so.nvme_path_count = 1;
	}
	so.run_id = e->o.run_id; /* points into e->run_id */
	so.rank = (unsigned)e->o.rank;
	so.buffer_count = (unsigned)oo->buffer_count;
	gpu_sub_group_cap(e, &so);
	/* Pipelining is on unless the file turns it off: DeepSpeed's default for these keys is
	 * false, but here overlap never changes results, only speed. */
	so.pipeline_read = e->cfg.src[ZINF_KEY_OOPT_PIPELINE_READ] == ZINF_SRC_DEFAULT ||
	                   oo->pipeline_read;
	so.pipeline_write = e->cfg.src[ZINF_KEY_OOPT_PIPELINE_WRITE] == ZINF_SRC_DEFAULT ||
	                    oo->pipeline_write;
	so.pin_memory = oo->pin_memory;
	so.allow_unpinned = true;
	so.nvme_buffered = e->o.nvme_buffered;
	so.step_on = on_gpu(e) ? ZINF_OPTSTEP_ON_GPU : ZINF_OPTSTEP_ON_CPU;
	so.device_ptrs = on_gpu(e);
	if (e->cfg.offload_param.device != ZINF_DEVICE_NONE) {
		/* gradients in pinned host memory, the 16-bit output streamed to the store */
		so.device_ptrs = false;
		so.param16_sink = pstore_sink;
		so.sink_ctx = e;
	}
	so.gpu_device = e->o.gpu_device;
	so.cpu = e->cpu_opts;
	aio_opts(e, &so.aio);
	char err[EMSG];
	int rc = zinf_optstep_create(&so, &e->os, err, sizeof(err));
	if (rc)
		return fail(e, rc, "%s: zero_optimization.offload_optimizer (device %s): %s",
		            e->cfg.path, oo->device == ZINF_DEVICE_NVME ? "nvme" : "cpu", err);
	return 0;
}

/* offload_param: the rank's 16-bit shard in host memory or on NVMe (pstore.h). */
static int
pstore_open(zinf_engine *e)
{
	const zinf_config_offload *op = &e->cfg.offload_param;
	char what[4200];
	snprintf(what, sizeof(what), "%.4000s: zero_optimization.offload_param", e->cfg.path);
	zinf_pstore_opts po = {
	        .nblocks = e->z3->nblocks,
	        .soff = e->z3->soff,
	        .per = e->z3->per,
	        .nvme = op->device == ZINF_DEVICE_NVME,
	        .nvme_path = op->nvme_path,
	        .buffer_count = (unsigned)op->buffer_count,
	        .buffer_size = (uint64_t)op->buffer_size,
	        .max_in_cpu = (uint64_t)op->max_in_cpu,
	        .pin_memory = op->pin_memory,
	        .run_id = e->o.run_id,
	        .rank = (unsigned)e->o.rank,
	        .nvme_buffered = e->o.nvme_buffered,
	        .what = what,
	};
	aio_opts(e, &po.aio);
	char err[EMSG];
	int rc = zinf_pstore_create(&po, &e->pstore, err, sizeof(err));
	if (rc)
		return fail(e, rc, "%s", err);
	return 0;
}

/* The parameters' full copy from the owned partitions (W > 1 at stages 1-2): an in-place
 * all-gather of each rank's `per` block (CPU fp32 params, GPU bf16 d_p16). */
static int
gather_params(zinf_engine *e)
{
	if (e->z3) {
		/* stage 3: blocks are gathered when next needed */
		zinf_zero3_invalidate(e->z3);
		return 0;
	}
	if (e->W == 1 || e->cfg.stage == 0)
		return 0;
	int rc;
	if (!on_gpu(e)) {
		rc = zinf_comm_all_gather(e->comm, e->params + e->pb, e->params, (size_t)e->per,
		                          ZINF_COMM_F32);
	} else {
#ifdef ZINF_HAVE_CUDA
		rc = zinf_comm_wait_for_stream(e->comm, e->stream);
		if (!rc)
			rc = zinf_comm_all_gather(e->comm, e->d_p16 + e->pb, e->d_p16, (size_t)e->per,
			                          ZINF_COMM_BF16);
		if (!rc)
			rc = zinf_comm_stream_wait_comm(e->comm, e->stream);
#else
		rc = -ENODEV;
#endif
	}
	if (rc)
		return fail(e, rc, "rank %d: all-gathering the updated parameters (%lld elements per "
		            "rank): %s", e->rank, (long long)e->per, zinf_comm_error(e->comm));
	return 0;
}

/* CPU: the fp32 master of the rank's partition (pn elements). */
static float *
master_part(zinf_engine *e)
{
	return e->shard ? e->shard : e->params + e->pb;
}

/* Host copies of master, m, v (any NULL) of the rank's partition (pn elements), wherever they
 * live. */
static int
state_read(zinf_engine *e, float *master, float *m, float *v)
{
	size_t bytes = (size_t)e->pn * sizeof(float);
	if (e->os) {
		int rc = zinf_optstep_read(e->os, master, m, v);
		if (rc)
			return fail(e, rc, "reading the offloaded optimizer state: %s",
			            zinf_optstep_last_error(e->os));
		return 0;
	}
	if (!on_gpu(e)) {
		if (master)
			memcpy(master, master_part(e), bytes);
		if (m)
			memcpy(m, e->m, bytes);
		if (v)
			memcpy(v, e->v, bytes);
		return 0;
	}
#ifdef ZINF_HAVE_CUDA
	float *src[3] = {e->d_master, e->d_m, e->d_v}, *dst[3] = {master, m, v};
	for (int i = 0; i < 3; i++) {
		if (!dst[i])
			continue;
		cudaError_t ce = cudaMemcpy(dst[i], src[i], bytes, cudaMemcpyDeviceToHost);
		if (ce != cudaSuccess)
			return fail(e, -EIO, "copying the optimizer state from the GPU: %s",
			            cudaGetErrorString(ce));
	}
	return 0;
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

/* offload_param: the partition's fp32 master, rounded to bf16, as the store's new contents
 * (every gathered block is dropped first: they are stale). */
static int
pstore_put_master(zinf_engine *e, const float *master)
{
	uint16_t *p16 = malloc((size_t)e->pn * sizeof(uint16_t) + 1);
	if (!p16)
		return fail(e, -ENOMEM, "out of memory for the bf16 parameter copy (%lld elements)",
		            (long long)e->pn);
	for (int64_t i = 0; i < e->pn; i++)
		p16[i] = zinf_comm_f32_to_bf16(master[i]);
	int rc = zinf_zero3_quiesce(e->z3);
	if (rc) {
		free(p16);
		return fail(e, rc, "%s", e->z3->err);
	}
	zinf_zero3_invalidate(e->z3);
	rc = zinf_pstore_write(e->pstore, 0, (uint64_t)e->pn, p16);
	if (!rc)
		rc = zinf_pstore_flush(e->pstore);
	free(p16);
	if (rc)
		return fail(e, rc, "%s", zinf_pstore_error(e->pstore));
	return 0;
}

/* Sets master, m, v of the rank's partition (pn elements; m, v NULL: zeros) and the Adam step;
 * refreshes the model's parameters (all ranks: a collective at W > 1, stages 1-2). */
static int
state_write(zinf_engine *e, const float *master, const float *m, const float *v, int64_t step)
{
	size_t bytes = (size_t)e->pn * sizeof(float);
	if (e->os) {
		int rc = zinf_optstep_load(e->os, master, m, v, step);
		if (rc)
			return fail(e, rc, "writing the offloaded optimizer state: %s",
			            zinf_optstep_last_error(e->os));
	}
	if (!on_gpu(e)) {
		int rc = 0;
		if (e->pstore)
			rc = pstore_put_master(e, master);
		else if (master != master_part(e))
			memcpy(master_part(e), master, bytes);
		if (rc)
			return rc;
		if (!e->os) {
			if (m)
				memcpy(e->m, m, bytes);
			else
				memset(e->m, 0, bytes);
			if (v)
				memcpy(e->v, v, bytes);
			else
				memset(e->v, 0, bytes);
		}
		return gather_params(e);
	}
#ifdef ZINF_HAVE_CUDA
	cudaError_t ce = cudaSuccess;
	if (e->pstore) {
		int rc = pstore_put_master(e, master);
		if (rc)
			return rc;
	} else {
		uint16_t *p16 = malloc((size_t)e->pn * sizeof(uint16_t) + 1);
		if (!p16)
			return fail(e, -ENOMEM, "out of memory for the bf16 parameter copy (%lld "
			            "elements)", (long long)e->pn);
		for (int64_t i = 0; i < e->pn; i++)
			p16[i] = zinf_comm_f32_to_bf16(master[i]);
		ce = cudaMemcpy(e->d_shard16 ? e->d_shard16 : e->d_p16 + e->pb, p16,
		                (size_t)e->pn * 2, cudaMemcpyHostToDevice);
		free(p16);
	}
	if (ce == cudaSuccess && !e->os) {
		ce = cudaMemcpy(e->d_master, master, bytes, cudaMemcpyHostToDevice);
		if (ce == cudaSuccess)
			ce = m ? cudaMemcpy(e->d_m, m, bytes, cudaMemcpyHostToDevice)
			       : cudaMemset(e->d_m, 0, bytes);
		if (ce == cudaSuccess)
			ce = v ? cudaMemcpy(e->d_v, v, bytes, cudaMemcpyHostToDevice)
			       : cudaMemset(e->d_v, 0, bytes);
	}
	if (ce != cudaSuccess)
		return fail(e, -EIO, "copying the parameters to the GPU: %s", cudaGetErrorString(ce));
	return gather_params(e);
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

#ifdef ZINF_HAVE_CUDA
/* fast_init for a GPU engine with offloaded optimizer state: the seeded init is made one
 * sub-group at a time straight into the optimizer's host buffer (zinf_optstep_load_fill) and
 * its bf16 copy goes to the GPU parameters, so host memory stays O(buffer_count) instead of a
 * full fp32 copy of the model (what lets a model larger than host RAM start). */
typedef struct fast_init_ctx {
	zinf_engine *e;
	uint64_t seed;
	uint16_t *p16;
	uint64_t cap;
} fast_init_ctx;

static int
fast_init_fill(void *ctx, uint64_t off, uint64_t n, float *dst)
{
	fast_init_ctx *f = ctx;
	zinf_engine *e = f->e;
	zinf_model_init_range(&e->mc, &e->lay, f->seed, e->pb + (int64_t)off, (int64_t)n, dst);
	if (n > f->cap) {
		free(f->p16);
		if (!(f->p16 = malloc(n * sizeof(uint16_t)))) {
			f->cap = 0;
			return -ENOMEM;
		}
		f->cap = n;
	}
	for (uint64_t i = 0; i < n; i++)
		f->p16[i] = zinf_comm_f32_to_bf16(dst[i]);
	cudaError_t ce = cudaMemcpy(e->d_p16 + e->pb + off, f->p16, n * 2, cudaMemcpyHostToDevice);
	if (ce != cudaSuccess) {
		fail(e, -EIO, "fast_init: copying parameters to the GPU: %s", cudaGetErrorString(ce));
		return -EIO;
	}
	return 0;
}

static int
fast_init(zinf_engine *e, uint64_t seed)
{
	fast_init_ctx f = {.e = e, .seed = seed};
	int rc = zinf_optstep_load_fill(e->os, fast_init_fill, &f, 0);
	free(f.p16);
	if (rc)
		return fail(e, rc, "fast_init of the offloaded optimizer state: %s",
		            zinf_optstep_last_error(e->os));
	return gather_params(e);
}
#endif

/* ---- create / destroy ---------------------------------------------------------------------- */

static int
create_device(zinf_engine *e)
{
	char err[EMSG];
	size_t bytes = (size_t)e->Np * sizeof(float), pbytes = (size_t)e->pn * sizeof(float);
	if (!on_gpu(e)) {
		int rc = zinf_cpu_model_create(&e->mc, &e->lay, e->B, e->T, e->o.threads, &e->cpu,
		                               err, sizeof(err));
		if (rc)
			return fail(e, rc, "%s", err);
		if (e->z3) {
			/* the zero3 mappings: pages only for gathered blocks */
			e->params = e->z3->params;
			e->grads = e->z3->grads;
			/* offload_param: no fp32 shard; the gathers read the store's bf16 slices and
			 * the master lives with the offloaded optimizer */
			e->shard = e->pstore ? NULL : calloc((size_t)e->pn, sizeof(float));
			e->gpart = calloc((size_t)e->pn, sizeof(float));
			e->z3->shard = e->shard;
			e->z3->store = e->pstore;
			e->z3->gacc = e->gpart;
			if ((!e->shard && !e->pstore) || !e->gpart)
				return fail(e, -ENOMEM, "out of host memory for the stage 3 shard (%zu "
				            "bytes)", pbytes);
			zinf_model_hooks h = zinf_zero3_hooks(e->z3);
			zinf_cpu_model_set_hooks(e->cpu, &h);
		} else {
			e->params = calloc((size_t)e->Np, sizeof(float));
			e->grads = calloc((size_t)e->Np, sizeof(float));
		}
		if (!e->os) {
			e->m = calloc((size_t)e->pn, sizeof(float));
			e->v = calloc((size_t)e->pn, sizeof(float));
		}
		if (e->part_grads)
			e->gpart = calloc((size_t)e->pn, sizeof(float));
		if (e->grad_dtype == ZINF_DTYPE_FP16)
			e->grads16 = calloc((size_t)e->pn, sizeof(uint16_t));
		if (!e->params || !e->grads || (!e->os && (!e->m || !e->v)) ||
		    (e->part_grads && !e->gpart) ||
		    (e->grad_dtype == ZINF_DTYPE_FP16 && !e->grads16))
			return fail(e, -ENOMEM, "out of host memory for %lld parameters (%zu bytes "
			            "each for params and grads, %zu for Adam m and v)", (long long)e->N,
			            bytes, pbytes);
		return 0;
	}
	zinf_gpu_model_opts go = {.B = e->B, .T = e->T, .recompute = e->o.recompute,
	                          .device = e->o.gpu_device};
	int rc = zinf_gpu_model_create(&e->mc, &e->lay, &go, &e->gpu, err, sizeof(err));
	if (rc)
		return fail(e, rc, "%s", err);
#ifdef ZINF_HAVE_CUDA
	e->stream = (cudaStream_t)zinf_gpu_model_stream(e->gpu);
	cudaError_t ce = cudaSuccess;
	if (!e->z3) {
		ce = cudaMalloc((void **)&e->d_p16, (size_t)e->Np * 2);
		if (ce == cudaSuccess)
			ce = cudaMemset(e->d_p16, 0, (size_t)e->Np * 2);
		if (ce == cudaSuccess)
			ce = cudaMalloc((void **)&e->d_grads, bytes);
		if (ce == cudaSuccess)
			ce = cudaMemset(e->d_grads, 0, bytes);
	}
	if (ce == cudaSuccess && e->W > 1)
		ce = cudaMalloc((void **)&e->d_gather, (size_t)e->W * sizeof(zinf_grad_stats));
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&e->d_stats, sizeof(zinf_grad_stats));
	if (ce == cudaSuccess)
		ce = cudaMalloc((void **)&e->d_scratch, sizeof(zinf_grad_scratch));
	if (ce == cudaSuccess && !e->os) {
		ce = cudaMalloc((void **)&e->d_master, pbytes);
		if (ce == cudaSuccess)
			ce = cudaMalloc((void **)&e->d_m, pbytes);
		if (ce == cudaSuccess)
			ce = cudaMalloc((void **)&e->d_v, pbytes);
	}
	if (ce == cudaSuccess && e->z3) {
		/* stage 3: the packed shard and gradient accumulator only; gathered blocks live in
		 * the zero3 slots. offload_param: both off the GPU (store + pinned host gpart) */
		if (!e->pstore)
			ce = cudaMalloc((void **)&e->d_shard16, (size_t)e->pn * 2);
		if (ce == cudaSuccess) {
			if (e->pstore) {
				ce = cudaMallocHost((void **)&e->d_gpart, pbytes);
				e->gpart_host = ce == cudaSuccess;
				if (ce == cudaSuccess)
					memset(e->d_gpart, 0, pbytes);
			} else {
				ce = cudaMalloc((void **)&e->d_gpart, pbytes);
				if (ce == cudaSuccess)
					ce = cudaMemset(e->d_gpart, 0, pbytes); /* padding slots stay 0 */
			}
		}
		if (ce == cudaSuccess) {
			uint64_t fixed = gpu_used(e);
			uint64_t budget = e->o.gpu_mem_budget;
			if (budget && e->W > 1) {
				/* the slot pool's decisions must be the same on every rank (they decide
				 * which gathers run): all ranks budget for the largest fixed part */
				/* d_gather (allocated above at W > 1) as the device scratch: no allocation
				 * that could fail on one rank and leave the others in the collective */
				float mib = (float)((fixed + (1u << 20) - 1) >> 20), *d = (float *)e->d_gather;
				int cr = cudaMemcpy(d, &mib, sizeof(float), cudaMemcpyHostToDevice) ? -EIO : 0;
				int ar = zinf_comm_all_reduce(e->comm, d, d, 1, ZINF_COMM_F32, ZINF_COMM_MAX);
				if (!cr)
					cr = ar;
				if (!cr && cudaMemcpy(&mib, d, sizeof(float), cudaMemcpyDeviceToHost))
					cr = -EIO;
				if (cr)
					return fail(e, cr, "rank %d: agreeing on the GPU memory budget: %s",
					            e->rank, zinf_comm_error(e->comm));
				fixed = (uint64_t)mib << 20;
			}
			/* CUDA loads kernels on first use (lazy module loading: cuBLASLt's and ours),
			 * after this measurement; seen adding 31 MiB during the first step on an H200
			 * (GPT-2 1.5B): the slots leave room for them */
			uint64_t lazy = budget ? GPU_LAZY_RESERVE : 0;
			if (budget && fixed + lazy >= budget)
				return fail(e, -ENOMEM, "--gpu_mem %llu bytes: the engine's fixed GPU "
				            "buffers (activations, workspaces, optimizer work buffers%s) "
				            "already use %llu, and %llu are kept for kernels CUDA loads on "
				            "first use; raise --gpu_mem, lower the micro-batch or turn on "
				            "--gradient_checkpointing",
				            (unsigned long long)budget,
				            e->pstore ? "" : ", the bf16 shard and gradient partition",
				            (unsigned long long)fixed, (unsigned long long)lazy);
			const zinf_config *c = &e->cfg;
			zinf_zero3_gpu_opts zo = {
			        .stream = e->stream,
			        .shard16 = e->d_shard16,
			        .store = e->pstore,
			        .gpart = e->d_gpart,
			        .prefetch_bucket = c->prefetch_bucket_size,
			        .max_live = c->max_live_parameters,
			        .max_reuse = c->max_reuse_distance,
			        .slot_budget = budget ? budget - fixed - lazy : 0,
			        .overlap_comm = c->overlap_comm,
			};
			int zr = zinf_zero3_set_gpu(e->z3, &zo, err, sizeof(err));
			if (zr)
				return fail(e, zr, "%s", err);
			zinf_model_hooks h = zinf_zero3_hooks(e->z3);
			zinf_gpu_model_set_hooks(e->gpu, &h);
		}
	}
	if (ce == cudaSuccess && !e->z3 && e->o.gpu_mem_budget) {
		uint64_t mine = gpu_used(e);
		if (mine > e->o.gpu_mem_budget)
			return fail(e, -ENOMEM, "--gpu_mem %llu bytes: this engine already uses %llu "
			            "bytes of GPU memory (bf16 parameters, fp32 gradients%s, "
			            "activations); raise --gpu_mem, or use ZeRO stage 3 with "
			            "zero_optimization.offload_param (cpu or nvme) so that only the "
			            "layers in use are on the GPU", (unsigned long long)e->o.gpu_mem_budget,
			            (unsigned long long)mine, e->os ? "" : ", the optimizer state");
	}
	if (ce != cudaSuccess)
		return fail(e, -ENOMEM, "GPU memory for %lld parameters (bf16 params, fp32 grads%s): "
		            "%s; offload the optimizer state (zero_optimization.offload_optimizer."
		            "device cpu or nvme) or pick a smaller model",
		            (long long)e->N, e->os ? "" : ", fp32 master, m, v", cudaGetErrorString(ce));
	return 0;
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

static float *gpu_grads(zinf_engine *e);

/* Stages 0-2 at W > 1: the model's grads_done hook reduces the gradients in buckets of
 * reduce_bucket_size elements while the backward runs (zero_bucket.h). */
static int
bucket_setup(zinf_engine *e)
{
	e->zb = (zinf_zero_bucket){
	        .comm = e->comm,
	        .grads = on_gpu(e) ? gpu_grads(e) : e->grads,
	        .block_offset = e->lay.block_offset,
	        .nblocks = e->lay.nblocks,
	        .Np = e->Np,
	        .per = e->per,
	        .bucket = e->cfg.reduce_bucket_size,
	        .all_reduce = e->cfg.stage == 0,
	        .overlap = e->cfg.overlap_comm,
	};
#ifdef ZINF_HAVE_CUDA
	e->zb.stream = on_gpu(e) ? (void *)e->stream : NULL;
#endif
	int rc = zinf_zero_bucket_check(&e->zb);
	if (rc)
		return fail(e, rc, "%s", e->zb.err);
	zinf_model_hooks h = zinf_zero_bucket_hooks(&e->zb);
	if (on_gpu(e))
		zinf_gpu_model_set_hooks(e->gpu, &h);
	else
		zinf_cpu_model_set_hooks(e->cpu, &h);
	return 0;
}

int
zinf_engine_create(const zinf_model_config *mcfg, const zinf_config *cfg,
                   const zinf_engine_opts *opts, zinf_engine **out, char *err, size_t errlen)
{
	*out = NULL;
	zinf_engine_opts defaults;
	if (!opts) {
		zinf_engine_opts_init(&defaults);
		opts = &defaults;
	}
	if (!cfg->resolved) {
		snprintf(err, errlen, "%s: the config is not resolved: call zinf_config_resolve() "
		         "before zinf_engine_create()", cfg->path);
		return -EINVAL;
	}
	if (opts->world_size < 1 || opts->rank < 0 || opts->rank >= opts->world_size) {
		snprintf(err, errlen, "rank %d of world size %d: need 0 <= rank < world_size",
		         opts->rank, opts->world_size);
		return -EINVAL;
	}
	if (cfg->world_size != opts->world_size) {
		snprintf(err, errlen, "%s: resolved for %lld ranks but the engine runs %d",
		         cfg->path, (long long)cfg->world_size, opts->world_size);
		return -EINVAL;
	}
	if (opts->seq_len < 1 || opts->seq_len > mcfg->max_seq) {
		snprintf(err, errlen, "sequence length %d: must be 1..%d (the model's max_seq); "
		         "set --seq_len", opts->seq_len, mcfg->max_seq);
		return -EINVAL;
	}
	if (cfg->offload_param.device != ZINF_DEVICE_NONE) {
		const char *dev = cfg->offload_param.device == ZINF_DEVICE_NVME ? "nvme" : "cpu";
		if (cfg->offload_optimizer.device == ZINF_DEVICE_NONE) {
			snprintf(err, errlen, "%s: zero_optimization.offload_param.device %s needs "
			         "zero_optimization.offload_optimizer.device cpu or nvme too: the "
			         "optimizer writes the updated 16-bit parameters straight to their "
			         "offloaded home; add \"offload_optimizer\": {\"device\": \"%s\"}",
			         cfg->path, dev, dev);
			return -EINVAL;
		}
	}
	zinf_engine *e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e->mc = *mcfg;
	e->cfg = *cfg;
	e->o = *opts;
	if (opts->weights)
		snprintf(e->weights, sizeof(e->weights), "%s", opts->weights);
	e->o.weights = e->weights;
	e->o.fault = NULL;
	if (opts->fault) {
		e->fault = *opts->fault;
		e->o.fault = &e->fault;
	}
	e->o.run_id = NULL;
	if (opts->run_id) {
		snprintf(e->run_id, sizeof(e->run_id), "%s", opts->run_id);
		e->o.run_id = e->run_id;
	}
	e->B = (int)cfg->train_micro_batch_size_per_gpu;
	e->T = opts->seq_len;
	e->accum = cfg->gradient_accumulation_steps;
	e->grad_dtype = (!on_gpu(e) && cfg->fp16_enabled) ? ZINF_DTYPE_FP16 : ZINF_DTYPE_FP32;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	e->cpu_opts.nthreads = opts->threads > 0 ? opts->threads : (ncpu > 0 ? (int)ncpu : 1);
	e->cpu_opts.isa = ZINF_CPU_ISA_AUTO;

	int rc = zinf_model_layout_init(&e->mc, &e->lay, err, errlen);
	if (rc) {
		free(e);
		return rc;
	}
	e->N = e->lay.total_numel;
	e->W = opts->world_size;
	e->rank = opts->rank;
	rc = zinf_zero_partition_init(&e->part, (int)cfg->stage, opts->world_size, opts->rank,
	                              e->lay.block_offset, e->lay.block_numel, e->lay.nblocks,
	                              ZINF_BLOCK_ALIGN, err, errlen);
	if (rc)
		goto fail_early;
	bool poff = cfg->offload_param.device != ZINF_DEVICE_NONE;
#ifdef ZINF_HAVE_CUDA
	if (on_gpu(e)) {
		/* the device's used memory before this engine: --gpu_mem counts from here */
		size_t fr = 0, tot = 0;
		if (cudaSetDevice(opts->gpu_device) == cudaSuccess && cudaFree(0) == cudaSuccess &&
		    cudaMemGetInfo(&fr, &tot) == cudaSuccess)
			e->gpu_base = tot - fr;
		(void)cudaGetLastError();
	}
#endif
	if ((e->W == 1 && !poff) || cfg->stage == 0) {
		e->pb = 0;
		e->pn = e->per = e->Np = e->N;
	} else if (cfg->stage == 3) {
		/* (also at W 1 with offload_param: the gathers then copy from the store) */
		e->z3 = calloc(1, sizeof(*e->z3));
		if (!e->z3) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto fail_early;
		}
		/* the comm is set below, before any hook runs */
		rc = zinf_zero3_init(e->z3, &e->lay, NULL, e->W, e->rank, on_gpu(e),
		                     cfg->param_persistence_threshold, err, errlen);
		if (rc) {
			free(e->z3);
			e->z3 = NULL;
			goto fail_early;
		}
		e->pb = 0;
		e->pn = e->per = e->z3->S;
		e->Np = e->N;
	} else {
		int64_t per = (e->N + e->W - 1) / e->W;
		e->per = (per + ZINF_BLOCK_ALIGN - 1) / ZINF_BLOCK_ALIGN * ZINF_BLOCK_ALIGN;
		e->Np = e->per * e->W;
		e->pn = e->part.owned_numel;
		e->pb = e->part.nranges ? e->part.ranges[0].begin : e->N;
		if (e->part.nranges != 1 || e->pn < 1 || e->pb != (int64_t)e->rank * e->per) {
			snprintf(err, errlen, "model %s: %lld elements leave rank %d of %d no ZeRO "
			         "partition (each rank's share is %lld elements, %d-aligned); use fewer "
			         "ranks or stage 0", mcfg->name, (long long)e->N, e->rank, e->W,
			         (long long)e->per, ZINF_BLOCK_ALIGN);
			rc = -EINVAL;
			goto fail_early;
		}
	}
	e->part_grads = e->W > 1 && cfg->stage == 2;
	if (e->W > 1) {
		if (opts->comm) {
			e->comm = opts->comm;
		} else {
			zinf_comm_opts co;
			zinf_comm_opts_init(&co);
			co.backend = on_gpu(e) ? ZINF_COMM_NCCL : ZINF_COMM_SHM;
			co.rank = e->rank;
			co.world_size = e->W;
			co.device = on_gpu(e) ? opts->gpu_device : -1;
			char cerr[EMSG];
			rc = zinf_comm_init(&co, &e->comm, cerr, sizeof(cerr));
			if (rc) {
				snprintf(err, errlen, "rank %d of %d: joining the job: %s", e->rank, e->W,
				         cerr);
				goto fail_early;
			}
			e->own_comm = true;
		}
		if (e->z3)
			e->z3->comm = e->comm;
		if (zinf_comm_rank(e->comm) != e->rank || zinf_comm_world_size(e->comm) != e->W) {
			snprintf(err, errlen, "the comm is rank %d of %d, the engine was asked for rank "
			         "%d of %d: pass the comm's rank and world size", zinf_comm_rank(e->comm),
			         zinf_comm_world_size(e->comm), e->rank, e->W);
			rc = -EINVAL;
			goto fail_early;
		}
	}
	rc = zinf_lr_schedule_init(&e->sched, cfg, err, errlen);
	if (rc)
		goto fail_early;
	zinf_loss_scaler_init(&e->scaler, cfg);
	e->lr = zinf_lr_schedule_lr(&e->sched);

	if (cfg->offload_optimizer.device != ZINF_DEVICE_NONE) {
		rc = optstep_open(e);
		if (rc)
			goto fail;
	}
	if (e->z3 && cfg->offload_param.device != ZINF_DEVICE_NONE) {
		rc = pstore_open(e);
		if (rc)
			goto fail;
	}
	rc = create_device(e);
	if (rc)
		goto fail;
	if (e->W > 1 && !e->z3 && (rc = bucket_setup(e)))
		goto fail;
	if (on_gpu(e) && !cfg->bf16_enabled && e->o.rank == 0)
		zinf_log(ZINF_LOG_WARN, "engine",
		         "%s: %s: the GPU model computes in bf16 (it has no %s kernels); %s",
		         cfg->path, cfg->fp16_enabled ? "fp16.enabled is true" : "no bf16/fp16 block",
		         cfg->fp16_enabled ? "fp16" : "fp32",
		         cfg->fp16_enabled ? "fp16 dynamic loss scaling and the overflow skip still run"
		                           : "the master weights and Adam stay fp32");

	/* initial weights: the safetensors file or the family's seeded init */
#ifdef ZINF_HAVE_CUDA
	if (on_gpu(e) && e->os && !e->weights[0] && !e->z3) {
		if ((rc = fast_init(e, opts->seed)))
			goto fail;
		goto ready;
	}
#endif
	float *init = on_gpu(e) || e->os || e->z3 ? malloc((size_t)e->N * sizeof(float))
	                                          : e->params;
	if (!init) {
		rc = fail(e, -ENOMEM, "out of memory for the initial weights");
		goto fail;
	}
	memset(init, 0, (size_t)e->N * sizeof(float));
	if (e->weights[0]) {
		char lerr[EMSG];
		rc = zinf_model_load_safetensors(e->weights, &e->mc, &e->lay, init, lerr,
		                                 sizeof(lerr));
		if (rc)
			fail(e, rc, "%s", lerr);
	} else {
		zinf_model_init_params(&e->mc, &e->lay, opts->seed, init);
	}
	if (!on_gpu(e) && init != e->params && !e->z3)
		memcpy(e->params, init, (size_t)e->N * sizeof(float));
	if (!rc && e->z3) {
		/* this rank's shard of every block */
		float *packed = malloc((size_t)e->pn * sizeof(float));
		if (!packed)
			rc = fail(e, -ENOMEM, "out of memory for the stage 3 shard");
		else
			zinf_zero3_pack(e->z3, init, packed);
		if (!rc)
			rc = state_write(e, packed, NULL, NULL, 0);
		free(packed);
	} else if (!rc) {
		rc = state_write(e, init + e->pb, NULL, NULL, 0);
	}
	if (init != e->params)
		free(init);
	if (rc)
		goto fail;
#ifdef ZINF_HAVE_CUDA
ready:
#endif
	gpu_sample(e);
	e->st.loss_scale = e->scaler.cur_scale;
	e->st.lr = e->lr;
	*out = e;
	return 0;
fail:
	set_err_from(e, err, errlen);
	zinf_engine_destroy(e);
	return rc;
fail_early:
	if (e->z3)
		zinf_zero3_free(e->z3);
	free(e->z3);
	zinf_zero_partition_free(&e->part);
	zinf_model_layout_free(&e->lay);
	if (e->own_comm)
		zinf_comm_destroy(e->comm);
	free(e);
	return rc;
}

void
zinf_engine_destroy(zinf_engine *e)
{
	if (!e)
		return;
	if (e->cpu)
		zinf_cpu_model_destroy(e->cpu);
	if (e->gpu)
		zinf_gpu_model_destroy(e->gpu);
	if (e->os)
		zinf_optstep_destroy(e->os);
#ifdef ZINF_HAVE_CUDA
	cudaFree(e->d_p16);
	cudaFree(e->d_grads);
	cudaFree(e->d_master);
	cudaFree(e->d_m);
	cudaFree(e->d_v);
	cudaFree(e->d_stats);
	cudaFree(e->d_scratch);
	cudaFree(e->d_gather);
	cudaFree(e->d_shard16);
	if (e->gpart_host)
		cudaFreeHost(e->d_gpart);
	else
		cudaFree(e->d_gpart);
#endif
	if (e->z3 && !on_gpu(e))
		e->params = e->grads = NULL; /* the zero3 mappings */
	if (e->z3)
		zinf_zero3_free(e->z3);
	free(e->z3);
	zinf_pstore_destroy(e->pstore);
	free(e->shard);
	free(e->params);
	free(e->grads);
	free(e->grads16);
	free(e->gpart);
	free(e->m);
	free(e->v);
	zinf_zero_partition_free(&e->part);
	zinf_model_layout_free(&e->lay);
	if (e->own_comm)
		zinf_comm_destroy(e->comm);
	free(e);
}

/* ---- forward / backward / step --------------------------------------------------------------- */

static void *
gpu_params(zinf_engine *e)
{
#ifdef ZINF_HAVE_CUDA
	return e->d_p16;
#else
	(void)e;
	return NULL;
#endif
}

static float *
gpu_grads(zinf_engine *e)
{
#ifdef ZINF_HAVE_CUDA
	return e->d_grads;
#else
	(void)e;
	return NULL;
#endif
}

/* What a failed hook said ("" otherwise), appended to the model's message: stage 3's, or
 * the bucketed reduction's (stages 0-2 at W > 1). */
static const char *
hook_detail(const zinf_engine *e)
{
	if (e->z3)
		return e->z3->err;
	return e->W > 1 ? e->zb.err : "";
}

static int
model_forward(zinf_engine *e, const int32_t *tokens, const int32_t *targets, float *loss)
{
	int rc;
	if (!on_gpu(e)) {
		rc = zinf_cpu_forward(e->cpu, e->params, tokens, targets, loss, NULL);
		if (rc)
			return fail(e, rc, "forward: %s%s%s", zinf_cpu_model_error(e->cpu),
			            hook_detail(e)[0] ? ": " : "", hook_detail(e));
		return 0;
	}
	if (e->z3)
		zinf_zero3_begin_forward(e->z3);
	rc = zinf_gpu_forward(e->gpu, gpu_params(e), tokens, targets);
	if (!rc)
		rc = zinf_gpu_loss(e->gpu, loss);
	if (rc)
		return fail(e, rc, "forward: %s%s%s", zinf_gpu_model_error(e->gpu),
		            hook_detail(e)[0] ? ": " : "", hook_detail(e));
	return 0;
}

int
zinf_engine_forward(zinf_engine *e, const int32_t *tokens, const int32_t *targets, float *loss)
{
	double t0 = iosched_now_s();
	int rc = model_forward(e, tokens, targets, loss);
	e->have_forward = rc == 0;
	e->st.t_forward += iosched_now_s() - t0;
	return rc;
}

int
zinf_engine_eval(zinf_engine *e, const int32_t *tokens, const int32_t *targets, float *loss)
{
	e->have_forward = false; /* the activations are the eval batch's now */
	return model_forward(e, tokens, targets, loss);
}

/* Stage 2 after every backward (its gradients were just reduced to their owners by the
 * bucketed hook, zero_bucket.h; backward already divided by W): the CPU adds the rank's block
 * (grads + pb) to its partition accumulator and clears the scratch; the GPU clears everything
 * but its block, so the next backward adds to it and the next reduction sums (block + new) on
 * this rank with (0 + new) elsewhere. */
static int
stage2_accumulate(zinf_engine *e)
{
	if (!on_gpu(e)) {
		const float *src = e->grads + e->pb;
		for (int64_t i = 0; i < e->pn; i++)
			e->gpart[i] += src[i];
		memset(e->grads, 0, (size_t)e->Np * sizeof(float));
		return 0;
	}
#ifdef ZINF_HAVE_CUDA
	int64_t end = e->pb + e->per;
	cudaError_t ce = cudaMemsetAsync(e->d_grads, 0, (size_t)e->pb * sizeof(float), e->stream);
	if (ce == cudaSuccess)
		ce = cudaMemsetAsync(e->d_grads + end, 0, (size_t)(e->Np - end) * sizeof(float),
		                     e->stream);
	if (ce != cudaSuccess)
		return fail(e, -EIO, "clearing the reduced gradients: %s", cudaGetErrorString(ce));
	return 0;
#else
	return -ENODEV;
#endif
}

/* The rank's reduced gradient partition (pn elements of fp32). */
static float *
grad_part(zinf_engine *e)
{
	if (e->gpart)
		return e->gpart;
#ifdef ZINF_HAVE_CUDA
	if (e->d_gpart)
		return e->d_gpart;
#endif
	return (on_gpu(e) ? gpu_grads(e) : e->grads) + e->pb;
}

int
zinf_engine_backward(zinf_engine *e)
{
	if (!e->have_forward)
		return fail(e, -EINVAL, "backward without a forward: call zinf_engine_forward() on "
		            "the micro-batch first (once per backward)");
	/* stages 0-1 at W > 1 reduce in the accumulation boundary's backward, once */
	bool bucketed = e->W > 1 && !e->z3;
	bool reduce_now = bucketed && (e->part_grads || zinf_engine_at_boundary(e));
	if (e->zb_broken)
		return fail(e, e->zb_broken, "an earlier backward failed while its gradients were "
		            "being reduced across the ranks, which are now out of step: restart the "
		            "job (from the last checkpoint)");
	if (reduce_now && e->reduced && !e->part_grads)
		return fail(e, -EINVAL, "a second backward before zinf_engine_step(): the gradients "
		            "of this micro-step are already reduced across the ranks; call "
		            "zinf_engine_step() after every backward");
	e->have_forward = false;
	double t0 = iosched_now_s();
	float scale = (float)(e->scaler.cur_scale / ((double)e->accum * (double)e->W));
	int rc;
	if (bucketed)
		zinf_zero_bucket_arm(&e->zb, reduce_now);
	if (!on_gpu(e)) {
		rc = zinf_cpu_backward(e->cpu, e->params, e->grads, scale);
		if (rc)
			rc = fail(e, rc, "backward: %s%s%s", zinf_cpu_model_error(e->cpu),
			          hook_detail(e)[0] ? ": " : "", hook_detail(e));
	} else {
		rc = zinf_gpu_backward(e->gpu, gpu_params(e), gpu_grads(e), scale);
		if (rc)
			rc = fail(e, rc, "backward: %s%s%s", zinf_gpu_model_error(e->gpu),
			          hook_detail(e)[0] ? ": " : "", hook_detail(e));
	}
	if (rc && reduce_now) {
		/* buckets already issued may still be reducing in place: let them finish (or time
		 * out) before anything touches the gradients again, and stop this engine */
		(void)zinf_comm_wait(e->comm);
		e->zb_broken = rc;
	}
	if (!rc && reduce_now) {
		if (!zinf_zero_bucket_done(&e->zb))
			rc = fail(e, -EPROTO, "rank %d: the backward ended before its gradients were "
			          "reduced (no grads_done for block 0)", e->rank);
		else
			e->reduced = true;
		if (!rc && e->part_grads)
			rc = stage2_accumulate(e);
	}
	e->st.t_backward += iosched_now_s() - t0;
	return rc;
}

bool
zinf_engine_at_boundary(const zinf_engine *e)
{
	return (e->st.micro_steps + 1) % e->accum == 0;
}

static zinf_adam_cfg
adam_cfg(const zinf_engine *e)
{
	zinf_adam_cfg a;
	zinf_adam_cfg_init(&a);
	a.lr = (float)e->lr;
	a.beta1 = (float)e->cfg.betas[0];
	a.beta2 = (float)e->cfg.betas[1];
	a.eps = (float)e->cfg.eps;
	a.weight_decay = (float)e->cfg.weight_decay;
	a.step = e->st.optimizer_steps + 1;
	a.decay = e->cfg.optimizer_type == ZINF_OPTIMIZER_ADAMW ? ZINF_ADAM_DECAY_DECOUPLED
	                                                        : ZINF_ADAM_DECAY_L2;
	a.grad_dtype = e->grad_dtype;
	a.moment_dtype = ZINF_DTYPE_FP32;
	a.param16_dtype = ZINF_DTYPE_BF16;
	return a;
}

/* Partition statistics -> global ones (W > 1, stages 1-2): every rank's record is all-gathered
 * and summed in rank order in double (the same bits everywhere), found_inf OR-ed. Stage 0 and
 * one rank: the local statistics are already global. */
static int
combine_stats(zinf_engine *e, zinf_grad_stats *gs)
{
	if (e->W == 1 || e->cfg.stage == 0)
		return 0;
	enum { NF = sizeof(zinf_grad_stats) / sizeof(float) };
	_Static_assert(sizeof(zinf_grad_stats) % sizeof(float) == 0, "stats record in floats");
	zinf_grad_stats *all = calloc((size_t)e->W, sizeof(*all));
	if (!all)
		return fail(e, -ENOMEM, "out of memory for %d ranks' gradient statistics", e->W);
	int rc;
	if (!on_gpu(e)) {
		rc = zinf_comm_all_gather(e->comm, gs, all, NF, ZINF_COMM_F32);
	} else {
#ifdef ZINF_HAVE_CUDA
		/* nccl wants device buffers: stage the record through d_gather */
		cudaError_t ce = cudaMemcpy(e->d_gather + e->rank, gs, sizeof(*gs),
		                            cudaMemcpyHostToDevice);
		rc = ce == cudaSuccess ? 0 : -EIO;
		if (!rc)
			rc = zinf_comm_all_gather(e->comm, e->d_gather + e->rank, e->d_gather, NF,
			                          ZINF_COMM_F32);
		if (!rc && cudaMemcpy(all, e->d_gather, (size_t)e->W * sizeof(*all),
		                      cudaMemcpyDeviceToHost) != cudaSuccess)
			rc = -EIO;
#else
		rc = -ENODEV;
#endif
	}
	if (rc) {
		free(all);
		return fail(e, rc, "rank %d: all-gathering the gradient norm parts: %s", e->rank,
		            zinf_comm_error(e->comm));
	}
	double sumsq = 0;
	int32_t inf = 0;
	for (int r = 0; r < e->W; r++) {
		sumsq += all[r].sumsq;
		inf |= all[r].found_inf;
	}
	free(all);
	gs->sumsq = sumsq;
	gs->found_inf = inf;
	zinf_grad_stats_finish(gs, (float)e->scaler.cur_scale, (float)e->cfg.gradient_clipping);
	return 0;
}

/* Gradient statistics at the boundary (host copy). */
static int
grad_stats(zinf_engine *e, zinf_grad_stats *gs)
{
	float scale = (float)e->scaler.cur_scale;
	float max_norm = (float)e->cfg.gradient_clipping;
	int rc;
	const float *gp = grad_part(e);
	if (!on_gpu(e)) {
		const void *g = gp;
		if (e->grad_dtype == ZINF_DTYPE_FP16) {
			for (int64_t i = 0; i < e->pn; i++) {
				_Float16 h = (_Float16)gp[i]; /* past 65504: inf */
				memcpy(&e->grads16[i], &h, 2);
			}
			g = e->grads16;
		}
		zinf_adam_chunk ch = {.grad = g, .n = e->pn};
		rc = zinf_grad_stats_cpu(&ch, 1, e->grad_dtype, scale, max_norm, &e->cpu_opts, gs);
		if (rc)
			return fail(e, rc, "gradient norm: error %d", rc);
		return combine_stats(e, gs);
	}
#ifdef ZINF_HAVE_CUDA
	zinf_adam_chunk ch = {.grad = gp, .n = e->pn};
	rc = zinf_grad_stats_cuda(&ch, 1, ZINF_DTYPE_FP32, scale, max_norm, e->d_stats,
	                          e->d_scratch, e->stream);
	if (rc)
		return fail(e, rc, "gradient norm on the GPU: error %d", rc);
	cudaError_t ce = cudaMemcpyAsync(gs, e->d_stats, sizeof(*gs), cudaMemcpyDeviceToHost,
	                                 e->stream);
	if (ce == cudaSuccess)
		ce = cudaStreamSynchronize(e->stream);
	if (ce != cudaSuccess)
		return fail(e, -EIO, "gradient norm on the GPU: %s", cudaGetErrorString(ce));
	return combine_stats(e, gs);
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

static int
adam_apply(zinf_engine *e, const zinf_adam_cfg *a, float grad_mult)
{
	int rc;
	if (e->os) {
		const void *g;
		void *p16 = NULL;
		if (on_gpu(e)) {
			g = grad_part(e);
			p16 = (uint16_t *)gpu_params(e) + e->pb;
#ifdef ZINF_HAVE_CUDA
			if (e->d_shard16)
				p16 = e->d_shard16;
#endif
#ifdef ZINF_HAVE_CUDA
			/* the optstep runs on its own stream: the gradients must be complete */
			cudaStreamSynchronize(e->stream);
#endif
		} else {
			g = e->grad_dtype == ZINF_DTYPE_FP16 ? (const void *)e->grads16
			                                     : (const void *)grad_part(e);
		}
		if (e->pstore)
			p16 = NULL; /* streamed to the store by the sink */
		double t0 = iosched_now_s();
		rc = zinf_optstep_step(e->os, g, p16, a, grad_mult);
		if (!rc && e->pstore && (rc = zinf_pstore_flush(e->pstore)))
			return fail(e, rc, "optimizer step %lld: storing the updated 16-bit parameters: "
			            "%s; the checkpoint written last is intact: resume from it with "
			            "--resume", (long long)a->step, zinf_pstore_error(e->pstore));
		zinf_optstep_stats ss;
		zinf_optstep_get_stats(e->os, &ss);
		for (int t = 0; t < OFFLOAD_TIER_COUNT; t++) {
			if (t == OFFLOAD_TIER_GPU)
				continue;
			e->st.opt_bytes_read += ss.bytes[t][0];
			e->st.opt_bytes_written += ss.bytes[t][1];
		}
		e->st.opt_nvme_read += ss.bytes[OFFLOAD_TIER_NVME][0];
		e->st.opt_nvme_written += ss.bytes[OFFLOAD_TIER_NVME][1];
		offload_tier_usage hu;
		offload_host_pool_usage(offload_swapper_host_pool(zinf_optstep_swapper(e->os)), &hu);
		e->st.host_pinned_peak = hu.peak;
		e->st.t_io += iosched_now_s() - t0;
		if (rc)
			return fail(e, rc, "optimizer step %lld failed: %s; the checkpoint written last "
			            "is intact: resume from it with --resume",
			            (long long)a->step, zinf_optstep_last_error(e->os));
		if (!on_gpu(e) && !e->pstore) {
			/* the model computes with the offloaded master: refresh the working copy (with
			 * offload_param the sink wrote the bf16 copy the gathers read) */
			rc = zinf_optstep_read(e->os, master_part(e), NULL, NULL);
			if (rc)
				return fail(e, rc, "reading back the stepped weights: %s",
				            zinf_optstep_last_error(e->os));
		}
		return gather_params(e);
	}
	if (!on_gpu(e)) {
		zinf_adam_chunk ch = {.param = master_part(e), .m = e->m, .v = e->v,
		                      .grad = e->grad_dtype == ZINF_DTYPE_FP16
		                                      ? (const void *)e->grads16
		                                      : (const void *)grad_part(e),
		                      .n = e->pn};
		rc = zinf_adam_step_cpu(a, &ch, 1, grad_mult, &e->cpu_opts);
		if (rc)
			return fail(e, rc, "Adam step: error %d (lr %g, betas %g %g)", rc, (double)a->lr,
			            (double)a->beta1, (double)a->beta2);
		return gather_params(e);
	}
#ifdef ZINF_HAVE_CUDA
	zinf_adam_chunk ch = {.param = e->d_master, .m = e->d_m, .v = e->d_v, .grad = grad_part(e),
	                      .param16 = e->d_shard16 ? e->d_shard16 : e->d_p16 + e->pb,
	                      .n = e->pn};
	rc = zinf_adam_step_cuda(a, &ch, 1, grad_mult, NULL, e->stream);
	if (rc)
		return fail(e, rc, "Adam step on the GPU: error %d", rc);
	return gather_params(e);
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

/* The device's used memory since the engine started, peak (pools keep what they grew to). */
static void
gpu_sample(zinf_engine *e)
{
#ifdef ZINF_HAVE_CUDA
	uint64_t mine = on_gpu(e) ? gpu_used(e) : 0;
	if (mine > e->gpu_peak)
		e->gpu_peak = mine;
#else
	(void)e;
#endif
}

static int
zero_grads(zinf_engine *e)
{
	if (!on_gpu(e)) {
		if (!e->z3) /* stage 3: each block's region is cleared after its reduce-scatter */
			memset(e->grads, 0, (size_t)e->Np * sizeof(float));
		if (e->gpart)
			memset(e->gpart, 0, (size_t)e->pn * sizeof(float));
		return 0;
	}
#ifdef ZINF_HAVE_CUDA
	cudaError_t ce;
	if (e->z3) {
		/* stage 3: each block's first reduction of the next step overwrites its part of
		 * the packed accumulator (its padding slots stay 0) */
		zinf_zero3_grads_reset(e->z3);
		ce = cudaSuccess;
	} else {
		ce = cudaMemsetAsync(e->d_grads, 0, (size_t)e->Np * sizeof(float), e->stream);
	}
	if (ce != cudaSuccess)
		return fail(e, -EIO, "clearing the gradients: %s", cudaGetErrorString(ce));
#endif
	return 0;
}

int
zinf_engine_step(zinf_engine *e)
{
	if (e->zb_broken)
		return fail(e, e->zb_broken, "an earlier backward failed while its gradients were "
		            "being reduced across the ranks, which are now out of step: restart the "
		            "job (from the last checkpoint)");
	if (!zinf_engine_at_boundary(e)) {
		/* stage 2 reduced in this backward: wait for it here, so that a dead or hung peer is
		 * reported (with the comm timeout) instead of blocking the next forward's sync */
		int wr = e->reduced && e->part_grads ? zinf_comm_wait(e->comm) : 0;
		e->reduced = false;
		if (wr)
			return fail(e, wr, "rank %d: reducing the gradients: %s", e->rank,
			            zinf_comm_error(e->comm));
		e->st.micro_steps++;
		e->st.tokens += (uint64_t)e->B * (uint64_t)e->T;
		return 0;
	}
	double t0 = iosched_now_s();
	zinf_grad_stats gs;
	int rc = 0;
	if (e->W > 1 && !e->z3) {
		/* the boundary's backward reduced them (zero_bucket.h); wait here so that a failed
		 * or timed-out collective is reported now, naming it */
		if (!e->reduced)
			return fail(e, -EINVAL, "step without a backward in this micro-step: the "
			            "gradients were not reduced across the ranks; call "
			            "zinf_engine_backward() before zinf_engine_step()");
		e->reduced = false;
		if ((rc = zinf_comm_wait(e->comm)))
			rc = fail(e, rc, "rank %d: reducing the gradients: %s", e->rank,
			          zinf_comm_error(e->comm));
	}
	/* stage 3 on the GPU: every reduction done, no gather left reading the shard */
	if (!rc && e->z3 && on_gpu(e) && (rc = zinf_zero3_quiesce(e->z3)))
		rc = fail(e, rc, "%s", e->z3->err);
	if (!rc)
		rc = grad_stats(e, &gs);
	if (rc)
		return rc;
	bool overflow = gs.found_inf != 0;
	char msg[256];
	zinf_loss_scaler saved = e->scaler;
	rc = zinf_loss_scaler_update(&e->scaler, overflow, msg, sizeof(msg));
	if (rc)
		return fail(e, rc, "step %lld: %s", (long long)e->st.global_steps + 1, msg);
	if (overflow) {
		e->st.skipped_steps++;
		e->st.last = ZINF_STEP_SKIPPED;
		snprintf(e->st.last_msg, sizeof(e->st.last_msg), "step %lld: %.200s",
		         (long long)e->st.global_steps + 1, msg);
		e->st.grad_norm = NAN;
	} else {
		zinf_adam_cfg a = adam_cfg(e);
		rc = adam_apply(e, &a, gs.grad_mult);
		if (rc) {
			/* the step did not happen: the scaler must not count it */
			e->scaler = saved;
			e->st.t_step += iosched_now_s() - t0;
			return rc;
		}
		e->st.optimizer_steps++;
		e->st.last = ZINF_STEP_APPLIED;
		e->st.grad_norm = gs.norm;
		e->st.lr = e->lr;
		/* DeepSpeed steps the scheduler after each applied optimizer step */
		zinf_lr_schedule_step(&e->sched);
		if (e->sched.type != ZINF_SCHEDULER_NONE || !e->lr_overridden) {
			e->lr = zinf_lr_schedule_lr(&e->sched);
			e->lr_overridden = false;
		}
	}
	rc = zero_grads(e);
	gpu_sample(e);
	e->st.loss_scale = e->scaler.cur_scale;
	e->st.global_steps++;
	e->st.micro_steps++;
	e->st.tokens += (uint64_t)e->B * (uint64_t)e->T;
	e->st.t_step += iosched_now_s() - t0;
	return rc;
}

double
zinf_engine_get_lr(const zinf_engine *e)
{
	return e->lr;
}

void
zinf_engine_set_lr(zinf_engine *e, double lr)
{
	e->lr = lr;
	e->lr_overridden = true;
}

void
zinf_engine_get_stats(const zinf_engine *e, zinf_engine_stats *s)
{
	*s = e->st;
	if (e->W > 1 && !e->z3) {
		s->grad_buckets = (uint64_t)e->zb.flushes;
		s->grad_collectives = (uint64_t)e->zb.issued;
	}
	if (e->pstore) {
		zinf_pstore_stats ps;
		zinf_pstore_get_stats(e->pstore, &ps);
		s->param_nvme_read = ps.nvme_read;
		s->param_nvme_written = ps.nvme_written;
		s->t_param_read_wait = ps.wait_read_s;
		s->t_param_buffer_wait = ps.wait_write_s;
		s->t_param_flush = ps.wait_flush_s;
		s->t_param_write = ps.write_s;
		s->t_param_write_alloc = ps.write_alloc_s;
		s->t_param_write_copy = ps.write_copy_s;
		s->t_param_write_submit = ps.write_submit_s;
	}
}

const zinf_model_config *
zinf_engine_model(const zinf_engine *e)
{
	return &e->mc;
}

const zinf_model_layout *
zinf_engine_layout(const zinf_engine *e)
{
	return &e->lay;
}

void
zinf_engine_get_memory(const zinf_engine *e, zinf_engine_memory *m)
{
	*m = (zinf_engine_memory){0};
	uint64_t np = (uint64_t)e->Np, pn = (uint64_t)e->pn;
	m->opt_numel = e->pn;
	if (e->z3) {
		/* stage 3: the packed shard (+ padding slots) and what the gathers made resident */
		m->opt_numel = 0;
		for (int b = 0; b < e->z3->nblocks; b++)
			m->opt_numel += e->z3->own_n[b];
		if (!on_gpu(e)) {
			m->param_gathered_peak = e->z3->res_param_peak;
			/* the fp32 shard, or the bf16 store (host or NVMe) with offload_param */
			m->param_bytes = pn * (e->pstore ? 2 : sizeof(float)) + e->z3->res_param_peak;
			m->grad_bytes = pn * sizeof(float);
			m->grad_scratch_bytes = e->z3->res_grad_peak;
			if (e->grads16)
				m->grad_bytes += pn * sizeof(uint16_t);
		} else {
			/* the packed shard (GPU, or host/NVMe with offload_param), the packed gradient
			 * accumulator, and the slots the gathered blocks and gradients passed through */
			m->param_gathered_peak = e->z3->live_peak;
			m->param_bytes = pn * 2;
			m->grad_bytes = pn * sizeof(float);
			m->gpu_slot_peak = e->z3->slot_peak;
		}
	} else if (!on_gpu(e)) {
		m->param_bytes = np * sizeof(float);
		if (e->gpart) {
			m->grad_bytes = pn * sizeof(float);
			m->grad_scratch_bytes = np * sizeof(float);
		} else {
			m->grad_bytes = np * sizeof(float);
		}
		if (e->grads16)
			m->grad_bytes += pn * sizeof(uint16_t);
	} else {
		m->param_bytes = np * 2;
		m->grad_bytes = np * sizeof(float);
	}
	if (e->os) {
		int t = e->cfg.offload_optimizer.device == ZINF_DEVICE_NVME ? OFFLOAD_TIER_NVME
		                                                             : OFFLOAD_TIER_HOST;
		m->opt_bytes[t] = 3 * pn * sizeof(float);
	} else if (!on_gpu(e)) {
		m->opt_bytes[OFFLOAD_TIER_HOST] = 2 * pn * sizeof(float);
	} else {
		m->opt_bytes[OFFLOAD_TIER_GPU] = 3 * pn * sizeof(float);
	}
	m->gpu_used_peak = e->gpu_peak;
	if (e->pstore) {
		zinf_pstore_stats ps;
		zinf_pstore_get_stats(e->pstore, &ps);
		m->param_tier = e->cfg.offload_param.device == ZINF_DEVICE_NVME ? 2 : 1;
		m->param_host_peak = ps.host_peak;
		m->param_nvme_read = ps.nvme_read;
		m->param_nvme_written = ps.nvme_written;
	}
}

int
zinf_engine_master(zinf_engine *e, float *out)
{
	if (e->z3) {
		/* every rank's packed fp32 shard, gathered block by block (a collective) */
		float *packed = malloc((size_t)e->pn * sizeof(float));
		if (!packed)
			return fail(e, -ENOMEM, "out of memory for the master shard");
		int rc = state_read(e, packed, NULL, NULL);
		if (!rc && (rc = zinf_zero3_gather_full(e->z3, packed, out)))
			fail(e, rc, "%s", e->z3->err);
		free(packed);
		return rc;
	}
	if (!on_gpu(e)) {
		if (e->os && e->W == 1)
			return state_read(e, out, NULL, NULL);
		/* the parameter copy is the gathered fp32 master (refreshed after every step) */
		memcpy(out, e->params, (size_t)e->N * sizeof(float));
		return 0;
	}
	if (e->W == 1 || e->cfg.stage == 0)
		return state_read(e, out, NULL, NULL);
#ifdef ZINF_HAVE_CUDA
	/* fp32 partitions gathered on the GPU (nccl wants device buffers) */
	float *host = calloc((size_t)e->per, sizeof(float)), *d_all = NULL;
	if (!host)
		return fail(e, -ENOMEM, "out of memory for the master partition");
	int rc = state_read(e, host, NULL, NULL);
	cudaError_t ce = cudaSuccess;
	if (!rc)
		ce = cudaMalloc((void **)&d_all, (size_t)e->Np * sizeof(float));
	if (!rc && ce == cudaSuccess)
		ce = cudaMemcpy(d_all + e->pb, host, (size_t)e->per * sizeof(float),
		                cudaMemcpyHostToDevice);
	if (!rc && ce != cudaSuccess)
		rc = fail(e, -EIO, "gathering the fp32 master: %s", cudaGetErrorString(ce));
	if (!rc) {
		rc = zinf_comm_all_gather(e->comm, d_all + e->pb, d_all, (size_t)e->per,
		                          ZINF_COMM_F32);
		if (rc)
			fail(e, rc, "rank %d: all-gathering the fp32 master: %s", e->rank,
			     zinf_comm_error(e->comm));
	}
	if (!rc && cudaMemcpy(out, d_all, (size_t)e->N * sizeof(float), cudaMemcpyDeviceToHost) !=
	                   cudaSuccess)
		rc = fail(e, -EIO, "copying the gathered fp32 master to the host");
	cudaFree(d_all);
	free(host);
	return rc;
#else
	return fail(e, -ENODEV, "GPU engine in a build without CUDA");
#endif
}

int
zinf_engine_micro_batch(const zinf_engine *e)
{
	return e->B;
}

int
zinf_engine_seq_len(const zinf_engine *e)
{
	return e->T;
}

int64_t
zinf_engine_accum_steps(const zinf_engine *e)
{
	return e->accum;
}

/* ---- checkpoints ------------------------------------------------------------------------ */

static const char *
precision_name(const zinf_config *c)
{
	return c->fp16_enabled ? "fp16" : c->bf16_enabled ? "bf16" : "fp32";
}

static const char *const sched_names[] = {"none", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR"};

static char *
manifest_json(const zinf_engine *e, const char *tag, const zinf_ckpt_part *parts)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	const zinf_loss_scaler *ls = &e->scaler;
	fprintf(f,
	        "{\n"
	        "  \"format\": \"zinf-checkpoint\",\n"
	        "  \"version\": 1,\n"
	        "  \"tag\": \"%s\",\n"
	        "  \"global_steps\": %lld,\n"
	        "  \"micro_steps\": %lld,\n"
	        "  \"optimizer_steps\": %lld,\n"
	        "  \"skipped_steps\": %lld,\n"
	        "  \"tokens\": %llu,\n"
	        "  \"world_size\": %d,\n"
	        "  \"zero_stage\": %lld,\n"
	        "  \"model\": {\"name\": \"%s\", \"arch\": \"%s\", \"total_numel\": %lld, "
	        "\"n_params\": %lld},\n"
	        "  \"precision\": \"%s\",\n"
	        "  \"train_micro_batch_size_per_gpu\": %d,\n"
	        "  \"gradient_accumulation_steps\": %lld,\n"
	        "  \"seq_len\": %d,\n"
	        "  \"loss_scaler\": {\"dynamic\": %s, \"cur_scale\": %.17g, \"cur_hysteresis\": %lld, "
	        "\"cur_iter\": %lld, \"last_overflow_iter\": %lld},\n"
	        "  \"lr_scheduler\": {\"type\": \"%s\", \"last_batch_iteration\": %lld},\n"
	        "  \"lr\": %.17g,\n"
	        "  \"lr_overridden\": %s,\n  ",
	        tag, (long long)e->st.global_steps, (long long)e->st.micro_steps,
	        (long long)e->st.optimizer_steps, (long long)e->st.skipped_steps,
	        (unsigned long long)e->st.tokens, e->o.world_size, (long long)e->cfg.stage,
	        e->mc.name, e->mc.arch == ZINF_ARCH_GPT2 ? "gpt2" : "llama", (long long)e->N,
	        (long long)e->lay.n_params, precision_name(&e->cfg), e->B, (long long)e->accum, e->T,
	        ls->dynamic ? "true" : "false", ls->cur_scale, (long long)ls->cur_hysteresis,
	        (long long)ls->cur_iter, (long long)ls->last_overflow_iter,
	        sched_names[e->sched.type], (long long)e->sched.last_batch_iteration, e->lr,
	        e->lr_overridden ? "true" : "false");
	/* the rank files and the elements each holds */
	zinf_ckpt_parts_json(f, parts, e->W);
	fprintf(f, "\n}\n");
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Several ranks agree on a failure: an all-reduce MAX of a 0/1 flag (a device buffer for
 * nccl). *any: some rank failed. World size 1: *any = failed. */
static int
ckpt_agree(zinf_engine *e, bool failed, bool *any)
{
	*any = failed;
	if (e->W == 1)
		return 0;
	float f = failed ? 1.0f : 0.0f;
	int rc;
	if (!on_gpu(e)) {
		rc = zinf_comm_all_reduce(e->comm, &f, &f, 1, ZINF_COMM_F32, ZINF_COMM_MAX);
	} else {
#ifdef ZINF_HAVE_CUDA
		float *d = NULL;
		rc = cudaMalloc((void **)&d, sizeof(float)) == cudaSuccess &&
		                     cudaMemcpy(d, &f, sizeof(f), cudaMemcpyHostToDevice) == cudaSuccess
		             ? 0
		             : -EIO;
		if (!rc)
			rc = zinf_comm_all_reduce(e->comm, d, d, 1, ZINF_COMM_F32, ZINF_COMM_MAX);
		if (!rc && cudaMemcpy(&f, d, sizeof(f), cudaMemcpyDeviceToHost) != cudaSuccess)
			rc = -EIO;
		cudaFree(d);
#else
		rc = -ENODEV;
#endif
	}
	if (rc)
		return fail(e, rc, "rank %d of %d: agreeing on the checkpoint with the other ranks: "
		            "%s", e->rank, e->W, zinf_comm_error(e->comm));
	*any = f != 0.0f;
	return 0;
}

/* ckpt_agree on this rank's rc: returns it, or -EIO naming `what` when only another rank
 * failed (`where` names the checkpoint). */
static int
ckpt_sync(zinf_engine *e, int rc, const char *where, const char *what)
{
	bool any = false;
	if (ckpt_agree(e, rc != 0, &any))
		return rc ? rc : -EIO;
	if (any && !rc)
		return fail(e, -EIO, "%s: %s (that rank's message names the cause)", where, what);
	return rc;
}

/* The optimizer elements the rank owns: pn, less stage 3's per-block padding slots (the
 * count its shard file holds, the manifest's numel). */
static int64_t
owned_numel(const zinf_engine *e)
{
	int64_t owned = e->pn;
	for (int b = 0; e->z3 && b < e->z3->nblocks; b++)
		owned -= e->z3->per[b] - e->z3->own_n[b];
	return owned;
}

/* Every rank writes rank<R>.bin (its partition of master, m, v: the elements the manifest's
 * partition table lists, in its order; at stage 0 only rank 0 holds the state; stage 3 at
 * W > 1 leaves its packed shard's padding slots out) into one staging folder; once all have,
 * rank 0 writes the manifest (and the export) and commits. World size > 1: a collective, every rank calls it. */
int
zinf_engine_save(zinf_engine *e, const char *dir, const char *tag, const void *client,
                 size_t client_len, bool export16)
{
	if (e->st.micro_steps % e->accum != 0)
		return fail(e, -EBUSY, "checkpoint at micro-step %lld: inside a gradient "
		            "accumulation window of %lld micro-steps; save right after a boundary "
		            "step", (long long)e->st.micro_steps, (long long)e->accum);
	double t0 = iosched_now_s();
	char tagbuf[64], tmp[4096] = "", err[EMSG];
	if (!tag) {
		snprintf(tagbuf, sizeof(tagbuf), "global_step%lld", (long long)e->st.global_steps);
		tag = tagbuf;
	}
	char where[4200];
	snprintf(where, sizeof(where), "checkpoint %s/%s", dir, tag);
	bool lead = e->rank == 0;
	bool holds = e->cfg.stage > 0 || lead; /* stage 0: rank 0 stores the (identical) state */
	bool exporting = export16 || e->cfg.gather_16bit_weights_on_model_save;
	zinf_ckpt_part *parts = NULL;
	float *master = NULL, *m = NULL, *v = NULL, *full = NULL;
	char *manifest = NULL;
	int rc = zinf_ckpt_parts(&e->lay, (int)e->cfg.stage, e->W, &parts, err, sizeof(err));
	if (rc)
		return fail(e, rc, "checkpoint %s/%s: %s", dir, tag, err);
	/* the shard holds the table's elements, owned only; stage 3 at W > 1 keeps them packed
	 * per block with padding (pn = S slots), compacted below */
	size_t n = holds ? (size_t)parts[e->rank].numel : 0, bytes = n * sizeof(float);
	size_t have = holds ? (size_t)e->pn * sizeof(float) : 0;
	int64_t owned = owned_numel(e);
	if (holds && (int64_t)n != owned) {
		rc = fail(e, -EINVAL, "checkpoint %s/%s: rank %d owns %lld optimizer elements but "
		          "its ZeRO partition table says %lld", dir, tag, e->rank, (long long)owned,
		          (long long)n);
	} else {
		/* the staging folder: rank 0 makes it, the others write into it once it exists */
		if (e->W == 1)
			rc = zinf_ckpt_begin(dir, tag, tmp, sizeof(tmp), err, sizeof(err));
		else if (lead)
			rc = zinf_ckpt_begin_shared(dir, tag, tmp, sizeof(tmp), err, sizeof(err));
		else
			rc = zinf_ckpt_staging_path(dir, tag, tmp, sizeof(tmp), err, sizeof(err));
		if (rc)
			fail(e, rc, "checkpoint %s/%s: %s", dir, tag, err);
	}
	if ((rc = ckpt_sync(e, rc, where, "another rank could not start the checkpoint")))
		goto out_abort;
	master = malloc((have > bytes ? have : bytes) + 1);
	m = malloc((have > bytes ? have : bytes) + 1);
	v = malloc((have > bytes ? have : bytes) + 1);
	manifest = lead ? manifest_json(e, tag, parts) : NULL;
	if (!master || !m || !v || (lead && !manifest)) {
		rc = fail(e, -ENOMEM, "out of memory for the checkpoint's host copies (%zu bytes)",
		          3 * bytes);
	} else if (holds && (rc = state_read(e, master, m, v))) {
		/* e->err is set */
	} else {
		if (holds && e->z3) {
			zinf_zero3_compact(e->z3, master);
			zinf_zero3_compact(e->z3, m);
			zinf_zero3_compact(e->z3, v);
		}
		zinf_ckpt_section sec[4] = {
		        {"fp32_master", master, bytes},
		        {"exp_avg", m, bytes},
		        {"exp_avg_sq", v, bytes},
		        {"client", client ? client : "", client ? client_len : 0},
		};
		rc = zinf_ckpt_shard_write(tmp, e->rank, sec, 4, err, sizeof(err));
		if (rc)
			fail(e, rc, "checkpoint %s/%s: %s", dir, tag, err);
	}
	/* the export: the gathered fp32 master (a collective on GPU ranks and at stage 3),
	 * written by rank 0 */
	bool collective = e->W > 1 && (on_gpu(e) || e->z3);
	if (!rc && exporting && (lead || collective)) {
		full = malloc((size_t)e->N * sizeof(float));
		if (!full)
			rc = fail(e, -ENOMEM, "out of memory for the exported weights (%lld floats)",
			          (long long)e->N);
	}
	if (exporting && collective) {
		/* the gather is collective: agree first so no rank enters it alone */
		if ((rc = ckpt_sync(e, rc, where, "another rank failed to write its shard")))
			goto out_abort;
	}
	if (!rc && full)
		rc = zinf_engine_master(e, full);
	if (!rc && lead) {
		rc = zinf_ckpt_write_file(tmp, "manifest.json", manifest, strlen(manifest), err,
		                          sizeof(err));
		if (!rc) {
			char path[4200];
			snprintf(path, sizeof(path), "%s/model_config.json", tmp);
			rc = zinf_model_config_save(&e->mc, path, err, sizeof(err));
		}
		if (!rc && exporting) {
			char path[4200];
			snprintf(path, sizeof(path), "%s/model.safetensors", tmp);
			rc = zinf_model_save_safetensors(path, &e->mc, &e->lay, full, ZINF_SAVE_BF16,
			                                 err, sizeof(err));
			if (!rc) {
				snprintf(path, sizeof(path), "%s/config.json", tmp);
				rc = zinf_model_config_save(&e->mc, path, err, sizeof(err));
			}
		}
		if (rc)
			fail(e, rc, "checkpoint %s/%s: %s", dir, tag, err);
	}
	/* every shard is in place (or some rank failed): rank 0 commits or removes the folder */
	if ((rc = ckpt_sync(e, rc, where, "another rank failed to write its part; nothing "
	                    "was committed")))
		goto out_abort;
	if (lead) {
		rc = zinf_ckpt_commit(dir, tag, tmp, err, sizeof(err));
		if (rc)
			fail(e, rc, "checkpoint %s/%s: %s", dir, tag, err);
	}
	if (!(rc = ckpt_sync(e, rc, where, "rank 0 could not commit it")))
		goto out;
out_abort:
	if (lead)
		zinf_ckpt_abort(tmp);
out:
	zinf_ckpt_parts_free(parts, e->W);
	free(master);
	free(m);
	free(v);
	free(full);
	free(manifest);
	e->st.t_io += iosched_now_s() - t0;
	return rc;
}

static int
json_num(zinf_engine *e, const cJSON *obj, const char *key, const char *path, double *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsNumber(it))
		return fail(e, -EINVAL, "%s: \"%s\" missing or not a number", path, key);
	*out = it->valuedouble;
	return 0;
}

/* The elements this rank's shard holds (the manifest's partition table) must be the ones
 * this engine owns. */
static int
load_check_partition(zinf_engine *e, const char *folder)
{
	zinf_ckpt_manifest man;
	zinf_ckpt_part *mine = NULL;
	char err[EMSG], a[256], b[256];
	int rc = zinf_ckpt_manifest_read(folder, &man, err, sizeof(err));
	if (rc)
		return fail(e, rc, "%s", err);
	rc = zinf_ckpt_parts(&e->lay, (int)e->cfg.stage, e->W, &mine, err, sizeof(err));
	if (rc) {
		fail(e, rc, "%s", err);
	} else if (!zinf_ckpt_part_equal(&man.parts[e->rank], &mine[e->rank])) {
		zinf_ckpt_part_str(&man.parts[e->rank], a, sizeof(a));
		zinf_ckpt_part_str(&mine[e->rank], b, sizeof(b));
		rc = fail(e, -EINVAL, "%s/manifest.json: rank %d's shard holds elements %s (ZeRO "
		          "stage %d), this run's rank %d owns %s (stage %lld): resume with "
		          "zero_optimization.stage %d, or consolidate the weights (zinf ckpt "
		          "consolidate) and start from them", folder, e->rank, a, man.stage, e->rank,
		          b, (long long)e->cfg.stage, man.stage);
	}
	zinf_ckpt_parts_free(mine, e->W);
	zinf_ckpt_manifest_free(&man);
	return rc;
}

int
zinf_engine_load(zinf_engine *e, const char *dir, void **client, size_t *client_len)
{
	if (client)
		*client = NULL;
	if (client_len)
		*client_len = 0;
	double t0 = iosched_now_s();
	char folder[4096], path[4200], err[EMSG];
	void *bufs[4] = {0};
	uint64_t lens[4] = {0};
	double num = 0, v[12];
	zinf_engine_stats st = e->st;
	char *text = NULL;
	cJSON *j = NULL;
	/* every failure before the state is written goes to out_agree: the other ranks learn of it
	 * there instead of waiting in the parameter gather */
	int rc = zinf_ckpt_find(dir, folder, sizeof(folder), err, sizeof(err));
	if (rc) {
		fail(e, rc, "%s", err);
		goto out_agree;
	}
	snprintf(path, sizeof(path), "%s/manifest.json", folder);
	rc = zinf_ckpt_read_text(path, &text, err, sizeof(err));
	if (rc) {
		fail(e, rc, "%s", err);
		goto out_agree;
	}
	j = cJSON_Parse(text);
	free(text);
	if (!j) {
		rc = fail(e, -EINVAL, "%s: not valid JSON", path);
		goto out_agree;
	}
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
	if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "zinf-checkpoint")) {
		rc = fail(e, -EINVAL, "%s: \"format\" is not \"zinf-checkpoint\"", path);
		goto out_agree;
	}
	/* what must match this engine */
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
	const cJSON *prec = cJSON_GetObjectItemCaseSensitive(j, "precision");
	if ((rc = json_num(e, model, "total_numel", path, &num)))
		goto out_agree;
	if ((int64_t)num != e->N) {
		rc = fail(e, -EINVAL, "%s: model.total_numel %lld, this model has %lld: resume with "
		          "the --model the checkpoint was trained with", path, (long long)num,
		          (long long)e->N);
		goto out_agree;
	}
	if (!cJSON_IsString(prec) || strcmp(prec->valuestring, precision_name(&e->cfg))) {
		rc = fail(e, -EINVAL, "%s: precision %s, the config says %s: use the same fp16/bf16 "
		          "blocks as the saved run", path,
		          cJSON_IsString(prec) ? prec->valuestring : "?", precision_name(&e->cfg));
		goto out_agree;
	}
	if ((rc = json_num(e, j, "world_size", path, &num)))
		goto out_agree;
	if ((int)num != e->o.world_size) {
		rc = fail(e, -EINVAL, "%s: saved by %d ranks, resuming on %d: resume with %d ranks "
		          "(--num_gpus %d), or start a new run from the weights (zinf ckpt "
		          "consolidate %s --out model.safetensors, then --model with them)", path,
		          (int)num, e->o.world_size, (int)num, (int)num, dir);
		goto out_agree;
	}
	if ((rc = load_check_partition(e, folder)))
		goto out_agree;
	if ((rc = json_num(e, j, "gradient_accumulation_steps", path, &num)))
		goto out_agree;
	if ((int64_t)num != e->accum) {
		rc = fail(e, -EINVAL, "%s: gradient_accumulation_steps %lld, the config says %lld: "
		          "an accumulation window would change mid-run", path, (long long)num,
		          (long long)e->accum);
		goto out_agree;
	}

	/* this rank's client bytes; the state from its own shard (stage 0: rank 0's, which
	 * holds the state every rank shares) */
	static const char *const names[4] = {"fp32_master", "exp_avg", "exp_avg_sq", "client"};
	int from = e->cfg.stage == 0 ? 0 : e->rank;
	rc = zinf_ckpt_shard_read(folder, from, names, from == e->rank ? 4 : 3, bufs, lens, err,
	                          sizeof(err));
	if (!rc && from != e->rank)
		rc = zinf_ckpt_shard_read(folder, e->rank, names + 3, 1, bufs + 3, lens + 3, err,
		                          sizeof(err));
	if (rc) {
		fail(e, rc, "%s", err);
		goto out_agree;
	}
	/* the shard holds the owned elements (the table's numel); stage 3 at W > 1 spreads them
	 * back into the packed per-block slots (pn = S, padding 0) */
	int64_t owned = owned_numel(e);
	for (int i = 0; i < 3; i++) {
		if (lens[i] != (uint64_t)owned * sizeof(float)) {
			rc = fail(e, -EINVAL, "%s/rank%d.bin: section %s has %llu bytes, want %llu",
			          folder, from, names[i], (unsigned long long)lens[i],
			          (unsigned long long)owned * sizeof(float));
			goto out_agree;
		}
		if (!e->z3)
			continue;
		float *grown = realloc(bufs[i], (size_t)e->pn * sizeof(float));
		if (!grown) {
			rc = fail(e, -ENOMEM, "out of memory for the ZeRO stage 3 shard (%lld floats)",
			          (long long)e->pn);
			goto out_agree;
		}
		bufs[i] = grown;
		zinf_zero3_expand(e->z3, grown);
	}
	const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "loss_scaler");
	const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "lr_scheduler");
	if ((rc = json_num(e, j, "global_steps", path, &v[0])) ||
	    (rc = json_num(e, j, "micro_steps", path, &v[1])) ||
	    (rc = json_num(e, j, "optimizer_steps", path, &v[2])) ||
	    (rc = json_num(e, j, "skipped_steps", path, &v[3])) ||
	    (rc = json_num(e, j, "tokens", path, &v[4])) ||
	    (rc = json_num(e, ls, "cur_scale", path, &v[5])) ||
	    (rc = json_num(e, ls, "cur_hysteresis", path, &v[6])) ||
	    (rc = json_num(e, ls, "cur_iter", path, &v[7])) ||
	    (rc = json_num(e, ls, "last_overflow_iter", path, &v[8])) ||
	    (rc = json_num(e, sc, "last_batch_iteration", path, &v[9])) ||
	    (rc = json_num(e, j, "lr", path, &v[10])))
		goto out_agree;
out_agree:
	/* state_write gathers the parameters (a collective): only when every rank got here */
	if ((rc = ckpt_sync(e, rc, dir, "another rank could not load its part of the checkpoint")))
		goto out;
	rc = state_write(e, bufs[0], bufs[1], bufs[2], (int64_t)v[2]);
	if (rc)
		goto out;
	rc = zero_grads(e);
	if (rc)
		goto out;
	st.global_steps = (int64_t)v[0];
	st.micro_steps = (int64_t)v[1];
	st.optimizer_steps = (int64_t)v[2];
	st.skipped_steps = (int64_t)v[3];
	st.tokens = (uint64_t)v[4];
	st.last = ZINF_STEP_NONE;
	e->st = st;
	e->reduced = false; /* the loaded state has no gradients of this micro-step */
	e->scaler.cur_scale = v[5];
	e->scaler.cur_hysteresis = (int64_t)v[6];
	e->scaler.cur_iter = (int64_t)v[7];
	e->scaler.last_overflow_iter = (int64_t)v[8];
	e->sched.last_batch_iteration = (int64_t)v[9];
	e->lr = v[10];
	e->lr_overridden = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "lr_overridden"));
	e->st.loss_scale = e->scaler.cur_scale;
	e->st.lr = e->lr;
	e->have_forward = false;
	if (client) {
		*client = bufs[3];
		bufs[3] = NULL;
	}
	if (client_len)
		*client_len = (size_t)lens[3];
out:
	for (int i = 0; i < 4; i++)
		free(bufs[i]);
	cJSON_Delete(j);
	e->st.t_io += iosched_now_s() - t0;
	return rc;
}
