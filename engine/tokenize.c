/* engine/tokenize: byte-level tokens and GPT-2 byte-level BPE.
 *
 * DESIGN. Everything works on raw bytes. vocab.json and merges.txt spell tokens in GPT-2's
 * byte-to-unicode alphabet (each byte is one printable code point); they are mapped back to
 * bytes when loaded, so encoding never builds that alphabet's strings. Every distinct token
 * string (vocab entries, both sides of each merge, each merge's result, the 256 single bytes)
 * is interned once; a merge is a table entry (left symbol, right symbol) -> (rank, result
 * symbol), and a piece of text is merged over symbol numbers. */
#define _GNU_SOURCE
#include "data_internal.h"
#include "engine/data.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define TOKENIZER_FILE_MAX ((size_t)256 << 20)

typedef unsigned long long ull;

int
zinf_tokens_push(zinf_tokens *t, uint32_t id)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		uint32_t *p = realloc(t->ids, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		t->ids = p;
		t->cap = cap;
	}
	t->ids[t->n++] = id;
	return 0;
}

void
zinf_tokens_free(zinf_tokens *t)
{
	free(t->ids);
	t->ids = NULL;
	t->n = t->cap = 0;
}

int
zinf_tokenize_bytes(const void *text, size_t len, zinf_tokens *out)
{
	const uint8_t *s = text;
	for (size_t i = 0; i < len; i++)
		if (zinf_tokens_push(out, s[i]))
			return -ENOMEM;
	return 0;
}

/* ---- UTF-8 and character classes ---- */

#define CP_INVALID 0xffffffffu

/* Decodes the code point at s[pos]; returns its length (an invalid byte is one CP_INVALID). */
static size_t
utf8_at(const uint8_t *s, size_t len, size_t pos, uint32_t *cp)
{
	uint8_t c = s[pos];
	size_t n;
	uint32_t v, min;
	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if ((c & 0xe0) == 0xc0) {
		n = 2, v = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3, v = c & 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4, v = c & 0x07, min = 0x10000;
	} else {
		*cp = CP_INVALID;
		return 1;
	}
	if (pos + n > len) {
		*cp = CP_INVALID;
		return 1;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[pos + i] & 0xc0) != 0x80) {
			*cp = CP_INVALID;
			return 1;
		}
		v = v << 6 | (s[pos + i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) {
		*cp = CP_INVALID;
		return 1;
	}
	*cp = v;
	return n;
}

enum { C_SPACE, C_LETTER, C_NUMBER, C_OTHER };

typedef struct cp_range {
	uint32_t lo, hi;
} cp_range;

static const cp_range spaces[] = {
	{0x85, 0x85},     {0xa0, 0xa0},     {0x1680, 0x1680}, {0x2000, 0x200a},
	{0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f}, {0x3000, 0x3000},
};
static const cp_range numbers[] = {
	{0xb2, 0xb3},     {0xb9, 0xb9},     {0xbc, 0xbe},     {0x660, 0x669},
	{0x6f0, 0x6f9},   {0x966, 0x96f},   {0x9e6, 0x9ef},   {0xe50, 0xe59},
	{0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182},
	{0x2185, 0x2189}, {0x2460, 0x249b}, {0x24ea, 0x24ff}, {0x2776, 0x2793},
	{0xff10, 0xff19},
};
/* Not letters, numbers or spaces (checked after those): punctuation, symbols, marks. */
static const cp_range others[] = {
	{0xa1, 0xa9},       {0xab, 0xb4},       {0xb6, 0xb9},       {0xbb, 0xbf},
	{0xd7, 0xd7},       {0xf7, 0xf7},       {0x300, 0x36f},     {0x37e, 0x37e},
	{0x387, 0x387},     {0x1ab0, 0x1aff},   {0x1dc0, 0x1dff},   {0x2000, 0x206f},
	{0x20a0, 0x20ff},   {0x2190, 0x2bff},   {0x3001, 0x303f},   {0xe000, 0xf8ff},
	{0xfe00, 0xfe0f},   {0xfe20, 0xfe6f},   {0xff01, 0xff0f},   {0xff1a, 0xff20},
	{0xff3b, 0xff40},   {0xff5b, 0xff65},   {0xfff0, 0xffff},   {0x1f000, 0x1faff},
	{0xe0000, 0xe007f},
};

