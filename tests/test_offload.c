/* offload tests that run without a GPU: host <-> NVMe swapping, striping, budgets, nvme_path
 * checks, swap-file cleanup on exit and on SIGTERM/SIGINT, injected I/O errors, the prefetcher
 * with a fake backend and clock and with the real swapper, the memory report.
 * Usage: test_offload [case]  (no argument: every case). */
#include "test_offload_common.h"

#include <signal.h>
#include <sys/wait.h>

#include "../offload/offload_internal.h"
#include "offload/prefetch.h"

static char *g_dir;

static void
swap_opts(offload_swapper_opts *o, const char *const *paths, unsigned n)
{
	offload_swapper_opts_init(o);
	o->host_budget = 256ull << 20;
	o->nvme_paths = paths;
	o->nvme_path_count = n;
	o->nvme_capacity = 256ull << 20;
	o->aio.quiet = true;
	o->aio.block_size = 256 << 10;
	o->aio.thread_count = 2;
}

static void
test_ranges(void)
{
	off_ranges r;
	uint64_t a, b, c, d;
	T_CHECK(off_ranges_init(&r, 1 << 20) == 0, "init");
	T_CHECK(off_ranges_alloc(&r, 4096, 4096, &a) == 0 && a == 0, "a=%llu",
	        (unsigned long long)a);
	T_CHECK(off_ranges_alloc(&r, 100, 256, &b) == 0 && b == 4096, "b");
	T_CHECK(off_ranges_alloc(&r, 8192, 4096, &c) == 0 && c == 8192, "c=%llu",
	        (unsigned long long)c);
	T_CHECK(off_ranges_alloc(&r, 2 << 20, 1, &d) == -ENOBUFS, "too big");
	off_ranges_free(&r, b, 100);
	off_ranges_free(&r, a, 4096);
	off_ranges_free(&r, c, 8192);
	T_CHECK_EQ_I64(r.n, 1);
	T_CHECK_EQ_I64(r.in_use, 0);
	T_CHECK_EQ_I64(off_ranges_largest(&r), 1 << 20);
	T_CHECK_EQ_I64(r.peak, 4096 + 100 + 8192);
	off_ranges_fini(&r);
}

/* Many chunks of random sizes: host -> NVMe -> host, byte-exact, host copies freed between. */
static void
roundtrip(const char *const *paths, unsigned npaths, uint64_t stripe, unsigned nchunks)
{
	offload_swapper_opts o;
	swap_opts(&o, paths, npaths);
	o.stripe_size = stripe;
	offload_swapper_t *sw;
	char err[512];
	int ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	T_CHECK(ret == 0, "create: %d %s", ret, err);
	if (ret)
		return;
	uint64_t seed = 42;
	int ids[256];
	uint64_t sizes[256];
	for (unsigned i = 0; i < nchunks; i++) {
		sizes[i] = 1 + t_rand(&seed) % (3u << 20);
		char name[32];
		snprintf(name, sizeof(name), "c%u", i);
		ids[i] = offload_chunk_create(sw, name, sizes[i]);
		void *p;
		T_CHECK(offload_chunk_alloc(sw, ids[i], OFFLOAD_TIER_HOST, &p) == 0, "alloc %u", i);
		t_fill(p, sizes[i], 1000 + i);
	}
	/* All at once, to overlap. */
	for (unsigned i = 0; i < nchunks; i++)
		T_CHECK(offload_chunk_evict(sw, ids[i], OFFLOAD_TIER_HOST, i) == 0, "evict %u", i);
	offload_event ev[64];
	unsigned got = 0;
	while (got < nchunks) {
		int n = offload_poll(sw, ev, 64, 1, 60000);
		T_CHECK(n > 0, "poll %d", n);
		if (n <= 0)
			break;
		for (int k = 0; k < n; k++) {
			T_CHECK(ev[k].res == 0, "evict event %d: %s", ev[k].res,
			        offload_swapper_last_error(sw));
			T_CHECK(ev[k].op == OFFLOAD_OP_EVICT && ev[k].tag == (uint64_t)ev[k].chunk,
			        "tag");
		}
		got += (unsigned)n;
	}
	offload_report rep;
	offload_swapper_report(sw, &rep);
	T_CHECK_EQ_I64(rep.usage[OFFLOAD_TIER_HOST].in_use, 0);
	T_CHECK(rep.usage[OFFLOAD_TIER_HOST].peak > 0, "host peak");
	T_CHECK(rep.usage[OFFLOAD_TIER_NVME].in_use > 0, "nvme in use");
	for (unsigned i = 0; i < nchunks; i++) {
		offload_chunk_info ci;
		offload_chunk_info_get(sw, ids[i], &ci);
		T_CHECK(ci.valid == 1u << OFFLOAD_TIER_NVME, "chunk %u valid %#x", i, ci.valid);
		T_CHECK(offload_chunk_fetch(sw, ids[i], OFFLOAD_TIER_HOST, i) == 0, "fetch %u", i);
	}
	got = 0;
	while (got < nchunks) {
		int n = offload_poll(sw, ev, 64, 1, 60000);
		if (n <= 0)
			break;
		got += (unsigned)n;
	}
	T_CHECK_EQ_I64(got, nchunks);
	for (unsigned i = 0; i < nchunks; i++) {
		unsigned char *p = offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_HOST);
		unsigned char *want = malloc(sizes[i]);
		t_fill(want, sizes[i], 1000 + i);
		T_CHECK(p && memcmp(p, want, sizes[i]) == 0, "chunk %u (%llu bytes) differs", i,
		        (unsigned long long)sizes[i]);
		free(want);
	}
	if (npaths > 1) {
		iosched_t *ios = offload_swapper_iosched(sw);
		offload_nvme_t *nv = offload_swapper_nvme(sw);
		for (unsigned f = 0; f < npaths; f++) {
			struct stat st;
			T_CHECK(stat(offload_nvme_file_path(nv, f), &st) == 0, "file %u", f);
			T_CHECK(st.st_blocks > 0, "file %u allocated", f);
		}
		uint64_t b0 = 0, b1 = 0, ops;
		iosched_file_stats(ios, 0, &b0, &ops);
		iosched_file_stats(ios, 1, &b1, &ops);
		T_CHECK(b0 > 0 && b1 > 0, "both stripes used: %llu %llu", (unsigned long long)b0,
		        (unsigned long long)b1);
	}
	offload_swapper_destroy(sw);
}

