/* engine/pstore: the ZeRO-3 parameter store of offload_param (device cpu and nvme), no GPU.
 * Usage: test_pstore <case>; cases: cpu, nvme, refuse, eio_write, eio_read, prefetch
 * (read-ahead: held for its acquire, given back before a write pass), and
 * regress    four bugs this test found in pstore.c (a write with two partial slices spun in
 *            room(), a failed write-back's host copy was lost track of, NULL `what` in create
 *            messages, a half-written slice on device cpu went unreported), fixed there. */
#include "test_offload_common.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>

#include "pstore.h"

static char *g_dir;

/* Uneven slices, multiples of 64 elements; bytes 384, 8960, 640, 38400, 128 (none a multiple
 * of 4 KiB). Block 3 is the largest. */
enum { NB = 5, BIG = 3 };
static const int64_t g_per[NB] = {64 * 3, 64 * 70, 64 * 5, 64 * 300, 64 * 1};
static int64_t g_soff[NB];
static uint64_t g_total; /* elements */

static void
layout(void)
{
	g_total = 0;
	for (int b = 0; b < NB; b++) {
		g_soff[b] = (int64_t)g_total;
		g_total += (uint64_t)g_per[b];
	}
}

static uint64_t
round4k(uint64_t b)
{
	return (b + 4095) / 4096 * 4096;
}

static void
base_opts(zinf_pstore_opts *o, bool nvme, unsigned bc, uint64_t max_in_cpu)
{
	memset(o, 0, sizeof(*o));
	o->nblocks = NB;
	o->soff = g_soff;
	o->per = g_per;
	o->nvme = nvme;
	o->nvme_path = g_dir;
	o->buffer_count = bc;
	o->buffer_size = (uint64_t)g_per[BIG];
	o->max_in_cpu = max_in_cpu;
	o->pin_memory = false;
	o->rank = 3;
	iosched_opts_init(&o->aio);
	o->aio.quiet = true;
	o->what = "ds.json: zero_optimization.offload_param";
}

static zinf_pstore *
open_store(const zinf_pstore_opts *o, const char *label)
{
	zinf_pstore *s;
	char err[1024];
	int rc = zinf_pstore_create(o, &s, err, sizeof(err));
	T_CHECK(rc == 0, "%s: create returned %d: %s", label, rc, err);
	return rc ? NULL : s;
}

/* The packed shard of pass `pass`: every element differs from the one of another pass. */
static uint16_t *
pattern(int pass)
{
	uint16_t *d = malloc(g_total * 2);
	if (!d)
		abort();
	t_fill(d, g_total * 2, 0x9e3779b9ull * (uint64_t)(pass + 1));
	for (uint64_t i = 0; i < g_total; i++)
		d[i] = (uint16_t)((d[i] & ~3u) | (unsigned)(pass & 3));
	return d;
}

/* [0, total) in ascending pieces of pseudo-random length: some end inside a block, some span
 * several blocks, some end exactly on a boundary. */
static int
write_pieces(zinf_pstore *s, const uint16_t *d, uint64_t seed, const char *label)
{
	uint64_t r = seed | 1, off = 0;
	int k = 0;
	while (off < g_total) {
		uint64_t n;
		switch (k++ % 4) {
		case 0: /* inside the current block or a little past it */
			n = 1 + t_rand(&r) % 700;
			break;
		case 1: /* up to the next boundary */
			n = 0;
			for (int b = 0; b < NB && !n; b++)
				if ((uint64_t)(g_soff[b] + g_per[b]) > off)
					n = (uint64_t)(g_soff[b] + g_per[b]) - off;
			break;
		default: /* across several blocks */
			n = 1 + t_rand(&r) % 9000;
			break;
		}
		if (n > g_total - off)
			n = g_total - off;
		int rc = zinf_pstore_write(s, off, n, d + off);
		if (rc) {
			T_CHECK(rc == 0, "%s: write [%llu, +%llu) returned %d: %s", label,
			        (unsigned long long)off, (unsigned long long)n, rc,
			        zinf_pstore_error(s));
			return rc;
		}
		off += n;
	}
	return 0;
}

