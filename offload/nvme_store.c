/* NVMe swap store: one preallocated file per nvme_path, striped.
 *
 * Layout: path_i/zinf-<run>/rank<r>/swap<i>, folders 0700, files 0600 created with O_EXCL and
 * fallocated to capacity/npaths at create, so running out of disk space happens at start, not
 * mid-training. A chunk's extent is cut into stripe_size units dealt round-robin over the files
 * (unit k in file (first + k) % n, `first` rotating from chunk to chunk so chunks smaller than
 * a stripe spread too); within one file a chunk's units are contiguous, so each file holds one
 * range per chunk, allocated first-fit with 4 KiB alignment. The files and folders are
 * registered with the signal-cleanup table and removed on destroy. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "offload/cleanup.h"
#include "offload_internal.h"

#define SUBSYS "offload: nvme"

typedef struct nvme_file {
	char *path, *run_dir, *rank_dir;
	bool made_run_dir, made_rank_dir, made_file;
	int slot_file, slot_rank, slot_run; /* cleanup table slots, -1 = none */
	int ios_file;                       /* iosched file index, -1 = not open */
	off_ranges ranges;
} nvme_file;

struct offload_nvme {
	offload_nvme_opts opts;
	iosched_t *ios;
	unsigned n;
	uint64_t per_file;
	nvme_file files[OFFLOAD_NVME_MAX_PATHS];
	bool direct;
	unsigned next_first; /* rotation of the first stripe unit */
	offload_tier_usage u;
	char err[OFF_ERR_LEN];
};

void
offload_nvme_opts_init(offload_nvme_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->stripe_size = 1u << 20;
	opts->signal_cleanup = true;
}

static char *
join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 2);
	if (!s)
		return NULL;
	memcpy(s, a, la);
	s[la] = '/';
	memcpy(s + la + 1, b, lb + 1);
	return s;
}