static void
test_roundtrip(void)
{
	const char *p[1] = {g_dir};
	roundtrip(p, 1, 1 << 20, 64);
}

static void
test_stripe(void)
{
	char *d2 = t_mkdtemp("offload-stripe");
	const char *p[2] = {g_dir, d2};
	roundtrip(p, 2, 64 << 10, 48);
	T_CHECK(t_dir_entries(d2) == 0, "second path left %d entries", t_dir_entries(d2));
	rmdir(d2);
	free(d2);
}

/* Chunks smaller than a stripe must spread over both paths: 16 x 128 KiB fill 2 x 1 MiB. */
static void
test_stripe_small(void)
{
	char *d2 = t_mkdtemp("offload-stripe-small");
	const char *p[2] = {g_dir, d2};
	iosched_opts io;
	iosched_opts_init(&io);
	io.quiet = true;
	iosched_t *ios;
	T_CHECK(iosched_create(&io, &ios) == 0, "iosched");
	offload_nvme_opts no;
	offload_nvme_opts_init(&no);
	no.paths = p;
	no.npaths = 2;
	no.capacity = 2 << 20;
	offload_nvme_t *nv;
	char err[512];
	int ret = offload_nvme_create(&no, ios, &nv, err, sizeof(err));
	T_CHECK(ret == 0, "create %d %s", ret, err);
	if (!ret) {
		offload_nvme_extent e[17];
		unsigned per_file[2] = {0, 0};
		for (int i = 0; i < 16; i++) {
			T_CHECK(offload_nvme_alloc(nv, 128 << 10, &e[i]) == 0, "alloc %d: %s", i,
			        offload_nvme_last_error(nv));
			per_file[e[i].first]++;
		}
		T_CHECK(per_file[0] == 8 && per_file[1] == 8, "spread %u/%u", per_file[0],
		        per_file[1]);
		ret = offload_nvme_alloc(nv, 4096, &e[16]);
		T_CHECK(ret == -ENOBUFS && strstr(offload_nvme_last_error(nv), "nvme tier full"),
		        "full: %d %s", ret, offload_nvme_last_error(nv));
		offload_nvme_free(nv, &e[3]);
		T_CHECK(offload_nvme_alloc(nv, 128 << 10, &e[16]) == 0, "reuse after free");
		offload_nvme_destroy(nv);
	}
	iosched_destroy(ios);
	T_CHECK(t_dir_entries(d2) == 0, "left behind");
	rmdir(d2);
	free(d2);
}