/* Acquires (blocking) each block, compares it with d bit for bit, releases it. */
static void
check_blocks(zinf_pstore *s, const uint16_t *d, const char *label)
{
	for (int b = 0; b < NB; b++) {
		const uint16_t *h = NULL;
		int rc = zinf_pstore_acquire(s, b, true, &h);
		T_CHECK(rc == 0 && h, "%s: acquire block %d returned %d: %s", label, b, rc,
		        zinf_pstore_error(s));
		if (rc || !h)
			continue;
		T_CHECK(!memcmp(h, d + g_soff[b], (size_t)g_per[b] * 2),
		        "%s: block %d differs from what was written", label, b);
		zinf_pstore_release(s, b);
	}
}

static uint64_t
all_bytes(void)
{
	return g_total * 2;
}

/* device cpu: the shard in host memory; acquire returns at once, no NVMe traffic. */
static void
test_cpu(void)
{
	zinf_pstore_opts o;
	base_opts(&o, false, 1, 0);
	o.buffer_size = 64; /* buffers are an nvme matter: not checked for cpu */
	zinf_pstore *s = open_store(&o, "cpu");
	if (!s)
		return;
	uint64_t want_store = 0;
	for (int b = 0; b < NB; b++)
		want_store += round4k((uint64_t)g_per[b] * 2);
	for (int pass = 0; pass < 2; pass++) {
		uint16_t *d = pattern(pass);
		if (!write_pieces(s, d, 11 + (uint64_t)pass, "cpu")) {
			int rc = zinf_pstore_flush(s);
			T_CHECK(rc == 0, "cpu: flush returned %d: %s", rc, zinf_pstore_error(s));
			check_blocks(s, d, pass ? "cpu pass 2" : "cpu pass 1");
			const uint16_t *h = NULL;
			rc = zinf_pstore_acquire(s, 2, false, &h);
			T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[2], (size_t)g_per[2] * 2),
			        "cpu: non-blocking acquire returned %d", rc);
			zinf_pstore_release(s, 2);
		}
		free(d);
	}
	zinf_pstore_stats st;
	zinf_pstore_get_stats(s, &st);
	T_CHECK_EQ_I64(st.store_bytes, want_store);
	T_CHECK_EQ_I64(st.nvme_read, 0);
	T_CHECK_EQ_I64(st.nvme_written, 0);
	T_CHECK_EQ_I64(st.host_bytes, want_store);
	T_CHECK(st.host_peak >= st.host_bytes, "cpu: host_peak %llu < host_bytes %llu",
	        (unsigned long long)st.host_peak, (unsigned long long)st.host_bytes);
	zinf_pstore_destroy(s);
	T_CHECK(t_dir_entries(g_dir) == 0, "cpu: %d entries in nvme_path", t_dir_entries(g_dir));
}

static bool
run_dir_exists(unsigned rank)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/zinf-%ld-param/rank%u", g_dir, (long)getpid(), rank);
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* device nvme with buffer_count bc and max_in_cpu mic: two write passes, each read back twice;
 * NVMe byte counts, the host peak, non-blocking acquire, the swap folder's lifetime. */
