/* iosched tests. Usage: test_iosched common|io_uring|libaio|psync|enospc
 * Each suite exits 0 (pass), 1 (fail) or 77 (cannot run here: backend unavailable, no way to
 * make a full filesystem). */
#include "test_util.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "iosched/iosched.h"

static iosched_backend g_backend = IOSCHED_BACKEND_AUTO;

/* A fresh folder with one file path in it, removed again by tdir_remove. */
typedef struct tdir {
	char *dir;
	char path[4200];
} tdir;

static void
tdir_make(tdir *t, const char *name)
{
	t->dir = t_mkdtemp(name);
	snprintf(t->path, sizeof(t->path), "%s/data", t->dir);
}

static void
tdir_remove(tdir *t)
{
	unlink(t->path);
	rmdir(t->dir);
	free(t->dir);
}


static int
make_ios(iosched_t **ios, unsigned qd, uint64_t bs, unsigned threads, const iosched_fault *f)
{
	iosched_opts o;
	iosched_opts_init(&o);
	o.backend = g_backend;
	o.queue_depth = qd;
	o.block_size = bs;
	o.thread_count = threads;
	o.fault = f;
	o.quiet = true;
	o.max_requests = 512;
	return iosched_create(&o, ios);
}

static void *
xalloc(size_t len)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, len ? len : 4096))
		abort();
	return p;
}

/* Submits all requests (reaping when the handle is full) and reaps every completion, in
 * completion order, into cpl. Returns the number reaped. */
static unsigned
run_all(iosched_t *ios, const iosched_req *reqs, unsigned n, iosched_cpl *cpl)
{
	unsigned sent = 0, got = 0;
	while (got < n) {
		if (sent < n) {
			unsigned batch = n - sent < 16 ? n - sent : 16;
			int rc = iosched_submit(ios, reqs + sent, batch);
			if (rc > 0)
				sent += (unsigned)rc;
			else if (rc != -EAGAIN) {
				fprintf(stderr, "submit: %s (%s)\n", strerror(-rc),
					iosched_last_error(ios));
				abort();
			}
		}
		unsigned out = sent - got;
		int r = iosched_reap(ios, cpl + got, n - got, sent < n ? 0 : (out ? 1 : 0), 10000);
		if (r < 0) {
			fprintf(stderr, "reap: %s\n", strerror(-r));
			abort();
		}
		if (r == 0 && sent == n && out) {
			fprintf(stderr, "reap timed out with %u outstanding\n", out);
			abort();
		}
		got += (unsigned)r;
	}
	return got;
}

static const iosched_cpl *
find_cpl(const iosched_cpl *cpl, unsigned n, uint64_t tag)
{
	for (unsigned i = 0; i < n; i++)
		if (cpl[i].tag == tag)
			return &cpl[i];
	return NULL;
}

/* Writes a whole file in random-sized chunks, reads random ranges back and rewrites random
 * ranges, checking every byte against a shadow copy. */
