/* Latency histogram: log-linear buckets, 8 per power of two (12.5% resolution), from 1 ns to
 * about 17 s; slower pieces land in the last bucket. */
#include "iosched_internal.h"

#define SUB_BITS 3
#define SUB (1u << SUB_BITS)

unsigned
ios_lat_bucket(uint64_t ns)
{
	if (ns < SUB)
		return (unsigned)ns;
	unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* ns >= 8, so e >= 3 */
	unsigned sub = (unsigned)(ns >> (e - SUB_BITS)) & (SUB - 1);
	unsigned b = (e - SUB_BITS + 1) * SUB + sub;
	return b < IOSCHED_LAT_BUCKETS ? b : IOSCHED_LAT_BUCKETS - 1;
}

uint64_t
iosched_lat_bucket_ns(unsigned i)
{
	if (i < SUB)
		return i + 1;
	unsigned e = i / SUB + SUB_BITS - 1, sub = i % SUB;
	return (uint64_t)(SUB + sub + 1) << (e - SUB_BITS);
}

uint64_t
iosched_lat_percentile_ns(const iosched_stats *s, double pct)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++)
		total += s->lat_hist[i];
	if (!total)
		return 0;
	if (pct < 0)
		pct = 0;
	if (pct > 100)
		pct = 100;
	uint64_t rank = (uint64_t)(pct / 100.0 * (double)total + 0.5);
	if (rank < 1)
		rank = 1;
	uint64_t acc = 0;
	for (unsigned i = 0; i < IOSCHED_LAT_BUCKETS; i++) {
		acc += s->lat_hist[i];
		if (acc >= rank)
			return iosched_lat_bucket_ns(i);
	}
	return iosched_lat_bucket_ns(IOSCHED_LAT_BUCKETS - 1);
}
