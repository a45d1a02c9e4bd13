/* engine/data: shards (both widths, every malformed case), the loader (batches, targets, rank
 * offsets, shuffling, resume, epoch wrap, vocab check, validation), tokenizers (byte-level,
 * GPT-2 pre-tokenisation, BPE on the hand-made fixtures/data vocab) and the default corpus. */
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "engine/data.h"

#ifndef ZINF_FIXTURES
#define ZINF_FIXTURES "tests/fixtures/data"
#endif

static char *g_dir;

static char *
path_in(const char *name)
{
	char *p = malloc(strlen(g_dir) + strlen(name) + 2);
	if (!p)
		abort();
	sprintf(p, "%s/%s", g_dir, name);
	return p;
}

static void
write_raw(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, buf, len) != (ssize_t)len) {
		perror(path);
		abort();
	}
	close(fd);
}

static uint64_t
file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) ? UINT64_MAX : (uint64_t)st.st_size;
}

/* A shard named name in the test folder holding tokens start, start+1, ... (mod modulo). */
static char *
make_shard(const char *name, uint64_t n, uint32_t start, uint32_t modulo, int width)
{
	uint32_t *t = malloc((n ? n : 1) * sizeof(*t));
	for (uint64_t i = 0; i < n; i++)
		t[i] = (uint32_t)((start + i) % modulo);
	char *p = path_in(name);
	char err[512];
	int rc = zinf_shard_write(p, t, n, width, err, sizeof(err));
	T_CHECK(rc == 0, "%s", err);
	free(t);
	return p;
}

static void
test_roundtrip(void)
{
	for (int width = 2; width <= 4; width += 2) {
		uint64_t n = 10007;
		uint32_t *t = malloc(n * sizeof(*t));
		uint64_t s = 42 + (uint64_t)width;
		for (uint64_t i = 0; i < n; i++)
			t[i] = (uint32_t)t_rand(&s) & (width == 2 ? 0xffffu : 0xffffffffu);
		t[0] = width == 2 ? 65535 : UINT32_MAX;
		char name[32], err[512];
		snprintf(name, sizeof(name), "rt%d.bin", width);
		char *p = path_in(name);
		T_CHECK(zinf_shard_write(p, t, n, width, err, sizeof(err)) == 0, "%s", err);
		T_CHECK_EQ_I64(file_size(p), ZINF_SHARD_HEADER_BYTES + n * (uint64_t)width);
		uint32_t *back = NULL;
		uint64_t m = 0;
		int w = 0;
		T_CHECK(zinf_shard_read_all(p, &back, &m, &w, err, sizeof(err)) == 0, "%s", err);
		T_CHECK_EQ_I64(m, n);
		T_CHECK_EQ_I64(w, width);
		T_CHECK(back && !memcmp(back, t, n * sizeof(*t)), "width %d tokens differ", width);
		/* the header itself, as llm.c writes it */
		int fd = open(p, O_RDONLY);
		int32_t hdr[256];
		T_CHECK(read(fd, hdr, sizeof(hdr)) == sizeof(hdr), "header read");
		close(fd);
		T_CHECK_EQ_I64(hdr[0], width == 2 ? 20240520 : 20240801);
		T_CHECK_EQ_I64(hdr[1], width == 2 ? 1 : 7);
		T_CHECK_EQ_I64(hdr[2], n);
		T_CHECK_EQ_I64(hdr[3] | hdr[255], 0);
		free(back);
		free(t);
		free(p);
	}
	/* a uint16 shard refuses a token that does not fit, and leaves nothing behind */
	uint32_t big[3] = {1, 65536, 2};
	char err[512];
	char *p = path_in("toobig.bin");
	T_CHECK_EQ_I64(zinf_shard_write(p, big, 3, 2, err, sizeof(err)), -ERANGE);
	T_CHECK(strstr(err, "toobig.bin") && strstr(err, "65536"), "message: %s", err);
	T_CHECK(file_size(p) == UINT64_MAX, "a refused shard was written");
	T_CHECK_EQ_I64(zinf_shard_width_for_vocab(256), 2);
	T_CHECK_EQ_I64(zinf_shard_width_for_vocab(50257), 2);
	T_CHECK_EQ_I64(zinf_shard_width_for_vocab(65536), 2);
	T_CHECK_EQ_I64(zinf_shard_width_for_vocab(65537), 4);
	/* an empty shard is valid */
	free(p);
	p = make_shard("empty.bin", 0, 0, 1, 2);
	uint32_t *back = NULL;
	uint64_t m = 7;
	T_CHECK(zinf_shard_read_all(p, &back, &m, NULL, err, sizeof(err)) == 0, "%s", err);
	T_CHECK_EQ_I64(m, 0);
	free(back);
	free(p);
}

