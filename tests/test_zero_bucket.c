/* engine/zero_bucket: where the bucketed stage 0-2 gradient reduction cuts its buckets and
 * how many collectives it issues, driven through its grads_done hook on a one-rank shm comm
 * (a collective there is a copy, so the gradients must come back unchanged). Layout: 4 blocks
 * at 0, 100, 300, 600 of a 1000-element padded vector (model_hooks.h order: 3, 2, 1, 0).
 * The multi-rank results (same bits as one bucket) are test_zero's `bucket` suite. */
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "zero_bucket.h"

static const int64_t off[4] = {0, 100, 300, 600};
static float g[1000], want[1000];

static zinf_zero_bucket
make(zinf_comm *c, int64_t bucket, bool all_reduce)
{
	return (zinf_zero_bucket){.comm = c, .grads = g, .block_offset = off, .nblocks = 4,
	                          .Np = 1000, .per = 1000, .bucket = bucket,
	                          .all_reduce = all_reduce, .overlap = true};
}

/* One backward: grads_done 3, 2, 1, 0; returns the first hook failure. */
static int
backward(zinf_zero_bucket *z)
{
	zinf_model_hooks h = zinf_zero_bucket_hooks(z);
	for (int b = 3; b >= 0; b--) {
		int rc = h.grads_done(h.ctx, b);
		if (rc)
			return rc;
	}
	return 0;
}

int
main(void)
{
	zinf_comm_opts o;
	zinf_comm_opts_init(&o);
	o.backend = ZINF_COMM_SHM;
	o.rank = 0;
	o.world_size = 1;
	o.local_rank = 0;
	o.shm_slot_bytes = 256; /* smaller than a bucket: shm chunks each collective */
	zinf_comm *c;
	char err[512];
	if (zinf_comm_init(&o, &c, err, sizeof(err))) {
		fprintf(stderr, "comm: %s\n", err);
		return T_EXIT_FAIL;
	}
	for (int i = 0; i < 1000; i++)
		want[i] = g[i] = (float)i * 0.5f - 7.0f;

	/* Settings are checked. */
	zinf_zero_bucket z = make(c, 0, false);
	T_CHECK(zinf_zero_bucket_check(&z) == -EINVAL && strstr(z.err, "reduce_bucket_size 0"),
	        "bucket 0 refused: %s", z.err);
	z = make(c, 250, false);
	z.Np = z.per = 500; /* block 3 would start beyond it */
	T_CHECK(zinf_zero_bucket_check(&z) == -EINVAL && strstr(z.err, "block 3"),
	        "layout beyond Np refused: %s", z.err);

	/* 250-element buckets, stages 1-2: block 3 leaves [600, 1000) = 400 >= 250: reduced as
	 * 250 + 150; block 2 adds [300, 600) = 300: 250 + 50; block 1 leaves 200 < 250 waiting;
	 * block 0 reduces the rest [0, 300): 250 + 50. 3 buckets, 6 collectives. */
	z = make(c, 250, false);
	T_CHECK(zinf_zero_bucket_check(&z) == 0, "check: %s", z.err);
	zinf_zero_bucket_arm(&z, true);
	T_CHECK(!zinf_zero_bucket_done(&z), "not done before the backward");
	T_CHECK(backward(&z) == 0, "backward: %s", z.err);
	T_CHECK(zinf_zero_bucket_done(&z) && z.flushes == 3 && z.issued == 6,
	        "250-element buckets: done %d, %lld buckets, %lld collectives (want 3, 6)",
	        zinf_zero_bucket_done(&z), (long long)z.flushes, (long long)z.issued);
	T_CHECK(!memcmp(g, want, sizeof(g)), "a one-rank reduction changed the gradients");

	/* Not armed (a backward inside an accumulation window at stages 0-1): nothing issued. */
	zinf_zero_bucket_arm(&z, false);
	T_CHECK(backward(&z) == 0 && z.flushes == 3 && z.issued == 6 && !zinf_zero_bucket_done(&z),
	        "unarmed backward issued %lld collectives", (long long)z.issued - 6);

	/* Stage 0 (all-reduce), 400-element buckets: [600, 1000) at block 3; block 2 leaves 300
	 * waiting, block 1 makes [100, 600) = 500: 400 + 100; block 0 [0, 100). */
	z = make(c, 400, true);
	zinf_zero_bucket_arm(&z, true);
	T_CHECK(backward(&z) == 0 && z.flushes == 3 && z.issued == 4,
	        "stage 0, 400-element buckets: %lld buckets, %lld collectives (want 3, 4): %s",
	        (long long)z.flushes, (long long)z.issued, z.err);

	/* A bucket larger than the vector: one reduce-scatter at block 0. */
	z = make(c, 5000, false);
	zinf_zero_bucket_arm(&z, true);
	T_CHECK(backward(&z) == 0 && z.flushes == 1 && z.issued == 1,
	        "one bucket: %lld buckets, %lld collectives (want 1, 1)", (long long)z.flushes,
	        (long long)z.issued);
	T_CHECK(!memcmp(g, want, sizeof(g)), "the reduce-scatter changed the gradients");

	/* Out of order (block 1 then block 2): refused, not reduced twice. */
	z = make(c, 50, false);
	zinf_zero_bucket_arm(&z, true);
	zinf_model_hooks h = zinf_zero_bucket_hooks(&z);
	int r1 = h.grads_done(h.ctx, 1), r2 = h.grads_done(h.ctx, 2);
	T_CHECK(r1 == 0 && r2 == -EPROTO && strstr(z.err, "block 2 out of order"),
	        "block 2 after block 1: %d, %d: %s", r1, r2, z.err);
	T_CHECK(!zinf_zero_bucket_done(&z), "a refused backward counts as done");
	/* The next arm starts clean. */
	zinf_zero_bucket_arm(&z, true);
	T_CHECK(z.err[0] == 0 && backward(&z) == 0 && zinf_zero_bucket_done(&z),
	        "after a refusal, a new backward: %s", z.err);

	zinf_comm_destroy(c);
	return t_result("test_zero_bucket");
}