static void
t_integrity(bool direct, unsigned threads, uint64_t bs, uint64_t seed)
{
	const uint64_t fsize = 8u << 20;
	tdir td;
	tdir_make(&td, "iosched-int");
	const char *dir = td.dir, *path = td.path;
	iosched_t *ios;
	int rc = make_ios(&ios, 8, bs, threads, NULL);
	T_CHECK(rc == 0, "create: %d", rc);
	if (rc)
		return;
	int f = iosched_file_open(ios, path,
				  IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE | IOSCHED_OPEN_EXCL |
					  (direct ? 0 : IOSCHED_OPEN_BUFFERED),
				  0600);
	T_CHECK(f >= 0, "open %s: %s", path, iosched_last_error(ios));
	if (f < 0)
		goto out;
	uint64_t a = iosched_file_alignment(ios, f);
	bool is_direct = iosched_file_is_direct(ios, f);
	if (direct && !is_direct)
		printf("  note: %s refuses O_DIRECT; testing buffered fallback\n", dir);
	uint64_t unit = is_direct ? a : 1;
	char *shadow = xalloc(fsize);
	char *io = xalloc(fsize);
	t_fill(shadow, fsize, seed);
	memcpy(io, shadow, fsize);
	uint64_t rs = seed * 7 + 1;

	/* Phase 1: write the whole file as random chunks, all in flight together. */
	iosched_req reqs[600];
	iosched_cpl cpl[600];
	unsigned n = 0;
	for (uint64_t off = 0; off < fsize && n < 600;) {
		uint64_t len = (1 + t_rand(&rs) % (3 * bs / unit)) * unit;
		if (off + len > fsize || n == 599)
			len = fsize - off;
		reqs[n] = (iosched_req){.tag = n, .file = f, .op = IOSCHED_OP_WRITE,
					.buf = io + off, .offset = off, .len = len};
		n++;
		off += len;
	}
	unsigned got = run_all(ios, reqs, n, cpl);
	for (unsigned i = 0; i < got; i++)
		T_CHECK(cpl[i].res == (int64_t)reqs[cpl[i].tag].len, "write %" PRIu64 ": res %" PRId64,
			cpl[i].tag, cpl[i].res);

	/* Phase 2: random reads into a separate buffer (ranges don't overlap within a batch). */
	for (int round = 0; round < 3; round++) {
		memset(io, 0xEE, fsize);
		n = 0;
		for (uint64_t off = 0; off < fsize && n < 600;) {
			uint64_t gap = (t_rand(&rs) % 4) * unit;
			uint64_t len = (1 + t_rand(&rs) % (2 * bs / unit)) * unit;
			off += gap;
			if (off >= fsize)
				break;
			if (off + len > fsize)
				len = fsize - off;
			reqs[n] = (iosched_req){.tag = n, .file = f, .op = IOSCHED_OP_READ,
						.buf = io + off, .offset = off, .len = len};
			n++;
			off += len;
		}
		got = run_all(ios, reqs, n, cpl);
		T_CHECK_EQ_I64(got, n);
		for (unsigned i = 0; i < got; i++) {
			const iosched_req *r = &reqs[cpl[i].tag];
			T_CHECK(cpl[i].res == (int64_t)r->len, "read res %" PRId64, cpl[i].res);
			T_CHECK(memcmp(io + r->offset, shadow + r->offset, r->len) == 0,
				"read at %" PRIu64 " len %" PRIu64 " differs (round %d)", r->offset,
				r->len, round);
		}
		/* Rewrite a few ranges with new data, then the next round checks them. */
		n = 0;
		for (uint64_t off = 0; off < fsize && n < 40;) {
			off += (t_rand(&rs) % 64) * unit * 16;
			uint64_t len = (1 + t_rand(&rs) % (bs / unit)) * unit;
			if (off + len > fsize)
				break;
			t_fill(shadow + off, len, t_rand(&rs));
			memcpy(io + off, shadow + off, len);
			reqs[n] = (iosched_req){.tag = n, .file = f, .op = IOSCHED_OP_WRITE,
						.buf = io + off, .offset = off, .len = len};
			n++;
			off += len;
		}
		got = run_all(ios, reqs, n, cpl);
		for (unsigned i = 0; i < got; i++)
			T_CHECK(cpl[i].res > 0, "rewrite failed: %" PRId64, cpl[i].res);
	}
	iosched_stats st;
	iosched_get_stats(ios, &st);
	T_CHECK(st.bytes_read > 0 && st.bytes_written >= fsize, "stats: read %" PRIu64
		" written %" PRIu64, st.bytes_read, st.bytes_written);
	T_CHECK(iosched_lat_percentile_ns(&st, 50) > 0, "latency histogram empty");
	uint64_t fb, fo;
	T_CHECK(iosched_file_stats(ios, f, &fb, &fo) == 0 && fb == st.bytes_read + st.bytes_written,
		"file stats %" PRIu64 " vs %" PRIu64, fb, st.bytes_read + st.bytes_written);
	T_CHECK(iosched_file_close(ios, f) == 0, "close");
	free(shadow);
	free(io);
out:
	iosched_destroy(ios);
	tdir_remove(&td);
}