typedef struct bad_case {
	const char *name;
	int32_t magic, version, count;
	size_t ntok_bytes;  /* bytes after the header */
	size_t total;       /* when nonzero: the file is only this long (no full header) */
	const char *expect[3];
} bad_case;

static void
test_malformed(void)
{
	static const bad_case cases[] = {
		{"bad_magic.bin", 12345, 1, 3, 6, 0, {"bad magic 12345", "20240520", "20240801"}},
		{"bad_version.bin", 20240520, 7, 3, 6, 0, {"version 7", "expected version 1", NULL}},
		{"bad_version32.bin", 20240801, 1, 3, 12, 0, {"version 1", "expected version 7", NULL}},
		{"short.bin", 20240520, 1, 10, 6, 0, {"should be 1044 bytes", "it is 1030", "short by 14"}},
		{"long.bin", 20240520, 1, 2, 6, 0, {"should be 1028 bytes", "it is 1030", "long by 2"}},
		{"long32.bin", 20240801, 7, 1, 6, 0, {"should be 1028 bytes", "it is 1030", NULL}},
		{"negative.bin", 20240520, 1, -1, 6, 0, {"count -1", "negative", NULL}},
		{"trunc_header.bin", 20240520, 1, 0, 0, 12, {"truncated header", "12 bytes", "1024"}},
		{"empty_file.bin", 0, 0, 0, 0, 1, {"truncated header", "0 bytes", NULL}},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const bad_case *k = &cases[c];
		uint8_t buf[1024 + 64] = {0};
		int32_t h[3] = {k->magic, k->version, k->count};
		memcpy(buf, h, sizeof(h));
		size_t len = k->total ? (k->total == 1 ? 0 : k->total) : 1024 + k->ntok_bytes;
		char *p = path_in(k->name);
		write_raw(p, buf, len);
		char err[1024] = "";
		uint32_t *tok = NULL;
		uint64_t n;
		int rc = zinf_shard_read_all(p, &tok, &n, NULL, err, sizeof(err));
		T_CHECK(rc == -EINVAL, "%s: rc %d", k->name, rc);
		T_CHECK(!strncmp(err, p, strlen(p)), "%s: message does not start with the file: %s",
		        k->name, err);
		for (int e = 0; e < 3; e++)
			T_CHECK(!k->expect[e] || strstr(err, k->expect[e]), "%s: '%s' not in: %s",
			        k->name, k->expect[e], err);
		free(tok);
		/* the loader refuses it at open, naming it */
		zinf_loader_opts o;
		zinf_loader_opts_init(&o);
		o.glob = p;
		zinf_loader *l = NULL;
		err[0] = 0;
		T_CHECK(zinf_loader_open(&l, &o, err, sizeof(err)) == -EINVAL && !l, "%s opened",
		        k->name);
		T_CHECK(strstr(err, k->name), "loader message does not name %s: %s", k->name, err);
		/* the in-memory parser agrees */
		zinf_shard_info info;
		T_CHECK(zinf_shard_parse_header("mem", buf, len, len, &info, err, sizeof(err)) ==
		                -EINVAL,
		        "%s parsed from memory", k->name);
		free(p);
	}
	/* the shipped fixtures are refused too, the good ones read */
	static const char *const bad[] = {"bad_magic.bin", "bad_version.bin", "short.bin",
	                                  "long.bin", "truncated_header.bin"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char p[1024], err[1024];
		uint32_t *tok = NULL;
		uint64_t n;
		snprintf(p, sizeof(p), "%s/%s", ZINF_FIXTURES, bad[i]);
		T_CHECK(zinf_shard_read_all(p, &tok, &n, NULL, err, sizeof(err)) == -EINVAL,
		        "fixture %s accepted", bad[i]);
		free(tok);
	}
	static const char *const good[] = {"u16.bin", "u32.bin"};
	for (size_t i = 0; i < 2; i++) {
		char p[1024], err[1024];
		uint32_t *tok = NULL;
		uint64_t n = 0;
		int w = 0;
		snprintf(p, sizeof(p), "%s/%s", ZINF_FIXTURES, good[i]);
		T_CHECK(zinf_shard_read_all(p, &tok, &n, &w, err, sizeof(err)) == 0, "%s", err);
		T_CHECK_EQ_I64(n, 40);
		T_CHECK_EQ_I64(w, i ? 4 : 2);
		free(tok);
	}
	char err[512];
	zinf_loader_opts o;
	zinf_loader_opts_init(&o);
	zinf_loader *l;
	o.glob = "/nonexistent-zinf/*.bin";
	T_CHECK_EQ_I64(zinf_loader_open(&l, &o, err, sizeof(err)), -ENOENT);
	T_CHECK(strstr(err, "/nonexistent-zinf/*.bin"), "%s", err);
}

