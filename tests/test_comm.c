/* engine/comm and zinf launch. Ranks are forked children of this test (the shm backend on
 * host buffers); the launcher suites run the zinf binary next to this one (../bin/zinf, or
 * argv[2]). Suites:
 *   shm2, shm4   every collective, f32 and bf16, exact values, in place, chunked through a
 *                small staging slot, async + wait; determinism: random inputs reduced bitwise
 *                as the documented rank order says, identical on every rank
 *   fault        a rank that exits mid-job, one that hangs, ranks that call different
 *                collectives: the others fail within the (short) timeout naming the rank
 *   boot         port in use, rank 0 unreachable, world sizes that differ, world size 1
 *   launch       zinf launch --cpu: 2 and 4 ranks, "[rank r] " prefixes, a failing rank named
 *                with its status, a rank killed by a signal, --num_gpus without GPUs
 *   nccl         (gpu) zinf launch --num_gpus 2 -- comm-selftest, and a hanging rank timing out
 */
#include "test_ranks.h"
#include "test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "engine/comm.h"

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct job {
	int world, port;
	double timeout_s;
	size_t slot;
	int variant; /* what the rank function does, per suite */
} job;

typedef int (*rank_fn)(const job *j, int rank);

static int
open_comm(const job *j, int rank, int world, zinf_comm **c, char *err, size_t errlen)
{
	zinf_comm_opts o;
	zinf_comm_opts_init(&o);
	o.backend = ZINF_COMM_SHM;
	o.rank = rank;
	o.world_size = world;
	o.local_rank = rank;
	o.master_port = j->port;
	o.master_addr = "127.0.0.1";
	o.timeout_s = j->timeout_s;
	o.shm_slot_bytes = j->slot;
	return zinf_comm_init(&o, c, err, errlen);
}

/* Forks j->world ranks running fn; codes[r] gets each exit status (or 100 + signal). Ranks
 * still running after limit_s seconds are killed (a failure: the comm must never hang). */