static void
nvme_run(unsigned bc, uint64_t mic)
{
	char label[96];
	snprintf(label, sizeof(label), "nvme bc %u max_in_cpu %llu", bc, (unsigned long long)mic);
	zinf_pstore_opts o;
	base_opts(&o, true, bc, mic);
	zinf_pstore *s = open_store(&o, label);
	if (!s)
		return;
	T_CHECK(run_dir_exists(3), "%s: no zinf-%ld-param/rank3 under %s", label, (long)getpid(),
	        g_dir);
	bool cache_all = mic >= g_total;
	zinf_pstore_stats st, st0;
	for (int pass = 0; pass < 2; pass++) {
		uint16_t *d = pattern(pass + 2);
		zinf_pstore_get_stats(s, &st0);
		int rc = write_pieces(s, d, 7 + (uint64_t)pass, label);
		if (!rc && (rc = zinf_pstore_flush(s)))
			T_CHECK(rc == 0, "%s: flush returned %d: %s", label, rc,
			        zinf_pstore_error(s));
		zinf_pstore_get_stats(s, &st);
		T_CHECK(st.nvme_written - st0.nvme_written == all_bytes(),
		        "%s pass %d: %llu bytes written, want %llu", label, pass + 1,
		        (unsigned long long)(st.nvme_written - st0.nvme_written),
		        (unsigned long long)all_bytes());
		if (rc) {
			free(d);
			break;
		}
		/* first read-back: every block from NVMe */
		check_blocks(s, d, label);
		zinf_pstore_get_stats(s, &st0);
		T_CHECK(st0.nvme_read - st.nvme_read == all_bytes(),
		        "%s pass %d: %llu bytes read, want %llu", label, pass + 1,
		        (unsigned long long)(st0.nvme_read - st.nvme_read),
		        (unsigned long long)all_bytes());
		/* second: from the cache when it holds everything, else from NVMe again */
		check_blocks(s, d, label);
		zinf_pstore_get_stats(s, &st);
		uint64_t want = cache_all ? 0 : all_bytes();
		if (mic == 0 || cache_all)
			T_CHECK(st.nvme_read - st0.nvme_read == want,
			        "%s pass %d: %llu bytes read again, want %llu", label, pass + 1,
			        (unsigned long long)(st.nvme_read - st0.nvme_read),
			        (unsigned long long)want);
		T_CHECK_EQ_I64(st.nvme_written, st0.nvme_written);
		free(d);
	}

	/* non-blocking acquire: -EAGAIN while the read is under way, then the data */
	zinf_pstore_drop_cached(s);
	uint16_t *d = pattern(3);
	const uint16_t *h = (const uint16_t *)d;
	int rc = zinf_pstore_acquire(s, BIG, false, &h);
	T_CHECK(rc == -EAGAIN && !h, "%s: first non-blocking acquire returned %d (want -EAGAIN)",
	        label, rc);
	rc = zinf_pstore_acquire(s, BIG, true, &h);
	T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[BIG], (size_t)g_per[BIG] * 2),
	        "%s: blocking acquire after a non-blocking one returned %d", label, rc);
	rc = zinf_pstore_acquire(s, BIG, false, &h);
	T_CHECK(rc == 0 && h, "%s: non-blocking acquire of a held block returned %d", label, rc);
	zinf_pstore_release(s, BIG);

	/* every buffer held: one more is -EAGAIN without waiting, an error (not a hang) with */
	for (unsigned b = 0; b < bc; b++)
		T_CHECK((rc = zinf_pstore_acquire(s, (int)b, true, &h)) == 0,
		        "%s: acquire %u returned %d: %s", label, b, rc, zinf_pstore_error(s));
	rc = zinf_pstore_acquire(s, (int)bc, false, &h);
	T_CHECK(rc == -EAGAIN && !h, "%s: acquire with %u blocks held returned %d", label, bc, rc);
	rc = zinf_pstore_acquire(s, (int)bc, true, &h);
	T_CHECK(rc < 0 && strstr(zinf_pstore_error(s), "buffer_count"),
	        "%s: blocking acquire with %u blocks held returned %d: %s", label, bc, rc,
	        zinf_pstore_error(s));
	for (unsigned b = 0; b < bc; b++)
		zinf_pstore_release(s, (int)b);
	rc = zinf_pstore_acquire(s, (int)bc, true, &h);
	T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[bc], (size_t)g_per[bc] * 2),
	        "%s: acquire after the releases returned %d: %s", label, rc, zinf_pstore_error(s));
	zinf_pstore_release(s, (int)bc);
	free(d);

	/* host memory: buffer_count slices (rounded to 4 KiB) plus what max_in_cpu allows */
	zinf_pstore_get_stats(s, &st);
	uint64_t slot = round4k((uint64_t)g_per[BIG] * 2);
	uint64_t cache = mic ? mic * 2 + NB * 4096 : 0;
	if (cache > st.store_bytes)
		cache = st.store_bytes;
	T_CHECK(st.host_peak > 0 && st.host_peak <= bc * slot + cache,
	        "%s: host_peak %llu, limit %llu", label, (unsigned long long)st.host_peak,
	        (unsigned long long)(bc * slot + cache));
	T_CHECK(st.host_peak <= st.store_bytes, "%s: host_peak %llu > the whole shard %llu", label,
	        (unsigned long long)st.host_peak, (unsigned long long)st.store_bytes);
	if (mic == 0)
		T_CHECK(st.host_bytes == 0, "%s: %llu host bytes with nothing held", label,
		        (unsigned long long)st.host_bytes);
	zinf_pstore_drop_cached(s);
	zinf_pstore_get_stats(s, &st);
	T_CHECK(st.host_bytes == 0, "%s: %llu host bytes after drop_cached", label,
	        (unsigned long long)st.host_bytes);
	zinf_pstore_destroy(s);
	T_CHECK(t_dir_entries(g_dir) == 0, "%s: %d entries left in nvme_path after destroy", label,
	        t_dir_entries(g_dir));
}