static void
test_files_and_cleanup(void)
{
	const char *p[1] = {g_dir};
	offload_swapper_opts o;
	swap_opts(&o, p, 1);
	o.run_id = "filetest";
	o.rank = 3;
	offload_swapper_t *sw;
	T_CHECK(offload_swapper_create(&o, &sw, NULL, 0) == 0, "create");
	if (!sw)
		return;
	char want[4096];
	snprintf(want, sizeof(want), "%s/zinf-filetest/rank3/swap0", g_dir);
	const char *path = offload_nvme_file_path(offload_swapper_nvme(sw), 0);
	T_CHECK(!strcmp(path, want), "path %s, want %s", path, want);
	struct stat st;
	T_CHECK(stat(want, &st) == 0 && (st.st_mode & 0777) == 0600, "mode %o", st.st_mode & 0777);
	T_CHECK((uint64_t)st.st_size >= o.nvme_capacity, "preallocated %lld",
	        (long long)st.st_size);
	/* A second store with the same run and rank is refused. */
	offload_swapper_t *sw2;
	char err[512];
	T_CHECK(offload_swapper_create(&o, &sw2, err, sizeof(err)) == -EEXIST, "same rank");
	T_CHECK(strstr(err, "already exists") != NULL, "message: %s", err);
	offload_swapper_destroy(sw);
	T_CHECK(stat(want, &st) != 0, "swap file left behind");
	T_CHECK(t_dir_entries(g_dir) == 0, "%d entries left in nvme_path", t_dir_entries(g_dir));
}

static void
test_path_errors(void)
{
	offload_swapper_opts o;
	offload_swapper_t *sw;
	char err[512], missing[4096], file[4096];
	snprintf(missing, sizeof(missing), "%s/does-not-exist", g_dir);
	const char *p[1] = {missing};
	swap_opts(&o, p, 1);
	int ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	T_CHECK(ret == -ENOENT && strstr(err, missing), "missing: %d %s", ret, err);

	snprintf(file, sizeof(file), "%s/plainfile", g_dir);
	FILE *f = fopen(file, "w");
	fclose(f);
	p[0] = file;
	ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	T_CHECK(ret == -ENOTDIR && strstr(err, "not a folder"), "file: %d %s", ret, err);
	unlink(file);

	p[0] = g_dir;
	o.nvme_capacity = 1ull << 60;
	ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	T_CHECK(ret == -ENOSPC && strstr(err, "too little free space") && strstr(err, "needed") &&
	                strstr(err, "available") && strstr(err, g_dir),
	        "space: %d %s", ret, err);
	T_CHECK(t_dir_entries(g_dir) == 0, "failed create left files");

	/* Not writable: a read-only folder (root bypasses modes: then /proc/self, read-only). */
	char ro[4096];
	snprintf(ro, sizeof(ro), "%s/ro", g_dir);
	mkdir(ro, 0500);
	p[0] = geteuid() == 0 ? "/proc/self" : ro;
	o.nvme_capacity = 1 << 20;
	ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	T_CHECK((ret == -EACCES || ret == -EROFS || ret == -ENOSPC) && strstr(err, p[0]),
	        "not writable: %d %s", ret, err);
	if (ret != -ENOSPC)
		T_CHECK(strstr(err, "not writable") != NULL, "message: %s", err);
	rmdir(ro);
}

static void
test_budgets(void)
{
	const char *p[1] = {g_dir};
	offload_swapper_opts o;
	swap_opts(&o, p, 1);
	o.host_budget = 2 << 20;
	o.nvme_capacity = 2 << 20;
	offload_swapper_t *sw;
	T_CHECK(offload_swapper_create(&o, &sw, NULL, 0) == 0, "create");
	if (!sw)
		return;
	int a = offload_chunk_create(sw, "a", 768 << 10),
	    b = offload_chunk_create(sw, "b", 1536 << 10);
	void *pa, *pb;
	T_CHECK(offload_chunk_alloc(sw, a, OFFLOAD_TIER_HOST, &pa) == 0, "a");
	int ret = offload_chunk_alloc(sw, b, OFFLOAD_TIER_HOST, &pb);
	const char *e = offload_swapper_last_error(sw);
	T_CHECK(ret == -ENOBUFS, "over budget: %d", ret);
	T_CHECK(strstr(e, "1572864 bytes) requested") && strstr(e, "786432 bytes) in use") &&
	                strstr(e, "2097152 bytes)") && strstr(e, "host budget") &&
	                strstr(e, "buffer_count"),
	        "message: %s", e);
	/* NVMe full: 768 KiB + 1.5 MiB do not fit 2 MiB. */
	memset(pa, 1, 768 << 10);
	T_CHECK(t_evict(sw, a, OFFLOAD_TIER_HOST) == 0, "evict a");
	int c = b;
	void *pc;
	T_CHECK(offload_chunk_alloc(sw, c, OFFLOAD_TIER_HOST, &pc) == 0, "c");
	ret = offload_chunk_evict(sw, c, OFFLOAD_TIER_HOST, 0);
	e = offload_swapper_last_error(sw);
	T_CHECK(ret == -ENOBUFS && strstr(e, "nvme tier full") && strstr(e, "capacity"),
	        "nvme full: %d %s", ret, e);
	offload_chunk_info ci;
	offload_chunk_info_get(sw, c, &ci);
	T_CHECK(ci.valid == 1u << OFFLOAD_TIER_HOST && !ci.busy, "c unchanged: %#x", ci.valid);
	/* GPU tier absent: clear error. */
	T_CHECK(offload_chunk_fetch(sw, c, OFFLOAD_TIER_GPU, 0) == -ENODEV, "no gpu tier");
	offload_swapper_destroy(sw);

	offload_swapper_opts_init(&o);
	o.gpu_budget = 1 << 20;
	char err[512];
	if (!offload_gpu_probe(NULL, 0)) {
		ret = offload_swapper_create(&o, &sw, err, sizeof(err));
		T_CHECK(ret == -ENODEV && strstr(err, "no GPU tier"), "gpu absent: %d %s", ret,
		        err);
	}
}

