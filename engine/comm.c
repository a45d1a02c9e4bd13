/* Collective communication front end (engine/include/engine/comm.h): options from the
 * torchrun / Slurm environment, argument checks, sequence numbers and error state common to
 * every backend, and the TCP bootstrap through which ranks meet.
 *
 * Bootstrap protocol (rank 0 listens, every other rank connects, one TCP stream each):
 *   client -> 0   boot_hello (magic, version, rank, world size, local rank, backend, pid, host)
 *   0 -> client   boot_reply (status, message) then, when status is 0, the peer table
 *   later         comm_boot_bcast: rank 0 writes the bytes to each client in rank order;
 *                 comm_boot_barrier: each client writes one byte, rank 0 answers each when all
 *                 have arrived.
 * Every read, write, accept and connect runs against the comm's deadline. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"
#include "iosched/iosched.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define BOOT_MAGIC 0x7a696e66u /* "zinf" */
#define BOOT_VERSION 1u
#define DEFAULT_TIMEOUT_S 300.0
#define DEFAULT_PORT 29500

/* ---- small helpers ---- */

double
comm_now(void)
{
	return iosched_now_s();
}

const char *
comm_kind_name(comm_kind k)
{
	switch (k) {
	case COMM_ALL_GATHER: return "all_gather";
	case COMM_REDUCE_SCATTER: return "reduce_scatter";
	case COMM_ALL_REDUCE: return "all_reduce";
	case COMM_BROADCAST: return "broadcast";
	case COMM_BARRIER: return "barrier";
	case COMM_REDUCE: return "reduce";
	}
	return "?";
}

size_t
comm_dtype_size(zinf_comm_dtype dt)
{
	return dt == ZINF_COMM_BF16 ? 2 : 4;
}

const char *
zinf_comm_backend_name(zinf_comm_backend b)
{
	switch (b) {
	case ZINF_COMM_AUTO: return "auto";
	case ZINF_COMM_SHM: return "shm";
	case ZINF_COMM_NCCL: return "nccl";
	}
	return "?";
}

int
comm_fail(zinf_comm *c, int rc, const char *fmt, ...)
{
	char msg[sizeof(c->err) - 32];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, sizeof(c->err), "comm %s: rank %d: %s", zinf_comm_backend_name(c->backend),
	         c->rank, msg);
	if (!c->broken)
		c->broken = rc;
	return rc;
}

int
comm_dead_peers(const zinf_comm *c, const int *ranks, int n, char *buf, size_t len)
{
	int dead = 0;
	size_t off = 0;
	buf[0] = 0;
	if (!c->peers)
		return 0;
	const char *me = c->peers[c->rank].host;
	for (int i = 0; i < n; i++) {
		const comm_peer *p = &c->peers[ranks[i]];
		if (strcmp(p->host, me) || p->pid <= 0)
			continue;
		if (kill(p->pid, 0) == 0 || errno != ESRCH)
			continue;
		if (off < len)
			off += snprintf(buf + off, len - off, "%srank %d (pid %d) exited",
			                dead ? ", " : "", ranks[i], (int)p->pid);
		dead++;
	}
	return dead;
}

float
zinf_comm_bf16_to_f32(unsigned short h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

unsigned short
zinf_comm_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
		return (unsigned short)((u >> 16) | 0x40); /* NaN stays a (quiet) NaN */
	u += 0x7fffu + ((u >> 16) & 1);
	return (unsigned short)(u >> 16);
}

/* ---- options ---- */

void
zinf_comm_opts_init(zinf_comm_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->backend = ZINF_COMM_AUTO;
	o->rank = o->world_size = o->local_rank = -1;
	o->device = -1;
}

