/* zinf bench io: file/NVMe throughput through iosched, measured the way fio measures it.
 *
 * Model (fio with numjobs=1): one file of --size bytes, created here under --path with a unique
 * name (O_EXCL, so nothing that exists is ever overwritten) and removed on every exit path,
 * including SIGINT/SIGTERM. The file is preallocated (fallocate, as fio's fallocate=native);
 * for tests that read, it is first filled with a pattern (not timed). The timed phase keeps
 * queue_depth x threads requests of block_size in flight: each completion hands its buffer slot
 * straight to the next request. Sequential tests walk the blocks in order; random ones walk a
 * shuffled permutation (every block once per loop, like fio's randread without repeats).
 *
 * Integrity: the pattern stamps the first 8 bytes of every 4 KiB sector with a value derived
 * from its file offset. Each block read in the timed phase is checked at its first and last
 * sector (two loads per block) and the checked words are poisoned afterwards, so a stale slot,
 * a misplaced or a short read all count as wrong blocks. Writes stamp the same two words, so
 * reads in a readwrite test check them too.
 *
 * With CUDA (--gpu): every completed read is copied to a device buffer with cudaMemcpyAsync on
 * one stream; its slot is reused only after the copy's event has completed. The clock stops
 * after the last copy. --buffer pinned page-locks the slots with cudaHostRegister.
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "iosched/iosched.h"

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define PROG "zinf bench io"
#define SECTOR 4096u
#define MAX_BLOCK_SIZE (256ull << 20)
#define MAX_SIZE (1ull << 50)
#define MAX_LOOPS 1000000ull
#define REGISTER_CHUNK (1ull << 30) /* io_uring caps one fixed buffer at 1 GiB */
#define HUGE_PAGE (2ull << 20)

typedef enum io_rw {
	RW_READ,
	RW_WRITE,
	RW_RANDREAD,
	RW_RANDWRITE,
	RW_READWRITE,
} io_rw;

static const char *const rw_names[] = {"read", "write", "randread", "randwrite", "readwrite",
				       NULL};
static const char *const buffer_names[] = {"pinned", "pageable", NULL};

typedef struct io_args {
	const char *path;
	uint64_t size, block_size, queue_depth, threads, loops;
	iosched_backend backend;
	io_rw rw;
	bool direct, json, gpu, pinned, buffer_set, small_pages;
} io_args;

enum { SLOT_FREE, SLOT_IO, SLOT_COPY };

typedef struct io_slot {
	uint8_t *buf;
	uint64_t offset;
	unsigned op;
	int state;
} io_slot;

typedef struct io_ctx {
	const io_args *a;
	iosched_t *ios;
	int file;
	char path[4096];
	bool created;
	uint64_t nblocks;
	uint32_t *perm; /* random tests: block order; NULL for sequential */
	uint8_t *slab;  /* all slots, 2 MiB aligned inside the mapping */
	size_t slab_len;
	void *map;      /* the mapping that holds the slab */
	size_t map_len;
	bool huge;      /* --hugepages: slab backed by transparent huge pages */
	io_slot *slots;
	unsigned nslots;
	unsigned *free_list;
	unsigned nfree;
	iosched_req *reqs;
	iosched_cpl *cpls;
	bool registered;
	/* Results of the timed phase. */
	uint64_t wrong_blocks, verified_blocks, io_errors;
	char first_error[512];
#ifdef ZINF_HAVE_CUDA
	uint8_t *dev;
	cudaStream_t stream;
	cudaEvent_t *events;
	unsigned *copy_fifo; /* slots whose copy is in flight, oldest first */
	unsigned copy_head, copy_count;
	bool host_registered;
#endif
} io_ctx;

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: zinf bench io --path DIR [options]\n\n"
		"Creates one file of --size bytes in DIR (unique name, removed on exit), keeps\n"
		"--queue-depth requests of --block-size in flight per thread, and reports GB/s\n"
		"(decimal, 1e9 B/s), IOPS, p50/p99 latency per piece and CPU seconds per GB.\n"
		"Reads are checked against the pattern written before the timed phase.\n\n"
		"options:\n"
		"  --path DIR          folder for the test file (required; needs --size free)\n"
		"  --size S            file size, multiple of --block-size (default 1G)\n"
		"  --block-size B      request size, multiple of 4K, up to 256M (default 1M)\n"
		"  --queue-depth Q     requests in flight per thread, 1..4096 (default 32)\n"
		"  --threads N         iosched workers, 1..64 (default 1)\n"
		"  --backend NAME      auto|io_uring|libaio|psync (default auto)\n"
		"  --rw MODE           read|write|randread|randwrite|readwrite (default read)\n"
		"  --direct            O_DIRECT, bypass the page cache (default)\n"
		"  --buffered          go through the page cache (evicted before the timed phase)\n"
		"  --loops N           passes over the file, 1..%llu (default 1)\n"
		"  --small-pages       keep the I/O buffers on 4 KiB pages (default: ask for\n"
		"                      transparent huge pages, madvise; see bench/README.md)\n"
#ifdef ZINF_HAVE_CUDA
		"  --gpu               NVMe -> host slot -> GPU: copy every read block to the GPU\n"
		"                      (cudaMemcpyAsync); timed end to end (reads only)\n"
		"  --buffer KIND       with --gpu: pinned (cudaHostRegister the slots, default) or\n"
		"                      pageable\n"