static bool
in_ranges(uint32_t c, const cp_range *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (c >= r[i].lo && c <= r[i].hi)
			return true;
	return false;
}

#define NRANGE(a) (sizeof(a) / sizeof((a)[0]))

static int
cp_class(uint32_t c)
{
	if (c < 0x80) {
		if (c == ' ' || (c >= 9 && c <= 13))
			return C_SPACE;
		if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
			return C_LETTER;
		if (c >= '0' && c <= '9')
			return C_NUMBER;
		return C_OTHER;
	}
	if (c == CP_INVALID)
		return C_OTHER;
	if (in_ranges(c, spaces, NRANGE(spaces)))
		return C_SPACE;
	if (in_ranges(c, numbers, NRANGE(numbers)))
		return C_NUMBER;
	if (in_ranges(c, others, NRANGE(others)))
		return C_OTHER;
	return C_LETTER;
}

static int
class_at(const uint8_t *s, size_t len, size_t pos, size_t *clen)
{
	uint32_t cp;
	*clen = utf8_at(s, len, pos, &cp);
	return cp_class(cp);
}

/* End of the run of class `cls` characters that starts at pos. */
static size_t
run_end(const uint8_t *s, size_t len, size_t pos, int cls)
{
	size_t n;
	while (pos < len && class_at(s, len, pos, &n) == cls)
		pos += n;
	return pos;
}

size_t
zinf_gpt2_pretoken_end(const char *text, size_t len, size_t pos)
{
	const uint8_t *s = (const uint8_t *)text;
	/* 's 't 're 've 'm 'll 'd */
	if (s[pos] == '\'' && pos + 1 < len) {
		uint8_t a = s[pos + 1], b = pos + 2 < len ? s[pos + 2] : 0;
		if (a == 's' || a == 't' || a == 'm' || a == 'd')
			return pos + 2;
		if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
			return pos + 3;
	}
	/* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` */
	size_t p = pos, n;
	if (s[p] == ' ' && p + 1 < len)
		p++;
	int cls = class_at(s, len, p, &n);
	if (cls != C_SPACE)
		return run_end(s, len, p, cls);
	/* `\s+(?!\S)` then `\s+`: a run of spaces before a non-space leaves its last space to
	 * start the next piece, unless the run is that one space. */
	size_t end = run_end(s, len, pos, C_SPACE);
	if (end == len)
		return end;
	size_t last = pos;
	for (size_t q = pos; q < end; q += n) {
		uint32_t cp;
		last = q;
		n = utf8_at(s, len, q, &cp);
	}
	return last > pos ? last : end;
}

/* ---- GPT-2 byte <-> unicode alphabet ---- */

static bool
byte_is_printable(unsigned b)
{
	return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

/* Code point -> byte for the alphabet: printable bytes stand for themselves, the other 68
 * bytes are U+0100.. in byte order. -1 for a code point outside the alphabet. */
static int
alphabet_byte(uint32_t cp)
{
	if (cp < 256)
		return byte_is_printable(cp) ? (int)cp : -1;
	if (cp >= 256 + 68)
		return -1;
	unsigned k = cp - 256; /* the 68 others: 0..32, 127..160, 173 */
	if (k < 33)
		return (int)k;
	if (k < 67)
		return (int)(127 + k - 33);
	return 173;
}

/* Maps an alphabet string to bytes in place (bytes never take more room than their code
 * points). Returns the byte length, or -1 with *bad set to the offending code point. */
static long
alphabet_to_bytes(char *str, size_t len, uint32_t *bad)
{
	const uint8_t *s = (const uint8_t *)str;
	size_t o = 0;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		i += utf8_at(s, len, i, &cp);
		int b = cp == CP_INVALID ? -1 : alphabet_byte(cp);
		if (b < 0) {
			*bad = cp;
			return -1;
		}
		str[o++] = (char)b;
	}
	return (long)o;
}

/* ---- BPE tables ---- */