static int
env_int(const char *name, int dflt, int lo, int *out, char *err, size_t errlen)
{
	const char *s = getenv(name);
	if (!s || !*s) {
		*out = dflt;
		return 0;
	}
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > 1 << 24) {
		snprintf(err, errlen, "comm: environment %s='%s' is not an integer >= %d (unset it, "
		         "or set it as torchrun / zinf launch do)", name, s, lo);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

/* Resolved copy of the options: environment and defaults filled in. */
static int
resolve_opts(const zinf_comm_opts *in, zinf_comm_opts *o, char *err, size_t errlen)
{
	*o = *in;
	int rc;
	if (o->rank < 0 && (rc = env_int("RANK", 0, 0, &o->rank, err, errlen)))
		return rc;
	if (o->world_size < 0 && (rc = env_int("WORLD_SIZE", 1, 1, &o->world_size, err, errlen)))
		return rc;
	if (o->local_rank < 0 && (rc = env_int("LOCAL_RANK", o->rank, 0, &o->local_rank, err,
	                                       errlen)))
		return rc;
	if (o->master_port <= 0 &&
	    (rc = env_int("MASTER_PORT", DEFAULT_PORT, 1, &o->master_port, err, errlen)))
		return rc;
	if (o->master_port > 65535) {
		snprintf(err, errlen, "comm: MASTER_PORT %d is not a TCP port (1..65535)",
		         o->master_port);
		return -EINVAL;
	}
	if (!o->master_addr || !*o->master_addr) {
		const char *a = getenv("MASTER_ADDR");
		o->master_addr = a && *a ? a : "127.0.0.1";
	}
	if (o->world_size < 1 || o->rank >= o->world_size) {
		snprintf(err, errlen, "comm: RANK %d is not below WORLD_SIZE %d (ranks are 0..%d)",
		         o->rank, o->world_size, o->world_size - 1);
		return -EINVAL;
	}
	if (o->timeout_s <= 0) {
		const char *s = getenv("ZINF_COMM_TIMEOUT_S");
		o->timeout_s = DEFAULT_TIMEOUT_S;
		if (s && *s) {
			char *end;
			double v = strtod(s, &end);
			if (*end || !(v > 0) || v > 1e7) {
				snprintf(err, errlen, "comm: ZINF_COMM_TIMEOUT_S='%s' is not a number of "
				         "seconds > 0 (default %.0f)", s, DEFAULT_TIMEOUT_S);
				return -EINVAL;
			}
			o->timeout_s = v;
		}
	}
	if (o->backend == ZINF_COMM_AUTO) {
		const char *b = getenv("ZINF_COMM_BACKEND");
		if (b && !strcmp(b, "shm"))
			o->backend = ZINF_COMM_SHM;
		else if (b && !strcmp(b, "nccl"))
			o->backend = ZINF_COMM_NCCL;
		else if (b && *b) {
			snprintf(err, errlen, "comm: ZINF_COMM_BACKEND='%s' is not shm or nccl", b);
			return -EINVAL;
		} else
			o->backend = zinf_comm_cuda_device_count() > 0 ? ZINF_COMM_NCCL : ZINF_COMM_SHM;
	}
	return 0;
}

/* ---- bootstrap ---- */

typedef struct boot_hello {
	uint32_t magic, version;
	int32_t rank, world, local_rank, backend, pid;
	char host[64];
} boot_hello;

typedef struct boot_reply {
	int32_t status; /* 0 or a negative errno */
	char msg[512];
} boot_reply;

struct comm_boot {
	zinf_comm *c;
	const char *addr;
	int port;
	double deadline;
	int *fds; /* rank 0: one per rank (fds[0] = -1); others: fds[0] = link to rank 0 */
	int nfds;
};

static int
io_full(comm_boot *b, int fd, void *buf, size_t len, bool wr, int peer, char *err,
        size_t errlen)
{
	char *p = buf;
	while (len) {
		int ms = (int)((b->deadline - comm_now()) * 1000);
		if (ms <= 0) {
			snprintf(err, errlen, "comm: bootstrap on %s:%d timed out after %.1f s waiting "
			         "for rank %d (ZINF_COMM_TIMEOUT_S=%g): it died or hangs before "
			         "joining", b->addr, b->port, b->c->timeout_s, peer, b->c->timeout_s);
			return -ETIMEDOUT;
		}
		struct pollfd pf = {fd, wr ? POLLOUT : POLLIN, 0};
		int n = poll(&pf, 1, ms > 200 ? 200 : ms);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n <= 0)
			continue;
		ssize_t r = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "comm: bootstrap link to rank %d on %s:%d closed (%s): "
			         "that rank exited or rejected this one (see its output)", peer,
			         b->addr, b->port, r < 0 ? strerror(errno) : "end of stream");
			return -EPIPE;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int
resolve_addr(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *sl, char *err,
             size_t errlen)
{
	struct addrinfo hints = {0}, *res = NULL;
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_family = AF_UNSPEC;
	int g = getaddrinfo(addr, ps, &hints, &res);
	if (g || !res) {
		snprintf(err, errlen, "comm: MASTER_ADDR '%s' does not resolve: %s (give rank 0's "
		         "IP address or host name)", addr, gai_strerror(g));
		return -EINVAL;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int
boot_listen(comm_boot *b, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int rc = resolve_addr(b->addr, b->port, &ss, &sl, err, errlen);
	if (rc)
		return rc;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		rc = -errno;
		if (rc == -EADDRINUSE)
			snprintf(err, errlen, "comm: rank 0 cannot listen on %s:%d: the port is in use "
			         "(another job or process holds it); pick a free one with "
			         "--master_port / MASTER_PORT", b->addr, b->port);
		else if (rc == -EADDRNOTAVAIL)
			snprintf(err, errlen, "comm: rank 0 cannot listen on %s:%d: not an address of "
			         "this host (MASTER_ADDR must name the machine running rank 0)",
			         b->addr, b->port);
		else
			snprintf(err, errlen, "comm: rank 0 cannot bind %s:%d: %s", b->addr, b->port,
			         strerror(-rc));
		close(fd);
		return rc;
	}
	if (listen(fd, 128) < 0) {
		rc = -errno;
		snprintf(err, errlen, "comm: listen on %s:%d: %s", b->addr, b->port, strerror(-rc));
		close(fd);
		return rc;
	}
	return fd;
}

static int
boot_connect(comm_boot *b, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int rc = resolve_addr(b->addr, b->port, &ss, &sl, err, errlen);
	if (rc)
		return rc;
	int tries = 0, last = 0;
	double t0 = comm_now();
	while (comm_now() < b->deadline) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		tries++;
		if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		last = errno;
		close(fd);
		if (last != ECONNREFUSED && last != ETIMEDOUT && last != ENETUNREACH &&
		    last != EHOSTUNREACH && last != EINTR && last != ECONNRESET)
			break;
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	snprintf(err, errlen, "comm: rank %d could not reach rank 0 at %s:%d after %d tries over "
	         "%.1f s (last error: %s): is rank 0 running, with the same MASTER_ADDR and "
	         "MASTER_PORT? (ZINF_COMM_TIMEOUT_S=%g)", b->c->rank, b->addr, b->port, tries,
	         comm_now() - t0, strerror(last ? last : ETIMEDOUT), b->c->timeout_s);
	return -ECONNREFUSED;
}

static void
fill_hello(const zinf_comm *c, boot_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->magic = BOOT_MAGIC;
	h->version = BOOT_VERSION;
	h->rank = c->rank;
	h->world = c->world;
	h->local_rank = c->local_rank;
	h->backend = c->backend;
	h->pid = getpid();
	if (gethostname(h->host, sizeof(h->host) - 1))
		snprintf(h->host, sizeof(h->host), "?");
}

/* Rank 0: accepts world-1 hellos, checks them, answers each. */
static int
boot_root(comm_boot *b, int lfd, char *err, size_t errlen)
{
	zinf_comm *c = b->c;
	boot_hello mine;
	fill_hello(c, &mine);
	c->peers[0].pid = mine.pid;
	memcpy(c->peers[0].host, mine.host, sizeof(mine.host));
	int joined = 1, rc = 0;
	char why[512] = "";
	while (joined < c->world) {
		int ms = (int)((b->deadline - comm_now()) * 1000);
		if (ms <= 0) {
			char miss[256] = "";
			size_t off = 0;
			for (int r = 1; r < c->world && off < sizeof(miss); r++)
				if (b->fds[r] < 0)
					off += snprintf(miss + off, sizeof(miss) - off, "%s%d",
					                off ? ", " : "", r);
			snprintf(err, errlen, "comm: rank 0 waited %.1f s on %s:%d for %d ranks; "
			         "rank(s) %s never joined (not started, died, or given another "
			         "MASTER_ADDR/MASTER_PORT; ZINF_COMM_TIMEOUT_S=%g)", c->timeout_s, b->addr,
			         b->port, c->world, miss, c->timeout_s);
			return -ETIMEDOUT;
		}
		struct pollfd pf = {lfd, POLLIN, 0};
		int n = poll(&pf, 1, ms > 200 ? 200 : ms);
		if (n <= 0)
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		boot_hello h;
		if (io_full(b, fd, &h, sizeof(h), false, -1, err, errlen) || h.magic != BOOT_MAGIC) {
			close(fd); /* not one of ours (a port scanner, a stale client): ignore it */
			continue;
		}
		h.host[sizeof(h.host) - 1] = 0;
		if (!rc && h.version != BOOT_VERSION) {
			snprintf(why, sizeof(why), "rank %d runs bootstrap version %u, rank 0 %u (mixed "
			         "zinf builds)", h.rank, h.version, BOOT_VERSION);
			rc = -EPROTO;
		} else if (!rc && h.world != c->world) {
			snprintf(why, sizeof(why), "rank %d has WORLD_SIZE %d but rank 0 has %d (every "
			         "rank must be started with the same world size)", h.rank, h.world,
			         c->world);
			rc = -EPROTO;
		} else if (!rc && (h.rank <= 0 || h.rank >= c->world)) {
			snprintf(why, sizeof(why), "a process joined as rank %d; ranks are 1..%d besides "
			         "rank 0", h.rank, c->world - 1);
			rc = -EPROTO;
		} else if (!rc && b->fds[h.rank] >= 0) {
			snprintf(why, sizeof(why), "two processes joined as rank %d (RANK is set the "
			         "same for both)", h.rank);
			rc = -EPROTO;
		} else if (!rc && h.backend != (int32_t)c->backend) {
			snprintf(why, sizeof(why), "rank %d uses the %s backend, rank 0 %s", h.rank,
			         zinf_comm_backend_name((zinf_comm_backend)h.backend), zinf_comm_backend_name(c->backend));
			rc = -EPROTO;
		}
		if (h.rank > 0 && h.rank < c->world && b->fds[h.rank] < 0) {
			b->fds[h.rank] = fd;
			c->peers[h.rank].pid = h.pid;
			memcpy(c->peers[h.rank].host, h.host, sizeof(h.host));
			joined++;
		} else {
			boot_reply r = {rc ? rc : -EPROTO, ""};
			snprintf(r.msg, sizeof(r.msg), "%s", why);
			io_full(b, fd, &r, sizeof(r), true, h.rank, err, errlen);
			close(fd);
		}
		if (rc)
			break;
	}
	boot_reply r = {rc, ""};
	snprintf(r.msg, sizeof(r.msg), "%s", why);
	for (int q = 1; q < c->world; q++) {
		if (b->fds[q] < 0)
			continue;
		char e2[256];
		if (io_full(b, b->fds[q], &r, sizeof(r), true, q, e2, sizeof(e2)) == 0 && !rc)
			io_full(b, b->fds[q], c->peers, sizeof(comm_peer) * c->world, true, q, e2,
			        sizeof(e2));
	}
	if (rc)
		snprintf(err, errlen, "comm: bootstrap on %s:%d: %s", b->addr, b->port, why);
	return rc;
}

int
comm_boot_start(zinf_comm *c, const char *addr, int port, comm_boot **out, char *err,
                size_t errlen)
{
	comm_boot *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->c = c;
	b->addr = addr;
	b->port = port;
	b->deadline = comm_now() + c->timeout_s;
	b->nfds = c->rank == 0 ? c->world : 1;
	b->fds = malloc(sizeof(int) * b->nfds);
	if (!b->fds) {
		free(b);
		return -ENOMEM;
	}
	for (int i = 0; i < b->nfds; i++)
		b->fds[i] = -1;
	int rc;
	if (c->rank == 0) {
		int lfd = boot_listen(b, err, errlen);
		if (lfd < 0) {
			comm_boot_close(b);
			return lfd;
		}
		rc = boot_root(b, lfd, err, errlen);
		close(lfd);
	} else {
		int fd = boot_connect(b, err, errlen);
		if (fd < 0) {
			comm_boot_close(b);
			return fd;
		}
		b->fds[0] = fd;
		boot_hello h;
		boot_reply r;
		fill_hello(c, &h);
		rc = io_full(b, fd, &h, sizeof(h), true, 0, err, errlen);
		if (!rc)
			rc = io_full(b, fd, &r, sizeof(r), false, 0, err, errlen);
		if (!rc && r.status) {
			r.msg[sizeof(r.msg) - 1] = 0;
			snprintf(err, errlen, "comm: rank 0 at %s:%d rejected rank %d: %s", addr, port,
			         c->rank, r.msg);
			rc = r.status;
		}
		if (!rc)
			rc = io_full(b, fd, c->peers, sizeof(comm_peer) * c->world, false, 0, err,
			             errlen);
	}
	if (rc) {
		comm_boot_close(b);
		return rc;
	}
	*out = b;
	return 0;
}

int
comm_boot_bcast(comm_boot *b, void *buf, size_t len, char *err, size_t errlen)
{
	if (b->c->rank != 0)
		return io_full(b, b->fds[0], buf, len, false, 0, err, errlen);
	for (int q = 1; q < b->c->world; q++) {
		int rc = io_full(b, b->fds[q], buf, len, true, q, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int
comm_boot_barrier(comm_boot *b, char *err, size_t errlen)
{
	char x = 1;
	int rc;
	if (b->c->rank != 0) {
		if ((rc = io_full(b, b->fds[0], &x, 1, true, 0, err, errlen)))
			return rc;
		return io_full(b, b->fds[0], &x, 1, false, 0, err, errlen);
	}
	for (int q = 1; q < b->c->world; q++)
		if ((rc = io_full(b, b->fds[q], &x, 1, false, q, err, errlen)))
			return rc;
	for (int q = 1; q < b->c->world; q++)
		if ((rc = io_full(b, b->fds[q], &x, 1, true, q, err, errlen)))
			return rc;
	return 0;
}

void
comm_boot_close(comm_boot *b)
{
	if (!b)
		return;
	for (int i = 0; i < b->nfds; i++)
		if (b->fds[i] >= 0)
			close(b->fds[i]);
	free(b->fds);
	free(b);
}

/* ---- the comm object ---- */

int
zinf_comm_init(const zinf_comm_opts *in, zinf_comm **out, char *err, size_t errlen)
{
	zinf_comm_opts defaults, o;
	*out = NULL;
	if (!in) {
		zinf_comm_opts_init(&defaults);
		in = &defaults;
	}
	int rc = resolve_opts(in, &o, err, errlen);
	if (rc)
		return rc;
	zinf_comm *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->backend = o.backend;
	c->rank = o.rank;
	c->world = o.world_size;
	c->local_rank = o.local_rank;
	c->timeout_s = o.timeout_s;
	c->peers = calloc(c->world, sizeof(comm_peer));
	if (!c->peers) {
		free(c);
		return -ENOMEM;
	}
	comm_boot *b = NULL;
	if (c->world > 1) {
		rc = comm_boot_start(c, o.master_addr, o.master_port, &b, err, errlen);
		if (rc) {
			free(c->peers);
			free(c);
			return rc;
		}
	} else {
		c->peers[0].pid = getpid();
		gethostname(c->peers[0].host, sizeof(c->peers[0].host) - 1);
	}
	if (o.backend == ZINF_COMM_SHM)
		rc = comm_shm_create(c, b, o.shm_slot_bytes, err, errlen);
	else
		rc = comm_nccl_create(c, b, o.device >= 0 ? o.device : o.local_rank, err, errlen);
	comm_boot_close(b);
	if (rc) {
		free(c->peers);
		free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void
zinf_comm_destroy(zinf_comm *c)
{
	if (!c)
		return;
	if (c->ops)
		c->ops->destroy(c);
	free(c->peers);
	free(c);
}

int zinf_comm_rank(const zinf_comm *c) { return c->rank; }
int zinf_comm_world_size(const zinf_comm *c) { return c->world; }
int zinf_comm_local_rank(const zinf_comm *c) { return c->local_rank; }
zinf_comm_backend zinf_comm_backend_of(const zinf_comm *c) { return c->backend; }
double zinf_comm_timeout_s(const zinf_comm *c) { return c->timeout_s; }
const char *zinf_comm_error(const zinf_comm *c) { return c->err; }
void *zinf_comm_stream(const zinf_comm *c) { return c->stream; }

static int
submit(zinf_comm *c, comm_call *call)
{
	if (c->broken)
		return c->broken;
	call->seq = ++c->seq;
	const char *name = comm_kind_name(call->kind);
	if (call->dt != ZINF_COMM_F32 && call->dt != ZINF_COMM_BF16)
		return comm_fail(c, -EINVAL, "%s #%llu: unknown dtype %d", name,
		                 (unsigned long long)call->seq, (int)call->dt);
	if (call->op > ZINF_COMM_MAX)
		return comm_fail(c, -EINVAL, "%s #%llu: unknown reduction %d", name,
		                 (unsigned long long)call->seq, (int)call->op);
	if ((call->kind == COMM_BROADCAST || call->kind == COMM_REDUCE) &&
	    (call->root < 0 || call->root >= c->world))
		return comm_fail(c, -EINVAL, "%s #%llu: root %d is not a rank (0..%d)", name,
		                 (unsigned long long)call->seq, call->root, c->world - 1);
	if (call->count && call->kind != COMM_BARRIER && (!call->recv || !call->send))
		return comm_fail(c, -EINVAL, "%s #%llu: NULL buffer for %zu elements", name,
		                 (unsigned long long)call->seq, call->count);
	if (call->count > ((size_t)1 << 40) / c->world)
		return comm_fail(c, -EINVAL, "%s #%llu: %zu elements per rank is beyond the 2^40 "
		                 "limit", name, (unsigned long long)call->seq, call->count);
	return c->ops->run(c, call);
}

static int
run_sync(zinf_comm *c, comm_call *call)
{
	int rc = submit(c, call);
	if (rc || call->async)
		return rc;
	return zinf_comm_wait(c);
}

#define CALL(k, s, r, n, d, o, rt, as) \
	(comm_call) { .kind = (k), .send = (s), .recv = (r), .count = (n), .dt = (d), .op = (o), \
		      .root = (rt), .async = (as) }

int
zinf_comm_all_gather(zinf_comm *c, const void *send, void *recv, size_t count,
                     zinf_comm_dtype dt)
{
	comm_call k = CALL(COMM_ALL_GATHER, send, recv, count, dt, ZINF_COMM_SUM, 0, false);
	return run_sync(c, &k);
}

int
zinf_comm_reduce_scatter(zinf_comm *c, const void *send, void *recv, size_t count,
                         zinf_comm_dtype dt, zinf_comm_op op)
{
	comm_call k = CALL(COMM_REDUCE_SCATTER, send, recv, count, dt, op, 0, false);
	return run_sync(c, &k);
}

int
zinf_comm_all_reduce(zinf_comm *c, const void *send, void *recv, size_t count,
                     zinf_comm_dtype dt, zinf_comm_op op)
{
	comm_call k = CALL(COMM_ALL_REDUCE, send, recv, count, dt, op, 0, false);
	return run_sync(c, &k);
}

int
zinf_comm_broadcast(zinf_comm *c, void *buf, size_t count, zinf_comm_dtype dt, int root)
{
	comm_call k = CALL(COMM_BROADCAST, buf, buf, count, dt, ZINF_COMM_SUM, root, false);
	return run_sync(c, &k);
}

int
zinf_comm_reduce(zinf_comm *c, const void *send, void *recv, size_t count, zinf_comm_dtype dt,
                 zinf_comm_op op, int root)
{
	comm_call k = CALL(COMM_REDUCE, send, recv, count, dt, op, root, false);
	return run_sync(c, &k);
}

int
zinf_comm_barrier(zinf_comm *c)
{
	comm_call k = CALL(COMM_BARRIER, NULL, NULL, 0, ZINF_COMM_F32, ZINF_COMM_SUM, 0, false);
	return run_sync(c, &k);
}

int
zinf_comm_all_gather_async(zinf_comm *c, const void *send, void *recv, size_t count,
                           zinf_comm_dtype dt)
{
	comm_call k = CALL(COMM_ALL_GATHER, send, recv, count, dt, ZINF_COMM_SUM, 0, true);
	return run_sync(c, &k);
}

int
zinf_comm_reduce_scatter_async(zinf_comm *c, const void *send, void *recv, size_t count,
                               zinf_comm_dtype dt, zinf_comm_op op)
{
	comm_call k = CALL(COMM_REDUCE_SCATTER, send, recv, count, dt, op, 0, true);
	return run_sync(c, &k);
}

int
zinf_comm_all_reduce_async(zinf_comm *c, const void *send, void *recv, size_t count,
                           zinf_comm_dtype dt, zinf_comm_op op)
{
	comm_call k = CALL(COMM_ALL_REDUCE, send, recv, count, dt, op, 0, true);
	return run_sync(c, &k);
}

int
zinf_comm_broadcast_async(zinf_comm *c, void *buf, size_t count, zinf_comm_dtype dt, int root)
{
	comm_call k = CALL(COMM_BROADCAST, buf, buf, count, dt, ZINF_COMM_SUM, root, true);
	return run_sync(c, &k);
}

int
zinf_comm_reduce_async(zinf_comm *c, const void *send, void *recv, size_t count,
                       zinf_comm_dtype dt, zinf_comm_op op, int root)
{
	comm_call k = CALL(COMM_REDUCE, send, recv, count, dt, op, root, true);
	return run_sync(c, &k);
}

int
zinf_comm_wait(zinf_comm *c)
{
	if (c->broken)
		return c->broken;
	return c->ops->wait ? c->ops->wait(c) : 0;
}

int
zinf_comm_wait_for_stream(zinf_comm *c, void *stream)
{
	if (c->broken)
		return c->broken;
	return c->ops->wait_for_stream ? c->ops->wait_for_stream(c, stream) : 0;
}

int
zinf_comm_stream_wait_comm(zinf_comm *c, void *stream)
{
	if (c->broken)
		return c->broken;
	return c->ops->stream_wait_comm ? c->ops->stream_wait_comm(c, stream) : 0;
}

int
zinf_comm_cuda_device_count(void)
{
#ifdef ZINF_HAVE_CUDA
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError(); /* no driver / no device: clear the sticky error */
		return 0;
	}
	return n;
#else
	return 0;
#endif
}

#ifndef ZINF_HAVE_NCCL
int
comm_nccl_create(zinf_comm *c, comm_boot *b, int device, char *err, size_t errlen)
{
	snprintf(err, errlen, "comm: the nccl backend is not in this build of zinf (CPU-only, or "
	         "NCCL was not found at build time); use CPU ranks: ZINF_COMM_BACKEND=shm or "
	         "zinf launch --cpu");
	return -ENOTSUP;
}
#endif