#endif
		"  --json              print one JSON object instead of the table\n"
		"  -h, --help          this help\n\n"
		"%s.\n"
		"exit codes: 0 ok, 1 runtime failure (I/O error, wrong data, no space), 2 usage error,\n"
		"130/143 interrupted by SIGINT/SIGTERM (the test file is removed)\n",
		MAX_LOOPS, BENCH_SIZE_HELP);
}

static bool
rw_reads(io_rw rw)
{
	return rw == RW_READ || rw == RW_RANDREAD || rw == RW_READWRITE;
}

static int
parse_args(int argc, char **argv, io_args *a)
{
	memset(a, 0, sizeof(*a));
	a->size = 1ull << 30;
	a->block_size = 1ull << 20;
	a->queue_depth = 32;
	a->threads = 1;
	a->loops = 1;
	a->backend = IOSCHED_BACKEND_AUTO;
	a->rw = RW_READ;
	a->direct = true;
	a->pinned = true;
	bool size_set = false;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *v = NULL;
		int r, c;
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(arg, "--json")) {
			a->json = true;
			continue;
		}
		if (!strcmp(arg, "--direct")) {
			a->direct = true;
			continue;
		}
		if (!strcmp(arg, "--buffered")) {
			a->direct = false;
			continue;
		}
		if (!strcmp(arg, "--small-pages")) {
			a->small_pages = true;
			continue;
		}
		if (!strcmp(arg, "--gpu")) {
#ifdef ZINF_HAVE_CUDA
			a->gpu = true;
			continue;
#else
			fprintf(stderr, PROG ": --gpu needs a CUDA build of zinf; this one was built "
					     "without CUDA (configure with -DZINF_CUDA=ON on a machine with "
					     "the CUDA toolkit)\n");
			return -EINVAL;
#endif
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--path", &v))) {
			if (r < 0)
				return r;
			if (!*v) {
				fprintf(stderr, PROG ": --path is empty: pass a folder, e.g. --path /mnt/nvme\n");
				return -EINVAL;
			}
			a->path = v;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--size", &v))) {
			if (r < 0 || bench_parse_size(PROG, "--size", v, SECTOR, MAX_SIZE, &a->size))
				return -EINVAL;
			size_set = true;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--block-size", &v))) {
			if (r < 0 || bench_parse_size(PROG, "--block-size", v, SECTOR, MAX_BLOCK_SIZE,
						      &a->block_size))
				return -EINVAL;
			if (a->block_size % SECTOR) {
				char s[32];
				fprintf(stderr, PROG ": --block-size %s is not a multiple of 4096 (4K), which "
						     "direct I/O and iosched need: pass e.g. --block-size %s\n",
					v,
					bench_fmt_size_arg((a->block_size + SECTOR - 1) / SECTOR * SECTOR, s,
							   sizeof(s)));
				return -EINVAL;
			}
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--queue-depth", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--queue-depth", v, 1, 4096, &a->queue_depth))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--threads", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--threads", v, 1, 64, &a->threads))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--loops", &v))) {
			if (r < 0 || bench_parse_uint(PROG, "--loops", v, 1, MAX_LOOPS, &a->loops))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--backend", &v))) {
			if (r < 0 || bench_parse_backend(PROG, "--backend", v, &a->backend))
				return -EINVAL;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--rw", &v))) {
			if (r < 0 || (c = bench_parse_choice(PROG, "--rw", v, rw_names)) < 0)
				return -EINVAL;
			a->rw = (io_rw)c;
			continue;
		}
		if ((r = bench_flag_value(PROG, argc, argv, &i, "--buffer", &v))) {
#ifdef ZINF_HAVE_CUDA
			if (r < 0 || (c = bench_parse_choice(PROG, "--buffer", v, buffer_names)) < 0)
				return -EINVAL;
			a->pinned = c == 0;
			a->buffer_set = true;
			continue;
#else
			(void)buffer_names;
			fprintf(stderr, PROG ": --buffer needs a CUDA build of zinf; this one was built "
					     "without CUDA (configure with -DZINF_CUDA=ON)\n");
			return -EINVAL;
#endif
		}
		fprintf(stderr, PROG ": unknown option '%s' (see zinf bench io --help)\n", arg);
		return -EINVAL;
	}

	char s1[32], s2[32];
	if (!a->path) {
		fprintf(stderr, PROG ": --path is required: pass a folder on the disk to measure, "
				     "e.g. --path /mnt/nvme\n");
		return -EINVAL;
	}
	if (a->size < a->block_size) {
		fprintf(stderr, PROG ": --size %s is smaller than --block-size %s: pass --size %s or "
				     "more, or a smaller --block-size\n",
			bench_fmt_size_arg(a->size, s1, sizeof(s1)),
			bench_fmt_size_arg(a->block_size, s2, sizeof(s2)), s2);
		return -EINVAL;
	}
	if (a->size % a->block_size) {
		char s3[32];
		fprintf(stderr, PROG ": --size %s is not a multiple of --block-size %s: pass --size %s "
				     "(rounded down)%s\n",
			bench_fmt_size_arg(a->size, s1, sizeof(s1)),
			bench_fmt_size_arg(a->block_size, s2, sizeof(s2)),
			bench_fmt_size_arg(a->size / a->block_size * a->block_size, s3, sizeof(s3)),
			size_set ? "" : " or a --block-size that divides the default --size 1G");
		return -EINVAL;
	}
	if (a->size / a->block_size > UINT32_MAX) {
		fprintf(stderr, PROG ": --size / --block-size = %" PRIu64 " blocks exceeds the limit "
				     "%" PRIu32 ": pass a larger --block-size or a smaller --size\n",
			a->size / a->block_size, UINT32_MAX);
		return -EINVAL;
	}
	if (a->gpu && !rw_reads(a->rw)) {
		fprintf(stderr, PROG ": --gpu measures NVMe -> host -> GPU reads; --rw %s writes: pass "
				     "--rw read or --rw randread with --gpu\n",
			rw_names[a->rw]);
		return -EINVAL;
	}
	if (a->gpu && a->rw == RW_READWRITE) {
		fprintf(stderr, PROG ": --gpu with --rw readwrite is not supported: pass --rw read or "
				     "--rw randread\n");
		return -EINVAL;
	}
	if (a->buffer_set && !a->gpu) {
		fprintf(stderr, PROG ": --buffer only applies to --gpu (it chooses how the host slots "
				     "are handed to CUDA): add --gpu or drop --buffer\n");
		return -EINVAL;
	}
	/* Slots: queue_depth x threads x block_size of host memory, kept below half of RAM. */
	uint64_t nslots = a->queue_depth * a->threads;
	uint64_t slab = nslots * a->block_size;
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
	if (ram && slab > ram / 2) {
		fprintf(stderr, PROG ": --queue-depth %" PRIu64 " x --threads %" PRIu64 " x --block-size "
				     "%s = %s of buffers exceeds half of this machine's memory (%s): "
				     "lower one of them\n",
			a->queue_depth, a->threads, bench_fmt_size_arg(a->block_size, s1, sizeof(s1)),
			bench_fmt_size(slab, s2, sizeof(s2)),
			bench_fmt_size(ram, (char[32]){0}, 32));
		return -EINVAL;
	}
	return 0;
}