/* Registered (fixed) buffers give the same bytes as plain ones. */
static void
t_registered_buffers(void)
{
	tdir td;
	tdir_make(&td, "iosched-reg");
	const char *path = td.path;
	iosched_t *ios;
	if (make_ios(&ios, 4, 64 << 10, 1, NULL))
		return;
	size_t len = 1 << 20;
	char *src = xalloc(len), *dst = xalloc(len);
	t_fill(src, len, 42);
	void *bufs[2] = {src, dst};
	size_t lens[2] = {len, len};
	int rc = iosched_register_buffers(ios, bufs, lens, 2);
	T_CHECK(rc == 0, "register: %s", iosched_last_error(ios));
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	iosched_req w = {.tag = 1, .file = f, .op = IOSCHED_OP_WRITE, .buf = src, .len = len};
	iosched_cpl c;
	run_all(ios, &w, 1, &c);
	T_CHECK(c.res == (int64_t)len, "write res %" PRId64, c.res);
	memset(dst, 0, len);
	iosched_req r = {.tag = 2, .file = f, .op = IOSCHED_OP_READ, .buf = dst, .len = len};
	run_all(ios, &r, 1, &c);
	T_CHECK(c.res == (int64_t)len && !memcmp(src, dst, len), "fixed-buffer read differs");
	/* Unregister; plain path still works. */
	T_CHECK(iosched_register_buffers(ios, NULL, NULL, 0) == 0, "unregister");
	memset(dst, 0, len);
	run_all(ios, &r, 1, &c);
	T_CHECK(c.res == (int64_t)len && !memcmp(src, dst, len), "plain read differs");
	iosched_destroy(ios);
	free(src);
	free(dst);
	tdir_remove(&td);
}

/* Injected faults: the Nth piece fails with err; only its request fails, the others and the
 * file's contents are intact. err == 0: short transfers, which must be invisible. */
static void
t_fault(int err, bool repeat, uint64_t nth, unsigned ops)
{
	tdir td;
	tdir_make(&td, "iosched-fault");
	const char *path = td.path;
	iosched_fault fault = {.nth = nth, .err = err, .repeat = repeat, .ops = ops};
	iosched_t *ios;
	const uint64_t bs = 64 << 10, rlen = 256 << 10;
	const unsigned nreq = 16;
	if (make_ios(&ios, 8, bs, 2, &fault))
		return;
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	T_CHECK(f >= 0, "open: %s", iosched_last_error(ios));
	char *src = xalloc(rlen * nreq), *dst = xalloc(rlen * nreq);
	t_fill(src, rlen * nreq, 7 + (uint64_t)err);
	iosched_req reqs[16];
	iosched_cpl cpl[16];
	for (unsigned i = 0; i < nreq; i++)
		reqs[i] = (iosched_req){.tag = i, .file = f, .op = IOSCHED_OP_WRITE,
					.buf = src + i * rlen, .offset = i * rlen, .len = rlen};
	run_all(ios, reqs, nreq, cpl);
	unsigned failed_w = 0, failed_tag = ~0u;
	for (unsigned i = 0; i < nreq; i++) {
		if (cpl[i].res < 0) {
			failed_w++;
			failed_tag = (unsigned)cpl[i].tag;
			T_CHECK(cpl[i].res == -err, "write failed with %" PRId64 ", want %d", cpl[i].res,
				-err);
			char msg[512];
			iosched_cpl_describe(ios, &cpl[i], msg, sizeof(msg));
			T_CHECK(strstr(msg, path) && strstr(msg, "offset") && strstr(msg, strerror(err)),
				"message lacks path/offset/errno: %s", msg);
			T_CHECK(cpl[i].err_offset >= reqs[cpl[i].tag].offset &&
					cpl[i].err_offset < reqs[cpl[i].tag].offset + rlen &&
					cpl[i].err_len > 0,
				"error range %" PRIu64 "+%" PRIu64 " not inside the request",
				cpl[i].err_offset, cpl[i].err_len);
		} else {
			T_CHECK(cpl[i].res == (int64_t)rlen, "write res %" PRId64, cpl[i].res);
		}
	}
	iosched_stats st;
	iosched_get_stats(ios, &st);
	bool write_faults = !ops || (ops & IOSCHED_OP_WRITE);
	bool retryable = err == EAGAIN || err == EINTR;
	if (err && !retryable && write_faults && !repeat)
		T_CHECK(failed_w == 1, "%u writes failed, want exactly 1", failed_w);
	if (retryable) {
		T_CHECK(failed_w == 0, "EAGAIN/EINTR must be retried, %u writes failed", failed_w);
		T_CHECK(st.retries > 0, "no retries counted");
	}
	if (!err)
		T_CHECK(st.short_transfers > 0, "no short transfers happened");
	/* Read everything back (reads may be faulted too). Every request that succeeded on both
	 * sides must match; a failed write's range is not compared. */
	memset(dst, 0, rlen * nreq);
	for (unsigned i = 0; i < nreq; i++) {
		reqs[i].op = IOSCHED_OP_READ;
		reqs[i].buf = dst + i * rlen;
	}
	run_all(ios, reqs, nreq, cpl);
	unsigned failed_r = 0;
	for (unsigned i = 0; i < nreq; i++) {
		const iosched_cpl *c = find_cpl(cpl, nreq, i);
		T_CHECK(c != NULL, "request %u never completed", i);
		if (!c)
			continue;
		if (c->res < 0) {
			failed_r++;
			T_CHECK(c->res == -err, "read failed with %" PRId64, c->res);
			continue;
		}
		if (i == failed_tag)
			continue;
		T_CHECK(!memcmp(src + i * rlen, dst + i * rlen, rlen), "request %u data differs", i);
	}
	bool read_faults = !ops || (ops & IOSCHED_OP_READ);
	if (err && err != EAGAIN && err != EINTR && read_faults && !write_faults)
		T_CHECK(failed_r == 1, "%u reads failed, want 1", failed_r);
	iosched_destroy(ios);
	free(src);
	free(dst);
	tdir_remove(&td);
}

