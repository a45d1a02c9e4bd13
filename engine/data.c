/* engine/data: token shards, the data loader, the default corpus.
 *
 * DESIGN. Nothing read from a file is trusted: every header is checked against the file's size
 * when the loader opens, again each time the loader enters the shard, and every token against
 * the model's vocab size as it is read. The loader never holds a position that needs history:
 * the epoch's shard order comes from a counter-based RNG keyed by (seed, epoch) and a shard's
 * batch order from a keyed bijection (a Feistel network with cycle walking) that maps an index
 * straight to a batch, so (seed, epoch, step) is the whole state and resume is bit-exact. */
#define _GNU_SOURCE
#include "data_internal.h"
#include "engine/data.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull;

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void
wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void
wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t
rd_tok(const uint8_t *p, int width)
{
	return width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : rd32(p);
}

/* ---- I/O helpers ---- */

static int
pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *b = buf;
	while (len) {
		ssize_t r = pread(fd, b, len, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ENODATA; /* the file shrank */
		b += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static int
write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	while (len) {
		ssize_t r = write(fd, b, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += r;
		len -= (size_t)r;
	}
	return 0;
}

int
zinf_data_read_file(const char *path, size_t max, char **buf, size_t *len, char *err,
                    size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return FAIL(-errno, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st)) {
		int rc = -errno;
		close(fd);
		return FAIL(rc, "%s: cannot stat: %s", path, strerror(-rc));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return FAIL(-EINVAL, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return FAIL(-EFBIG, "%s: %llu bytes, more than the %zu this reader takes; split it",
		            path, (ull)st.st_size, max);
	}
	size_t n = (size_t)st.st_size;
	char *b = malloc(n + 1);
	if (!b) {
		close(fd);
		return FAIL(-ENOMEM, "%s: out of memory for %zu bytes", path, n + 1);
	}
	int rc = pread_all(fd, b, n, 0);
	close(fd);
	if (rc) {
		free(b);
		return FAIL(rc, "%s: read failed: %s", path, strerror(-rc));
	}
	b[n] = 0;
	*buf = b;
	*len = n;
	return 0;
}

/* ---- Shards ---- */

int
zinf_shard_parse_header(const char *name, const void *hdr, size_t hdr_len, uint64_t file_size,
                        zinf_shard_info *info, char *err, size_t errlen)
{
	const uint8_t *h = hdr;
	if (file_size < ZINF_SHARD_HEADER_BYTES)
		return FAIL(-EINVAL,
		            "%s: truncated header: the file is %llu bytes, a token shard starts with a "
		            "%d-byte header (256 int32: magic, version, token count); the file is "
		            "not a shard or was cut short",
		            name, (ull)file_size, ZINF_SHARD_HEADER_BYTES);
	if (hdr_len < ZINF_SHARD_HEADER_BYTES)
		return FAIL(-EIO, "%s: read %zu bytes of the %d-byte header from a %llu-byte file",
		            name, hdr_len, ZINF_SHARD_HEADER_BYTES, (ull)file_size);
	int32_t magic = (int32_t)rd32(h), version = (int32_t)rd32(h + 4);
	int32_t count = (int32_t)rd32(h + 8);
	int width, want;
	if (magic == ZINF_SHARD_MAGIC_U16) {
		width = 2;
		want = ZINF_SHARD_VERSION_U16;
	} else if (magic == ZINF_SHARD_MAGIC_U32) {
		width = 4;
		want = ZINF_SHARD_VERSION_U32;
	} else {
		return FAIL(-EINVAL,
		            "%s: bad magic %d in the header (expected %d for uint16 tokens or %d for "
		            "uint32 tokens); not an llm.c-layout token shard: make one with "
		            "`zinf data encode`",
		            name, magic, ZINF_SHARD_MAGIC_U16, ZINF_SHARD_MAGIC_U32);
	}
	if (version != want)
		return FAIL(-EINVAL,
		            "%s: header version %d does not go with magic %d (expected version %d); "
		            "the header is corrupt or from another writer",
		            name, version, magic, want);
	if (count < 0)
		return FAIL(-EINVAL, "%s: header token count %d is negative; the header is corrupt",
		            name, count);
	uint64_t expect = ZINF_SHARD_HEADER_BYTES + (uint64_t)count * (uint64_t)width;
	if (file_size != expect) {
		bool shrt = file_size < expect;
		return FAIL(-EINVAL,
		            "%s: header says %d tokens of %d bytes, so the file should be %llu bytes, "
		            "but it is %llu bytes (%s by %llu); the file was %s: re-encode it",
		            name, count, width, (ull)expect, (ull)file_size,
		            shrt ? "short" : "long",
		            (ull)(shrt ? expect - file_size : file_size - expect),
		            shrt ? "truncated" : "appended to or its count is wrong");
	}
	info->ntok = (uint64_t)count;
	info->width = width;
	return 0;
}

uint32_t
zinf_shard_token(const void *buf, const zinf_shard_info *info, uint64_t i)
{
	const uint8_t *p = (const uint8_t *)buf + ZINF_SHARD_HEADER_BYTES + i * (uint64_t)info->width;
	return rd_tok(p, info->width);
}

int
zinf_shard_width_for_vocab(uint64_t vocab_size)
{
	return vocab_size <= 65536 ? 2 : 4;
}

static int
fsync_parent(const char *path)
{
	char *dup = strdup(path);
	if (!dup)
		return -ENOMEM;
	char *slash = strrchr(dup, '/');
	const char *dir = ".";
	if (slash == dup)
		dir = "/";
	else if (slash) {
		*slash = 0;
		dir = dup;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;
	if (fd < 0)
		rc = -errno;
	else {
		if (fsync(fd) && errno != EINVAL) /* some file systems cannot sync a folder */
			rc = -errno;
		close(fd);
	}
	free(dup);
	return rc;
}

int
zinf_shard_write(const char *path, const uint32_t *tokens, uint64_t n, int width, char *err,
                 size_t errlen)
{
	if (width != 2 && width != 4)
		return FAIL(-EINVAL, "%s: token width %d; a shard holds 2-byte or 4-byte tokens",
		            path, width);
	if (n > ZINF_SHARD_MAX_TOKENS)
		return FAIL(-ERANGE,
		            "%s: %llu tokens, more than the %d a shard header can count; write "
		            "several shards",
		            path, (ull)n, ZINF_SHARD_MAX_TOKENS);
	if (width == 2)
		for (uint64_t i = 0; i < n; i++)
			if (tokens[i] > 0xffff)
				return FAIL(-ERANGE,
				            "%s: token %llu is %u, which does not fit a uint16 shard "
				            "(max 65535); write it with 4-byte tokens",
				            path, (ull)i, tokens[i]);

	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	if (!tmp)
		return FAIL(-ENOMEM, "%s: out of memory", path);
	snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		free(tmp);
		return FAIL(rc, "%s: cannot create a temporary file next to it: %s", path,
		            strerror(-rc));
	}
	int rc = fchmod(fd, 0644) ? -errno : 0;
	uint8_t hdr[ZINF_SHARD_HEADER_BYTES] = {0};
	wr32(hdr, width == 2 ? ZINF_SHARD_MAGIC_U16 : ZINF_SHARD_MAGIC_U32);
	wr32(hdr + 4, width == 2 ? ZINF_SHARD_VERSION_U16 : ZINF_SHARD_VERSION_U32);
	wr32(hdr + 8, (uint32_t)n);
	if (!rc)
		rc = write_all(fd, hdr, sizeof(hdr));
	enum { CHUNK = 1 << 16 };
	uint8_t *buf = rc ? NULL : malloc((size_t)CHUNK * 4);
	if (!rc && !buf)
		rc = -ENOMEM;
	for (uint64_t i = 0; !rc && i < n; i += CHUNK) {
		size_t m = n - i < CHUNK ? (size_t)(n - i) : CHUNK;
		for (size_t k = 0; k < m; k++) {
			uint32_t t = tokens[i + k];
			if (width == 2) {
				buf[2 * k] = (uint8_t)t;
				buf[2 * k + 1] = (uint8_t)(t >> 8);
			} else {
				wr32(buf + 4 * k, t);
			}
		}
		rc = write_all(fd, buf, m * (size_t)width);
	}
	free(buf);
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		free(tmp);
		return FAIL(rc, "%s: writing the shard failed: %s", path, strerror(-rc));
	}
	free(tmp);
	rc = fsync_parent(path);
	if (rc)
		return FAIL(rc, "%s: written, but syncing its folder failed: %s", path,
		            strerror(-rc));
	return 0;
}

/* Opens path and validates its header against its size. */
static int
shard_open(const char *path, int *fdp, uint64_t *size, zinf_shard_info *info, char *err,
           size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return FAIL(-errno, "%s: cannot open the shard: %s", path, strerror(errno));
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st)) {
		rc = -errno;
		rc = FAIL(rc, "%s: cannot stat the shard: %s", path, strerror(-rc));
	} else if (!S_ISREG(st.st_mode)) {
		rc = FAIL(-EINVAL, "%s: not a regular file; the data glob must match shard files",
		          path);
	} else {
		uint8_t hdr[ZINF_SHARD_HEADER_BYTES];
		size_t hl = (uint64_t)st.st_size < sizeof(hdr) ? (size_t)st.st_size : sizeof(hdr);
		rc = pread_all(fd, hdr, hl, 0);
		if (rc)
			rc = FAIL(rc, "%s: cannot read the header: %s", path, strerror(-rc));
		else
			rc = zinf_shard_parse_header(path, hdr, hl, (uint64_t)st.st_size, info, err,
			                             errlen);
	}
	if (rc) {
		close(fd);
		return rc;
	}
	*fdp = fd;
	*size = (uint64_t)st.st_size;
	return 0;
}

