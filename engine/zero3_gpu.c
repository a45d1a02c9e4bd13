/* ZeRO stage 3 on the GPU: gathered blocks live in a pool of device slots, gradients are
 * reduced block by block into the packed accumulator, and gathers run ahead of the compute
 * stream in the recorded block order. See zero3.h ("GPU"). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zero3.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/ops_cuda.h"
#include "zero3_order.h"

typedef struct z3slot {
	void *p;
	size_t cap;
	cudaEvent_t ev; /* recorded by the last user when it let go; the next user waits */
	bool ev_set, used;
} z3slot;

enum { B_NONE = 0, B_LIVE = 1 };

struct zinf_zero3_gpu {
	zinf_zero3_gpu_opts o;
	cudaStream_t cs, gs; /* compute stream (the model's), gather/reduce stream */
	bool own_gs;         /* W 1: gs is ours; W > 1 it is the NCCL comm's */
	cudaEvent_t cs_mark, gs_mark; /* one-off orderings between the two streams */
	z3slot *slots;
	int nslots, cap_slots;
	/* per block */
	int *pslot, *gslot;  /* its parameter / gradient slot, -1: none */
	unsigned char *pst;  /* B_LIVE: gathered (or its gather enqueued) */
	bool *inuse;         /* between params_needed and params_done */
	bool *h2d;           /* store: its host slice is being copied to the GPU (h2d_ev) */
	bool *preq;          /* store: it holds (or will hold) a store buffer we must give back */
	bool *fresh;         /* its first reduction of this step overwrites gpart */
	cudaEvent_t *ready, *h2d_ev; /* gather complete / host->GPU copy complete (on gs) */
	int64_t *slot_elems; /* W * per */
	zinf_z3_order ord;   /* the recorded block order (zero3_order.h) */
	bool *keep;          /* scratch: blocks kept for reuse */
	uint64_t slot_bytes, live_elems;
};

#define GCU(z, call, what)                                                                   \
	do {                                                                                 \
		cudaError_t e_ = (call);                                                     \
		if (e_ != cudaSuccess) {                                                     \
			(void)cudaGetLastError();                                            \
			return zinf_zero3_fail(z, -EIO, "ZeRO stage 3: %s: %s", what,                  \
			             cudaGetErrorString(e_));                                \
		}                                                                            \
	} while (0)

int
zinf_zero3_gpu_init(zinf_zero3 *z, const zinf_zero3_gpu_opts *o, char *err, size_t errlen)
{
	zinf_zero3_gpu *g = calloc(1, sizeof(*g));
	int nb = z->nblocks;
	if (!g)
		goto oom;
	z->g = g;
	g->o = *o;
	g->cs = (cudaStream_t)o->stream;
	g->pslot = malloc((size_t)nb * sizeof(int));
	g->gslot = malloc((size_t)nb * sizeof(int));
	g->pst = calloc((size_t)nb, 1);
	g->inuse = calloc((size_t)nb, sizeof(bool));
	g->h2d = calloc((size_t)nb, sizeof(bool));
	g->preq = calloc((size_t)nb, sizeof(bool));
	g->fresh = calloc((size_t)nb, sizeof(bool));
	g->ready = calloc((size_t)nb, sizeof(cudaEvent_t));
	g->h2d_ev = calloc((size_t)nb, sizeof(cudaEvent_t));
	g->slot_elems = calloc((size_t)nb, sizeof(int64_t));
	g->keep = calloc((size_t)nb, sizeof(bool));
	int orc = zinf_z3_order_init(&g->ord, 4 * nb + 8);
	if (!g->pslot || !g->gslot || !g->pst || !g->inuse || !g->h2d || !g->preq || !g->fresh || !g->ready ||
	    !g->h2d_ev || !g->slot_elems || !g->keep || orc)
		goto oom;
	for (int b = 0; b < nb; b++) {
		g->pslot[b] = g->gslot[b] = -1;
		g->fresh[b] = true;
		g->slot_elems[b] = z->per[b] * z->W;
		if (cudaEventCreateWithFlags(&g->ready[b], cudaEventDisableTiming) != cudaSuccess ||
		    cudaEventCreateWithFlags(&g->h2d_ev[b], cudaEventDisableTiming) != cudaSuccess) {
			snprintf(err, errlen, "ZeRO stage 3: creating CUDA events failed");
			return -EIO;
		}
	}
	if (cudaEventCreateWithFlags(&g->cs_mark, cudaEventDisableTiming) != cudaSuccess ||
	    cudaEventCreateWithFlags(&g->gs_mark, cudaEventDisableTiming) != cudaSuccess) {
		snprintf(err, errlen, "ZeRO stage 3: creating CUDA events failed");
		return -EIO;
	}
	if (z->W > 1) {
		g->gs = (cudaStream_t)zinf_comm_stream(z->comm);
	} else {
		if (cudaStreamCreateWithFlags(&g->gs, cudaStreamNonBlocking) != cudaSuccess) {
			snprintf(err, errlen, "ZeRO stage 3: creating the gather stream failed");
			return -EIO;
		}
		g->own_gs = true;
	}
	return 0;
oom:
	snprintf(err, errlen, "ZeRO stage 3: out of memory for %d blocks' GPU state", nb);
	return -ENOMEM;
}