/* A read past the end of the file fails with ENODATA instead of looping. */
static void
t_eof(void)
{
	tdir td;
	tdir_make(&td, "iosched-eof");
	const char *path = td.path;
	iosched_t *ios;
	if (make_ios(&ios, 4, 64 << 10, 1, NULL))
		return;
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	char *b = xalloc(1 << 20);
	t_fill(b, 1 << 20, 3);
	iosched_req w = {.tag = 1, .file = f, .op = IOSCHED_OP_WRITE, .buf = b, .len = 64 << 10};
	iosched_cpl c;
	run_all(ios, &w, 1, &c);
	T_CHECK(c.res == 64 << 10, "write");
	iosched_req r = {.tag = 2, .file = f, .op = IOSCHED_OP_READ, .buf = b, .len = 1 << 20};
	run_all(ios, &r, 1, &c);
	T_CHECK(c.res == -ENODATA, "read past EOF gave %" PRId64 ", want -ENODATA", c.res);
	iosched_destroy(ios);
	free(b);
	tdir_remove(&td);
}

/* cancel_all: every request completes exactly once, either fully or with -ECANCELED. */
static void
t_cancel(void)
{
	tdir td;
	tdir_make(&td, "iosched-cancel");
	const char *path = td.path;
	iosched_t *ios;
	if (make_ios(&ios, 2, 64 << 10, 1, NULL))
		return;
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	const unsigned n = 200;
	const uint64_t len = 256 << 10;
	char *b = xalloc(len);
	t_fill(b, len, 9);
	iosched_req reqs[200];
	for (unsigned i = 0; i < n; i++)
		reqs[i] = (iosched_req){.tag = i, .file = f, .op = IOSCHED_OP_WRITE, .buf = b,
					.offset = i * len, .len = len};
	T_CHECK(iosched_submit(ios, reqs, n) == (int)n, "submit: %s", iosched_last_error(ios));
	iosched_cancel_all(ios);
	iosched_cpl cpl[200];
	int got = iosched_reap(ios, cpl, n, n, 0);
	T_CHECK_EQ_I64(got, n);
	unsigned seen[200] = {0}, ok = 0, cancelled = 0;
	for (int i = 0; i < got; i++) {
		seen[cpl[i].tag]++;
		if (cpl[i].res == (int64_t)len)
			ok++;
		else if (cpl[i].res == -ECANCELED)
			cancelled++;
	}
	for (unsigned i = 0; i < n; i++)
		T_CHECK(seen[i] == 1, "request %u completed %u times", i, seen[i]);
	T_CHECK(ok + cancelled == n, "ok %u + cancelled %u != %u", ok, cancelled, n);
	T_CHECK_EQ_I64(iosched_outstanding(ios), 0);
	/* Still usable after a cancel. */
	run_all(ios, reqs, 1, cpl);
	T_CHECK(cpl[0].res == (int64_t)len, "write after cancel: %" PRId64, cpl[0].res);
	iosched_destroy(ios);
	free(b);
	tdir_remove(&td);
}

