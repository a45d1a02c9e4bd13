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

int
zinf_ckpt_begin(const char *dir, const char *tag, char *tmp, size_t tmplen, char *err,
                size_t errlen)
{
	if (!tag[0] || strchr(tag, '/') || tag[0] == '.') {
		snprintf(err, errlen, "checkpoint tag '%s': must be a plain folder name "
		         "(no '/', not starting with '.')", tag);
		return -EINVAL;
	}
	int rc = make_dirs(dir, err, errlen);
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
zinf_ckpt_shard_read(const char *folder, int rank, const char *const *names, int n, void **out,
                     uint64_t *lens, char *err, size_t errlen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/rank%d.bin", folder, rank);
	for (int i = 0; i < n; i++) {
		out[i] = NULL;
		lens[i] = 0;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot open: %s (a checkpoint saved by %s ranks?)", path,
		         strerror(e), rank ? "fewer" : "other");
		return -e;
	}
	struct stat st;
	shard_header h;
	shard_entry ent[ZINF_CKPT_MAX_SECTIONS];
	int rc = fstat(fd, &st) != 0 ? -errno : read_all(fd, &h, sizeof(h), 0);
	if (!rc && (memcmp(h.magic, CKPT_MAGIC, 8) || h.version != CKPT_VERSION ||
	            h.rank != (uint32_t)rank || h.nsec > ZINF_CKPT_MAX_SECTIONS)) {
		snprintf(err, errlen, "%s: not a zinf checkpoint shard of rank %d (magic, version "
		         "%u or rank %u wrong)", path, rank, h.version, h.rank);
		close(fd);
		return -EINVAL;
	}
	if (!rc)
		rc = read_all(fd, ent, h.nsec * sizeof(shard_entry), sizeof(h));
	if (rc) {
		snprintf(err, errlen, "%s: truncated header: %s", path, strerror(-rc));
		close(fd);
		return -EINVAL;
	}
	for (int i = 0; i < n && !rc; i++) {
		uint32_t j = 0;
		while (j < h.nsec && strncmp(ent[j].name, names[i], sizeof(ent[j].name)))
			j++;
		if (j == h.nsec) {
			snprintf(err, errlen, "%s: section '%s' missing", path, names[i]);
			rc = -EINVAL;
			break;
		}
		if (ent[j].offset + ent[j].len > (uint64_t)st.st_size ||
		    ent[j].offset + ent[j].len < ent[j].offset) {
			snprintf(err, errlen, "%s: section '%s' (%llu bytes at %llu) runs past the end "
			         "of the file (%lld bytes): truncated checkpoint", path, names[i],
			         (unsigned long long)ent[j].len, (unsigned long long)ent[j].offset,
			         (long long)st.st_size);
			rc = -EINVAL;
			break;
		}
		out[i] = malloc(ent[j].len ? ent[j].len : 1);
		if (!out[i]) {
			snprintf(err, errlen, "%s: out of memory for section '%s' (%llu bytes)", path,
			         names[i], (unsigned long long)ent[j].len);
			rc = -ENOMEM;
			break;
		}
		lens[i] = ent[j].len;
		rc = read_all(fd, out[i], ent[j].len, ent[j].offset);
		if (rc) {
			snprintf(err, errlen, "%s: reading section '%s': %s", path, names[i],
			         strerror(-rc));
			break;
		}
		if (fnv1a(FNV_INIT, out[i], ent[j].len) != ent[j].sum) {
			snprintf(err, errlen, "%s: section '%s' fails its checksum: the file is "
			         "corrupt; resume from an older checkpoint", path, names[i]);
			rc = -EIO;
		}
	}
	close(fd);
	if (rc) {
		for (int i = 0; i < n; i++) {
			free(out[i]);
			out[i] = NULL;
			lens[i] = 0;
		}
	}
	return rc;
}
