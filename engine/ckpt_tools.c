/* Checkpoint tools (engine/include/engine/ckpt.h): manifest partition tables, zinf ckpt
 * inspect and zinf ckpt consolidate. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "engine/ckpt.h"

static int
num_item(const cJSON *obj, const char *key, const char *path, double *out, char *err,
         size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (!cJSON_IsNumber(it)) {
		snprintf(err, errlen, "%s: \"%s\" missing or not a number", path, key);
		return -EINVAL;
	}
	*out = it->valuedouble;
	return 0;
}

static void
str_item(const cJSON *obj, const char *key, char *out, size_t outlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	snprintf(out, outlen, "%s", cJSON_IsString(it) ? it->valuestring : "?");
}

/* "partition": [{"rank", "numel", "ranges": [[b, e], ...]}, ...] into m->parts */
static int
parse_parts(const cJSON *arr, zinf_ckpt_manifest *m, const char *path, char *err, size_t errlen)
{
	if (cJSON_GetArraySize(arr) != m->world_size) {
		snprintf(err, errlen, "%s: \"partition\" has %d entries for world_size %d", path,
		         cJSON_GetArraySize(arr), m->world_size);
		return -EINVAL;
	}
	for (int r = 0; r < m->world_size; r++) {
		const cJSON *e = cJSON_GetArrayItem(arr, r);
		const cJSON *ranges = cJSON_GetObjectItemCaseSensitive(e, "ranges");
		zinf_ckpt_part *q = &m->parts[r];
		double rank = -1, numel = -1;
		if (num_item(e, "rank", path, &rank, err, errlen) ||
		    num_item(e, "numel", path, &numel, err, errlen))
			return -EINVAL;
		if ((int)rank != r || !cJSON_IsArray(ranges)) {
			snprintf(err, errlen, "%s: partition entry %d is not rank %d's (rank %d, ranges "
			         "%s)", path, r, r, (int)rank, cJSON_IsArray(ranges) ? "ok" : "missing");
			return -EINVAL;
		}
		int n = cJSON_GetArraySize(ranges);
		q->ranges = calloc((size_t)(n ? n : 1), sizeof(*q->ranges));
		if (!q->ranges) {
			snprintf(err, errlen, "%s: out of memory", path);
			return -ENOMEM;
		}
		int64_t sum = 0, prev = 0;
		for (int i = 0; i < n; i++) {
			const cJSON *p = cJSON_GetArrayItem(ranges, i);
			const cJSON *b = cJSON_GetArrayItem(p, 0), *en = cJSON_GetArrayItem(p, 1);
			if (!cJSON_IsNumber(b) || !cJSON_IsNumber(en) || b->valuedouble < (double)prev ||
			    en->valuedouble < b->valuedouble ||
			    en->valuedouble > (double)m->total_numel) {
				snprintf(err, errlen, "%s: rank %d's range %d is not [begin, end] in order "
				         "within 0..%lld", path, r, i, (long long)m->total_numel);
				return -EINVAL;
			}
			q->ranges[i] = (zinf_zero_range){(int64_t)b->valuedouble,
			                                 (int64_t)en->valuedouble};
			prev = q->ranges[i].end;
			sum += q->ranges[i].end - q->ranges[i].begin;
		}
		q->nranges = n;
		q->numel = sum;
		if (sum != (int64_t)numel) {
			snprintf(err, errlen, "%s: rank %d's ranges sum to %lld elements, \"numel\" says "
			         "%lld", path, r, (long long)sum, (long long)numel);
			return -EINVAL;
		}
	}
	return 0;
}