static int
deny_lock(void *addr, size_t len)
{
	(void)addr;
	(void)len;
	return -EPERM;
}

static void
test_host_pool(void)
{
	offload_host_pool_opts ho;
	offload_host_pool_t *p;
	void *a, *b;
	offload_host_pool_opts_init(&ho);
	ho.budget = 1 << 20;
	ho.lock_hook = deny_lock;
	T_CHECK(offload_host_pool_create(&ho, &p) == 0, "create");
	if (offload_host_pool_mode(p) == OFFLOAD_HOST_PINNED_MLOCK) {
		int ret = offload_host_alloc(p, 5000, &a);
		const char *e = offload_host_pool_last_error(p);
		T_CHECK(ret == -ENOMEM && strstr(e, "RLIMIT_MEMLOCK") && strstr(e, "ulimit -l"),
		        "memlock refused: %d %s", ret, e);
	}
	offload_host_pool_destroy(p);

	ho.allow_unpinned = true;
	T_CHECK(offload_host_pool_create(&ho, &p) == 0, "create");
	T_CHECK(offload_host_alloc(p, 5000, &a) == 0, "fallback alloc");
	if (!offload_gpu_probe(NULL, 0))
		T_CHECK(offload_host_pool_mode(p) == OFFLOAD_HOST_PAGEABLE, "fell back");
	T_CHECK(((uintptr_t)a & 4095) == 0, "aligned");
	offload_tier_usage u;
	offload_host_pool_usage(p, &u);
	T_CHECK_EQ_I64(u.in_use, 8192);
	offload_host_free(p, a);
	offload_host_pool_destroy(p);

	offload_host_pool_opts_init(&ho);
	ho.budget = 1 << 20;
	ho.pin_memory = false;
	T_CHECK(offload_host_pool_create(&ho, &p) == 0, "pageable");
	T_CHECK(offload_host_pool_mode(p) == OFFLOAD_HOST_PAGEABLE, "mode");
	T_CHECK(offload_host_alloc(p, 600 << 10, &a) == 0, "a");
	memset(a, 7, 600 << 10);
	T_CHECK(offload_host_alloc(p, 600 << 10, &b) == -ENOBUFS, "budget");
	offload_host_free(p, a);
	T_CHECK(offload_host_alloc(p, 600 << 10, &b) == 0 && b == a &&
	                ((unsigned char *)b)[4095] == 7,
	        "after free: the kept pageable buffer (pages still in) comes back");
	offload_host_free(p, b);
	/* a size the kept buffer's budget is needed for: it is released for it */
	T_CHECK(offload_host_alloc(p, 900 << 10, &b) == 0, "kept pageable buffer released for room");
	offload_host_pool_usage(p, &u);
	T_CHECK_EQ_I64(u.in_use, 900 << 10);
	offload_host_pool_destroy(p); /* frees b */

	offload_host_pool_opts_init(&ho);
	ho.budget = 1 << 20;
	T_CHECK(offload_host_pool_create(&ho, &p) == 0, "pinned");
	int ret = offload_host_alloc(p, 64 << 10, &a);
	T_CHECK(ret == 0, "pinned alloc (memlock %d): %s", ret, offload_host_pool_last_error(p));
	if (ret == 0) {
		/* A freed pinned buffer is kept locked and handed out again for the same size. */
		offload_host_free(p, a);
		offload_host_pool_usage(p, &u);
		T_CHECK_EQ_I64(u.in_use, 0);
		T_CHECK(offload_host_alloc(p, 64 << 10, &b) == 0 && b == a, "kept buffer reused");
		offload_host_free(p, b);
		/* A size that needs the budget the kept buffer holds: it is released for it. */
		void *big = NULL;
		ret = offload_host_alloc(p, (1 << 20) - (16 << 10), &big);
		T_CHECK(ret == 0, "kept buffers released for room: %s",
		        offload_host_pool_last_error(p));
		offload_host_pool_usage(p, &u);
		T_CHECK_EQ_I64(u.in_use, (1 << 20) - (16 << 10));
		T_CHECK(offload_host_alloc(p, 64 << 10, &b) == -ENOBUFS, "budget still enforced");
		offload_host_free(p, big);
		offload_host_free(p, big); /* twice: logged, not corrupted */
		offload_host_pool_usage(p, &u);
		T_CHECK_EQ_I64(u.in_use, 0);
		T_CHECK_EQ_I64(u.allocs, 0);
	}
	offload_host_pool_destroy(p);
}