typedef struct bpe_sym {
	uint32_t off, len; /* bytes in the pool */
	int64_t id;        /* vocab id or -1 */
} bpe_sym;

typedef struct bpe_pair {
	uint64_t key; /* left << 32 | right, +1 so 0 means empty */
	uint32_t rank, merged;
} bpe_pair;

struct zinf_bpe {
	char *pool;
	size_t pool_len, pool_cap;
	bpe_sym *sym;
	uint32_t nsym, sym_cap;
	uint32_t *sym_hash; /* sym index + 1, 0 empty; size sym_hash_cap (power of two) */
	uint32_t sym_hash_cap;
	bpe_pair *pairs;
	uint32_t npairs, pair_cap; /* pair_cap: power of two */
	int64_t *id_sym;           /* vocab id -> sym, -1 for holes */
	uint64_t vocab_size;
	uint32_t byte_sym[256];
	uint32_t *work, *work2; /* symbols of the piece being merged */
	size_t work_cap;
};

static uint64_t
hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h ^ h >> 29;
}

static uint64_t
hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static int
sym_hash_grow(zinf_bpe *b)
{
	uint32_t cap = b->sym_hash_cap ? b->sym_hash_cap * 2 : 1024;
	uint32_t *h = calloc(cap, sizeof(*h));
	if (!h)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->nsym; i++) {
		uint64_t k = hash_bytes(b->pool + b->sym[i].off, b->sym[i].len) & (cap - 1);
		while (h[k])
			k = (k + 1) & (cap - 1);
		h[k] = i + 1;
	}
	free(b->sym_hash);
	b->sym_hash = h;
	b->sym_hash_cap = cap;
	return 0;
}

/* Index of the symbol with these bytes, or UINT32_MAX. */
static uint32_t
sym_find(const zinf_bpe *b, const char *s, size_t n)
{
	if (!b->sym_hash_cap)
		return UINT32_MAX;
	uint32_t mask = b->sym_hash_cap - 1;
	for (uint64_t k = hash_bytes(s, n) & mask;; k = (k + 1) & mask) {
		uint32_t v = b->sym_hash[k];
		if (!v)
			return UINT32_MAX;
		const bpe_sym *y = &b->sym[v - 1];
		if (y->len == n && !memcmp(b->pool + y->off, s, n))
			return v - 1;
	}
}

