/* Tests of the training engine (engine/engine.h): LR schedules against hand-computed DeepSpeed
 * values, the loss scaler's sequence, ZeRO partition math for 1/2/4/8 ranks, checkpoint
 * folders, and training on a tiny CPU model: loss falls, accumulation equivalence, fp16
 * overflow skip, bit-exact resume, offload none/cpu/nvme bit-identical, injected I/O error.
 * Usage: test_engine <case>; cases: sched, scaler, partition, ckpt_io, loss_falls, accum,
 * fp16_overflow, resume, offload, eio. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "test_util.h"

static void
load_cfg(zinf_config *cfg, const char *json)
{
	char err[1024];
	zinf_config_init_defaults(cfg);
	int rc = zinf_config_load_string("test.json", json, NULL, cfg, err, sizeof(err));
	if (!rc)
		rc = zinf_config_resolve(cfg, 1, 64, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "config: %s\n", err);
		exit(T_EXIT_FAIL);
	}
}

static void
check_lr(const zinf_lr_schedule *s, int64_t it, double want, const char *what)
{
	double got = zinf_lr_schedule_at(s, it);
	T_CHECK(fabs(got - want) <= 1e-12 * fmax(1.0, fabs(want)), "%s: lr(%lld) = %.17g, want %.17g",
	        what, (long long)it, got, want);
}

static void
test_sched(void)
{
	char err[512];
	zinf_config cfg;
	zinf_lr_schedule s;

	/* WarmupLR, log warmup over 10 steps from 0 to 1e-3: lr = 1e-3 * ln(i+1) / ln(10) */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_min_lr\": 0,"
	               "\"warmup_max_lr\": 0.001, \"warmup_num_steps\": 10}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, -1, 0.0, "WarmupLR before start (warmup_min_lr)");
	check_lr(&s, 0, 0.0, "WarmupLR log");
	check_lr(&s, 4, 6.989700043360187e-4, "WarmupLR log"); /* log10(5) * 1e-3 */
	check_lr(&s, 9, 1e-3, "WarmupLR log");
	check_lr(&s, 10, 1e-3, "WarmupLR after warmup");
	check_lr(&s, 1000, 1e-3, "WarmupLR after warmup");
	/* DeepSpeed's step(): iteration -1 -> 0 -> 1 */
	T_CHECK_EQ_I64(s.last_batch_iteration, -1);
	zinf_lr_schedule_step(&s);
	double l1 = zinf_lr_schedule_step(&s);
	T_CHECK(fabs(l1 - 1e-3 * log(2.0) / log(10.0)) < 1e-15, "step -> iteration 1: %.17g", l1);
	T_CHECK_EQ_I64(s.last_batch_iteration, 1);

	/* linear warmup, min 1e-4 */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_min_lr\": "
	               "0.0001, \"warmup_max_lr\": 0.0011, \"warmup_num_steps\": 10, "
	               "\"warmup_type\": \"linear\"}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, -1, 1e-4, "WarmupLR linear before start");
	check_lr(&s, 4, 5e-4, "WarmupLR linear"); /* 1e-4 + 1e-3 * 4/10 */
	check_lr(&s, 10, 1.1e-3, "WarmupLR linear end");

	/* warmup_num_steps 1 counts as 2 (DeepSpeed's max(2, n)) */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"warmup_max_lr\": 0.5,"
	               "\"warmup_num_steps\": 1}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, 0, 0.0, "WarmupLR w=max(2,1)");
	check_lr(&s, 1, 0.5, "WarmupLR w=max(2,1)");

	/* WarmupDecayLR: linear warmup 10, then (110 - i) / 100 */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\":"
	               "0, \"warmup_max_lr\": 0.01, \"warmup_num_steps\": 10, \"total_num_steps\": "
	               "110, \"warmup_type\": \"linear\"}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, 5, 0.005, "WarmupDecayLR warmup");
	check_lr(&s, 10, 0.01, "WarmupDecayLR decay start");
	check_lr(&s, 60, 0.005, "WarmupDecayLR half");
	check_lr(&s, 110, 0.0, "WarmupDecayLR end");
	check_lr(&s, 200, 0.0, "WarmupDecayLR past the end (clamped at 0)");

	/* WarmupDecayLR without total_num_steps (the config loader refuses it too): refused
	 * naming the key */
	cfg.total_num_steps = 0;
	int rc = zinf_lr_schedule_init(&s, &cfg, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "total_num_steps") && strstr(err, "--max_steps"),
	        "rc %d: %s", rc, err);

	/* WarmupCosineLR: optimizer lr 0.1, linear warmup 10 from ratio 0.1, cos_min_ratio 0.01,
	 * total 110 */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.1}},"
	               "\"scheduler\": {\"type\": \"WarmupCosineLR\", \"params\": {"
	               "\"warmup_min_ratio\": 0.1, \"cos_min_ratio\": 0.01, \"warmup_num_steps\": 10,"
	               "\"total_num_steps\": 110, \"warmup_type\": \"linear\"}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, -1, 0.0, "WarmupCosineLR before start (0, as DeepSpeed)");
	check_lr(&s, 0, 0.01, "WarmupCosineLR warmup start (0.1 * 0.1)");
	check_lr(&s, 5, 0.055, "WarmupCosineLR warmup (0.1 * (0.1 + 0.5 * 0.9))");
	/* i = 10: (1 + cos(pi / 100)) / 2 = 0.99975328..., ratio 0.01 + 0.99 * that */
	check_lr(&s, 10, 0.1 * (0.01 + 0.99 * 0.9997532801828658), "WarmupCosineLR first decay");
	check_lr(&s, 59, 0.0505, "WarmupCosineLR half (0.1 * (0.01 + 0.99 * 0.5))");
	check_lr(&s, 109, 0.001, "WarmupCosineLR end (0.1 * 0.01)");

	/* no scheduler: the optimizer's lr */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"optimizer\": {\"type\": \"Adam\", \"params\": {\"lr\": 0.003}}}");
	T_CHECK(zinf_lr_schedule_init(&s, &cfg, err, sizeof(err)) == 0, "%s", err);
	check_lr(&s, -1, 0.003, "none");
	check_lr(&s, 77, 0.003, "none");
}