/* A child creates a store and waits; killed with `sig`, it must leave nothing behind. */
static void
killed_child(int sig)
{
	int fds[2];
	if (pipe(fds))
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		const char *p[1] = {g_dir};
		offload_swapper_opts o;
		swap_opts(&o, p, 1);
		o.run_id = "sigtest";
		offload_swapper_t *sw;
		if (offload_swapper_create(&o, &sw, NULL, 0))
			_exit(3);
		int id = offload_chunk_create(sw, "x", 1 << 20);
		void *ptr;
		offload_chunk_alloc(sw, id, OFFLOAD_TIER_HOST, &ptr);
		memset(ptr, 1, 1 << 20);
		t_evict(sw, id, OFFLOAD_TIER_HOST);
		const char *path = offload_nvme_file_path(offload_swapper_nvme(sw), 0);
		if (write(fds[1], path, strlen(path) + 1) < 0)
			_exit(4);
		for (;;)
			pause();
	}
	close(fds[1]);
	char path[4096] = {0};
	ssize_t n = read(fds[0], path, sizeof(path) - 1);
	close(fds[0]);
	T_CHECK(n > 0, "child did not report its swap file");
	struct stat st;
	T_CHECK(n > 0 && stat(path, &st) == 0, "swap file %s exists while the child runs", path);
	kill(pid, sig);
	int status;
	waitpid(pid, &status, 0);
	T_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == sig,
	        "child died of signal %d (status %#x)", sig, status);
	T_CHECK(stat(path, &st) != 0, "swap file %s left after signal %d", path, sig);
	T_CHECK(t_dir_entries(g_dir) == 0, "%d entries left after signal %d", t_dir_entries(g_dir),
	        sig);
}

static void
test_signal(void)
{
	killed_child(SIGTERM);
	killed_child(SIGINT);
}

/* Injected EIO on the Nth write (swap-out) and the Nth read (swap-in). */
static void
fault_case(unsigned ops, const char *what)
{
	const char *p[1] = {g_dir};
	iosched_fault fault = {.nth = 5, .err = EIO, .ops = ops};
	offload_swapper_opts o;
	swap_opts(&o, p, 1);
	o.aio.fault = &fault;
	o.aio.block_size = 64 << 10;
	offload_swapper_t *sw;
	char err[512];
	T_CHECK(offload_swapper_create(&o, &sw, err, sizeof(err)) == 0, "create %s", err);
	if (!sw)
		return;
	enum { N = 8, SZ = 200 << 10 };
	int ids[N];
	for (int i = 0; i < N; i++) {
		ids[i] = offload_chunk_create(sw, "f", SZ);
		void *ptr;
		offload_chunk_alloc(sw, ids[i], OFFLOAD_TIER_HOST, &ptr);
		t_fill(ptr, SZ, 77 + (uint64_t)i);
	}
	int failed = 0;
	for (int i = 0; i < N; i++) {
		int ret = t_evict(sw, ids[i], OFFLOAD_TIER_HOST);
		offload_chunk_info ci;
		offload_chunk_info_get(sw, ids[i], &ci);
		if (ret) {
			failed++;
			T_CHECK(ret == -EIO, "%s: evict error %d", what, ret);
			const char *e = offload_swapper_last_error(sw);
			T_CHECK(strstr(e, "write of") && strstr(e, "offset"), "%s: message %s",
			        what, e);
			T_CHECK(ci.valid == 1u << OFFLOAD_TIER_HOST, "%s: residency %#x", what,
			        ci.valid);
			unsigned char *h = offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_HOST);
			unsigned char *want = malloc(SZ);
			t_fill(want, SZ, 77 + (uint64_t)i);
			T_CHECK(h && !memcmp(h, want, SZ), "%s: host copy corrupted", what);
			free(want);
			T_CHECK(t_evict(sw, ids[i], OFFLOAD_TIER_HOST) == 0, "retry evict");
		}
	}
	for (int i = 0; i < N; i++) {
		int ret = t_fetch(sw, ids[i], OFFLOAD_TIER_HOST);
		offload_chunk_info ci;
		offload_chunk_info_get(sw, ids[i], &ci);
		if (ret) {
			failed++;
			T_CHECK(ret == -EIO, "%s: fetch error %d", what, ret);
			T_CHECK(strstr(offload_swapper_last_error(sw), "read of"), "%s: message %s",
			        what, offload_swapper_last_error(sw));
			T_CHECK(ci.valid == 1u << OFFLOAD_TIER_NVME, "%s: residency %#x", what,
			        ci.valid);
			T_CHECK(t_fetch(sw, ids[i], OFFLOAD_TIER_HOST) == 0, "retry fetch");
		}
		unsigned char *h = offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_HOST);
		unsigned char *want = malloc(SZ);
		t_fill(want, SZ, 77 + (uint64_t)i);
		T_CHECK(h && !memcmp(h, want, SZ), "%s: chunk %d differs", what, i);
		free(want);
	}
	T_CHECK_EQ_I64(failed, 1);
	offload_report rep;
	offload_swapper_report(sw, &rep);
	T_CHECK_EQ_I64(rep.usage[OFFLOAD_TIER_NVME].in_use, (uint64_t)N * SZ);
	offload_swapper_destroy(sw);
}