static void
test_nvme(void)
{
	for (unsigned bc = 2; bc <= 3; bc++) {
		nvme_run(bc, 0);
		nvme_run(bc, 1ull << 30);
	}
	/* a cache for about two blocks: reads again, the host limit includes it */
	nvme_run(2, (uint64_t)g_per[BIG] + (uint64_t)g_per[1]);
}

static void
expect_refused(const zinf_pstore_opts *o, int want, const char *a, const char *b, const char *label)
{
	zinf_pstore *s = (zinf_pstore *)&s;
	char err[1024] = "";
	int rc = zinf_pstore_create(o, &s, err, sizeof(err));
	T_CHECK(rc == want && !s, "%s: create returned %d (want %d): %s", label, rc, want, err);
	T_CHECK(strstr(err, a) && (!b || strstr(err, b)), "%s: message '%s' should name '%s'%s%s",
	        label, err, a, b ? " and " : "", b ? b : "");
	if (!rc)
		zinf_pstore_destroy(s);
	T_CHECK(t_dir_entries(g_dir) == 0, "%s: %d entries left in nvme_path", label,
	        t_dir_entries(g_dir));
}

static void
test_refuse(void)
{
	zinf_pstore_opts o;
	char need[32];
	snprintf(need, sizeof(need), "%lld", (long long)g_per[BIG]);
	base_opts(&o, true, 2, 0);
	o.buffer_size = (uint64_t)g_per[BIG] - 64;
	expect_refused(&o, -EINVAL, "offload_param.buffer_size", need, "buffer_size small");
	base_opts(&o, true, 1, 0);
	expect_refused(&o, -EINVAL, "offload_param.buffer_count", NULL, "buffer_count 1");
	base_opts(&o, true, 2, 0);
	char missing[4200];
	snprintf(missing, sizeof(missing), "%s/no-such-folder", g_dir);
	o.nvme_path = missing;
	zinf_pstore *s;
	char err[1024] = "";
	int rc = zinf_pstore_create(&o, &s, err, sizeof(err));
	T_CHECK(rc < 0 && strstr(err, missing) && strstr(err, "nvme"),
	        "missing nvme_path: create returned %d: %s", rc, err);

	/* a pass that leaves block 2 half-written: flush names it; block 3 is intact after */
	base_opts(&o, true, 2, 0);
	s = open_store(&o, "half");
	if (!s)
		return;
	uint16_t *d = pattern(1);
	uint64_t half = (uint64_t)g_soff[2] + (uint64_t)g_per[2] / 2;
	rc = zinf_pstore_write(s, 0, half, d);
	T_CHECK(rc == 0, "half: write returned %d: %s", rc, zinf_pstore_error(s));
	rc = zinf_pstore_flush(s);
	T_CHECK(rc < 0 && strstr(zinf_pstore_error(s), "block 2"),
	        "half: flush returned %d: %s (want an error naming block 2)", rc,
	        zinf_pstore_error(s));
	/* blocks 0 and 1 were complete: they are on NVMe */
	for (int b = 0; b < 2; b++) {
		const uint16_t *h = NULL;
		rc = zinf_pstore_acquire(s, b, true, &h);
		T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[b], (size_t)g_per[b] * 2),
		        "half: block %d returned %d", b, rc);
		zinf_pstore_release(s, b);
	}
	free(d);
	zinf_pstore_destroy(s);
	T_CHECK(t_dir_entries(g_dir) == 0, "half: %d entries in nvme_path", t_dir_entries(g_dir));
}