static void
test_scaler(void)
{
	zinf_config cfg;
	zinf_loss_scaler ls;
	char msg[256];
	/* power 4 (16), window 2, hysteresis 2, min 1 */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 4,"
	               "\"loss_scale_window\": 2, \"hysteresis\": 2, \"min_loss_scale\": 1}}");
	zinf_loss_scaler_init(&ls, &cfg);
	T_CHECK(ls.dynamic && ls.cur_scale == 16.0, "init %g", ls.cur_scale);
	/* iteration 0: overflow, hysteresis 2 -> 1, scale kept */
	T_CHECK(zinf_loss_scaler_update(&ls, true, msg, sizeof(msg)) == 0, "%s", msg);
	T_CHECK(ls.cur_scale == 16.0 && ls.cur_hysteresis == 1, "it0: %g %lld", ls.cur_scale,
	        (long long)ls.cur_hysteresis);
	T_CHECK(strstr(msg, "hysteresis 2 -> 1") != NULL, "msg '%s'", msg);
	/* iteration 1: overflow, scale 16 -> 8, the message gives both */
	T_CHECK(zinf_loss_scaler_update(&ls, true, msg, sizeof(msg)) == 0, "%s", msg);
	T_CHECK(ls.cur_scale == 8.0, "it1: %g", ls.cur_scale);
	T_CHECK(strstr(msg, "16 -> 8") != NULL, "msg '%s'", msg);
	/* iteration 2: (2 - 1) % 2 != 0: kept; iteration 3: (3 - 1) % 2 == 0: doubled, hysteresis
	 * restored */
	zinf_loss_scaler_update(&ls, false, msg, sizeof(msg));
	T_CHECK(ls.cur_scale == 8.0 && msg[0] == '\0', "it2: %g '%s'", ls.cur_scale, msg);
	zinf_loss_scaler_update(&ls, false, msg, sizeof(msg));
	T_CHECK(ls.cur_scale == 16.0 && ls.cur_hysteresis == 2, "it3: %g %lld", ls.cur_scale,
	        (long long)ls.cur_hysteresis);
	zinf_loss_scaler_update(&ls, false, msg, sizeof(msg));
	T_CHECK(ls.cur_scale == 16.0, "it4: %g", ls.cur_scale);
	zinf_loss_scaler_update(&ls, false, msg, sizeof(msg));
	T_CHECK(ls.cur_scale == 32.0, "it5: %g", ls.cur_scale);
	T_CHECK_EQ_I64(ls.cur_iter, 6);
	T_CHECK_EQ_I64(ls.last_overflow_iter, 1);

	/* consecutive_hysteresis: a good step restores hysteresis at once */
	zinf_loss_scaler_init(&ls, &cfg);
	ls.consecutive_hysteresis = true;
	zinf_loss_scaler_update(&ls, true, NULL, 0);
	T_CHECK_EQ_I64(ls.cur_hysteresis, 1);
	zinf_loss_scaler_update(&ls, false, NULL, 0);
	T_CHECK_EQ_I64(ls.cur_hysteresis, 2);

	/* the scale stops at min_loss_scale, and an overflow there is an error */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 2, "
	               "\"hysteresis\": 1, \"min_loss_scale\": 3}}");
	zinf_loss_scaler_init(&ls, &cfg);
	T_CHECK(zinf_loss_scaler_update(&ls, true, msg, sizeof(msg)) == 0, "%s", msg);
	T_CHECK(ls.cur_scale == 3.0, "clamped to min: %g", ls.cur_scale);
	int rc = zinf_loss_scaler_update(&ls, true, msg, sizeof(msg));
	T_CHECK(rc == -ERANGE && strstr(msg, "min_loss_scale"), "rc %d '%s'", rc, msg);
	T_CHECK(ls.cur_scale == 3.0, "unchanged after the error: %g", ls.cur_scale);

	/* static fp16 scale and bf16: never change */
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"fp16\": {\"enabled\": true, \"loss_scale\": 128}}");
	zinf_loss_scaler_init(&ls, &cfg);
	zinf_loss_scaler_update(&ls, true, msg, sizeof(msg));
	T_CHECK(!ls.dynamic && ls.cur_scale == 128.0 && strstr(msg, "OVERFLOW"), "static %g '%s'",
	        ls.cur_scale, msg);
	load_cfg(&cfg, "{\"train_micro_batch_size_per_gpu\": 1, \"gradient_accumulation_steps\": 1,"
	               "\"bf16\": {\"enabled\": true}}");
	zinf_loss_scaler_init(&ls, &cfg);
	for (int i = 0; i < 5; i++)
		zinf_loss_scaler_update(&ls, false, NULL, 0);
	T_CHECK(ls.cur_scale == 1.0, "bf16 %g", ls.cur_scale);
}