int
zinf_ckpt_manifest_read(const char *folder, zinf_ckpt_manifest *m, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->folder, sizeof(m->folder), "%s", folder);
	char path[4200];
	snprintf(path, sizeof(path), "%s/manifest.json", folder);
	char *text = NULL;
	int rc = zinf_ckpt_read_text(path, &text, err, errlen);
	if (rc)
		return rc;
	cJSON *j = cJSON_Parse(text);
	free(text);
	if (!j) {
		snprintf(err, errlen, "%s: not valid JSON", path);
		return -EINVAL;
	}
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
	double ws = 0, stage = 0, numel = 0, steps = 0;
	if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "zinf-checkpoint")) {
		snprintf(err, errlen, "%s: \"format\" is not \"zinf-checkpoint\"", path);
		rc = -EINVAL;
	} else if ((rc = num_item(j, "world_size", path, &ws, err, errlen)) ||
	           (rc = num_item(j, "zero_stage", path, &stage, err, errlen)) ||
	           (rc = num_item(j, "global_steps", path, &steps, err, errlen)) ||
	           (rc = num_item(model, "total_numel", path, &numel, err, errlen))) {
		/* err is set */
	} else if (ws < 1 || ws > 65536 || numel < 1) {
		snprintf(err, errlen, "%s: world_size %g or model.total_numel %g out of range", path,
		         ws, numel);
		rc = -EINVAL;
	}
	if (rc)
		goto out;
	m->world_size = (int)ws;
	m->stage = (int)stage;
	m->total_numel = (int64_t)numel;
	m->global_steps = (int64_t)steps;
	str_item(j, "tag", m->tag, sizeof(m->tag));
	str_item(model, "name", m->model_name, sizeof(m->model_name));
	str_item(model, "arch", m->arch, sizeof(m->arch));
	str_item(j, "precision", m->precision, sizeof(m->precision));
	m->parts = calloc((size_t)m->world_size, sizeof(*m->parts));
	if (!m->parts) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "partition");
	if (cJSON_IsArray(arr)) {
		rc = parse_parts(arr, m, path, err, errlen);
	} else if (m->world_size == 1) {
		/* saved before the table existed: one rank held everything */
		m->parts[0].ranges = calloc(1, sizeof(zinf_zero_range));
		if (!m->parts[0].ranges) {
			rc = -ENOMEM;
			snprintf(err, errlen, "%s: out of memory", path);
			goto out;
		}
		m->parts[0].ranges[0] = (zinf_zero_range){0, m->total_numel};
		m->parts[0].nranges = 1;
		m->parts[0].numel = m->total_numel;
	} else {
		snprintf(err, errlen, "%s: %d ranks but no \"partition\" table", path, m->world_size);
		rc = -EINVAL;
	}
out:
	cJSON_Delete(j);
	if (rc)
		zinf_ckpt_manifest_free(m);
	return rc;
}

void
zinf_ckpt_manifest_free(zinf_ckpt_manifest *m)
{
	zinf_ckpt_parts_free(m->parts, m->world_size);
	m->parts = NULL;
}

/* ---- inspect ------------------------------------------------------------------------------- */

static int
cmp_str(const void *a, const void *b)
{
	return strverscmp(*(char *const *)a, *(char *const *)b);
}

static int
inspect_tag(const char *folder, bool latest, FILE *f, char *err, size_t errlen)
{
	zinf_ckpt_manifest m;
	int rc = zinf_ckpt_manifest_read(folder, &m, err, errlen);
	if (rc)
		return rc;
	fprintf(f, "%s%s: step %lld, %d rank%s, ZeRO stage %d, model %s (%s, %lld elements), %s\n",
	        folder, latest ? " (latest)" : "", (long long)m.global_steps, m.world_size,
	        m.world_size == 1 ? "" : "s", m.stage, m.model_name, m.arch,
	        (long long)m.total_numel, m.precision);
	int bad = 0;
	for (int r = 0; r < m.world_size; r++) {
		zinf_ckpt_shard s;
		char e2[1024], range[256];
		zinf_ckpt_part_str(&m.parts[r], range, sizeof(range));
		if (zinf_ckpt_shard_open(folder, r, &s, e2, sizeof(e2))) {
			fprintf(f, "  rank%d.bin: BAD: %s\n", r, e2);
			bad++;
			continue;
		}
		const zinf_ckpt_shard_sec *ms = zinf_ckpt_shard_find(&s, "fp32_master");
		bool size_ok = ms && ms->len == (uint64_t)m.parts[r].numel * sizeof(float);
		int vr = zinf_ckpt_shard_verify(&s, e2, sizeof(e2));
		fprintf(f, "  rank%d.bin: %.1f MiB, %d sections, %lld elements %s, checksums %s%s%s\n",
		        r, (double)s.file_size / 1048576.0, s.nsec, (long long)m.parts[r].numel,
		        range, vr ? "FAILED: " : "ok", vr ? e2 : "",
		        size_ok ? "" : " (fp32_master size does not match the partition table)");
		bad += vr != 0 || !size_ok;
		zinf_ckpt_shard_close(&s);
	}
	char path[4200];
	struct stat st;
	snprintf(path, sizeof(path), "%s/model.safetensors", folder);
	if (stat(path, &st) == 0)
		fprintf(f, "  model.safetensors: %.1f MiB (16-bit export)\n",
		        (double)st.st_size / 1048576.0);
	zinf_ckpt_manifest_free(&m);
	if (bad) {
		snprintf(err, errlen, "%s: %d shard%s failed the checks above", folder, bad,
		         bad == 1 ? "" : "s");
		return -EIO;
	}
	return 0;
}