static zinf_loader *
open_loader(const char *glob, int B, int T, int rank, int world, bool shuffle, uint64_t seed,
            uint64_t slurp)
{
	zinf_loader_opts o;
	zinf_loader_opts_init(&o);
	o.glob = glob;
	o.B = B;
	o.T = T;
	o.rank = rank;
	o.world_size = world;
	o.shuffle = shuffle;
	o.seed = seed;
	o.vocab_size = 1u << 31;
	o.slurp_max = slurp;
	zinf_loader *l = NULL;
	char err[1024];
	int rc = zinf_loader_open(&l, &o, err, sizeof(err));
	T_CHECK(rc == 0, "%s", err);
	return l;
}

/* Three shards whose tokens are their global positions + 1 (so a batch names its start):
 * "b" 0..100, "a" 1000..1040, "c" 2000..2003 (too short for a batch), sorted a, b, c. */
static char *
make_position_shards(int width)
{
	char name[64];
	snprintf(name, sizeof(name), "pos%d_b.bin", width);
	free(make_shard(name, 101, 1, 1u << 31, width));
	snprintf(name, sizeof(name), "pos%d_a.bin", width);
	free(make_shard(name, 41, 1001, 1u << 31, width));
	snprintf(name, sizeof(name), "pos%d_c.bin", width);
	free(make_shard(name, 4, 2001, 1u << 31, width));
	snprintf(name, sizeof(name), "pos%d_*.bin", width);
	return path_in(name);
}

static void
test_batches(void)
{
	for (int width = 2; width <= 4; width += 2)
		for (uint64_t slurp = 0; slurp <= 1; slurp++) {
			char *glob = make_position_shards(width);
			int B = 2, T = 5;
			zinf_loader *l = open_loader(glob, B, T, 0, 1, false, 0, slurp);
			if (!l)
				return;
			T_CHECK_EQ_I64(zinf_loader_shard_count(l), 3);
			T_CHECK(strstr(zinf_loader_shard_path(l, 0), "_a.bin"), "sorted: %s",
			        zinf_loader_shard_path(l, 0));
			/* a: (41-1)/10 = 4 batches, b: 100/10 = 10, c: 0 */
			T_CHECK_EQ_I64(zinf_loader_total_batches(l), 14);
			T_CHECK_EQ_I64(zinf_loader_steps_per_epoch(l), 14);
			int32_t in[10], tg[10];
			char err[512];
			for (int epoch = 0; epoch < 2; epoch++)
				for (int k = 0; k < 14; k++) {
					int32_t start = k < 4 ? 1001 + 10 * k : 1 + 10 * (k - 4);
					T_CHECK(zinf_loader_next(l, in, tg, err, sizeof(err)) == 0, "%s",
					        err);
					for (int i = 0; i < B * T; i++) {
						T_CHECK_EQ_I64(in[i], start + i);
						T_CHECK_EQ_I64(tg[i], start + i + 1);
					}
				}
			zinf_loader_state st;
			zinf_loader_get_state(l, &st);
			T_CHECK_EQ_I64(st.epoch, 2);
			T_CHECK_EQ_I64(st.step, 0);
			zinf_loader_close(l);
			free(glob);
		}
}

