/* Collective communication between the ranks of one training job (issue 9).
 *
 * One process per rank. Ranks find each other through the torchrun / Slurm environment:
 * RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (zinf launch sets them). With none of
 * them set the job is one rank and every collective is a copy. Rank 0 listens for the others on
 * MASTER_ADDR:MASTER_PORT over TCP (127.0.0.1:29500 by default) just long enough to hand out
 * what the backend needs (the NCCL unique id, the shared-memory segment name).
 *
 * Backends (a vtable, see comm.c):
 *   shm   CPU ranks on one host: a POSIX shared-memory segment, host pointers. Deterministic:
 *         every reduction sums (or maxes) in fp32 in rank order 0, 1, ..., W-1 for every
 *         element; bf16 inputs are widened to fp32 and the result rounded to bf16 once (nearest
 *         even); avg = sum / W. All ranks get bitwise identical results, and the same inputs
 *         give the same bits on every run.
 *   nccl  GPU ranks (CUDA builds with NCCL): device pointers; every op runs on the comm's own
 *         CUDA stream (zinf_comm_stream) so it overlaps compute on other streams. Init makes
 *         device `opts.device` (default LOCAL_RANK) the calling thread's current device.
 *         Reductions follow NCCL's order (deterministic for a fixed topology, not rank order).
 *
 * Timeouts: every collective, and the bootstrap, gives up after ZINF_COMM_TIMEOUT_S seconds
 * (default 300; opts.timeout_s overrides). The error names the collective ("all_reduce #12"),
 * how long it waited and, where the backend can know, the rank(s) that did not arrive or have
 * exited. After a collective fails the comm is broken: every later call returns the same error
 * (peers are told to stop waiting where the backend can do so). zinf_comm_error() has the text.
 *
 * In-place use (as NCCL defines it): all_reduce send == recv; all_gather
 * send == recv + rank * count; reduce_scatter recv == send + rank * count. Buffers must not
 * otherwise overlap.
 *
 * Threads: a comm is used by one thread at a time (the collectives of all ranks must be issued
 * in the same order, which one issuing thread guarantees).
 *
 * Return values: 0, or a negative errno (-ETIMEDOUT a peer did not arrive in time, -EPIPE a
 * peer exited or aborted, -EPROTO ranks disagree on the collective, -EINVAL bad arguments,
 * -EIO a backend error) with the message in zinf_comm_error(). Nothing exits the process. */
#ifndef ZINF_ENGINE_COMM_H
#define ZINF_ENGINE_COMM_H

#include <stdbool.h>
#include <stddef.h>

typedef enum zinf_comm_backend {
	ZINF_COMM_AUTO = 0, /* ZINF_COMM_BACKEND=shm|nccl, else nccl when a GPU is present */
	ZINF_COMM_SHM = 1,
	ZINF_COMM_NCCL = 2,
} zinf_comm_backend;

typedef enum zinf_comm_dtype {
	ZINF_COMM_F32 = 0,
	ZINF_COMM_BF16 = 1, /* uint16_t storage, the upper half of an fp32 */
} zinf_comm_dtype;

typedef enum zinf_comm_op {
	ZINF_COMM_SUM = 0,
	ZINF_COMM_AVG = 1, /* sum / world_size */
	ZINF_COMM_MAX = 2, /* e.g. fp16 overflow agreement: all_reduce max of a 0/1 flag */
} zinf_comm_op;

typedef struct zinf_comm_opts {
	zinf_comm_backend backend;
	int rank, world_size, local_rank; /* -1: from the environment (RANK, ...; else 0, 1, 0) */
	const char *master_addr;          /* NULL: MASTER_ADDR, else 127.0.0.1 */
	int master_port;                  /* 0: MASTER_PORT, else 29500 */
	double timeout_s;                 /* <= 0: ZINF_COMM_TIMEOUT_S, else 300 */
	int device;                       /* nccl: CUDA device; -1: local_rank */
	size_t shm_slot_bytes;            /* shm: staging bytes per rank; 0: 4 MiB */
} zinf_comm_opts;

/* Everything "from the environment" / default. */
void zinf_comm_opts_init(zinf_comm_opts *o);

