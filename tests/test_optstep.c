/* engine/optstep: the offloaded optimizer step with CPU Adam (runs in CI, no GPU needed).
 * Usage: test_optstep <case>; cases: cpu, nvme, fast_init, eio_read, eio_write, bad_opts,
 * gpu_refused, sink_cpu, sink_nvme, sink_eio, sink_refused. */
#include "test_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/optstep.h"

static char *g_dir;

/* N not a multiple of any sub-group size used. */
enum { N = 10007, STEPS = 3 };

typedef struct state {
	float *p, *m, *v;
	void *g;
	uint16_t *p16;
} state;

static float
frand(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(*s >> 11) / (double)(1ull << 53)) * 2.0f - 1.0f;
}

static void
st_alloc(state *s, zinf_dtype gd)
{
	s->p = calloc(N, 4);
	s->m = calloc(N, 4);
	s->v = calloc(N, 4);
	s->g = calloc(N, gd == ZINF_DTYPE_FP32 ? 4 : 2);
	s->p16 = calloc(N, 2);
	if (!s->p || !s->m || !s->v || !s->g || !s->p16)
		abort();
}

static void
st_free(state *s)
{
	free(s->p);
	free(s->m);
	free(s->v);
	free(s->g);
	free(s->p16);
}

static void
init_params(float *p, float *m, float *v)
{
	uint64_t seed = 42;
	for (int i = 0; i < N; i++) {
		p[i] = frand(&seed);
		m[i] = 0.01f * frand(&seed);
		v[i] = 0.001f * fabsf(frand(&seed));
	}
}

/* Gradients of step t (1-based), fp32 or bf16 (truncated fp32). */
static void
make_grads(void *g, zinf_dtype gd, int t)
{
	uint64_t seed = 1000 + (uint64_t)t;
	for (int i = 0; i < N; i++) {
		float x = frand(&seed);
		if (gd == ZINF_DTYPE_FP32) {
			((float *)g)[i] = x;
		} else {
			uint32_t u;
			memcpy(&u, &x, 4);
			((uint16_t *)g)[i] = (uint16_t)(u >> 16);
		}
	}
}

static void
cfg_for(zinf_adam_cfg *cfg, zinf_dtype gd, int t)
{
	zinf_adam_cfg_init(cfg);
	cfg->lr = 1e-2f;
	cfg->step = t;
	cfg->grad_dtype = gd;
}

/* The reference: one zinf_adam_step_cpu over the whole flat arrays. */
static void
reference(state *ref, zinf_dtype gd, int steps)
{
	init_params(ref->p, ref->m, ref->v);
	for (int t = 1; t <= steps; t++) {
		zinf_adam_cfg cfg;
		cfg_for(&cfg, gd, t);
		make_grads(ref->g, gd, t);
		zinf_adam_chunk c = {.param = ref->p,
		                     .m = ref->m,
		                     .v = ref->v,
		                     .grad = ref->g,
		                     .param16 = ref->p16,
		                     .n = N};
		int ret = zinf_adam_step_cpu(&cfg, &c, 1, 0.5f, NULL);
		T_CHECK(ret == 0, "reference step %d: %d", t, ret);
	}
}

static void
base_opts(zinf_optstep_opts *o, zinf_optstep_device dev, const char *const *paths)
{
	zinf_optstep_opts_init(o);
	o->nparams = N;
	o->sub_group_size = 1000;
	o->device = dev;
	o->step_on = ZINF_OPTSTEP_ON_CPU;
	o->device_ptrs = false;
	o->allow_unpinned = true;
	o->aio.quiet = true;
	o->aio.block_size = 64 << 10;
	if (dev == ZINF_OPTSTEP_DEVICE_NVME) {
		o->nvme_paths = paths;
		o->nvme_path_count = 1;
	}
}

/* base_opts with bc buffers of sgs elements; fewer buffers than the full overlap needs run
 * with what fits (both pipeline flags tested). */
static void
sized_opts(zinf_optstep_opts *o, zinf_optstep_device dev, const char *const *paths, unsigned bc,
           uint64_t sgs)
{
	base_opts(o, dev, paths);
	o->buffer_count = bc;
	o->pipeline_read = bc >= 2;
	o->pipeline_write = bc >= 3;
	o->sub_group_size = sgs;
}

