/* zinf launch: one process per local rank running a zinf subcommand, torchrun-style
 * environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
 * ZINF_COMM_BACKEND), every output line prefixed with "[rank r] ", SIGINT/SIGTERM forwarded,
 * and the first rank that fails named; the others are stopped (SIGTERM, then SIGKILL after the
 * grace period). Each child is re-executed from /proc/self/exe in its own process group (so a
 * terminal's Ctrl-C reaches it once, through us) with PR_SET_PDEATHSIG so it cannot outlive
 * the launcher. No CUDA_VISIBLE_DEVICES: rank r uses device LOCAL_RANK.
 *
 * Exit status: 0 when every rank exits 0; else the first failing rank's exit status, or
 * 128 + signal when it was killed; 130/143 when the launcher itself was interrupted; 2 for a
 * usage error.
 *
 * Also here: the hidden `zinf comm-selftest`, a few collectives with exactly known results,
 * for the launcher and comm tests (and a quick check of a new multi-GPU machine). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "engine/comm.h"
#include "iosched/iosched.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf launch --num_gpus N [--num_nodes M --node_rank R]\n"
	        "                   [--master_addr A] [--master_port P] [--cpu] [--grace S]\n"
	        "                   -- <zinf command> [args...]\n\n"
	        "Starts N ranks on this node (global ranks R*N .. R*N+N-1 of M*N) running\n"
	        "`zinf <command> args...`, with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,\n"
	        "MASTER_ADDR (default $MASTER_ADDR, else 127.0.0.1: rank 0 listens on loopback\n"
	        "only), MASTER_PORT (default $MASTER_PORT, else 29500) and ZINF_COMM_BACKEND set. Rank r uses GPU LOCAL_RANK;\n"
	        "--cpu runs CPU ranks (shared-memory comm) instead, on machines without GPUs.\n"
	        "Output lines are prefixed with \"[rank r] \"; SIGINT/SIGTERM go to every rank.\n"
	        "When a rank fails the others get SIGTERM, then SIGKILL after --grace seconds\n"
	        "(default 5), and the launcher exits with that rank's status.\n"
	        "Example: zinf launch --num_gpus 4 -- train --config ds.json --model gpt2-124m\n");
}

/* ---- launcher ---- */

typedef struct child {
	pid_t pid;
	int rank;
	int fd[2];      /* stdout, stderr pipes (read ends); -1 once closed */
	char *buf[2];   /* partial line */
	size_t len[2];
	bool cr[2];     /* the last byte was '\r' */
	bool done;
	int status;
} child;

#define LINE_MAX_BYTES 65536

static int sig_pipe[2] = {-1, -1};

static void
on_signal(int sig)
{
	int e = errno;
	unsigned char s = (unsigned char)sig;
	if (write(sig_pipe[1], &s, 1) < 0) {
		/* full pipe: a signal is already pending there */
	}
	errno = e;
}

static void
emit(int out, int rank, const char *p, size_t n)
{
	char pre[32];
	int pl = snprintf(pre, sizeof(pre), "[rank %d] ", rank);
	char *line = malloc((size_t)pl + n + 1);
	if (!line)
		return;
	memcpy(line, pre, (size_t)pl);
	memcpy(line + pl, p, n);
	line[pl + n] = '\n';
	size_t len = (size_t)pl + n + 1, off = 0;
	while (off < len) {
		ssize_t w = write(out, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	free(line);
}

/* Reads what is there; writes every complete line. Returns false at end of stream. */
static bool
pump(child *c, int which)
{
	char tmp[16384];
	ssize_t n = read(c->fd[which], tmp, sizeof(tmp));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	int out = which ? STDERR_FILENO : STDOUT_FILENO;
	if (n <= 0) {
		if (c->len[which])
			emit(out, c->rank, c->buf[which], c->len[which]);
		c->len[which] = 0;
		close(c->fd[which]);
		c->fd[which] = -1;
		return false;
	}
	for (ssize_t i = 0; i < n; i++) {
		char ch = tmp[i];
		/* "\r" ends a line too (progress lines redrawn in place), so "\r\n" gives one. */
		if (ch == '\r' || ch == '\n' || c->len[which] == LINE_MAX_BYTES) {
			bool eol = ch == '\r' || ch == '\n';
			if (c->len[which] || (ch == '\n' && !c->cr[which]))
				emit(out, c->rank, c->buf[which], c->len[which]);
			c->len[which] = 0;
			c->cr[which] = ch == '\r';
			if (eol)
				continue;
		}
		c->cr[which] = false;
		c->buf[which][c->len[which]++] = ch;
	}
	return true;
}

static void
describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(st),
		         strsignal(WTERMSIG(st)), WCOREDUMP(st) ? ", core dumped" : "");
	else
		snprintf(buf, len, "ended with wait status %#x", st);
}

