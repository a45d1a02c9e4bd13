/* zinf tune: a quick run in a temp folder finishes with sane rates, writes a fragment, report
 * and chart; the fragment merged into a config loads and resolves with the tuned values; the
 * report feeds zinf plan; bad budgets, paths and seconds are refused naming flag, value, fix. */
#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "bench/bench.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/plan.h"

static char errfile[4200];

/* Runs zinf tune with argv, stderr captured into errfile; returns the exit code. */
static int
run_tune(const char *const *args, int n, char *captured, size_t caplen)
{
	char *argv[32];
	argv[0] = (char *)"tune";
	for (int i = 0; i < n; i++)
		argv[i + 1] = (char *)args[i];
	argv[n + 1] = NULL;
	fflush(stderr);
	int saved = dup(2);
	int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	int rc = zinf_tune_main(n + 1, argv);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	FILE *f = fopen(errfile, "r");
	size_t got = f ? fread(captured, 1, caplen - 1, f) : 0;
	captured[got] = 0;
	if (f)
		fclose(f);
	return rc;
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *buf = calloc(1, 1 << 20);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void
test_refusals(const char *dir)
{
	char msg[8192], file[4200];
	snprintf(file, sizeof(file), "%s/plain", dir);
	FILE *f = fopen(file, "w");
	fclose(f);
	struct {
		const char *args[6];
		int n;
		const char *want;
	} cases[] = {
	        {{"--nvme_path", dir, "--host_budget", "1M"}, 4,
	         "--host_budget 1 MiB: below 64 MiB, the least the smallest setting needs"},
	        {{"--nvme_path", dir, "--host_budget", "100T"}, 4,
	         "--host_budget 100 TiB: more than this machine's"},
	        {{"--nvme_path", dir, "--host_budget", "lots"}, 4, "--host_budget"},
	        {{"--nvme_path", "/nonexistent/zinf-tune"}, 2,
	         "--nvme_path '/nonexistent/zinf-tune': No such file or directory: pass an existing "
	         "folder"},
	        {{"--nvme_path", file}, 2, "not a folder"},
	        {{"--nvme_path", dir, "--seconds", "0"}, 4, "--seconds"},
	        {{"--host_budget", "1G"}, 2, "--nvme_path DIR is required"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = run_tune(cases[i].args, cases[i].n, msg, sizeof(msg));
		T_CHECK(rc == 2, "case %zu: rc %d, stderr: %s", i, rc, msg);
		T_CHECK(strstr(msg, cases[i].want) != NULL, "case %zu: want '%s' in: %s", i,
		        cases[i].want, msg);
	}
	unlink(file);
}

static void
test_quick(const char *dir)
{
	char out[4200], rep[4200], svg[4200], base[4200], merged[4200], msg[16384];
	snprintf(out, sizeof(out), "%s/tuned.json", dir);
	snprintf(rep, sizeof(rep), "%s/tuned.report.json", dir);
	snprintf(svg, sizeof(svg), "%s/tuned.svg", dir);
	snprintf(base, sizeof(base), "%s/ds.json", dir);
	snprintf(merged, sizeof(merged), "%s/ds.tuned.json", dir);
	FILE *f = fopen(base, "w");
	fprintf(f, "{\"train_micro_batch_size_per_gpu\": 2, \"gradient_accumulation_steps\": 1,\n"
	           " \"bf16\": {\"enabled\": true},\n"
	           " \"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": 5e8},\n"
	           " \"aio\": {\"queue_depth\": 2, \"single_submit\": false}}\n");
	fclose(f);
	const char *args[] = {"--nvme_path", dir, "--quick", "--seconds", "3",
	                      "--out",       out, "--merge", base};
	int rc = run_tune(args, 9, msg, sizeof(msg));
	if (rc == 1) {
		/* only acceptable when the folder can do neither O_DIRECT nor buffered I/O */
		char probe[4300];
		snprintf(probe, sizeof(probe), "%s/probe", dir);
		int fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0600);
		if (fd < 0) {
			fd = open(probe, O_RDWR | O_CREAT, 0600);
			if (fd < 0) {
				fprintf(stderr, "test_tune: %s takes no files: skipped\n", dir);
				exit(T_EXIT_SKIP);
			}
		}
		close(fd);
		unlink(probe);
	}
	T_CHECK(rc == 0, "quick tune rc %d: %s", rc, msg);
	if (rc)
		return;
	struct stat st;
	T_CHECK(!stat(svg, &st) && st.st_size > 500, "chart %s missing or empty", svg);
	char *s = slurp(svg);
	T_CHECK(s && strstr(s, "<svg") && strstr(s, "buffer_count") && strstr(s, "</svg>"),
	        "chart content");
	free(s);

	/* sane rates: > 1 MB/s, < 100 GB/s; tuned at least as fast as the defaults (confirmed) */
	char *r = slurp(rep);
	cJSON *j = r ? cJSON_Parse(r) : NULL;
	free(r);
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "zinf_tune");
	T_CHECK(m != NULL, "report has no zinf_tune");
	if (m) {
		double rd = cJSON_GetObjectItem(m, "read_GBps")->valuedouble;
		double wr = cJSON_GetObjectItem(m, "write_GBps")->valuedouble;
		double sc = cJSON_GetObjectItem(m, "score_GBps")->valuedouble;
		double df = cJSON_GetObjectItem(m, "default_score_GBps")->valuedouble;
		T_CHECK(rd > 1e-3 && rd < 100 && wr > 1e-3 && wr < 100, "read %g write %g", rd, wr);
		T_CHECK(sc >= df && df > 1e-3, "tuned %g defaults %g", sc, df);
		T_CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(m, "trials")) >= 10, "few trials");
		printf("quick tune: defaults %.3f GB/s, tuned %.3f GB/s, read %.3f write %.3f\n", df,
		       sc, rd, wr);
	}

	/* the merged config loads unchanged and carries the fragment's values over the file's */
	cJSON *frag = cJSON_GetObjectItemCaseSensitive(j, "config");
	zinf_config *cfg = malloc(sizeof(*cfg));
	char err[1024];
	zinf_config_init_defaults(cfg);
	int lr = zinf_config_load_file(merged, NULL, cfg, err, sizeof(err));
	T_CHECK(lr == 0, "%s", err);
	if (!lr)
		T_CHECK(!zinf_config_resolve(cfg, 1, 768, err, sizeof(err)), "%s", err);
	if (!lr && frag) {
		const cJSON *aio = cJSON_GetObjectItem(frag, "aio");
		const cJSON *z = cJSON_GetObjectItem(frag, "zero_optimization");
		const cJSON *oo = cJSON_GetObjectItem(z, "offload_optimizer");
		T_CHECK_EQ_I64(cfg->stage, 3);
		T_CHECK_EQ_I64(cfg->train_micro_batch_size_per_gpu, 2); /* from the base file */
		T_CHECK_EQ_I64(cfg->reduce_bucket_size, 500000000);
		T_CHECK_EQ_I64(cfg->aio_queue_depth, cJSON_GetObjectItem(aio, "queue_depth")->valueint);
		T_CHECK_EQ_I64(cfg->aio_block_size, cJSON_GetObjectItem(aio, "block_size")->valuedouble);
		T_CHECK_EQ_I64(cfg->aio_thread_count,
		               cJSON_GetObjectItem(aio, "thread_count")->valueint);
		T_CHECK_EQ_I64(cfg->sub_group_size,
		               cJSON_GetObjectItem(z, "sub_group_size")->valuedouble);
		T_CHECK_EQ_I64(cfg->offload_optimizer.device, ZINF_DEVICE_NVME);
		T_CHECK_EQ_I64(cfg->offload_param.device, ZINF_DEVICE_NVME);
		T_CHECK_EQ_I64(cfg->offload_optimizer.buffer_count,
		               cJSON_GetObjectItem(oo, "buffer_count")->valueint);
		T_CHECK(cfg->offload_optimizer.pin_memory ==
		                cJSON_IsTrue(cJSON_GetObjectItem(oo, "pin_memory")),
		        "pin_memory");
		/* a named backend is loaded as that backend; the default (auto) is left out */
		T_CHECK(cJSON_GetObjectItem(aio, "backend") ? cfg->aio_backend != ZINF_AIO_AUTO
		                                            : cfg->aio_backend == ZINF_AIO_AUTO,
		        "aio.backend in the fragment vs the loaded config");
	}
	free(cfg);
	cJSON_Delete(j);

	/* zinf plan reads the fragment (and its report next to it) */
	zinf_plan_hw hw;
	zinf_plan_job job;
	zinf_plan_hw_init(&hw);
	zinf_plan_job_init(&job);
	T_CHECK(!zinf_plan_load_tuned(out, &hw, &job, err, sizeof(err)), "%s", err);
	T_CHECK(hw.nvme_read_bw > 0 && hw.nvme_mixed_bw > 0 && hw.nvme_path[0], "%g %g '%s'",
	        hw.nvme_read_bw, hw.nvme_mixed_bw, hw.nvme_path);
	unlink(out);
	unlink(rep);
	unlink(svg);
	unlink(base);
	unlink(merged);
	/* the swap files are gone */
	char run[4300];
	snprintf(run, sizeof(run), "%s/zinf-tune-%d", dir, (int)getpid());
	T_CHECK(access(run, F_OK) != 0, "%s left behind", run);
}

int
main(void)
{
	char *dir = t_mkdtemp("test_tune");
	char *rp = realpath(dir, NULL);
	snprintf(errfile, sizeof(errfile), "%s/stderr.txt", rp);
	test_refusals(rp);
	test_quick(rp);
	unlink(errfile);
	if (rmdir(rp))
		fprintf(stderr, "test_tune: %s not empty\n", rp);
	free(rp);
	free(dir);
	if (t_failures) {
		fprintf(stderr, "test_tune: %d checks failed\n", t_failures);
		return T_EXIT_FAIL;
	}
	printf("test_tune: ok\n");
	return T_EXIT_PASS;
}