/* Ranks read disjoint batches that together cover the epoch (less the remainder). */
static void
test_ranks(void)
{
	char *glob = make_position_shards(4);
	for (int shuffle = 0; shuffle <= 1; shuffle++)
		for (int world = 1; world <= 4; world++) {
			/* 14 batches: world 3 takes 4 each and skips 2, world 4 takes 3 each */
			uint64_t steps = 14 / (uint64_t)world;
			int seen[3000] = {0};
			for (int r = 0; r < world; r++) {
				zinf_loader *l = open_loader(glob, 2, 5, r, world, shuffle, 99, 0);
				if (!l)
					return;
				T_CHECK_EQ_I64(zinf_loader_steps_per_epoch(l), steps);
				int32_t in[10], tg[10];
				char err[512];
				int32_t prev_b = -1, ascending = 1, in_b = 0;
				for (uint64_t k = 0; k < steps; k++) {
					T_CHECK(zinf_loader_next(l, in, tg, err, sizeof(err)) == 0, "%s",
					        err);
					if (in[0] >= 0 && in[0] < 3000)
						seen[in[0]]++;
					if (in[0] < 1000) { /* a batch of shard b */
						ascending &= in[0] > prev_b;
						prev_b = in[0];
						in_b++;
					}
				}
				/* one rank sees all 10 batches of b; shuffled, not in file order */
				if (world == 1)
					T_CHECK(in_b == 10 && ascending == !shuffle,
					        "shard b: %d batches, ascending %d, shuffle %d", in_b,
					        ascending, shuffle);
				zinf_loader_close(l);
			}
			int batches = 0, twice = 0;
			for (int i = 0; i < 3000; i++) {
				batches += seen[i] > 0;
				twice += seen[i] > 1;
				bool is_start = (i >= 1001 && i < 1041 && (i - 1001) % 10 == 0) ||
				                (i >= 1 && i < 101 && (i - 1) % 10 == 0);
				T_CHECK(!seen[i] || is_start, "batch start %d is not a batch", i);
			}
			T_CHECK_EQ_I64(twice, 0);
			T_CHECK_EQ_I64(batches, steps * (uint64_t)world);
			if (!shuffle) /* rank r's first batch is batch r of the epoch */
				T_CHECK_EQ_I64(seen[1001 + 10 * (world - 1)], 1);
		}
	free(glob);
	/* more ranks than batches is refused with the numbers */
	zinf_loader_opts o;
	zinf_loader_opts_init(&o);
	char *one = make_shard("one_batch.bin", 11, 0, 256, 2);
	o.glob = one;
	o.B = 2;
	o.T = 5;
	o.world_size = 2;
	zinf_loader *l = NULL;
	char err[512];
	T_CHECK_EQ_I64(zinf_loader_open(&l, &o, err, sizeof(err)), -EINVAL);
	T_CHECK(strstr(err, "1 batch") && strstr(err, "world size 2"), "%s", err);
	free(one);
}

static uint64_t
batch_hash(const int32_t *in, const int32_t *tg, int n)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < n; i++)
		h = (h ^ (uint32_t)in[i] ^ (uint64_t)(uint32_t)tg[i] << 32) * 1099511628211ull;
	return h;
}