/* --- Environment checks (runtime failures: exit 1) --- */

static int
check_path(const io_args *a)
{
	struct stat st;
	if (stat(a->path, &st)) {
		int e = errno;
		fprintf(stderr, PROG ": --path %s: %s: %s\n", a->path, strerror(e),
			e == ENOENT ? "create it first (mkdir -p) or pass an existing folder"
				    : "pass a folder this user can reach");
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, PROG ": --path %s is not a folder: pass the folder where the test file "
				     "should be created\n",
			a->path);
		return -ENOTDIR;
	}
	if (access(a->path, W_OK | X_OK)) {
		int e = errno;
		fprintf(stderr, PROG ": --path %s is not writable by this user (%s): pass a folder you "
				     "can create files in, or fix its permissions\n",
			a->path, strerror(e));
		return -e;
	}
	struct statvfs vfs;
	if (statvfs(a->path, &vfs) == 0) {
		uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
		if (avail < a->size) {
			char s1[32], s2[32];
			/* Suggest a round size: whole GiB when there is that much, whole blocks. */
			uint64_t unit = avail >= (1ull << 30) && a->block_size <= (1ull << 30) &&
						(1ull << 30) % a->block_size == 0
					? 1ull << 30
					: a->block_size;
			fprintf(stderr, PROG ": --path %s has %s free but --size needs %s: pass a smaller "
					     "--size (at most %s) or a --path on another filesystem\n",
				a->path, bench_fmt_size(avail, s1, sizeof(s1)),
				bench_fmt_size(a->size, s2, sizeof(s2)),
				bench_fmt_size_arg(avail / unit * unit, (char[32]){0}, 32));
			return -ENOSPC;
		}
	}
	return 0;
}

/* --- Pattern --- */

static inline uint64_t
stamp(uint64_t offset)
{
	/* Multiplication by an odd constant is a bijection: every offset gets its own stamp. */
	return (offset * 0x9e3779b97f4a7c15ull) ^ 0x7a696e6662656e63ull;
}

/* Offsets are multiples of 4096, so stamp(1) can never be a real sector's stamp. */
#define POISON stamp(1)