void
zinf_zero3_gpu_free(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	if (!g)
		return;
	if (g->gs)
		cudaStreamSynchronize(g->gs);
	for (int i = 0; i < g->nslots; i++) {
		cudaFree(g->slots[i].p);
		cudaEventDestroy(g->slots[i].ev);
	}
	for (int b = 0; b < z->nblocks && g->ready; b++) {
		if (g->ready[b])
			cudaEventDestroy(g->ready[b]);
		if (g->h2d_ev && g->h2d_ev[b])
			cudaEventDestroy(g->h2d_ev[b]);
	}
	if (g->cs_mark)
		cudaEventDestroy(g->cs_mark);
	if (g->gs_mark)
		cudaEventDestroy(g->gs_mark);
	if (g->own_gs)
		cudaStreamDestroy(g->gs);
	free(g->slots);
	free(g->pslot);
	free(g->gslot);
	free(g->pst);
	free(g->inuse);
	free(g->h2d);
	free(g->preq);
	free(g->fresh);
	free(g->ready);
	free(g->h2d_ev);
	free(g->slot_elems);
	zinf_z3_order_free(&g->ord);
	free(g->keep);
	free(g);
	z->g = NULL;
}

/* ---- slots ---- */

static void release_params(zinf_zero3 *z, int b);

/* Next use of block b after the cursor in the recorded order (cyclic): the elements gathered
 * in between, or -1 when b does not come again. */
static int64_t
reuse_distance(const zinf_zero3 *z, int b)
{
	return zinf_z3_order_reuse_distance(&z->g->ord, b, z->g->slot_elems);
}

/* The block kept for reuse (live, not in use, not persistent) whose next use is farthest, or
 * -1. */
static int
reuse_victim(const zinf_zero3 *z)
{
	const zinf_zero3_gpu *g = z->g;
	for (int b = 0; b < z->nblocks; b++)
		g->keep[b] = g->pst[b] == B_LIVE && !g->inuse[b] && !z->persist[b];
	return zinf_z3_order_victim(&g->ord, z->nblocks, g->keep, g->slot_elems);
}

/* Blocks kept for reuse (live, not in use, not persistent) go, the farthest next use first,
 * until `need` more bytes fit the budget. */
static void
shed(zinf_zero3 *z, uint64_t need)
{
	zinf_zero3_gpu *g = z->g;
	for (;;) {
		if (g->o.slot_budget == 0 || g->slot_bytes + need <= g->o.slot_budget)
			return;
		/* a free slot can go back to the device */
		int fs = -1;
		for (int i = 0; i < g->nslots; i++)
			if (!g->slots[i].used && g->slots[i].p && (fs < 0 || g->slots[i].cap >
			                                                     g->slots[fs].cap))
				fs = i;
		if (fs >= 0) {
			z3slot *s = &g->slots[fs];
			if (s->ev_set)
				cudaEventSynchronize(s->ev);
			cudaFree(s->p);
			g->slot_bytes -= s->cap;
			s->p = NULL;
			s->cap = 0;
			s->ev_set = false;
			continue;
		}
		int victim = reuse_victim(z);
		if (victim < 0)
			return;
		release_params(z, victim);
	}
}

/* Blocks kept for reuse go, the farthest next use first, until `need` more elements stay
 * within stage3_max_live_parameters (blocks in use and persistent ones stay). */
static void
shed_live(zinf_zero3 *z, uint64_t need)
{
	zinf_zero3_gpu *g = z->g;
	while (g->live_elems + need > (uint64_t)g->o.max_live) {
		int victim = reuse_victim(z);
		if (victim < 0)
			return;
		release_params(z, victim);
	}
}