/* Injected EIO on the nth write (block nth-1's write-back in the first pass) or the nth read
 * (block nth-1's first fetch). */
static void
eio_case(unsigned ops, uint64_t nth)
{
	bool wr = ops == IOSCHED_OP_WRITE;
	const char *label = wr ? "eio write" : "eio read";
	int bad = (int)nth - 1;
	char bname[32];
	snprintf(bname, sizeof(bname), "block %d", bad);
	iosched_fault fault = {.nth = nth, .err = EIO, .ops = ops};
	zinf_pstore_opts o;
	base_opts(&o, true, 2, 0);
	o.aio.fault = &fault;
	zinf_pstore *s = open_store(&o, label);
	if (!s)
		return;
	uint16_t *d = pattern(1);
	int rc = write_pieces(s, d, 5, label);
	int frc = rc ? rc : zinf_pstore_flush(s);
	const char *msg = zinf_pstore_error(s);
	if (wr) {
		T_CHECK(frc == -EIO, "%s: flush returned %d, want -EIO", label, frc);
		T_CHECK(strstr(msg, bname) && strstr(msg, "NVMe") &&
		                strstr(msg, "Input/output error") && strstr(msg, "offload_param"),
		        "%s: message '%s' should name %s, NVMe, the I/O error and the key", label,
		        msg, bname);
	} else {
		T_CHECK(frc == 0, "%s: flush returned %d: %s", label, frc, msg);
	}
	zinf_pstore_stats st;
	zinf_pstore_get_stats(s, &st);
	if (wr)
		T_CHECK_EQ_I64(st.nvme_written, all_bytes() - (uint64_t)g_per[bad] * 2);
	/* each acquire gives this pass's values or an error, never other bits; after a failed
	 * write the host copy holds the new values, so every block comes back */
	for (int round = 0; round < 2; round++) {
		for (int b = 0; b < NB; b++) {
			const uint16_t *h = NULL;
			rc = zinf_pstore_acquire(s, b, true, &h);
			if (!wr && round == 0 && b == bad) {
				msg = zinf_pstore_error(s);
				T_CHECK(rc == -EIO && !h, "%s: acquire %d returned %d, want -EIO",
				        label, b, rc);
				T_CHECK(strstr(msg, bname) && strstr(msg, "NVMe") &&
				                strstr(msg, "Input/output error") &&
				                strstr(msg, "swap"),
				        "%s: message '%s' should name %s, NVMe, the I/O error and "
				        "the "
				        "file",
				        label, msg, bname);
				continue;
			}
			T_CHECK(rc == 0 && h, "%s: round %d: acquire %d returned %d: %s", label,
			        round, b, rc, zinf_pstore_error(s));
			if (rc == 0 && h) {
				T_CHECK(!memcmp(h, d + g_soff[b], (size_t)g_per[b] * 2),
				        "%s: round %d: block %d differs from what was written",
				        label, round, b);
				zinf_pstore_release(s, b);
			}
		}
	}
	free(d);
	/* the fault was one-shot: a new pass goes through and reads back from NVMe */
	d = pattern(2);
	rc = write_pieces(s, d, 9, label);
	if (!rc) {
		rc = zinf_pstore_flush(s);
		T_CHECK(rc == 0, "%s: second pass flush returned %d: %s", label, rc,
		        zinf_pstore_error(s));
	}
	zinf_pstore_drop_cached(s);
	check_blocks(s, d, label);
	free(d);
	zinf_pstore_destroy(s);
	T_CHECK(t_dir_entries(g_dir) == 0, "%s: %d entries in nvme_path", label,
	        t_dir_entries(g_dir));
}