static void
test_shuffle_resume(void)
{
	/* 6 shards of varied length, tokens 0..65535 */
	for (int s = 0; s < 6; s++) {
		char name[32];
		snprintf(name, sizeof(name), "shuf_%d.bin", s);
		free(make_shard(name, 200 + 97 * (uint64_t)s, 1000 * (uint32_t)s, 65536, 2));
	}
	char *glob = path_in("shuf_*.bin");
	int B = 3, T = 4, n = B * T;
	int32_t in[12], tg[12];
	char err[1024];
	for (int world = 1; world <= 2; world++) {
		zinf_loader *a = open_loader(glob, B, T, world - 1, world, true, 7, 0);
		zinf_loader *b = open_loader(glob, B, T, world - 1, world, true, 7, 1);
		zinf_loader *c = open_loader(glob, B, T, world - 1, world, true, 8, 0);
		zinf_loader *plain = open_loader(glob, B, T, world - 1, world, false, 7, 0);
		if (!a || !b || !c || !plain)
			return;
		uint64_t steps = zinf_loader_steps_per_epoch(a);
		/* same seed: same sequence (whole-shard reads and pread agree); other seed or no
		 * shuffle: another order; every batch once per epoch */
		int diff_seed = 0, diff_plain = 0;
		uint64_t *ep0 = calloc(steps, sizeof(*ep0)), *ep1 = calloc(steps, sizeof(*ep1));
		for (int e = 0; e < 2; e++)
			for (uint64_t k = 0; k < steps; k++) {
				T_CHECK(zinf_loader_next(a, in, tg, err, sizeof(err)) == 0, "%s", err);
				uint64_t ha = batch_hash(in, tg, n);
				T_CHECK(zinf_loader_next(b, in, tg, err, sizeof(err)) == 0, "%s", err);
				T_CHECK(ha == batch_hash(in, tg, n), "seed 7 differs at %d/%llu", e,
				        (unsigned long long)k);
				T_CHECK(zinf_loader_next(c, in, tg, err, sizeof(err)) == 0, "%s", err);
				diff_seed += ha != batch_hash(in, tg, n);
				T_CHECK(zinf_loader_next(plain, in, tg, err, sizeof(err)) == 0, "%s",
				        err);
				diff_plain += ha != batch_hash(in, tg, n);
				(e ? ep1 : ep0)[k] = ha;
			}
		T_CHECK(diff_seed > (int)steps, "seed 8 matched seed 7 in %d of %llu", diff_seed,
		        (unsigned long long)(2 * steps));
		T_CHECK(diff_plain > (int)steps, "shuffled matched plain too often");
		int epoch_same = 0, dup = 0;
		for (uint64_t i = 0; i < steps; i++) {
			epoch_same += ep0[i] == ep1[i];
			for (uint64_t j = i + 1; j < steps; j++)
				dup += ep0[i] == ep0[j];
		}
		T_CHECK(epoch_same < (int)steps / 2, "epoch 1 repeats epoch 0's order");
		T_CHECK_EQ_I64(dup, 0);
		free(ep0);
		free(ep1);

		/* save mid-epoch, restore into a fresh loader through bytes, compare 2 epochs */
		for (uint64_t k = 0; k < steps / 2 + 1; k++)
			T_CHECK(zinf_loader_next(a, in, tg, err, sizeof(err)) == 0, "%s", err);
		zinf_loader_state st, st2;
		zinf_loader_get_state(a, &st);
		T_CHECK_EQ_I64(st.epoch, 2);
		T_CHECK_EQ_I64(st.step, steps / 2 + 1);
		uint8_t bytes[ZINF_LOADER_STATE_BYTES];
		zinf_loader_state_encode(&st, bytes);
		T_CHECK(zinf_loader_state_decode(bytes, sizeof(bytes), &st2, err, sizeof(err)) == 0,
		        "%s", err);
		zinf_loader *fresh = open_loader(glob, B, T, world - 1, world, true, 12345, 0);
		T_CHECK(zinf_loader_set_state(fresh, &st2, err, sizeof(err)) == 0, "%s", err);
		for (uint64_t k = 0; k < 2 * steps; k++) {
			T_CHECK(zinf_loader_next(a, in, tg, err, sizeof(err)) == 0, "%s", err);
			uint64_t ha = batch_hash(in, tg, n);
			T_CHECK(zinf_loader_next(fresh, in, tg, err, sizeof(err)) == 0, "%s", err);
			T_CHECK(ha == batch_hash(in, tg, n), "resumed loader differs at step %llu",
			        (unsigned long long)k);
		}
		/* reset: back to the first batch */
		zinf_loader_reset(b);
		zinf_loader_reset(c);
		zinf_loader *again = open_loader(glob, B, T, world - 1, world, true, 7, 0);
		T_CHECK(zinf_loader_next(b, in, tg, err, sizeof(err)) == 0, "%s", err);
		uint64_t hb = batch_hash(in, tg, n);
		T_CHECK(zinf_loader_next(again, in, tg, err, sizeof(err)) == 0, "%s", err);
		T_CHECK(hb == batch_hash(in, tg, n), "reset does not restart the sequence");

		/* a state from another loader, or corrupt bytes, is refused */
		T_CHECK(zinf_loader_set_state(plain, &st2, err, sizeof(err)) == -EINVAL,
		        "shuffle mismatch accepted");
		T_CHECK(strstr(err, "shuffle"), "%s", err);
		zinf_loader *otherb = open_loader(glob, B + 1, T, world - 1, world, true, 7, 0);
		T_CHECK(zinf_loader_set_state(otherb, &st2, err, sizeof(err)) == -EINVAL,
		        "B mismatch accepted");
		T_CHECK(strstr(err, "fingerprint"), "%s", err);
		zinf_loader_state bad = st2;
		bad.batch ^= 1;
		T_CHECK(zinf_loader_set_state(fresh, &bad, err, sizeof(err)) == -EINVAL,
		        "inconsistent batch accepted");
		bad = st2;
		bad.world_size = 3;
		T_CHECK(zinf_loader_set_state(fresh, &bad, err, sizeof(err)) == -EINVAL,
		        "world size mismatch accepted");
		T_CHECK(strstr(err, "world size"), "%s", err);
		bad = st2;
		bad.step = steps;
		T_CHECK(zinf_loader_set_state(fresh, &bad, err, sizeof(err)) == -EINVAL,
		        "step past the epoch accepted");
		bytes[33] ^= 4;
		T_CHECK(zinf_loader_state_decode(bytes, sizeof(bytes), &st2, err, sizeof(err)) ==
		                -EINVAL,
		        "corrupt state decoded");
		T_CHECK(strstr(err, "checksum"), "%s", err);
		T_CHECK(zinf_loader_state_decode(bytes, 12, &st2, err, sizeof(err)) == -EINVAL,
		        "short state decoded");
		zinf_loader_close(a);
		zinf_loader_close(b);
		zinf_loader_close(c);
		zinf_loader_close(plain);
		zinf_loader_close(fresh);
		zinf_loader_close(again);
		zinf_loader_close(otherb);
	}
	free(glob);
}