/* Interns bytes; *out gets the symbol's index. */
static int
sym_intern(zinf_bpe *b, const char *s, size_t n, uint32_t *out)
{
	uint32_t f = sym_find(b, s, n);
	if (f != UINT32_MAX) {
		*out = f;
		return 0;
	}
	if ((uint64_t)(b->nsym + 1) * 2 > b->sym_hash_cap && sym_hash_grow(b))
		return -ENOMEM;
	if (b->nsym == b->sym_cap) {
		uint32_t cap = b->sym_cap ? b->sym_cap * 2 : 1024;
		bpe_sym *p = realloc(b->sym, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		b->sym = p;
		b->sym_cap = cap;
	}
	if (b->pool_len + n > b->pool_cap) {
		size_t cap = b->pool_cap ? b->pool_cap * 2 : 65536;
		while (cap < b->pool_len + n)
			cap *= 2;
		char *p = realloc(b->pool, cap);
		if (!p)
			return -ENOMEM;
		b->pool = p;
		b->pool_cap = cap;
	}
	if (b->pool_len + n > UINT32_MAX)
		return -ENOMEM;
	memcpy(b->pool + b->pool_len, s, n);
	b->sym[b->nsym] = (bpe_sym){.off = (uint32_t)b->pool_len, .len = (uint32_t)n, .id = -1};
	b->pool_len += n;
	uint32_t mask = b->sym_hash_cap - 1;
	uint64_t k = hash_bytes(s, n) & mask;
	while (b->sym_hash[k])
		k = (k + 1) & mask;
	b->sym_hash[k] = b->nsym + 1;
	*out = b->nsym++;
	return 0;
}

static const bpe_pair *
pair_find(const zinf_bpe *b, uint32_t l, uint32_t r)
{
	if (!b->pair_cap)
		return NULL;
	uint64_t key = ((uint64_t)l << 32 | r) + 1;
	uint32_t mask = b->pair_cap - 1;
	for (uint64_t k = hash_u64(key) & mask;; k = (k + 1) & mask) {
		if (!b->pairs[k].key)
			return NULL;
		if (b->pairs[k].key == key)
			return &b->pairs[k];
	}
}

/* Adds a merge unless the pair already has one (the first, lowest rank, wins). */
static int
pair_add(zinf_bpe *b, uint32_t l, uint32_t r, uint32_t rank, uint32_t merged)
{
	if ((uint64_t)(b->npairs + 1) * 2 > b->pair_cap) {
		uint32_t cap = b->pair_cap ? b->pair_cap * 2 : 1024;
		bpe_pair *p = calloc(cap, sizeof(*p));
		if (!p)
			return -ENOMEM;
		for (uint32_t i = 0; i < b->pair_cap; i++) {
			if (!b->pairs[i].key)
				continue;
			uint64_t k = hash_u64(b->pairs[i].key) & (cap - 1);
			while (p[k].key)
				k = (k + 1) & (cap - 1);
			p[k] = b->pairs[i];
		}
		free(b->pairs);
		b->pairs = p;
		b->pair_cap = cap;
	}
	uint64_t key = ((uint64_t)l << 32 | r) + 1;
	uint32_t mask = b->pair_cap - 1;
	uint64_t k = hash_u64(key) & mask;
	while (b->pairs[k].key) {
		if (b->pairs[k].key == key)
			return 0;
		k = (k + 1) & mask;
	}
	b->pairs[k] = (bpe_pair){.key = key, .rank = rank, .merged = merged};
	b->npairs++;
	return 0;
}

void
zinf_bpe_free(zinf_bpe *b)
{
	if (!b)
		return;
	free(b->pool);
	free(b->sym);
	free(b->sym_hash);
	free(b->pairs);
	free(b->id_sym);
	free(b->work);
	free(b->work2);
	free(b);
}

uint64_t
zinf_bpe_vocab_size(const zinf_bpe *b)
{
	return b->vocab_size;
}

int64_t
zinf_bpe_token_id(const zinf_bpe *b, const char *bytes, size_t len)
{
	uint32_t s = sym_find(b, bytes, len);
	return s == UINT32_MAX ? -1 : b->sym[s].id;
}

static int
load_vocab(zinf_bpe *b, const char *path, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int rc = zinf_data_read_file(path, TOKENIZER_FILE_MAX, &text, &len, err, errlen);
	if (rc)
		return rc;
	cJSON *root = cJSON_ParseWithLength(text, len);
	free(text);
	if (!root)
		return FAIL(-EINVAL, "%s: not valid JSON; vocab.json is an object {\"token\": id}",
		            path);
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return FAIL(-EINVAL, "%s: the top level is not an object {\"token\": id}", path);
	}
	int64_t max_id = -1;
	for (cJSON *e = root->child; e; e = e->next) {
		double v = e->valuedouble;
		if (!cJSON_IsNumber(e) || v < 0 || v >= 2147483648.0 || v != (double)(int64_t)v) {
			rc = FAIL(-EINVAL, "%s: token \"%s\": id is not a whole number in [0, 2^31)",
			          path, e->string);
			break;
		}
		if ((int64_t)v > max_id)
			max_id = (int64_t)v;
	}
	if (!rc && max_id < 0)
		rc = FAIL(-EINVAL, "%s: the vocab is empty", path);
	if (!rc) {
		b->vocab_size = (uint64_t)max_id + 1;
		b->id_sym = malloc(b->vocab_size * sizeof(*b->id_sym));
		if (!b->id_sym)
			rc = FAIL(-ENOMEM, "%s: out of memory for %llu ids", path,
			          (ull)b->vocab_size);
		else
			for (uint64_t i = 0; i < b->vocab_size; i++)
				b->id_sym[i] = -1;
	}
	for (cJSON *e = root->child; e && !rc; e = e->next) {
		int64_t id = (int64_t)e->valuedouble;
		size_t kl = strlen(e->string);
		char *key = strdup(e->string);
		if (!key) {
			rc = FAIL(-ENOMEM, "%s: out of memory", path);
			break;
		}
		uint32_t bad = 0;
		long n = alphabet_to_bytes(key, kl, &bad);
		uint32_t s = 0;
		if (n < 0)
			rc = FAIL(-EINVAL,
			          "%s: token \"%s\" (id %lld) has character U+%04X, outside GPT-2's "
			          "byte-to-unicode alphabet; this is not a byte-level BPE vocab",
			          path, e->string, (long long)id, bad);
		else if (sym_intern(b, key, (size_t)n, &s))
			rc = FAIL(-ENOMEM, "%s: out of memory", path);
		else if (b->sym[s].id >= 0)
			rc = FAIL(-EINVAL, "%s: token \"%s\" appears twice (ids %lld and %lld)", path,
			          e->string, (long long)b->sym[s].id, (long long)id);
		else if (b->id_sym[id] >= 0)
			rc = FAIL(-EINVAL, "%s: id %lld is given to two tokens (\"%s\" and another)",
			          path, (long long)id, e->string);
		else {
			b->sym[s].id = id;
			b->id_sym[id] = s;
		}
		free(key);
	}
	cJSON_Delete(root);
	return rc;
}