int
zinf_shard_read_all(const char *path, uint32_t **tokens, uint64_t *n, int *width, char *err,
                    size_t errlen)
{
	int fd;
	uint64_t size;
	zinf_shard_info info;
	int rc = shard_open(path, &fd, &size, &info, err, errlen);
	if (rc)
		return rc;
	uint64_t bytes = info.ntok * (uint64_t)info.width;
	uint8_t *raw = malloc(bytes ? (size_t)bytes : 1);
	uint32_t *out = malloc(info.ntok ? (size_t)info.ntok * 4 : 4);
	if (!raw || !out) {
		rc = FAIL(-ENOMEM, "%s: out of memory for %llu tokens", path, (ull)info.ntok);
	} else {
		rc = pread_all(fd, raw, (size_t)bytes, ZINF_SHARD_HEADER_BYTES);
		if (rc)
			rc = FAIL(rc, "%s: reading the tokens failed: %s", path, strerror(-rc));
	}
	close(fd);
	if (!rc)
		for (uint64_t i = 0; i < info.ntok; i++)
			out[i] = rd_tok(raw + i * (uint64_t)info.width, info.width);
	free(raw);
	if (rc) {
		free(out);
		return rc;
	}
	*tokens = out;
	*n = info.ntok;
	if (width)
		*width = info.width;
	return 0;
}

