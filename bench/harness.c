/* Shared benchmark helpers: flag parsing with actionable messages, clocks, JSON output. */
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

typedef struct size_suffix {
	const char *name;
	uint64_t mult;
} size_suffix;

static const size_suffix suffixes[] = {
	{"", 1},
	{"b", 1},
	{"k", 1ull << 10},
	{"kib", 1ull << 10},
	{"kb", 1000ull},
	{"m", 1ull << 20},
	{"mib", 1ull << 20},
	{"mb", 1000000ull},
	{"g", 1ull << 30},
	{"gib", 1ull << 30},
	{"gb", 1000000000ull},
	{"t", 1ull << 40},
	{"tib", 1ull << 40},
	{"tb", 1000000000000ull},
};

const char *
bench_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	unsigned u = 0;
	uint64_t whole = bytes;
	while (whole >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		whole /= 1024;
		u++;
	}
	uint64_t unit = 1ull << (10 * u);
	if (bytes % unit == 0)
		snprintf(buf, len, "%" PRIu64 " %s", whole, units[u]);
	else
		snprintf(buf, len, "%.2f %s", (double)bytes / (double)unit, units[u]);
	return buf;
}

const char *
bench_fmt_size_arg(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	int u = -1;
	uint64_t v = bytes;
	while (v && v % 1024 == 0 && u < 3) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64, bytes);
	else
		snprintf(buf, len, "%" PRIu64 "%c", v, units[u]);
	return buf;
}

/* Parses digits only; -ERANGE on overflow, -EINVAL when not a plain integer. Sets *end. */
static int
parse_digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	*end = p;
	return 0;
}

static int
range_error(const char *prog, const char *flag, const char *val, uint64_t min, uint64_t max,
	    uint64_t v, int is_size)
{
	bool below = v < min;
	uint64_t lim = below ? min : max;
	char human[48] = "", arg[32], tmp[32];
	if (is_size) {
		snprintf(human, sizeof(human), " (%s)", bench_fmt_size(lim, tmp, sizeof(tmp)));
		bench_fmt_size_arg(lim, arg, sizeof(arg));
	} else {
		snprintf(arg, sizeof(arg), "%" PRIu64, lim);
	}
	fprintf(stderr, "%s: %s %s is %s the %s %" PRIu64 "%s: pass %s %s or %s\n", prog, flag, val,
		below ? "below" : "above", below ? "minimum" : "maximum", lim, human, flag, arg,
		below ? "more" : "less");
	return -EINVAL;
}

int
bench_parse_size(const char *prog, const char *flag, const char *val, uint64_t min, uint64_t max,
		 uint64_t *out)
{
	uint64_t n;
	const char *end;
	int rc = parse_digits(val, &n, &end);
	if (rc == -EINVAL) {
		fprintf(stderr, "%s: %s '%s' is not a size: write an integer with an optional unit, "
				"e.g. %s 1G (%s)\n",
			prog, flag, val, flag, BENCH_SIZE_HELP);
		return -EINVAL;
	}
	if (rc == -ERANGE)
		return range_error(prog, flag, val, min, max, UINT64_MAX, 1);
	const char *suf = end;
	while (*suf == ' ')
		suf++;
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		if (strcasecmp(suf, suffixes[i].name))
			continue;
		uint64_t m = suffixes[i].mult;
		if (n != 0 && n > UINT64_MAX / m)
			return range_error(prog, flag, val, min, max, UINT64_MAX, 1);
		uint64_t v = n * m;
		if (v < min || v > max)
			return range_error(prog, flag, val, min, max, v, 1);
		*out = v;
		return 0;
	}
	fprintf(stderr, "%s: %s '%s': unknown unit '%s' (%s), e.g. %s 1G\n", prog, flag, val, suf,
		BENCH_SIZE_HELP, flag);
	return -EINVAL;
}

int
bench_parse_uint(const char *prog, const char *flag, const char *val, uint64_t min, uint64_t max,
		 uint64_t *out)
{
	uint64_t v;
	const char *end;
	int rc = parse_digits(val, &v, &end);
	if (rc == -EINVAL || (rc == 0 && *end != '\0')) {
		fprintf(stderr, "%s: %s '%s' is not a whole number: pass an integer from %" PRIu64
				" to %" PRIu64 "\n",
			prog, flag, val, min, max);
		return -EINVAL;
	}
	if (rc == -ERANGE)
		v = UINT64_MAX;
	if (v < min || v > max)
		return range_error(prog, flag, val, min, max, v, 0);
	*out = v;
	return 0;
}

int
bench_parse_choice(const char *prog, const char *flag, const char *val,
		   const char *const *choices)
{
	for (int i = 0; choices[i]; i++)
		if (!strcmp(val, choices[i]))
			return i;
	fprintf(stderr, "%s: %s '%s' is not one of ", prog, flag, val);
	for (int i = 0; choices[i]; i++)
		fprintf(stderr, "%s%s", i ? "|" : "", choices[i]);
	fprintf(stderr, ": pass one of them, e.g. %s %s\n", flag, choices[0]);
	return -EINVAL;
}

int
bench_flag_value(const char *prog, int argc, char **argv, int *i, const char *flag,
		 const char **val)
{
	const char *arg = argv[*i];
	size_t n = strlen(flag);
	if (strncmp(arg, flag, n))
		return 0;
	if (arg[n] == '=') {
		*val = arg + n + 1;
		return 1;
	}
	if (arg[n] != '\0')
		return 0;
	if (*i + 1 >= argc) {
		fprintf(stderr, "%s: %s needs a value (see --help)\n", prog, flag);
		return -EINVAL;
	}
	*i += 1;
	*val = argv[*i];
	return 1;
}

uint64_t
bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double
bench_cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru))
		return 0.0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int
bench_json_emit(cJSON *obj)
{
	char *s = cJSON_Print(obj);
	cJSON_Delete(obj);
	if (!s)
		return -ENOMEM;
	fputs(s, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	cJSON_free(s);
	return 0;
}

int
bench_parse_bool(const char *prog, const char *flag, const char *val, bool *out)
{
	static const char *const names[] = {"true", "false", NULL};
	int c = bench_parse_choice(prog, flag, val, names);
	if (c < 0)
		return c;
	*out = c == 0;
	return 0;
}

int
bench_parse_backend(const char *prog, const char *flag, const char *val, iosched_backend *out)
{
	static const char *const names[] = {"auto", "io_uring", "libaio", "psync", NULL};
	int c = bench_parse_choice(prog, flag, val, names);
	if (c < 0)
		return c;
	return iosched_backend_parse(val, out);
}

int
bench_add_path(const char *prog, const char *flag, const char *val, const char **paths,
	       unsigned *n, unsigned max)
{
	if (!*val) {
		fprintf(stderr, "%s: %s: empty path; pass a folder\n", prog, flag);
		return -EINVAL;
	}
	if (*n >= max) {
		fprintf(stderr, "%s: %s %s: too many paths (at most %u)\n", prog, flag, val, max);
		return -EINVAL;
	}
	paths[(*n)++] = val;
	return 0;
}