static int
load_merges(zinf_bpe *b, const char *path, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int rc = zinf_data_read_file(path, TOKENIZER_FILE_MAX, &text, &len, err, errlen);
	if (rc)
		return rc;
	char *line = text, *end = text + len, *cat = NULL;
	size_t cat_cap = 0;
	uint32_t rank = 0;
	for (size_t lineno = 1; line < end && !rc; lineno++) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		char *le = nl ? nl : end;
		char *next = nl ? nl + 1 : end;
		if (le > line && le[-1] == '\r')
			le--;
		size_t ll = (size_t)(le - line);
		if (ll == 0 || (lineno == 1 && ll >= 8 && !memcmp(line, "#version", 8))) {
			line = next;
			continue;
		}
		char *sp = memchr(line, ' ', ll);
		if (!sp || sp == line || sp + 1 == le || memchr(sp + 1, ' ', (size_t)(le - sp - 1))) {
			rc = FAIL(-EINVAL,
			          "%s:%zu: a merge is two tokens separated by one space, got \"%.*s\"",
			          path, lineno, (int)(ll > 80 ? 80 : ll), line);
			break;
		}
		uint32_t bad = 0;
		long nl_ = alphabet_to_bytes(line, (size_t)(sp - line), &bad);
		long nr = nl_ < 0 ? -1 : alphabet_to_bytes(sp + 1, (size_t)(le - sp - 1), &bad);
		if (nl_ < 0 || nr < 0) {
			rc = FAIL(-EINVAL,
			          "%s:%zu: character U+%04X is outside GPT-2's byte-to-unicode "
			          "alphabet",
			          path, lineno, bad);
			break;
		}
		if ((size_t)(nl_ + nr) > cat_cap) {
			cat_cap = (size_t)(nl_ + nr) * 2;
			char *c = realloc(cat, cat_cap);
			if (!c) {
				rc = FAIL(-ENOMEM, "%s: out of memory", path);
				break;
			}
			cat = c;
		}
		memcpy(cat, line, (size_t)nl_);
		memcpy(cat + nl_, sp + 1, (size_t)nr);
		uint32_t l, r, m;
		if (sym_intern(b, line, (size_t)nl_, &l) || sym_intern(b, sp + 1, (size_t)nr, &r) ||
		    sym_intern(b, cat, (size_t)(nl_ + nr), &m) || pair_add(b, l, r, rank++, m))
			rc = FAIL(-ENOMEM, "%s: out of memory", path);
		line = next;
	}
	free(cat);
	free(text);
	return rc;
}