/* Runs fn in a child that must finish within `sec` seconds; false on a hang (the child then
 * gets SIGTERM, on which the swap store removes its files). */
static bool
finishes(void (*fn)(void), unsigned sec, const char *label)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		t_failures = 0;
		fn();
		_exit(t_failures ? 1 : 0);
	}
	if (pid < 0)
		return false;
	int ws = 0;
	for (unsigned ms = 0; ms < sec * 1000; ms += 10) {
		pid_t r = waitpid(pid, &ws, WNOHANG);
		if (r == pid)
			return WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
		if (r < 0)
			return false;
		usleep(10000);
	}
	fprintf(stderr, "%s: did not finish in %u s\n", label, sec);
	kill(pid, SIGTERM);
	waitpid(pid, &ws, 0);
	return false;
}

/* nvme, buffer_count 2: the first halves of blocks 0 and 1 (ascending, leaving both partly
 * written), then block 2. Two host buffers are taken by partial slices and no I/O is in
 * flight: the write must fail (or flush name block 0), not wait for a buffer forever. */
static void
gap_pass(void)
{
	zinf_pstore_opts o;
	base_opts(&o, true, 2, 0);
	zinf_pstore *s = open_store(&o, "gap");
	if (!s)
		return;
	uint16_t *d = pattern(1);
	int rc = zinf_pstore_write(s, 0, (uint64_t)g_per[0] / 2, d);
	if (!rc)
		rc = zinf_pstore_write(s, (uint64_t)g_soff[1], (uint64_t)g_per[1] / 2,
		                       d + g_soff[1]);
	if (!rc)
		rc = zinf_pstore_write(s, (uint64_t)g_soff[2], (uint64_t)g_per[2], d + g_soff[2]);
	if (!rc)
		rc = zinf_pstore_flush(s);
	T_CHECK(rc < 0 && strstr(zinf_pstore_error(s), "block "), "gap: returned %d: %s", rc,
	        zinf_pstore_error(s));
	free(d);
	zinf_pstore_destroy(s);
}

/* nvme, buffer_count 2, three equal blocks; the write-back of block 0 fails. Its new values
 * stay in a host copy that pstore stops counting once released (offload_chunk_drop refuses to
 * drop the only copy, uncache() marks the block P_NONE anyway), so holding two other blocks,
 * which buffer_count 2 allows, runs over the host budget. */