/* Every element owned by exactly one rank; ranges aligned; owner() agrees. */
static void
check_partition(int stage, int world, const int64_t *off, const int64_t *num, int nseg,
                int64_t align)
{
	char err[256];
	int64_t total = off[nseg - 1] + num[nseg - 1];
	int *owner = calloc((size_t)total, sizeof(int));
	int64_t sum = 0, maxo = 0;
	for (int r = 0; r < world; r++) {
		zinf_zero_partition p;
		int rc = zinf_zero_partition_init(&p, stage, world, r, off, num, nseg, align, err,
		                                  sizeof(err));
		T_CHECK(rc == 0, "stage %d W %d rank %d: %s", stage, world, r, err);
		if (rc)
			continue;
		int64_t owned = 0;
		for (int i = 0; i < p.nranges; i++) {
			zinf_zero_range q = p.ranges[i];
			T_CHECK(q.begin < q.end && q.end <= total, "range %lld..%lld",
			        (long long)q.begin, (long long)q.end);
			if (i)
				T_CHECK(p.ranges[i - 1].end <= q.begin, "ranges out of order");
			/* aligned from the start of the segment holding it (segments are aligned) */
			T_CHECK(q.begin % align == 0, "stage %d W %d rank %d: begin %lld not a multiple "
			        "of %lld", stage, world, r, (long long)q.begin, (long long)align);
			for (int64_t e = q.begin; e < q.end; e++) {
				owner[e]++;
				if (stage > 0 && zinf_zero_owner(&p, e) != r) {
					T_CHECK(0, "owner(%lld) = %d, range says %d", (long long)e,
					        zinf_zero_owner(&p, e), r);
					break;
				}
			}
			owned += q.end - q.begin;
		}
		T_CHECK_EQ_I64(owned, p.owned_numel);
		T_CHECK_EQ_I64(zinf_zero_opt_numel(&p), stage >= 1 ? owned : total);
		T_CHECK_EQ_I64(zinf_zero_grad_numel(&p), stage >= 2 ? owned : total);
		T_CHECK_EQ_I64(zinf_zero_param_numel(&p), stage >= 3 ? owned : total);
		T_CHECK(zinf_zero_owner(&p, -1) == -1 && zinf_zero_owner(&p, total) == -1,
		        "out of range");
		sum += owned;
		if (owned > maxo)
			maxo = owned;
		if (r == world - 1)
			T_CHECK_EQ_I64(p.max_owned_numel, maxo);
		zinf_zero_partition_free(&p);
	}
	int64_t want = stage == 0 ? total * world : total;
	T_CHECK_EQ_I64(sum, want);
	for (int64_t e = 0; e < total; e++) {
		if (owner[e] != (stage == 0 ? world : 1)) {
			T_CHECK(0, "stage %d W %d: element %lld owned %d times", stage, world,
			        (long long)e, owner[e]);
			break;
		}
	}
	free(owner);
}