static bool
failed(int st)
{
	return !WIFEXITED(st) || WEXITSTATUS(st) != 0;
}

static void
signal_all(child *ch, int n, int sig)
{
	for (int i = 0; i < n; i++)
		if (!ch[i].done && ch[i].pid > 0)
			kill(-ch[i].pid, sig); /* its process group: the rank and what it started */
}


static pid_t
spawn(const char *exe, char **args, child *c, char **env_kv, int nkv)
{
	int po[2], pe[2];
	if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC))
		return -1;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1); /* the launcher is already gone */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		int dn = open("/dev/null", O_RDONLY);
		if (dn >= 0)
			dup2(dn, STDIN_FILENO);
		dup2(po[1], STDOUT_FILENO);
		dup2(pe[1], STDERR_FILENO);
		for (int i = 0; i < nkv; i++)
			putenv(env_kv[i]);
		execv(exe, args);
		fprintf(stderr, "zinf launch: cannot execute %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* also here, so signal_all never races the child's own setpgid */
	close(po[1]);
	close(pe[1]);
	c->pid = pid;
	c->fd[0] = po[0];
	c->fd[1] = pe[0];
	return pid;
}

static int
parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || errno || *end || x < lo || x > hi) {
		fprintf(stderr, "zinf launch: %s needs an integer in %d..%d, got '%s'\n", flag, lo, hi,
		        v ? v : "(nothing)");
		return -1;
	}
	*out = (int)x;
	return 0;
}