static void
lost_copy(void)
{
	enum { N3 = 3, PER = 64 * 320 };
	int64_t per[N3] = {PER, PER, PER}, soff[N3] = {0, PER, 2 * PER};
	iosched_fault fault = {.nth = 3, .err = EIO, .ops = IOSCHED_OP_WRITE};
	zinf_pstore_opts o;
	base_opts(&o, true, 2, 0);
	o.nblocks = N3;
	o.per = per;
	o.soff = soff;
	o.buffer_size = PER;
	o.aio.fault = &fault;
	zinf_pstore *s = open_store(&o, "lost copy");
	if (!s)
		return;
	uint16_t *d = calloc(N3 * PER, 2);
	if (!d)
		abort();
	t_fill(d, N3 * PER * 2, 77);
	/* blocks 1 and 2 (writes 1 and 2), then block 0 alone: its write-back (3) fails */
	int rc = zinf_pstore_write(s, PER, 2 * PER, d + PER);
	int frc = zinf_pstore_flush(s);
	T_CHECK(rc == 0 && frc == 0, "lost copy: first pass: write %d flush %d", rc, frc);
	rc = zinf_pstore_write(s, 0, PER, d);
	frc = zinf_pstore_flush(s);
	T_CHECK(rc == 0 && frc == -EIO, "lost copy: write %d flush %d", rc, frc);
	const uint16_t *h;
	for (int i = 0; i < 2; i++) {
		rc = zinf_pstore_acquire(s, 0, true, &h);
		T_CHECK(rc == 0 && !memcmp(h, d, PER * 2), "lost copy: acquire 0 returned %d: %s",
		        rc, zinf_pstore_error(s));
		zinf_pstore_release(s, 0);
	}
	zinf_pstore_stats st;
	zinf_pstore_get_stats(s, &st);
	T_CHECK(st.nvme_read == 0 && st.nvme_written == 2 * PER * 2,
	        "lost copy: %llu bytes counted as read, none were",
	        (unsigned long long)st.nvme_read);
	rc = zinf_pstore_acquire(s, 1, true, &h);
	int rc2 = zinf_pstore_acquire(s, 2, true, &h);
	T_CHECK(rc == 0 && rc2 == 0 && !memcmp(h, d + 2 * PER, PER * 2),
	        "lost copy: holding blocks 1 and 2: %d %d: %s", rc, rc2, zinf_pstore_error(s));
	free(d);
	zinf_pstore_destroy(s);
}

/* Regressions: bugs this test found in pstore.c, fixed there. */
static void
test_regress(void)
{
	/* 1. room() spins when the busy buffers are partly written slices */
	T_CHECK(finishes(gap_pass, 5, "gap"), "gap: a write with 2 partial slices hung or failed");

	/* 2. a failed write-back's host copy is lost track of */
	lost_copy();

	/* 3. what NULL means "offload_param" (create strdups that), but create's own messages
	 * print o->what, i.e. a NULL %s */
	zinf_pstore_opts o;
	base_opts(&o, true, 1, 0);
	o.what = NULL;
	zinf_pstore *s;
	char err[1024] = "";
	int rc = zinf_pstore_create(&o, &s, err, sizeof(err));
	T_CHECK(rc == -EINVAL && !strstr(err, "(null)") && strstr(err, "offload_param"),
	        "what NULL: create returned %d: %s", rc, err);

	/* 4. device cpu: a half-written slice is not reported by flush (the header says it is) */
	base_opts(&o, false, 2, 0);
	if (!(s = open_store(&o, "cpu half")))
		return;
	uint16_t *d = pattern(1);
	rc = zinf_pstore_write(s, 0, (uint64_t)g_soff[2] + 10, d);
	T_CHECK(rc == 0, "cpu half: write returned %d", rc);
	rc = zinf_pstore_flush(s);
	T_CHECK(rc < 0 && strstr(zinf_pstore_error(s), "block 2"),
	        "cpu half: flush returned %d: '%s' (want an error naming block 2)", rc,
	        zinf_pstore_error(s));
	free(d);
	zinf_pstore_destroy(s);
}

/* Read-ahead (zinf_pstore_prefetch, what ZeRO-3's read-ahead calls): 1 when the slice is there
 * or on its way, 0 with every buffer busy; a slice read ahead is held for its acquire (which
 * returns it at once, no second read) until released; read ahead and never acquired, it must be
 * given back (acquire + release) before the next write pass, which refuses a held block. */