static void
test_partition(void)
{
	char err[256];
	/* a model-like layout: embeddings, 3 layers, head, aligned to 64 */
	const int64_t off[] = {0, 1024, 1664, 2304, 2944};
	const int64_t num[] = {1024, 640, 640, 640, 128};
	for (int stage = 0; stage <= 3; stage++)
		for (int w = 1; w <= 8; w *= 2)
			check_partition(stage, w, off, num, 5, 64);
	/* an awkward size and an empty segment */
	const int64_t off2[] = {0, 1000, 1000};
	const int64_t num2[] = {1000, 0, 7};
	for (int stage = 1; stage <= 3; stage++)
		for (int w = 1; w <= 8; w *= 2)
			check_partition(stage, w, off2, num2, 3, 1);

	/* exact numbers: 1000 elements, 8 ranks, align 64: per = round_up(125, 64) = 128 */
	const int64_t o1[] = {0}, n1[] = {1000};
	zinf_zero_partition p;
	T_CHECK(zinf_zero_partition_init(&p, 1, 8, 7, o1, n1, 1, 64, err, sizeof(err)) == 0, "%s",
	        err);
	T_CHECK(p.nranges == 1 && p.ranges[0].begin == 896 && p.ranges[0].end == 1000,
	        "rank 7: %lld..%lld", (long long)p.ranges[0].begin, (long long)p.ranges[0].end);
	T_CHECK_EQ_I64(p.max_owned_numel, 128);
	zinf_zero_partition_free(&p);
	/* stage 3, two blocks of 256, 4 ranks: rank 1 owns 64..128 and 320..384 */
	const int64_t o3[] = {0, 256}, n3[] = {256, 256};
	T_CHECK(zinf_zero_partition_init(&p, 3, 4, 1, o3, n3, 2, 64, err, sizeof(err)) == 0, "%s",
	        err);
	T_CHECK(p.nranges == 2 && p.ranges[0].begin == 64 && p.ranges[0].end == 128 &&
	                p.ranges[1].begin == 320 && p.ranges[1].end == 384,
	        "stage 3 rank 1: %d ranges", p.nranges);
	zinf_zero_partition_free(&p);
	/* world size 1 at stage 3: the blocks merge into one range */
	T_CHECK(zinf_zero_partition_init(&p, 3, 1, 0, off, num, 5, 64, err, sizeof(err)) == 0, "%s",
	        err);
	T_CHECK(p.nranges == 1 && p.ranges[0].begin == 0 && p.ranges[0].end == 3072,
	        "W1 stage 3: %d ranges", p.nranges);
	zinf_zero_partition_free(&p);
	/* bad input */
	T_CHECK(zinf_zero_partition_init(&p, 4, 1, 0, o1, n1, 1, 64, err, sizeof(err)) == -EINVAL &&
	                strstr(err, "stage"),
	        "%s", err);
	T_CHECK(zinf_zero_partition_init(&p, 1, 2, 2, o1, n1, 1, 64, err, sizeof(err)) == -EINVAL &&
	                strstr(err, "rank 2"),
	        "%s", err);
	const int64_t gap[] = {0, 10}, gapn[] = {5, 5};
	T_CHECK(zinf_zero_partition_init(&p, 1, 2, 0, gap, gapn, 2, 1, err, sizeof(err)) == -EINVAL,
	        "gap");
}

static void
test_ckpt_io(void)
{
	char err[1024], tmp[4096], folder[4096], path[8192];
	char *dir = t_mkdtemp("ckpt-io");
	char out[4200];
	snprintf(out, sizeof(out), "%s/out/sub", dir); /* parents created */
	float master[1000];
	for (int i = 0; i < 1000; i++)
		master[i] = (float)i * 0.5f;
	const char client[] = "loader-state";

	for (int round = 0; round < 2; round++) {
		master[0] = (float)round;
		int rc = zinf_ckpt_begin(out, "global_step5", tmp, sizeof(tmp), err, sizeof(err));
		T_CHECK(rc == 0, "%s", err);
		rc = zinf_ckpt_write_file(tmp, "manifest.json", "{}\n", 3, err, sizeof(err));
		T_CHECK(rc == 0, "%s", err);
		zinf_ckpt_section sec[2] = {{"master", master, sizeof(master)},
		                            {"client", client, sizeof(client)}};
		rc = zinf_ckpt_shard_write(tmp, 0, sec, 2, err, sizeof(err));
		T_CHECK(rc == 0, "%s", err);
		rc = zinf_ckpt_commit(out, "global_step5", tmp, err, sizeof(err));
		T_CHECK(rc == 0, "round %d: %s", round, err);
		struct stat st;
		T_CHECK(stat(tmp, &st) != 0, "staging folder %s still there", tmp);
	}
	/* latest names the tag; find resolves both the parent and the tag folder */
	T_CHECK(zinf_ckpt_find(out, folder, sizeof(folder), err, sizeof(err)) == 0, "%s", err);
	snprintf(path, sizeof(path), "%s/global_step5", out);
	T_CHECK(!strcmp(folder, path), "find: %s", folder);
	T_CHECK(zinf_ckpt_find(path, folder, sizeof(folder), err, sizeof(err)) == 0, "%s", err);
	T_CHECK(zinf_ckpt_find(dir, folder, sizeof(folder), err, sizeof(err)) == -ENOENT &&
	                strstr(err, "latest"),
	        "%s", err);

	const char *names[2] = {"client", "master"};
	void *bufs[2];
	uint64_t lens[2];
	int rc = zinf_ckpt_shard_read(path, 0, names, 2, bufs, lens, err, sizeof(err));
	T_CHECK(rc == 0, "%s", err);
	if (!rc) {
		T_CHECK(lens[0] == sizeof(client) && !memcmp(bufs[0], client, sizeof(client)),
		        "client");
		T_CHECK(lens[1] == sizeof(master) && !memcmp(bufs[1], master, sizeof(master)),
		        "master (second round replaced the first)");
		free(bufs[0]);
		free(bufs[1]);
	}
	const char *missing[1] = {"exp_avg"};
	rc = zinf_ckpt_shard_read(path, 0, missing, 1, bufs, lens, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "exp_avg"), "missing section: %d %s", rc, err);
	rc = zinf_ckpt_shard_read(path, 1, names, 2, bufs, lens, err, sizeof(err));
	T_CHECK(rc == -ENOENT && strstr(err, "rank1.bin"), "rank 1: %d %s", rc, err);

	/* a flipped byte fails the checksum and names the section */
	char shard[8300];
	snprintf(shard, sizeof(shard), "%s/rank0.bin", path);
	int fd = open(shard, O_RDWR);
	struct stat st;
	fstat(fd, &st);
	char c;
	T_CHECK(pread(fd, &c, 1, st.st_size - 1) == 1, "pread");
	c ^= 1;
	T_CHECK(pwrite(fd, &c, 1, st.st_size - 1) == 1, "pwrite");
	rc = zinf_ckpt_shard_read(path, 0, names, 1, bufs, lens, err, sizeof(err));
	T_CHECK(rc == -EIO && strstr(err, "client") && strstr(err, "checksum"), "corrupt: %d %s",
	        rc, err);
	/* truncated */
	T_CHECK(ftruncate(fd, st.st_size - 100) == 0, "truncate");
	close(fd);
	rc = zinf_ckpt_shard_read(path, 0, names, 2, bufs, lens, err, sizeof(err));
	T_CHECK(rc == -EINVAL && strstr(err, "truncated"), "truncated: %d %s", rc, err);

	/* a bad tag is refused */
	rc = zinf_ckpt_begin(out, "../x", tmp, sizeof(tmp), err, sizeof(err));
	T_CHECK(rc == -EINVAL, "bad tag");

	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_CHECK(system(cmd) == 0, "cleanup");
	free(dir);
}