static void
run_ranks(const job *j, rank_fn fn, int *codes, double limit_s)
{
	pid_t pids[16];
	fflush(stdout);
	fflush(stderr);
	for (int r = 0; r < j->world; r++) {
		pids[r] = fork();
		if (pids[r] == 0)
			exit(fn(j, r));
		codes[r] = -1;
	}
	double t0 = now_s();
	int left = j->world;
	while (left) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			for (int r = 0; r < j->world; r++)
				if (pids[r] == p) {
					codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
					left--;
				}
			continue;
		}
		if (now_s() - t0 > limit_s) {
			for (int r = 0; r < j->world; r++)
				if (codes[r] < 0) {
					fprintf(stderr, "rank %d still running after %.0f s: killing it\n", r,
					        limit_s);
					kill(pids[r], SIGKILL);
				}
			limit_s = 1e9;
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static int
expect_codes(const char *what, const int *codes, int world, const int *want)
{
	int bad = 0;
	for (int r = 0; r < world; r++)
		if (codes[r] != want[r]) {
			fprintf(stderr, "%s: rank %d ended with %d, expected %d\n", what, r, codes[r],
			        want[r]);
			bad++;
		}
	t_failures += bad;
	return bad;
}

/* ---- shm collectives ---- */

#define FAIL(...)                                                                             \
	do {                                                                                  \
		fprintf(stderr, "rank %d: ", rank);                                           \
		fprintf(stderr, __VA_ARGS__);                                                 \
		fprintf(stderr, "\n");                                                        \
		bad++;                                                                        \
	} while (0)

static float
rnd_f(uint64_t *s)
{
	return (float)((double)(t_rand(s) >> 11) / (double)(1ULL << 53) * 2.0 - 1.0);
}

/* Rank q's random input for the determinism check. */
static void
rnd_input(float *x, size_t n, int q, int round)
{
	uint64_t s = 0x1234567ULL * (uint64_t)(q + 1) + (uint64_t)round * 77 + 1;
	for (size_t i = 0; i < n; i++)
		x[i] = rnd_f(&s);
}

static int
rank_collectives(const job *j, int rank)
{
	char err[1024];
	zinf_comm *c;
	int rc = open_comm(j, rank, j->world, &c, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "rank %d: init: %s\n", rank, err);
		return 1;
	}
	int W = j->world, bad = 0;
	const size_t n = 5000; /* > slot (4 KiB) on purpose: several chunks per call */
	float *a = calloc(n * W, 4), *b = calloc(n * W, 4), *e = calloc(n * W, 4);
	uint16_t *h = calloc(n * W, 2), *h2 = calloc(n * W, 2);
	float *all = calloc(n * W, 4);
	if (!a || !b || !e || !h || !h2 || !all)
		abort();
	if (zinf_comm_rank(c) != rank || zinf_comm_world_size(c) != W ||
	    zinf_comm_backend_of(c) != ZINF_COMM_SHM || zinf_comm_stream(c) != NULL)
		FAIL("rank/world/backend/stream accessors wrong");

	/* all_reduce sum / avg / max, f32, exact integers, and in place. */
	for (size_t i = 0; i < n; i++)
		a[i] = (float)((rank + 1) * (int)(i % 11));
	if ((rc = zinf_comm_all_reduce(c, a, b, n, ZINF_COMM_F32, ZINF_COMM_SUM)))
		FAIL("all_reduce: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++)
		if (b[i] != (float)(W * (W + 1) / 2 * (int)(i % 11))) {
			FAIL("all_reduce sum [%zu] = %g", i, b[i]);
			break;
		}
	if ((rc = zinf_comm_all_reduce(c, a, a, n, ZINF_COMM_F32, ZINF_COMM_AVG)))
		FAIL("all_reduce avg: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++)
		if (a[i] != (float)(W * (W + 1) / 2 * (int)(i % 11)) / (float)W) {
			FAIL("all_reduce avg in place [%zu] = %g", i, a[i]);
			break;
		}
	for (size_t i = 0; i < n; i++)
		a[i] = (float)((i + (size_t)rank) % (size_t)W) - (i == 7 && rank == 1 ? 100.0f : 0);
	if ((rc = zinf_comm_all_reduce(c, a, b, n, ZINF_COMM_F32, ZINF_COMM_MAX)))
		FAIL("all_reduce max: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++)
		if (b[i] != (float)(W - 1)) {
			FAIL("all_reduce max [%zu] = %g", i, b[i]);
			break;
		}
	/* fp16 overflow agreement: one rank's inf flag wins the max. */
	float flag = rank == W - 1 ? INFINITY : 0.0f, got = 0;
	if ((rc = zinf_comm_all_reduce(c, &flag, &got, 1, ZINF_COMM_F32, ZINF_COMM_MAX)) ||
	    !isinf(got))
		FAIL("overflow flag max = %g (%s)", got, zinf_comm_error(c));

	/* all_gather, out of place and in place. */
	for (size_t i = 0; i < n; i++)
		a[i] = (float)(rank * 100000 + (int)i);
	if ((rc = zinf_comm_all_gather(c, a, b, n, ZINF_COMM_F32)))
		FAIL("all_gather: %s", zinf_comm_error(c));
	for (int q = 0; q < W; q++)
		for (size_t i = 0; i < n; i++)
			if (b[q * n + i] != (float)(q * 100000 + (int)i)) {
				FAIL("all_gather [%d][%zu] = %g", q, i, b[q * n + i]);
				q = W;
				break;
			}
	memset(e, 0, n * W * 4);
	memcpy(e + rank * n, a, n * 4);
	if ((rc = zinf_comm_all_gather(c, e + rank * n, e, n, ZINF_COMM_F32)) ||
	    memcmp(e, b, n * W * 4))
		FAIL("all_gather in place differs (%s)", zinf_comm_error(c));

	/* reduce_scatter sum and avg; in place. send[j] = (rank+1) * (j % 13). */
	for (size_t jj = 0; jj < n * W; jj++)
		a[jj] = (float)((rank + 1) * (int)(jj % 13));
	if ((rc = zinf_comm_reduce_scatter(c, a, b, n, ZINF_COMM_F32, ZINF_COMM_SUM)))
		FAIL("reduce_scatter: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++) {
		size_t jj = (size_t)rank * n + i;
		if (b[i] != (float)(W * (W + 1) / 2 * (int)(jj % 13))) {
			FAIL("reduce_scatter sum [%zu] = %g", i, b[i]);
			break;
		}
	}
	if ((rc = zinf_comm_reduce_scatter(c, a, a + rank * n, n, ZINF_COMM_F32, ZINF_COMM_AVG)))
		FAIL("reduce_scatter avg: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++)
		if (a[rank * n + i] != b[i] / (float)W) {
			FAIL("reduce_scatter avg in place [%zu] = %g, want %g", i, a[rank * n + i],
			     b[i] / (float)W);
			break;
		}

	/* broadcast from every root; async form + wait. */
	for (int root = 0; root < W; root++) {
		for (size_t i = 0; i < n; i++)
			a[i] = rank == root ? (float)(root * 7 + (int)(i % 101)) : -5.0f;
		if ((rc = zinf_comm_broadcast_async(c, a, n, ZINF_COMM_F32, root)) ||
		    (rc = zinf_comm_wait(c)))
			FAIL("broadcast root %d: %s", root, zinf_comm_error(c));
		for (size_t i = 0; i < n; i++)
			if (a[i] != (float)(root * 7 + (int)(i % 101))) {
				FAIL("broadcast root %d [%zu] = %g", root, i, a[i]);
				break;
			}
	}

	/* reduce to every root, in place (async + wait): the root gets the sum, the others'
	 * buffers stay as they were (stage 0-2 bucketed gradient reduction relies on both). */
	for (int root = 0; root < W; root++) {
		for (size_t i = 0; i < n; i++)
			a[i] = (float)((rank + 1) * (int)(i % 17) + root);
		if ((rc = zinf_comm_reduce_async(c, a, a, n, ZINF_COMM_F32, ZINF_COMM_SUM, root)) ||
		    (rc = zinf_comm_wait(c)))
			FAIL("reduce root %d: %s", root, zinf_comm_error(c));
		for (size_t i = 0; i < n; i++) {
			float want = rank == root ? (float)(W * (W + 1) / 2 * (int)(i % 17) + W * root)
			                          : (float)((rank + 1) * (int)(i % 17) + root);
			if (a[i] != want) {
				FAIL("reduce root %d [%zu] = %g on rank %d, want %g", root, i, a[i],
				     rank, want);
				break;
			}
		}
	}

	/* bf16: all_reduce and reduce_scatter of small integers, all_gather of bit patterns. */
	for (size_t i = 0; i < n * W; i++)
		h[i] = zinf_comm_f32_to_bf16((float)(rank + (int)(i % 5)));
	if ((rc = zinf_comm_all_reduce(c, h, h2, n, ZINF_COMM_BF16, ZINF_COMM_SUM)))
		FAIL("bf16 all_reduce: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++)
		if (zinf_comm_bf16_to_f32(h2[i]) != (float)(W * (W - 1) / 2 + W * (int)(i % 5))) {
			FAIL("bf16 all_reduce [%zu] = %g", i, zinf_comm_bf16_to_f32(h2[i]));
			break;
		}
	if ((rc = zinf_comm_reduce_scatter_async(c, h, h2, n, ZINF_COMM_BF16, ZINF_COMM_AVG)) ||
	    (rc = zinf_comm_wait(c)))
		FAIL("bf16 reduce_scatter: %s", zinf_comm_error(c));
	for (size_t i = 0; i < n; i++) {
		size_t jj = (size_t)rank * n + i;
		float want = (float)(W - 1) / 2.0f + (float)(jj % 5);
		if (zinf_comm_bf16_to_f32(h2[i]) != want) {
			FAIL("bf16 reduce_scatter avg [%zu] = %g, want %g", i,
			     zinf_comm_bf16_to_f32(h2[i]), want);
			break;
		}
	}
	for (size_t i = 0; i < n; i++)
		h[i] = (uint16_t)(rank * 4099 + (int)i);
	if ((rc = zinf_comm_all_gather_async(c, h, h2, n, ZINF_COMM_BF16)) ||
	    (rc = zinf_comm_wait(c)))
		FAIL("bf16 all_gather: %s", zinf_comm_error(c));
	for (int q = 0; q < W; q++)
		for (size_t i = 0; i < n; i++)
			if (h2[q * n + i] != (uint16_t)(q * 4099 + (int)i)) {
				FAIL("bf16 all_gather [%d][%zu] = %u", q, i, h2[q * n + i]);
				q = W;
				break;
			}

	/* Zero elements and barriers keep the ranks in step. */
	if ((rc = zinf_comm_all_reduce(c, a, b, 0, ZINF_COMM_F32, ZINF_COMM_SUM)) ||
	    (rc = zinf_comm_barrier(c)) || (rc = zinf_comm_barrier(c)))
		FAIL("empty all_reduce / barrier: %s", zinf_comm_error(c));

	/* Determinism: random inputs; the sum must be, bit for bit, x_0 + x_1 + ... + x_{W-1}
	 * in fp32 (avg: that / W), the same on every rank and in both rounds. */
	for (int round = 0; round < 2; round++) {
		rnd_input(a, n, rank, round);
		if ((rc = zinf_comm_all_reduce(c, a, b, n, ZINF_COMM_F32, ZINF_COMM_SUM)))
			FAIL("random all_reduce: %s", zinf_comm_error(c));
		for (int q = 0; q < W; q++)
			rnd_input(all + q * n, n, q, round);
		for (size_t i = 0; i < n; i++) {
			float acc = all[i];
			for (int q = 1; q < W; q++)
				acc += all[q * n + i];
			e[i] = acc;
		}
		if (memcmp(b, e, n * 4))
			FAIL("random all_reduce is not the rank-order fp32 sum (round %d)", round);
		/* Every rank's result, gathered: all identical. */
		if ((rc = zinf_comm_all_gather(c, b, all, n, ZINF_COMM_F32)))
			FAIL("gather of results: %s", zinf_comm_error(c));
		for (int q = 1; q < W; q++)
			if (memcmp(all, all + q * n, n * 4))
				FAIL("rank %d's sum differs from rank 0's", q);
		/* bf16 avg: widened, summed in rank order, divided, rounded once. */
		for (size_t i = 0; i < n; i++)
			h[i] = zinf_comm_f32_to_bf16(a[i]);
		if ((rc = zinf_comm_all_reduce(c, h, h2, n, ZINF_COMM_BF16, ZINF_COMM_AVG)))
			FAIL("random bf16 all_reduce: %s", zinf_comm_error(c));
		for (int q = 0; q < W; q++)
			rnd_input(all + q * n, n, q, round);
		bool same = true;
		for (size_t i = 0; i < n && same; i++) {
			float acc = zinf_comm_bf16_to_f32(zinf_comm_f32_to_bf16(all[i]));
			for (int q = 1; q < W; q++)
				acc += zinf_comm_bf16_to_f32(zinf_comm_f32_to_bf16(all[q * n + i]));
			acc /= (float)W;
			same = zinf_comm_f32_to_bf16(acc) == h2[i];
			if (!same)
				FAIL("bf16 avg [%zu]: got %04x want %04x", i, h2[i],
				     zinf_comm_f32_to_bf16(acc));
		}
	}
	zinf_comm_destroy(c);
	free(a);
	free(b);
	free(e);
	free(h);
	free(h2);
	free(all);
	return bad ? 1 : 0;
}

static void
suite_shm(int world)
{
	job j = {.world = world, .port = t_free_port(), .timeout_s = 20, .slot = 4096};
	int codes[16], want[16] = {0};
	double t0 = now_s();
	run_ranks(&j, rank_collectives, codes, 60);
	expect_codes("collectives", codes, world, want);
	printf("shm%d: collectives on %d ranks in %.2f s\n", world, world, now_s() - t0);
	/* Default slot (4 MiB): one chunk per call. */
	j.port = t_free_port();
	j.slot = 0;
	run_ranks(&j, rank_collectives, codes, 60);
	expect_codes("collectives (default slot)", codes, world, want);
}

/* ---- faults ---- */

enum { V_EXIT = 1, V_HANG = 2, V_MISMATCH = 3 };

static int
rank_fault(const job *j, int rank)
{
	char err[1024];
	zinf_comm *c;
	if (open_comm(j, rank, j->world, &c, err, sizeof(err))) {
		fprintf(stderr, "rank %d: init: %s\n", rank, err);
		return 1;
	}
	float x[64] = {0}, y[64];
	if (zinf_comm_all_reduce(c, x, y, 64, ZINF_COMM_F32, ZINF_COMM_SUM)) {
		fprintf(stderr, "rank %d: first all_reduce: %s\n", rank, zinf_comm_error(c));
		return 1;
	}
	if (rank == 1 && j->variant == V_EXIT)
		_exit(9); /* dies between collectives, comm not closed */
	if (rank == 1 && j->variant == V_HANG) {
		sleep(30);
		_exit(9);
	}
	double t0 = now_s();
	int rc;
	if (j->variant == V_MISMATCH && rank == 1)
		rc = zinf_comm_all_gather(c, x, y, 64 / j->world, ZINF_COMM_F32);
	else
		rc = zinf_comm_all_reduce(c, x, y, 64, ZINF_COMM_F32, ZINF_COMM_SUM);
	double dt = now_s() - t0;
	const char *m = zinf_comm_error(c);
	int bad = 0;
	if (rc == 0)
		FAIL("collective #2 succeeded without rank 1");
	if (j->variant == V_MISMATCH) {
		if (rc != -EPROTO && rc != -EPIPE)
			FAIL("rc %d, want -EPROTO: %s", rc, m);
		if (!strstr(m, "disagree") || !strstr(m, "all_gather #2") ||
		    !strstr(m, "all_reduce #2"))
			FAIL("message does not name both calls: %s", m);
	} else {
		if (rc != -ETIMEDOUT && rc != -EPIPE)
			FAIL("rc %d, want -ETIMEDOUT or -EPIPE: %s", rc, m);
		if (!strstr(m, "all_reduce #2"))
			FAIL("message does not name the collective: %s", m);
		if (!strstr(m, j->variant == V_EXIT ? "rank 1 (pid" : "rank(s) 1 did not arrive"))
			FAIL("message does not name rank 1: %s", m);
		if (dt > j->timeout_s + 1.0)
			FAIL("took %.2f s with a %.1f s timeout", dt, j->timeout_s);
	}
	if (rank == 0)
		printf("  rank 0 after %.2f s: %s\n", dt, m);
	/* Broken comm: later calls fail at once with the same error. */
	if (zinf_comm_barrier(c) != rc)
		FAIL("a broken comm accepted another collective");
	zinf_comm_destroy(c);
	return bad ? 1 : 0;
}

static void
suite_fault(void)
{
	int codes[16];
	job j = {.world = 3, .timeout_s = 1.5, .variant = V_EXIT};
	j.port = t_free_port();
	printf("fault: rank 1 exits between collectives\n");
	run_ranks(&j, rank_fault, codes, 20);
	int want_exit[3] = {0, 9, 0};
	expect_codes("exit", codes, 3, want_exit);

	j.variant = V_HANG;
	j.port = t_free_port();
	j.timeout_s = 1.0;
	printf("fault: rank 1 hangs\n");
	double t0 = now_s();
	fflush(stdout);
	fflush(stderr);
	pid_t p = fork();
	if (p == 0) {
		run_ranks(&j, rank_fault, codes, 3);
		/* rank 1 is killed by the limit: 100 + SIGKILL */
		int want_hang[3] = {0, 100 + SIGKILL, 0};
		exit(expect_codes("hang", codes, 3, want_hang) ? 1 : 0);
	}
	int st;
	waitpid(p, &st, 0);
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "hang case failed (status %#x)", st);
	T_CHECK(now_s() - t0 < 10, "hang case took %.1f s", now_s() - t0);

	j.variant = V_MISMATCH;
	j.world = 2;
	j.port = t_free_port();
	j.timeout_s = 5;
	printf("fault: ranks call different collectives\n");
	run_ranks(&j, rank_fault, codes, 20);
	int want_mm[2] = {0, 0};
	expect_codes("mismatch", codes, 2, want_mm);
}

/* ---- bootstrap ---- */

static int
rank_boot_world(const job *j, int rank)
{
	char err[1024] = "";
	zinf_comm *c = NULL;
	/* rank 1 claims a world of 3 */
	int rc = open_comm(j, rank, rank == 1 ? 3 : 2, &c, err, sizeof(err));
	if (rc == 0) {
		fprintf(stderr, "rank %d: init with mismatched world sizes succeeded\n", rank);
		zinf_comm_destroy(c);
		return 1;
	}
	if (!strstr(err, "WORLD_SIZE 3") || !strstr(err, "rank 0 has 2")) {
		fprintf(stderr, "rank %d: message does not name both world sizes: %s\n", rank, err);
		return 1;
	}
	if (rank == 0)
		printf("  %s\n", err);
	return 0;
}

static void
suite_boot(void)
{
	char err[1024];
	zinf_comm *c = NULL;
	/* Port in use. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	T_CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) && !listen(fd, 1) &&
	                !getsockname(fd, (struct sockaddr *)&a, &l), "listening socket");
	job j = {.world = 2, .port = ntohs(a.sin_port), .timeout_s = 1};
	int rc = open_comm(&j, 0, 2, &c, err, sizeof(err));
	T_CHECK(rc == -EADDRINUSE && strstr(err, "in use") && strstr(err, "--master_port"),
	        "port in use: rc %d: %s", rc, err);
	printf("  %s\n", err);
	close(fd);

	/* Nobody listening: retries, then a clear error within the timeout. */
	j.port = t_free_port();
	j.timeout_s = 0.8;
	double t0 = now_s();
	rc = open_comm(&j, 1, 2, &c, err, sizeof(err));
	double dt = now_s() - t0;
	T_CHECK(rc == -ECONNREFUSED && strstr(err, "could not reach rank 0") && strstr(err, "tries"),
	        "refused: rc %d: %s", rc, err);
	T_CHECK(dt >= 0.7 && dt < 3, "gave up after %.2f s with a 0.8 s timeout", dt);
	printf("  %s\n", err);

	/* Rank 0 alone waits for the others, then names the missing ranks. */
	j.port = t_free_port();
	j.timeout_s = 0.5;
	rc = open_comm(&j, 0, 3, &c, err, sizeof(err));
	T_CHECK(rc == -ETIMEDOUT && strstr(err, "rank(s) 1, 2 never joined"), "rc %d: %s", rc, err);

	/* World sizes that differ. */
	int codes[2], want[2] = {0, 0};
	j.port = t_free_port();
	j.timeout_s = 5;
	run_ranks(&j, rank_boot_world, codes, 20);
	expect_codes("world mismatch", codes, 2, want);

	/* World size 1 from an empty environment. */
	unsetenv("RANK");
	unsetenv("WORLD_SIZE");
	unsetenv("LOCAL_RANK");
	setenv("ZINF_COMM_BACKEND", "shm", 1);
	rc = zinf_comm_init(NULL, &c, err, sizeof(err));
	T_CHECK(rc == 0, "world 1: %s", err);
	if (rc == 0) {
		float x[3] = {1, 2, 3}, y[3];
		T_CHECK(zinf_comm_world_size(c) == 1 && zinf_comm_rank(c) == 0, "world 1 ids");
		T_CHECK(!zinf_comm_all_reduce(c, x, y, 3, ZINF_COMM_F32, ZINF_COMM_AVG) &&
		                !memcmp(x, y, sizeof(x)), "world 1 all_reduce is a copy");
		T_CHECK(!zinf_comm_reduce_scatter(c, x, y, 3, ZINF_COMM_F32, ZINF_COMM_SUM) &&
		                !memcmp(x, y, sizeof(x)), "world 1 reduce_scatter is a copy");
		zinf_comm_destroy(c);
	}
	/* Bad environment values are errors naming the variable. */
	setenv("WORLD_SIZE", "two", 1);
	rc = zinf_comm_init(NULL, &c, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "WORLD_SIZE='two'"), "rc %d: %s", rc, err);
	setenv("WORLD_SIZE", "2", 1);
	setenv("RANK", "2", 1);
	rc = zinf_comm_init(NULL, &c, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "RANK 2 is not below WORLD_SIZE 2"), "rc %d: %s", rc,
	        err);
	setenv("RANK", "0", 1);
	setenv("WORLD_SIZE", "1", 1);
	setenv("ZINF_COMM_TIMEOUT_S", "-3", 1);
	rc = zinf_comm_init(NULL, &c, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "ZINF_COMM_TIMEOUT_S='-3'"), "rc %d: %s", rc, err);
	unsetenv("ZINF_COMM_TIMEOUT_S");
	unsetenv("RANK");
	unsetenv("WORLD_SIZE");
	unsetenv("ZINF_COMM_BACKEND");

	/* bf16 rounding: nearest even, NaN stays NaN. */
	T_CHECK(zinf_comm_f32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
	T_CHECK(zinf_comm_f32_to_bf16(1.00390625f) == 0x3f80, "tie to even (down)");
	T_CHECK(zinf_comm_f32_to_bf16(1.01171875f) == 0x3f82, "tie to even (up)");
	T_CHECK(isnan(zinf_comm_bf16_to_f32(zinf_comm_f32_to_bf16(NAN))), "NaN");
}

/* ---- the launcher ---- */

static char zinf_bin[4096];

static void
find_zinf(const char *arg)
{
	if (arg) {
		snprintf(zinf_bin, sizeof(zinf_bin), "%s", arg);
		return;
	}
	char self[4000];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	char *s = strrchr(self, '/');
	if (s)
		*s = 0;
	s = strrchr(self, '/');
	if (s)
		*s = 0;
	snprintf(zinf_bin, sizeof(zinf_bin), "%s/bin/zinf", self);
}

/* Runs `zinf launch <args>` with env prefix, output (both streams) into *out. Exit status. */
static int
run_launch(const char *envs, const char *args, char **out)
{
	char path[] = "/tmp/zinf-test-comm-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	close(fd);
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "%s '%s' launch %s > %s 2>&1", envs, zinf_bin, args, path);
	int st = system(cmd);
	FILE *f = fopen(path, "r");
	size_t cap = 1 << 20, len = 0;
	*out = calloc(1, cap + 1);
	if (f) {
		len = fread(*out, 1, cap, f);
		fclose(f);
	}
	(*out)[len] = 0;
	unlink(path);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every non-empty line starts with "[rank " or "zinf launch: ". */
static bool
all_prefixed(const char *s)
{
	while (*s) {
		const char *e = strchr(s, '\n');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n && strncmp(s, "[rank ", 6) && strncmp(s, "zinf launch: ", 13))
			return false;
		s += n + (e ? 1 : 0);
	}
	return true;
}

static void
check_selftest_ok(const char *what, int rc, const char *out, int world, const char *backend)
{
	T_CHECK(rc == 0, "%s: exit %d\n%s", what, rc, out);
	T_CHECK(all_prefixed(out), "%s: unprefixed lines\n%s", what, out);
	char first[64] = "";
	for (int r = 0; r < world; r++) {
		char key[96];
		snprintf(key, sizeof(key), "[rank %d] comm-selftest: rank %d of %d (%s) ok", r, r,
		         world, backend);
		const char *p = strstr(out, key);
		T_CHECK(p, "%s: no '%s'\n%s", what, key, out);
		const char *cs = p ? strstr(p, "checksum ") : NULL;
		if (!cs)
			continue;
		if (!first[0])
			snprintf(first, sizeof(first), "%.25s", cs);
		T_CHECK(!strncmp(first, cs, 25), "%s: rank %d %.25s, rank 0 %s", what, r, cs, first);
	}
}

static void
suite_launch(void)
{
	char *out, args[512];
	int rc;
	if (access(zinf_bin, X_OK)) {
		fprintf(stderr, "launch: %s not found (pass the zinf binary as argv[2])\n", zinf_bin);
		t_failures++;
		return;
	}
	for (int w = 2; w <= 4; w += 2) {
		snprintf(args, sizeof(args), "--cpu --num_gpus %d --master_port %d -- comm-selftest "
		         "--count 30001", w, t_free_port());
		rc = run_launch("", args, &out);
		check_selftest_ok(w == 2 ? "launch 2" : "launch 4", rc, out, w, "shm");
		if (w == 4)
			printf("launch 4 ranks:\n%s", out);
		free(out);
	}
	/* Every line of a multi-line output gets its rank's prefix. */
	snprintf(args, sizeof(args), "--cpu --num_gpus 2 --master_port %d -- --help", t_free_port());
	rc = run_launch("", args, &out);
	T_CHECK(rc == 0 && all_prefixed(out) && strstr(out, "[rank 1] usage: zinf <command>") &&
	                strstr(out, "[rank 0]   launch "), "--help under launch: exit %d\n%s", rc,
	        out);
	free(out);
	/* Rank 1 fails in round 2: exit status 3 is passed on, rank 1 named. */
	snprintf(args, sizeof(args), "--cpu --num_gpus 3 --master_port %d -- comm-selftest "
	         "--count 1000 --fail-rank 1 --fail-at 2", t_free_port());
	double t0 = now_s();
	rc = run_launch("ZINF_COMM_TIMEOUT_S=2", args, &out);
	T_CHECK(rc == 3, "failing rank: exit %d\n%s", rc, out);
	T_CHECK(strstr(out, "zinf launch: failed: rank 1 exited with status 3") != NULL,
	        "failing rank not named\n%s", out);
	T_CHECK(strstr(out, "[rank 1] comm-selftest: rank 1 failing on purpose") != NULL,
	        "rank 1's own line missing or unprefixed\n%s", out);
	T_CHECK(all_prefixed(out), "unprefixed lines\n%s", out);
	T_CHECK(now_s() - t0 < 8, "took %.1f s", now_s() - t0);
	printf("failing rank:\n%s", out);
	free(out);
	/* Rank 0 killed by a signal. */
	snprintf(args, sizeof(args), "--cpu --num_gpus 2 --master_port %d -- comm-selftest "
	         "--count 1000 --fail-rank 0 --fail-signal 9", t_free_port());
	rc = run_launch("ZINF_COMM_TIMEOUT_S=2", args, &out);
	T_CHECK(rc == 128 + 9, "killed rank: exit %d\n%s", rc, out);
	T_CHECK(strstr(out, "rank 0 was killed by signal 9") != NULL, "signal not named\n%s", out);
	free(out);
	/* A hanging rank: the others time out naming it; the launcher stops the hung one. */
	snprintf(args, sizeof(args), "--cpu --num_gpus 2 --grace 1 --master_port %d -- "
	         "comm-selftest --count 1000 --hang-rank 1 --fail-at 2", t_free_port());
	t0 = now_s();
	rc = run_launch("ZINF_COMM_TIMEOUT_S=1", args, &out);
	T_CHECK(rc == 1, "hanging rank: exit %d\n%s", rc, out);
	T_CHECK(strstr(out, "rank(s) 1 did not arrive") != NULL, "hung rank not named\n%s", out);
	T_CHECK(now_s() - t0 < 8, "hang took %.1f s", now_s() - t0);
	free(out);
	/* SIGTERM to the launcher reaches the ranks (one of them hangs, the other waits in a
	 * collective with a long timeout): all gone quickly, exit 128 + SIGTERM. */
	fflush(stdout);
	fflush(stderr);
	int port = t_free_port();
	pid_t lp = fork();
	if (lp == 0) {
		char ps[16];
		snprintf(ps, sizeof(ps), "%d", port);
		int dn = open("/dev/null", O_WRONLY);
		dup2(dn, STDOUT_FILENO);
		dup2(dn, STDERR_FILENO);
		setenv("ZINF_COMM_TIMEOUT_S", "60", 1);
		execl(zinf_bin, "zinf", "launch", "--cpu", "--num_gpus", "2", "--master_port", ps,
		      "--", "comm-selftest", "--hang-rank", "0", "--fail-at", "1", (char *)NULL);
		_exit(127);
	}
	struct timespec half = {0, 500 * 1000 * 1000};
	nanosleep(&half, NULL);
	kill(lp, SIGTERM);
	t0 = now_s();
	int st = 0;
	while (waitpid(lp, &st, WNOHANG) == 0 && now_s() - t0 < 10)
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
	if (now_s() - t0 >= 10) {
		kill(lp, SIGKILL);
		waitpid(lp, &st, 0);
		T_CHECK(0, "launcher still running 10 s after SIGTERM");
	} else {
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM,
		        "launcher after SIGTERM: status %#x", st);
	}
	/* Usage errors. */
	if (zinf_comm_cuda_device_count() == 0) {
		rc = run_launch("", "--num_gpus 2 -- comm-selftest", &out);
		T_CHECK(rc == 2 && strstr(out, "--cpu"), "no GPU without --cpu: exit %d\n%s", rc, out);
		free(out);
	}
	rc = run_launch("", "--cpu --num_gpus 2", &out);
	T_CHECK(rc == 2 && strstr(out, "no command after --"), "no command: exit %d\n%s", rc, out);
	free(out);
	rc = run_launch("", "--cpu --num_gpus 0 -- comm-selftest", &out);
	T_CHECK(rc == 2 && strstr(out, "--num_gpus needs an integer"), "exit %d\n%s", rc, out);
	free(out);
}

