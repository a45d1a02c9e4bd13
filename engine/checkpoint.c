/* Checkpoint folders: staging folder, fsync'ed files, per-rank shards with checksummed
 * sections, atomic rename and the `latest` pointer (layout in engine.h).
 *
 * Shard file rank<R>.bin, little-endian:
 *   header  "ZINFCKPT" (8 B), u32 version (1), u32 rank, u32 nsections, u32 0
 *   table   nsections x { char name[32]; u64 offset; u64 len; u64 fnv1a64 }
 *   data    each section's bytes at its offset (64-byte aligned)
 * Sections are streamed in pieces so a multi-GB master does not need a second copy. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/ckpt.h"
#include "engine/engine.h"

#define CKPT_MAGIC "ZINFCKPT"
#define CKPT_VERSION 1u
#define CKPT_ALIGN 64u

typedef struct shard_header {
	char magic[8];
	uint32_t version, rank, nsec, reserved;
} shard_header;

typedef struct shard_entry {
	char name[32];
	uint64_t offset, len, sum;
} shard_entry;

static uint64_t
fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static int
write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
read_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
fsync_path(const char *path, bool dir, char *err, size_t errlen)
{
	int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		int e = errno;
		snprintf(err, errlen, "%s: fsync: %s", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	close(fd);
	return 0;
}

/* mkdir -p */
static int
make_dirs(const char *dir, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) {
		snprintf(err, errlen, "%s: path longer than %d bytes", dir, PATH_MAX);
		return -ENAMETOOLONG;
	}
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
				int e = errno;
				snprintf(err, errlen, "%s: cannot create the checkpoint folder: %s "
				         "(check --out and its permissions)", buf, strerror(e));
				return -e;
			}
			*p = c;
			if (!c)
				break;
		}
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: exists and is not a folder; choose another --out", dir);
		return -ENOTDIR;
	}
	return 0;
}

static int
check_tag(const char *tag, char *err, size_t errlen)
{
	if (!tag[0] || strchr(tag, '/') || tag[0] == '.') {
		snprintf(err, errlen, "checkpoint tag '%s': must be a plain folder name "
		         "(no '/', not starting with '.')", tag);
		return -EINVAL;
	}
	return 0;
}

int
zinf_ckpt_begin(const char *dir, const char *tag, char *tmp, size_t tmplen, char *err,
                size_t errlen)
{
	int rc = check_tag(tag, err, errlen);
	if (!rc)
		rc = make_dirs(dir, err, errlen);
	if (rc)
		return rc;
	if (snprintf(tmp, tmplen, "%s/.%s.tmp-XXXXXX", dir, tag) >= (int)tmplen) {
		snprintf(err, errlen, "%s/%s: path too long", dir, tag);
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(tmp)) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create a staging folder: %s", tmp, strerror(e));
		return -e;
	}
	return 0;
}

int
zinf_ckpt_write_file(const char *folder, const char *name, const void *data, size_t len,
                     char *err, size_t errlen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", folder, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(e));
		return -e;
	}
	int rc = write_all(fd, data, len, 0);
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && !rc)
		rc = -errno;
	if (rc)
		snprintf(err, errlen, "%s: write of %zu bytes failed: %s (disk full?)", path, len,
		         strerror(-rc));
	return rc;
}

