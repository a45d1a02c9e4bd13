/* The nccl backend: GPU ranks, device pointers, every collective on the comm's own
 * non-blocking CUDA stream. Compiled only in CUDA builds (engine/CMakeLists.txt).
 *
 * The communicator is created non-blocking (config.blocking = 0) so that nothing can hang:
 * init and every enqueue are settled by polling ncclCommGetAsyncError against the timeout,
 * and zinf_comm_wait() polls the stream the same way. On a timeout the communicator is
 * aborted (ncclCommAbort) and the error names the oldest unfinished collective, how long it
 * waited and, for peers on this host, which rank processes have exited (NCCL itself cannot
 * say which peer is missing).
 *
 * Each enqueued collective records an event in a ring of RING entries, so the wait knows
 * which one is late; a full ring waits for its oldest entry first. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "comm_internal.h"

/* Collectives in flight before a new one must wait for the oldest: the bucketed gradient
 * reduction (zero_bucket.h) issues one or more per bucket from the backward, and with small
 * buckets (reduce_bucket_size "auto" = hidden^2) hundreds are queued behind the compute; a
 * full ring would make the host wait inside the backward instead of enqueueing it. */
#define RING 1024

typedef struct pending {
	cudaEvent_t ev;
	uint64_t seq;
	comm_kind kind;
} pending;

typedef struct nccl_state {
	ncclComm_t comm;
	cudaStream_t stream;
	cudaEvent_t order_ev;
	float *scratch; /* barrier: a one-element all_reduce */
	int device;
	pending ring[RING];
	unsigned head, n; /* oldest pending entry, count */
} nccl_state;

static void
nap(void)
{
	struct timespec ts = {0, 100 * 1000};
	nanosleep(&ts, NULL);
}