int
zinf_ckpt_inspect(const char *dir, FILE *f, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	if (stat(path, &st) == 0)
		return inspect_tag(dir, false, f, err, errlen);
	char latest[256] = "";
	char *text = NULL, e2[256];
	snprintf(path, sizeof(path), "%s/latest", dir);
	if (zinf_ckpt_read_text(path, &text, e2, sizeof(e2)) == 0) {
		text[strcspn(text, "\r\n")] = '\0';
		snprintf(latest, sizeof(latest), "%s", text);
		free(text);
	}
	DIR *d = opendir(dir);
	if (!d) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot open: %s", dir, strerror(e));
		return -e;
	}
	char **tags = NULL;
	int n = 0, cap = 0, rc = 0, bad = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/manifest.json", dir, de->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			char **t = realloc(tags, (size_t)cap * sizeof(*tags));
			if (!t) {
				rc = -ENOMEM;
				break;
			}
			tags = t;
		}
		if (!(tags[n] = strdup(de->d_name))) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (rc) {
		snprintf(err, errlen, "%s: out of memory listing tags", dir);
	} else if (!n) {
		snprintf(err, errlen, "%s: no checkpoint tags (folders with manifest.json) in it; pass "
		         "a --out folder of a run that saved, or one of its tag folders", dir);
		rc = -ENOENT;
	} else {
		qsort(tags, (size_t)n, sizeof(*tags), cmp_str);
		for (int i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, tags[i]);
			int r = inspect_tag(path, !strcmp(tags[i], latest), f, e2, sizeof(e2));
			if (r && r != -EIO)
				fprintf(f, "%s: BAD: %s\n", path, e2);
			bad += r != 0;
		}
		if (bad) {
			snprintf(err, errlen, "%s: %d of %d tags failed the checks above", dir, bad, n);
			rc = -EIO;
		}
	}
	for (int i = 0; i < n; i++)
		free(tags[i]);
	free(tags);
	return rc;
}

/* ---- consolidate --------------------------------------------------------------------------- */

typedef struct gather_ctx {
	const zinf_ckpt_manifest *m;
	zinf_ckpt_shard *shards;
	int64_t **prefix; /* per rank: element index in its section where range i starts */
	float *buf;       /* the largest tensor */
} gather_ctx;

/* Tensor t's elements from every shard range that overlaps it. */
static int
gather_tensor(void *vctx, const zinf_tensor_desc *t, const float **data, char *err,
              size_t errlen)
{
	gather_ctx *g = vctx;
	int64_t b = t->offset, e = t->offset + t->numel, got = 0;
	for (int r = 0; r < g->m->world_size; r++) {
		const zinf_ckpt_part *q = &g->m->parts[r];
		const zinf_ckpt_shard_sec *sec = zinf_ckpt_shard_find(&g->shards[r], "fp32_master");
		for (int i = 0; i < q->nranges; i++) {
			int64_t lo = q->ranges[i].begin > b ? q->ranges[i].begin : b;
			int64_t hi = q->ranges[i].end < e ? q->ranges[i].end : e;
			if (lo >= hi)
				continue;
			uint64_t at = (uint64_t)(g->prefix[r][i] + lo - q->ranges[i].begin) * 4;
			int rc = zinf_ckpt_shard_pread(&g->shards[r], sec, at, g->buf + (lo - b),
			                               (size_t)(hi - lo) * 4, err, errlen);
			if (rc)
				return rc;
			got += hi - lo;
		}
	}
	if (got != t->numel) {
		snprintf(err, errlen, "%s: tensor %s: the shards hold %lld of its %lld elements "
		         "(the partition table leaves a gap or overlaps)", g->m->folder, t->hf_name,
		         (long long)got, (long long)t->numel);
		return -EINVAL;
	}
	*data = g->buf;
	return 0;
}

static int
load_model_config(const char *folder, zinf_model_config *mc, char *err, size_t errlen)
{
	static const char *const names[] = {"model_config.json", "config.json"};
	char path[4200];
	struct stat st;
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", folder, names[i]);
		if (stat(path, &st) == 0)
			return zinf_model_config_load(path, mc, err, errlen);
	}
	snprintf(err, errlen, "%s: neither model_config.json nor config.json: the model's shape "
	         "is unknown (checkpoints saved by this zinf write model_config.json; copy the "
	         "model's HF config.json into the tag folder)", folder);
	return -ENOENT;
}