static bool
same_bits(const void *a, const void *b, size_t len, const char *what, const char *label)
{
	if (!memcmp(a, b, len))
		return true;
	const unsigned char *x = a, *y = b;
	size_t i = 0;
	while (x[i] == y[i])
		i++;
	T_CHECK(0, "%s: %s differs first at byte %zu", label, what, i);
	return false;
}

static void
run_case(zinf_optstep_device dev, unsigned bc, uint64_t sgs, zinf_dtype gd, bool pin)
{
	const char *paths[1] = {g_dir};
	char label[128];
	snprintf(label, sizeof(label), "%s bc=%u sgs=%llu grad=%s pin=%d",
	         dev == ZINF_OPTSTEP_DEVICE_NVME ? "nvme" : "cpu", bc, (unsigned long long)sgs,
	         zinf_dtype_name(gd), (int)pin);
	state ref, s;
	st_alloc(&ref, gd);
	st_alloc(&s, gd);
	reference(&ref, gd, STEPS);

	zinf_optstep_opts o;
	sized_opts(&o, dev, paths, bc, sgs);
	o.pin_memory = pin;
	zinf_optstep_t *os;
	char err[512];
	int ret = zinf_optstep_create(&o, &os, err, sizeof(err));
	T_CHECK(ret == 0, "%s: create: %s", label, err);
	if (ret)
		goto out;
	uint64_t ng = (N + sgs - 1) / sgs;
	T_CHECK_EQ_I64(zinf_optstep_subgroups(os), ng);
	init_params(s.p, s.m, s.v);
	T_CHECK((ret = zinf_optstep_load(os, s.p, s.m, s.v, 0)) == 0, "%s: load %d %s", label, ret,
	        zinf_optstep_last_error(os));
	for (int t = 1; t <= STEPS; t++) {
		zinf_adam_cfg cfg;
		cfg_for(&cfg, gd, t);
		make_grads(s.g, gd, t);
		ret = zinf_optstep_step(os, s.g, s.p16, &cfg, 0.5f);
		T_CHECK(ret == 0, "%s: step %d: %d %s", label, t, ret, zinf_optstep_last_error(os));
		zinf_optstep_stats st;
		zinf_optstep_get_stats(os, &st);
		T_CHECK(st.peak_resident <= bc, "%s: %u resident > buffer_count", label,
		        st.peak_resident);
		if (dev == ZINF_OPTSTEP_DEVICE_NVME) {
			T_CHECK_EQ_I64(st.bytes[OFFLOAD_TIER_NVME][0], 12ull * N);
			T_CHECK_EQ_I64(st.bytes[OFFLOAD_TIER_NVME][1], 12ull * N);
			T_CHECK_EQ_I64(st.fetches, ng);
			T_CHECK_EQ_I64(st.writebacks, ng);
		} else {
			T_CHECK_EQ_I64(
			        st.bytes[OFFLOAD_TIER_NVME][0] + st.bytes[OFFLOAD_TIER_HOST][0], 0);
		}
	}
	for (uint64_t i = 0; i < ng; i++)
		T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), STEPS);
	memset(s.p, 0xff, N * 4);
	memset(s.m, 0xff, N * 4);
	memset(s.v, 0xff, N * 4);
	T_CHECK((ret = zinf_optstep_read(os, s.p, s.m, s.v)) == 0, "%s: read %d", label, ret);
	same_bits(s.p, ref.p, N * 4, "master", label);
	same_bits(s.m, ref.m, N * 4, "m", label);
	same_bits(s.v, ref.v, N * 4, "v", label);
	same_bits(s.p16, ref.p16, N * 2, "bf16 copy", label);
	zinf_optstep_destroy(os);
out:
	st_free(&ref);
	st_free(&s);
}

static void
test_cpu(void)
{
	run_case(ZINF_OPTSTEP_DEVICE_CPU, 1, 1000, ZINF_DTYPE_FP32, false);
	run_case(ZINF_OPTSTEP_DEVICE_CPU, 4, 1000, ZINF_DTYPE_FP32, true);
	run_case(ZINF_OPTSTEP_DEVICE_CPU, 4, 333, ZINF_DTYPE_BF16, false);
	run_case(ZINF_OPTSTEP_DEVICE_CPU, 2, 100000, ZINF_DTYPE_FP32, false); /* one sub-group */
}