static void
stamp_word(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

static uint64_t
load_word(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Fills a slot with a non-zero pattern: every 4 KiB sector starts with a placeholder stamp and
 * the rest is a byte sequence that never repeats within the sector. */
static void
fill_slot(uint8_t *buf, uint64_t len)
{
	for (uint64_t s = 0; s < len; s += SECTOR) {
		stamp_word(buf + s, POISON);
		for (unsigned i = 8; i < SECTOR; i++)
			buf[s + i] = (uint8_t)(0xa5 ^ (i * 7) ^ (i >> 8));
	}
}

static void
stamp_block(uint8_t *buf, uint64_t len, uint64_t offset, bool all_sectors)
{
	if (all_sectors) {
		for (uint64_t s = 0; s < len; s += SECTOR)
			stamp_word(buf + s, stamp(offset + s));
		return;
	}
	stamp_word(buf, stamp(offset));
	stamp_word(buf + len - SECTOR, stamp(offset + len - SECTOR));
}

static bool
verify_block(uint8_t *buf, uint64_t len, uint64_t offset)
{
	bool ok = load_word(buf) == stamp(offset) &&
		  load_word(buf + len - SECTOR) == stamp(offset + len - SECTOR);
	stamp_word(buf, POISON);
	stamp_word(buf + len - SECTOR, POISON);
	return ok;
}

/* --- Setup and teardown --- */

static uint64_t
seed_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
}

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int
make_perm(io_ctx *c)
{
	c->perm = malloc(c->nblocks * sizeof(*c->perm));
	if (!c->perm) {
		fprintf(stderr, PROG ": out of memory for the random order of %" PRIu64 " blocks: pass "
				     "a larger --block-size\n",
			c->nblocks);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < c->nblocks; i++)
		c->perm[i] = (uint32_t)i;
	uint64_t s = seed_now() | 1;
	for (uint64_t i = c->nblocks - 1; i > 0; i--) {
		uint64_t j = xorshift(&s) % (i + 1);
		uint32_t t = c->perm[i];
		c->perm[i] = c->perm[j];
		c->perm[j] = t;
	}
	return 0;
}

static int
alloc_slots(io_ctx *c)
{
	const io_args *a = c->a;
	c->nslots = (unsigned)(a->queue_depth * a->threads);
	c->slab_len = (size_t)c->nslots * a->block_size;
	c->map_len = c->slab_len + HUGE_PAGE;
	void *p = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		char s[32];
		fprintf(stderr, PROG ": cannot allocate %s of I/O buffers: %s: lower --queue-depth, "
				     "--threads or --block-size\n",
			bench_fmt_size(c->slab_len, s, sizeof(s)), strerror(errno));
		return -ENOMEM;
	}
	c->map = p;
	c->slab = (uint8_t *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	/* Huge pages make each block a few physically contiguous segments instead of one per
	 * 4 KiB page; devices with a low max_segments (virtio-blk: 254) otherwise split every
	 * 1 MiB request in two. Best effort: without THP the slab stays on 4 KiB pages. */
	if (!a->small_pages && madvise(c->slab, c->slab_len, MADV_HUGEPAGE) == 0)
		c->huge = true;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	c->free_list = calloc(c->nslots, sizeof(*c->free_list));
	c->reqs = calloc(c->nslots, sizeof(*c->reqs));
	c->cpls = calloc(c->nslots, sizeof(*c->cpls));
	if (!c->slots || !c->free_list || !c->reqs || !c->cpls) {
		fprintf(stderr, PROG ": out of memory for %u slot descriptors\n", c->nslots);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < c->nslots; i++) {
		c->slots[i].buf = c->slab + (size_t)i * a->block_size;
		fill_slot(c->slots[i].buf, a->block_size);
	}
	return 0;
}

/* Registers the slots with iosched in ranges of whole slots up to 1 GiB each. Failure (e.g.
 * memlock limit) is reported once and the benchmark runs unregistered, as fio does by default. */
static void
register_slots(io_ctx *c)
{
	uint64_t per = REGISTER_CHUNK / c->a->block_size;
	if (per == 0)
		per = 1;
	unsigned n = (unsigned)((c->nslots + per - 1) / per);
	void **bufs = calloc(n, sizeof(*bufs));
	size_t *lens = calloc(n, sizeof(*lens));
	if (!bufs || !lens) {
		free(bufs);
		free(lens);
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t first = (uint64_t)i * per;
		uint64_t cnt = c->nslots - first < per ? c->nslots - first : per;
		bufs[i] = c->slab + first * c->a->block_size;
		lens[i] = (size_t)(cnt * c->a->block_size);
	}
	int rc = iosched_register_buffers(c->ios, (void *const *)bufs, lens, n);
	if (rc == 0)
		c->registered = true;
	else
		fprintf(stderr, PROG ": warning: buffers not registered (%s); running without fixed "
				     "buffers\n",
			iosched_last_error(c->ios));
	free(bufs);
	free(lens);
}

/* Preallocates the file (fio's fallocate=native). Filesystems without fallocate get a sparse
 * file of the right size instead. */
static int
preallocate(io_ctx *c)
{
	int fd = open(c->path, O_WRONLY);
	if (fd < 0) {
		int e = errno;
		fprintf(stderr, PROG ": %s: cannot reopen the test file: %s\n", c->path, strerror(e));
		return -e;
	}
	int rc = 0;
	if (fallocate(fd, 0, 0, (off_t)c->a->size)) {
		int e = errno;
		if (e == ENOSPC) {
			fprintf(stderr, PROG ": %s: no space for %" PRIu64 " bytes (fallocate: %s): pass "
					     "a smaller --size or another --path\n",
				c->path, c->a->size, strerror(e));
			rc = -e;
		} else if (ftruncate(fd, (off_t)c->a->size)) {
			e = errno;
			fprintf(stderr, PROG ": %s: cannot size the test file to %" PRIu64 " bytes: %s\n",
				c->path, c->a->size, strerror(e));
			rc = -e;
		}
	}
	close(fd);
	return rc;
}

/* After the layout: data on disk, none of it in the page cache (fio's invalidate=1). */
static void
flush_and_evict(io_ctx *c)
{
	int fd = open(c->path, O_RDONLY);
	if (fd < 0)
		return;
	if (fdatasync(fd))
		fprintf(stderr, PROG ": warning: %s: fdatasync: %s\n", c->path, strerror(errno));
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
}

static int
create_file(io_ctx *c)
{
	const io_args *a = c->a;
	unsigned flags = IOSCHED_OPEN_WRITE | IOSCHED_OPEN_CREATE | IOSCHED_OPEN_EXCL;
	if (!a->direct)
		flags |= IOSCHED_OPEN_BUFFERED;
	uint64_t s = seed_now() | 1;
	size_t dl = strlen(a->path);
	const char *sep = dl && a->path[dl - 1] == '/' ? "" : "/";
	for (int attempt = 0; attempt < 16; attempt++) {
		int n = snprintf(c->path, sizeof(c->path), "%s%szinf-bench-io-%ld-%08" PRIx64 ".tmp",
				 a->path, sep, (long)getpid(), xorshift(&s) & 0xffffffffu);
		if (n < 0 || (size_t)n >= sizeof(c->path)) {
			fprintf(stderr, PROG ": --path %s is too long\n", a->path);
			return -ENAMETOOLONG;
		}
		int f = iosched_file_open(c->ios, c->path, flags, 0600);
		if (f == -EEXIST)
			continue; /* never touch a file we did not create */
		if (f < 0) {
			fprintf(stderr, PROG ": cannot create the test file: %s\n",
				iosched_last_error(c->ios));
			return f;
		}
		c->file = f;
		c->created = true;
		return 0;
	}
	fprintf(stderr, PROG ": could not find an unused file name in %s after 16 tries\n", a->path);
	return -EEXIST;
}

#ifdef ZINF_HAVE_CUDA
static int
cuda_fail(const char *what, cudaError_t e)
{
	fprintf(stderr, PROG ": --gpu: %s failed: %s (%s)\n", what, cudaGetErrorString(e),
		cudaGetErrorName(e));
	return -EIO;
}

static int
gpu_setup(io_ctx *c)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		fprintf(stderr, PROG ": --gpu: no CUDA device is available (%s): run on a machine with "
				     "an NVIDIA GPU and driver, or drop --gpu\n",
			e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
		return -ENODEV;
	}
	if ((e = cudaMalloc((void **)&c->dev, c->slab_len)) != cudaSuccess)
		return cuda_fail("cudaMalloc of the device buffers", e);
	if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
		return cuda_fail("cudaStreamCreate", e);
	c->events = calloc(c->nslots, sizeof(*c->events));
	c->copy_fifo = calloc(c->nslots, sizeof(*c->copy_fifo));
	if (!c->events || !c->copy_fifo)
		return -ENOMEM;
	for (unsigned i = 0; i < c->nslots; i++)
		if ((e = cudaEventCreateWithFlags(&c->events[i], cudaEventDisableTiming)) != cudaSuccess)
			return cuda_fail("cudaEventCreate", e);
	if (c->a->pinned) {
		e = cudaHostRegister(c->slab, c->slab_len, cudaHostRegisterDefault);
		if (e != cudaSuccess)
			return cuda_fail("cudaHostRegister of the I/O slots (--buffer pinned)", e);
		c->host_registered = true;
	}
	return 0;
}

