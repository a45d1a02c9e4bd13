/* engine/config: ds_config.json loading, "auto", batch relations, errors, memory plan. */
#include "test_util.h"

#include <math.h>
#include <sys/stat.h>

#include "engine/config.h"

#ifndef ZINF_FIXTURES
#error "ZINF_FIXTURES (the tests/fixtures/configs folder) must be defined"
#endif

static char g_err[2048];

static const char *
fixture(const char *name)
{
	static char path[4096];
	snprintf(path, sizeof(path), "%s/%s", ZINF_FIXTURES, name);
	return path;
}

/* Loads (a file when json is NULL, else the string as "inline.json") and resolves; returns
 * rc, message in g_err. */
static int
load_any(const char *path, const char *json, const zinf_config_overrides *ov, int64_t world,
         int64_t hidden, zinf_config *cfg)
{
	zinf_config_init_defaults(cfg);
	g_err[0] = 0;
	int rc = json ? zinf_config_load_string("inline.json", json, ov, cfg, g_err, sizeof(g_err))
	              : zinf_config_load_file(path, ov, cfg, g_err, sizeof(g_err));
	if (!rc)
		rc = zinf_config_resolve(cfg, world, hidden, g_err, sizeof(g_err));
	return rc;
}

#define load_json(json, ov, world, hidden, cfg) load_any(NULL, json, ov, world, hidden, cfg)
#define load_path(path, ov, world, hidden, cfg) load_any(path, NULL, ov, world, hidden, cfg)

/* The config is refused with -EINVAL; the message starts with `prefix` and holds every
 * needle. */
static void
expect_refused(int rc, const char *prefix, const char *const *needles, const char *what)
{
	T_CHECK(rc == -EINVAL, "%s: rc %d, expected -EINVAL (message: %s)", what, rc, g_err);
	T_CHECK(!strncmp(g_err, prefix, strlen(prefix)), "%s: message does not start with %s: %s",
	        what, prefix, g_err);
	for (const char *const *n = needles; *n; n++)
		T_CHECK(strstr(g_err, *n), "%s: message lacks '%s': %s", what, *n, g_err);
}

#define REFUSED(rc, prefix, what, ...)                                                             \
	do {                                                                                       \
		const char *const _n[] = {__VA_ARGS__, NULL};                                      \
		expect_refused((rc), (prefix), _n, (what));                                        \
	} while (0)

static void
test_defaults_are_deepspeeds(void)
{
	zinf_config c;
	zinf_config_init_defaults(&c);
	T_CHECK_EQ_I64(c.gradient_accumulation_steps, 1);
	T_CHECK_EQ_I64(c.steps_per_print, 10);
	T_CHECK_EQ_I64(c.stage, 0);
	T_CHECK(c.contiguous_gradients && !c.overlap_comm, "zero bools");
	T_CHECK_EQ_I64(c.sub_group_size, 1000000000);
	T_CHECK_EQ_I64(c.reduce_bucket_size, 500000000);
	T_CHECK_EQ_I64(c.allgather_bucket_size, 500000000);
	T_CHECK_EQ_I64(c.prefetch_bucket_size, 50000000);
	T_CHECK_EQ_I64(c.param_persistence_threshold, 100000);
	T_CHECK_EQ_I64(c.max_live_parameters, 1000000000);
	T_CHECK_EQ_I64(c.offload_optimizer.buffer_count, 4);
	T_CHECK_EQ_I64(c.offload_param.buffer_count, 5);
	T_CHECK_EQ_I64(c.offload_param.buffer_size, 100000000);
	T_CHECK_EQ_I64(c.offload_param.max_in_cpu, 1000000000);
	T_CHECK_EQ_I64(c.aio_block_size, 1048576);
	T_CHECK_EQ_I64(c.aio_queue_depth, 8);
	T_CHECK_EQ_I64(c.aio_thread_count, 1);
	T_CHECK(!c.aio_single_submit && c.aio_overlap_events, "aio bools");
	T_CHECK_EQ_I64(c.fp16_initial_scale_power, 16);
	T_CHECK_EQ_I64(c.fp16_loss_scale_window, 1000);
	T_CHECK_EQ_I64(c.fp16_hysteresis, 2);
	T_CHECK(c.fp16_min_loss_scale == 1 && c.fp16_loss_scale == 0, "fp16 scales");
	T_CHECK(c.betas[0] == 0.9 && c.betas[1] == 0.999 && c.eps == 1e-8 && c.lr == 1e-3,
	        "adam defaults");
	for (int k = 0; k < ZINF_KEY_COUNT; k++)
		T_CHECK(c.src[k] == ZINF_SRC_DEFAULT && !c.pending[k], "key %d", k);
	/* Unset overlap_comm is on after resolve, at stage 3 as in DeepSpeed and at stage 2 too
	 * (zinf's reductions are in place: overlap costs no memory); false in the file stays. */
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"zero_optimization\": "
	                         "{\"stage\": 2}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(c.overlap_comm, "stage 2 overlap_comm default");
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"zero_optimization\": "
	                         "{\"stage\": 3}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(c.overlap_comm, "stage 3 overlap_comm default");
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"zero_optimization\": "
	                         "{\"stage\": 3, \"overlap_comm\": false}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(!c.overlap_comm, "overlap_comm false in the file");
}