static void
test_nvme(void)
{
	run_case(ZINF_OPTSTEP_DEVICE_NVME, 1, 1000, ZINF_DTYPE_FP32, false);
	run_case(ZINF_OPTSTEP_DEVICE_NVME, 4, 1000, ZINF_DTYPE_FP32, true);
	run_case(ZINF_OPTSTEP_DEVICE_NVME, 4, 333, ZINF_DTYPE_BF16, false);
	run_case(ZINF_OPTSTEP_DEVICE_NVME, 3, 2048, ZINF_DTYPE_FP32, false);
}

/* The states around a failed first step: ref0 before it, ref1 after it (the reference), s
 * for the handle under test with step 1's fp32 gradients in s->g. */
static void
fail_states(state *ref0, state *ref1, state *s)
{
	st_alloc(ref0, ZINF_DTYPE_FP32);
	st_alloc(ref1, ZINF_DTYPE_FP32);
	st_alloc(s, ZINF_DTYPE_FP32);
	init_params(ref0->p, ref0->m, ref0->v);
	reference(ref1, ZINF_DTYPE_FP32, 1);
	make_grads(s->g, ZINF_DTYPE_FP32, 1);
}

static void
fail_states_free(state *ref0, state *ref1, state *s)
{
	st_free(ref0);
	st_free(ref1);
	st_free(s);
}

/* Creates a handle and loads init's state at step 0; NULL (a failed check) on error. */
static zinf_optstep_t *
open_loaded(const zinf_optstep_opts *o, const state *init, const char *label)
{
	zinf_optstep_t *os;
	char err[512];
	int ret = zinf_optstep_create(o, &os, err, sizeof(err));
	T_CHECK(ret == 0, "%s: create: %s", label, err);
	if (ret)
		return NULL;
	ret = zinf_optstep_load(os, init->p, init->m, init->v, 0);
	T_CHECK(ret == 0, "%s: load: %d %s", label, ret, zinf_optstep_last_error(os));
	return os;
}

/* After a failed first step: zinf_optstep_read() gives every sub-group (of sgs elements)
 * wholly its state before (ref0) or after (ref1) the step, as zinf_optstep_subgroup_step()
 * says. */
static void
check_old_or_new(zinf_optstep_t *os, state *s, const state *ref0, const state *ref1,
                 uint64_t sgs, const char *label)
{
	int ret = zinf_optstep_read(os, s->p, s->m, s->v);
	T_CHECK(ret == 0, "%s: read after failure: %d %s", label, ret, zinf_optstep_last_error(os));
	for (uint64_t i = 0; i < zinf_optstep_subgroups(os); i++) {
		uint64_t off = i * sgs, n = off + sgs > N ? N - off : sgs;
		const state *want = zinf_optstep_subgroup_step(os, i) == 1 ? ref1 : ref0;
		char l2[160];
		snprintf(l2, sizeof(l2), "%s sub-group %llu", label, (unsigned long long)i);
		same_bits(s->p + off, want->p + off, n * 4, "master", l2);
		same_bits(s->m + off, want->m + off, n * 4, "m", l2);
		same_bits(s->v + off, want->v + off, n * 4, "v", l2);
	}
}

/* Injected EIO: on read (the fetch of some sub-group) or on write (a write-back). Checks the
 * message, that every sub-group is wholly before or wholly after the step as
 * zinf_optstep_subgroup_step() says, and that reloading the checkpoint and stepping again gives
 * the reference bits. */