static void
test_fault(void)
{
	fault_case(IOSCHED_OP_WRITE, "swap-out");
	fault_case(IOSCHED_OP_READ, "swap-in");
}

/* ---- prefetcher with a fake backend and clock ---- */

typedef struct fake {
	uint64_t now, latency;
	int pending[64];
	uint64_t due[64];
	unsigned npending;
	int fetched[64], released[64];
	unsigned nfetched, nreleased;
	uint64_t held, budget_seen;
	const uint64_t *sizes;
} fake;

static int
fake_fetch(void *ctx, int chunk)
{
	fake *f = ctx;
	f->fetched[f->nfetched++] = chunk;
	f->pending[f->npending] = chunk;
	f->due[f->npending++] = f->now + f->latency;
	f->held += f->sizes[chunk];
	if (f->held > f->budget_seen)
		f->budget_seen = f->held;
	return 0;
}

static int
fake_poll(void *ctx, offload_prefetch_done *out, unsigned max, int timeout_ms)
{
	fake *f = ctx;
	if (!f->npending)
		return 0;
	uint64_t first = UINT64_MAX;
	for (unsigned i = 0; i < f->npending; i++)
		if (f->due[i] < first)
			first = f->due[i];
	if (timeout_ms != 0 && first > f->now)
		f->now = first; /* waiting advances the fake clock */
	unsigned n = 0;
	for (unsigned i = 0; i < f->npending && n < max;) {
		if (f->due[i] <= f->now) {
			out[n++] = (offload_prefetch_done){f->pending[i], 0};
			f->pending[i] = f->pending[--f->npending];
			f->due[i] = f->due[f->npending];
		} else {
			i++;
		}
	}
	return (int)n;
}

static int
fake_release(void *ctx, int chunk)
{
	fake *f = ctx;
	f->released[f->nreleased++] = chunk;
	f->held -= f->sizes[chunk];
	return 0;
}

static uint64_t
fake_now(void *ctx)
{
	return ((fake *)ctx)->now;
}

/* Runs an order; compute_ns of fake time per acquired position. */
static void
run_fake(const int *order, unsigned n, const uint64_t *sizes, uint64_t budget, unsigned inflight,
         uint64_t latency, uint64_t compute, bool pump, offload_prefetch_stats *st, fake *f)
{
	memset(f, 0, sizeof(*f));
	f->latency = latency;
	f->sizes = sizes;
	offload_prefetch_backend be = {f, fake_fetch, fake_poll, fake_release, fake_now};
	offload_prefetch_opts po;
	offload_prefetch_opts_init(&po);
	po.order = order;
	po.sizes = sizes;
	po.n = n;
	po.byte_budget = budget;
	po.max_inflight = inflight;
	offload_prefetch_t *pf;
	T_CHECK(offload_prefetch_create(&po, &be, &pf) == 0, "create");
	if (pump)
		offload_prefetch_pump(pf);
	for (unsigned i = 0; i < n; i++) {
		int chunk, pos = offload_prefetch_acquire(pf, &chunk);
		T_CHECK(pos == (int)i && chunk == order[i], "acquire %u: pos %d chunk %d", i, pos,
		        chunk);
		f->now += compute;
		T_CHECK(offload_prefetch_release(pf, pos) == 0, "release");
	}
	int chunk;
	T_CHECK(offload_prefetch_acquire(pf, &chunk) == -ENODATA, "end");
	offload_prefetch_get_stats(pf, st);
	offload_prefetch_destroy(pf);
}