static void
test_shipped_configs_load(const char *nvme_dir)
{
	zinf_config c;
	zinf_config_overrides ov;

	T_CHECK_EQ_I64(load_path(fixture("standalone-zero2-adamw.json"), NULL, 4, 0, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK_EQ_I64(c.train_batch_size, 32);
	T_CHECK_EQ_I64(c.train_micro_batch_size_per_gpu, 4);
	T_CHECK_EQ_I64(c.gradient_accumulation_steps, 2);
	T_CHECK_EQ_I64(c.stage, 2);
	T_CHECK(c.optimizer_type == ZINF_OPTIMIZER_ADAMW && c.lr == 3e-5 && c.weight_decay == 0.01,
	        "optimizer");
	T_CHECK(c.bf16_enabled && !c.fp16_enabled, "bf16");
	T_CHECK(c.resolved, "resolved");

	T_CHECK_EQ_I64(load_path(fixture("zero3-offload-cpu-7b.json"), NULL, 8, 4096, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK(c.offload_optimizer.device == ZINF_DEVICE_CPU &&
	                c.offload_param.device == ZINF_DEVICE_CPU && c.offload_param.pin_memory,
	        "cpu offload");
	T_CHECK_EQ_I64(c.reduce_bucket_size, 4096 * 4096);
	T_CHECK_EQ_I64(c.src[ZINF_KEY_ZERO_REDUCE_BUCKET_SIZE], ZINF_SRC_AUTO);
	T_CHECK(c.gradient_clipping == 1.0, "clipping %g", c.gradient_clipping);

	zinf_config_overrides_init(&ov);
	ov.nvme_path = nvme_dir;
	T_CHECK_EQ_I64(load_path(fixture("zero3-offload-nvme.json"), &ov, 8, 4096, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK(c.offload_optimizer.device == ZINF_DEVICE_NVME, "nvme");
	T_CHECK(!strcmp(c.offload_optimizer.nvme_path, nvme_dir), "nvme_path %s",
	        c.offload_optimizer.nvme_path);
	T_CHECK_EQ_I64(c.src[ZINF_KEY_OOPT_NVME_PATH], ZINF_SRC_FLAG);
	T_CHECK_EQ_I64(c.offload_optimizer.buffer_count, 5);
	T_CHECK(!c.offload_optimizer.fast_init, "fast_init");

	/* Without --nvme_path the file's /local_nvme must exist. */
	struct stat st;
	if (stat("/local_nvme", &st)) {
		int rc = load_path(fixture("zero3-offload-nvme.json"), NULL, 8, 4096, &c);
		REFUSED(rc, fixture("zero3-offload-nvme.json"), "nvme_path missing",
		        "zero_optimization.offload_optimizer.nvme_path /local_nvme",
		        "--nvme_path DIR");
	}

	T_CHECK_EQ_I64(load_path(fixture("fp16-dynamic-loss-scale.json"), NULL, 3, 0, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK(c.fp16_enabled && c.fp16_loss_scale == 0, "fp16 dynamic");
	T_CHECK_EQ_I64(c.train_batch_size, 2 * 4 * 3);
	T_CHECK_EQ_I64(c.src[ZINF_KEY_TRAIN_BATCH_SIZE], ZINF_SRC_DERIVED);

	zinf_config_overrides_init(&ov);
	ov.given = 1u << ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE |
	           1u << ZINF_OV_GRADIENT_ACCUMULATION_STEPS | 1u << ZINF_OV_MAX_GRAD_NORM;
	ov.value[ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE] = 4;
	ov.value[ZINF_OV_GRADIENT_ACCUMULATION_STEPS] = 2;
	ov.value[ZINF_OV_MAX_GRAD_NORM] = 0.5;
	T_CHECK_EQ_I64(load_path(fixture("hf-zero3-auto.json"), &ov, 2, 1024, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK_EQ_I64(c.train_micro_batch_size_per_gpu, 4);
	T_CHECK_EQ_I64(c.gradient_accumulation_steps, 2);
	T_CHECK_EQ_I64(c.train_batch_size, 16);
	T_CHECK(c.gradient_clipping == 0.5, "clipping %g", c.gradient_clipping);
	T_CHECK_EQ_I64(c.reduce_bucket_size, 1024 * 1024);
	T_CHECK_EQ_I64(c.prefetch_bucket_size, (int64_t)(0.9 * 1024 * 1024));
	T_CHECK_EQ_I64(c.param_persistence_threshold, 10 * 1024);
	T_CHECK_EQ_I64(c.sub_group_size, 1000000000);
	for (int k = ZINF_KEY_TRAIN_BATCH_SIZE; k <= ZINF_KEY_GRADIENT_CLIPPING; k++)
		T_CHECK_EQ_I64(c.src[k], ZINF_SRC_AUTO);
	for (int k = 0; k < ZINF_KEY_COUNT; k++)
		T_CHECK(!c.pending[k], "key %s still pending", zinf_config_key_path(k));
}

static void
test_bad_configs_refused(void)
{
	zinf_config c;
	int rc = load_path(fixture("bad/batch-mismatch.json"), NULL, 1, 0, &c);
	REFUSED(rc, fixture("bad/batch-mismatch.json"), "batch mismatch", "train_batch_size 16",
	        "train_micro_batch_size_per_gpu 1", "gradient_accumulation_steps 8", "world size 1",
	        "set train_batch_size to 8", "--num_gpus 2");
	rc = load_path(fixture("bad/fp16-and-bf16.json"), NULL, 1, 0, &c);
	REFUSED(rc, fixture("bad/fp16-and-bf16.json"), "fp16+bf16", "fp16.enabled", "bf16.enabled",
	        "keep one");
	rc = load_path(fixture("bad/unknown-key.json"), NULL, 1, 0, &c);
	REFUSED(rc, fixture("bad/unknown-key.json"), "unknown key",
	        ": zero_optimization.offload_optimizer.bufer_count: unknown key; did you mean "
	        "buffer_count?");
}

static void
test_unknown_keys(void)
{
	zinf_config c;
	REFUSED(load_json("{\"gradient_acumulation_steps\": 2}", NULL, 1, 0, &c),
	        "inline.json: ", "top-level typo",
	        "gradient_acumulation_steps: unknown key; did you mean "
	        "gradient_accumulation_steps?");
	REFUSED(load_json("{\"train_batch_size\": 8, \"stage\": 3}", NULL, 1, 0, &c),
	        "inline.json: ", "key at the wrong level", "did you mean zero_optimization.stage?");
	REFUSED(load_json("{\"zero_optimisation\": {\"stage\": 3}}", NULL, 1, 0, &c),
	        "inline.json: ", "section typo", "did you mean zero_optimization?");
	REFUSED(load_json("{\"frobnicate\": 1}", NULL, 1, 0, &c), "inline.json: ", "no near key",
	        "frobnicate: unknown key (");
	REFUSED(load_json("{\"aio\": {\"thread_count\": 2, \"intra_op_parallelism\": 2}}", NULL, 1,
	                  0, &c),
	        "inline.json: ", "alias twice", "given twice", "aio.thread_count");
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"aio\": {\"intra_op_parallelism\": "
	                         "6}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK_EQ_I64(c.aio_thread_count, 6);
}

static void
test_types_and_ranges(void)
{
	zinf_config c;
	REFUSED(load_json("{\"train_batch_size\": \"32\"}", NULL, 1, 0, &c),
	        "inline.json: ", "string for number",
	        "train_batch_size: expected a number, got the string \"32\"");
	REFUSED(load_json("{\"train_batch_size\": 2.5}", NULL, 1, 0, &c),
	        "inline.json: ", "fraction", "train_batch_size: 2.5 is not a whole number");
	REFUSED(load_json("{\"train_batch_size\": 8, \"aio\": {\"queue_depth\": 5000}}", NULL, 1, 0,
	                  &c),
	        "inline.json: ", "queue depth", "aio.queue_depth: 5000 is above the maximum 4096",
	        "set it to 4096 or less");
	REFUSED(load_json("{\"zero_optimization\": {\"stage\": 4}}", NULL, 1, 0, &c),
	        "inline.json: ", "stage 4", "zero_optimization.stage: 4 is above the maximum 3");
	REFUSED(load_json("{\"train_micro_batch_size_per_gpu\": 0}", NULL, 1, 0, &c),
	        "inline.json: ", "micro 0", "0 is below the minimum 1", "set it to 1 or more");
	REFUSED(load_json("{\"bf16\": {\"enabled\": 1}}", NULL, 1, 0, &c),
	        "inline.json: ", "number for bool",
	        "bf16.enabled: expected true or false, got a number");
	REFUSED(load_json("{\"bf16\": true}", NULL, 1, 0, &c), "inline.json: ", "bool section",
	        "bf16: expected an object");
	REFUSED(load_json("{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"betas\": [0.9]}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "betas", "optimizer.params.betas: expected [beta1, beta2]");
	REFUSED(load_json("{\"optimizer\": {\"type\": \"Adam\", \"params\": {\"betas\": [0.9, "
	                  "1.5]}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "beta2 1.5",
	        "optimizer.params.betas[1]: 1.5 is above the maximum");
	REFUSED(load_json("{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": "
	                  "{\"device\": \"nvm\"}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "device typo", "\"nvm\" is not one of none|cpu|nvme",
	        "did you mean nvme?");
	REFUSED(load_json("{\"aio\": {\"backend\": \"uring\"}}", NULL, 1, 0, &c),
	        "inline.json: ", "backend",
	        "aio.backend: \"uring\" is not one of auto|io_uring|libaio|psync");
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": "
	                  "{\"stage3_max_live_parameters\": \"auto\"}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "auto not allowed", "stage3_max_live_parameters",
	        "\"auto\" is not accepted");
	REFUSED(load_json("{\"train_batch_size\": 8, \"aio\": {\"block_size\": 1000000}}", NULL, 1,
	                  0, &c),
	        "inline.json: ", "block size alignment",
	        "aio.block_size 1000000 is not a multiple "
	        "of 4096",
	        "set it to 999424 or 1003520");
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"optimizer\": {\"type\": \"adamw\"}, "
	                         "\"zero_optimization\": {\"sub_group_size\": 1e8}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(c.optimizer_type == ZINF_OPTIMIZER_ADAMW, "lower-case adamw");
	T_CHECK_EQ_I64(c.sub_group_size, 100000000);
}

static void
test_stage_and_offload(const char *dir)
{
	zinf_config c;
	char json[1024];
	snprintf(json, sizeof(json),
	         "{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 2, "
	         "\"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"%s\"}}}",
	         dir);
	REFUSED(load_json(json, NULL, 1, 0, &c), "inline.json: ", "nvme at stage 2",
	        "offload_optimizer.device is nvme but zero_optimization.stage is 2",
	        "needs stage 3", "\"stage\": 3");
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 1, "
	                  "\"offload_param\": {\"device\": \"cpu\"}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "param offload at stage 1",
	        "offload_param.device is cpu but zero_optimization.stage is 1");
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": "
	                  "{\"offload_optimizer\": {\"device\": \"cpu\"}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "cpu offload at stage 0", "stage is 0");
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 3, "
	                  "\"offload_param\": {\"device\": \"nvme\"}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "nvme without path",
	        "offload_param.device is nvme but zero_optimization.offload_param.nvme_path is "
	        "not set",
	        "--nvme_path DIR");
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 3, "
	                  "\"offload_param\": {\"device\": \"nvme\", \"nvme_path\": "
	                  "\"/nonexistent/zinf\"}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "nvme path missing",
	        "/nonexistent/zinf: No such file or directory", "--nvme_path DIR");
	/* null is DeepSpeed's None: not set. */
	REFUSED(load_json("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 3, "
	                  "\"offload_param\": {\"device\": \"nvme\", \"nvme_path\": null}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "nvme_path null", "nvme_path is not set");
	/* Stage 1 and 2 take CPU optimizer offload. */
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"zero_optimization\": {\"stage\": 2, "
	                         "\"offload_optimizer\": {\"device\": \"cpu\"}}}",
	                         NULL, 1, 0, &c),
	               0);
}

static void
test_batch_relations(void)
{
	zinf_config c;
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": "
	                         "4}",
	                         NULL, 4, 0, &c),
	               0);
	T_CHECK_EQ_I64(c.gradient_accumulation_steps, 2);
	T_CHECK_EQ_I64(c.src[ZINF_KEY_GRADIENT_ACCUMULATION_STEPS], ZINF_SRC_DERIVED);
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 48, \"gradient_accumulation_steps\": 3}",
	                         NULL, 2, 0, &c),
	               0);
	T_CHECK_EQ_I64(c.train_micro_batch_size_per_gpu, 8);
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 12}", NULL, 3, 0, &c), 0);
	T_CHECK_EQ_I64(c.train_micro_batch_size_per_gpu, 4);
	T_CHECK_EQ_I64(c.gradient_accumulation_steps, 1);
	T_CHECK_EQ_I64(load_json("{\"train_micro_batch_size_per_gpu\": 5, "
	                         "\"gradient_accumulation_steps\": 3}",
	                         NULL, 7, 0, &c),
	               0);
	T_CHECK_EQ_I64(c.train_batch_size, 105);
	REFUSED(load_json("{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4}", NULL,
	                  4, 0, &c),
	        "inline.json: ", "not divisible", "train_batch_size 30 is not a multiple of",
	        "(= 16)", "gradient_accumulation_steps cannot be derived");
	REFUSED(load_json("{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 4, "
	                  "\"gradient_accumulation_steps\": 2}",
	                  NULL, 2, 0, &c),
	        "inline.json: ", "three given, wrong world",
	        "train_batch_size 32 != ", "world size 2 (= 16)", "set train_batch_size to 16",
	        "--num_gpus 4");
	REFUSED(load_json("{\"train_batch_size\": 9e15, \"train_micro_batch_size_per_gpu\": 9e15}",
	                  NULL, 1048576, 0, &c),
	        "inline.json: ", "overflow", "overflows");
	REFUSED(load_json("{\"gradient_accumulation_steps\": 2}", NULL, 1, 0, &c),
	        "inline.json: ", "none given",
	        "neither train_batch_size nor train_micro_batch_size_per_gpu");
	REFUSED(load_json("{\"train_batch_size\": 8}", NULL, 0, 0, &c), "inline.json: ", "world 0",
	        "world size 0 is out of range");
}

static void
test_auto_and_overrides(void)
{
	zinf_config c;
	zinf_config_overrides ov;
	const char *hf = "{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": "
	                 "\"auto\", \"gradient_accumulation_steps\": \"auto\", "
	                 "\"fp16\": {\"enabled\": \"auto\"}, \"bf16\": {\"enabled\": \"auto\"}, "
	                 "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\", "
	                 "\"betas\": \"auto\", \"eps\": \"auto\", \"weight_decay\": \"auto\"}}, "
	                 "\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": "
	                 "{\"warmup_min_lr\": \"auto\", \"warmup_max_lr\": \"auto\", "
	                 "\"warmup_num_steps\": \"auto\", \"total_num_steps\": \"auto\"}}, "
	                 "\"zero_optimization\": {\"stage\": 3, \"reduce_bucket_size\": \"auto\"}}";
	REFUSED(load_json(hf, NULL, 1, 0, &c), "inline.json: ", "unresolved micro",
	        "train_micro_batch_size_per_gpu is \"auto\"", "--per_device_train_batch_size N");

	zinf_config_overrides_init(&ov);
	char *argv[] = {"x",
	                "--per_device_train_batch_size",
	                "2",
	                "--gradient_accumulation_steps=4",
	                "--learning_rate",
	                "2e-4",
	                "--adam_beta1",
	                "0.8",
	                "--adam_beta2",
	                "0.95",
	                "--adam_epsilon",
	                "1e-6",
	                "--weight_decay",
	                "0.1",
	                "--warmup_steps",
	                "10",
	                "--max_steps",
	                "100",
	                "--bf16",
	                "--nvme_path",
	                "/tmp"};
	int argc = (int)(sizeof(argv) / sizeof(argv[0]));
	for (int i = 1; i < argc;) {
		int rc = zinf_config_override_arg(&ov, argc, argv, &i, g_err, sizeof(g_err));
		T_CHECK(rc == 0, "override %s: rc %d %s", argv[i], rc, g_err);
		if (rc)
			break;
	}
	REFUSED(load_json(hf, &ov, 2, 0, &c), "inline.json: ", "unresolved model key",
	        "zero_optimization.reduce_bucket_size is \"auto\"", "hidden^2 of the model",
	        "--hidden H");
	T_CHECK_EQ_I64(load_json(hf, &ov, 2, 64, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK_EQ_I64(c.train_batch_size, 16);
	T_CHECK(c.lr == 2e-4 && c.warmup_max_lr == 2e-4 && c.warmup_min_lr == 0, "lr");
	T_CHECK(c.betas[0] == 0.8 && c.betas[1] == 0.95 && c.eps == 1e-6 && c.weight_decay == 0.1,
	        "adam");
	T_CHECK_EQ_I64(c.warmup_num_steps, 10);
	T_CHECK_EQ_I64(c.total_num_steps, 100);
	T_CHECK(c.bf16_enabled && !c.fp16_enabled, "bf16 from --bf16");
	T_CHECK_EQ_I64(c.reduce_bucket_size, 64 * 64);

	/* Only one beta: betas stays unresolved and the message names both flags. */
	zinf_config_overrides_init(&ov);
	ov.given = 1u << ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE | 1u << ZINF_OV_ADAM_BETA1 |
	           1u << ZINF_OV_GRADIENT_ACCUMULATION_STEPS | 1u << ZINF_OV_LEARNING_RATE;
	ov.value[ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE] = 1;
	ov.value[ZINF_OV_GRADIENT_ACCUMULATION_STEPS] = 1;
	ov.value[ZINF_OV_LEARNING_RATE] = 1e-3;
	ov.value[ZINF_OV_ADAM_BETA1] = 0.9;
	REFUSED(load_json(hf, &ov, 1, 64, &c), "inline.json: ", "one beta",
	        "optimizer.params.betas is \"auto\"", "--adam_beta1 B1 --adam_beta2 B2");

	/* A flag that contradicts the file is an error; one that fills a default applies. */
	zinf_config_overrides_init(&ov);
	ov.given = 1u << ZINF_OV_GRADIENT_ACCUMULATION_STEPS;
	ov.value[ZINF_OV_GRADIENT_ACCUMULATION_STEPS] = 4;
	REFUSED(load_json("{\"train_batch_size\": 8, \"gradient_accumulation_steps\": 8}", &ov, 1,
	                  0, &c),
	        "inline.json: ", "flag vs file", "gradient_accumulation_steps is 8 in the file",
	        "--gradient_accumulation_steps 4", "\"auto\"");
	zinf_config_overrides_init(&ov);
	ov.given = 1u << ZINF_OV_LEARNING_RATE | 1u << ZINF_OV_MAX_GRAD_NORM;
	ov.value[ZINF_OV_LEARNING_RATE] = 5e-5;
	ov.value[ZINF_OV_MAX_GRAD_NORM] = 2;
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8}", &ov, 1, 0, &c), 0);
	T_CHECK(c.lr == 5e-5 && c.gradient_clipping == 2, "flags fill defaults");
	T_CHECK_EQ_I64(c.src[ZINF_KEY_OPTIMIZER_LR], ZINF_SRC_FLAG);
	zinf_config_overrides_init(&ov);
	ov.given = 1u << ZINF_OV_FP16;
	REFUSED(load_json("{\"train_batch_size\": 8, \"bf16\": {\"enabled\": true}}", &ov, 1, 0,
	                  &c),
	        "inline.json: ", "--fp16 with bf16 file", "fp16.enabled and bf16.enabled");
	/* "enabled": "auto" without the switch is false. */
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"fp16\": {\"enabled\": \"auto\"}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(!c.fp16_enabled && c.src[ZINF_KEY_FP16_ENABLED] == ZINF_SRC_AUTO, "fp16 auto");
}

static void
test_override_args(void)
{
	zinf_config_overrides ov;
	zinf_config_overrides_init(&ov);
	char *a1[] = {"x", "--learning_rate"};
	int i = 1;
	T_CHECK_EQ_I64(zinf_config_override_arg(&ov, 2, a1, &i, g_err, sizeof(g_err)), -EINVAL);
	T_CHECK(strstr(g_err, "--learning_rate needs a value"), "%s", g_err);
	char *a2[] = {"x", "--max_steps", "1.5"};
	i = 1;
	T_CHECK_EQ_I64(zinf_config_override_arg(&ov, 3, a2, &i, g_err, sizeof(g_err)), -EINVAL);
	T_CHECK(strstr(g_err, "not a whole number"), "%s", g_err);
	char *a3[] = {"x", "--adam_beta2", "abc"};
	i = 1;
	T_CHECK_EQ_I64(zinf_config_override_arg(&ov, 3, a3, &i, g_err, sizeof(g_err)), -EINVAL);
	T_CHECK(strstr(g_err, "'abc' is not a number"), "%s", g_err);
	char *a4[] = {"x", "--num_gpus", "2"};
	i = 1;
	T_CHECK_EQ_I64(zinf_config_override_arg(&ov, 3, a4, &i, g_err, sizeof(g_err)), -ENOENT);
	T_CHECK_EQ_I64(i, 1);
	char *a5[] = {"x", "--learning_rate_x=1"};
	T_CHECK_EQ_I64(zinf_config_override_arg(&ov, 2, a5, &i, g_err, sizeof(g_err)), -ENOENT);
	T_CHECK_EQ_I64(ov.given, 0);
}

static void
test_scheduler(void)
{
	zinf_config c;
	REFUSED(load_json("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupDecayLR\"}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "decay without total",
	        "scheduler.params.total_num_steps is required by WarmupDecayLR", "--max_steps N");
	REFUSED(load_json("{\"train_batch_size\": 8, \"scheduler\": {\"params\": "
	                  "{\"warmup_max_lr\": 0.1}, \"type\": \"WarmupCosineLR\"}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "param of another scheduler",
	        "scheduler.params.warmup_max_lr: not a parameter of WarmupCosineLR",
	        "cos_min_ratio");
	REFUSED(load_json("{\"train_batch_size\": 8, \"scheduler\": {\"type\": \"WarmupLR\", "
	                  "\"params\": {\"warmup_num_steps\": 50, \"total_num_steps\": 10}}}",
	                  NULL, 1, 0, &c),
	        "inline.json: ", "total for WarmupLR", "not a parameter of WarmupLR");
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 8, \"scheduler\": {\"type\": "
	                         "\"WarmupCosineLR\", \"params\": {\"total_num_steps\": 100, "
	                         "\"warmup_num_steps\": 5, \"cos_min_ratio\": 0.1}}}",
	                         NULL, 1, 0, &c),
	               0);
	T_CHECK(c.scheduler_type == ZINF_SCHEDULER_WARMUP_COSINE_LR && c.cos_min_ratio == 0.1,
	        "cosine");
}

static void
test_malformed_json(const char *dir)
{
	zinf_config c;
	/* Line 3, column 7: the missing ':' after "b". */
	REFUSED(load_json("{\n  \"a\": 1,\n  \"b\" 2\n}\n", NULL, 1, 0, &c),
	        "inline.json:3:", "missing colon", "malformed JSON");
	T_CHECK(!strncmp(g_err, "inline.json:3:7:", 16), "position: %s", g_err);
	REFUSED(load_json("{\"train_batch_size\": 8,}", NULL, 1, 0, &c),
	        "inline.json:1:", "trailing comma", "malformed JSON");
	REFUSED(load_json("{\"train_batch_size\": 8", NULL, 1, 0, &c),
	        "inline.json:1:", "unterminated", "malformed JSON");
	REFUSED(load_json("[1, 2]", NULL, 1, 0, &c), "inline.json: ", "array top level",
	        "the top level is an array");
	char path[4096];
	snprintf(path, sizeof(path), "%s/broken.json", dir);
	FILE *f = fopen(path, "w");
	T_CHECK(f != NULL, "fopen %s", path);
	if (f) {
		fputs("{\n\"bf16\": {\"enabled\": tru}\n}\n", f);
		fclose(f);
		char want[4200];
		snprintf(want, sizeof(want), "%s:2:", path);
		REFUSED(load_path(path, NULL, 1, 0, &c), want, "file position", "malformed JSON");
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/does-not-exist.json", dir);
	int rc = load_path(path, NULL, 1, 0, &c);
	T_CHECK(rc == -ENOENT, "missing file rc %d", rc);
	T_CHECK(!strncmp(g_err, path, strlen(path)) && strstr(g_err, "No such file"), "%s", g_err);
}

static void
test_memory_plan(const char *dir)
{
	zinf_config c;
	zinf_memory_plan p;
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 4, \"bf16\": {\"enabled\": true}, "
	                         "\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": "
	                         "{\"device\": \"cpu\"}}}",
	                         NULL, 4, 0, &c),
	               0);
	T_CHECK_EQ_I64(zinf_config_memory_plan(&c, 1000, &p), 0);
	/* N = 250: params 2N GPU, fp32 grads 4N GPU, master/m/v 4N each on host. */
	T_CHECK_EQ_I64(p.partition_elems, 250);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_GPU], 1500);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_HOST], 3000);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_NVME], 0);

	/* Stage 0, fp32: nothing partitioned, no separate master. */
	T_CHECK_EQ_I64(load_json("{\"train_batch_size\": 4}", NULL, 2, 0, &c), 0);
	T_CHECK_EQ_I64(zinf_config_memory_plan(&c, 1001, &p), 0);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_GPU], 1001 * (4 + 4 + 8));
	T_CHECK_EQ_I64(p.n_items, 4);

	/* Stage 3, optimizer and params on NVMe, 3 ranks (ceil), sub groups of 100. */
	char json[1024];
	snprintf(json, sizeof(json),
	         "{\"train_batch_size\": 3, \"fp16\": {\"enabled\": true}, \"zero_optimization\": "
	         "{\"stage\": 3, \"sub_group_size\": 100, \"offload_optimizer\": {\"device\": "
	         "\"nvme\", \"nvme_path\": \"%s\", \"buffer_count\": 2}, \"offload_param\": "
	         "{\"device\": \"nvme\", \"nvme_path\": \"%s\", \"buffer_count\": 3, "
	         "\"buffer_size\": 10}}}",
	         dir, dir);
	T_CHECK_EQ_I64(load_json(json, NULL, 3, 0, &c), 0);
	T_CHECK(!g_err[0], "%s", g_err);
	T_CHECK_EQ_I64(zinf_config_memory_plan(&c, 1000, &p), 0);
	T_CHECK_EQ_I64(p.partition_elems, 334);
	/* offload_param: the fp32 gradient partition is in host memory too */
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_GPU], 0);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_NVME], 2 * 334 + 12 * 334);
	T_CHECK_EQ_I64(p.per_tier[ZINF_TIER_HOST], 4 * 334 + 2 * 100 * 4 + 3 * 10 * 2);

	zinf_config_init_defaults(&c);
	T_CHECK_EQ_I64(zinf_config_memory_plan(&c, 1000, &p), -EINVAL);
}