int
zinf_bpe_load(zinf_bpe **out, const char *vocab_path, const char *merges_path, char *err,
              size_t errlen)
{
	*out = NULL;
	zinf_bpe *b = calloc(1, sizeof(*b));
	if (!b)
		return FAIL(-ENOMEM, "%s: out of memory", vocab_path);
	int rc = load_vocab(b, vocab_path, err, errlen);
	if (!rc)
		rc = load_merges(b, merges_path, err, errlen);
	for (unsigned c = 0; c < 256 && !rc; c++) {
		char ch = (char)c;
		if (sym_intern(b, &ch, 1, &b->byte_sym[c]))
			rc = FAIL(-ENOMEM, "%s: out of memory", vocab_path);
	}
	if (rc) {
		zinf_bpe_free(b);
		return rc;
	}
	*out = b;
	return 0;
}

/* Merges one piece's bytes and appends the ids. */
static int
bpe_piece(zinf_bpe *b, const uint8_t *s, size_t n, zinf_tokens *out, char *err, size_t errlen)
{
	if (n > b->work_cap) {
		size_t cap = n < 256 ? 256 : n * 2;
		uint32_t *w = malloc(cap * sizeof(*w)), *w2 = malloc(cap * sizeof(*w2));
		if (!w || !w2) {
			free(w);
			free(w2);
			return FAIL(-ENOMEM, "BPE: out of memory for a %zu-byte piece", n);
		}
		free(b->work);
		free(b->work2);
		b->work = w;
		b->work2 = w2;
		b->work_cap = cap;
	}
	uint32_t *w = b->work;
	size_t cnt = n;
	for (size_t i = 0; i < n; i++)
		w[i] = b->byte_sym[s[i]];
	while (cnt > 1) {
		const bpe_pair *best = NULL;
		for (size_t i = 0; i + 1 < cnt; i++) {
			const bpe_pair *p = pair_find(b, w[i], w[i + 1]);
			if (p && (!best || p->rank < best->rank))
				best = p;
		}
		if (!best)
			break;
		uint32_t l = (uint32_t)((best->key - 1) >> 32), r = (uint32_t)(best->key - 1);
		uint32_t *o = b->work2;
		size_t m = 0;
		for (size_t i = 0; i < cnt;) {
			if (i + 1 < cnt && w[i] == l && w[i + 1] == r) {
				o[m++] = best->merged;
				i += 2;
			} else {
				o[m++] = w[i++];
			}
		}
		b->work2 = w;
		b->work = o;
		w = o;
		cnt = m;
	}
	for (size_t i = 0; i < cnt; i++) {
		const bpe_sym *y = &b->sym[w[i]];
		if (y->id < 0)
			return FAIL(-EINVAL,
			            "BPE: the symbol of bytes \"%.*s\" (%u bytes, from the piece "
			            "\"%.*s\") is not in vocab.json; the vocab and merges files do not "
			            "belong together",
			            (int)(y->len > 40 ? 40 : y->len), b->pool + y->off, y->len,
			            (int)(n > 40 ? 40 : n), (const char *)s);
		if (zinf_tokens_push(out, (uint32_t)y->id))
			return FAIL(-ENOMEM, "BPE: out of memory for tokens");
	}
	return 0;
}

int
zinf_bpe_encode(zinf_bpe *b, const char *text, size_t len, zinf_tokens *out, char *err,
                size_t errlen)
{
	for (size_t pos = 0; pos < len;) {
		size_t end = zinf_gpt2_pretoken_end(text, len, pos);
		int rc = bpe_piece(b, (const uint8_t *)text + pos, end - pos, out, err, errlen);
		if (rc)
			return rc;
		pos = end;
	}
	return 0;
}

int
zinf_bpe_decode(const zinf_bpe *b, const uint32_t *ids, size_t n, char **out, size_t *len,
                char *err, size_t errlen)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] >= b->vocab_size || b->id_sym[ids[i]] < 0)
			return FAIL(-EINVAL, "BPE: id %u at position %zu is not in the vocab (size %llu)",
			            ids[i], i, (ull)b->vocab_size);
		total += b->sym[b->id_sym[ids[i]]].len;
	}
	char *o = malloc(total + 1);
	if (!o)
		return FAIL(-ENOMEM, "BPE: out of memory for %zu bytes", total + 1);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const bpe_sym *y = &b->sym[b->id_sym[ids[i]]];
		memcpy(o + k, b->pool + y->off, y->len);
		k += y->len;
	}
	o[k] = 0;
	*out = o;
	*len = k;
	return 0;
}