/* ---- training on a tiny CPU model ------------------------------------------------------ */

#define TB 8  /* rows per optimizer step */
#define TT 16 /* tokens per row */

#include "engine_tiny.h"

static zinf_engine *
make_engine(const char *json, int threads, const iosched_fault *fault)
{
	zinf_config cfg;
	char err[1024];
	zinf_config_init_defaults(&cfg);
	int rc = zinf_config_load_string("train.json", json, NULL, &cfg, err, sizeof(err));
	if (!rc)
		rc = zinf_config_resolve(&cfg, 1, g_mc.d_model, err, sizeof(err));
	T_CHECK(rc == 0, "config: %s", err);
	if (rc)
		return NULL;
	zinf_engine_opts o;
	zinf_engine_opts_init(&o);
	o.seq_len = TT;
	o.threads = threads;
	o.seed = 7;
	o.fault = fault;
	o.run_id = "test";
	zinf_engine *e;
	rc = zinf_engine_create(&g_mc, &cfg, &o, &e, err, sizeof(err));
	T_CHECK(rc == 0, "create: %s", err);
	return rc ? NULL : e;
}

/* Optimizer steps [from, to): every micro-step takes its share of the step's TB rows. Writes the
 * step's mean micro loss to losses[s]. Returns 0 or the failing call's code (message printed
 * unless quiet). */
static int
train(zinf_engine *e, int64_t from, int64_t to, float *losses, bool quiet)
{
	int B = zinf_engine_micro_batch(e);
	int64_t A = zinf_engine_accum_steps(e);
	int32_t tok[TB * TT], tgt[TB * TT];
	for (int64_t s = from; s < to; s++) {
		double sum = 0;
		for (int64_t a = 0; a < A; a++) {
			float loss;
			make_rows(s, (int)a * B, B, tok, tgt);
			int rc = zinf_engine_forward(e, tok, tgt, &loss);
			if (!rc)
				rc = zinf_engine_backward(e);
			if (!rc)
				rc = zinf_engine_step(e);
			if (rc) {
				if (!quiet)
					fprintf(stderr, "step %lld: %s\n", (long long)s,
					        zinf_engine_error(e));
				return rc;
			}
			sum += loss;
		}
		if (losses)
			losses[s] = (float)(sum / (double)A);
	}
	return 0;
}

#define CFG_HEAD "{\"train_micro_batch_size_per_gpu\": %d, \"gradient_accumulation_steps\": %d, "

static void
test_loss_falls(void)
{
	char json[512];
	snprintf(json, sizeof(json), CFG_HEAD "\"optimizer\": {\"type\": \"AdamW\", \"params\": "
	         "{\"lr\": 0.003, \"weight_decay\": 0.01}}, \"gradient_clipping\": 1.0}", TB, 1);
	zinf_engine *e = make_engine(json, 2, NULL);
	if (!e)
		return;
	float losses[40];
	T_CHECK(train(e, 0, 40, losses, false) == 0, "train");
	float last = (losses[37] + losses[38] + losses[39]) / 3;
	printf("loss %.4f -> %.4f\n", (double)losses[0], (double)last);
	T_CHECK(losses[0] > 5.0f && losses[0] < 6.0f, "initial loss %.4f, want about ln(256) = 5.55",
	        (double)losses[0]);
	T_CHECK(last < 0.6f * losses[0], "loss did not fall: %.4f -> %.4f", (double)losses[0],
	        (double)last);
	zinf_engine_stats st;
	zinf_engine_get_stats(e, &st);
	T_CHECK_EQ_I64(st.global_steps, 40);
	T_CHECK_EQ_I64(st.optimizer_steps, 40);
	T_CHECK(st.grad_norm > 0 && isfinite(st.grad_norm), "grad norm %g", (double)st.grad_norm);
	T_CHECK(st.t_forward > 0 && st.t_backward > 0 && st.t_step > 0, "phase times");
	/* lr get/set: no scheduler, so a set lr stays */
	zinf_engine_set_lr(e, 1e-4);
	train(e, 40, 41, NULL, false);
	T_CHECK(zinf_engine_get_lr(e) == 1e-4, "lr after set %g", zinf_engine_get_lr(e));
	zinf_engine_destroy(e);
}

