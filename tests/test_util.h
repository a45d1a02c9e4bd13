/* Shared test helpers: checks that print both sides, temp folders, skip (exit 77). */
#ifndef ZINF_TEST_UTIL_H
#define ZINF_TEST_UTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

static int t_failures;

#define T_CHECK(cond, ...)                                                                      \
	do {                                                                                    \
		if (!(cond)) {                                                                  \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                           \
			fprintf(stderr, "\n");                                                  \
			t_failures++;                                                           \
		}                                                                               \
	} while (0)

#define T_CHECK_EQ_I64(a, b)                                                                  \
	do {                                                                                  \
		long long _a = (long long)(a), _b = (long long)(b);                           \
		if (_a != _b) {                                                               \
			fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,   \
				__LINE__, #a, #b, _a, _b);                                    \
			t_failures++;                                                         \
		}                                                                             \
	} while (0)

/* Makes a fresh folder for a test under $ZINF_TEST_DIR, else the current folder (the build
 * tree, usually on a real disk so O_DIRECT works), else /tmp. */
static inline char *
t_mkdtemp(const char *name)
{
	const char *base = getenv("ZINF_TEST_DIR");
	char cwd[4096];
	if (!base)
		base = getcwd(cwd, sizeof(cwd)) ? cwd : "/tmp";
	char *path = malloc(strlen(base) + strlen(name) + 32);
	if (!path)
		abort();
	sprintf(path, "%s/%s-XXXXXX", base, name);
	if (!mkdtemp(path)) {
		sprintf(path, "/tmp/%s-XXXXXX", name);
		if (!mkdtemp(path)) {
			perror("mkdtemp");
			abort();
		}
	}
	return path;
}

/* xorshift64*: deterministic pseudo-random numbers for patterns and offsets. */
static inline uint64_t
t_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static inline void
t_fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *b = buf;
	uint64_t s = seed | 1;
	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			t_rand(&s);
		b[i] = (unsigned char)(s >> (8 * (i % 8)));
	}
}

static inline int
t_result(const char *name)
{
	if (t_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
		return T_EXIT_FAIL;
	}
	printf("%s: ok\n", name);
	return T_EXIT_PASS;
}

#endif