static void
eio_case(unsigned ops)
{
	const char *paths[1] = {g_dir};
	const char *label = ops == IOSCHED_OP_READ ? "eio read" : "eio write";
	enum { SGS = 1000, NG = (N + SGS - 1) / SGS };
	state ref0, ref1, s;
	fail_states(&ref0, &ref1, &s);

	/* Each sub-group is one piece (12 KB < block size). Loading writes NG pieces; the step
	 * reads NG and writes NG. Fail the 4th read (sub-group 3's fetch) or the 3rd write of
	 * the step (sub-group 2's write-back). */
	iosched_fault fault = {.nth = ops == IOSCHED_OP_READ ? 4 : NG + 3, .err = EIO, .ops = ops};
	zinf_optstep_opts o;
	base_opts(&o, ZINF_OPTSTEP_DEVICE_NVME, paths);
	o.buffer_count = 2;
	o.pipeline_write = false;
	o.aio.fault = &fault;
	zinf_optstep_t *os = open_loaded(&o, &ref0, label);
	if (!os)
		goto out;
	zinf_adam_cfg cfg;
	cfg_for(&cfg, ZINF_DTYPE_FP32, 1);
	int ret = zinf_optstep_step(os, s.g, s.p16, &cfg, 0.5f);
	T_CHECK(ret == -EIO, "%s: step returned %d, want -EIO", label, ret);
	const char *msg = zinf_optstep_last_error(os);
	const char *chunk = ops == IOSCHED_OP_READ ? "optstep.sg3" : "optstep.sg2";
	const char *what = ops == IOSCHED_OP_READ ? "fetch failed" : "write-back failed";
	T_CHECK(strstr(msg, chunk) && strstr(msg, what) && strstr(msg, "Input/output error"),
	        "%s: message '%s' should name %s, '%s' and the I/O error", label, msg, chunk, what);
	T_CHECK(strstr(msg, "offset"), "%s: message '%s' should name the offset", label, msg);
	int nstepped = 0;
	for (uint64_t i = 0; i < NG; i++) {
		int64_t st = zinf_optstep_subgroup_step(os, i);
		T_CHECK(st == 0 || st == 1, "%s: sub-group %llu step %lld", label,
		        (unsigned long long)i, (long long)st);
		nstepped += st == 1;
	}
	if (ops == IOSCHED_OP_READ) {
		/* sub-group 3's fetch is issued once a slot freed, i.e. after 0 and 1 were
		 * written back; 2 may have been fetched but not stepped (dropped: no new Adam
		 * after a failure); 3 and later are unchanged */
		for (uint64_t i = 3; i < NG; i++)
			T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), 0);
		for (uint64_t i = 0; i < 2; i++)
			T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), 1);
	} else {
		/* 0..2 were stepped (2's write-back failed: its stepped copy stays on the host
		 * and is written by the next read/step); 3 and later were not fetched after */
		for (uint64_t i = 0; i <= 2; i++)
			T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), 1);
		for (uint64_t i = 5; i < NG; i++)
			T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), 0);
	}
	T_CHECK(nstepped < NG, "%s: every sub-group stepped despite the failure", label);
	/* Each sub-group wholly old or wholly new (read retries the failed write-back). */
	check_old_or_new(os, &s, &ref0, &ref1, SGS, label);
	/* Resume from the checkpoint: bit-identical to the reference. */
	T_CHECK(zinf_optstep_load(os, ref0.p, ref0.m, ref0.v, 0) == 0, "%s: reload", label);
	ret = zinf_optstep_step(os, s.g, s.p16, &cfg, 0.5f);
	T_CHECK(ret == 0, "%s: step after reload: %d %s", label, ret, zinf_optstep_last_error(os));
	T_CHECK(zinf_optstep_read(os, s.p, s.m, s.v) == 0, "%s: read", label);
	same_bits(s.p, ref1.p, N * 4, "master after resume", label);
	same_bits(s.m, ref1.m, N * 4, "m after resume", label);
	same_bits(s.v, ref1.v, N * 4, "v after resume", label);
	zinf_optstep_destroy(os);
out:
	fail_states_free(&ref0, &ref1, &s);
}

static void
test_eio_read(void)
{
	eio_case(IOSCHED_OP_READ);
}

static void
test_eio_write(void)
{
	eio_case(IOSCHED_OP_WRITE);
}

static void
expect_refused(const zinf_optstep_opts *o, int want, const char *needle)
{
	zinf_optstep_t *os = (zinf_optstep_t *)1;
	char err[512] = "";
	int ret = zinf_optstep_create(o, &os, err, sizeof(err));
	T_CHECK(ret == want, "create returned %d, want %d (%s)", ret, want, err);
	T_CHECK(os == NULL, "handle set on failure");
	T_CHECK(strstr(err, needle), "message '%s' should contain '%s'", err, needle);
	if (!ret)
		zinf_optstep_destroy(os);
}

