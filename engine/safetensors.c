/* engine/safetensors: read and write the safetensors format; see safetensors.h.
 *
 * DESIGN. Open checks everything the header claims against the file before any tensor is read,
 * so a later read can only fail if the file changes underneath. Offsets are parsed from cJSON
 * doubles, which hold integers exactly up to 2^53: larger values are refused rather than
 * rounded. The writer lays tensors out back to back in the order given, pads the header with
 * spaces to a multiple of 8 bytes (as the reference implementation does, so the data section
 * is aligned) and renames a fully written, fsynced temporary file into place. */
#define _GNU_SOURCE
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "model_internal.h"

/* one error helper for the engine's file formats (model_internal.h) */
#define FAIL(rc, ...) zinf_model_fail(err, errlen, (rc), __VA_ARGS__)

static const struct {
	const char *name;
	size_t size;
} dtypes[ZINF_ST_NDTYPES] = {
	[ZINF_ST_BOOL] = {"BOOL", 1},   [ZINF_ST_U8] = {"U8", 1},
	[ZINF_ST_I8] = {"I8", 1},       [ZINF_ST_F8_E4M3] = {"F8_E4M3", 1},
	[ZINF_ST_F8_E5M2] = {"F8_E5M2", 1}, [ZINF_ST_I16] = {"I16", 2},
	[ZINF_ST_U16] = {"U16", 2},     [ZINF_ST_F16] = {"F16", 2},
	[ZINF_ST_BF16] = {"BF16", 2},   [ZINF_ST_I32] = {"I32", 4},
	[ZINF_ST_U32] = {"U32", 4},     [ZINF_ST_F32] = {"F32", 4},
	[ZINF_ST_I64] = {"I64", 8},     [ZINF_ST_U64] = {"U64", 8},
	[ZINF_ST_F64] = {"F64", 8},
};

const char *
zinf_st_dtype_name(zinf_st_dtype d)
{
	return (unsigned)d < ZINF_ST_NDTYPES ? dtypes[d].name : "?";
}

size_t
zinf_st_dtype_size(zinf_st_dtype d)
{
	return (unsigned)d < ZINF_ST_NDTYPES ? dtypes[d].size : 0;
}

int
zinf_st_dtype_parse(const char *name)
{
	for (int i = 0; i < ZINF_ST_NDTYPES; i++)
		if (!strcmp(name, dtypes[i].name))
			return i;
	return -1;
}

/* ---- whole-file helpers ---- */

static int
pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	*got = done;
	return 0;
}

static int
write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = write(fd, (const char *)buf + done, len - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

int
zinf_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
	*out = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return FAIL(-e, "%s: %s", path, strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return FAIL(-EINVAL, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return FAIL(-EFBIG, "%s: %lld bytes is more than the %zu this file may have", path,
			    (long long)st.st_size, max);
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return FAIL(-ENOMEM, "%s: out of memory for %lld bytes", path,
			    (long long)st.st_size);
	}
	size_t got = 0;
	int rc = pread_full(fd, buf, (size_t)st.st_size, 0, &got);
	close(fd);
	if (rc) {
		free(buf);
		return FAIL(rc, "%s: read: %s", path, strerror(-rc));
	}
	buf[got] = 0;
	*out = buf;
	*len = got;
	return 0;
}

/* tmp gets "<path>.tmp.<pid>.<n>", created empty with mode 0644. */
static int
open_tmp(const char *path, char **tmp, char *err, size_t errlen)
{
	static atomic_uint counter;
	size_t n = strlen(path) + 48;
	*tmp = malloc(n);
	if (!*tmp)
		return FAIL(-ENOMEM, "%s: out of memory", path);
	snprintf(*tmp, n, "%s.tmp.%d.%u", path, (int)getpid(), atomic_fetch_add(&counter, 1));
	int fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		FAIL(-e, "%s: cannot create %s: %s", path, *tmp, strerror(e));
		free(*tmp);
		*tmp = NULL;
		return -e;
	}
	return fd;
}

