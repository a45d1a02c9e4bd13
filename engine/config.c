/* engine/config: load ds_config.json (cJSON), apply HF-style overrides, resolve for a world
 * size and a model.
 *
 * DESIGN. The key table (config_keys.c) drives everything: the walk over the JSON tree looks
 * each member's dotted path up in it, so a key zinf does not know is an error at the point it
 * appears, with the nearest sibling key as a suggestion. Each key records its source (file,
 * default, auto, flag, derived); "auto" marks it pending until a flag (load) or the world size
 * and model (resolve) fill it. Rules that DeepSpeed applies silently (stage < 3 ignores
 * offload_param, NVMe optimizer offload needs stage 3) are errors here. */
#define _GNU_SOURCE
#include "config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define CONFIG_MAX_BYTES (64u << 20)

typedef struct loader {
	zinf_config *cfg;
	char *err;
	size_t errlen;
	unsigned char seen[ZINF_KEY_COUNT]; /* canonical key given in the file */
	int seen_as[ZINF_KEY_COUNT];        /* the key (maybe an alias) that gave it */
} loader;

#define FAIL(L, ...) zinf_cfg_fail((L)->cfg, (L)->err, (L)->errlen, __VA_ARGS__)

static void *
field(zinf_config *cfg, const cfg_key_def *d)
{
	return (char *)cfg + d->off;
}

void
zinf_config_init_defaults(zinf_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->path, sizeof(cfg->path), "(defaults)");
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		const cfg_key_def *d = zinf_cfg_key(k);
		void *p = field(cfg, d);
		if (d->alias_of >= 0)
			continue;
		switch (d->type) {
		case CFG_BOOL:
			*(bool *)p = d->def != 0;
			break;
		case CFG_INT:
			*(int64_t *)p = (int64_t)d->def;
			break;
		case CFG_NUM:
			*(double *)p = d->def;
			break;
		case CFG_ENUM:
			*(int *)p = (int)d->def;
			break;
		case CFG_STR:
			*(char *)p = 0;
			break;
		case CFG_PAIR:
			((double *)p)[0] = d->def;
			((double *)p)[1] = d->def2;
			break;
		}
		cfg->src[k] = ZINF_SRC_DEFAULT;
	}
	zinf_config_overrides_init(&cfg->overrides);
	cfg->world_size = 1;
}

/* ---- "did you mean" ---- */

static int
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 64;
	int row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int up = row[j];
			int cost = tolower((unsigned char)a[i - 1]) !=
			           tolower((unsigned char)b[j - 1]);
			int best = diag + cost;
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static const char *
last_part(const char *path)
{
	const char *dot = strrchr(path, '.');
	return dot ? dot + 1 : path;
}

static int
parent_is(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	if (!n)
		return !strchr(path, '.');
	return !strncmp(path, prefix, n) && path[n] == '.' && !strchr(path + n + 1, '.');
}

/* The sibling of `name` under `prefix` (a key or a section) nearest in edit distance. */
static const char *
nearest_sibling(const char *prefix, const char *name, int *dist)
{
	const char *best = NULL;
	*dist = 1 << 20;
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		const char *p = zinf_cfg_key(k)->path;
		if (!parent_is(p, prefix))
			continue;
		int d = edit_distance(name, last_part(p));
		if (d < *dist) {
			*dist = d;
			best = last_part(p);
		}
	}
	const char *sec;
	for (int s = 1; (sec = zinf_cfg_section(s)); s++) {
		if (!parent_is(sec, prefix))
			continue;
		int d = edit_distance(name, last_part(sec));
		if (d < *dist) {
			*dist = d;
			best = last_part(sec);
		}
	}
	return best;
}