static void
test_bad_opts(void)
{
	zinf_optstep_opts o;
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	o.buffer_count = 0;
	expect_refused(&o, -EINVAL, "buffer_count is 0");
	o.buffer_count = 2; /* read-ahead + write-behind need 3 */
	expect_refused(&o, -EINVAL, "need at least 3 buffers");
	o.pipeline_write = false;
	o.buffer_count = 1;
	expect_refused(&o, -EINVAL, "need at least 2 buffers");
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	o.sub_group_size = 0;
	expect_refused(&o, -EINVAL, "sub_group_size is 0");
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	o.nparams = 0;
	expect_refused(&o, -EINVAL, "nparams is 0");
	base_opts(&o, ZINF_OPTSTEP_DEVICE_NVME, NULL);
	expect_refused(&o, -EINVAL, "device nvme needs an nvme_path");
	const char *missing[1] = {"/nonexistent/zinf-optstep"};
	base_opts(&o, ZINF_OPTSTEP_DEVICE_NVME, missing);
	expect_refused(&o, -ENOENT, "/nonexistent/zinf-optstep");
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);

	/* a bad step: bf16 moments are not the offloaded layout */
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	zinf_optstep_t *os;
	char err[512];
	T_CHECK(zinf_optstep_create(&o, &os, err, sizeof(err)) == 0, "create: %s", err);
	if (!os)
		return;
	float *p = calloc(N, 4), *g = calloc(N, 4);
	T_CHECK(zinf_optstep_load(os, p, NULL, NULL, 0) == 0, "load");
	zinf_adam_cfg cfg;
	cfg_for(&cfg, ZINF_DTYPE_FP32, 1);
	cfg.moment_dtype = ZINF_DTYPE_BF16;
	T_CHECK(zinf_optstep_step(os, g, NULL, &cfg, 1.0f) == -EINVAL, "bf16 moments accepted");
	T_CHECK(strstr(zinf_optstep_last_error(os), "moment_dtype"), "message %s",
	        zinf_optstep_last_error(os));
	cfg_for(&cfg, ZINF_DTYPE_FP32, 0);
	T_CHECK(zinf_optstep_step(os, g, NULL, &cfg, 1.0f) == -EINVAL, "step 0 accepted");
	T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, 0), 0);
	free(p);
	free(g);
	zinf_optstep_destroy(os);
}

/* Without a usable GPU, step_on gpu is refused with a message saying why (with a GPU, the
 * test is skipped: test_optstep_gpu covers it). */
static int
test_gpu_refused(void)
{
	char why[256];
	if (offload_gpu_probe(why, sizeof(why)))
		return T_EXIT_SKIP;
	zinf_optstep_opts o;
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	o.step_on = ZINF_OPTSTEP_ON_GPU;
	o.device_ptrs = true;
	expect_refused(&o, -ENODEV, "step_on gpu needs a CUDA device");
	expect_refused(&o, -ENODEV, why);
	o.device_ptrs = false; /* host gradients: still needs the GPU */
	expect_refused(&o, -ENODEV, "step_on gpu needs a CUDA device");
	return 0;
}

/* param16_sink: collects the sub-groups' 16-bit outputs and checks the guarantees of
 * optstep.h (ascending, contiguous from 0, so [0, N) is covered exactly once per step). */
typedef struct sink_ctx {
	uint16_t *out;
	uint64_t next, calls;
	uint64_t fail_at; /* call whose sink fails; UINT64_MAX: none */
	int fail_rc;
} sink_ctx;

static int
sink_cb(void *ctx, uint64_t offset, uint64_t n, const void *p16)
{
	sink_ctx *k = ctx;
	T_CHECK(offset == k->next, "sink called at %llu, expected %llu",
	        (unsigned long long)offset, (unsigned long long)k->next);
	T_CHECK(n > 0 && offset + n <= N, "sink range %llu+%llu outside [0, %d)",
	        (unsigned long long)offset, (unsigned long long)n, N);
	if (k->calls++ == k->fail_at)
		return k->fail_rc;
	if (offset + n <= N)
		memcpy(k->out + offset, p16, n * 2);
	k->next = offset + n;
	return 0;
}

static void
sink_reset(sink_ctx *k)
{
	memset(k->out, 0xff, N * 2);
	k->next = k->calls = 0;
}

/* The same STEPS steps without (param16_out) and with a sink: every step's 16-bit copy and the
 * final state equal bit for bit. */