static void
test_vocab_and_val(void)
{
	/* tokens 0..399 (uint16): vocab 256 stops at the first token >= 256 */
	char *p = make_shard("vocab.bin", 400, 0, 1000, 2);
	zinf_loader_opts o;
	zinf_loader_opts_init(&o);
	o.glob = p;
	o.B = 1;
	o.T = 100;
	o.vocab_size = 256;
	zinf_loader *l = NULL;
	char err[1024];
	T_CHECK(zinf_loader_open(&l, &o, err, sizeof(err)) == 0, "%s", err);
	int32_t in[100], tg[100];
	T_CHECK(zinf_loader_next(l, in, tg, err, sizeof(err)) == 0, "%s", err);
	T_CHECK(zinf_loader_next(l, in, tg, err, sizeof(err)) == 0, "%s", err);
	T_CHECK(zinf_loader_next(l, in, tg, err, sizeof(err)) == -EINVAL, "token 256 accepted");
	T_CHECK(strstr(err, "vocab.bin") && strstr(err, "position 256") &&
	                strstr(err, "is 256") && strstr(err, "vocab size 256"),
	        "message: %s", err);
	zinf_loader_close(l);
	free(p);

	/* validation loader over its own glob; reset restarts it */
	free(make_shard("val_0.bin", 50, 500, 65536, 2));
	char *vg = path_in("val_*.bin");
	zinf_loader *v = open_loader(vg, 2, 4, 0, 1, false, 0, 0);
	if (!v)
		return;
	T_CHECK_EQ_I64(zinf_loader_steps_per_epoch(v), 6);
	for (int pass = 0; pass < 2; pass++) {
		for (int k = 0; k < 3; k++) {
			T_CHECK(zinf_loader_next(v, in, tg, err, sizeof(err)) == 0, "%s", err);
			T_CHECK_EQ_I64(in[0], 500 + 8 * k);
		}
		zinf_loader_reset(v);
	}
	zinf_loader_close(v);
	free(vg);
}

/* ---- tokenizers ---- */

static void
check_pieces(const char *text, const char *const *want)
{
	size_t len = strlen(text), pos = 0;
	int i = 0;
	while (pos < len) {
		size_t end = zinf_gpt2_pretoken_end(text, len, pos);
		T_CHECK(end > pos && end <= len, "'%s': no progress at %zu", text, pos);
		if (end <= pos || end > len)
			return;
		T_CHECK(want[i] && strlen(want[i]) == end - pos && !memcmp(want[i], text + pos, end - pos),
		        "'%s': piece %d is '%.*s', want '%s'", text, i, (int)(end - pos), text + pos,
		        want[i] ? want[i] : "(end)");
		if (!want[i])
			return;
		pos = end;
		i++;
	}
	T_CHECK(!want[i], "'%s': %d pieces, want more ('%s')", text, i, want[i]);
}

static void
test_pretokenize(void)
{
	check_pieces("Hello world", (const char *const[]){"Hello", " world", NULL});
	check_pieces("I'm here, they'll see", (const char *const[]){"I", "'m", " here", ",",
	                                                             " they", "'ll", " see", NULL});
	check_pieces("abc   def", (const char *const[]){"abc", "  ", " def", NULL});
	check_pieces("a\n\nb", (const char *const[]){"a", "\n", "\n", "b", NULL});
	check_pieces("year 2024abc", (const char *const[]){"year", " 2024", "abc", NULL});
	check_pieces("end.  ", (const char *const[]){"end", ".", "  ", NULL});
	check_pieces("?!?! x", (const char *const[]){"?!?!", " x", NULL});
	check_pieces("h\xc3\xa9llo w\xc3\xb6rld", (const char *const[]){"h\xc3\xa9llo", " w\xc3\xb6rld", NULL});
	check_pieces("a\xe2\x80\x94" "b", (const char *const[]){"a", "\xe2\x80\x94", "b", NULL});
	check_pieces("x\xff\xfey", (const char *const[]){"x", "\xff\xfe", "y", NULL});
	check_pieces(" \xc2\xb2", (const char *const[]){" \xc2\xb2", NULL}); /* superscript two: N */
	check_pieces("'S 'x", (const char *const[]){"'", "S", " '", "x", NULL});
	/* a combining mark (Mn) ends a letter run; Arabic-Indic digits are \p{N}; CJK is \p{L} */
	check_pieces("cafe\xcc\x81 \xd9\xa1\xd9\xa2 \xe4\xb8\xad\xe6\x96\x87",
	             (const char *const[]){"cafe", "\xcc\x81", " \xd9\xa1\xd9\xa2",
	                                   " \xe4\xb8\xad\xe6\x96\x87", NULL});
}