int
zinf_launch_main(int argc, char **argv)
{
	int nproc = 0, nnodes = 1, node_rank = 0, port = 29500;
	double grace = 5.0;
	const char *addr = "127.0.0.1";
	const char *env_port = getenv("MASTER_PORT"), *env_addr = getenv("MASTER_ADDR");
	if (env_addr && *env_addr)
		addr = env_addr;
	if (env_port && *env_port && parse_int("MASTER_PORT", env_port, 1, 65535, &port))
		return 2;
	bool cpu = false;
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--cpu")) {
			cpu = true;
			continue;
		}
		if (!strcmp(a, "--num_gpus") || !strcmp(a, "--nproc_per_node")) {
			if (parse_int(a, v, 1, 1024, &nproc))
				return 2;
		} else if (!strcmp(a, "--num_nodes") || !strcmp(a, "--nnodes")) {
			if (parse_int(a, v, 1, 65536, &nnodes))
				return 2;
		} else if (!strcmp(a, "--node_rank")) {
			if (parse_int(a, v, 0, 65535, &node_rank))
				return 2;
		} else if (!strcmp(a, "--master_port")) {
			if (parse_int(a, v, 1, 65535, &port))
				return 2;
		} else if (!strcmp(a, "--master_addr")) {
			if (!v || !*v) {
				fprintf(stderr, "zinf launch: --master_addr needs a host or address\n");
				return 2;
			}
			addr = v;
		} else if (!strcmp(a, "--grace")) {
			char *end;
			grace = v ? strtod(v, &end) : -1;
			if (!v || *end || !(grace >= 0) || grace > 3600) {
				fprintf(stderr, "zinf launch: --grace needs seconds in 0..3600\n");
				return 2;
			}
		} else {
			fprintf(stderr, "zinf launch: unknown option '%s' (the command to run goes after "
			        "--)\n\n", a);
			usage(stderr);
			return 2;
		}
		i++;
	}
	if (!nproc || i >= argc) {
		fprintf(stderr, "zinf launch: %s\n\n", !nproc ? "--num_gpus N is required"
		                                               : "no command after -- to run");
		usage(stderr);
		return 2;
	}
	if (node_rank >= nnodes) {
		fprintf(stderr, "zinf launch: --node_rank %d is not below --num_nodes %d\n",
		        node_rank, nnodes);
		return 2;
	}
	if (!strcmp(argv[i], "launch")) {
		fprintf(stderr, "zinf launch: the command to run cannot be launch itself\n");
		return 2;
	}
	if (!cpu) {
		int ndev = zinf_comm_cuda_device_count();
		if (ndev < nproc) {
			fprintf(stderr, "zinf launch: --num_gpus %d but this machine has %d usable "
			        "GPU%s%s; run fewer ranks, or CPU ranks with --cpu\n", nproc, ndev,
			        ndev == 1 ? "" : "s",
#ifdef ZINF_HAVE_CUDA
			        ""
#else
			        " (this zinf is a CPU-only build)"
#endif
			);
			return 2;
		}
	}
	char exe[PATH_MAX];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (el <= 0) {
		fprintf(stderr, "zinf launch: cannot find this program (/proc/self/exe): %s\n",
		        strerror(errno));
		return 1;
	}
	exe[el] = 0;
	int nargs = argc - i;
	char **args = calloc((size_t)nargs + 2, sizeof(char *));
	child *ch = calloc((size_t)nproc, sizeof(child));
	if (!args || !ch) {
		free(args);
		free(ch);
		fprintf(stderr, "zinf launch: out of memory\n");
		return 1;
	}
	args[0] = (char *)"zinf";
	for (int k = 0; k < nargs; k++)
		args[k + 1] = argv[i + k];

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK)) {
		fprintf(stderr, "zinf launch: pipe: %s\n", strerror(errno));
		free(args);
		free(ch);
		return 1;
	}
	struct sigaction sa = {0}, old_int, old_term, old_chld;
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGCHLD, &sa, &old_chld);
	signal(SIGPIPE, SIG_IGN);

	int world = nproc * nnodes, rc = 0, first_fail = -1, fail_status = 0, interrupted = 0;
	int alive = 0;
	for (int r = 0; r < nproc; r++) {
		child *c = &ch[r];
		c->rank = node_rank * nproc + r;
		c->fd[0] = c->fd[1] = -1;
		c->buf[0] = malloc(LINE_MAX_BYTES);
		c->buf[1] = malloc(LINE_MAX_BYTES);
		char kv[8][300];
		char *env[8];
		snprintf(kv[0], sizeof(kv[0]), "RANK=%d", c->rank);
		snprintf(kv[1], sizeof(kv[1]), "WORLD_SIZE=%d", world);
		snprintf(kv[2], sizeof(kv[2]), "LOCAL_RANK=%d", r);
		snprintf(kv[3], sizeof(kv[3]), "LOCAL_WORLD_SIZE=%d", nproc);
		snprintf(kv[4], sizeof(kv[4]), "MASTER_ADDR=%.250s", addr);
		snprintf(kv[5], sizeof(kv[5]), "MASTER_PORT=%d", port);
		snprintf(kv[6], sizeof(kv[6]), "ZINF_COMM_BACKEND=%s", cpu ? "shm" : "nccl");
		/* stdout is a pipe now: ask zinf to flush it per line (cli/main.c). */
		snprintf(kv[7], sizeof(kv[7]), "ZINF_LINE_BUFFERED=1");
		for (int k = 0; k < 8; k++)
			env[k] = kv[k];
		if (!c->buf[0] || !c->buf[1] || spawn(exe, args, c, env, 8) < 0) {
			fprintf(stderr, "zinf launch: cannot start rank %d: %s\n", c->rank,
			        strerror(errno));
			c->done = true;
			first_fail = c->rank;
			fail_status = 1;
			signal_all(ch, r, SIGTERM);
			break;
		}
		alive++;
	}

	double kill_at = first_fail >= 0 ? iosched_now_s() + grace : 0, drain_until = 0;
	bool killed = false;
	struct pollfd *pf = calloc((size_t)nproc * 2 + 1, sizeof(*pf));
	int *who = calloc((size_t)nproc * 2 + 1, sizeof(int));
	if (!pf || !who) {
		fprintf(stderr, "zinf launch: out of memory\n");
		goto fatal;
	}
	for (;;) {
		int np = 0;
		pf[np++] = (struct pollfd){sig_pipe[0], POLLIN, 0};
		for (int r = 0; r < nproc; r++)
			for (int w = 0; w < 2; w++)
				if (ch[r].fd[w] >= 0) {
					who[np] = r * 2 + w;
					pf[np++] = (struct pollfd){ch[r].fd[w], POLLIN, 0};
				}
		if (alive == 0 && (np == 1 || (drain_until > 0 && iosched_now_s() > drain_until)))
			break;
		int n = poll(pf, (nfds_t)np, 100);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "zinf launch: poll: %s\n", strerror(errno));
			goto fatal;
		}
		for (int k = 1; k < np && n > 0; k++)
			if (pf[k].revents)
				pump(&ch[who[k] / 2], who[k] % 2);
		unsigned char sigs[64];
		ssize_t ns;
		while ((ns = read(sig_pipe[0], sigs, sizeof(sigs))) > 0)
			for (ssize_t k = 0; k < ns; k++) {
				if (sigs[k] == SIGCHLD)
					continue;
				if (!interrupted) {
					interrupted = sigs[k];
					fprintf(stderr, "zinf launch: got %s, passing it to every rank (again "
					        "to kill them)\n", strsignal(sigs[k]));
					signal_all(ch, nproc, sigs[k]);
					kill_at = iosched_now_s() + grace;
				} else {
					signal_all(ch, nproc, SIGKILL);
					killed = true;
				}
			}
		pid_t pid;
		int st;
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			for (int r = 0; r < nproc; r++) {
				child *c = &ch[r];
				if (c->pid != pid || c->done)
					continue;
				c->done = true;
				c->status = st;
				alive--;
				if (failed(st) && first_fail < 0 && !interrupted) {
					char how[128];
					describe_status(st, how, sizeof(how));
					first_fail = c->rank;
					fail_status = st;
					fprintf(stderr, "zinf launch: rank %d (pid %d) %s; stopping the other "
					        "ranks (SIGTERM, SIGKILL after %.0f s)\n", c->rank, (int)pid, how,
					        grace);
					signal_all(ch, nproc, SIGTERM);
					kill_at = iosched_now_s() + grace;
				}
			}
		}
		if (alive == 0 && drain_until == 0)
			drain_until = iosched_now_s() + 2.0; /* output still held by grandchildren: bounded */
		if (kill_at > 0 && !killed && alive > 0 && iosched_now_s() >= kill_at) {
			fprintf(stderr, "zinf launch: %d rank(s) still running after %.0f s; killing them\n",
			        alive, grace);
			signal_all(ch, nproc, SIGKILL);
			killed = true;
		}
	}
	if (first_fail >= 0) {
		char how[128];
		describe_status(fail_status, how, sizeof(how));
		fprintf(stderr, "zinf launch: failed: rank %d %s\n", first_fail, how);
		rc = WIFEXITED(fail_status) ? WEXITSTATUS(fail_status)
		     : WIFSIGNALED(fail_status) ? 128 + WTERMSIG(fail_status) : 1;
		if (rc == 0)
			rc = 1;
	} else if (interrupted) {
		fprintf(stderr, "zinf launch: interrupted by %s\n", strsignal(interrupted));
		rc = 128 + interrupted;
	}
	goto out;