/* fsync + close fd, rename tmp over path, fsync the folder. Unlinks tmp on failure. */
static int
commit_tmp(int fd, const char *tmp, const char *path, char *err, size_t errlen)
{
	int rc = 0;
	if (fsync(fd)) {
		rc = -errno;
		FAIL(rc, "%s: fsync: %s", tmp, strerror(-rc));
	}
	if (close(fd) && !rc) {
		rc = -errno;
		FAIL(rc, "%s: close: %s", tmp, strerror(-rc));
	}
	if (!rc && rename(tmp, path)) {
		rc = -errno;
		FAIL(rc, "%s: rename from %s: %s", path, tmp, strerror(-rc));
	}
	if (rc) {
		unlink(tmp);
		return rc;
	}
	char *dir = strdup(path);
	if (dir) {
		char *slash = strrchr(dir, '/');
		const char *d = ".";
		if (slash) {
			*slash = 0;
			d = slash == dir ? "/" : dir;
		}
		int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd); /* best effort: the data itself is already durable */
			close(dfd);
		}
		free(dir);
	}
	return 0;
}

int
zinf_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
	char *tmp;
	int fd = open_tmp(path, &tmp, err, errlen);
	if (fd < 0)
		return fd;
	int rc = write_full(fd, data, len);
	if (rc) {
		FAIL(rc, "%s: write: %s", tmp, strerror(-rc));
		close(fd);
		unlink(tmp);
	} else {
		rc = commit_tmp(fd, tmp, path, err, errlen);
	}
	free(tmp);
	return rc;
}

/* ---- reader ---- */

void
zinf_st_close(zinf_st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->ntensors; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	free(f->path);
	if (f->fd >= 0)
		close(f->fd);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool
json_uint(const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return false;
	double d = v->valuedouble;
	if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d))
		return false;
	*out = (uint64_t)d;
	return true;
}

typedef struct span {
	uint64_t begin, end;
	int idx;
} span;