static int
suite_nccl(void)
{
	int ndev = zinf_comm_cuda_device_count();
	if (ndev < 2) {
		printf("nccl: %d GPU(s) here, needs 2: skipped\n", ndev);
		return T_EXIT_SKIP;
	}
	char *out, args[512];
	snprintf(args, sizeof(args), "--num_gpus 2 --master_port %d -- comm-selftest "
	         "--count 4000037", t_free_port());
	int rc = run_launch("", args, &out);
	printf("%s", out);
	check_selftest_ok("nccl launch 2", rc, out, 2, "nccl");
	free(out);
	snprintf(args, sizeof(args), "--num_gpus 2 --grace 2 --master_port %d -- comm-selftest "
	         "--count 1000 --hang-rank 1 --fail-at 2", t_free_port());
	double t0 = now_s();
	rc = run_launch("ZINF_COMM_TIMEOUT_S=3", args, &out);
	printf("%s", out);
	T_CHECK(rc != 0 && strstr(out, "did not complete within"), "nccl hang: exit %d", rc);
	T_CHECK(now_s() - t0 < 30, "nccl hang took %.1f s", now_s() - t0);
	free(out);
	return t_result("test_comm nccl");
}

int
main(int argc, char **argv)
{
	const char *suite = argc > 1 ? argv[1] : "all";
	find_zinf(argc > 2 ? argv[2] : NULL);
	signal(SIGPIPE, SIG_IGN);
	bool all = !strcmp(suite, "all");
	if (!strcmp(suite, "nccl"))
		return suite_nccl();
	if (all || !strcmp(suite, "shm2"))
		suite_shm(2);
	if (all || !strcmp(suite, "shm4"))
		suite_shm(4);
	if (all || !strcmp(suite, "fault"))
		suite_fault();
	if (all || !strcmp(suite, "boot"))
		suite_boot();
	if (all || !strcmp(suite, "launch"))
		suite_launch();
	char name[64];
	snprintf(name, sizeof(name), "test_comm %s", suite);
	return t_result(name);
}