static void
test_accum(void)
{
	char json[512];
	const char *rest = "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.001}}, "
	                   "\"gradient_clipping\": 0.5}";
	snprintf(json, sizeof(json), CFG_HEAD "%s", 4, 2, rest);
	zinf_engine *a = make_engine(json, 2, NULL);
	snprintf(json, sizeof(json), CFG_HEAD "%s", 8, 1, rest);
	zinf_engine *b = make_engine(json, 2, NULL);
	if (!a || !b)
		return;
	float la[6], lb[6];
	T_CHECK(train(a, 0, 6, la, false) == 0 && train(b, 0, 6, lb, false) == 0, "train");
	for (int s = 0; s < 6; s++)
		T_CHECK(fabsf(la[s] - lb[s]) <= 1e-5f * fabsf(lb[s]), "step %d: loss %.8f (4 x 2) vs "
		        "%.8f (8 x 1)", s, (double)la[s], (double)lb[s]);
	size_t n = (size_t)zinf_engine_layout(a)->total_numel;
	float *pa = malloc(n * 4), *pb = malloc(n * 4);
	zinf_engine_master(a, pa);
	zinf_engine_master(b, pb);
	double maxd = 0;
	for (size_t i = 0; i < n; i++)
		maxd = fmax(maxd, fabs((double)pa[i] - (double)pb[i]));
	printf("max |param diff| after 6 steps: %.3g\n", maxd);
	T_CHECK(maxd < 5e-5, "params differ by %.3g", maxd);
	zinf_engine_stats sa;
	zinf_engine_get_stats(a, &sa);
	T_CHECK(sa.micro_steps == 12 && sa.global_steps == 6, "micro %lld global %lld",
	        (long long)sa.micro_steps, (long long)sa.global_steps);
	free(pa);
	free(pb);
	zinf_engine_destroy(a);
	zinf_engine_destroy(b);
}

static void
test_fp16_overflow(void)
{
	char json[768];
	/* 2^24 x the gradients cannot fit fp16 (65504): the first steps overflow */
	snprintf(json, sizeof(json), CFG_HEAD "\"optimizer\": {\"type\": \"AdamW\", \"params\": "
	         "{\"lr\": 0.003}}, \"fp16\": {\"enabled\": true, \"initial_scale_power\": 24, "
	         "\"hysteresis\": 1, \"loss_scale_window\": 100}, \"scheduler\": {\"type\": "
	         "\"WarmupLR\", \"params\": {\"warmup_min_lr\": 0.001, \"warmup_max_lr\": 0.003, "
	         "\"warmup_num_steps\": 10, \"warmup_type\": \"linear\"}}}", TB, 1);
	zinf_engine *e = make_engine(json, 2, NULL);
	if (!e)
		return;
	size_t n = (size_t)zinf_engine_layout(e)->total_numel;
	float *p0 = malloc(n * 4), *p1 = malloc(n * 4);
	zinf_engine_master(e, p0);
	double lr0 = zinf_engine_get_lr(e);
	T_CHECK(train(e, 0, 1, NULL, false) == 0, "step");
	zinf_engine_stats st;
	zinf_engine_get_stats(e, &st);
	T_CHECK(st.last == ZINF_STEP_SKIPPED && st.skipped_steps == 1, "last %d skipped %lld",
	        st.last, (long long)st.skipped_steps);
	T_CHECK(st.loss_scale == 8388608.0, "scale %g, want 2^23", st.loss_scale);
	T_CHECK(strstr(st.last_msg, "16777216 -> 8388608") != NULL, "message '%s'", st.last_msg);
	zinf_engine_master(e, p1);
	T_CHECK(!memcmp(p0, p1, n * 4), "a skipped step changed the weights");
	T_CHECK(zinf_engine_get_lr(e) == lr0, "a skipped step advanced the scheduler");
	/* the scale keeps halving until the gradients fit, then steps apply */
	int64_t s = 1;
	while (st.last != ZINF_STEP_APPLIED && s < 20) {
		train(e, s, s + 1, NULL, false);
		s++;
		zinf_engine_get_stats(e, &st);
	}
	printf("first applied step: %lld, loss scale %g, %lld skipped\n", (long long)s,
	       st.loss_scale, (long long)st.skipped_steps);
	T_CHECK(st.last == ZINF_STEP_APPLIED && st.optimizer_steps == 1, "never applied");
	T_CHECK(st.loss_scale == ldexp(1.0, 24 - (int)(s - 1)) && st.skipped_steps == s - 1,
	        "scale %g skipped %lld", st.loss_scale, (long long)st.skipped_steps);
	/* DeepSpeed's WarmupLR: min_lr before the first step and at iteration 0; the second
	 * applied step uses iteration 1: 0.001 + 0.002 * 1/10 */
	T_CHECK(zinf_engine_get_lr(e) == lr0, "lr %g after the first applied step",
	        zinf_engine_get_lr(e));
	train(e, s, s + 1, NULL, false);
	T_CHECK(fabs(zinf_engine_get_lr(e) - 0.0012) < 1e-12, "lr %.17g after 2 applied steps",
	        zinf_engine_get_lr(e));
	zinf_engine_master(e, p1);
	T_CHECK(memcmp(p0, p1, n * 4) != 0, "the applied step left the weights alone");
	free(p0);
	free(p1);
	zinf_engine_destroy(e);
}