static int
unknown_key(loader *L, const char *prefix, const char *path, const char *name)
{
	int dist;
	const char *best = nearest_sibling(prefix, name, &dist);
	int limit = (int)strlen(name) / 3 > 2 ? (int)strlen(name) / 3 : 2;
	if (best && dist <= limit)
		return FAIL(L, "%s: unknown key; did you mean %s?", path, best);
	for (int k = 0; k < ZINF_KEY_COUNT; k++)
		if (!strcmp(last_part(zinf_cfg_key(k)->path), name))
			return FAIL(L, "%s: unknown key; did you mean %s? (it belongs there)", path,
			            zinf_cfg_key(k)->path);
	return FAIL(L,
	            "%s: unknown key (not a DeepSpeed setting zinf reads): remove it; "
	            "`zinf config keys` lists every key",
	            path);
}

/* ---- values ---- */

const char *
zinf_cfg_json_kind(const cJSON *v)
{
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsNumber(v))
		return "a number";
	if (cJSON_IsString(v))
		return "a string";
	if (cJSON_IsArray(v))
		return "an array";
	if (cJSON_IsObject(v))
		return "an object";
	return "null";
}

static int
check_range(loader *L, const cfg_key_def *d, const char *path, double v)
{
	if (v < d->min)
		return FAIL(L, "%s: %.9g is below the minimum %.9g: set it to %.9g or more", path,
		            v, d->min, d->min);
	if (v > d->max)
		return FAIL(L, "%s: %.9g is above the maximum %.9g: set it to %.9g or less", path,
		            v, d->max, d->max);
	return 0;
}

static int
number_of(loader *L, const cfg_key_def *d, const char *path, const cJSON *v, double *out)
{
	if (!cJSON_IsNumber(v)) {
		if (cJSON_IsString(v))
			return FAIL(L, "%s: expected a number, got the string \"%s\"", path,
			            v->valuestring);
		return FAIL(L, "%s: expected a number, got %s", path, zinf_cfg_json_kind(v));
	}
	double x = v->valuedouble;
	if (!isfinite(x))
		return FAIL(L, "%s: %g is not a finite number", path, x);
	if (d->type == CFG_INT && x != floor(x))
		return FAIL(L, "%s: %.9g is not a whole number: write an integer", path, x);
	int rc = check_range(L, d, path, x);
	if (rc)
		return rc;
	*out = x;
	return 0;
}