fatal:
	signal_all(ch, nproc, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0)
		;
	rc = 1;
out:
	for (int r = 0; r < nproc; r++) {
		for (int w = 0; w < 2; w++) {
			if (ch[r].fd[w] >= 0)
				close(ch[r].fd[w]);
			free(ch[r].buf[w]);
		}
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGCHLD, &old_chld, NULL);
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	free(pf);
	free(who);
	free(ch);
	free(args);
	return rc;
}

int
zinf_launch_command(int nproc, int cpu, int argc, char **argv)
{
	char n[16];
	snprintf(n, sizeof(n), "%d", nproc);
	char **v = calloc((size_t)argc + 6, sizeof(char *));
	if (!v) {
		fprintf(stderr, "zinf launch: out of memory\n");
		return 1;
	}
	int k = 0;
	v[k++] = (char *)"launch";
	v[k++] = (char *)"--num_gpus";
	v[k++] = n;
	if (cpu)
		v[k++] = (char *)"--cpu";
	v[k++] = (char *)"--";
	for (int i = 0; i < argc; i++)
		v[k++] = argv[i];
	int rc = zinf_launch_main(k, v);
	free(v);
	return rc;
}

/* ---- comm-selftest ---- */

typedef struct st_buf {
	void *host, *dev; /* dev: the buffer collectives see (== host for shm) */
	size_t bytes;
	bool gpu;
} st_buf;