static void
gpu_teardown(io_ctx *c)
{
	if (c->stream)
		cudaStreamSynchronize(c->stream);
	if (c->host_registered)
		cudaHostUnregister(c->slab);
	if (c->events)
		for (unsigned i = 0; i < c->nslots; i++)
			if (c->events[i])
				cudaEventDestroy(c->events[i]);
	free(c->events);
	free(c->copy_fifo);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	if (c->dev)
		cudaFree(c->dev);
}

static int
gpu_copy(io_ctx *c, unsigned slot)
{
	cudaError_t e = cudaMemcpyAsync(c->dev + (size_t)slot * c->a->block_size,
					c->slots[slot].buf, c->a->block_size,
					cudaMemcpyHostToDevice, c->stream);
	if (e != cudaSuccess)
		return cuda_fail("cudaMemcpyAsync", e);
	if ((e = cudaEventRecord(c->events[slot], c->stream)) != cudaSuccess)
		return cuda_fail("cudaEventRecord", e);
	c->slots[slot].state = SLOT_COPY;
	c->copy_fifo[(c->copy_head + c->copy_count) % c->nslots] = slot;
	c->copy_count++;
	return 0;
}

/* Frees the slots whose copies have finished, oldest first (one stream: they finish in
 * order). With `wait`, blocks for the oldest one. Returns slots freed or a negative errno. */
static int
gpu_retire(io_ctx *c, bool wait)
{
	int freed = 0;
	while (c->copy_count) {
		unsigned slot = c->copy_fifo[c->copy_head];
		cudaError_t e = wait && freed == 0 ? cudaEventSynchronize(c->events[slot])
						   : cudaEventQuery(c->events[slot]);
		if (e == cudaErrorNotReady)
			break;
		if (e != cudaSuccess)
			return cuda_fail("waiting for a host-to-device copy", e);
		c->copy_head = (c->copy_head + 1) % c->nslots;
		c->copy_count--;
		c->slots[slot].state = SLOT_FREE;
		c->free_list[c->nfree++] = slot;
		freed++;
	}
	return freed;
}
#endif

/* --- The I/O loop --- */

typedef struct io_phase {
	io_rw rw;
	uint64_t ops;     /* requests to complete */
	bool layout;      /* stamp every sector (pattern fill) */
	bool verify;      /* check reads */
	bool gpu;
} io_phase;