static int
set_value(loader *L, int k, const cJSON *v)
{
	const cfg_key_def *d = zinf_cfg_key(k);
	int c = d->alias_of >= 0 ? d->alias_of : k;
	zinf_config *cfg = L->cfg;
	void *p = field(cfg, d);
	const char *path = d->path;

	if (L->seen[c])
		return FAIL(L, "%s: given twice (also as %s): keep one", path,
		            zinf_cfg_key(L->seen_as[c])->path);
	L->seen[c] = 1;
	L->seen_as[c] = k;

	if (cJSON_IsString(v) && !strcmp(v->valuestring, "auto")) {
		if (d->auto_kind == CFG_AUTO_NO)
			return FAIL(L,
			            "%s: \"auto\" is not accepted for this key (zinf and the HF "
			            "trainer fill only batch, clipping, optimizer, scheduler, "
			            "precision and the three model-sized ZeRO buckets): write "
			            "a value",
			            path);
		cfg->pending[c] = 1;
		cfg->src[c] = ZINF_SRC_AUTO;
		return 0;
	}
	double x;
	int rc;
	switch (d->type) {
	case CFG_BOOL:
		if (!cJSON_IsBool(v))
			return FAIL(L, "%s: expected true or false, got %s", path, zinf_cfg_json_kind(v));
		*(bool *)p = cJSON_IsTrue(v);
		break;
	case CFG_INT:
		if ((rc = number_of(L, d, path, v, &x)))
			return rc;
		*(int64_t *)p = (int64_t)x;
		break;
	case CFG_NUM:
		if ((rc = number_of(L, d, path, v, &x)))
			return rc;
		*(double *)p = x;
		break;
	case CFG_ENUM: {
		if (!cJSON_IsString(v))
			return FAIL(L, "%s: expected a string, got %s", path, zinf_cfg_json_kind(v));
		int found = -1, best = 0, bestd = 1 << 20;
		for (int i = 0; i < d->n_names; i++) {
			if (!strcasecmp(v->valuestring, d->names[i]))
				found = i;
			int e = edit_distance(v->valuestring, d->names[i]);
			if (e < bestd) {
				bestd = e;
				best = i;
			}
		}
		if (found < 0) {
			char list[256] = "";
			for (int i = 0; i < d->n_names; i++)
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				         i ? "|" : "", d->names[i]);
			if (bestd <= 2)
				return FAIL(L, "%s: \"%s\" is not one of %s; did you mean %s?",
				            path, v->valuestring, list, d->names[best]);
			return FAIL(L, "%s: \"%s\" is not one of %s", path, v->valuestring, list);
		}
		*(int *)p = found;
		break;
	}
	case CFG_STR:
		if (cJSON_IsNull(v)) { /* DeepSpeed's default is None: not set */
			*(char *)p = 0;
			break;
		}
		if (!cJSON_IsString(v))
			return FAIL(L, "%s: expected a path string, got %s", path, zinf_cfg_json_kind(v));
		if (strlen(v->valuestring) >= ZINF_CONFIG_PATH_MAX)
			return FAIL(L, "%s: path is longer than %d bytes", path,
			            ZINF_CONFIG_PATH_MAX - 1);
		snprintf(p, ZINF_CONFIG_PATH_MAX, "%s", v->valuestring);
		break;
	case CFG_PAIR: {
		if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
			return FAIL(L, "%s: expected [beta1, beta2], got %s", path,
			            cJSON_IsArray(v) ? "an array of another length" : zinf_cfg_json_kind(v));
		for (int i = 0; i < 2; i++) {
			char sub[128];
			snprintf(sub, sizeof(sub), "%s[%d]", path, i);
			if ((rc = number_of(L, d, sub, cJSON_GetArrayItem(v, i), &x)))
				return rc;
			((double *)p)[i] = x;
		}
		break;
	}
	}
	cfg->src[c] = ZINF_SRC_FILE;
	return 0;
}

static int
find_key(const char *path)
{
	for (int k = 0; k < ZINF_KEY_COUNT; k++)
		if (!strcmp(zinf_cfg_key(k)->path, path))
			return k;
	return -1;
}

static int
walk(loader *L, const cJSON *obj, const char *prefix)
{
	for (const cJSON *c = obj->child; c; c = c->next) {
		char path[512];
		if (*prefix)
			snprintf(path, sizeof(path), "%s.%s", prefix, c->string);
		else
			snprintf(path, sizeof(path), "%s", c->string);
		int rc;
		if (zinf_cfg_is_section(path)) {
			if (!cJSON_IsObject(c))
				return FAIL(L, "%s: expected an object { ... }, got %s", path,
				            zinf_cfg_json_kind(c));
			if ((rc = walk(L, c, path)))
				return rc;
			continue;
		}
		int k = find_key(path);
		if (k < 0)
			return unknown_key(L, prefix, path, c->string);
		if ((rc = set_value(L, k, c)))
			return rc;
	}
	return 0;
}

/* Scheduler params must belong to the chosen scheduler type. */
static int
check_scheduler_params(loader *L)
{
	zinf_config *cfg = L->cfg;
	unsigned bit = 1u << cfg->scheduler_type;
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		const cfg_key_def *d = zinf_cfg_key(k);
		if (!d->sched_mask || !L->seen[k] || (d->sched_mask & bit))
			continue;
		if (cfg->scheduler_type == ZINF_SCHEDULER_NONE)
			return FAIL(L,
			            "%s is given but scheduler.type is not: add \"type\": "
			            "\"WarmupLR\", \"WarmupDecayLR\" or \"WarmupCosineLR\"",
			            d->path);
		char list[512] = "";
		for (int j = 0; j < ZINF_KEY_COUNT; j++)
			if (zinf_cfg_key(j)->sched_mask & bit)
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				         *list ? ", " : "", last_part(zinf_cfg_key(j)->path));
		return FAIL(L,
		            "%s: not a parameter of %s (it takes %s): remove it or change "
		            "scheduler.type",
		            d->path, zinf_cfg_scheduler_name(cfg->scheduler_type), list);
	}
	return 0;
}