/* Trainer defaults (overrides marked soft) fill "auto" but never fight a number in the file
 * or replace DeepSpeed's default for an absent key. */
static void
test_soft_defaults(void)
{
	zinf_config c;
	zinf_config_overrides ov;
	zinf_config_overrides_init(&ov);
	ov.given = ov.soft = (1u << ZINF_OV_LEARNING_RATE) | (1u << ZINF_OV_MAX_GRAD_NORM) |
	                     (1u << ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE);
	ov.value[ZINF_OV_LEARNING_RATE] = 3e-3;
	ov.value[ZINF_OV_MAX_GRAD_NORM] = 1.0;
	ov.value[ZINF_OV_PER_DEVICE_TRAIN_BATCH_SIZE] = 8;
	const char *file = "{\"train_micro_batch_size_per_gpu\": \"auto\", "
	                   "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.001}}}";
	int rc = load_json(file, &ov, 1, 0, &c);
	T_CHECK(rc == 0, "soft defaults: %s", g_err);
	T_CHECK(c.lr == 0.001, "file lr replaced by a default: %g", c.lr);
	T_CHECK(c.gradient_clipping == 0.0, "absent key took a default: %g", c.gradient_clipping);
	T_CHECK(c.train_micro_batch_size_per_gpu == 8, "auto not filled: %lld",
	        (long long)c.train_micro_batch_size_per_gpu);
	/* DeepSpeed's fp16.consecutive_hysteresis is a known key */
	T_CHECK(load_json("{\"train_micro_batch_size_per_gpu\": 1, \"fp16\": {\"enabled\": true, "
	                  "\"consecutive_hysteresis\": true}}", NULL, 1, 0, &c) == 0 &&
	                c.fp16_consecutive_hysteresis,
	        "fp16.consecutive_hysteresis: %s", g_err);
	/* activation_checkpointing loads; cpu_checkpointing (activations in host memory) is not
	 * implemented and says so */
	T_CHECK(load_json("{\"train_micro_batch_size_per_gpu\": 1, \"activation_checkpointing\": "
	                  "{\"partition_activations\": true, \"number_checkpoints\": 4}}", NULL, 1,
	                  0, &c) == 0 && c.ac_partition_activations && c.ac_number_checkpoints == 4,
	        "activation_checkpointing: %s", g_err);
	REFUSED(load_json("{\"train_micro_batch_size_per_gpu\": 1, \"activation_checkpointing\": "
	                  "{\"cpu_checkpointing\": true}}", NULL, 1, 0, &c),
	        "inline.json: ", "cpu_checkpointing", "cpu_checkpointing is true", "set it to false");
	ov.soft = 0; /* the same values as real flags: the file's lr conflicts */
	REFUSED(load_json(file, &ov, 1, 0, &c), "inline.json: ", "flag vs file", "--learning_rate");
}

int
main(void)
{
	char *dir = t_mkdtemp("zinf-test-config");
	test_defaults_are_deepspeeds();
	test_shipped_configs_load(dir);
	test_bad_configs_refused();
	test_unknown_keys();
	test_types_and_ranges();
	test_stage_and_offload(dir);
	test_batch_relations();
	test_auto_and_overrides();
	test_soft_defaults();
	test_override_args();
	test_scheduler();
	test_malformed_json(dir);
	test_memory_plan(dir);
	rmdir(dir);
	free(dir);
	return t_result("test_config");
}
