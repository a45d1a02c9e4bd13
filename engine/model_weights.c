/* engine/model_weights: model.safetensors <-> the flat fp32 parameter vector.
 *
 * DESIGN. Every check (names, dtypes, shapes, unexpected tensors) runs before the first byte
 * of params is written, so a refused file leaves params as they were. Data moves in chunks of
 * CHUNK elements: a file of any size needs a few MiB of buffer. GPT-2's Conv1D weights are
 * [in, out] in the file and [out, in] in zinf: a chunk of file rows is scattered into columns
 * on load and gathered from columns on save. Conversions round to nearest even, like torch. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/model.h"
#include "engine/safetensors.h"
#include "model_internal.h"

#define FAIL(rc, ...) zinf_model_fail(err, errlen, (rc), __VA_ARGS__)
#define CHUNK ((size_t)1 << 20) /* elements per read or write */

/* ---- conversions ---- */

static inline uint32_t
f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float
bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t
zinf_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

float
zinf_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t
zinf_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u) /* NaN */
		return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
	if (a >= 0x477ff000u) /* >= 65520 rounds to infinity */
		return sign | 0x7c00;
	if (a >= 0x38800000u) { /* normal half: rebias 127 -> 15, round the 13 dropped bits */
		uint32_t h = (a >> 13) - (112u << 10);
		uint32_t r = a & 0x1fff;
		if (r > 0x1000 || (r == 0x1000 && (h & 1)))
			h++;
		return sign | (uint16_t)h;
	}
	if (a < 0x33000000u) /* below half the smallest subnormal (ties go to even 0) */
		return sign;
	uint32_t e = a >> 23, mant = (a & 0x7fffff) | 0x800000;
	uint32_t shift = 126 - e; /* 14 .. 24 */
	uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
	if (rem > half || (rem == half && (h & 1)))
		h++;
	return sign | (uint16_t)h;
}

float
zinf_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
	if (e == 0) {
		float v = (float)m * 0x1p-24f;
		return sign ? -v : v;
	}
	if (e == 31)
		return bits_f32(sign | 0x7f800000u | (m << 13));
	return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

static void
to_f32(zinf_st_dtype d, const void *src, float *dst, size_t n)
{
	const uint16_t *h = src;
	switch (d) {
	case ZINF_ST_F32:
		memcpy(dst, src, n * sizeof(float));
		break;
	case ZINF_ST_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = zinf_bf16_to_f32(h[i]);
		break;
	default: /* F16; checked by the caller */
		for (size_t i = 0; i < n; i++)
			dst[i] = zinf_f16_to_f32(h[i]);
		break;
	}
}

static void
from_f32(zinf_st_dtype d, const float *src, void *dst, size_t n)
{
	uint16_t *h = dst;
	switch (d) {
	case ZINF_ST_F32:
		memcpy(dst, src, n * sizeof(float));
		break;
	case ZINF_ST_BF16:
		for (size_t i = 0; i < n; i++)
			h[i] = zinf_f32_to_bf16(src[i]);
		break;
	default:
		for (size_t i = 0; i < n; i++)
			h[i] = zinf_f32_to_f16(src[i]);
		break;
	}
}

/* ---- load ---- */

/* Buffers HF keeps in state dicts that are not parameters. */
static bool
ignorable(const char *name, const zinf_model_config *cfg)
{
	static const char *const suffixes[] = {".attn.bias", ".attn.masked_bias",
					       ".rotary_emb.inv_freq"};
	size_t n = strlen(name);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		size_t k = strlen(suffixes[i]);
		if (n >= k && !strcmp(name + n - k, suffixes[i]))
			return true;
	}
	/* a tied model's lm_head is wte; some files carry a copy anyway */
	return cfg->tied && !strcmp(name, "lm_head.weight");
}

/* GPT-2 files from the hub name tensors without "transformer." (GPT2Model's state dict). */
static const zinf_st_tensor *
find_tensor(const zinf_st_file *f, const zinf_model_config *cfg, const char *name)
{
	const zinf_st_tensor *t = zinf_st_find(f, name);
	const char *pre = "transformer.";
	if (!t && cfg->arch == ZINF_ARCH_GPT2 && !strncmp(name, pre, strlen(pre)))
		t = zinf_st_find(f, name + strlen(pre));
	return t;
}

static bool
is_model_tensor(const zinf_model_config *cfg, const zinf_model_layout *lay, const char *name)
{
	const char *pre = "transformer.";
	for (int i = 0; i < lay->ntensors; i++) {
		const char *hn = lay->tensors[i].hf_name;
		if (!strcmp(hn, name))
			return true;
		if (cfg->arch == ZINF_ARCH_GPT2 && !strncmp(hn, pre, strlen(pre)) &&
		    !strcmp(hn + strlen(pre), name))
			return true;
	}
	return false;
}