/* Path checks before anything is created. */
static int
check_path(offload_nvme_t *s, const char *path, uint64_t need)
{
	struct stat st;
	char a[64], b[64];
	if (stat(path, &st)) {
		int e = errno;
		off_set_err(s->err, SUBSYS,
		            "nvme_path %s: %s: create it or pass an existing folder", path,
		            strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		off_set_err(s->err, SUBSYS, "nvme_path %s is not a folder", path);
		return -ENOTDIR;
	}
	if (access(path, W_OK | X_OK)) {
		int e = errno;
		off_set_err(s->err, SUBSYS,
		            "nvme_path %s is not writable: %s: pass a folder this user may write",
		            path, strerror(e));
		return e == EROFS ? -EROFS : -EACCES;
	}
	struct statvfs vfs;
	if (statvfs(path, &vfs)) {
		int e = errno;
		off_set_err(s->err, SUBSYS, "nvme_path %s: statvfs: %s", path, strerror(e));
		return -e;
	}
	uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (avail < need) {
		off_set_err(s->err, SUBSYS,
		            "nvme_path %s has too little free space: %s needed, %s available: free "
		            "space, add another nvme_path, or lower the swap capacity",
		            path, off_fmt_bytes(need, a, sizeof(a)),
		            off_fmt_bytes(avail, b, sizeof(b)));
		return -ENOSPC;
	}
	return 0;
}

/* Registers `path` for removal on SIGINT/SIGTERM; says so when it cannot. */
static int
track(const char *path, bool is_dir)
{
	int slot = offload_cleanup_add(path, is_dir);
	if (slot < 0)
		zinf_log(ZINF_LOG_WARN, SUBSYS,
		         "%s will not be removed on SIGINT/SIGTERM: cleanup table: %s (at most %d "
		         "paths per process)",
		         path, strerror(-slot), OFFLOAD_CLEANUP_MAX);
	return slot;
}

static int
make_dir(offload_nvme_t *s, const char *dir, bool exist_ok, bool *made, int *slot)
{
	if (mkdir(dir, 0700)) {
		int e = errno;
		if (e == EEXIST && exist_ok)
			return 0;
		if (e == EEXIST)
			off_set_err(
			        s->err, SUBSYS,
			        "%s already exists: another process uses this run id and rank, or "
			        "a crashed run left it behind (remove it)",
			        dir);
		else
			off_set_err(s->err, SUBSYS, "cannot create %s: %s%s", dir, strerror(e),
			            e == EACCES || e == EPERM || e == EROFS
			                    ? " (nvme_path not writable)"
			                    : "");
		return e == EPERM || e == EROFS ? -EACCES : -e;
	}
	*made = true;
	if (s->opts.signal_cleanup)
		*slot = track(dir, true);
	return 0;
}

static int
make_file(offload_nvme_t *s, nvme_file *f, unsigned i)
{
	char name[32], id[64], rk[32];
	int ret;
	if (s->opts.run_id)
		snprintf(id, sizeof(id), "zinf-%s", s->opts.run_id);
	else
		snprintf(id, sizeof(id), "zinf-%ld", (long)getpid());
	snprintf(rk, sizeof(rk), "rank%u", s->opts.rank);
	snprintf(name, sizeof(name), "swap%u", i);
	f->run_dir = join(s->opts.paths[i], id);
	f->rank_dir = f->run_dir ? join(f->run_dir, rk) : NULL;
	f->path = f->rank_dir ? join(f->rank_dir, name) : NULL;
	if (!f->path)
		return -ENOMEM;
	if ((ret = make_dir(s, f->run_dir, true, &f->made_run_dir, &f->slot_run)))
		return ret;
	if ((ret = make_dir(s, f->rank_dir, false, &f->made_rank_dir, &f->slot_rank)))
		return ret;
	int fd = open(f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		off_set_err(s->err, SUBSYS, "cannot create %s: %s", f->path, strerror(e));
		return -e;
	}
	f->made_file = true;
	if (s->opts.signal_cleanup)
		f->slot_file = track(f->path, false);
	ret = 0;
	if (fallocate(fd, 0, 0, (off_t)s->per_file)) {
		int e = errno;
		if (e == EOPNOTSUPP || e == ENOSYS) {
			if (ftruncate(fd, (off_t)s->per_file))
				ret = -errno;
		} else {
			ret = -e;
		}
		if (ret) {
			char a[64];
			off_set_err(s->err, SUBSYS, "cannot preallocate %s of %s: %s",
			            off_fmt_bytes(s->per_file, a, sizeof(a)), f->path,
			            strerror(-ret));
		}
	}
	close(fd);
	if (ret)
		return ret;
	unsigned fl = IOSCHED_OPEN_WRITE | (s->opts.buffered ? IOSCHED_OPEN_BUFFERED : 0);
	ret = iosched_file_open(s->ios, f->path, fl, 0600);
	if (ret < 0) {
		off_set_err(s->err, SUBSYS, "%s", iosched_last_error(s->ios));
		return ret;
	}
	f->ios_file = ret;
	if (!iosched_file_is_direct(s->ios, ret))
		s->direct = false;
	return off_ranges_init(&f->ranges, s->per_file);
}

int
offload_nvme_create(const offload_nvme_opts *opts, iosched_t *ios, offload_nvme_t **out, char *err,
                    size_t err_len)
{
	*out = NULL;
	offload_nvme_t *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = *opts;
	s->ios = ios;
	s->direct = !opts->buffered;
	for (unsigned i = 0; i < OFFLOAD_NVME_MAX_PATHS; i++) {
		s->files[i].slot_file = s->files[i].slot_rank = s->files[i].slot_run = -1;
		s->files[i].ios_file = -1;
	}
	int ret = -EINVAL;
	if (!opts->npaths || opts->npaths > OFFLOAD_NVME_MAX_PATHS || !opts->paths) {
		off_set_err(s->err, SUBSYS, "nvme_path: %u paths given, 1..%u allowed",
		            opts->npaths, OFFLOAD_NVME_MAX_PATHS);
		goto fail;
	}
	if (!opts->capacity || !opts->stripe_size || opts->stripe_size % OFFLOAD_ALIGN) {
		off_set_err(s->err, SUBSYS,
		            "swap capacity must be > 0 (got %llu) and stripe size a multiple of "
		            "4096 (got %llu)",
		            (unsigned long long)opts->capacity,
		            (unsigned long long)opts->stripe_size);
		goto fail;
	}
	s->n = opts->npaths;
	s->per_file = off_round_up((opts->capacity + s->n - 1) / s->n, OFFLOAD_ALIGN);
	for (unsigned i = 0; i < s->n; i++)
		if ((ret = check_path(s, opts->paths[i], s->per_file)))
			goto fail;
	for (unsigned i = 0; i < s->n; i++)
		if ((ret = make_file(s, &s->files[i], i)))
			goto fail;
	s->u.budget = s->per_file * s->n;
	*out = s;
	return 0;
fail:
	if (err && err_len)
		snprintf(err, err_len, "%s", s->err);
	offload_nvme_destroy(s);
	return ret;
}

void
offload_nvme_destroy(offload_nvme_t *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < OFFLOAD_NVME_MAX_PATHS; i++) {
		nvme_file *f = &s->files[i];
		if (f->ios_file >= 0)
			iosched_file_close(s->ios, f->ios_file);
		if (f->made_file)
			unlink(f->path);
		offload_cleanup_remove(f->slot_file);
		if (f->made_rank_dir)
			rmdir(f->rank_dir);
		offload_cleanup_remove(f->slot_rank);
		if (f->made_run_dir)
			rmdir(f->run_dir); /* stays while other ranks use it */
		offload_cleanup_remove(f->slot_run);
		off_ranges_fini(&f->ranges);
		free(f->path);
		free(f->rank_dir);
		free(f->run_dir);
	}
	free(s);
}