/* ---- Counter-based RNG and keyed permutations ---- */

static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

#define GOLDEN 0x9e3779b97f4a7c15ull

/* A pure function of its four inputs: the RNG has no state beyond its key. */
static uint64_t
crng(uint64_t seed, uint64_t epoch, uint64_t stream, uint64_t ctr)
{
	uint64_t x = mix64(seed + GOLDEN);
	x = mix64((x ^ epoch) + GOLDEN);
	x = mix64((x ^ stream) + GOLDEN);
	return mix64((x ^ ctr) + GOLDEN);
}

/* Fisher-Yates with draws from crng(.., i): a permutation of [0, n). */
static void
permute(uint32_t *a, uint64_t n, uint64_t seed, uint64_t epoch, uint64_t stream)
{
	for (uint64_t i = 0; i < n; i++)
		a[i] = (uint32_t)i;
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = (uint64_t)(((unsigned __int128)crng(seed, epoch, stream, i) * i) >> 64);
		uint32_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* A keyed bijection of [0, n) evaluated at one index: a 4-round Feistel network on the
 * smallest even number of bits that covers n, walked until the value lands below n (the
 * domain is < 4n, so a few steps on average). */
static uint64_t
permute_at(uint64_t idx, uint64_t n, uint64_t seed, uint64_t epoch, uint64_t stream)
{
	if (n <= 1)
		return idx;
	int bits = 64 - __builtin_clzll(n - 1);
	int half = (bits + 1) / 2;
	uint64_t mask = (1ull << half) - 1;
	uint64_t x = idx;
	do {
		uint64_t l = x >> half, r = x & mask;
		for (uint64_t round = 0; round < 4; round++) {
			uint64_t f = crng(seed, epoch, stream, round << 32 ^ r) & mask;
			uint64_t t = r;
			r = l ^ f;
			l = t;
		}
		x = l << half | r;
	} while (x >= n);
	return x;
}

/* ---- Loader ---- */

typedef struct shard_ent {
	char *path;
	uint64_t size; /* bytes when the loader opened */
	uint64_t ntok;
	int width;
	uint64_t nbatch;
} shard_ent;

struct zinf_loader {
	zinf_loader_opts o;
	char *glob;
	uint64_t bt; /* B*T */
	shard_ent *sh;
	size_t nsh;
	uint64_t total, steps, fingerprint;
	uint64_t seed, epoch, step; /* the state */
	uint32_t *order;            /* this epoch's shard order */
	uint64_t *first;            /* first[i]: epoch batch index where order[i] begins */
	size_t cur;                 /* shard being read, or SIZE_MAX */
	int fd;
	uint8_t *data; /* its tokens when read whole */
	uint8_t *rbuf; /* (B*T+1) tokens for pread */
};

void
zinf_loader_opts_init(zinf_loader_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->B = 1;
	o->T = 1;
	o->world_size = 1;
	o->vocab_size = 65536;
	o->seed = 1337;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
make_order(zinf_loader *l)
{
	if (l->o.shuffle)
		permute(l->order, l->nsh, l->seed, l->epoch, 0);
	else
		for (size_t i = 0; i < l->nsh; i++)
			l->order[i] = (uint32_t)i;
	l->first[0] = 0;
	for (size_t i = 0; i < l->nsh; i++)
		l->first[i + 1] = l->first[i] + l->sh[l->order[i]].nbatch;
}

/* The shard and in-shard batch of this rank's step in the current epoch. */
static void
locate(const zinf_loader *l, uint64_t step, uint64_t *shard, uint64_t *batch)
{
	uint64_t item = step * (uint64_t)l->o.world_size + (uint64_t)l->o.rank;
	size_t lo = 0, hi = l->nsh; /* largest pos with first[pos] <= item */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->first[mid] <= item)
			lo = mid;
		else
			hi = mid;
	}
	/* empty shards share their first[] with the next one: skip them */
	while (l->first[lo + 1] <= item)
		lo++;
	size_t s = l->order[lo];
	uint64_t idx = item - l->first[lo];
	*shard = s;
	*batch = l->o.shuffle ? permute_at(idx, l->sh[s].nbatch, l->seed, l->epoch, 1 + s) : idx;
}

static uint64_t
make_fingerprint(const zinf_loader *l)
{
	uint64_t h = mix64(0x7a696e66ull ^ (uint64_t)l->o.B << 32 ^ (uint64_t)l->o.T);
	h = mix64(h ^ (uint64_t)l->o.rank << 32 ^ (uint64_t)l->o.world_size);
	h = mix64(h ^ (uint64_t)l->o.shuffle ^ (uint64_t)l->nsh << 8);
	for (size_t i = 0; i < l->nsh; i++)
		h = mix64(h ^ l->sh[i].ntok ^ (uint64_t)l->sh[i].width << 40);
	return h;
}

static void
leave_shard(zinf_loader *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	free(l->data);
	l->data = NULL;
	l->cur = SIZE_MAX;
}

void
zinf_loader_close(zinf_loader *l)
{
	if (!l)
		return;
	leave_shard(l);
	for (size_t i = 0; i < l->nsh; i++)
		free(l->sh[i].path);
	free(l->sh);
	free(l->order);
	free(l->first);
	free(l->rbuf);
	free(l->glob);
	free(l);
}