static void
shape_str(char *s, size_t n, int ndim, const int64_t *shape)
{
	size_t used = (size_t)snprintf(s, n, "[");
	for (int d = 0; d < ndim && used < n; d++)
		used += (size_t)snprintf(s + used, n - used, "%s%lld", d ? ", " : "",
					 (long long)shape[d]);
	if (used < n)
		snprintf(s + used, n - used, "]");
}

static int
check_tensor(const char *path, const zinf_model_config *cfg, const zinf_tensor_desc *d,
	     const zinf_st_tensor *t, char *err, size_t errlen)
{
	if (!t) {
		if (d->hf_name[0] == 'l' && !strcmp(d->hf_name, "lm_head.weight"))
			return FAIL(-ENOENT,
				    "%s: tensor lm_head.weight is missing but config.json says "
				    "tie_word_embeddings false: set it to true if the weights are "
				    "tied",
				    path);
		return FAIL(-ENOENT,
			    "%s: tensor %s is missing: the file does not hold a %s model of this "
			    "config.json (%d layers, d_model %d)",
			    path, d->hf_name, cfg->arch == ZINF_ARCH_GPT2 ? "GPT-2" : "LLaMA",
			    cfg->n_layer, cfg->d_model);
	}
	if (t->dtype != ZINF_ST_F32 && t->dtype != ZINF_ST_BF16 && t->dtype != ZINF_ST_F16)
		return FAIL(-ENOTSUP, "%s: tensor %s: dtype %s is not supported: zinf loads F32, "
				      "BF16 and F16",
			    path, t->name, zinf_st_dtype_name(t->dtype));
	int64_t want[2] = {d->hf_shape[0], d->hf_shape[1]};
	bool ok = t->ndim == d->ndim && t->shape[0] == want[0] &&
		  (d->ndim == 1 || t->shape[1] == want[1]);
	if (!ok) {
		char got[128], exp[64];
		shape_str(got, sizeof(got), t->ndim, t->shape);
		shape_str(exp, sizeof(exp), d->ndim, want);
		return FAIL(-EINVAL,
			    "%s: tensor %s has shape %s, the config needs %s: is config.json the "
			    "one these weights were saved with?",
			    path, t->name, got, exp);
	}
	return 0;
}

static int
load_tensor(const zinf_st_file *f, const zinf_st_tensor *t, const zinf_tensor_desc *d,
	    void *raw, float *tmp, float *params, char *err, size_t errlen)
{
	size_t es = zinf_st_dtype_size(t->dtype);
	int64_t total = d->hf_rows * d->shape[1]; /* elements in the file */
	float *dst = params + d->offset;
	if (!d->hf_transposed) {
		for (int64_t at = 0; at < total; at += (int64_t)CHUNK) {
			size_t n = (size_t)(total - at) < CHUNK ? (size_t)(total - at) : CHUNK;
			int rc = zinf_st_read(f, t, (uint64_t)at * es, raw, n * es, err, errlen);
			if (rc)
				return rc;
			to_f32(t->dtype, raw, dst + at, n);
		}
		return 0;
	}
	/* file [in, out] -> zinf [out, in] */
	int64_t in = d->shape[1], out = d->shape[0];
	int64_t rows_per = (int64_t)CHUNK / out > 0 ? (int64_t)CHUNK / out : 1;
	for (int64_t r0 = 0; r0 < in; r0 += rows_per) {
		int64_t nr = in - r0 < rows_per ? in - r0 : rows_per;
		size_t n = (size_t)(nr * out);
		int rc = zinf_st_read(f, t, (uint64_t)(r0 * out) * es, raw, n * es, err, errlen);
		if (rc)
			return rc;
		to_f32(t->dtype, raw, tmp, n);
		for (int64_t i = 0; i < nr; i++)
			for (int64_t o = 0; o < out; o++)
				dst[o * in + r0 + i] = tmp[i * out + o];
	}
	return 0;
}

/* Buffers for one chunk: raw file bytes and fp32. Transposed tensors with a row longer than
 * CHUNK take one row per chunk. */
static int
chunk_buffers(const zinf_model_layout *lay, void **raw, float **tmp, const char *path,
	      char *err, size_t errlen)
{
	size_t elems = CHUNK;
	for (int i = 0; i < lay->ntensors; i++)
		if (lay->tensors[i].hf_transposed && (size_t)lay->tensors[i].shape[0] > elems)
			elems = (size_t)lay->tensors[i].shape[0];
	*raw = malloc(elems * sizeof(float));
	*tmp = malloc(elems * sizeof(float));
	if (!*raw || !*tmp) {
		free(*raw);
		free(*tmp);
		return FAIL(-ENOMEM, "%s: out of memory for %zu-element buffers", path, elems);
	}
	return 0;
}