static void
sink_case(zinf_optstep_device dev, unsigned bc, uint64_t sgs, zinf_dtype gd)
{
	const char *paths[1] = {g_dir};
	char label[128];
	snprintf(label, sizeof(label), "sink %s bc=%u sgs=%llu grad=%s",
	         dev == ZINF_OPTSTEP_DEVICE_NVME ? "nvme" : "cpu", bc, (unsigned long long)sgs,
	         zinf_dtype_name(gd));
	state s[2];
	uint16_t *want = calloc((size_t)STEPS * N, 2);
	sink_ctx k = {.out = malloc(N * 2), .fail_at = UINT64_MAX};
	if (!want || !k.out)
		abort();
	uint64_t ng = (N + sgs - 1) / sgs;
	for (int with = 0; with < 2; with++) {
		st_alloc(&s[with], gd);
		zinf_optstep_opts o;
		sized_opts(&o, dev, paths, bc, sgs);
		if (with) {
			o.param16_sink = sink_cb;
			o.sink_ctx = &k;
		}
		init_params(s[with].p, s[with].m, s[with].v);
		zinf_optstep_t *os = open_loaded(&o, &s[with], label);
		if (!os)
			break;
		for (int t = 1; t <= STEPS; t++) {
			zinf_adam_cfg cfg;
			cfg_for(&cfg, gd, t);
			make_grads(s[with].g, gd, t);
			sink_reset(&k);
			int ret = zinf_optstep_step(os, s[with].g, with ? NULL : s[with].p16, &cfg,
			                            0.5f);
			T_CHECK(ret == 0, "%s: step %d (sink %d): %d %s", label, t, with, ret,
			        zinf_optstep_last_error(os));
			uint16_t *w = want + (size_t)(t - 1) * N;
			if (!with) {
				memcpy(w, s[with].p16, N * 2);
				continue;
			}
			T_CHECK_EQ_I64(k.calls, ng);
			T_CHECK_EQ_I64(k.next, N);
			char l2[160];
			snprintf(l2, sizeof(l2), "%s step %d", label, t);
			same_bits(k.out, w, N * 2, "16-bit copy from the sink", l2);
		}
		T_CHECK(zinf_optstep_read(os, s[with].p, s[with].m, s[with].v) == 0, "%s: read",
		        label);
		zinf_optstep_destroy(os);
	}
	same_bits(s[1].p, s[0].p, N * 4, "master", label);
	same_bits(s[1].m, s[0].m, N * 4, "m", label);
	same_bits(s[1].v, s[0].v, N * 4, "v", label);
	st_free(&s[0]);
	st_free(&s[1]);
	free(want);
	free(k.out);
}

static void
test_sink_cpu(void)
{
	sink_case(ZINF_OPTSTEP_DEVICE_CPU, 4, 1000, ZINF_DTYPE_FP32);
	sink_case(ZINF_OPTSTEP_DEVICE_CPU, 1, 333, ZINF_DTYPE_BF16);
	sink_case(ZINF_OPTSTEP_DEVICE_CPU, 2, 100000, ZINF_DTYPE_FP32); /* one sub-group */
}

static void
test_sink_nvme(void)
{
	sink_case(ZINF_OPTSTEP_DEVICE_NVME, 4, 1000, ZINF_DTYPE_FP32);
	sink_case(ZINF_OPTSTEP_DEVICE_NVME, 1, 333, ZINF_DTYPE_BF16);
	sink_case(ZINF_OPTSTEP_DEVICE_NVME, 3, 2048, ZINF_DTYPE_FP32);
}

/* The sink fails on sub-group K: the step fails naming K and the code, sub-groups 0..K are
 * stepped (K's Adam completed before its sink), later ones unchanged, the sink saw 0..K-1
 * with the reference bits, and zinf_optstep_read returns each sub-group wholly old or new. */