/* A config string with every stateful piece: fp16 dynamic scaling with a short window,
 * WarmupDecayLR, accumulation 2, clipping, and the optimizer device. */
static void
state_cfg(char *json, size_t len, const char *offload, const char *nvme)
{
	char zero[1024];
	if (!strcmp(offload, "none"))
		snprintf(zero, sizeof(zero), "{\"stage\": 3, \"sub_group_size\": 30000}");
	else
		snprintf(zero, sizeof(zero), "{\"stage\": 3, \"sub_group_size\": 30000, "
		         "\"offload_optimizer\": {\"device\": \"%s\"%s%s%s}}", offload,
		         nvme ? ", \"nvme_path\": \"" : "", nvme ? nvme : "", nvme ? "\"" : "");
	snprintf(json, len, CFG_HEAD "\"optimizer\": {\"type\": \"AdamW\", \"params\": "
	         "{\"lr\": 0.002}}, \"gradient_clipping\": 1.0, \"fp16\": {\"enabled\": true, "
	         "\"initial_scale_power\": 12, \"loss_scale_window\": 3}, \"scheduler\": {\"type\": "
	         "\"WarmupDecayLR\", \"params\": {\"warmup_max_lr\": 0.002, \"warmup_num_steps\": 4, "
	         "\"total_num_steps\": 30}}, \"zero_optimization\": %s, \"aio\": {\"backend\": "
	         "\"psync\"}}", TB / 2, 2, zero);
}

static void
same_losses(const float *a, const float *b, int from, int to, const char *what)
{
	for (int s = from; s < to; s++)
		if (memcmp(&a[s], &b[s], sizeof(float))) {
			T_CHECK(0, "%s: step %d loss %.9g vs %.9g (not bit-identical)", what, s,
			        (double)a[s], (double)b[s]);
			return;
		}
}

static void
test_resume(void)
{
	char json[2048];
	state_cfg(json, sizeof(json), "none", NULL);
	char *dir = t_mkdtemp("engine-resume");
	float ref[12], got[12];
	zinf_engine *e = make_engine(json, 2, NULL);
	if (!e)
		return;
	T_CHECK(train(e, 0, 12, ref, false) == 0, "reference run");
	zinf_engine_destroy(e);

	e = make_engine(json, 2, NULL);
	T_CHECK(train(e, 0, 5, got, false) == 0, "first half");
	int64_t next = 5;
	int rc = zinf_engine_save(e, dir, NULL, &next, sizeof(next), true);
	T_CHECK(rc == 0, "save: %s", zinf_engine_error(e));
	/* mid-accumulation saves are refused */
	int32_t tok[TB * TT], tgt[TB * TT];
	float loss;
	make_rows(99, 0, TB / 2, tok, tgt);
	zinf_engine_forward(e, tok, tgt, &loss);
	zinf_engine_backward(e);
	zinf_engine_step(e);
	rc = zinf_engine_save(e, dir, "mid", NULL, 0, false);
	T_CHECK(rc == -EBUSY && strstr(zinf_engine_error(e), "accumulation"), "mid save: %d %s", rc,
	        zinf_engine_error(e));
	zinf_engine_destroy(e);

	char path[8192];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/global_step5/model.safetensors", dir);
	T_CHECK(stat(path, &sb) == 0 && sb.st_size > 0, "export %s missing", path);
	snprintf(path, sizeof(path), "%s/global_step5/config.json", dir);
	T_CHECK(stat(path, &sb) == 0, "export %s missing", path);

	/* a fresh engine (other seed would not matter: the checkpoint replaces the weights) */
	e = make_engine(json, 1, NULL);
	void *client = NULL;
	size_t clen = 0;
	rc = zinf_engine_load(e, dir, &client, &clen);
	T_CHECK(rc == 0, "load: %s", zinf_engine_error(e));
	T_CHECK(clen == sizeof(int64_t) && client && *(int64_t *)client == 5, "client bytes");
	free(client);
	T_CHECK(train(e, 5, 12, got, false) == 0, "resumed run");
	same_losses(ref, got, 0, 12, "resume");
	zinf_engine_destroy(e);

	/* a checkpoint of another precision is refused, naming it */
	char fp32[512];
	snprintf(fp32, sizeof(fp32), CFG_HEAD "\"optimizer\": {\"type\": \"AdamW\"}}", TB / 2, 2);
	e = make_engine(fp32, 1, NULL);
	rc = zinf_engine_load(e, dir, NULL, NULL);
	T_CHECK(rc == -EINVAL && strstr(zinf_engine_error(e), "precision"), "%d %s", rc,
	        zinf_engine_error(e));
	zinf_engine_destroy(e);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	T_CHECK(system(path) == 0, "cleanup");
	free(dir);
}