static void
next_request(io_ctx *c, const io_phase *ph, uint64_t k, uint64_t *offset, unsigned *op)
{
	uint64_t i = k % c->nblocks;
	uint64_t block = c->perm ? c->perm[i] : i;
	*offset = block * c->a->block_size;
	switch (ph->rw) {
	case RW_READ:
	case RW_RANDREAD:
		*op = IOSCHED_OP_READ;
		break;
	case RW_WRITE:
	case RW_RANDWRITE:
		*op = IOSCHED_OP_WRITE;
		break;
	case RW_READWRITE:
		*op = k & 1 ? IOSCHED_OP_WRITE : IOSCHED_OP_READ;
		break;
	}
}

/* Drains what is in flight after a stop (signal or error): cancels what has not started. */
static void
drain(io_ctx *c)
{
	iosched_cancel_all(c->ios);
	while (iosched_outstanding(c->ios) > 0) {
		int n = iosched_reap(c->ios, c->cpls, c->nslots, 0, 100);
		if (n < 0)
			break;
	}
#ifdef ZINF_HAVE_CUDA
	if (c->stream)
		cudaStreamSynchronize(c->stream);
#endif
}

/* Runs one phase. Returns 0, -EINTR on a signal, or a negative errno on failure (message
 * printed). I/O errors and wrong blocks are counted in the context, not returned. */
static int
run_phase(io_ctx *c, const io_phase *ph)
{
	const uint64_t bs = c->a->block_size;
	uint64_t next = 0, done = 0;
	c->nfree = 0;
	for (unsigned i = 0; i < c->nslots; i++) {
		c->slots[i].state = SLOT_FREE;
		c->free_list[c->nfree++] = c->nslots - 1 - i;
	}
	bool failed = false;
	while (done < ph->ops) {
		if (stop_signal) {
			drain(c);
			return -EINTR;
		}
		/* Hand every free slot its next request, in one batch. */
		unsigned nreq = 0;
		while (c->nfree && next < ph->ops && !failed) {
			unsigned s = c->free_list[--c->nfree];
			io_slot *sl = &c->slots[s];
			next_request(c, ph, next++, &sl->offset, &sl->op);
			if (sl->op == IOSCHED_OP_WRITE)
				stamp_block(sl->buf, bs, sl->offset, ph->layout);
			sl->state = SLOT_IO;
			c->reqs[nreq++] = (iosched_req){.tag = s, .file = c->file, .op = sl->op,
							.buf = sl->buf, .offset = sl->offset, .len = bs};
		}
		if (nreq) {
			int rc = iosched_submit(c->ios, c->reqs, nreq);
			if (rc < 0) {
				fprintf(stderr, PROG ": submit failed: %s\n", iosched_last_error(c->ios));
				drain(c);
				return rc;
			}
		}
		if (failed && iosched_outstanding(c->ios) == 0)
			break;
		int n = 0;
		if (iosched_outstanding(c->ios) > 0) {
#ifdef ZINF_HAVE_CUDA
			int timeout = c->copy_count ? 1 : 100;
#else
			int timeout = 100;
#endif
			n = iosched_reap(c->ios, c->cpls, c->nslots, 1, timeout);
			if (n < 0) {
				fprintf(stderr, PROG ": reap failed: %s\n", iosched_last_error(c->ios));
				drain(c);
				return n;
			}
		}
		for (int i = 0; i < n; i++) {
			const iosched_cpl *cp = &c->cpls[i];
			unsigned s = (unsigned)cp->tag;
			io_slot *sl = &c->slots[s];
			if (cp->res != (int64_t)bs) {
				if (c->io_errors++ == 0) {
					if (cp->res < 0)
						iosched_cpl_describe(c->ios, cp, c->first_error,
								     sizeof(c->first_error));
					else
						snprintf(c->first_error, sizeof(c->first_error),
							 "%s at offset %" PRIu64 ": %" PRId64 " of %" PRIu64
							 " bytes transferred",
							 sl->op == IOSCHED_OP_READ ? "read" : "write",
							 sl->offset, cp->res, bs);
				}
				failed = true; /* stop submitting; finish what is in flight */
			} else if (ph->verify && sl->op == IOSCHED_OP_READ) {
				c->verified_blocks++;
				if (!verify_block(sl->buf, bs, sl->offset))
					c->wrong_blocks++;
			}
#ifdef ZINF_HAVE_CUDA
			if (ph->gpu && sl->op == IOSCHED_OP_READ && cp->res == (int64_t)bs) {
				int rc = gpu_copy(c, s);
				if (rc) {
					drain(c);
					return rc;
				}
				done++;
				continue;
			}
#endif
			sl->state = SLOT_FREE;
			c->free_list[c->nfree++] = s;
			done++;
		}
#ifdef ZINF_HAVE_CUDA
		if (c->copy_count) {
			/* Nothing left to reap: the only progress is a copy finishing. */
			bool wait = iosched_outstanding(c->ios) == 0;
			int rc = gpu_retire(c, wait);
			if (rc < 0) {
				drain(c);
				return rc;
			}
		}
#endif
	}
#ifdef ZINF_HAVE_CUDA
	if (ph->gpu) {
		cudaError_t e = cudaStreamSynchronize(c->stream);
		if (e != cudaSuccess)
			return cuda_fail("cudaStreamSynchronize", e);
		c->copy_count = 0;
	}
#endif
	return 0;
}

/* --- Results --- */

