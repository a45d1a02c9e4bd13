/* Shared helpers for the benchmarks in bench/ (private to bench/).
 *
 * Parsing: every parser takes the program name ("zinf bench io") and the flag, and on failure
 * prints one line to stderr naming the flag, the value, the limit and what to pass instead,
 * then returns -EINVAL. Callers turn that into exit code 2 (usage error).
 *
 * Sizes: a non-negative integer with an optional suffix, case-insensitive:
 *   K, M, G, T, KiB, MiB, GiB, TiB  binary (powers of 1024, as fio and dd read them);
 *   KB, MB, GB, TB                  decimal (powers of 1000);
 *   B or nothing                    bytes.
 * BENCH_SIZE_HELP is that rule in one line for --help texts.
 *
 * Clocks: bench_now_ns() is CLOCK_MONOTONIC; bench_cpu_s() is the whole process's user+system
 * CPU time (getrusage RUSAGE_SELF, so it includes worker threads).
 */
#ifndef ZINF_BENCH_HARNESS_H
#define ZINF_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "iosched/iosched.h"

#define BENCH_SIZE_HELP                                                                          \
	"sizes: K M G T (also KiB MiB GiB TiB) are binary (1K = 1024), KB MB GB TB are decimal "  \
	"(1KB = 1000), no suffix = bytes"

/* Parses a size into *out within [min, max]. */
int bench_parse_size(const char *prog, const char *flag, const char *val, uint64_t min,
		     uint64_t max, uint64_t *out);
/* Parses a decimal integer (no sign, no suffix) into *out within [min, max]. */
int bench_parse_uint(const char *prog, const char *flag, const char *val, uint64_t min,
		     uint64_t max, uint64_t *out);
/* Matches `val` against the NULL-terminated list `choices`; returns its index, or prints
 * "--flag: 'val' is not one of a|b|c" and returns -EINVAL. */
int bench_parse_choice(const char *prog, const char *flag, const char *val,
		       const char *const *choices);

/* "true" / "false" into *out; -EINVAL (message printed) otherwise. */
int bench_parse_bool(const char *prog, const char *flag, const char *val, bool *out);
/* One of iosched's backend names (auto|io_uring|libaio|psync) into *out. */
int bench_parse_backend(const char *prog, const char *flag, const char *val,
			iosched_backend *out);
/* Appends a non-empty path to paths[*n] when fewer than `max` are there; else -EINVAL with a
 * message naming the flag and the limit. For repeatable flags such as --nvme-path. */
int bench_add_path(const char *prog, const char *flag, const char *val, const char **paths,
		   unsigned *n, unsigned max);

/* Command-line walking for "--flag VALUE" and "--flag=VALUE". If argv[*i] is `flag` (with or
 * without "=VALUE"), sets *val to the value (consuming argv[*i + 1] when needed) and returns 1;
 * returns 0 when argv[*i] is another flag; returns -EINVAL (message printed) when the value is
 * missing. */
int bench_flag_value(const char *prog, int argc, char **argv, int *i, const char *flag,
		     const char **val);

/* "1 GiB", "512 KiB", "4096 B", "1.50 GiB": binary units, for messages. */
const char *bench_fmt_size(uint64_t bytes, char *buf, size_t len);

/* "4K", "1M", "3G", or plain bytes: the shortest form that --size style flags accept back. */
const char *bench_fmt_size_arg(uint64_t bytes, char *buf, size_t len);

uint64_t bench_now_ns(void);
double bench_cpu_s(void);

/* Prints `obj` as one JSON document followed by a newline to stdout and frees it. Returns 0,
 * or -ENOMEM when printing fails. */
int bench_json_emit(cJSON *obj);

#endif