static void
test_bpe(void)
{
	char err[1024];
	zinf_bpe *b = NULL;
	int rc = zinf_bpe_load(&b, ZINF_FIXTURES "/vocab.json", ZINF_FIXTURES "/merges.txt", err,
	                       sizeof(err));
	T_CHECK(rc == 0, "%s", err);
	if (rc)
		return;
	T_CHECK_EQ_I64(zinf_bpe_vocab_size(b), 22);
	T_CHECK_EQ_I64(zinf_bpe_token_id(b, "<|endoftext|>", 13), 17);
	T_CHECK_EQ_I64(zinf_bpe_token_id(b, " ", 1), 7);
	T_CHECK_EQ_I64(zinf_bpe_token_id(b, "nope", 4), -1);
	static const struct {
		const char *text;
		uint32_t ids[8];
		size_t n;
	} cases[] = {
		{"hello world!\n", {11, 14, 15, 16, 18}, 5},
		{" hello's", {21, 19, 20}, 3},
		{"hello  world", {11, 7, 14, 15}, 4},
		{"held", {8, 15}, 2},
		{"", {0}, 0},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		zinf_tokens t = {0};
		size_t len = strlen(cases[c].text);
		T_CHECK(zinf_bpe_encode(b, cases[c].text, len, &t, err, sizeof(err)) == 0, "%s", err);
		T_CHECK(t.n == cases[c].n && (!t.n || !memcmp(t.ids, cases[c].ids, t.n * 4)),
		        "'%s': got %zu ids (first %u)", cases[c].text, t.n, t.n ? t.ids[0] : 0);
		char *back = NULL;
		size_t blen = 0;
		T_CHECK(zinf_bpe_decode(b, t.ids, t.n, &back, &blen, err, sizeof(err)) == 0, "%s",
		        err);
		T_CHECK(back && blen == len && !memcmp(back, cases[c].text, len), "decode of '%s'",
		        cases[c].text);
		free(back);
		zinf_tokens_free(&t);
	}
	/* a byte with no token is an error naming it; an unknown id too */
	zinf_tokens t = {0};
	T_CHECK(zinf_bpe_encode(b, "hex", 3, &t, err, sizeof(err)) == -EINVAL, "x encoded");
	T_CHECK(strstr(err, "\"x\"") && strstr(err, "vocab.json"), "%s", err);
	zinf_tokens_free(&t);
	uint32_t bad_id = 22;
	char *out = NULL;
	size_t olen;
	T_CHECK(zinf_bpe_decode(b, &bad_id, 1, &out, &olen, err, sizeof(err)) == -EINVAL,
	        "id 22 decoded");
	zinf_bpe_free(b);

	/* broken tokenizer files are refused with the file named */
	char *v = path_in("bad_vocab.json"), *m = path_in("bad_merges.txt");
	write_raw(v, "{\"a\": 0, \"b\": \"one\"}", 20);
	write_raw(m, "#version: 0.2\na b\n", 18);
	T_CHECK(zinf_bpe_load(&b, v, m, err, sizeof(err)) == -EINVAL, "string id accepted");
	T_CHECK(strstr(err, "bad_vocab.json") && strstr(err, "\"b\""), "%s", err);
	write_raw(v, "{\"a\": 0, \"b\": 1}", 16);
	write_raw(m, "#version: 0.2\na b c\n", 20);
	T_CHECK(zinf_bpe_load(&b, v, m, err, sizeof(err)) == -EINVAL, "3-field merge accepted");
	T_CHECK(strstr(err, "bad_merges.txt:2"), "%s", err);
	write_raw(v, "{\"a b\": 0}", 10);
	T_CHECK(zinf_bpe_load(&b, v, m, err, sizeof(err)) == -EINVAL, "raw space accepted");
	T_CHECK(strstr(err, "U+0020"), "%s", err);
	free(v);
	free(m);
}