static int
backend_suite(iosched_backend b)
{
	g_backend = b;
	iosched_t *probe;
	iosched_opts o;
	iosched_opts_init(&o);
	o.backend = b;
	o.quiet = true;
	if (iosched_create(&o, &probe) < 0) {
		printf("skip: backend %s cannot start here\n", iosched_backend_name(b));
		return T_EXIT_SKIP;
	}
	T_CHECK(iosched_get_backend(probe) == b, "got backend %d", (int)iosched_get_backend(probe));
	iosched_destroy(probe);

	t_integrity(true, 1, 64 << 10, 11);
	t_integrity(true, 3, 128 << 10, 12);
	t_integrity(false, 2, 64 << 10, 13);
	t_registered_buffers();
	t_fault(EIO, false, 5, IOSCHED_OP_WRITE);
	t_fault(ENOSPC, false, 9, IOSCHED_OP_WRITE);
	t_fault(EIO, false, 3, IOSCHED_OP_READ);
	t_fault(0, true, 2, 0);      /* every 2nd piece is short */
	t_fault(EAGAIN, true, 3, 0); /* every 3rd piece: EAGAIN, retried */
	t_fault(EINTR, false, 1, 0);
	t_eof();
	t_cancel();
	return t_result(iosched_backend_name(b));
}

/* ---- common: option validation, misalignment, back-pressure, histogram ---- */

static void
t_bad_opts(void)
{
	iosched_opts o;
	iosched_t *ios;
	iosched_opts_init(&o);
	o.queue_depth = 0;
	T_CHECK(iosched_create(&o, &ios) == -EINVAL, "qd 0 accepted");
	iosched_opts_init(&o);
	o.block_size = 1000;
	T_CHECK(iosched_create(&o, &ios) == -EINVAL, "block_size 1000 accepted");
	iosched_opts_init(&o);
	o.thread_count = 65;
	T_CHECK(iosched_create(&o, &ios) == -EINVAL, "65 threads accepted");
	iosched_backend b;
	T_CHECK(iosched_backend_parse("libaio", &b) == 0 && b == IOSCHED_BACKEND_LIBAIO, "parse");
	T_CHECK(iosched_backend_parse("spdk", &b) == -EINVAL, "parse spdk accepted");
}

static void
t_misaligned(void)
{
	tdir td;
	tdir_make(&td, "iosched-align");
	const char *dir = td.dir, *path = td.path;
	iosched_t *ios;
	g_backend = IOSCHED_BACKEND_AUTO;
	if (make_ios(&ios, 4, 1 << 20, 1, NULL))
		return;
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	T_CHECK(f >= 0, "open");
	if (!iosched_file_is_direct(ios, f)) {
		printf("  note: %s refuses O_DIRECT; misalignment case skipped\n", dir);
		goto out;
	}
	unsigned a = iosched_file_alignment(ios, f);
	char *b = xalloc(1 << 20);
	iosched_req r = {.tag = 1, .file = f, .op = IOSCHED_OP_WRITE, .buf = b, .offset = 100,
			 .len = 4096};
	T_CHECK(iosched_submit(ios, &r, 1) == -EINVAL, "misaligned offset accepted");
	char want[64];
	snprintf(want, sizeof(want), "multiples of %u", a);
	const char *msg = iosched_last_error(ios);
	T_CHECK(strstr(msg, want) && strstr(msg, "offset 100") && strstr(msg, path),
		"message: %s", msg);
	r.offset = 0;
	r.len = 1000;
	T_CHECK(iosched_submit(ios, &r, 1) == -EINVAL, "misaligned length accepted");
	T_CHECK(strstr(iosched_last_error(ios), "length 1000"), "message: %s",
		iosched_last_error(ios));
	r.len = 4096;
	r.buf = b + 8;
	if (iosched_submit(ios, &r, 1) == -EINVAL)
		T_CHECK(strstr(iosched_last_error(ios), "buffer address"), "message: %s",
			iosched_last_error(ios));
	else { /* the device accepts 8-byte-aligned memory: let it finish */
		iosched_cpl c;
		iosched_reap(ios, &c, 1, 1, -1);
	}
	T_CHECK_EQ_I64(iosched_outstanding(ios), 0);
	/* A bad batch is refused whole: nothing of it completes. */
	iosched_req two[2] = {{.tag = 1, .file = f, .op = IOSCHED_OP_WRITE, .buf = b, .len = 4096},
			      {.tag = 2, .file = f, .op = IOSCHED_OP_WRITE, .buf = b, .offset = 3,
			       .len = 4096}};
	T_CHECK(iosched_submit(ios, two, 2) == -EINVAL, "bad batch accepted");
	T_CHECK_EQ_I64(iosched_outstanding(ios), 0);
	free(b);
out:
	iosched_destroy(ios);
	tdir_remove(&td);
}

