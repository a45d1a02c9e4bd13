/* Private to comm*.c: the backend vtable, the comm object and the TCP bootstrap. */
#ifndef ZINF_ENGINE_COMM_INTERNAL_H
#define ZINF_ENGINE_COMM_INTERNAL_H

#include <stdint.h>

#include "engine/comm.h"

typedef enum comm_kind {
	COMM_ALL_GATHER = 0,
	COMM_REDUCE_SCATTER = 1,
	COMM_ALL_REDUCE = 2,
	COMM_BROADCAST = 3,
	COMM_BARRIER = 4,
	COMM_REDUCE = 5,
} comm_kind;

/* One collective as the front end hands it to a backend; seq numbers them from 1 in call
 * order on every rank (so ranks agree on "#seq"). */
typedef struct comm_call {
	comm_kind kind;
	zinf_comm_dtype dt;
	zinf_comm_op op;
	int root;
	size_t count;
	const void *send;
	void *recv;
	bool async;
	uint64_t seq;
} comm_call;

/* A backend. Every slot is required unless marked optional. */
typedef struct comm_backend_ops {
	const char *name;
	/* Runs (or, async on a stream backend, enqueues) one collective. */
	int (*run)(zinf_comm *c, const comm_call *call);
	/* Optional (synchronous backends): waits for everything enqueued. */
	int (*wait)(zinf_comm *c);
	/* Optional: stream ordering (see zinf_comm_wait_for_stream). */
	int (*wait_for_stream)(zinf_comm *c, void *stream);
	int (*stream_wait_comm)(zinf_comm *c, void *stream);
	void (*destroy)(zinf_comm *c);
} comm_backend_ops;

typedef struct comm_peer {
	int32_t pid;
	char host[64];
} comm_peer;

struct zinf_comm {
	const comm_backend_ops *ops;
	void *impl; /* backend state */
	void *stream;
	zinf_comm_backend backend;
	int rank, world, local_rank;
	double timeout_s;
	uint64_t seq;
	int broken; /* the first error (negative errno); later calls return it */
	comm_peer *peers; /* world entries: pid and host of each rank (from the bootstrap) */
	char err[1024];
};

const char *comm_kind_name(comm_kind k);
size_t comm_dtype_size(zinf_comm_dtype dt);
double comm_now(void);
/* Formats c->err ("comm <backend>: " prefix added), marks the comm broken, returns rc. */
int comm_fail(zinf_comm *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ranks among `ranks` (n of them) whose process is known gone (same host, pid not alive),
 * written as "rank 1 (pid 123) exited" into buf; 0 when none is known gone. */
int comm_dead_peers(const zinf_comm *c, const int *ranks, int n, char *buf, size_t len);

/* ---- TCP bootstrap (comm.c) ---- */
typedef struct comm_boot comm_boot;
/* All ranks meet at addr:port; rank 0 listens there. Fills c->peers. */
int comm_boot_start(zinf_comm *c, const char *addr, int port, comm_boot **out, char *err,
                    size_t errlen);
/* Rank 0's len bytes reach every rank. */
int comm_boot_bcast(comm_boot *b, void *buf, size_t len, char *err, size_t errlen);
int comm_boot_barrier(comm_boot *b, char *err, size_t errlen);
void comm_boot_close(comm_boot *b);

/* Backend constructors: fill c->ops, c->impl (and c->stream). b is NULL when world == 1. */
int comm_shm_create(zinf_comm *c, comm_boot *b, size_t slot_bytes, char *err, size_t errlen);
int comm_nccl_create(zinf_comm *c, comm_boot *b, int device, char *err, size_t errlen);

#endif