static int
check_opts(const zinf_loader_opts *o, char *err, size_t errlen)
{
	const char *g = o->glob ? o->glob : "(no data glob)";
	if (!o->glob || !o->glob[0])
		return FAIL(-EINVAL, "data loader: no shard glob given; pass --data GLOB");
	if (o->B < 1 || o->T < 1 || (uint64_t)o->B * (uint64_t)o->T >= (1u << 30))
		return FAIL(-EINVAL,
		            "%s: micro-batch B=%d x T=%d; both must be >= 1 and B*T below 2^30", g,
		            o->B, o->T);
	if (o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
		return FAIL(-EINVAL, "%s: rank %d of world size %d; need 0 <= rank < world size", g,
		            o->rank, o->world_size);
	if (o->vocab_size < 1 || o->vocab_size > (1ull << 31))
		return FAIL(-EINVAL, "%s: vocab size %llu; must be in [1, 2^31]", g,
		            (ull)o->vocab_size);
	return 0;
}

/* The first folder glob could not read (glob's error callback has no user pointer). */
static _Thread_local int glob_errno;
static _Thread_local char glob_errpath[256];

static int
glob_error(const char *path, int e)
{
	if (!glob_errno && e != ENOENT && e != ENOTDIR) {
		glob_errno = e;
		snprintf(glob_errpath, sizeof(glob_errpath), "%s", path);
	}
	return 0; /* keep matching: the other folders may hold the shards */
}

int
zinf_loader_open(zinf_loader **out, const zinf_loader_opts *opts, char *err, size_t errlen)
{
	*out = NULL;
	int rc = check_opts(opts, err, errlen);
	if (rc)
		return rc;
	glob_t g;
	glob_errno = 0;
	int gr = glob(opts->glob, GLOB_NOSORT, glob_error, &g);
	if (gr == GLOB_NOMATCH && glob_errno)
		return FAIL(-glob_errno, "%s: no file matches this data glob; %s: %s", opts->glob,
		            glob_errpath, strerror(glob_errno));
	if (gr == GLOB_NOMATCH)
		return FAIL(-ENOENT,
		            "%s: no file matches this data glob; check the path, or make shards "
		            "with `zinf data encode`",
		            opts->glob);
	if (gr)
		return FAIL(-ENOMEM, "%s: out of memory while matching the data glob", opts->glob);

	zinf_loader *l = calloc(1, sizeof(*l));
	if (!l) {
		globfree(&g);
		return FAIL(-ENOMEM, "%s: out of memory", opts->glob);
	}
	l->o = *opts;
	l->fd = -1;
	l->cur = SIZE_MAX;
	l->bt = (uint64_t)opts->B * (uint64_t)opts->T;
	l->seed = opts->seed;
	l->glob = strdup(opts->glob);
	l->sh = calloc(g.gl_pathc, sizeof(*l->sh));
	l->order = calloc(g.gl_pathc, sizeof(*l->order));
	l->first = calloc(g.gl_pathc + 1, sizeof(*l->first));
	l->rbuf = malloc((size_t)(l->bt + 1) * 4);
	if (!l->glob || !l->sh || !l->order || !l->first || !l->rbuf) {
		globfree(&g);
		zinf_loader_close(l);
		return FAIL(-ENOMEM, "%s: out of memory for %zu shards", opts->glob, g.gl_pathc);
	}
	qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), cmp_str);
	l->o.glob = l->glob;
	for (size_t i = 0; i < g.gl_pathc && !rc; i++) {
		shard_ent *e = &l->sh[i];
		zinf_shard_info info;
		int fd;
		e->path = strdup(g.gl_pathv[i]);
		if (!e->path) {
			rc = FAIL(-ENOMEM, "%s: out of memory", opts->glob);
			break;
		}
		l->nsh = i + 1;
		rc = shard_open(e->path, &fd, &e->size, &info, err, errlen);
		if (rc)
			break;
		close(fd);
		e->ntok = info.ntok;
		e->width = info.width;
		e->nbatch = e->ntok > l->bt ? (e->ntok - 1) / l->bt : 0;
		l->total += e->nbatch;
	}
	globfree(&g);
	if (!rc && l->total < (uint64_t)opts->world_size)
		rc = FAIL(-EINVAL,
		          "%s: the %zu shard(s) hold %llu batch(es) of B*T+1 = %llu tokens, fewer "
		          "than world size %d (each rank needs a batch per epoch); use a smaller "
		          "B or T, or more data",
		          opts->glob, l->nsh, (ull)l->total, (ull)(l->bt + 1), opts->world_size);
	if (rc) {
		zinf_loader_close(l);
		return rc;
	}
	l->steps = l->total / (uint64_t)opts->world_size;
	l->fingerprint = make_fingerprint(l);
	make_order(l);
	*out = l;
	return 0;
}

/* Makes shard s the current one: reopens it, checks it is unchanged, reads it whole when
 * small. */