/* A free slot of at least `bytes`, or a new one. */
static int
slot_get(zinf_zero3 *z, size_t bytes, int *out)
{
	zinf_zero3_gpu *g = z->g;
	int best = -1;
	for (int i = 0; i < g->nslots; i++) {
		z3slot *s = &g->slots[i];
		if (!s->used && s->p && s->cap >= bytes && (best < 0 || s->cap < g->slots[best].cap))
			best = i;
	}
	if (best >= 0) {
		g->slots[best].used = true;
		*out = best;
		return 0;
	}
	shed(z, bytes);
	for (int i = 0; i < g->nslots; i++) { /* shedding may have freed a fitting one */
		z3slot *s = &g->slots[i];
		if (!s->used && s->p && s->cap >= bytes) {
			s->used = true;
			*out = i;
			return 0;
		}
	}
	if (g->o.slot_budget && g->slot_bytes + bytes > g->o.slot_budget)
		return zinf_zero3_fail(z, -ENOMEM, "ZeRO stage 3, rank %d: the GPU memory budget leaves %llu "
		             "bytes for gathered blocks, %llu are in use and one more needs %zu; "
		             "raise --gpu_mem or lower stage3_max_live_parameters",
		             z->rank, (unsigned long long)g->o.slot_budget,
		             (unsigned long long)g->slot_bytes, bytes);
	int idx = -1;
	for (int i = 0; i < g->nslots; i++)
		if (!g->slots[i].p && !g->slots[i].used)
			idx = i;
	if (idx < 0) {
		if (g->nslots == g->cap_slots) {
			int nc = g->cap_slots ? 2 * g->cap_slots : 16;
			z3slot *ns = realloc(g->slots, (size_t)nc * sizeof(*ns));
			if (!ns)
				return zinf_zero3_fail(z, -ENOMEM, "ZeRO stage 3: out of host memory for slots");
			g->slots = ns;
			g->cap_slots = nc;
		}
		idx = g->nslots++;
		g->slots[idx] = (z3slot){0};
		GCU(z, cudaEventCreateWithFlags(&g->slots[idx].ev, cudaEventDisableTiming),
		    "creating a slot event");
	}
	z3slot *s = &g->slots[idx];
	cudaError_t ce = cudaMalloc(&s->p, bytes);
	if (ce != cudaSuccess) {
		(void)cudaGetLastError();
		s->p = NULL;
		return zinf_zero3_fail(z, -ENOMEM, "ZeRO stage 3, rank %d: %zu bytes of GPU memory for a "
		             "gathered block (%llu held in %d slots): %s; lower "
		             "stage3_max_live_parameters / stage3_prefetch_bucket_size or "
		             "offload the parameters (offload_param)", z->rank, bytes,
		             (unsigned long long)g->slot_bytes, g->nslots, cudaGetErrorString(ce));
	}
	s->cap = bytes;
	s->used = true;
	s->ev_set = false;
	g->slot_bytes += bytes;
	if (g->slot_bytes > z->slot_peak)
		z->slot_peak = g->slot_bytes;
	*out = idx;
	return 0;
}

/* The slot is free once the work enqueued on `st` so far is done. */
static void
slot_put(zinf_zero3 *z, int i, cudaStream_t st)
{
	z3slot *s = &z->g->slots[i];
	s->ev_set = cudaEventRecord(s->ev, st) == cudaSuccess;
	s->used = false;
}

/* `st` waits for slot i's previous user. */
static int
slot_wait(zinf_zero3 *z, int i, cudaStream_t st)
{
	z3slot *s = &z->g->slots[i];
	if (s->ev_set)
		GCU(z, cudaStreamWaitEvent(st, s->ev, 0), "ordering a slot's reuse");
	return 0;
}

/* ---- gathers ---- */

/* Host copies whose copy to the GPU is done go back to the store. */
static void
h2d_reap(zinf_zero3 *z, bool all)
{
	zinf_zero3_gpu *g = z->g;
	if (!g->o.store)
		return;
	for (int b = 0; b < z->nblocks; b++) {
		if (!g->h2d[b])
			continue;
		if (all)
			cudaEventSynchronize(g->h2d_ev[b]);
		else if (cudaEventQuery(g->h2d_ev[b]) != cudaSuccess)
			continue;
		g->h2d[b] = false;
		g->preq[b] = false;
		zinf_pstore_release(g->o.store, b);
	}
}