typedef struct io_result {
	uint64_t bytes, ops;
	double seconds, cpu_s;
	uint64_t p50_ns, p99_ns;
	double mean_ns; /* from the histogram, bucket midpoints */
	iosched_stats st;
} io_result;

static double
hist_mean_ns(const iosched_stats *st)
{
	double sum = 0, n = 0;
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++) {
		if (!st->lat_hist[i])
			continue;
		double lo = i ? (double)iosched_lat_bucket_ns(i - 1) : 0.0;
		double mid = (lo + (double)iosched_lat_bucket_ns(i)) / 2;
		sum += mid * (double)st->lat_hist[i];
		n += (double)st->lat_hist[i];
	}
	return n ? sum / n : 0.0;
}

static void
print_table(const io_ctx *c, const io_result *r)
{
	const io_args *a = c->a;
	char s1[32], s2[32];
	double gbs = (double)r->bytes / 1e9 / r->seconds;
	printf("# zinf bench io: %s of a %s file in %s, block %s, queue depth %" PRIu64 " x %" PRIu64
	       " thread(s), %s, %" PRIu64 " loop(s)%s\n",
	       rw_names[a->rw], bench_fmt_size(a->size, s1, sizeof(s1)), a->path,
	       bench_fmt_size(a->block_size, s2, sizeof(s2)), a->queue_depth, a->threads,
	       iosched_file_is_direct(c->ios, c->file) ? "O_DIRECT" : "buffered", a->loops,
	       a->gpu ? (a->pinned ? ", to GPU via pinned slots" : ", to GPU via pageable slots")
		      : "");
	printf("# backend: %s (%s), registered buffers: %s, huge pages: %s\n",
	       iosched_backend_name(iosched_get_backend(c->ios)), iosched_backend_reason(c->ios),
	       c->registered ? "yes" : "no", c->huge ? "asked (madvise)" : "no");
	printf("%10s %14s %9s %10s %10s %10s %10s %9s %9s %13s\n", "backend", "bytes", "seconds",
	       "GB/s", "IOPS", "p50_us", "p99_us", "inflight", "CPU_s/GB", "wrong_blocks");
	printf("%10s %14" PRIu64 " %9.3f %10.3f %10.0f %10.1f %10.1f %9.1f %9.4f %6" PRIu64
	       "/%-6" PRIu64 "\n",
	       iosched_backend_name(iosched_get_backend(c->ios)), r->bytes, r->seconds, gbs,
	       (double)r->ops / r->seconds, (double)r->p50_ns / 1e3, (double)r->p99_ns / 1e3,
	       (double)r->st.pieces / r->seconds * r->mean_ns / 1e9,
	       r->cpu_s / ((double)r->bytes / 1e9), c->wrong_blocks, c->verified_blocks);
}

static int
print_json(const io_ctx *c, const io_result *r)
{
	const io_args *a = c->a;
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return -ENOMEM;
	cJSON_AddStringToObject(o, "bench", "io");
	cJSON_AddStringToObject(o, "backend", iosched_backend_name(iosched_get_backend(c->ios)));
	cJSON_AddStringToObject(o, "backend_reason", iosched_backend_reason(c->ios));
	cJSON_AddStringToObject(o, "rw", rw_names[a->rw]);
	cJSON_AddStringToObject(o, "path", a->path);
	cJSON_AddBoolToObject(o, "direct", iosched_file_is_direct(c->ios, c->file));
	cJSON_AddBoolToObject(o, "registered_buffers", c->registered);
	cJSON_AddBoolToObject(o, "huge_pages", c->huge);
	cJSON_AddNumberToObject(o, "size", (double)a->size);
	cJSON_AddNumberToObject(o, "block_size", (double)a->block_size);
	cJSON_AddNumberToObject(o, "queue_depth", (double)a->queue_depth);
	cJSON_AddNumberToObject(o, "threads", (double)a->threads);
	cJSON_AddNumberToObject(o, "loops", (double)a->loops);
	cJSON_AddBoolToObject(o, "gpu", a->gpu);
	if (a->gpu)
		cJSON_AddStringToObject(o, "buffer", a->pinned ? "pinned" : "pageable");
	cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
	cJSON_AddNumberToObject(o, "ops", (double)r->ops);
	cJSON_AddNumberToObject(o, "seconds", r->seconds);
	cJSON_AddNumberToObject(o, "gb_per_s", (double)r->bytes / 1e9 / r->seconds);
	cJSON_AddNumberToObject(o, "iops", (double)r->ops / r->seconds);
	cJSON_AddNumberToObject(o, "lat_p50_us", (double)r->p50_ns / 1e3);
	cJSON_AddNumberToObject(o, "lat_p99_us", (double)r->p99_ns / 1e3);
	cJSON_AddNumberToObject(o, "lat_mean_us", r->mean_ns / 1e3);
	/* Little's law: pieces in the kernel on average; below queue_depth x threads means the
	 * pipeline leaves slots idle between a completion and the next submission. */
	cJSON_AddNumberToObject(o, "inflight_avg", (double)r->st.pieces / r->seconds * r->mean_ns / 1e9);
	cJSON_AddNumberToObject(o, "cpu_s", r->cpu_s);
	cJSON_AddNumberToObject(o, "cpu_s_per_gb", r->cpu_s / ((double)r->bytes / 1e9));
	cJSON_AddNumberToObject(o, "verified_blocks", (double)c->verified_blocks);
	cJSON_AddNumberToObject(o, "wrong_blocks", (double)c->wrong_blocks);
	cJSON_AddNumberToObject(o, "io_errors", (double)c->io_errors);
	cJSON_AddNumberToObject(o, "retries", (double)r->st.retries);
	cJSON_AddNumberToObject(o, "short_transfers", (double)r->st.short_transfers);
	return bench_json_emit(o);
}