/* ---- overrides ---- */

static int
mismatch(loader *L, const cfg_key_def *d, const char *flag, double file, double given)
{
	return FAIL(L,
	            "%s is %.9g in the file but %s %.9g was given: write \"auto\" in the file "
	            "to take the flag, or drop the flag",
	            d->path, file, flag, given);
}

static int
apply_overrides(loader *L, const zinf_config_overrides *ov)
{
	zinf_config *cfg = L->cfg;
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		const cfg_key_def *d = zinf_cfg_key(k);
		void *p = field(cfg, d);
		if (d->alias_of >= 0)
			continue;
		if (d->auto_kind == CFG_AUTO_ZERO && cfg->pending[k]) {
			*(double *)p = 0;
			cfg->pending[k] = 0;
			continue;
		}
		if (d->auto_kind != CFG_AUTO_FLAG && d->auto_kind != CFG_AUTO_SWITCH)
			continue;
		int o = d->ov;
		bool given = ov->given & (1u << o);
		if (!cfg->pending[k] && (ov->soft & (1u << o)))
			continue; /* a default fills "auto" only */
		if (d->type == CFG_PAIR) {
			bool given2 = ov->given & (1u << (o + 1));
			double *b = p;
			if (cfg->pending[k]) {
				if (given && given2) {
					b[0] = ov->value[o];
					b[1] = ov->value[o + 1];
					cfg->pending[k] = 0;
				}
				continue;
			}
			for (int i = 0; i < 2; i++) {
				bool g = i ? given2 : given;
				if (!g)
					continue;
				if (cfg->src[k] == ZINF_SRC_FILE && b[i] != ov->value[o + i])
					return mismatch(L, d, zinf_config_override_flag(o + i),
					                b[i], ov->value[o + i]);
				b[i] = ov->value[o + i];
				if (cfg->src[k] == ZINF_SRC_DEFAULT)
					cfg->src[k] = ZINF_SRC_FLAG;
			}
			continue;
		}
		if (d->auto_kind == CFG_AUTO_SWITCH) {
			bool *b = p;
			if (cfg->pending[k]) {
				*b = given;
				cfg->pending[k] = 0;
			} else if (given && !*b && cfg->src[k] == ZINF_SRC_FILE) {
				return FAIL(L,
				            "%s is false in the file but %s was given: write "
				            "\"auto\" or true in the file, or drop the flag",
				            d->path, zinf_config_override_flag(o));
			} else if (given && !*b) {
				*b = true;
				cfg->src[k] = ZINF_SRC_FLAG;
			}
			continue;
		}
		if (!given)
			continue;
		double v = ov->value[o];
		double cur = d->type == CFG_INT ? (double)*(int64_t *)p : *(double *)p;
		if (!cfg->pending[k] && cfg->src[k] == ZINF_SRC_FILE) {
			if (cur != v)
				return mismatch(L, d, zinf_config_override_flag(o), cur, v);
			continue;
		}
		if (d->type == CFG_INT)
			*(int64_t *)p = (int64_t)v;
		else
			*(double *)p = v;
		if (cfg->pending[k])
			cfg->pending[k] = 0;
		else
			cfg->src[k] = ZINF_SRC_FLAG;
	}
	if (ov->nvme_path) {
		if (strlen(ov->nvme_path) >= ZINF_CONFIG_PATH_MAX)
			return FAIL(L, "--nvme_path is longer than %d bytes",
			            ZINF_CONFIG_PATH_MAX - 1);
		snprintf(cfg->nvme_override, sizeof(cfg->nvme_override), "%s", ov->nvme_path);
		zinf_config_offload *off[2] = {&cfg->offload_optimizer, &cfg->offload_param};
		int key[2] = {ZINF_KEY_OOPT_NVME_PATH, ZINF_KEY_OPARAM_NVME_PATH};
		for (int i = 0; i < 2; i++)
			if (off[i]->device == ZINF_DEVICE_NVME) {
				snprintf(off[i]->nvme_path, sizeof(off[i]->nvme_path), "%s",
				         ov->nvme_path);
				cfg->src[key[i]] = ZINF_SRC_FLAG;
			}
	}
	cfg->overrides = *ov;
	cfg->overrides.nvme_path = ov->nvme_path ? cfg->nvme_override : NULL;
	return 0;
}

