/* ZeRO partition ownership: which elements of the flat parameter vector each of world_size
 * ranks owns, per stage (see engine.h). Pure index arithmetic; world size 1 runs today, the
 * tests check 2/4/8 ranks so the comm layer can rely on it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

/* Rank r's range of a segment [off, off+n): per = round_up(ceil(n/W), align). */
static zinf_zero_range
seg_range(int64_t off, int64_t n, int world, int rank, int64_t align)
{
	int64_t per = (n + world - 1) / world;
	per = (per + align - 1) / align * align;
	int64_t b = (int64_t)rank * per, e = b + per;
	if (b > n)
		b = n;
	if (e > n)
		e = n;
	return (zinf_zero_range){off + b, off + e};
}

int
zinf_zero_partition_init(zinf_zero_partition *p, int stage, int world_size, int rank,
                         const int64_t *seg_offset, const int64_t *seg_numel, int nseg,
                         int64_t align, char *err, size_t errlen)
{
	*p = (zinf_zero_partition){0};
	if (stage < 0 || stage > 3) {
		snprintf(err, errlen, "zero_optimization.stage: %d is not 0, 1, 2 or 3", stage);
		return -EINVAL;
	}
	if (world_size < 1 || rank < 0 || rank >= world_size) {
		snprintf(err, errlen, "rank %d of world size %d: need 0 <= rank < world_size, "
		         "world_size >= 1", rank, world_size);
		return -EINVAL;
	}
	if (align < 1 || nseg < 1) {
		snprintf(err, errlen, "ZeRO partition: alignment %lld and segment count %d must be "
		         ">= 1", (long long)align, nseg);
		return -EINVAL;
	}
	int64_t total = 0;
	for (int i = 0; i < nseg; i++) {
		if (seg_offset[i] != total || seg_numel[i] < 0) {
			snprintf(err, errlen, "ZeRO partition: segment %d at %lld (+%lld) does not "
			         "follow the previous one ending at %lld", i,
			         (long long)seg_offset[i], (long long)seg_numel[i], (long long)total);
			return -EINVAL;
		}
		total += seg_numel[i];
	}
	p->stage = stage;
	p->world_size = world_size;
	p->rank = rank;
	p->total_numel = total;
	p->align = align;
	p->opt_partitioned = stage >= 1;
	p->grads_partitioned = stage >= 2;
	p->params_partitioned = stage >= 3;

	int n = stage == 3 ? nseg : 1;
	p->ranges = calloc((size_t)n, sizeof(*p->ranges));
	p->seg_offset = calloc((size_t)n, sizeof(int64_t));
	p->seg_numel = calloc((size_t)n, sizeof(int64_t));
	if (!p->ranges || !p->seg_offset || !p->seg_numel) {
		zinf_zero_partition_free(p);
		snprintf(err, errlen, "ZeRO partition: out of memory for %d ranges", n);
		return -ENOMEM;
	}
	p->nseg = n;
	for (int s = 0; s < n; s++) {
		p->seg_offset[s] = stage == 3 ? seg_offset[s] : 0;
		p->seg_numel[s] = stage == 3 ? seg_numel[s] : total;
	}
	if (stage == 0) {
		p->ranges[0] = (zinf_zero_range){0, total};
		p->nranges = total > 0;
		p->owned_numel = p->max_owned_numel = total;
		return 0;
	}
	for (int r = 0; r < world_size; r++) {
		int64_t owned = 0;
		for (int s = 0; s < n; s++) {
			zinf_zero_range q =
			        seg_range(p->seg_offset[s], p->seg_numel[s], world_size, r, align);
			owned += q.end - q.begin;
			if (r == rank && q.end > q.begin) {
				/* adjacent ranges (world size 1) merge into one */
				if (p->nranges && p->ranges[p->nranges - 1].end == q.begin)
					p->ranges[p->nranges - 1].end = q.end;
				else
					p->ranges[p->nranges++] = q;
			}
		}
		if (r == rank)
			p->owned_numel = owned;
		if (owned > p->max_owned_numel)
			p->max_owned_numel = owned;
	}
	return 0;
}

void
zinf_zero_partition_free(zinf_zero_partition *p)
{
	free(p->ranges);
	free(p->seg_offset);
	free(p->seg_numel);
	p->ranges = NULL;
	p->seg_offset = p->seg_numel = NULL;
	p->nseg = 0;
	p->nranges = 0;
}

int
zinf_zero_owner(const zinf_zero_partition *p, int64_t elem)
{
	if (elem < 0 || elem >= p->total_numel)
		return -1;
	if (p->stage == 0)
		return p->rank;
	/* the segment holding elem: binary search over the ordered segments */
	int lo = 0, hi = p->nseg - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if (p->seg_offset[mid] <= elem)
			lo = mid;
		else
			hi = mid - 1;
	}
	/* empty segments share an offset with the next one: move to the one that holds elem */
	while (lo < p->nseg - 1 && elem >= p->seg_offset[lo] + p->seg_numel[lo])
		lo++;
	int64_t per = (p->seg_numel[lo] + p->world_size - 1) / p->world_size;
	per = (per + p->align - 1) / p->align * p->align;
	return (int)((elem - p->seg_offset[lo]) / per);
}

int64_t
zinf_zero_opt_numel(const zinf_zero_partition *p)
{
	return p->opt_partitioned ? p->owned_numel : p->total_numel;
}

int64_t
zinf_zero_grad_numel(const zinf_zero_partition *p)
{
	return p->grads_partitioned ? p->owned_numel : p->total_numel;
}

int64_t
zinf_zero_param_numel(const zinf_zero_partition *p)
{
	return p->params_partitioned ? p->owned_numel : p->total_numel;
}