int
zinf_ckpt_consolidate(const char *dir, const char *tag, const char *out, zinf_save_dtype dtype,
                      char *err, size_t errlen)
{
	char folder[4096];
	int rc = 0;
	if (tag && tag[0]) {
		if (snprintf(folder, sizeof(folder), "%s/%s", dir, tag) >= (int)sizeof(folder)) {
			snprintf(err, errlen, "%s/%s: path too long", dir, tag);
			return -ENAMETOOLONG;
		}
	} else if ((rc = zinf_ckpt_find(dir, folder, sizeof(folder), err, errlen))) {
		return rc;
	}
	zinf_ckpt_manifest m;
	zinf_model_config mc;
	zinf_model_layout lay = {0};
	gather_ctx g = {.m = &m};
	if ((rc = zinf_ckpt_manifest_read(folder, &m, err, errlen)))
		return rc;
	if ((rc = load_model_config(folder, &mc, err, errlen)) ||
	    (rc = zinf_model_layout_init(&mc, &lay, err, errlen)))
		goto out;
	if (lay.total_numel != m.total_numel) {
		snprintf(err, errlen, "%s: the model config gives %lld elements, the manifest %lld: the "
		         "config file is not this checkpoint's model", folder,
		         (long long)lay.total_numel, (long long)m.total_numel);
		rc = -EINVAL;
		goto out;
	}
	g.shards = calloc((size_t)m.world_size, sizeof(*g.shards));
	g.prefix = calloc((size_t)m.world_size, sizeof(*g.prefix));
	int64_t maxnumel = 1;
	for (int i = 0; i < lay.ntensors; i++)
		if (lay.tensors[i].numel > maxnumel)
			maxnumel = lay.tensors[i].numel;
	g.buf = malloc((size_t)maxnumel * sizeof(float));
	for (int r = 0; g.shards && r < m.world_size; r++)
		g.shards[r].fd = -1;
	if (!g.shards || !g.prefix || !g.buf) {
		snprintf(err, errlen, "out of memory (largest tensor %lld elements)",
		         (long long)maxnumel);
		rc = -ENOMEM;
		goto out;
	}
	for (int r = 0; r < m.world_size && !rc; r++) {
		if ((rc = zinf_ckpt_shard_open(folder, r, &g.shards[r], err, errlen)) ||
		    (rc = zinf_ckpt_shard_verify(&g.shards[r], err, errlen)))
			break;
		const zinf_ckpt_shard_sec *sec = zinf_ckpt_shard_find(&g.shards[r], "fp32_master");
		if (!sec || sec->len != (uint64_t)m.parts[r].numel * sizeof(float)) {
			snprintf(err, errlen, "%s: fp32_master has %llu bytes, the manifest gives rank %d "
			         "%lld elements (%llu bytes): shard and manifest are from different "
			         "saves", g.shards[r].path, sec ? (unsigned long long)sec->len : 0ULL, r,
			         (long long)m.parts[r].numel,
			         (unsigned long long)m.parts[r].numel * sizeof(float));
			rc = -EINVAL;
			break;
		}
		g.prefix[r] = calloc((size_t)(m.parts[r].nranges + 1), sizeof(int64_t));
		if (!g.prefix[r]) {
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			break;
		}
		for (int i = 0; i < m.parts[r].nranges; i++)
			g.prefix[r][i + 1] = g.prefix[r][i] + m.parts[r].ranges[i].end -
			                     m.parts[r].ranges[i].begin;
	}
	if (rc)
		goto out;
	const char *slash = strrchr(out, '/');
	if (slash && slash != out) {
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - out), out);
		if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
			rc = -errno;
			snprintf(err, errlen, "%s: cannot create the output folder: %s", parent,
			         strerror(-rc));
			goto out;
		}
	}
	rc = zinf_model_save_safetensors_from(out, &mc, &lay, gather_tensor, &g, dtype, err,
	                                      errlen);
	if (!rc) {
		char cpath[PATH_MAX + 16];
		if (slash)
			snprintf(cpath, sizeof(cpath), "%.*s/config.json", (int)(slash - out), out);
		else
			snprintf(cpath, sizeof(cpath), "config.json");
		rc = zinf_model_config_save(&mc, cpath, err, errlen);
	}
out:
	if (g.shards)
		for (int r = 0; r < m.world_size; r++)
			zinf_ckpt_shard_close(&g.shards[r]);
	if (g.prefix)
		for (int r = 0; r < m.world_size; r++)
			free(g.prefix[r]);
	free(g.prefix);
	free(g.shards);
	free(g.buf);
	zinf_model_layout_free(&lay);
	zinf_ckpt_manifest_free(&m);
	return rc;
}