/* --- Main --- */

static void
cleanup(io_ctx *c)
{
	if (c->ios && c->file >= 0) {
		drain(c);
		iosched_file_close(c->ios, c->file);
	}
#ifdef ZINF_HAVE_CUDA
	gpu_teardown(c);
#endif
	iosched_destroy(c->ios);
	if (c->created && unlink(c->path))
		fprintf(stderr, PROG ": warning: could not remove %s: %s\n", c->path, strerror(errno));
	if (c->map)
		munmap(c->map, c->map_len);
	free(c->slots);
	free(c->free_list);
	free(c->reqs);
	free(c->cpls);
	free(c->perm);
}

static int
bench_run(io_ctx *c)
{
	const io_args *a = c->a;
	int rc;
	if (check_path(a))
		return 1;
	c->nblocks = a->size / a->block_size;
	if (alloc_slots(c))
		return 1;
	if ((a->rw == RW_RANDREAD || a->rw == RW_RANDWRITE) && make_perm(c))
		return 1;

	iosched_opts o;
	iosched_opts_init(&o);
	o.backend = a->backend;
	o.queue_depth = (unsigned)a->queue_depth;
	o.block_size = a->block_size;
	o.thread_count = (unsigned)a->threads;
	if (o.max_requests < c->nslots)
		o.max_requests = c->nslots;
	o.quiet = true;
	if ((rc = iosched_create(&o, &c->ios))) {
		fprintf(stderr, PROG ": cannot start iosched (backend %s): %s\n",
			iosched_backend_name(a->backend), c->ios ? iosched_last_error(c->ios)
								  : strerror(-rc));
		return 1;
	}
#ifdef ZINF_HAVE_CUDA
	if (a->gpu && gpu_setup(c))
		return 1;
#endif
	if (create_file(c) || preallocate(c))
		return 1;
	register_slots(c);

	if (rw_reads(a->rw)) {
		io_phase lay = {.rw = RW_WRITE, .ops = c->nblocks, .layout = true};
		uint32_t *perm = c->perm;
		c->perm = NULL; /* lay out sequentially */
		rc = run_phase(c, &lay);
		c->perm = perm;
		if (rc == -EINTR)
			return 128 + stop_signal;
		if (rc || c->io_errors) {
			fprintf(stderr, PROG ": writing the test pattern failed: %s\n",
				c->io_errors ? c->first_error : strerror(-rc));
			return 1;
		}
		flush_and_evict(c);
	}

	io_phase ph = {.rw = a->rw, .ops = c->nblocks * a->loops, .verify = true, .gpu = a->gpu};
	io_result r = {0};
	iosched_reset_stats(c->ios);
	double cpu0 = bench_cpu_s();
	uint64_t t0 = bench_now_ns();
	rc = run_phase(c, &ph);
	uint64_t t1 = bench_now_ns();
	r.cpu_s = bench_cpu_s() - cpu0;
	if (rc == -EINTR)
		return 128 + stop_signal;
	if (rc)
		return 1;
	r.seconds = (double)(t1 - t0) / 1e9;
	iosched_get_stats(c->ios, &r.st);
	r.bytes = r.st.bytes_read + r.st.bytes_written;
	r.ops = r.st.reqs_completed;
	r.p50_ns = iosched_lat_percentile_ns(&r.st, 50.0);
	r.p99_ns = iosched_lat_percentile_ns(&r.st, 99.0);
	r.mean_ns = hist_mean_ns(&r.st);
	if (c->io_errors) {
		fprintf(stderr, PROG ": %" PRIu64 " request(s) failed; first: %s\n", c->io_errors,
			c->first_error);
		return 1;
	}
	if (r.bytes != ph.ops * a->block_size) {
		fprintf(stderr, PROG ": iosched counted %" PRIu64 " bytes but %" PRIu64 " were "
				     "requested\n",
			r.bytes, ph.ops * a->block_size);
		return 1;
	}
	if (a->json ? print_json(c, &r) : (print_table(c, &r), 0))
		return 1;
	if (c->wrong_blocks) {
		fprintf(stderr, PROG ": %" PRIu64 " of %" PRIu64 " blocks read back wrong data (checked "
				     "at their first and last 4 KiB): the disk, filesystem or I/O path "
				     "corrupts data\n",
			c->wrong_blocks, c->verified_blocks);
		return 1;
	}
	return 0;
}

int
zinf_bench_io_main(int argc, char **argv)
{
	io_args a;
	int rc = parse_args(argc, argv, &a);
	if (rc > 0)
		return 0; /* --help */
	if (rc < 0)
		return 2;

	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	stop_signal = 0;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	io_ctx c = {.a = &a, .file = -1};
	rc = bench_run(&c);
	cleanup(&c);
	if (stop_signal && rc != 0) {
		fprintf(stderr, PROG ": interrupted by %s; removed the test file\n",
			stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
		rc = 128 + stop_signal;
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}