static void
test_prefetch_fake(void)
{
	int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
	uint64_t sizes[8] = {100, 100, 100, 100, 100, 100, 100, 100};
	offload_prefetch_stats st;
	fake f;
	/* Compute (50) longer than latency (10), room for 3: only the first acquire waits. */
	run_fake(order, 8, sizes, 300, 4, 10, 50, true, &st, &f);
	T_CHECK_EQ_I64(st.hits, 7);
	T_CHECK_EQ_I64(st.stalls, 1);
	T_CHECK_EQ_I64(st.misses, 0);
	T_CHECK_EQ_I64(st.stall_ns, 10);
	T_CHECK_EQ_I64(st.fetches, 8);
	T_CHECK(st.peak_bytes <= 300 && f.budget_seen <= 300, "budget: %llu",
	        (unsigned long long)f.budget_seen);
	T_CHECK_EQ_I64(st.peak_inflight, 3);
	for (unsigned i = 0; i < 8; i++)
		T_CHECK(f.fetched[i] == order[i], "fetch order %u: %d", i, f.fetched[i]);
	/* Latency 100 > compute 10, one slot: every acquire stalls; stall = latency - compute
	 * except the first (full latency). */
	run_fake(order, 8, sizes, 800, 1, 100, 10, true, &st, &f);
	T_CHECK_EQ_I64(st.hits, 0);
	T_CHECK_EQ_I64(st.stalls + st.misses, 8);
	T_CHECK_EQ_I64(st.peak_inflight, 1);
	T_CHECK_EQ_I64(st.stall_ns, 100 + 7 * 100);
	/* Budget of one chunk: the next fetch starts only at release, so every acquire stalls
	 * for the full latency; without the initial pump the first is a miss. */
	run_fake(order, 8, sizes, 100, 4, 10, 50, false, &st, &f);
	T_CHECK_EQ_I64(st.misses, 1);
	T_CHECK_EQ_I64(st.stalls, 7);
	T_CHECK_EQ_I64(st.hits, 0);
	T_CHECK_EQ_I64(st.stall_ns, 80);
	T_CHECK(f.budget_seen <= 100, "budget seen %llu", (unsigned long long)f.budget_seen);
	/* Forward then backward: the turn-around chunk is shared, not fetched twice. */
	int fb[8] = {0, 1, 2, 3, 3, 2, 1, 0};
	run_fake(fb, 8, sizes, 300, 4, 10, 50, true, &st, &f);
	T_CHECK(st.fetches < 8, "fetches %llu", (unsigned long long)st.fetches);
	T_CHECK(f.budget_seen <= 300, "budget seen %llu", (unsigned long long)f.budget_seen);
	/* A chunk larger than the budget is refused at create. */
	offload_prefetch_backend be = {&f, fake_fetch, fake_poll, fake_release, fake_now};
	offload_prefetch_opts po;
	offload_prefetch_opts_init(&po);
	po.order = order;
	po.sizes = sizes;
	po.n = 8;
	po.byte_budget = 99;
	offload_prefetch_t *pf;
	T_CHECK(offload_prefetch_create(&po, &be, &pf) == -EINVAL, "too small budget");
}