/* ---- load ---- */

static void
json_position(const char *json, const char *at, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (const char *s = json; s < at && *s; s++) {
		if (*s == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

int
zinf_config_load_string(const char *name, const char *json, const zinf_config_overrides *ov,
                        zinf_config *cfg, char *err, size_t errlen)
{
	zinf_config_overrides none;
	if (!ov) {
		zinf_config_overrides_init(&none);
		ov = &none;
	}
	snprintf(cfg->path, sizeof(cfg->path), "%s", name);
	cfg->resolved = false;
	loader L = {.cfg = cfg, .err = err, .errlen = errlen};

	const char *end = NULL;
	cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
	if (!root) {
		int line, col;
		if (!end)
			end = json + strlen(json);
		json_position(json, end, &line, &col);
		char near[24];
		size_t n = 0;
		for (const char *s = end; *s && *s != '\n' && n < sizeof(near) - 1; s++)
			near[n++] = *s;
		near[n] = 0;
		if (err && errlen)
			snprintf(err, errlen,
			         "%s:%d:%d: malformed JSON %s%s%s: check for a missing "
			         "comma, quote or brace just before",
			         cfg->path, line, col, n ? "near '" : "at the end of the file",
			         near, n ? "'" : "");
		return -EINVAL;
	}
	int rc = 0;
	if (!cJSON_IsObject(root))
		rc = FAIL(&L, "the top level is %s; a ds_config.json is one object { ... }",
		          zinf_cfg_json_kind(root));
	if (!rc)
		rc = walk(&L, root, "");
	cJSON_Delete(root);
	if (!rc)
		rc = check_scheduler_params(&L);
	if (!rc)
		rc = apply_overrides(&L, ov);
	if (!rc && cfg->fp16_enabled && cfg->bf16_enabled)
		rc = FAIL(&L, "fp16.enabled and bf16.enabled are both true: keep one (bf16 on "
		              "H100/H200: set fp16.enabled to false)");
	return rc;
}

int
zinf_config_load_file(const char *path, const zinf_config_overrides *overrides, zinf_config *cfg,
                      char *err, size_t errlen)
{
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		int e = S_ISDIR(st.st_mode) ? EISDIR : errno ? errno : EINVAL;
		snprintf(err, errlen, "%s: not a regular file: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	if ((uint64_t)st.st_size > CONFIG_MAX_BYTES) {
		snprintf(err, errlen, "%s: %lld bytes is larger than the %u MiB a config may be",
		         path, (long long)st.st_size, CONFIG_MAX_BYTES >> 20);
		close(fd);
		return -EFBIG;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "%s: out of memory reading %lld bytes", path,
		         (long long)st.st_size);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			snprintf(err, errlen, "%s: read: %s", path, strerror(e));
			free(buf);
			close(fd);
			return -e;
		}
		got += (size_t)r;
	}
	close(fd);
	buf[got] = 0;
	if (strlen(buf) != got) {
		free(buf);
		return zinf_cfg_fail(cfg, err, errlen, "contains a NUL byte: not a JSON text file");
	}
	int rc = zinf_config_load_string(path, buf, overrides, cfg, err, errlen);
	free(buf);
	return rc;
}