static void
sink_eio_case(zinf_optstep_device dev)
{
	const char *paths[1] = {g_dir};
	const char *label = dev == ZINF_OPTSTEP_DEVICE_NVME ? "sink eio nvme" : "sink eio cpu";
	enum { SGS = 1000, NG = (N + SGS - 1) / SGS, K = 3 };
	state ref0, ref1, s;
	fail_states(&ref0, &ref1, &s);
	sink_ctx k = {.out = malloc(N * 2), .fail_at = K, .fail_rc = -EIO};
	if (!k.out)
		abort();
	zinf_optstep_opts o;
	base_opts(&o, dev, paths);
	o.param16_sink = sink_cb;
	o.sink_ctx = &k;
	zinf_optstep_t *os = open_loaded(&o, &ref0, label);
	if (!os)
		goto out;
	zinf_adam_cfg cfg;
	cfg_for(&cfg, ZINF_DTYPE_FP32, 1);
	sink_reset(&k);
	int ret = zinf_optstep_step(os, s.g, NULL, &cfg, 0.5f);
	T_CHECK(ret == -EIO, "%s: step returned %d, want -EIO", label, ret);
	const char *msg = zinf_optstep_last_error(os);
	T_CHECK(strstr(msg, "sub-group 3 ") && strstr(msg, "param16_sink returned -5"),
	        "%s: message '%s' should name sub-group 3 and the sink's -5", label, msg);
	T_CHECK_EQ_I64(k.calls, K + 1); /* not called again after it failed */
	T_CHECK_EQ_I64(k.next, K * SGS);
	same_bits(k.out, ref1.p16, K * SGS * 2, "16-bit copy before the failure", label);
	for (uint64_t i = 0; i < NG; i++)
		T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, i), i <= K ? 1 : 0);
	check_old_or_new(os, &s, &ref0, &ref1, SGS, label);
	/* the handle stays usable: reload, step with a working sink */
	k.fail_at = UINT64_MAX;
	sink_reset(&k);
	T_CHECK(zinf_optstep_load(os, ref0.p, ref0.m, ref0.v, 0) == 0, "%s: reload", label);
	ret = zinf_optstep_step(os, s.g, NULL, &cfg, 0.5f);
	T_CHECK(ret == 0, "%s: step after reload: %d %s", label, ret, zinf_optstep_last_error(os));
	T_CHECK_EQ_I64(k.next, N);
	same_bits(k.out, ref1.p16, N * 2, "16-bit copy after resume", label);
	zinf_optstep_destroy(os);
out:
	free(k.out);
	fail_states_free(&ref0, &ref1, &s);
}

static void
test_sink_eio(void)
{
	sink_eio_case(ZINF_OPTSTEP_DEVICE_CPU);
	sink_eio_case(ZINF_OPTSTEP_DEVICE_NVME);
}

/* A param16_out next to a sink is refused before anything is stepped. */
static void
test_sink_refused(void)
{
	state s;
	st_alloc(&s, ZINF_DTYPE_FP32);
	sink_ctx k = {.out = malloc(N * 2), .fail_at = UINT64_MAX};
	zinf_optstep_opts o;
	base_opts(&o, ZINF_OPTSTEP_DEVICE_CPU, NULL);
	o.param16_sink = sink_cb;
	o.sink_ctx = &k;
	init_params(s.p, s.m, s.v);
	zinf_optstep_t *os = open_loaded(&o, &s, "sink refused");
	if (!os || !k.out)
		abort();
	zinf_adam_cfg cfg;
	cfg_for(&cfg, ZINF_DTYPE_FP32, 1);
	make_grads(s.g, ZINF_DTYPE_FP32, 1);
	sink_reset(&k);
	int ret = zinf_optstep_step(os, s.g, s.p16, &cfg, 1.0f);
	T_CHECK(ret == -EINVAL, "param16_out with a sink: step returned %d", ret);
	T_CHECK(strstr(zinf_optstep_last_error(os), "param16_out") &&
	                strstr(zinf_optstep_last_error(os), "param16_sink"),
	        "message '%s' should name param16_out and param16_sink",
	        zinf_optstep_last_error(os));
	T_CHECK_EQ_I64(k.calls, 0);
	T_CHECK_EQ_I64(zinf_optstep_subgroup_step(os, 0), 0);
	/* and the same step without param16_out goes through */
	T_CHECK(zinf_optstep_step(os, s.g, NULL, &cfg, 1.0f) == 0, "step: %s",
	        zinf_optstep_last_error(os));
	T_CHECK_EQ_I64(k.next, N);
	zinf_optstep_destroy(os);
	free(k.out);
	st_free(&s);
}

/* fast_init: zinf_optstep_load_fill builds the NVMe state sub-group by sub-group from a fill
 * callback; it must equal loading the arrays (m, v zero), call fill once per sub-group in
 * order, and stop on the callback's error with a message naming the sub-group. */
typedef struct fill_ctx {
	const float *src;
	uint64_t next, calls;
	uint64_t fail_at; /* sub-group whose fill fails; UINT64_MAX: none */
} fill_ctx;