/* Every store buffer is held by blocks read ahead (e.g. b was kept for reuse, skipped by the
 * read-ahead, then shed): the one read ahead for the farthest use goes back. 1 if one did. */
static int
drop_ahead(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	int victim = -1;
	const zinf_z3_order *o = &g->ord;
	for (int k = 0; k < o->ntrace && o->valid; k++) {
		int c = o->trace[(o->cursor + k) % o->ntrace];
		if (c != b && g->preq[c] && !g->h2d[c])
			victim = c; /* the last one found is the farthest */
	}
	for (int c = 0; victim < 0 && c < z->nblocks; c++)
		if (c != b && g->preq[c] && !g->h2d[c])
			victim = c;
	if (victim < 0)
		return 0;
	const uint16_t *h;
	if (!zinf_pstore_acquire(g->o.store, victim, true, &h))
		zinf_pstore_release(g->o.store, victim);
	g->preq[victim] = false;
	return 1;
}

/* Reads started ahead for blocks that were not gathered: let them land, give them back. */
static void
drain_ahead(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	for (int b = 0; g->o.store && b < z->nblocks; b++) {
		if (!g->preq[b] || g->h2d[b])
			continue;
		const uint16_t *h;
		if (!zinf_pstore_acquire(g->o.store, b, true, &h))
			zinf_pstore_release(g->o.store, b);
		g->preq[b] = false;
	}
}

/* Enqueues block b's gather on the gather stream. demand false (prefetch): returns -EAGAIN
 * when the block's parameters are not in host memory yet (their read has been started). */
static int
gather(zinf_zero3 *z, int b, bool demand)
{
	zinf_zero3_gpu *g = z->g;
	size_t per = (size_t)z->per[b];
	const uint16_t *host = NULL;
	int rc;
	if (g->o.store) {
		if (g->h2d[b]) /* a copy of this block's slice is still on its way: let it land */
			h2d_reap(z, true);
		rc = zinf_pstore_acquire(g->o.store, b, demand, &host);
		while (rc == -EDEADLK && demand) {
			/* buffers wait on copies to the GPU (let them land) or hold read-ahead */
			bool pending = false;
			for (int c = 0; c < z->nblocks && !pending; c++)
				pending = g->h2d[c];
			if (pending)
				h2d_reap(z, true);
			else if (!drop_ahead(z, b))
				break;
			rc = zinf_pstore_acquire(g->o.store, b, true, &host);
		}
		if (rc == -EAGAIN && !demand) {
			g->preq[b] = true;
			return rc;
		}
		if (rc)
			return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: block %d's parameters: %s", z->rank,
			             b, zinf_pstore_error(g->o.store));
		g->preq[b] = true;
	}
	int si;
	if ((rc = slot_get(z, (size_t)g->slot_elems[b] * 2, &si)))
		return rc;
	if ((rc = slot_wait(z, si, g->gs)))
		return rc;
	uint16_t *slot = g->slots[si].p, *mine = slot + (size_t)z->rank * per;
	if (host) {
		GCU(z, cudaMemcpyAsync(mine, host, per * 2, cudaMemcpyHostToDevice, g->gs),
		    "copying a parameter slice to the GPU");
		GCU(z, cudaEventRecord(g->h2d_ev[b], g->gs), "recording a copy event");
		g->h2d[b] = true;
	} else if (z->W == 1) {
		GCU(z, cudaMemcpyAsync(mine, (const uint16_t *)g->o.shard16 + z->soff[b], per * 2,
		                       cudaMemcpyDeviceToDevice, g->gs),
		    "copying a parameter slice");
	}
	if (z->W > 1) {
		const uint16_t *src = host ? mine : (const uint16_t *)g->o.shard16 + z->soff[b];
		rc = zinf_comm_all_gather_async(z->comm, src, slot, per, ZINF_COMM_BF16);
		if (rc)
			return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: all-gathering block %d (%zu "
			             "elements per rank): %s", z->rank, b, per,
			             zinf_comm_error(z->comm));
	}
	GCU(z, cudaEventRecord(g->ready[b], g->gs), "recording a gather event");
	g->pslot[b] = si;
	g->pst[b] = B_LIVE;
	g->live_elems += (uint64_t)g->slot_elems[b];
	z->live_bytes += (uint64_t)z->n[b] * 2;
	if (z->live_bytes > z->live_peak)
		z->live_peak = z->live_bytes;
	z->gathers++;
	if (!demand)
		z->prefetched++;
	return 0;
}