static int
cuda_fail(zinf_comm *c, cudaError_t e, const char *what)
{
	cudaGetLastError();
	return comm_fail(c, -EIO, "%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

/* Peers known to be gone (same host), or a sentence saying NCCL cannot tell. */
static void
who_is_missing(zinf_comm *c, char *buf, size_t len)
{
	int *all = malloc(sizeof(int) * c->world), n = 0;
	if (all) {
		for (int q = 0; q < c->world; q++)
			if (q != c->rank)
				all[n++] = q;
		if (comm_dead_peers(c, all, n, buf, len)) {
			free(all);
			return;
		}
		free(all);
	}
	snprintf(buf, len, "a peer rank died or hangs (NCCL cannot tell which; no rank on this "
	         "host has exited: look at the other hosts' output)");
}

/* Aborts and reports; the comm is unusable afterwards. */
static int
nccl_timeout(zinf_comm *c, nccl_state *s, const char *what, uint64_t seq, double waited)
{
	char who[512];
	who_is_missing(c, who, sizeof(who));
	int rc = comm_fail(c, -ETIMEDOUT, "%s #%llu did not complete within %.1f s "
	                   "(ZINF_COMM_TIMEOUT_S=%g): %s; communicator aborted", what,
	                   (unsigned long long)seq, waited, c->timeout_s, who);
	if (s->comm) {
		ncclCommAbort(s->comm);
		s->comm = NULL;
	}
	return rc;
}

static int
nccl_error(zinf_comm *c, nccl_state *s, ncclResult_t r, const char *what, uint64_t seq)
{
	const char *last = s->comm ? ncclGetLastError(s->comm) : "";
	int rc = comm_fail(c, r == ncclInvalidArgument || r == ncclInvalidUsage ? -EINVAL : -EIO,
	                   "%s #%llu: %s%s%s", what, (unsigned long long)seq,
	                   ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
	if (s->comm && r != ncclInvalidArgument && r != ncclInvalidUsage) {
		ncclCommAbort(s->comm);
		s->comm = NULL;
	}
	return rc;
}

/* A non-blocking NCCL call returned r: poll until it is no longer in progress. */
static int
settle(zinf_comm *c, nccl_state *s, ncclResult_t r, const char *what, uint64_t seq)
{
	double t0 = comm_now();
	while (r == ncclInProgress) {
		if (comm_now() - t0 > c->timeout_s)
			return nccl_timeout(c, s, what, seq, comm_now() - t0);
		nap();
		if (ncclCommGetAsyncError(s->comm, &r) != ncclSuccess)
			break;
	}
	return r == ncclSuccess ? 0 : nccl_error(c, s, r, what, seq);
}

/* Waits for the oldest pending collective. */
static int
retire_oldest(zinf_comm *c, nccl_state *s)
{
	pending *p = &s->ring[s->head];
	double t0 = comm_now();
	for (unsigned spin = 0;; spin++) {
		cudaError_t e = cudaEventQuery(p->ev);
		if (e == cudaSuccess)
			break;
		if (e != cudaErrorNotReady)
			return cuda_fail(c, e, comm_kind_name(p->kind));
		ncclResult_t ar = ncclSuccess;
		ncclCommGetAsyncError(s->comm, &ar);
		if (ar != ncclSuccess && ar != ncclInProgress)
			return nccl_error(c, s, ar, comm_kind_name(p->kind), p->seq);
		double w = comm_now() - t0;
		if (w > c->timeout_s)
			return nccl_timeout(c, s, comm_kind_name(p->kind), p->seq, w);
		if (spin > 1000)
			nap();
	}
	s->head = (s->head + 1) % RING;
	s->n--;
	return 0;
}

static int
nccl_wait(zinf_comm *c)
{
	nccl_state *s = c->impl;
	while (s->n) {
		int rc = retire_oldest(c, s);
		if (rc)
			return rc;
	}
	return 0;
}

static int
nccl_run(zinf_comm *c, const comm_call *k)
{
	nccl_state *s = c->impl;
	const char *name = comm_kind_name(k->kind);
	ncclDataType_t t = k->dt == ZINF_COMM_BF16 ? ncclBfloat16 : ncclFloat32;
	ncclRedOp_t op = k->op == ZINF_COMM_AVG ? ncclAvg : k->op == ZINF_COMM_MAX ? ncclMax : ncclSum;
	int rc;
	if (s->n == RING && (rc = retire_oldest(c, s)))
		return rc;
	ncclResult_t r = ncclSuccess;
	switch (k->kind) {
	case COMM_ALL_GATHER:
		r = ncclAllGather(k->send, k->recv, k->count, t, s->comm, s->stream);
		break;
	case COMM_REDUCE_SCATTER:
		r = ncclReduceScatter(k->send, k->recv, k->count, t, op, s->comm, s->stream);
		break;
	case COMM_ALL_REDUCE:
		r = ncclAllReduce(k->send, k->recv, k->count, t, op, s->comm, s->stream);
		break;
	case COMM_BROADCAST:
		r = ncclBroadcast(k->send, k->recv, k->count, t, k->root, s->comm, s->stream);
		break;
	case COMM_REDUCE:
		r = ncclReduce(k->send, k->recv, k->count, t, op, k->root, s->comm, s->stream);
		break;
	case COMM_BARRIER:
		r = ncclAllReduce(s->scratch, s->scratch, 1, ncclFloat32, ncclSum, s->comm,
		                  s->stream);
		break;
	}
	if ((rc = settle(c, s, r, name, k->seq)))
		return rc;
	pending *p = &s->ring[(s->head + s->n) % RING];
	cudaError_t e = cudaEventRecord(p->ev, s->stream);
	if (e != cudaSuccess)
		return cuda_fail(c, e, "cudaEventRecord on the comm stream");
	p->seq = k->seq;
	p->kind = k->kind;
	s->n++;
	return 0;
}

static int
nccl_wait_for_stream(zinf_comm *c, void *stream)
{
	nccl_state *s = c->impl;
	cudaError_t e = cudaEventRecord(s->order_ev, (cudaStream_t)stream);
	if (e == cudaSuccess)
		e = cudaStreamWaitEvent(s->stream, s->order_ev, 0);
	return e == cudaSuccess ? 0 : cuda_fail(c, e, "comm stream waiting for a compute stream");
}

static int
nccl_stream_wait_comm(zinf_comm *c, void *stream)
{
	nccl_state *s = c->impl;
	cudaError_t e = cudaEventRecord(s->order_ev, s->stream);
	if (e == cudaSuccess)
		e = cudaStreamWaitEvent((cudaStream_t)stream, s->order_ev, 0);
	return e == cudaSuccess ? 0 : cuda_fail(c, e, "compute stream waiting for the comm stream");
}

static void
nccl_free(nccl_state *s)
{
	for (int i = 0; i < RING; i++)
		if (s->ring[i].ev)
			cudaEventDestroy(s->ring[i].ev);
	if (s->order_ev)
		cudaEventDestroy(s->order_ev);
	if (s->scratch)
		cudaFree(s->scratch);
	if (s->stream)
		cudaStreamDestroy(s->stream);
	free(s);
}

static void
nccl_destroy(zinf_comm *c)
{
	nccl_state *s = c->impl;
	if (!s)
		return;
	if (s->comm && !c->broken && nccl_wait(c) == 0) {
		if (settle(c, s, ncclCommFinalize(s->comm), "finalize", c->seq) == 0) {
			ncclCommDestroy(s->comm);
			s->comm = NULL;
		}
	}
	if (s->comm)
		ncclCommAbort(s->comm);
	nccl_free(s);
	c->impl = NULL;
}

static const comm_backend_ops nccl_ops = {
	.name = "nccl",
	.run = nccl_run,
	.wait = nccl_wait,
	.wait_for_stream = nccl_wait_for_stream,
	.stream_wait_comm = nccl_stream_wait_comm,
	.destroy = nccl_destroy,
};

int
comm_nccl_create(zinf_comm *c, comm_boot *b, int device, char *err, size_t errlen)
{
	int ndev = zinf_comm_cuda_device_count();
	if (device < 0 || device >= ndev) {
		snprintf(err, errlen, "comm nccl: rank %d wants CUDA device %d but this process sees "
		         "%d (LOCAL_RANK picks the device; run at most one rank per visible GPU, or "
		         "CPU ranks with zinf launch --cpu)", c->rank, device, ndev);
		return -ENODEV;
	}
	nccl_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->device = device;
	cudaError_t e = cudaSetDevice(device);
	if (e == cudaSuccess)
		e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
	if (e == cudaSuccess)
		e = cudaEventCreateWithFlags(&s->order_ev, cudaEventDisableTiming);
	for (int i = 0; i < RING && e == cudaSuccess; i++)
		e = cudaEventCreateWithFlags(&s->ring[i].ev, cudaEventDisableTiming);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&s->scratch, sizeof(float));
	if (e != cudaSuccess) {
		snprintf(err, errlen, "comm nccl: rank %d: setting up device %d: %s", c->rank, device,
		         cudaGetErrorString(e));
		cudaGetLastError();
		nccl_free(s);
		return -EIO;
	}
	ncclUniqueId id;
	memset(&id, 0, sizeof(id));
	ncclResult_t r = ncclSuccess;
	if (c->rank == 0)
		r = ncclGetUniqueId(&id);
	if (r != ncclSuccess) {
		snprintf(err, errlen, "comm nccl: ncclGetUniqueId: %s", ncclGetErrorString(r));
		nccl_free(s);
		return -EIO;
	}
	/* A failed rank 0 still sends its (zero) id so peers are not left waiting; they fail in
	 * init, which is bounded by the timeout. */
	int rc = b ? comm_boot_bcast(b, &id, sizeof(id), err, errlen) : 0;
	if (rc) {
		nccl_free(s);
		return rc;
	}
	ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
	cfg.blocking = 0;
	c->impl = s;
	c->ops = &nccl_ops;
	c->stream = s->stream;
	r = ncclCommInitRankConfig(&s->comm, c->world, id, c->rank, &cfg);
	if (r != ncclSuccess && r != ncclInProgress) {
		snprintf(err, errlen, "comm nccl: rank %d: ncclCommInitRankConfig (%d ranks, device "
		         "%d): %s", c->rank, c->world, device, ncclGetErrorString(r));
		rc = -EIO;
	} else if ((rc = settle(c, s, r, "ncclCommInitRank", 0))) {
		snprintf(err, errlen, "%s", c->err);
	}
	if (rc) {
		if (s->comm)
			ncclCommAbort(s->comm);
		s->comm = NULL;
		nccl_free(s);
		c->impl = NULL;
		c->ops = NULL;
		c->stream = NULL;
		return rc;
	}
	return 0;
}