static void
test_offload(void)
{
	char json[2048];
	char *dir = t_mkdtemp("engine-offload");
	enum { S = 20 };
	float l[3][S];
	const char *dev[3] = {"none", "cpu", "nvme"};
	for (int d = 0; d < 3; d++) {
		state_cfg(json, sizeof(json), dev[d], d == 2 ? dir : NULL);
		zinf_engine *e = make_engine(json, 2, NULL);
		if (!e)
			return;
		T_CHECK(train(e, 0, S, l[d], false) == 0, "%s", dev[d]);
		zinf_engine_stats st;
		zinf_engine_get_stats(e, &st);
		if (d == 2)
			T_CHECK(st.opt_bytes_read > 0 && st.opt_bytes_written > 0,
			        "nvme: no swap traffic counted");
		zinf_engine_destroy(e);
	}
	printf("loss %.4f -> %.4f over %d steps on all three devices\n", (double)l[0][0],
	       (double)l[0][S - 1], S);
	same_losses(l[0], l[1], 0, S, "offload cpu vs none");
	same_losses(l[0], l[2], 0, S, "offload nvme vs none");
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_CHECK(system(cmd) == 0, "cleanup");
	free(dir);
}

/* An I/O error injected into the NVMe optimizer swap fails the step with a clear error;
 * resuming from the last checkpoint gives the uninterrupted run's losses. */
static void
test_eio(void)
{
	char json[2048];
	char *dir = t_mkdtemp("engine-eio");
	char ck[4200];
	snprintf(ck, sizeof(ck), "%s/ckpt", dir);
	enum { S = 14 };
	float ref[S], got[S];
	state_cfg(json, sizeof(json), "nvme", dir);
	zinf_engine *e = make_engine(json, 2, NULL);
	if (!e)
		return;
	T_CHECK(train(e, 0, S, ref, false) == 0, "reference");
	zinf_engine_destroy(e);

	/* 4 sub-groups; a step reads each once (fetch) and once more (weights read back), a save
	 * once: read number 60 falls after the save at step 5, within the run */
	iosched_fault fault = {.nth = 60, .err = EIO, .ops = IOSCHED_OP_READ};
	e = make_engine(json, 2, &fault);
	if (!e)
		return;
	T_CHECK(train(e, 0, 5, got, false) == 0, "before the save");
	T_CHECK(zinf_engine_save(e, ck, NULL, NULL, 0, false) == 0, "save: %s",
	        zinf_engine_error(e));
	int64_t s = 5;
	int rc = 0;
	for (; s < S && !rc; s++)
		rc = train(e, s, s + 1, got, true);
	const char *msg = zinf_engine_error(e);
	printf("failed at step %lld: %s\n", (long long)s - 1, msg);
	T_CHECK(rc == -EIO, "the injected error did not fail a step (rc %d)", rc);
	T_CHECK(strstr(msg, "Input/output error") && strstr(msg, "--resume"),
	        "message should name the I/O error and how to resume: '%s'", msg);
	same_losses(ref, got, 0, (int)s - 1, "before the failure");
	zinf_engine_destroy(e);

	e = make_engine(json, 2, NULL);
	rc = zinf_engine_load(e, ck, NULL, NULL);
	T_CHECK(rc == 0, "load: %s", zinf_engine_error(e));
	T_CHECK(train(e, 5, S, got, false) == 0, "resumed");
	same_losses(ref, got, 0, S, "resumed after the I/O error");
	zinf_engine_destroy(e);
	snprintf(ck, sizeof(ck), "rm -rf '%s'", dir);
	T_CHECK(system(ck) == 0, "cleanup");
	free(dir);
}

static int
train_case(const char *c)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {{"loss_falls", test_loss_falls}, {"accum", test_accum},
	             {"fp16_overflow", test_fp16_overflow}, {"resume", test_resume},
	             {"offload", test_offload}, {"eio", test_eio}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!strcmp(c, cases[i].name)) {
			tiny_model();
			cases[i].fn();
			return 1;
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s sched|scaler|partition|ckpt_io|<training case>\n", argv[0]);
		return 2;
	}
	const char *c = argv[1];
	if (!strcmp(c, "sched"))
		test_sched();
	else if (!strcmp(c, "scaler"))
		test_scaler();
	else if (!strcmp(c, "partition"))
		test_partition();
	else if (!strcmp(c, "ckpt_io"))
		test_ckpt_io();
	else if (!train_case(c)) {
		fprintf(stderr, "unknown case %s\n", c);
		return 2;
	}
	if (t_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", c, t_failures);
		return T_EXIT_FAIL;
	}
	printf("%s: ok\n", c);
	return T_EXIT_PASS;
}