int
zinf_ckpt_shard_write(const char *folder, int rank, const zinf_ckpt_section *sec, int nsec,
                      char *err, size_t errlen)
{
	if (nsec < 0 || nsec > ZINF_CKPT_MAX_SECTIONS) {
		snprintf(err, errlen, "checkpoint shard: %d sections, at most %d", nsec,
		         ZINF_CKPT_MAX_SECTIONS);
		return -EINVAL;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/rank%d.bin", folder, rank);
	shard_header h = {.version = CKPT_VERSION, .rank = (uint32_t)rank, .nsec = (uint32_t)nsec};
	memcpy(h.magic, CKPT_MAGIC, 8);
	shard_entry ent[ZINF_CKPT_MAX_SECTIONS];
	memset(ent, 0, sizeof(ent));
	uint64_t off = sizeof(h) + (uint64_t)nsec * sizeof(shard_entry);
	for (int i = 0; i < nsec; i++) {
		off = (off + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;
		snprintf(ent[i].name, sizeof(ent[i].name), "%s", sec[i].name);
		ent[i].offset = off;
		ent[i].len = sec[i].len;
		ent[i].sum = fnv1a(FNV_INIT, sec[i].data, sec[i].len);
		off += sec[i].len;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create: %s", path, strerror(e));
		return -e;
	}
	int rc = write_all(fd, &h, sizeof(h), 0);
	if (!rc)
		rc = write_all(fd, ent, (size_t)nsec * sizeof(shard_entry), sizeof(h));
	for (int i = 0; i < nsec && !rc; i++)
		rc = write_all(fd, sec[i].data, sec[i].len, ent[i].offset);
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && !rc)
		rc = -errno;
	if (rc)
		snprintf(err, errlen, "%s: write of %llu bytes failed: %s (disk full?)", path,
		         (unsigned long long)off, strerror(-rc));
	return rc;
}

static int
write_latest(const char *dir, const char *tag, char *err, size_t errlen)
{
	char tmp[PATH_MAX], path[PATH_MAX], line[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s/.latest.tmp", dir);
	snprintf(path, sizeof(path), "%s/latest", dir);
	int n = snprintf(line, sizeof(line), "%s\n", tag);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc = fd < 0 ? -errno : write_all(fd, line, (size_t)n, 0);
	if (fd >= 0) {
		if (!rc && fsync(fd) != 0)
			rc = -errno;
		close(fd);
	}
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (rc) {
		snprintf(err, errlen, "%s: cannot update: %s", path, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	return fsync_path(dir, true, err, errlen);
}

/* rm -r of a folder holding only files (our checkpoint folders) */
static void
remove_folder(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		char path[PATH_MAX];
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

void
zinf_ckpt_abort(const char *tmp)
{
	if (tmp && tmp[0])
		remove_folder(tmp);
}

int
zinf_ckpt_commit(const char *dir, const char *tag, const char *tmp, char *err, size_t errlen)
{
	int rc = fsync_path(tmp, true, err, errlen);
	if (rc)
		return rc;
	char final[PATH_MAX], old[PATH_MAX];
	snprintf(final, sizeof(final), "%s/%s", dir, tag);
	old[0] = '\0';
	struct stat st;
	if (stat(final, &st) == 0) {
		/* an older checkpoint under this tag: move it aside, then drop it once the new
		 * one is in place */
		snprintf(old, sizeof(old), "%s/.%s.old-XXXXXX", dir, tag);
		if (!mkdtemp(old) || rename(final, old) != 0) {
			int e = errno;
			snprintf(err, errlen, "%s: cannot replace the existing checkpoint: %s", final,
			         strerror(e));
			return -e;
		}
	}
	if (rename(tmp, final) != 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot rename the staging folder %s to it: %s", final, tmp,
		         strerror(e));
		if (old[0])
			rename(old, final);
		return -e;
	}
	rc = fsync_path(dir, true, err, errlen);
	if (rc)
		return rc;
	if (old[0])
		remove_folder(old);
	return write_latest(dir, tag, err, errlen);
}

int
zinf_ckpt_read_text(const char *path, char **out, char *err, size_t errlen)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size > (64 << 20)) {
		snprintf(err, errlen, "%s: not a checkpoint text file (over 64 MiB or unreadable)",
		         path);
		close(fd);
		return -EFBIG;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	int rc = read_all(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (rc) {
		free(buf);
		snprintf(err, errlen, "%s: read failed: %s", path, strerror(-rc));
		return rc;
	}
	buf[st.st_size] = '\0';
	*out = buf;
	return 0;
}

int
zinf_ckpt_find(const char *dir, char *folder, size_t folderlen, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	if (stat(path, &st) == 0) {
		snprintf(folder, folderlen, "%s", dir);
		return 0;
	}
	snprintf(path, sizeof(path), "%s/latest", dir);
	char *tag = NULL;
	char e2[256];
	if (zinf_ckpt_read_text(path, &tag, e2, sizeof(e2)) != 0) {
		snprintf(err, errlen, "%s: no checkpoint: neither %s/latest nor %s/manifest.json "
		         "exists; pass the --out folder of a run that saved (--save_steps) or one "
		         "of its global_step* folders", dir, dir, dir);
		return -ENOENT;
	}
	tag[strcspn(tag, "\r\n")] = '\0';
	snprintf(folder, folderlen, "%s/%s", dir, tag);
	snprintf(path, sizeof(path), "%s/manifest.json", folder);
	int rc = 0;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s/latest names '%s' but %s is missing", dir, tag, path);
		rc = -ENOENT;
	}
	free(tag);
	return rc;
}

int
zinf_ckpt_shard_open(const char *folder, int rank, zinf_ckpt_shard *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->rank = rank;
	snprintf(s->path, sizeof(s->path), "%s/rank%d.bin", folder, rank);
	int fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot open: %s (the checkpoint is missing rank %d's "
		         "shard: it was saved by fewer ranks, or the file was removed)", s->path,
		         strerror(e), rank);
		return -e;
	}
	struct stat st;
	shard_header h;
	shard_entry ent[ZINF_CKPT_MAX_SECTIONS];
	int rc = fstat(fd, &st) != 0 ? -errno : read_all(fd, &h, sizeof(h), 0);
	if (!rc && (memcmp(h.magic, CKPT_MAGIC, 8) || h.version != CKPT_VERSION ||
	            h.rank != (uint32_t)rank || h.nsec > ZINF_CKPT_MAX_SECTIONS)) {
		snprintf(err, errlen, "%s: not a zinf checkpoint shard of rank %d (magic, version "
		         "%u or rank %u wrong)", s->path, rank, h.version, h.rank);
		close(fd);
		return -EINVAL;
	}
	if (!rc)
		rc = read_all(fd, ent, h.nsec * sizeof(shard_entry), sizeof(h));
	if (rc) {
		snprintf(err, errlen, "%s: truncated header: %s", s->path, strerror(-rc));
		close(fd);
		return -EINVAL;
	}
	for (uint32_t j = 0; j < h.nsec; j++) {
		if (ent[j].offset + ent[j].len > (uint64_t)st.st_size ||
		    ent[j].offset + ent[j].len < ent[j].offset) {
			snprintf(err, errlen, "%s: section '%.32s' (%llu bytes at %llu) runs past the "
			         "end of the file (%lld bytes): truncated checkpoint", s->path,
			         ent[j].name, (unsigned long long)ent[j].len,
			         (unsigned long long)ent[j].offset, (long long)st.st_size);
			close(fd);
			return -EINVAL;
		}
		memcpy(s->sec[j].name, ent[j].name, sizeof(ent[j].name));
		s->sec[j].name[sizeof(s->sec[j].name) - 1] = '\0';
		s->sec[j].offset = ent[j].offset;
		s->sec[j].len = ent[j].len;
		s->sec[j].sum = ent[j].sum;
	}
	s->fd = fd;
	s->nsec = (int)h.nsec;
	s->file_size = (uint64_t)st.st_size;
	return 0;
}

void
zinf_ckpt_shard_close(zinf_ckpt_shard *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

const zinf_ckpt_shard_sec *
zinf_ckpt_shard_find(const zinf_ckpt_shard *s, const char *name)
{
	for (int j = 0; j < s->nsec; j++)
		if (!strcmp(s->sec[j].name, name))
			return &s->sec[j];
	return NULL;
}

int
zinf_ckpt_shard_pread(const zinf_ckpt_shard *s, const zinf_ckpt_shard_sec *sec, uint64_t at,
                      void *buf, size_t len, char *err, size_t errlen)
{
	if (at > sec->len || len > sec->len - at) {
		snprintf(err, errlen, "%s: %zu bytes at %llu of section '%s' (%llu bytes): past its "
		         "end; the manifest's partition table does not fit this shard", s->path, len,
		         (unsigned long long)at, sec->name, (unsigned long long)sec->len);
		return -EINVAL;
	}
	int rc = read_all(s->fd, buf, len, sec->offset + at);
	if (rc)
		snprintf(err, errlen, "%s: reading section '%s': %s", s->path, sec->name,
		         strerror(-rc));
	return rc;
}

#define VERIFY_PIECE (4u << 20)

int
zinf_ckpt_shard_verify(const zinf_ckpt_shard *s, char *err, size_t errlen)
{
	char *buf = malloc(VERIFY_PIECE);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", s->path);
		return -ENOMEM;
	}
	int rc = 0;
	for (int j = 0; j < s->nsec && !rc; j++) {
		uint64_t h = FNV_INIT;
		for (uint64_t at = 0; at < s->sec[j].len && !rc; at += VERIFY_PIECE) {
			size_t n = s->sec[j].len - at < VERIFY_PIECE ? (size_t)(s->sec[j].len - at)
			                                             : VERIFY_PIECE;
			rc = zinf_ckpt_shard_pread(s, &s->sec[j], at, buf, n, err, errlen);
			if (!rc)
				h = fnv1a(h, buf, n);
		}
		if (!rc && h != s->sec[j].sum) {
			snprintf(err, errlen, "%s: section '%s' fails its checksum: the file is "
			         "corrupt; use an older checkpoint", s->path, s->sec[j].name);
			rc = -EIO;
		}
	}
	free(buf);
	return rc;
}

int
zinf_ckpt_shard_read(const char *folder, int rank, const char *const *names, int n, void **out,
                     uint64_t *lens, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		out[i] = NULL;
		lens[i] = 0;
	}
	zinf_ckpt_shard s;
	int rc = zinf_ckpt_shard_open(folder, rank, &s, err, errlen);
	if (rc)
		return rc;
	for (int i = 0; i < n && !rc; i++) {
		const zinf_ckpt_shard_sec *sec = zinf_ckpt_shard_find(&s, names[i]);
		if (!sec) {
			snprintf(err, errlen, "%s: section '%s' missing", s.path, names[i]);
			rc = -EINVAL;
			break;
		}
		out[i] = malloc(sec->len ? sec->len : 1);
		if (!out[i]) {
			snprintf(err, errlen, "%s: out of memory for section '%s' (%llu bytes)", s.path,
			         names[i], (unsigned long long)sec->len);
			rc = -ENOMEM;
			break;
		}
		lens[i] = sec->len;
		rc = zinf_ckpt_shard_pread(&s, sec, 0, out[i], sec->len, err, errlen);
		if (!rc && fnv1a(FNV_INIT, out[i], sec->len) != sec->sum) {
			snprintf(err, errlen, "%s: section '%s' fails its checksum: the file is "
			         "corrupt; resume from an older checkpoint", s.path, names[i]);
			rc = -EIO;
		}
	}
	zinf_ckpt_shard_close(&s);
	if (rc) {
		for (int i = 0; i < n; i++) {
			free(out[i]);
			out[i] = NULL;
			lens[i] = 0;
		}
	}
	return rc;
}

/* ---- several ranks ------------------------------------------------------------------------ */

int
zinf_ckpt_staging_path(const char *dir, const char *tag, char *tmp, size_t tmplen, char *err,
                       size_t errlen)
{
	int rc = check_tag(tag, err, errlen);
	if (rc)
		return rc;
	if (snprintf(tmp, tmplen, "%s/.%s.tmp-ranks", dir, tag) >= (int)tmplen) {
		snprintf(err, errlen, "%s/%s: path too long", dir, tag);
		return -ENAMETOOLONG;
	}
	return 0;
}

int
zinf_ckpt_begin_shared(const char *dir, const char *tag, char *tmp, size_t tmplen, char *err,
                       size_t errlen)
{
	int rc = zinf_ckpt_staging_path(dir, tag, tmp, tmplen, err, errlen);
	if (!rc)
		rc = make_dirs(dir, err, errlen);
	if (rc)
		return rc;
	remove_folder(tmp); /* an interrupted save's leftovers */
	if (mkdir(tmp, 0755) != 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create a staging folder: %s", tmp, strerror(e));
		return -e;
	}
	return 0;
}

int
zinf_ckpt_parts(const zinf_model_layout *lay, int stage, int world, zinf_ckpt_part **parts,
                char *err, size_t errlen)
{
	*parts = calloc((size_t)world, sizeof(**parts));
	if (!*parts) {
		snprintf(err, errlen, "out of memory for %d partitions", world);
		return -ENOMEM;
	}
	for (int r = 0; r < world; r++) {
		zinf_ckpt_part *q = &(*parts)[r];
		zinf_zero_partition p;
		int rc = zinf_zero_partition_init(&p, stage, world, r, lay->block_offset,
		                                  lay->block_numel, lay->nblocks, ZINF_BLOCK_ALIGN, err,
		                                  errlen);
		if (rc) {
			zinf_ckpt_parts_free(*parts, world);
			*parts = NULL;
			return rc;
		}
		if (stage > 0 || r == 0) {
			q->nranges = p.nranges;
			q->numel = p.owned_numel;
			q->ranges = p.ranges; /* taken over */
			p.ranges = NULL;
		}
		zinf_zero_partition_free(&p);
	}
	return 0;
}

void
zinf_ckpt_parts_free(zinf_ckpt_part *parts, int world)
{
	if (!parts)
		return;
	for (int r = 0; r < world; r++)
		free(parts[r].ranges);
	free(parts);
}

void
zinf_ckpt_parts_json(FILE *f, const zinf_ckpt_part *parts, int world)
{
	fprintf(f, "\"partition\": [");
	for (int r = 0; r < world; r++) {
		fprintf(f, "%s\n    {\"rank\": %d, \"file\": \"rank%d.bin\", \"numel\": %lld, "
		        "\"ranges\": [", r ? "," : "", r, r, (long long)parts[r].numel);
		for (int i = 0; i < parts[r].nranges; i++)
			fprintf(f, "%s[%lld, %lld]", i ? ", " : "", (long long)parts[r].ranges[i].begin,
			        (long long)parts[r].ranges[i].end);
		fprintf(f, "]}");
	}
	fprintf(f, "\n  ]");
}

bool
zinf_ckpt_part_equal(const zinf_ckpt_part *a, const zinf_ckpt_part *b)
{
	if (a->nranges != b->nranges || a->numel != b->numel)
		return false;
	for (int i = 0; i < a->nranges; i++)
		if (a->ranges[i].begin != b->ranges[i].begin || a->ranges[i].end != b->ranges[i].end)
			return false;
	return true;
}

void
zinf_ckpt_part_str(const zinf_ckpt_part *p, char *buf, size_t buflen)
{
	size_t at = 0;
	buf[0] = '\0';
	at += (size_t)snprintf(buf, buflen, "[");
	for (int i = 0; i < p->nranges && at < buflen; i++)
		at += (size_t)snprintf(buf + at, buflen - at, "%s[%lld, %lld]", i ? ", " : "",
		                       (long long)p->ranges[i].begin, (long long)p->ranges[i].end);
	if (at < buflen)
		snprintf(buf + at, buflen - at, "]");
	else if (buflen > 4)
		memcpy(buf + buflen - 4, "...", 4);
}