static void
test_prefetch(void)
{
	zinf_pstore_opts o;
	base_opts(&o, true, 2, 0);
	zinf_pstore *s = open_store(&o, "prefetch");
	if (!s)
		return;
	uint16_t *d = pattern(5);
	if (!write_pieces(s, d, 11, "prefetch"))
		T_CHECK(zinf_pstore_flush(s) == 0, "prefetch: flush: %s", zinf_pstore_error(s));
	zinf_pstore_stats st0, st;
	zinf_pstore_get_stats(s, &st0);
	T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 1), 1);
	T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 3), 1);
	T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 1), 1); /* already on its way */
	T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 0), 0); /* both buffers busy */
	const uint16_t *h = NULL;
	int rc = zinf_pstore_acquire(s, 1, true, &h);
	T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[1], (size_t)g_per[1] * 2),
	        "prefetch: block 1 after read-ahead: %d: %s", rc, zinf_pstore_error(s));
	zinf_pstore_release(s, 1);
	zinf_pstore_get_stats(s, &st);
	/* block 3's read may still be in flight: count what has landed once it is acquired */
	rc = zinf_pstore_acquire(s, 3, true, &h);
	T_CHECK(rc == 0 && h && !memcmp(h, d + g_soff[3], (size_t)g_per[3] * 2),
	        "prefetch: block 3 after read-ahead: %d: %s", rc, zinf_pstore_error(s));
	zinf_pstore_release(s, 3);
	zinf_pstore_get_stats(s, &st);
	T_CHECK_EQ_I64(st.nvme_read - st0.nvme_read, (g_per[1] + g_per[3]) * 2);
	/* read ahead, never acquired: the write pass refuses the held block ... */
	T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 2), 1);
	uint16_t *d2 = pattern(6);
	rc = zinf_pstore_write(s, 0, g_total, d2);
	T_CHECK(rc == -EBUSY && strstr(zinf_pstore_error(s), "block 2"),
	        "prefetch: a write over a held read-ahead returned %d: '%s' (want -EBUSY naming "
	        "block 2)", rc, zinf_pstore_error(s));
	zinf_pstore_destroy(s);
	/* ... and goes through once it was given back (acquire + release) */
	s = open_store(&o, "prefetch 2");
	if (s && !write_pieces(s, d, 12, "prefetch 2") && !zinf_pstore_flush(s)) {
		T_CHECK_EQ_I64(zinf_pstore_prefetch(s, 2), 1);
		if (!zinf_pstore_acquire(s, 2, true, &h))
			zinf_pstore_release(s, 2);
		rc = write_pieces(s, d2, 13, "prefetch 2");
		T_CHECK(rc == 0 && zinf_pstore_flush(s) == 0, "prefetch 2: second pass: %s",
		        zinf_pstore_error(s));
		zinf_pstore_drop_cached(s);
		check_blocks(s, d2, "prefetch 2");
	}
	zinf_pstore_destroy(s);
	free(d);
	free(d2);
}

static void
test_eio_write(void)
{
	eio_case(IOSCHED_OP_WRITE, 3);
}

static void
test_eio_read(void)
{
	eio_case(IOSCHED_OP_READ, 3);
}

static const struct {
	const char *name;
	void (*fn)(void);
} g_cases[] = {
        {"cpu", test_cpu},           {"nvme", test_nvme},
        {"refuse", test_refuse},     {"eio_write", test_eio_write},
        {"eio_read", test_eio_read}, {"regress", test_regress},
        {"prefetch", test_prefetch},
};

int
main(int argc, char **argv)
{
	unsigned k = 0, nc = sizeof(g_cases) / sizeof(g_cases[0]);
	while (argc == 2 && k < nc && strcmp(argv[1], g_cases[k].name))
		k++;
	if (argc != 2 || k == nc) {
		fprintf(stderr, "usage: %s cpu|nvme|refuse|eio_write|eio_read|regress|prefetch\n",
		        argv[0]);
		return T_EXIT_FAIL;
	}
	layout();
	g_dir = t_mkdtemp("pstore");
	g_cases[k].fn();
	rmdir(g_dir);
	free(g_dir);
	return t_result(argv[1]);
}