static void
t_backpressure_and_close(void)
{
	tdir td;
	tdir_make(&td, "iosched-bp");
	const char *path = td.path;
	iosched_opts o;
	iosched_opts_init(&o);
	o.max_requests = 4;
	o.quiet = true;
	iosched_t *ios;
	T_CHECK(iosched_create(&o, &ios) == 0, "create");
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	char *b = xalloc(1 << 20);
	t_fill(b, 1 << 20, 5);
	iosched_req r[5];
	for (int i = 0; i < 5; i++)
		r[i] = (iosched_req){.tag = (uint64_t)i, .file = f, .op = IOSCHED_OP_WRITE, .buf = b,
				     .offset = (uint64_t)i << 20, .len = 1 << 20};
	T_CHECK(iosched_submit(ios, r, 4) == 4, "submit 4");
	T_CHECK(iosched_submit(ios, r + 4, 1) == -EAGAIN, "5th request over max_requests accepted");
	T_CHECK(strstr(iosched_last_error(ios), "max_requests"), "msg %s", iosched_last_error(ios));
	T_CHECK(iosched_file_close(ios, f) == -EBUSY, "close with requests in flight accepted");
	iosched_cpl c[4];
	T_CHECK(iosched_reap(ios, c, 4, 5, 0) == -EINVAL, "reap min > max accepted");
	int got = iosched_reap(ios, c, 4, 4, -1);
	T_CHECK_EQ_I64(got, 4);
	T_CHECK(iosched_file_close(ios, f) == 0, "close after reap: %s", iosched_last_error(ios));
	T_CHECK(iosched_submit(ios, r, 1) == -EINVAL, "request on a closed file accepted");
	int bad = iosched_file_open(ios, "/nonexistent-zinf-dir/x", IOSCHED_OPEN_READ, 0);
	T_CHECK(bad == -ENOENT && strstr(iosched_last_error(ios), "/nonexistent-zinf-dir/x"),
		"open of a missing path: %d %s", bad, iosched_last_error(ios));
	iosched_destroy(ios);
	iosched_destroy(NULL);
	free(b);
	tdir_remove(&td);
}

static void
t_histogram(void)
{
	uint64_t prev = 0;
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++) {
		uint64_t e = iosched_lat_bucket_ns(i);
		T_CHECK(e > prev, "bucket %u edge %" PRIu64 " <= %" PRIu64, i, e, prev);
		prev = e;
	}
	iosched_stats s;
	memset(&s, 0, sizeof(s));
	T_CHECK(iosched_lat_percentile_ns(&s, 50) == 0, "empty histogram");
	/* 99 samples at ~100 us and one at ~10 ms: p50 near 100 us, p99.5+ near 10 ms. */
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++) {
		if (iosched_lat_bucket_ns(i) >= 100000 && !s.lat_hist[0] && i > 0) {
			s.lat_hist[i] = 99;
			s.lat_hist[0] = 0;
			break;
		}
	}
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++)
		if (iosched_lat_bucket_ns(i) >= 10000000) {
			s.lat_hist[i] = 1;
			break;
		}
	uint64_t p50 = iosched_lat_percentile_ns(&s, 50), p100 = iosched_lat_percentile_ns(&s, 100);
	T_CHECK(p50 >= 100000 && p50 < 125000, "p50 %" PRIu64, p50);
	T_CHECK(p100 >= 10000000 && p100 < 12500000, "p100 %" PRIu64, p100);
}