static void
release_params(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	if (g->pst[b] != B_LIVE)
		return;
	/* after the compute stream's reads; a prefetched block the compute stream never waited
	 * for may still be landing: the slot is free once both are done */
	(void)cudaStreamWaitEvent(g->cs, g->ready[b], 0);
	slot_put(z, g->pslot[b], g->cs);
	g->pslot[b] = -1;
	g->pst[b] = B_NONE;
	g->live_elems -= (uint64_t)g->slot_elems[b];
	z->live_bytes -= (uint64_t)z->n[b] * 2;
}

/* NVMe store: reads of the blocks that come next start as far ahead as the store's host
 * buffers (offload_param.buffer_count) allow, beyond what the GPU prefetch takes. */
static int
read_ahead(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	if (!g->o.store)
		return 0;
	for (int j = g->ord.cursor; j < g->ord.ntrace; j++) {
		int c = g->ord.trace[j];
		if (g->pst[c] == B_LIVE || g->preq[c])
			continue;
		int r = zinf_pstore_prefetch(g->o.store, c);
		if (r < 0)
			return zinf_zero3_fail(z, r, "ZeRO stage 3, rank %d: reading block %d's parameters ahead: "
			             "%s", z->rank, c, zinf_pstore_error(g->o.store));
		if (r == 0)
			break;
		g->preq[c] = true;
	}
	return 0;
}

/* Gathers of the blocks that come next in the recorded order, within
 * stage3_prefetch_bucket_size elements (at least the next block when it is > 0) and
 * stage3_max_live_parameters. */
static int
prefetch(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	if (!g->ord.valid || g->o.prefetch_bucket <= 0)
		return 0;
	int64_t ahead = 0;
	for (int j = g->ord.cursor; j < g->ord.ntrace; j++) {
		int c = g->ord.trace[j];
		if (g->inuse[c])
			continue;
		int64_t n = g->slot_elems[c];
		if (ahead > 0 && ahead + n > g->o.prefetch_bucket)
			break;
		ahead += n;
		if (g->pst[c] == B_LIVE)
			continue;
		if ((int64_t)g->live_elems + n > g->o.max_live && ahead > n)
			break;
		/* W > 1: every rank must issue the same collectives in the same order, so a
		 * prefetch never depends on when this rank's NVMe read finishes (it waits) */
		int rc = gather(z, c, z->W > 1);
		if (rc == -EAGAIN && z->W == 1)
			break; /* its read from NVMe is under way */
		if (rc)
			return rc;
	}
	return read_ahead(z);
}

/* ---- hooks ---- */

int
zinf_zero3_gpu_needed(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	zinf_z3_order_needed(&g->ord, b);
	h2d_reap(z, false);
	int rc;
	if (g->pst[b] != B_LIVE) {
		shed_live(z, (uint64_t)g->slot_elems[b]); /* stage3_max_live_parameters */
		if ((rc = gather(z, b, true)))
			return rc;
	}
	GCU(z, cudaStreamWaitEvent(g->cs, g->ready[b], 0), "waiting for a gather");
	g->inuse[b] = true;
	return prefetch(z);
}

int
zinf_zero3_gpu_done(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	g->inuse[b] = false;
	if (z->persist[b] || g->pst[b] != B_LIVE)
		return 0;
	int64_t d = reuse_distance(z, b);
	if (d >= 0 && d <= g->o.max_reuse && g->live_elems <= (uint64_t)g->o.max_live) {
		z->reuse_kept++;
		return 0;
	}
	release_params(z, b);
	return 0;
}

const void *
zinf_zero3_gpu_params_at(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	return g->pslot[b] >= 0 ? g->slots[g->pslot[b]].p : NULL;
}

/* A zeroed gradient slot for block b (on the compute stream). */
static int
grad_slot(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	int si, rc;
	size_t bytes = (size_t)g->slot_elems[b] * sizeof(float);
	if ((rc = slot_get(z, bytes, &si)) || (rc = slot_wait(z, si, g->cs)))
		return rc;
	GCU(z, cudaMemsetAsync(g->slots[si].p, 0, bytes, g->cs), "clearing a gradient slot");
	g->gslot[b] = si;
	return 0;
}