static int
enter_shard(zinf_loader *l, size_t s, char *err, size_t errlen)
{
	if (l->cur == s)
		return 0;
	leave_shard(l);
	shard_ent *e = &l->sh[s];
	zinf_shard_info info;
	uint64_t size;
	int fd;
	int rc = shard_open(e->path, &fd, &size, &info, err, errlen);
	if (rc)
		return rc;
	if (size != e->size || info.ntok != e->ntok || info.width != e->width) {
		close(fd);
		return FAIL(-EINVAL,
		            "%s: the shard changed while in use (%llu bytes, %llu tokens when the "
		            "loader opened; %llu bytes, %llu tokens now); restart the run",
		            e->path, (ull)e->size, (ull)e->ntok, (ull)size, (ull)info.ntok);
	}
	uint64_t bytes = e->ntok * (uint64_t)e->width;
	if (bytes <= (l->o.slurp_max ? l->o.slurp_max : ZINF_LOADER_SLURP_BYTES)) {
		l->data = malloc((size_t)bytes);
		if (!l->data)
			rc = FAIL(-ENOMEM, "%s: out of memory for %llu bytes", e->path, (ull)bytes);
		else if ((rc = pread_all(fd, l->data, (size_t)bytes, ZINF_SHARD_HEADER_BYTES)))
			rc = FAIL(rc, "%s: reading the tokens failed: %s", e->path, strerror(-rc));
		close(fd);
		if (rc) {
			free(l->data);
			l->data = NULL;
			return rc;
		}
	} else {
		l->fd = fd;
	}
	l->cur = s;
	return 0;
}

int
zinf_loader_next(zinf_loader *l, int32_t *inputs, int32_t *targets, char *err, size_t errlen)
{
	uint64_t s, b;
	locate(l, l->step, &s, &b);
	int rc = enter_shard(l, (size_t)s, err, errlen);
	if (rc)
		return rc;
	const shard_ent *e = &l->sh[s];
	uint64_t start = b * l->bt, n = l->bt + 1;
	const uint8_t *src;
	if (l->data) {
		src = l->data + start * (uint64_t)e->width;
	} else {
		rc = pread_all(l->fd, l->rbuf, (size_t)(n * (uint64_t)e->width),
		               ZINF_SHARD_HEADER_BYTES + start * (uint64_t)e->width);
		if (rc) {
			leave_shard(l);
			return FAIL(rc, "%s: reading tokens %llu..%llu failed: %s", e->path,
			            (ull)start, (ull)(start + n), strerror(-rc));
		}
		src = l->rbuf;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint32_t t = rd_tok(src + i * (uint64_t)e->width, e->width);
		if (t >= l->o.vocab_size)
			return FAIL(-EINVAL,
			            "%s: token at position %llu is %u, not below the model's vocab "
			            "size %llu; the shard was made with another tokenizer, or the "
			            "model's vocab is too small",
			            e->path, (ull)(start + i), t, (ull)l->o.vocab_size);
		if (i < l->bt)
			inputs[i] = (int32_t)t;
		if (i > 0)
			targets[i - 1] = (int32_t)t;
	}
	if (++l->step == l->steps) {
		l->step = 0;
		l->epoch++;
		make_order(l);
	}
	return 0;
}

void
zinf_loader_reset(zinf_loader *l)
{
	l->seed = l->o.seed;
	l->epoch = 0;
	l->step = 0;
	make_order(l);
}

uint64_t
zinf_loader_steps_per_epoch(const zinf_loader *l)
{
	return l->steps;
}

uint64_t
zinf_loader_total_batches(const zinf_loader *l)
{
	return l->total;
}

size_t
zinf_loader_shard_count(const zinf_loader *l)
{
	return l->nsh;
}

const char *
zinf_loader_shard_path(const zinf_loader *l, size_t i)
{
	return i < l->nsh ? l->sh[i].path : NULL;
}

void
zinf_loader_get_state(const zinf_loader *l, zinf_loader_state *st)
{
	memset(st, 0, sizeof(*st));
	st->seed = l->seed;
	st->epoch = l->epoch;
	st->step = l->step;
	locate(l, l->step, &st->shard, &st->batch);
	st->fingerprint = l->fingerprint;
	st->rank = (uint32_t)l->o.rank;
	st->world_size = (uint32_t)l->o.world_size;
	st->shuffle = l->o.shuffle;
}

int
zinf_loader_set_state(zinf_loader *l, const zinf_loader_state *st, char *err, size_t errlen)
{
	const char *g = l->glob;
	if (st->world_size != (uint32_t)l->o.world_size || st->rank != (uint32_t)l->o.rank)
		return FAIL(-EINVAL,
		            "%s: the loader state is for rank %u of %u, this loader is rank %d of "
		            "%d; resume with the same world size",
		            g, st->rank, st->world_size, l->o.rank, l->o.world_size);
	if (st->shuffle != (uint32_t)l->o.shuffle)
		return FAIL(-EINVAL, "%s: the loader state has shuffle %s, this loader %s", g,
		            st->shuffle ? "on" : "off", l->o.shuffle ? "on" : "off");
	if (st->fingerprint != l->fingerprint)
		return FAIL(-EINVAL,
		            "%s: the loader state was saved with other data or another micro-batch "
		            "(fingerprint %016llx, this loader %016llx: B=%d T=%d, %zu shards); "
		            "resume with the same --data and batch size",
		            g, (ull)st->fingerprint, (ull)l->fingerprint, l->o.B, l->o.T, l->nsh);
	if (st->step >= l->steps)
		return FAIL(-EINVAL,
		            "%s: the loader state's step %llu is past the %llu steps of an epoch; "
		            "the state is corrupt",
		            g, (ull)st->step, (ull)l->steps);
	uint64_t old_seed = l->seed, old_epoch = l->epoch;
	l->seed = st->seed;
	l->epoch = st->epoch;
	make_order(l);
	uint64_t s, b;
	locate(l, st->step, &s, &b);
	if (s != st->shard || b != st->batch) {
		l->seed = old_seed;
		l->epoch = old_epoch;
		make_order(l);
		return FAIL(-EINVAL,
		            "%s: the loader state says shard %llu batch %llu, but step %llu of "
		            "epoch %llu is shard %llu batch %llu; the state is corrupt",
		            g, (ull)st->shard, (ull)st->batch, (ull)st->step, (ull)st->epoch,
		            (ull)s, (ull)b);
	}
	l->step = st->step;
	return 0;
}