static int
fill_cb(void *ctx, uint64_t offset, uint64_t n, float *dst)
{
	fill_ctx *f = ctx;
	T_CHECK(offset == f->next, "fill called at %llu, expected %llu", (unsigned long long)offset,
	        (unsigned long long)f->next);
	if (f->calls++ == f->fail_at)
		return -EIO;
	memcpy(dst, f->src + offset, n * 4);
	f->next = offset + n;
	return 0;
}

static void
test_fast_init(void)
{
	const char *paths[1] = {g_dir};
	state a, b;
	st_alloc(&a, ZINF_DTYPE_FP32);
	st_alloc(&b, ZINF_DTYPE_FP32);
	init_params(a.p, a.m, a.v);
	zinf_optstep_opts o;
	base_opts(&o, ZINF_OPTSTEP_DEVICE_NVME, paths);
	zinf_optstep_t *os;
	char err[512];
	int ret = zinf_optstep_create(&o, &os, err, sizeof(err));
	T_CHECK(ret == 0, "create: %s", err);
	if (ret)
		goto out;
	fill_ctx f = {.src = a.p, .fail_at = UINT64_MAX};
	ret = zinf_optstep_load_fill(os, fill_cb, &f, 0);
	T_CHECK(ret == 0, "load_fill: %d %s", ret, zinf_optstep_last_error(os));
	T_CHECK_EQ_I64((int64_t)f.calls, (int64_t)zinf_optstep_subgroups(os));
	T_CHECK_EQ_I64((int64_t)f.next, N);
	T_CHECK(zinf_optstep_read(os, b.p, b.m, b.v) == 0, "read: %s", zinf_optstep_last_error(os));
	same_bits(a.p, b.p, N * 4, "master", "fast_init");
	for (int i = 0; i < N; i++)
		if (b.m[i] != 0.0f || b.v[i] != 0.0f) {
			T_CHECK(0, "fast_init: m/v[%d] not zero", i);
			break;
		}
	offload_tier_usage u;
	offload_host_pool_usage(offload_swapper_host_pool(zinf_optstep_swapper(os)), &u);
	T_CHECK(u.peak <= (uint64_t)(o.buffer_count + 1) * 12000 + (64u << 20),
	        "fast_init host peak %llu exceeds O(buffer_count)", (unsigned long long)u.peak);
	f = (fill_ctx){.src = a.p, .fail_at = 3};
	ret = zinf_optstep_load_fill(os, fill_cb, &f, 0);
	T_CHECK(ret == -EIO, "failing fill returned %d", ret);
	T_CHECK(strstr(zinf_optstep_last_error(os), "sub-group 3"), "message: %s",
	        zinf_optstep_last_error(os));
	zinf_optstep_destroy(os);
out:
	st_free(&a);
	st_free(&b);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr,
		        "usage: %s cpu|nvme|fast_init|eio_read|eio_write|bad_opts|gpu_refused|"
		        "sink_cpu|sink_nvme|sink_eio|sink_refused\n",
		        argv[0]);
		return T_EXIT_FAIL;
	}
	g_dir = t_mkdtemp("optstep");
	const char *c = argv[1];
	int rc = 0;
	if (!strcmp(c, "cpu"))
		test_cpu();
	else if (!strcmp(c, "nvme"))
		test_nvme();
	else if (!strcmp(c, "eio_read"))
		test_eio_read();
	else if (!strcmp(c, "eio_write"))
		test_eio_write();
	else if (!strcmp(c, "fast_init"))
		test_fast_init();
	else if (!strcmp(c, "bad_opts"))
		test_bad_opts();
	else if (!strcmp(c, "gpu_refused"))
		rc = test_gpu_refused();
	else if (!strcmp(c, "sink_cpu"))
		test_sink_cpu();
	else if (!strcmp(c, "sink_nvme"))
		test_sink_nvme();
	else if (!strcmp(c, "sink_eio"))
		test_sink_eio();
	else if (!strcmp(c, "sink_refused"))
		test_sink_refused();
	else {
		fprintf(stderr, "unknown case %s\n", c);
		rc = T_EXIT_FAIL;
	}
	rmdir(g_dir);
	free(g_dir);
	if (rc)
		return rc;
	if (t_failures) {
		fprintf(stderr, "%d check(s) failed\n", t_failures);
		return T_EXIT_FAIL;
	}
	return T_EXIT_PASS;
}