static int
common_suite(void)
{
	t_bad_opts();
	t_misaligned();
	t_backpressure_and_close();
	t_histogram();
	return t_result("common");
}

/* ENOSPC from a really full filesystem: a 2 MiB tmpfs (needs root and mount rights; skips
 * otherwise). Writing 4 MiB must fail the requests past the end with ENOSPC and keep the data
 * that did fit intact. */
static int
enospc_suite(void)
{
	char *dir = t_mkdtemp("iosched-full");
	if (mount("zinf-test", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0700") < 0) {
		printf("skip: cannot mount a small tmpfs at %s (%s): ENOSPC needs root\n", dir,
		       strerror(errno));
		rmdir(dir);
		free(dir);
		return T_EXIT_SKIP;
	}
	char path[4200];
	snprintf(path, sizeof(path), "%s/data", dir);
	g_backend = IOSCHED_BACKEND_AUTO;
	iosched_t *ios;
	int rc = make_ios(&ios, 4, 256 << 10, 1, NULL);
	T_CHECK(rc == 0, "create");
	int f = iosched_file_open(ios, path, IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE, 0600);
	T_CHECK(f >= 0, "open %s", iosched_last_error(ios));
	const uint64_t len = 512 << 10;
	char *b = xalloc(8 * len);
	t_fill(b, 8 * len, 77);
	iosched_req r[8];
	iosched_cpl c[8];
	for (unsigned i = 0; i < 8; i++)
		r[i] = (iosched_req){.tag = i, .file = f, .op = IOSCHED_OP_WRITE, .buf = b + i * len,
				     .offset = i * len, .len = len};
	/* One at a time, so the failing point is deterministic. */
	unsigned nospc = 0, ok = 0;
	for (unsigned i = 0; i < 8; i++) {
		run_all(ios, &r[i], 1, &c[i]);
		if (c[i].res == (int64_t)len)
			ok++;
		else if (c[i].res == -ENOSPC) {
			nospc++;
			char msg[512];
			iosched_cpl_describe(ios, &c[i], msg, sizeof(msg));
			T_CHECK(strstr(msg, "No space left") && strstr(msg, "full"), "msg: %s", msg);
		} else
			T_CHECK(0, "write %u: %" PRId64, i, c[i].res);
	}
	T_CHECK(nospc > 0 && ok > 0, "ok %u, ENOSPC %u", ok, nospc);
	char *back = xalloc(len);
	for (unsigned i = 0; i < ok; i++) {
		iosched_req rr = {.tag = 99, .file = f, .op = IOSCHED_OP_READ, .buf = back,
				  .offset = i * len, .len = len};
		iosched_cpl cc;
		run_all(ios, &rr, 1, &cc);
		T_CHECK(cc.res == (int64_t)len && !memcmp(back, b + i * len, len),
			"data before the full point damaged (%u)", i);
	}
	iosched_destroy(ios);
	free(b);
	free(back);
	unlink(path);
	/* Must unmount at once: nothing of iosched may keep the filesystem busy after destroy. */
	int urc = umount(dir);
	T_CHECK(urc == 0, "umount %s after iosched_destroy: %s", dir, strerror(errno));
	if (urc)
		umount2(dir, MNT_DETACH);
	rmdir(dir);
	free(dir);
	return t_result("enospc");
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s common|io_uring|libaio|psync|enospc\n", argv[0]);
		return 2;
	}
	const char *s = argv[1];
	if (!strcmp(s, "common"))
		return common_suite();
	if (!strcmp(s, "enospc"))
		return enospc_suite();
	iosched_backend b;
	if (iosched_backend_parse(s, &b) == 0 && b != IOSCHED_BACKEND_AUTO)
		return backend_suite(b);
	fprintf(stderr, "unknown suite '%s'\n", s);
	return 2;
}