/* One try with unit 0 in file `first`; 0 or -ENOBUFS with nothing taken (*fail_file set). */
static int
alloc_rotation(offload_nvme_t *s, uint64_t len, unsigned first, offload_nvme_extent *e,
               unsigned *fail_file)
{
	uint64_t stripe = s->opts.stripe_size, units = (len + stripe - 1) / stripe;
	uint64_t last = len - (units - 1) * stripe;
	memset(e, 0, sizeof(*e));
	e->first = first;
	unsigned j;
	int ret = 0;
	for (j = 0; j < s->n && j < units; j++) {
		unsigned f = (first + j) % s->n;
		uint64_t bytes = ((units - 1 - j) / s->n + 1) * stripe;
		if (j == (units - 1) % s->n)
			bytes -= stripe - last;
		if ((ret = off_ranges_alloc(&s->files[f].ranges, bytes, OFFLOAD_ALIGN,
		                            &e->base[f]))) {
			*fail_file = f;
			break;
		}
		e->bytes[f] = bytes;
	}
	if (!ret)
		return 0;
	while (j-- > 0) {
		unsigned f = (first + j) % s->n;
		off_ranges_free(&s->files[f].ranges, e->base[f], e->bytes[f]);
	}
	memset(e, 0, sizeof(*e));
	return ret;
}

int
offload_nvme_alloc(offload_nvme_t *s, uint64_t len, offload_nvme_extent *e)
{
	memset(e, 0, sizeof(*e));
	if (!len)
		return -EINVAL;
	len = off_round_up(len, OFFLOAD_ALIGN);
	/* Rotating the first file spreads chunks smaller than a stripe over every path. */
	int ret = -ENOBUFS;
	unsigned fail_file = 0;
	for (unsigned r = 0; r < s->n && ret; r++) {
		unsigned first = (s->next_first + r) % s->n;
		ret = alloc_rotation(s, len, first, e, &fail_file);
		if (!ret)
			s->next_first = (first + 1) % s->n;
	}
	if (ret) {
		char a[64], b[64], c[64];
		off_set_err(s->err, SUBSYS,
		            "nvme tier full: %s requested, %s in use, capacity %s (no room in %s): "
		            "raise the swap capacity or add an nvme_path",
		            off_fmt_bytes(len, a, sizeof(a)),
		            off_fmt_bytes(s->u.in_use, b, sizeof(b)),
		            off_fmt_bytes(s->u.budget, c, sizeof(c)), s->files[fail_file].path);
		return ret;
	}
	e->len = len;
	s->u.in_use += len;
	s->u.allocs++;
	if (s->u.in_use > s->u.peak)
		s->u.peak = s->u.in_use;
	return 0;
}

void
offload_nvme_free(offload_nvme_t *s, const offload_nvme_extent *e)
{
	if (!e->len)
		return;
	for (unsigned f = 0; f < s->n; f++)
		if (e->bytes[f])
			off_ranges_free(&s->files[f].ranges, e->base[f], e->bytes[f]);
	s->u.in_use -= e->len;
	s->u.allocs--;
}

unsigned
offload_nvme_req_count(const offload_nvme_t *s, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	uint64_t st = s->opts.stripe_size;
	return (unsigned)((off + len - 1) / st - off / st + 1);
}

int
offload_nvme_reqs(const offload_nvme_t *s, const offload_nvme_extent *e, unsigned op, void *buf,
                  uint64_t off, uint64_t len, uint64_t tag, iosched_req *reqs, unsigned max)
{
	if (off % OFFLOAD_ALIGN || len % OFFLOAD_ALIGN || !len || off + len > e->len)
		return -EINVAL;
	uint64_t st = s->opts.stripe_size, end = off + len;
	unsigned n = 0;
	for (uint64_t k = off / st; k * st < end; k++) {
		uint64_t u0 = k * st, a = off > u0 ? off : u0, b = end < u0 + st ? end : u0 + st;
		unsigned f = (unsigned)((e->first + k) % s->n);
		uint64_t foff = e->base[f] + (k / s->n) * st + (a - u0);
		char *p = (char *)buf + (a - off);
		if (n && reqs[n - 1].file == s->files[f].ios_file &&
		    reqs[n - 1].offset + reqs[n - 1].len == foff &&
		    (char *)reqs[n - 1].buf + reqs[n - 1].len == p) {
			reqs[n - 1].len += b - a;
			continue;
		}
		if (n == max)
			return -E2BIG;
		reqs[n++] = (iosched_req){.tag = tag,
		                          .file = s->files[f].ios_file,
		                          .op = op,
		                          .buf = p,
		                          .offset = foff,
		                          .len = b - a};
	}
	return (int)n;
}

unsigned
offload_nvme_file_count(const offload_nvme_t *s)
{
	return s->n;
}

const char *
offload_nvme_file_path(const offload_nvme_t *s, unsigned i)
{
	return i < s->n ? s->files[i].path : NULL;
}

const char *
offload_nvme_dir(const offload_nvme_t *s, unsigned i)
{
	return i < s->n ? s->files[i].rank_dir : NULL;
}

bool
offload_nvme_is_direct(const offload_nvme_t *s)
{
	return s->direct;
}

void
offload_nvme_usage(const offload_nvme_t *s, offload_tier_usage *u)
{
	*u = s->u;
}

const char *
offload_nvme_last_error(const offload_nvme_t *s)
{
	return s ? s->err : "no nvme store";
}
