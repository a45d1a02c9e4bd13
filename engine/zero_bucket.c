/* Bucketed in-place gradient reduction for ZeRO stages 0-2 (zero_bucket.h). */
#include <errno.h>
#include <stdio.h>

#include "zero_bucket.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

int
zinf_zero_bucket_check(zinf_zero_bucket *z)
{
	z->err[0] = 0;
	if (!z->comm || !z->grads || !z->block_offset || z->nblocks < 1 || z->per < 1 ||
	    z->Np < z->per || z->Np % z->per) {
		snprintf(z->err, sizeof(z->err), "bucketed reduction: bad layout (%d blocks, Np "
		         "%lld, per %lld)", z->nblocks, (long long)z->Np, (long long)z->per);
		return -EINVAL;
	}
	if (z->bucket < 1) {
		snprintf(z->err, sizeof(z->err), "zero_optimization.reduce_bucket_size %lld: must "
		         "be at least 1 element (DeepSpeed's default is 5e8)", (long long)z->bucket);
		return -EINVAL;
	}
	for (int b = 0; b < z->nblocks; b++)
		if ((b == 0 ? z->block_offset[0] != 0 : z->block_offset[b] <= z->block_offset[b - 1]) ||
		    z->block_offset[b] >= z->Np) {
			snprintf(z->err, sizeof(z->err), "bucketed reduction: block %d starts at "
			         "%lld, not after block %d and inside %lld elements", b,
			         (long long)z->block_offset[b], b - 1, (long long)z->Np);
			return -EINVAL;
		}
	return 0;
}

void
zinf_zero_bucket_arm(zinf_zero_bucket *z, bool on)
{
	z->armed = on;
	z->hi = on ? z->Np : -1;
	z->err[0] = 0;
}

bool
zinf_zero_bucket_done(const zinf_zero_bucket *z)
{
	return !z->armed && z->hi == 0;
}

static int
comm_err(zinf_zero_bucket *z, int rc, const char *what, int64_t a, int64_t n)
{
	snprintf(z->err, sizeof(z->err), "%s gradients [%lld, %lld): %s", what, (long long)a,
	         (long long)(a + n), zinf_comm_error(z->comm));
	return rc;
}

/* Reduces [lo, hi) in place, in collectives of at most `bucket` elements. The whole vector in
 * one bucket (a model smaller than reduce_bucket_size, stages 1-2) is one reduce-scatter
 * rather than W reduces. */
static int
flush(zinf_zero_bucket *z, int64_t lo, int64_t hi)
{
	int rc = zinf_comm_wait_for_stream(z->comm, z->stream);
	if (rc)
		return comm_err(z, rc, "ordering the reduction of", lo, hi - lo);
	if (!z->all_reduce && lo == 0 && hi == z->Np && z->Np <= z->bucket) {
		int64_t mine = (int64_t)zinf_comm_rank(z->comm) * z->per;
		rc = zinf_comm_reduce_scatter_async(z->comm, z->grads, z->grads + mine,
		                                    (size_t)z->per, ZINF_COMM_F32, ZINF_COMM_SUM);
		if (rc)
			return comm_err(z, rc, "reduce-scattering the", lo, hi - lo);
		z->issued++;
		hi = lo; /* done */
	}
	for (int64_t a = lo; a < hi;) {
		int64_t e = MIN(hi, a + z->bucket);
		if (z->all_reduce) {
			rc = zinf_comm_all_reduce_async(z->comm, z->grads + a, z->grads + a,
			                                (size_t)(e - a), ZINF_COMM_F32, ZINF_COMM_SUM);
			if (rc)
				return comm_err(z, rc, "all-reducing", a, e - a);
			z->issued++;
		} else {
			for (int64_t r = a / z->per; r * z->per < e; r++) {
				int64_t s = MAX(a, r * z->per), t = MIN(e, (r + 1) * z->per);
				rc = zinf_comm_reduce_async(z->comm, z->grads + s, z->grads + s,
				                            (size_t)(t - s), ZINF_COMM_F32, ZINF_COMM_SUM,
				                            (int)r);
				if (rc)
					return comm_err(z, rc, "reducing to their owner the", s, t - s);
				z->issued++;
			}
		}
		a = e;
	}
	if (!z->overlap && (rc = zinf_comm_stream_wait_comm(z->comm, z->stream)))
		return comm_err(z, rc, "waiting for the reduction of", lo, hi - lo);
	z->flushes++;
	return 0;
}

static int
hook_grads_done(void *ctx, int block)
{
	zinf_zero_bucket *z = ctx;
	if (!z->armed)
		return 0;
	if (block < 0 || block >= z->nblocks) {
		snprintf(z->err, sizeof(z->err), "grads_done for block %d of %d", block, z->nblocks);
		return -EINVAL;
	}
	int64_t lo = z->block_offset[block];
	if (lo >= z->hi) { /* model_hooks.h: blocks finish in the order L+1, L, ..., 0, once */
		snprintf(z->err, sizeof(z->err), "grads_done for block %d out of order (its gradients "
		         "start at %lld, the unreduced ones end at %lld)", block, (long long)lo,
		         (long long)z->hi);
		z->armed = false;
		return -EPROTO;
	}
	if (block > 0 && z->hi - lo < z->bucket)
		return 0; /* the bucket is not full yet */
	int rc = flush(z, lo, z->hi);
	if (rc) {
		z->armed = false;
		return rc;
	}
	z->hi = lo;
	if (block == 0) {
		z->armed = false;
		/* what follows the backward reads (or adds to) the reduced gradients */
		if (z->overlap && (rc = zinf_comm_stream_wait_comm(z->comm, z->stream))) {
			z->hi = -1;
			return comm_err(z, rc, "waiting for the reduction of", 0, z->Np);
		}
	}
	return 0;
}

zinf_model_hooks
zinf_zero_bucket_hooks(zinf_zero_bucket *z)
{
	return (zinf_model_hooks){.ctx = z, .grads_done = hook_grads_done};
}