#define STATE_MAGIC 0x534c445au /* "ZDLS" */
#define STATE_VERSION 1u

static uint64_t
state_sum(const uint8_t *p, size_t n)
{
	uint64_t h = GOLDEN;
	for (size_t i = 0; i < n; i += 8)
		h = mix64(h ^ rd64(p + i));
	return h;
}

void
zinf_loader_state_encode(const zinf_loader_state *st, uint8_t out[ZINF_LOADER_STATE_BYTES])
{
	memset(out, 0, ZINF_LOADER_STATE_BYTES);
	wr32(out, STATE_MAGIC);
	wr32(out + 4, STATE_VERSION);
	wr32(out + 8, st->rank);
	wr32(out + 12, st->world_size);
	wr32(out + 16, st->shuffle);
	wr64(out + 24, st->seed);
	wr64(out + 32, st->epoch);
	wr64(out + 40, st->step);
	wr64(out + 48, st->shard);
	wr64(out + 56, st->batch);
	wr64(out + 64, st->fingerprint);
	wr64(out + 72, state_sum(out, 72));
}

int
zinf_loader_state_decode(const uint8_t *buf, size_t len, zinf_loader_state *st, char *err,
                         size_t errlen)
{
	if (len != ZINF_LOADER_STATE_BYTES)
		return FAIL(-EINVAL, "loader state: %zu bytes, expected %d", len,
		            ZINF_LOADER_STATE_BYTES);
	if (rd32(buf) != STATE_MAGIC)
		return FAIL(-EINVAL, "loader state: bad magic %08x (expected %08x)", rd32(buf),
		            STATE_MAGIC);
	if (rd32(buf + 4) != STATE_VERSION)
		return FAIL(-EINVAL, "loader state: version %u, this build reads version %u",
		            rd32(buf + 4), STATE_VERSION);
	if (rd64(buf + 72) != state_sum(buf, 72))
		return FAIL(-EINVAL, "loader state: checksum mismatch; the state is corrupt");
	if (rd32(buf + 16) > 1 || rd32(buf + 20))
		return FAIL(-EINVAL, "loader state: bad flags; the state is corrupt");
	st->rank = rd32(buf + 8);
	st->world_size = rd32(buf + 12);
	st->shuffle = rd32(buf + 16);
	st->seed = rd64(buf + 24);
	st->epoch = rd64(buf + 32);
	st->step = rd64(buf + 40);
	st->shard = rd64(buf + 48);
	st->batch = rd64(buf + 56);
	st->fingerprint = rd64(buf + 64);
	return 0;
}

/* ---- Default corpus ----
 *
 * Sentences from a small grammar over fixed word lists, picked by a seeded generator with a
 * skew towards the start of each list (as word frequencies are skewed), in paragraphs under
 * numbered chapters. A tiny byte-level model learns the spelling, the templates and the
 * punctuation quickly, so its loss falls visibly within a few hundred steps. */

typedef struct corpus_gen {
	uint64_t s;
	char *buf;
	size_t len, cap;
	int err;
} corpus_gen;

typedef struct noun {
	const char *one, *many;
} noun;

typedef struct verb {
	const char *base, *past, *third;
} verb;