typedef struct zinf_comm zinf_comm;

/* Joins the job: blocks until all world_size ranks have called it (or the timeout). On error
 * *out is NULL and err names what failed (port in use, rank 0 unreachable, world sizes that
 * differ, ...) and what to change. */
int zinf_comm_init(const zinf_comm_opts *o, zinf_comm **out, char *err, size_t errlen);
/* Frees everything (aborts pending NCCL work if the comm is broken). NULL is fine. */
void zinf_comm_destroy(zinf_comm *c);

int zinf_comm_rank(const zinf_comm *c);
int zinf_comm_world_size(const zinf_comm *c);
int zinf_comm_local_rank(const zinf_comm *c);
zinf_comm_backend zinf_comm_backend_of(const zinf_comm *c);
const char *zinf_comm_backend_name(zinf_comm_backend b);
double zinf_comm_timeout_s(const zinf_comm *c);
/* The last error message ("" when none). */
const char *zinf_comm_error(const zinf_comm *c);
/* The comm's cudaStream_t (nccl), NULL for shm. */
void *zinf_comm_stream(const zinf_comm *c);
/* Ordering against a compute stream (cudaStream_t; no-ops for shm): comm work enqueued after
 * this call starts after the work already on `stream`; and `stream`'s later work waits for the
 * comm work enqueued so far. */
int zinf_comm_wait_for_stream(zinf_comm *c, void *stream);
int zinf_comm_stream_wait_comm(zinf_comm *c, void *stream);

/* Collectives, blocking until done on this rank (or failed). count is elements.
 * all_gather: send has count elements, recv count * W (rank r's at recv + r * count).
 * reduce_scatter: send has count * W elements, recv count (the reduction of block `rank`).
 * reduce: the reduction of every rank's send lands in root's recv (others' recv untouched;
 * recv == send in place). */
int zinf_comm_all_gather(zinf_comm *c, const void *send, void *recv, size_t count,
                         zinf_comm_dtype dt);
int zinf_comm_reduce_scatter(zinf_comm *c, const void *send, void *recv, size_t count,
                             zinf_comm_dtype dt, zinf_comm_op op);
int zinf_comm_all_reduce(zinf_comm *c, const void *send, void *recv, size_t count,
                         zinf_comm_dtype dt, zinf_comm_op op);
int zinf_comm_broadcast(zinf_comm *c, void *buf, size_t count, zinf_comm_dtype dt, int root);
int zinf_comm_reduce(zinf_comm *c, const void *send, void *recv, size_t count, zinf_comm_dtype dt,
                     zinf_comm_op op, int root);
int zinf_comm_barrier(zinf_comm *c);

/* Asynchronous forms: enqueued on the comm stream and returned at once (nccl); the buffers
 * must stay valid and untouched until zinf_comm_wait(). shm completes them before returning.
 * zinf_comm_wait() blocks until everything enqueued is done, with the timeout, and names the
 * oldest unfinished collective when it gives up. */
int zinf_comm_all_gather_async(zinf_comm *c, const void *send, void *recv, size_t count,
                               zinf_comm_dtype dt);
int zinf_comm_reduce_scatter_async(zinf_comm *c, const void *send, void *recv, size_t count,
                                   zinf_comm_dtype dt, zinf_comm_op op);
int zinf_comm_all_reduce_async(zinf_comm *c, const void *send, void *recv, size_t count,
                               zinf_comm_dtype dt, zinf_comm_op op);
int zinf_comm_broadcast_async(zinf_comm *c, void *buf, size_t count, zinf_comm_dtype dt,
                              int root);
int zinf_comm_reduce_async(zinf_comm *c, const void *send, void *recv, size_t count,
                           zinf_comm_dtype dt, zinf_comm_op op, int root);
int zinf_comm_wait(zinf_comm *c);

/* Number of CUDA devices this process sees (0 in CPU builds or without a driver). */
int zinf_comm_cuda_device_count(void);

/* bf16 <-> fp32 as the shm backend rounds (nearest even, NaN kept quiet). */
float zinf_comm_bf16_to_f32(unsigned short h);
unsigned short zinf_comm_f32_to_bf16(float f);

#endif