/* Prefetcher over the real swapper: NVMe -> host, data checked at every acquire. */
static void
test_prefetch_swapper(void)
{
	const char *p[1] = {g_dir};
	offload_swapper_opts o;
	swap_opts(&o, p, 1);
	offload_swapper_t *sw;
	T_CHECK(offload_swapper_create(&o, &sw, NULL, 0) == 0, "create");
	if (!sw)
		return;
	enum { N = 12 };
	uint64_t sizes[N];
	int order[2 * N];
	for (int i = 0; i < N; i++) {
		sizes[i] = (uint64_t)(i + 1) * 40000;
		int id = offload_chunk_create(sw, "p", sizes[i]);
		void *ptr;
		offload_chunk_alloc(sw, id, OFFLOAD_TIER_HOST, &ptr);
		t_fill(ptr, sizes[i], 500 + (uint64_t)i);
		T_CHECK(t_evict(sw, id, OFFLOAD_TIER_HOST) == 0, "evict");
		order[i] = id;
		order[2 * N - 1 - i] = id;
	}
	offload_prefetch_backend be;
	offload_prefetch_swapper_backend(sw, OFFLOAD_TIER_HOST, &be);
	offload_prefetch_opts po;
	offload_prefetch_opts_init(&po);
	po.order = order;
	po.sizes = sizes;
	po.n = 2 * N;
	po.byte_budget = 1500000;
	offload_prefetch_t *pf;
	T_CHECK(offload_prefetch_create(&po, &be, &pf) == 0, "pf");
	for (int i = 0; i < 2 * N; i++) {
		int chunk, pos = offload_prefetch_acquire(pf, &chunk);
		T_CHECK(pos == i, "acquire %d: %d (%s)", i, pos, offload_swapper_last_error(sw));
		if (pos < 0)
			break;
		unsigned char *h = offload_chunk_ptr(sw, chunk, OFFLOAD_TIER_HOST);
		unsigned char *want = malloc(sizes[chunk]);
		t_fill(want, sizes[chunk], 500 + (uint64_t)chunk);
		T_CHECK(h && !memcmp(h, want, sizes[chunk]), "chunk %d data", chunk);
		free(want);
		offload_prefetch_release(pf, pos);
	}
	offload_prefetch_stats st;
	offload_prefetch_get_stats(pf, &st);
	T_CHECK(st.hits + st.stalls + st.misses == 2 * N, "accounting %llu+%llu+%llu",
	        (unsigned long long)st.hits, (unsigned long long)st.stalls,
	        (unsigned long long)st.misses);
	T_CHECK(st.peak_bytes <= po.byte_budget, "peak %llu", (unsigned long long)st.peak_bytes);
	offload_prefetch_destroy(pf);
	offload_prefetch_swapper_backend_free(&be);
	offload_report rep;
	offload_swapper_report(sw, &rep);
	T_CHECK(rep.usage[OFFLOAD_TIER_HOST].peak <= po.byte_budget + 4096 * N, "host peak %llu",
	        (unsigned long long)rep.usage[OFFLOAD_TIER_HOST].peak);
	char buf[1024];
	offload_report_format(&rep, buf, sizeof(buf));
	T_CHECK(strstr(buf, "nvme") && strstr(buf, "host") && strstr(buf, "peak"), "report %s",
	        buf);
	offload_swapper_destroy(sw);
}

static void
test_plan(void)
{
	offload_swapper_opts o;
	offload_swapper_opts_init(&o);
	o.gpu_budget = 1 << 30;
	const char *p[1] = {"/nonexistent"};
	o.nvme_paths = p;
	o.nvme_path_count = 1;
	o.nvme_capacity = 1ull << 40;
	offload_report r;
	T_CHECK(offload_plan(&o, &r, NULL, 0) == 0, "plan");
	T_CHECK(r.planned[OFFLOAD_TIER_NVME] == 1ull << 40 && r.staging_bytes == 4 * (16 << 20),
	        "planned");
	o.host_budget = 1 << 20;
	char err[512];
	T_CHECK(offload_plan(&o, &r, err, sizeof(err)) == -EINVAL &&
	                strstr(err, "buffer_count 4") && strstr(err, "host budget"),
	        "staging over host budget: %s", err);
	char buf[1024];
	o.host_budget = 1 << 30;
	offload_plan(&o, &r, NULL, 0);
	offload_report_format(&r, buf, sizeof(buf));
	T_CHECK(strstr(buf, "1099511627776") && strstr(buf, "staging 67108864"), "plan text: %s",
	        buf);
}

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
        {"ranges", test_ranges},
        {"roundtrip", test_roundtrip},
        {"stripe", test_stripe},
        {"stripe_small", test_stripe_small},
        {"files", test_files_and_cleanup},
        {"path_errors", test_path_errors},
        {"budgets", test_budgets},
        {"host_pool", test_host_pool},
        {"signal", test_signal},
        {"fault", test_fault},
        {"prefetch_fake", test_prefetch_fake},
        {"prefetch_swapper", test_prefetch_swapper},
        {"plan", test_plan},
};

int
main(int argc, char **argv)
{
	setenv("ZINF_LOG", "error", 0);
	g_dir = t_mkdtemp("offload-test");
	int ran = 0;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (argc > 1 && strcmp(argv[1], cases[i].name))
			continue;
		int before = t_failures;
		cases[i].fn();
		printf("%s: %s\n", cases[i].name, t_failures == before ? "ok" : "FAILED");
		ran++;
	}
	rmdir(g_dir);
	free(g_dir);
	if (!ran) {
		fprintf(stderr, "unknown case %s\n", argv[1]);
		return T_EXIT_FAIL;
	}
	return t_result("test_offload");
}