/* The files to read: one model.safetensors, or the shards a model.safetensors.index.json
 * names in its weight_map (paths relative to the index's folder). */
typedef struct sources {
	int n;
	zinf_st_file *f;
} sources;

#define INDEX_SUFFIX ".index.json"
#define MAX_SHARDS 4096

static void
close_sources(sources *s)
{
	for (int i = 0; i < s->n; i++)
		zinf_st_close(&s->f[i]);
	free(s->f);
	s->f = NULL;
	s->n = 0;
}

static int
open_index(const char *path, sources *s, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int rc = zinf_read_file(path, 64u << 20, &text, &len, err, errlen);
	if (rc)
		return rc;
	cJSON *root = cJSON_Parse(text);
	free(text);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(map)) {
		cJSON_Delete(root);
		return FAIL(-EINVAL, "%s: weight_map is missing or not an object: not a "
				     "safetensors index",
			    path);
	}
	s->f = calloc(MAX_SHARDS, sizeof(*s->f));
	const char *slash = strrchr(path, '/');
	int dirlen = slash ? (int)(slash - path) : 1;
	const char *dir = slash ? path : ".";
	for (const cJSON *e = map->child; e && !rc && s->f; e = e->next) {
		if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
			rc = FAIL(-EINVAL, "%s: weight_map.%s must name a file in the same folder",
				  path, e->string);
			break;
		}
		bool seen = false;
		char shard[4096];
		snprintf(shard, sizeof(shard), "%.*s/%s", dirlen, dir, e->valuestring);
		for (int i = 0; i < s->n && !seen; i++)
			seen = !strcmp(s->f[i].path, shard);
		if (seen)
			continue;
		if (s->n == MAX_SHARDS)
			rc = FAIL(-EINVAL, "%s: more than %d shards", path, MAX_SHARDS);
		else if (!(rc = zinf_st_open(shard, &s->f[s->n], err, errlen)))
			s->n++;
		else if (err && errlen) { /* say which index named it */
			char why[512];
			snprintf(why, sizeof(why), "%s", err);
			FAIL(rc, "%s: weight_map.%s: %s", path, e->string, why);
		}
	}
	cJSON_Delete(root);
	if (!s->f)
		return FAIL(-ENOMEM, "%s: out of memory", path);
	if (!rc && !s->n)
		rc = FAIL(-EINVAL, "%s: weight_map names no shard", path);
	if (rc)
		close_sources(s);
	return rc;
}

static int
open_sources(const char *path, sources *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	size_t n = strlen(path), k = strlen(INDEX_SUFFIX);
	if (n > k && !strcmp(path + n - k, INDEX_SUFFIX))
		return open_index(path, s, err, errlen);
	s->f = calloc(1, sizeof(*s->f));
	if (!s->f)
		return FAIL(-ENOMEM, "%s: out of memory", path);
	int rc = zinf_st_open(path, &s->f[0], err, errlen);
	if (rc) {
		free(s->f);
		s->f = NULL;
		return rc;
	}
	s->n = 1;
	return 0;
}