static void
test_bytes(void)
{
	uint8_t text[512];
	for (int i = 0; i < 512; i++)
		text[i] = (uint8_t)(i * 37 + 11);
	zinf_tokens t = {0};
	T_CHECK(zinf_tokenize_bytes(text, sizeof(text), &t) == 0, "push");
	T_CHECK_EQ_I64(t.n, sizeof(text));
	char *p = path_in("bytes.bin");
	char err[512];
	T_CHECK(zinf_shard_write(p, t.ids, t.n, zinf_shard_width_for_vocab(ZINF_BYTE_VOCAB), err,
	                         sizeof(err)) == 0,
	        "%s", err);
	uint32_t *back = NULL;
	uint64_t n = 0;
	T_CHECK(zinf_shard_read_all(p, &back, &n, NULL, err, sizeof(err)) == 0, "%s", err);
	T_CHECK_EQ_I64(n, sizeof(text));
	for (uint64_t i = 0; back && i < n; i++)
		if (back[i] != text[i]) {
			T_CHECK(back[i] == text[i], "byte %llu: %u != %u", (unsigned long long)i,
			        back[i], text[i]);
			break;
		}
	free(back);
	free(p);
	zinf_tokens_free(&t);
}

static void
test_default_corpus(void)
{
	char *a = NULL, *b = NULL, *c = NULL;
	size_t la = 0, lb = 0, lc = 0;
	T_CHECK(zinf_data_default_corpus(ZINF_DEFAULT_CORPUS_SEED, 0, &a, &la) == 0, "corpus");
	T_CHECK(zinf_data_default_corpus(ZINF_DEFAULT_CORPUS_SEED, 0, &b, &lb) == 0, "corpus");
	T_CHECK(zinf_data_default_corpus(1, 0, &c, &lc) == 0, "corpus");
	if (!a || !b || !c)
		return;
	T_CHECK(la == lb && !memcmp(a, b, la), "not deterministic");
	T_CHECK(la >= ZINF_DEFAULT_CORPUS_BYTES && la < ZINF_DEFAULT_CORPUS_BYTES + 1024,
	        "length %zu", la);
	T_CHECK(lc != la || memcmp(a, c, la), "seed changes nothing");
	T_CHECK(strlen(a) == la, "NUL inside the corpus");
	T_CHECK(!strncmp(a, "Chapter 1\n\n", 11), "starts: %.20s", a);
	int bad = 0, words = 0, distinct[256] = {0};
	for (size_t i = 0; i < la; i++) {
		unsigned char ch = (unsigned char)a[i];
		bad += !(ch == '\n' || (ch >= 32 && ch < 127));
		words += ch == ' ';
		distinct[ch] = 1;
	}
	int nd = 0;
	for (int i = 0; i < 256; i++)
		nd += distinct[i];
	T_CHECK_EQ_I64(bad, 0);
	T_CHECK(words > (int)(la / 10), "only %d spaces", words);
	T_CHECK(nd >= 40, "only %d distinct bytes", nd);
	T_CHECK(strstr(a, "\"Where is the ") && strstr(a, "Chapter 5"), "templates missing");
	free(a);
	free(b);
	free(c);
	/* a small one stops at the sentence that reaches the size */
	T_CHECK(zinf_data_default_corpus(3, 100, &a, &la) == 0 && la >= 100 && la < 400,
	        "small corpus %zu", la);
	free(a);

	char *tr = path_in("default_train.bin"), *va = path_in("default_val.bin"), err[512];
	T_CHECK(zinf_data_write_default_shards(tr, va, 0.1, err, sizeof(err)) == 0, "%s", err);
	uint64_t ntr = (file_size(tr) - 1024) / 2, nva = (file_size(va) - 1024) / 2;
	T_CHECK(ntr + nva >= ZINF_DEFAULT_CORPUS_BYTES && nva * 9 <= ntr + 1 && nva * 11 >= ntr,
	        "split %llu / %llu", (unsigned long long)ntr, (unsigned long long)nva);
	zinf_loader *l = open_loader(tr, 4, 64, 0, 1, true, 1, 0);
	int32_t in[256], tg[256];
	T_CHECK(l && zinf_loader_next(l, in, tg, err, sizeof(err)) == 0, "%s", err);
	zinf_loader_close(l);
	free(tr);
	free(va);
}

int
main(void)
{
	g_dir = t_mkdtemp("test_data");
	test_roundtrip();
	test_malformed();
	test_batches();
	test_ranks();
	test_shuffle_resume();
	test_vocab_and_val();
	test_pretokenize();
	test_bpe();
	test_bytes();
	test_default_corpus();
	if (!t_failures) {
		char cmd[4200];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
		if (system(cmd))
			fprintf(stderr, "could not remove %s\n", g_dir);
	}
	free(g_dir);
	return t_result("test_data");
}