static int
buf_make(st_buf *b, size_t bytes, bool gpu)
{
	b->bytes = bytes;
	b->gpu = gpu;
	b->host = calloc(1, bytes ? bytes : 1);
	b->dev = b->host;
	if (!b->host)
		return -ENOMEM;
#ifdef ZINF_HAVE_CUDA
	if (gpu && cudaMalloc(&b->dev, bytes ? bytes : 1) != cudaSuccess)
		return -ENOMEM;
#endif
	return 0;
}

static void
buf_free(st_buf *b)
{
#ifdef ZINF_HAVE_CUDA
	if (b->gpu && b->dev)
		cudaFree(b->dev);
#endif
	free(b->host);
}

static void
buf_sync(st_buf *b, bool to_dev)
{
#ifdef ZINF_HAVE_CUDA
	if (b->gpu)
		cudaMemcpy(to_dev ? b->dev : b->host, to_dev ? b->host : b->dev, b->bytes,
		           to_dev ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
#endif
}

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

/* One round: returns the number of wrong elements (0) or a negative errno. */
static long
selftest_round(zinf_comm *c, size_t n, bool gpu, uint64_t *sum)
{
	int W = zinf_comm_world_size(c), r = zinf_comm_rank(c);
	st_buf a = {0}, b = {0}, h = {0};
	long bad = 0;
	int rc = buf_make(&a, n * W * 4, gpu);
	if (!rc)
		rc = buf_make(&b, n * W * 4, gpu);
	if (!rc)
		rc = buf_make(&h, n * 2, gpu);
	if (rc)
		goto out;
	float *af = a.host, *bf = b.host;
	/* 1: all_reduce sum, in place, asynchronous (ordered after the default stream's copy):
	 * (r+1) * (i%7+1) -> W(W+1)/2 * (i%7+1). */
	for (size_t i = 0; i < n; i++)
		af[i] = (float)((r + 1) * (int)(i % 7 + 1));
	buf_sync(&a, true);
	if ((rc = zinf_comm_wait_for_stream(c, NULL)) ||
	    (rc = zinf_comm_all_reduce_async(c, a.dev, a.dev, n, ZINF_COMM_F32, ZINF_COMM_SUM)) ||
	    (rc = zinf_comm_wait(c)))
		goto out;
	buf_sync(&a, false);
	for (size_t i = 0; i < n; i++)
		bad += af[i] != (float)(W * (W + 1) / 2 * (int)(i % 7 + 1));
	*sum = fnv(*sum, af, n * 4);
	/* 2: all_reduce max of the rank -> W-1. */
	af[0] = (float)r;
	buf_sync(&a, true);
	if ((rc = zinf_comm_all_reduce(c, a.dev, b.dev, 1, ZINF_COMM_F32, ZINF_COMM_MAX)))
		goto out;
	buf_sync(&b, false);
	bad += bf[0] != (float)(W - 1);
	/* 3: all_gather: r*1000 + i%1000. */
	for (size_t i = 0; i < n; i++)
		af[i] = (float)(r * 1000 + (int)(i % 1000));
	buf_sync(&a, true);
	if ((rc = zinf_comm_all_gather(c, a.dev, b.dev, n, ZINF_COMM_F32)))
		goto out;
	buf_sync(&b, false);
	for (int q = 0; q < W; q++)
		for (size_t i = 0; i < n; i++)
			bad += bf[q * n + i] != (float)(q * 1000 + (int)(i % 1000));
	*sum = fnv(*sum, bf, n * W * 4);
	/* 4: reduce_scatter avg: r + j%5 over W blocks -> (W-1)/2 + j%5 (exact for W = 2^k). */
	for (size_t j = 0; j < n * W; j++)
		af[j] = (float)(r + (int)(j % 5));
	buf_sync(&a, true);
	if ((rc = zinf_comm_reduce_scatter(c, a.dev, b.dev, n, ZINF_COMM_F32, ZINF_COMM_AVG)))
		goto out;
	buf_sync(&b, false);
	for (size_t i = 0; i < n; i++) {
		size_t j = (size_t)r * n + i;
		bad += bf[i] != (float)(W - 1) / 2.0f + (float)(j % 5);
	}
	/* 5: broadcast from the last rank. */
	for (size_t i = 0; i < n; i++)
		af[i] = r == W - 1 ? (float)(i * 3 % 1001) : -1.0f;
	buf_sync(&a, true);
	if ((rc = zinf_comm_broadcast(c, a.dev, n, ZINF_COMM_F32, W - 1)))
		goto out;
	buf_sync(&a, false);
	for (size_t i = 0; i < n; i++)
		bad += af[i] != (float)(i * 3 % 1001);
	*sum = fnv(*sum, af, n * 4);
	/* 6: bf16 all_reduce sum of small integers (exact in bf16). */
	uint16_t *hh = h.host;
	for (size_t i = 0; i < n; i++)
		hh[i] = zinf_comm_f32_to_bf16((float)(r + (int)(i % 3)));
	buf_sync(&h, true);
	if ((rc = zinf_comm_all_reduce(c, h.dev, h.dev, n, ZINF_COMM_BF16, ZINF_COMM_SUM)))
		goto out;
	buf_sync(&h, false);
	for (size_t i = 0; i < n; i++)
		bad += zinf_comm_bf16_to_f32(hh[i]) != (float)(W * (W - 1) / 2 + W * (int)(i % 3));
	*sum = fnv(*sum, hh, n * 2);
	/* 7: reduce sum to rank W/2, in place, asynchronous: (r+1) * (i%9) -> W(W+1)/2 * (i%9)
	 * on the root, every other rank's buffer untouched. */
	int root = W / 2;
	for (size_t i = 0; i < n; i++)
		af[i] = (float)((r + 1) * (int)(i % 9));
	buf_sync(&a, true);
	if ((rc = zinf_comm_wait_for_stream(c, NULL)) ||
	    (rc = zinf_comm_reduce_async(c, a.dev, a.dev, n, ZINF_COMM_F32, ZINF_COMM_SUM, root)) ||
	    (rc = zinf_comm_wait(c)))
		goto out;
	buf_sync(&a, false);
	for (size_t i = 0; i < n; i++)
		bad += af[i] != (float)((r == root ? W * (W + 1) / 2 : r + 1) * (int)(i % 9));
	rc = zinf_comm_barrier(c);
out:
	buf_free(&a);
	buf_free(&b);
	buf_free(&h);
	return rc ? rc : bad;
}

int
zinf_comm_selftest_main(int argc, char **argv)
{
	long count = 100003, rounds = 3;
	int fail_rank = -1, fail_at = 1, fail_signal = 0, hang_rank = -1;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int *ip = NULL;
		long *lp = NULL;
		if (!strcmp(argv[i], "--count"))
			lp = &count;
		else if (!strcmp(argv[i], "--rounds"))
			lp = &rounds;
		else if (!strcmp(argv[i], "--fail-rank"))
			ip = &fail_rank;
		else if (!strcmp(argv[i], "--fail-at"))
			ip = &fail_at;
		else if (!strcmp(argv[i], "--fail-signal"))
			ip = &fail_signal;
		else if (!strcmp(argv[i], "--hang-rank"))
			ip = &hang_rank;
		else {
			fprintf(stderr, "usage: zinf comm-selftest [--count N] [--rounds N] "
			        "[--fail-rank R [--fail-at ROUND] [--fail-signal SIG]] [--hang-rank R]\n"
			        "Collectives with known results over the ranks of the environment "
			        "(zinf launch); prints a checksum equal on every rank.\n");
			return !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") ? 0 : 2;
		}
		char *end;
		long x = v ? strtol(v, &end, 10) : -1;
		if (!v || *end || x < 0 || x > (1L << 30)) {
			fprintf(stderr, "zinf comm-selftest: %s needs a number >= 0\n", argv[i]);
			return 2;
		}
		if (ip)
			*ip = (int)x;
		else
			*lp = x;
		i++;
	}
	char err[1024];
	zinf_comm_opts o;
	zinf_comm_opts_init(&o);
	zinf_comm *c;
	int rc = zinf_comm_init(&o, &c, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "zinf comm-selftest: %s\n", err);
		return 1;
	}
	int r = zinf_comm_rank(c), W = zinf_comm_world_size(c);
	bool gpu = zinf_comm_backend_of(c) == ZINF_COMM_NCCL;
	uint64_t sum = 0xcbf29ce484222325ULL;
	double t0 = iosched_now_s();
	for (long k = 1; k <= rounds; k++) {
		if (r == fail_rank && k == fail_at) {
			fprintf(stderr, "comm-selftest: rank %d failing on purpose in round %ld\n", r, k);
			fflush(stderr);
			if (fail_signal)
				raise(fail_signal);
			_exit(3);
		}
		if (r == hang_rank && k == fail_at) {
			fprintf(stderr, "comm-selftest: rank %d hanging on purpose in round %ld\n", r, k);
			fflush(stderr);
			for (;;)
				pause();
		}
		long bad = selftest_round(c, (size_t)count, gpu, &sum);
		if (bad < 0) {
			fprintf(stderr, "zinf comm-selftest: %s\n", zinf_comm_error(c));
			zinf_comm_destroy(c);
			return 1;
		}
		if (bad > 0) {
			fprintf(stderr, "zinf comm-selftest: rank %d: %ld wrong elements in round %ld\n",
			        r, bad, k);
			zinf_comm_destroy(c);
			return 1;
		}
	}
	printf("comm-selftest: rank %d of %d (%s) ok: %ld rounds x %ld elements in %.3f s, "
	       "checksum %016llx\n", r, W, zinf_comm_backend_name(zinf_comm_backend_of(c)), rounds,
	       count, iosched_now_s() - t0, (unsigned long long)sum);
	zinf_comm_destroy(c);
	return 0;
}