int
zinf_model_load_safetensors(const char *path, const zinf_model_config *cfg,
			    const zinf_model_layout *lay, float *params, char *err, size_t errlen)
{
	sources src;
	int rc = open_sources(path, &src, err, errlen);
	if (rc)
		return rc;
	const zinf_st_tensor **found = calloc((size_t)lay->ntensors, sizeof(*found));
	int *in = calloc((size_t)lay->ntensors, sizeof(*in)); /* which file */
	void *raw = NULL;
	float *tmp = NULL;
	if (!found || !in) {
		rc = FAIL(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (int i = 0; i < lay->ntensors; i++) {
		for (int j = 0; j < src.n && !found[i]; j++)
			if ((found[i] = find_tensor(&src.f[j], cfg, lay->tensors[i].hf_name)))
				in[i] = j;
		const char *where = found[i] ? src.f[in[i]].path : path;
		if ((rc = check_tensor(where, cfg, &lay->tensors[i], found[i], err, errlen)))
			goto out;
	}
	for (int j = 0; j < src.n; j++)
		for (int i = 0; i < src.f[j].ntensors; i++) {
			const char *n = src.f[j].tensors[i].name;
			if (ignorable(n, cfg) || is_model_tensor(cfg, lay, n))
				continue;
			rc = FAIL(-EINVAL,
				  "%s: tensor %s is not part of the %s model of this config.json "
				  "(%d layers): is config.json the one these weights were saved "
				  "with?",
				  src.f[j].path, n, cfg->arch == ZINF_ARCH_GPT2 ? "GPT-2" : "LLaMA",
				  cfg->n_layer);
			goto out;
		}
	if ((rc = chunk_buffers(lay, &raw, &tmp, path, err, errlen)))
		goto out;
	zinf_model_zero_padding(lay, params);
	for (int i = 0; i < lay->ntensors && !rc; i++)
		rc = load_tensor(&src.f[in[i]], found[i], &lay->tensors[i], raw, tmp, params, err,
				 errlen);
out:
	free(raw);
	free(tmp);
	free(found);
	free(in);
	close_sources(&src);
	return rc;
}

/* ---- save ---- */

/* the whole vector in memory: each tensor is a view into it */
static int
vector_source(void *ctx, const zinf_tensor_desc *t, const float **data, char *err,
	      size_t errlen)
{
	(void)err;
	(void)errlen;
	*data = (const float *)ctx + t->offset;
	return 0;
}

int
zinf_model_save_safetensors(const char *path, const zinf_model_config *cfg,
			    const zinf_model_layout *lay, const float *params,
			    zinf_save_dtype dtype, char *err, size_t errlen)
{
	return zinf_model_save_safetensors_from(path, cfg, lay, vector_source, (void *)params,
						dtype, err, errlen);
}

int
zinf_model_save_safetensors_from(const char *path, const zinf_model_config *cfg,
				 const zinf_model_layout *lay, zinf_tensor_source source,
				 void *ctx, zinf_save_dtype dtype, char *err, size_t errlen)
{
	zinf_st_dtype d = dtype == ZINF_SAVE_BF16  ? ZINF_ST_BF16
			  : dtype == ZINF_SAVE_F16 ? ZINF_ST_F16
						   : ZINF_ST_F32;
	if (dtype != ZINF_SAVE_F32 && dtype != ZINF_SAVE_BF16 && dtype != ZINF_SAVE_F16)
		return FAIL(-EINVAL, "%s: save dtype %d is not F32 (0), BF16 (1) or F16 (2)", path,
			    (int)dtype);
	(void)cfg; /* the layout already omits a tied lm_head, as HF's save_pretrained does */
	zinf_st_spec *specs = calloc((size_t)lay->ntensors, sizeof(*specs));
	if (!specs)
		return FAIL(-ENOMEM, "%s: out of memory", path);
	for (int i = 0; i < lay->ntensors; i++) {
		const zinf_tensor_desc *t = &lay->tensors[i];
		specs[i].name = t->hf_name;
		specs[i].dtype = d;
		specs[i].ndim = t->ndim;
		specs[i].shape[0] = t->hf_shape[0];
		specs[i].shape[1] = t->hf_shape[1];
	}
	static const char *const meta[] = {"format", "pt", NULL};
	zinf_st_writer w;
	int rc = zinf_st_writer_open(&w, path, specs, lay->ntensors, meta, err, errlen);
	free(specs);
	if (rc)
		return rc;
	void *raw;
	float *tmp;
	if ((rc = chunk_buffers(lay, &raw, &tmp, path, err, errlen))) {
		zinf_st_writer_abort(&w);
		return rc;
	}
	size_t es = zinf_st_dtype_size(d);
	for (int ti = 0; ti < lay->ntensors && !rc; ti++) {
		const zinf_tensor_desc *t = &lay->tensors[ti];
		const float *src = NULL;
		if ((rc = source(ctx, t, &src, err, errlen)))
			break;
		if (!t->hf_transposed) {
			int64_t total = t->hf_rows * t->shape[1];
			for (int64_t at = 0; at < total && !rc; at += (int64_t)CHUNK) {
				size_t n = (size_t)(total - at) < CHUNK ? (size_t)(total - at)
									: CHUNK;
				from_f32(d, src + at, raw, n);
				rc = zinf_st_writer_write(&w, raw, n * es, err, errlen);
			}
			continue;
		}
		int64_t in = t->shape[1], out = t->shape[0];
		int64_t rows_per = (int64_t)CHUNK / out > 0 ? (int64_t)CHUNK / out : 1;
		for (int64_t r0 = 0; r0 < in && !rc; r0 += rows_per) {
			int64_t nr = in - r0 < rows_per ? in - r0 : rows_per;
			for (int64_t i = 0; i < nr; i++)
				for (int64_t o = 0; o < out; o++)
					tmp[i * out + o] = src[o * in + r0 + i];
			from_f32(d, tmp, raw, (size_t)(nr * out));
			rc = zinf_st_writer_write(&w, raw, (size_t)(nr * out) * es, err, errlen);
		}
	}
	free(raw);
	free(tmp);
	if (!rc)
		rc = zinf_st_writer_finish(&w, err, errlen);
	if (rc)
		zinf_st_writer_abort(&w);
	return rc;
}