static int
span_cmp(const void *a, const void *b)
{
	const span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int
name_cmp(const void *a, const void *b)
{
	const zinf_st_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static int
parse_tensor(const char *path, const cJSON *e, uint64_t data_len, zinf_st_tensor *t,
	     uint64_t *begin, char *err, size_t errlen)
{
	const char *n = e->string;
	if (!cJSON_IsObject(e))
		return FAIL(-EINVAL, "%s: tensor %s: header entry is not an object", path, n);
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
		return FAIL(-EINVAL,
			    "%s: tensor %s: needs \"dtype\" (a string), \"shape\" and "
			    "\"data_offsets\" (arrays)",
			    path, n);
	int d = zinf_st_dtype_parse(dt->valuestring);
	if (d < 0)
		return FAIL(-EINVAL, "%s: tensor %s: dtype \"%s\" is not a safetensors dtype", path,
			    n, dt->valuestring);
	t->dtype = (zinf_st_dtype)d;
	int nd = cJSON_GetArraySize(sh);
	if (nd > ZINF_ST_MAX_DIMS)
		return FAIL(-EINVAL, "%s: tensor %s: %d dimensions, at most %d are supported", path,
			    n, nd, ZINF_ST_MAX_DIMS);
	t->ndim = nd;
	uint64_t numel = 1;
	for (int i = 0; i < nd; i++) {
		uint64_t v;
		if (!json_uint(cJSON_GetArrayItem(sh, i), &v))
			return FAIL(-EINVAL,
				    "%s: tensor %s: shape[%d] is not a non-negative integer", path,
				    n, i);
		t->shape[i] = (int64_t)v;
		if (__builtin_mul_overflow(numel, v, &numel) || numel > (1ULL << 62))
			return FAIL(-EINVAL, "%s: tensor %s: shape has too many elements", path,
				    n);
	}
	t->numel = (int64_t)numel;
	uint64_t b, en;
	if (cJSON_GetArraySize(off) != 2 || !json_uint(cJSON_GetArrayItem(off, 0), &b) ||
	    !json_uint(cJSON_GetArrayItem(off, 1), &en) || b > en)
		return FAIL(-EINVAL,
			    "%s: tensor %s: data_offsets must be [begin, end] with 0 <= begin <= "
			    "end",
			    path, n);
	if (en > data_len)
		return FAIL(-EINVAL,
			    "%s: tensor %s: data_offsets end %llu is past the %llu bytes of data "
			    "in the file: the file is truncated",
			    path, n, (unsigned long long)en, (unsigned long long)data_len);
	uint64_t want = numel * dtypes[d].size;
	if (en - b != want)
		return FAIL(-EINVAL,
			    "%s: tensor %s: data_offsets span %llu bytes but %s of %llu elements "
			    "needs %llu",
			    path, n, (unsigned long long)(en - b), dtypes[d].name,
			    (unsigned long long)numel, (unsigned long long)want);
	t->nbytes = want;
	*begin = b;
	return 0;
}

static int
check_metadata(const char *path, const cJSON *m, char *err, size_t errlen)
{
	if (!cJSON_IsObject(m))
		return FAIL(-EINVAL, "%s: __metadata__ is not an object of strings", path);
	for (const cJSON *c = m->child; c; c = c->next)
		if (!cJSON_IsString(c))
			return FAIL(-EINVAL, "%s: __metadata__.%s is not a string", path, c->string);
	return 0;
}

int
zinf_st_open(const char *path, zinf_st_file *f, char *err, size_t errlen)
{
	memset(f, 0, sizeof(*f));
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0) {
		int e = errno;
		return FAIL(-e, "%s: %s", path, strerror(e));
	}
	f->path = strdup(path);
	struct stat st;
	int rc = 0;
	char *hdr = NULL;
	cJSON *root = NULL;
	span *spans = NULL;
	zinf_st_tensor **byname = NULL;
	if (!f->path) {
		rc = FAIL(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (fstat(f->fd, &st) || !S_ISREG(st.st_mode)) {
		rc = FAIL(-EINVAL, "%s: not a regular file", path);
		goto out;
	}
	f->file_size = (uint64_t)st.st_size;
	unsigned char len8[8];
	size_t got = 0;
	if ((rc = pread_full(f->fd, len8, 8, 0, &got))) {
		FAIL(rc, "%s: read: %s", path, strerror(-rc));
		goto out;
	}
	if (got < 8) {
		rc = FAIL(-EINVAL,
			  "%s: %llu bytes is shorter than the 8-byte header length: truncated or "
			  "not a safetensors file",
			  path, (unsigned long long)f->file_size);
		goto out;
	}
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | len8[i];
	if (hlen < 2 || hlen > ZINF_ST_HEADER_MAX) {
		rc = FAIL(-EINVAL,
			  "%s: header length %llu is outside 2..%u bytes: not a safetensors file",
			  path, (unsigned long long)hlen, ZINF_ST_HEADER_MAX);
		goto out;
	}
	if (hlen > f->file_size - 8) {
		rc = FAIL(-EINVAL,
			  "%s: header length %llu runs past the end of the %llu-byte file: the "
			  "file is truncated or not safetensors",
			  path, (unsigned long long)hlen, (unsigned long long)f->file_size);
		goto out;
	}
	f->data_start = 8 + hlen;
	hdr = malloc(hlen + 1);
	if (!hdr) {
		rc = FAIL(-ENOMEM, "%s: out of memory for a %llu-byte header", path,
			  (unsigned long long)hlen);
		goto out;
	}
	if ((rc = pread_full(f->fd, hdr, hlen, 8, &got)) || got != hlen) {
		rc = rc ? rc : -EIO;
		FAIL(rc, "%s: reading the header: %s", path, strerror(-rc));
		goto out;
	}
	hdr[hlen] = 0;
	const char *end = NULL;
	if (strlen(hdr) != hlen || !(root = cJSON_ParseWithOpts(hdr, &end, 1)) ||
	    !cJSON_IsObject(root)) {
		size_t at = strlen(hdr) != hlen ? strlen(hdr) : end ? (size_t)(end - hdr) : 0;
		rc = FAIL(-EINVAL,
			  "%s: the header is not a JSON object (bad JSON near byte %zu of %llu): "
			  "not a safetensors file, or a corrupt one",
			  path, at, (unsigned long long)hlen);
		goto out;
	}
	int n = 0;
	for (const cJSON *e = root->child; e; e = e->next)
		n += strcmp(e->string, "__metadata__") != 0;
	f->tensors = calloc((size_t)n + 1, sizeof(*f->tensors));
	spans = calloc((size_t)n + 1, sizeof(*spans));
	byname = calloc((size_t)n + 1, sizeof(*byname));
	if (!f->tensors || !spans || !byname) {
		rc = FAIL(-ENOMEM, "%s: out of memory for %d tensors", path, n);
		goto out;
	}
	uint64_t data_len = f->file_size - f->data_start;
	for (const cJSON *e = root->child; e; e = e->next) {
		if (!strcmp(e->string, "__metadata__")) {
			if ((rc = check_metadata(path, e, err, errlen)))
				goto out;
			continue;
		}
		zinf_st_tensor *t = &f->tensors[f->ntensors];
		uint64_t b = 0;
		if ((rc = parse_tensor(path, e, data_len, t, &b, err, errlen)))
			goto out;
		if (!(t->name = strdup(e->string))) {
			rc = FAIL(-ENOMEM, "%s: out of memory", path);
			goto out;
		}
		t->offset = f->data_start + b;
		spans[f->ntensors] = (span){b, b + t->nbytes, f->ntensors};
		byname[f->ntensors] = t;
		f->ntensors++;
	}
	qsort(byname, (size_t)n, sizeof(*byname), name_cmp);
	for (int i = 1; i < n; i++)
		if (!strcmp(byname[i]->name, byname[i - 1]->name)) {
			rc = FAIL(-EINVAL, "%s: tensor %s appears twice in the header", path,
				  byname[i]->name);
			goto out;
		}
	qsort(spans, (size_t)n, sizeof(*spans), span_cmp);
	for (int i = 1; i < n; i++)
		if (spans[i].begin < spans[i - 1].end && spans[i].begin < spans[i].end) {
			rc = FAIL(-EINVAL,
				  "%s: tensor %s (bytes %llu..%llu) overlaps tensor %s (bytes "
				  "%llu..%llu)",
				  path, f->tensors[spans[i].idx].name,
				  (unsigned long long)spans[i].begin,
				  (unsigned long long)spans[i].end,
				  f->tensors[spans[i - 1].idx].name,
				  (unsigned long long)spans[i - 1].begin,
				  (unsigned long long)spans[i - 1].end);
			goto out;
		}
out:
	cJSON_Delete(root);
	free(hdr);
	free(spans);
	free(byname);
	if (rc)
		zinf_st_close(f);
	return rc;
}

const zinf_st_tensor *
zinf_st_find(const zinf_st_file *f, const char *name)
{
	for (int i = 0; i < f->ntensors; i++)
		if (!strcmp(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

int
zinf_st_read(const zinf_st_file *f, const zinf_st_tensor *t, uint64_t at, void *buf, size_t len,
	     char *err, size_t errlen)
{
	if (at > t->nbytes || len > t->nbytes - at)
		return FAIL(-EINVAL, "%s: tensor %s: read of %zu bytes at %llu is past its %llu",
			    f->path, t->name, len, (unsigned long long)at,
			    (unsigned long long)t->nbytes);
	size_t got = 0;
	int rc = pread_full(f->fd, buf, len, t->offset + at, &got);
	if (rc)
		return FAIL(rc, "%s: tensor %s: read: %s", f->path, t->name, strerror(-rc));
	if (got != len)
		return FAIL(-EIO, "%s: tensor %s: the file ends %zu bytes into a %zu-byte read: "
				  "truncated while open",
			    f->path, t->name, got, len);
	return 0;
}

/* ---- writer ---- */

/* Appends s to the growing buffer; returns false when out of memory. */
typedef struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
} sbuf;

static void
sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_add(sbuf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

/* A JSON string literal. */
static void
sb_str(sbuf *b, const char *s)
{
	sb_add(b, "\"");
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			sb_add(b, "\\%c", *c);
		else if (*c < 0x20)
			sb_add(b, "\\u%04x", *c);
		else
			sb_add(b, "%c", *c);
	}
	sb_add(b, "\"");
}

int
zinf_st_writer_open(zinf_st_writer *w, const char *path, const zinf_st_spec *specs, int n,
		    const char *const *metadata, char *err, size_t errlen)
{
	memset(w, 0, sizeof(*w));
	w->fd = -1;
	sbuf b = {0};
	uint64_t off = 0;
	sb_add(&b, "{");
	bool first = true;
	if (metadata && metadata[0]) {
		sb_add(&b, "\"__metadata__\":{");
		for (int i = 0; metadata[i] && metadata[i + 1]; i += 2) {
			if (i)
				sb_add(&b, ",");
			sb_str(&b, metadata[i]);
			sb_add(&b, ":");
			sb_str(&b, metadata[i + 1]);
		}
		sb_add(&b, "}");
		first = false;
	}
	for (int i = 0; i < n; i++) {
		const zinf_st_spec *s = &specs[i];
		if ((unsigned)s->dtype >= ZINF_ST_NDTYPES || s->ndim < 0 ||
		    s->ndim > ZINF_ST_MAX_DIMS || !strcmp(s->name, "__metadata__")) {
			free(b.p);
			return FAIL(-EINVAL, "%s: tensor %s: bad dtype %d or ndim %d", path,
				    s->name, (int)s->dtype, s->ndim);
		}
		uint64_t numel = 1;
		sb_add(&b, "%s", first ? "" : ",");
		first = false;
		sb_str(&b, s->name);
		sb_add(&b, ":{\"dtype\":\"%s\",\"shape\":[", dtypes[s->dtype].name);
		for (int d = 0; d < s->ndim; d++) {
			if (s->shape[d] < 0) {
				free(b.p);
				return FAIL(-EINVAL, "%s: tensor %s: shape[%d] = %lld is negative",
					    path, s->name, d, (long long)s->shape[d]);
			}
			sb_add(&b, "%s%lld", d ? "," : "", (long long)s->shape[d]);
			numel *= (uint64_t)s->shape[d];
		}
		uint64_t nb = numel * dtypes[s->dtype].size;
		sb_add(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
		       (unsigned long long)(off + nb));
		off += nb;
	}
	sb_add(&b, "}");
	while (!b.oom && (8 + b.len) % 8)
		sb_add(&b, " ");
	if (b.oom) {
		free(b.p);
		return FAIL(-ENOMEM, "%s: out of memory building the header", path);
	}
	w->path = strdup(path);
	if (!w->path) {
		free(b.p);
		return FAIL(-ENOMEM, "%s: out of memory", path);
	}
	int fd = open_tmp(path, &w->tmp, err, errlen);
	if (fd < 0) {
		free(b.p);
		free(w->path);
		w->path = NULL;
		return fd;
	}
	w->fd = fd;
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
	int rc = write_full(fd, len8, 8);
	if (!rc)
		rc = write_full(fd, b.p, b.len);
	free(b.p);
	if (rc) {
		FAIL(rc, "%s: writing the header: %s", w->tmp, strerror(-rc));
		zinf_st_writer_abort(w);
		return rc;
	}
	w->end = off;
	return 0;
}

int
zinf_st_writer_write(zinf_st_writer *w, const void *data, size_t len, char *err, size_t errlen)
{
	if (w->fd < 0)
		return FAIL(-EBADF, "%s: writer is not open", w->path ? w->path : "(safetensors)");
	if (len > w->end - w->pos)
		return FAIL(-EINVAL, "%s: %zu more bytes than the header's %llu", w->path,
			    len - (size_t)(w->end - w->pos), (unsigned long long)w->end);
	int rc = write_full(w->fd, data, len);
	if (rc)
		return FAIL(rc, "%s: write at data byte %llu: %s", w->tmp,
			    (unsigned long long)w->pos, strerror(-rc));
	w->pos += len;
	return 0;
}

int
zinf_st_writer_finish(zinf_st_writer *w, char *err, size_t errlen)
{
	if (w->fd < 0)
		return FAIL(-EBADF, "%s: writer is not open", w->path ? w->path : "(safetensors)");
	if (w->pos != w->end)
		return FAIL(-EINVAL, "%s: %llu of the header's %llu data bytes written", w->path,
			    (unsigned long long)w->pos, (unsigned long long)w->end);
	int rc = commit_tmp(w->fd, w->tmp, w->path, err, errlen);
	w->fd = -1;
	free(w->tmp);
	w->tmp = NULL;
	free(w->path);
	w->path = NULL;
	return rc;
}

void
zinf_st_writer_abort(zinf_st_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	if (w->tmp)
		unlink(w->tmp);
	free(w->tmp);
	free(w->path);
	w->tmp = w->path = NULL;
}