static const char *const c_names[] = {
	"Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
	"Kara", "Leo", "Maya", "Nils", "Olga", "Paul", "Rosa", "Sam", "Tara", "Victor",
};
static const char *const c_places[] = {
	"the village", "the market", "the old mill", "the river", "the harbour", "the forest",
	"the library", "the station", "the garden", "the hill", "the school", "the bakery",
	"the bridge", "the farm", "the castle", "the beach", "the kitchen", "the square",
};
static const noun c_nouns[] = {
	{"dog", "dogs"},       {"cat", "cats"},         {"child", "children"}, {"teacher", "teachers"},
	{"farmer", "farmers"}, {"bird", "birds"},       {"horse", "horses"},   {"boat", "boats"},
	{"letter", "letters"}, {"book", "books"},       {"apple", "apples"},   {"window", "windows"},
	{"door", "doors"},     {"lamp", "lamps"},       {"song", "songs"},     {"story", "stories"},
	{"key", "keys"},       {"box", "boxes"},        {"road", "roads"},     {"tree", "trees"},
	{"cloud", "clouds"},   {"stone", "stones"},     {"friend", "friends"}, {"king", "kings"},
	{"baker", "bakers"},   {"map", "maps"},         {"coat", "coats"},     {"cup", "cups"},
	{"wolf", "wolves"},    {"fox", "foxes"},        {"owl", "owls"},       {"island", "islands"},
};
static const char *const c_adjs[] = {
	"old", "young", "small", "large", "quiet", "bright", "dark", "warm", "cold", "happy",
	"tired", "clever", "brave", "gentle", "strange", "heavy", "green", "red", "blue", "golden",
	"wooden", "empty", "ancient", "honest",
};
static const verb c_tverbs[] = {
	{"see", "saw", "sees"},          {"find", "found", "finds"},     {"carry", "carried", "carries"},
	{"open", "opened", "opens"},     {"watch", "watched", "watches"}, {"follow", "followed", "follows"},
	{"paint", "painted", "paints"},  {"build", "built", "builds"},    {"read", "read", "reads"},
	{"bring", "brought", "brings"},  {"hold", "held", "holds"},      {"clean", "cleaned", "cleans"},
	{"lose", "lost", "loses"},       {"sell", "sold", "sells"},      {"draw", "drew", "draws"},
	{"wash", "washed", "washes"},    {"help", "helped", "helps"},    {"call", "called", "calls"},
};
static const verb c_iverbs[] = {
	{"sleep", "slept", "sleeps"}, {"run", "ran", "runs"},          {"sing", "sang", "sings"},
	{"wait", "waited", "waits"},  {"laugh", "laughed", "laughs"}, {"walk", "walked", "walks"},
	{"smile", "smiled", "smiles"}, {"rest", "rested", "rests"},   {"dance", "danced", "dances"},
	{"work", "worked", "works"},
};
static const char *const c_advs[] = {
	"slowly", "quickly", "quietly", "carefully", "happily", "again", "early", "late",
	"together", "alone",
};
static const char *const c_times[] = {
	"In the morning", "At noon", "In the evening", "At night", "On Sunday", "Every day",
	"Later", "Long ago", "After the rain", "Before dinner",
};
static const char *const c_conjs[] = {"because", "while", "until", "after", "before", "when"};
static const char *const c_numbers[] = {"two", "three", "four", "five", "six", "seven",
                                        "eight", "nine", "ten", "twelve"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t
gen_next(corpus_gen *g)
{
	g->s += GOLDEN;
	return mix64(g->s);
}

/* Index in [0, n), skewed towards 0: n * u^2 for uniform u. */
static size_t
gen_pick(corpus_gen *g, size_t n)
{
	double u = (double)(gen_next(g) >> 11) * (1.0 / 9007199254740992.0);
	size_t i = (size_t)(u * u * (double)n);
	return i < n ? i : n - 1;
}

static unsigned
gen_below(corpus_gen *g, unsigned n)
{
	return (unsigned)(gen_next(g) % n);
}

static void
gen_put(corpus_gen *g, const char *s)
{
	size_t n = strlen(s);
	if (g->err)
		return;
	if (g->len + n + 1 > g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 4096;
		while (cap < g->len + n + 1)
			cap *= 2;
		char *b = realloc(g->buf, cap);
		if (!b) {
			g->err = -ENOMEM;
			return;
		}
		g->buf = b;
		g->cap = cap;
	}
	memcpy(g->buf + g->len, s, n + 1);
	g->len += n;
}

/* Capitalises the first letter of what comes next (called before a sentence). */
static void
gen_cap_from(corpus_gen *g, size_t at)
{
	if (!g->err && at < g->len && g->buf[at] >= 'a' && g->buf[at] <= 'z')
		g->buf[at] = (char)(g->buf[at] - 'a' + 'A');
}

static bool
starts_vowel(const char *w)
{
	return strchr("aeiou", w[0]) != NULL;
}

/* "the red fox", "a dog", "Anna", "the wolves"; *plural says which verb form fits. */
static void
gen_np(corpus_gen *g, bool allow_name, bool *plural)
{
	bool pl = false;
	unsigned kind = gen_below(g, allow_name ? 5 : 4);
	if (kind == 4) {
		gen_put(g, c_names[gen_pick(g, NELEM(c_names))]);
	} else {
		const noun *n = &c_nouns[gen_pick(g, NELEM(c_nouns))];
		const char *adj = gen_below(g, 2) ? c_adjs[gen_pick(g, NELEM(c_adjs))] : NULL;
		pl = kind == 3;
		const char *word = pl ? n->many : n->one;
		if (kind == 0)
			gen_put(g, starts_vowel(adj ? adj : word) ? "an " : "a ");
		else
			gen_put(g, "the ");
		if (adj) {
			gen_put(g, adj);
			gen_put(g, " ");
		}
		gen_put(g, word);
	}
	if (plural)
		*plural = pl;
}

static void
gen_sentence(corpus_gen *g)
{
	size_t at = g->len;
	bool pl;
	const verb *tv = &c_tverbs[gen_pick(g, NELEM(c_tverbs))];
	const verb *iv = &c_iverbs[gen_pick(g, NELEM(c_iverbs))];
	const char *name = c_names[gen_pick(g, NELEM(c_names))];
	switch (gen_below(g, 9)) {
	case 0:
		gen_put(g, c_times[gen_pick(g, NELEM(c_times))]);
		gen_put(g, ", ");
		gen_np(g, true, NULL);
		gen_put(g, " ");
		gen_put(g, tv->past);
		gen_put(g, " ");
		gen_np(g, true, NULL);
		gen_put(g, ".");
		break;
	case 1:
		gen_np(g, true, NULL);
		gen_put(g, " ");
		gen_put(g, tv->past);
		gen_put(g, " ");
		gen_np(g, true, NULL);
		gen_put(g, " ");
		gen_put(g, c_advs[gen_pick(g, NELEM(c_advs))]);
		gen_put(g, ".");
		break;
	case 2:
		gen_np(g, true, NULL);
		gen_put(g, " ");
		gen_put(g, iv->past);
		gen_put(g, gen_below(g, 2) ? " near " : " in ");
		gen_put(g, c_places[gen_pick(g, NELEM(c_places))]);
		gen_put(g, " ");
		gen_put(g, c_conjs[gen_pick(g, NELEM(c_conjs))]);
		gen_put(g, " ");
		gen_np(g, true, NULL);
		gen_put(g, " ");
		gen_put(g, c_iverbs[gen_pick(g, NELEM(c_iverbs))].past);
		gen_put(g, ".");
		break;
	case 3:
		gen_put(g, "\"Where is the ");
		gen_put(g, c_nouns[gen_pick(g, NELEM(c_nouns))].one);
		gen_put(g, "?\" asked ");
		gen_put(g, name);
		gen_put(g, ".");
		break;
	case 4:
		gen_put(g, "\"I ");
		gen_put(g, tv->base);
		gen_put(g, " the ");
		gen_put(g, c_nouns[gen_pick(g, NELEM(c_nouns))].many);
		gen_put(g, " every day,\" said ");
		gen_put(g, name);
		gen_put(g, ".");
		break;
	case 5:
		gen_np(g, false, &pl);
		gen_put(g, pl ? " were " : " was ");
		gen_put(g, c_adjs[gen_pick(g, NELEM(c_adjs))]);
		gen_put(g, ", and ");
		gen_np(g, false, &pl);
		gen_put(g, pl ? " were " : " was ");
		gen_put(g, c_adjs[gen_pick(g, NELEM(c_adjs))]);
		gen_put(g, " too.");
		break;
	case 6:
		gen_put(g, "There were ");
		gen_put(g, c_numbers[gen_pick(g, NELEM(c_numbers))]);
		gen_put(g, " ");
		gen_put(g, c_adjs[gen_pick(g, NELEM(c_adjs))]);
		gen_put(g, " ");
		gen_put(g, c_nouns[gen_pick(g, NELEM(c_nouns))].many);
		gen_put(g, " in ");
		gen_put(g, c_places[gen_pick(g, NELEM(c_places))]);
		gen_put(g, ".");
		break;
	case 7:
		gen_put(g, name);
		gen_put(g, " gave ");
		gen_np(g, false, NULL);
		gen_put(g, " to ");
		gen_put(g, c_names[gen_pick(g, NELEM(c_names))]);
		gen_put(g, ", who ");
		gen_put(g, iv->past);
		gen_put(g, " ");
		gen_put(g, c_advs[gen_pick(g, NELEM(c_advs))]);
		gen_put(g, ".");
		break;
	default:
		gen_np(g, false, &pl);
		gen_put(g, " ");
		gen_put(g, pl ? iv->base : iv->third);
		gen_put(g, " ");
		gen_put(g, c_advs[gen_pick(g, NELEM(c_advs))]);
		gen_put(g, " ");
		gen_put(g, c_conjs[gen_pick(g, NELEM(c_conjs))]);
		gen_put(g, " ");
		gen_put(g, name);
		gen_put(g, " ");
		gen_put(g, tv->third);
		gen_put(g, " ");
		gen_np(g, true, NULL);
		gen_put(g, ".");
		break;
	}
	gen_cap_from(g, at);
}

int
zinf_data_default_corpus(uint64_t seed, size_t bytes, char **text, size_t *len)
{
	corpus_gen g = {.s = mix64(seed ^ 0x636f72707573ull)};
	if (!bytes)
		bytes = ZINF_DEFAULT_CORPUS_BYTES;
	unsigned chapter = 0, para = 0;
	while (g.len < bytes && !g.err) {
		if (para % 24 == 0) {
			char head[48];
			chapter++;
			snprintf(head, sizeof(head), "%sChapter %u\n\n", chapter > 1 ? "\n" : "",
			         chapter);
			gen_put(&g, head);
		}
		unsigned n = 3 + gen_below(&g, 5);
		for (unsigned i = 0; i < n && g.len < bytes; i++) {
			if (i)
				gen_put(&g, " ");
			gen_sentence(&g);
		}
		gen_put(&g, "\n\n");
		para++;
	}
	if (g.err) {
		free(g.buf);
		return g.err;
	}
	*text = g.buf;
	*len = g.len;
	return 0;
}

int
zinf_data_write_default_shards(const char *train_path, const char *val_path,
                               double val_fraction, char *err, size_t errlen)
{
	if (!(val_fraction >= 0 && val_fraction < 1))
		return FAIL(-EINVAL, "%s: validation fraction %g; must be in [0, 1)", train_path,
		            val_fraction);
	char *text;
	size_t len;
	int rc = zinf_data_default_corpus(ZINF_DEFAULT_CORPUS_SEED, 0, &text, &len);
	if (rc)
		return FAIL(rc, "%s: out of memory for the default corpus", train_path);
	zinf_tokens tok = {0};
	rc = zinf_tokenize_bytes(text, len, &tok);
	free(text);
	if (rc) {
		zinf_tokens_free(&tok);
		return FAIL(rc, "%s: out of memory for the default corpus's tokens", train_path);
	}
	uint64_t nval = val_path ? (uint64_t)((double)tok.n * val_fraction) : 0;
	uint64_t ntrain = tok.n - nval;
	rc = zinf_shard_write(train_path, tok.ids, ntrain, 2, err, errlen);
	if (!rc && val_path)
		rc = zinf_shard_write(val_path, tok.ids + ntrain, nval, 2, err, errlen);
	zinf_tokens_free(&tok);
	return rc;
}