float *
zinf_zero3_gpu_grads_at(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	if (g->gslot[b] < 0 && grad_slot(z, b))
		return NULL; /* the model then writes nowhere valid: see the engine's check */
	return g->slots[g->gslot[b]].p;
}

int
zinf_zero3_gpu_grads_done(zinf_zero3 *z, int b)
{
	zinf_zero3_gpu *g = z->g;
	int rc;
	if (g->gslot[b] < 0 && (z->W > 1 || g->fresh[b])) {
		/* zeros: the other ranks' reduce-scatter needs ours; a fresh accumulator is
		 * overwritten, not added to */
		if ((rc = grad_slot(z, b)))
			return rc;
	} else if (g->gslot[b] < 0) {
		return 0; /* nothing was added */
	}
	int si = g->gslot[b];
	size_t per = (size_t)z->per[b];
	float *slot = g->slots[si].p, *mine = slot + (size_t)z->rank * per;
	GCU(z, cudaEventRecord(g->cs_mark, g->cs), "ordering a gradient reduction");
	GCU(z, cudaStreamWaitEvent(g->gs, g->cs_mark, 0), "ordering a gradient reduction");
	if (z->W > 1) {
		rc = zinf_comm_reduce_scatter_async(z->comm, slot, mine, per, ZINF_COMM_F32,
		                                    ZINF_COMM_SUM);
		if (rc)
			return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: reduce-scattering block %d's "
			             "gradients (%zu elements per rank): %s", z->rank, b, per,
			             zinf_comm_error(z->comm));
	}
	if (g->fresh[b]) {
		/* the first micro-step of a step writes (device or pinned host: UVA) */
		GCU(z, cudaMemcpyAsync(g->o.gpart + z->soff[b], mine,
		                       (size_t)z->own_n[b] * sizeof(float), cudaMemcpyDefault, g->gs),
		    "storing a block's reduced gradients");
		g->fresh[b] = false;
	} else if ((rc = zinf_add_f32_cuda(g->o.gpart + z->soff[b], mine, z->own_n[b], g->gs))) {
		return zinf_zero3_fail(z, rc, "ZeRO stage 3: accumulating block %d's gradients", b);
	}
	slot_put(z, si, g->gs);
	g->gslot[b] = -1;
	z->reduces++;
	if (!g->o.overlap_comm) /* zero_optimization.overlap_comm false: no overlap */
		return zinf_zero3_gpu_flush(z);
	return 0;
}

/* ---- engine calls ---- */

void
zinf_zero3_gpu_begin_forward(zinf_zero3 *z)
{
	zinf_z3_order_begin_forward(&z->g->ord);
}

int
zinf_zero3_gpu_flush(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	GCU(z, cudaEventRecord(g->gs_mark, g->gs), "ordering the reduced gradients");
	GCU(z, cudaStreamWaitEvent(g->cs, g->gs_mark, 0), "ordering the reduced gradients");
	return 0;
}

int
zinf_zero3_gpu_quiesce(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	if (z->W > 1) {
		int rc = zinf_comm_wait(z->comm);
		if (rc)
			return zinf_zero3_fail(z, rc, "ZeRO stage 3, rank %d: waiting for gathers and gradient "
			             "reductions: %s", z->rank, zinf_comm_error(z->comm));
	}
	GCU(z, cudaStreamSynchronize(g->gs), "waiting for gathers and gradient reductions");
	h2d_reap(z, true);
	drain_ahead(z); /* the optimizer writes the store next: no buffer may be held */
	return 0;
}

void
zinf_zero3_gpu_invalidate(zinf_zero3 *z)
{
	zinf_zero3_gpu *g = z->g;
	for (int b = 0; b < z->nblocks; b++) {
		g->inuse[b] = false;
		release_params(z, b);
	}
	if (g->o.store) {
		h2d_reap(z, true);
		drain_ahead(z);
		zinf_pstore_drop_cached(g->o.store);
	}
	/* the parameters changed on the compute stream (the GPU Adam writes the shard there):
	 * later gathers on the gather stream come after that */
	if (cudaEventRecord(g->cs_mark, g->cs) == cudaSuccess)
		(void)cudaStreamWaitEvent(g->gs, g->cs_mark, 0);
}

void
zinf_zero3_gpu_grads_reset(zinf_zero3 *z)
{
	for (int b = 0; b < z->nblocks; b++)
		z->g->fresh[b] = true;
}

#endif /* ZINF_HAVE_CUDA */
