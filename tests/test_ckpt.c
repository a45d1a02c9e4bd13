/* Checkpoints across ranks and zinf ckpt (issue 9): CPU ranks forked here (shm comm from
 * MASTER_ADDR / MASTER_PORT), each an engine training the tiny GPT-2 of engine_tiny.h.
 * Suites (test_ckpt <suite>):
 *   resume2, resume4  2 ranks (stages 0 and 2) / 4 ranks (stage 1) save at step K and go on
 *                     to S; fresh ranks resume from the checkpoint: the losses of steps K..S
 *                     and the final weights are bitwise those of the uninterrupted run, and
 *                     every rank gets its own client bytes back
 *   resume3           the same at stage 3 on 2 and 4 ranks (per-block shards with padding
 *                     slots, written owned-only in the partition table's order), with
 *                     stage3_param_persistence_threshold 0 and one that keeps small blocks
 *   consolidate       a 2-rank stage-2 checkpoint with the 16-bit export: consolidate --dtype
 *                     fp32 gives exactly the gathered master; --dtype bf16 gives a file
 *                     byte-identical to rank 0's export; the same for a 1-rank checkpoint
 *   consolidate3      the same for 2-rank stage-3 checkpoints (persistence 0 and 30000)
 *   refuse            resuming on another world size or stage, a tampered shard and a missing
 *                     shard are refused naming the cause (load, inspect, consolidate)
 *   nvme              1 rank, optimizer state on NVMe (stage 3): resume is bit-exact and
 *                     consolidate equals the master read back through optstep
 *   rss               consolidate of a 6-layer model grows the peak RSS (VmHWM, reset through
 *                     /proc/self/clear_refs) by a few tensors, not by the model
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "engine/ckpt.h"
#include "engine/engine.h"
#include "test_ranks.h"
#include "test_util.h"

#define TT 16 /* tokens per row */
#define M 2   /* rows per micro-step per rank */
#define A 2   /* accumulation steps */
#define S 6   /* optimizer steps */
#define K 3   /* the checkpoint's step */

#include "engine_tiny.h"

static char *g_dir; /* this run's scratch folder */

typedef struct job {
	int stage;
	const char *offload; /* none | nvme */
	int from, to;        /* steps trained: [from, to) */
	int save_at;         /* save after this step (0: never) */
	bool export16;
	const char *load;    /* resume from this folder first (NULL: fresh) */
	const char *save;    /* checkpoint folder */
	const char *persist; /* stage3_param_persistence_threshold (NULL: the default) */
} job;

/* What a rank leaves in the shared mapping. */
typedef struct result {
	int rc;
	float loss[S];
	char msg[1024];
	char client[32];
	float master[]; /* total_numel */
} result;

static int64_t g_numel;

static int
make_engine(const job *j, int rank, int world, zinf_engine **e, char *err, size_t errlen)
{
	char off[512] = "";
	int at = 0;
	if (!strcmp(j->offload, "nvme"))
		at = snprintf(off, sizeof(off), ", \"offload_optimizer\": {\"device\": \"nvme\", "
		             "\"nvme_path\": \"%s\"}", g_dir);
	if (j->persist)
		snprintf(off + at, sizeof(off) - (size_t)at,
		         ", \"stage3_param_persistence_threshold\": %s", j->persist);
	return tiny_engine(j->stage, M, A, NULL, off, rank, world, 7, "ckpt", e, err, errlen);
}

static int
run_job(const job *j, int rank, int world, result *res)
{
	zinf_engine *e = NULL;
	int r = make_engine(j, rank, world, &e, res->msg, sizeof(res->msg));
	if (r)
		return r;
	if (j->load) {
		void *client = NULL;
		size_t clen = 0;
		r = zinf_engine_load(e, j->load, &client, &clen);
		if (r)
			snprintf(res->msg, sizeof(res->msg), "%s", zinf_engine_error(e));
		else
			snprintf(res->client, sizeof(res->client), "%.*s", (int)clen,
			         client ? (char *)client : "");
		free(client);
	}
	int32_t tok[M * TT], tgt[M * TT];
	for (int s = j->from; s < j->to && !r; s++) {
		double sum = 0;
		for (int a = 0; a < A && !r; a++) {
			float loss = 0;
			make_rows(s, a * M * world + rank * M, M, tok, tgt);
			r = zinf_engine_forward(e, tok, tgt, &loss);
			if (!r)
				r = zinf_engine_backward(e);
			if (!r)
				r = zinf_engine_step(e);
			sum += loss;
		}
		res->loss[s] = (float)(sum / A);
		if (!r && j->save_at == s + 1) {
			char client[32];
			int n = snprintf(client, sizeof(client), "rank%d", rank);
			r = zinf_engine_save(e, j->save, NULL, client, (size_t)n, j->export16);
		}
		if (r)
			snprintf(res->msg, sizeof(res->msg), "%s", zinf_engine_error(e));
	}
	if (!r && (r = zinf_engine_master(e, res->master)))
		snprintf(res->msg, sizeof(res->msg), "%s", zinf_engine_error(e));
	zinf_engine_destroy(e);
	return r;
}

static size_t
result_size(void)
{
	return sizeof(result) + (size_t)g_numel * sizeof(float);
}

/* Forks `world` ranks running j; their results land in res (result_size() apart). Every rank
 * ends within 120 s (killed otherwise). Returns the number of ranks whose job failed. */
static int
run_ranks(const job *j, int world, char *res)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", t_free_port());
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	setenv("MASTER_PORT", port, 1);
	setenv("ZINF_COMM_TIMEOUT_S", "60", 1);
	size_t one = result_size();
	char *shared = mmap(NULL, one * (size_t)world, PROT_READ | PROT_WRITE,
	                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED) {
		perror("mmap");
		exit(T_EXIT_FAIL);
	}
	memset(shared, 0, one * (size_t)world);
	pid_t pids[8];
	fflush(stdout);
	fflush(stderr);
	for (int r = 0; r < world; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			result *mine = (result *)(shared + one * (size_t)r);
			mine->rc = run_job(j, r, world, mine);
			_exit(0);
		}
	}
	time_t t0 = time(NULL);
	for (int left = world; left;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p > 0) {
			left--;
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				fprintf(stderr, "a rank (pid %d) ended with status %#x\n", (int)p, st);
			continue;
		}
		if (time(NULL) - t0 > 120) {
			for (int r = 0; r < world; r++)
				kill(pids[r], SIGKILL);
			t0 = time(NULL) + 100000;
		}
		usleep(5000);
	}
	memcpy(res, shared, one * (size_t)world);
	munmap(shared, one * (size_t)world);
	int bad = 0;
	for (int r = 0; r < world; r++) {
		result *x = (result *)(res + one * (size_t)r);
		bad += x->rc != 0;
	}
	return bad;
}

static result *
rank_res(char *res, int r)
{
	return (result *)(res + result_size() * (size_t)r);
}

static char *
alloc_res(int world)
{
	char *p = calloc((size_t)world, result_size());
	if (!p)
		exit(T_EXIT_FAIL);
	return p;
}

static void
show_failures(char *res, int world, const char *what)
{
	for (int r = 0; r < world; r++)
		if (rank_res(res, r)->rc)
			fprintf(stderr, "%s: rank %d: rc %d: %s\n", what, r, rank_res(res, r)->rc,
			        rank_res(res, r)->msg);
}

/* Trains S steps on `world` ranks saving at K into dir, then resumes fresh ranks from dir
 * and checks the continuation is bitwise the uninterrupted run. */
static void
resume_case_p(int world, int stage, const char *offload, const char *persist)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/resume-w%d-s%d-%s%s%s", g_dir, world, stage, offload,
	         persist ? "-p" : "", persist ? persist : "");
	char *full = alloc_res(world), *res = alloc_res(world);
	job j = {.stage = stage, .offload = offload, .from = 0, .to = S, .save_at = K, .save = dir,
	         .persist = persist};
	int bad = run_ranks(&j, world, full);
	show_failures(full, world, "uninterrupted run");
	T_CHECK(bad == 0, "world %d stage %d %s: the uninterrupted run failed", world, stage,
	        offload);
	job k = {.stage = stage, .offload = offload, .from = K, .to = S, .load = dir,
	         .persist = persist};
	bad = run_ranks(&k, world, res);
	show_failures(res, world, "resumed run");
	T_CHECK(bad == 0, "world %d stage %d %s: the resumed run failed", world, stage, offload);
	for (int r = 0; r < world && !bad; r++) {
		result *a = rank_res(full, r), *b = rank_res(res, r);
		char want[32];
		snprintf(want, sizeof(want), "rank%d", r);
		T_CHECK(!strcmp(b->client, want), "rank %d got client bytes '%s', want '%s'", r,
		        b->client, want);
		for (int s = K; s < S; s++)
			T_CHECK(memcmp(&a->loss[s], &b->loss[s], sizeof(float)) == 0,
			        "world %d stage %d %s rank %d step %d: loss %.9g resumed, %.9g "
			        "uninterrupted", world, stage, offload, r, s + 1, (double)b->loss[s],
			        (double)a->loss[s]);
		T_CHECK(memcmp(a->master, b->master, (size_t)g_numel * sizeof(float)) == 0,
		        "world %d stage %d %s rank %d: final weights differ after resume", world,
		        stage, offload, r);
	}
	printf("world %d stage %d offload %s%s%s: resumed at step %d, losses and weights bitwise "
	       "equal (step %d loss %.6f)\n", world, stage, offload, persist ? " persistence " : "",
	       persist ? persist : "", K, S, (double)rank_res(res, 0)->loss[S - 1]);
	free(full);
	free(res);
}

static void
resume_case(int world, int stage, const char *offload)
{
	resume_case_p(world, stage, offload, NULL);
}

/* Stage 3's packed shards must have padding slots at this world size (else the owned-only
 * layout of the shard files would equal the packed one and the cases below prove less):
 * block b gives every rank round_up(ceil(n_b / W), ZINF_BLOCK_ALIGN) slots. */
static int64_t
stage3_padding(int world)
{
	zinf_model_layout lay;
	char err[256];
	T_CHECK(zinf_model_layout_init(&g_mc, &lay, err, sizeof(err)) == 0, "%s", err);
	int64_t pad = 0;
	for (int b = 0; b < lay.nblocks; b++) {
		int64_t n = lay.block_numel[b], per = (n + world - 1) / world;
		per = (per + ZINF_BLOCK_ALIGN - 1) / ZINF_BLOCK_ALIGN * ZINF_BLOCK_ALIGN;
		pad += per * world - n;
	}
	zinf_model_layout_free(&lay);
	return pad;
}

static void
resume3_case(void)
{
	for (int world = 2; world <= 4; world += 2) {
		int64_t pad = stage3_padding(world);
		T_CHECK(pad > 0, "world %d: the stage-3 shards have no padding slots", world);
		printf("world %d stage 3: %lld padding slots over the ranks' shards\n", world,
		       (long long)pad);
		resume_case_p(world, 3, "none", "0");
		resume_case_p(world, 3, "none", "30000");
	}
}

static void *
read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *p = malloc((size_t)n + 1);
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return p;
}

static bool
same_file(const char *a, const char *b)
{
	size_t la = 0, lb = 0;
	void *pa = read_whole(a, &la), *pb = read_whole(b, &lb);
	bool same = pa && pb && la == lb && memcmp(pa, pb, la) == 0;
	free(pa);
	free(pb);
	return same;
}

/* Consolidates folder (fp32) and checks every tensor element equals master. */
static void
check_fp32(const char *folder, const float *master, const char *what)
{
	char out[4200], err[2048];
	snprintf(out, sizeof(out), "%s-fp32.safetensors", folder);
	int rc = zinf_ckpt_consolidate(folder, NULL, out, ZINF_SAVE_F32, err, sizeof(err));
	T_CHECK(rc == 0, "%s: consolidate fp32: %s", what, err);
	if (rc)
		return;
	zinf_model_layout lay;
	T_CHECK(zinf_model_layout_init(&g_mc, &lay, err, sizeof(err)) == 0, "%s", err);
	float *got = calloc((size_t)g_numel, sizeof(float));
	rc = zinf_model_load_safetensors(out, &g_mc, &lay, got, err, sizeof(err));
	T_CHECK(rc == 0, "%s: loading the consolidated file: %s", what, err);
	int64_t diff = 0, n = 0;
	for (int i = 0; i < lay.ntensors && !rc; i++) {
		const zinf_tensor_desc *t = &lay.tensors[i];
		int64_t cnt = t->hf_rows * t->shape[1];
		n += cnt;
		for (int64_t k = 0; k < cnt; k++)
			diff += memcmp(&got[t->offset + k], &master[t->offset + k], 4) != 0;
	}
	T_CHECK(diff == 0, "%s: %lld of %lld consolidated fp32 elements differ from the master",
	        what, (long long)diff, (long long)n);
	printf("%s: consolidated fp32 equals the master (%lld elements)\n", what, (long long)n);
	free(got);
	zinf_model_layout_free(&lay);
}

static void
consolidate_case(int stage, const char *persist)
{
	for (int world = stage == 3 ? 2 : 1; world <= 2; world++) {
		char dir[4096], folder[4200], out[4300], exp[4300], err[2048];
		snprintf(dir, sizeof(dir), "%s/cons-w%d-s%d-p%s", g_dir, world, stage,
		         persist ? persist : "default");
		char *res = alloc_res(world);
		job j = {.stage = stage, .offload = "none", .from = 0, .to = K, .save_at = K,
		         .export16 = true, .save = dir, .persist = persist};
		int bad = run_ranks(&j, world, res);
		show_failures(res, world, "consolidate run");
		T_CHECK(bad == 0, "world %d: training for the checkpoint failed", world);
		if (bad) {
			free(res);
			continue;
		}
		snprintf(folder, sizeof(folder), "%s/global_step%d", dir, K);
		char what[64];
		snprintf(what, sizeof(what), "world %d stage %d%s%s", world, stage,
		         persist ? " persistence " : "", persist ? persist : "");
		check_fp32(folder, rank_res(res, 0)->master, what);
		/* bf16 from the shards = rank 0's export from the gathered parameters */
		snprintf(out, sizeof(out), "%s/bf16", dir);
		mkdir(out, 0755);
		snprintf(out, sizeof(out), "%s/bf16/model.safetensors", dir);
		snprintf(exp, sizeof(exp), "%s/model.safetensors", folder);
		int rc = zinf_ckpt_consolidate(dir, NULL, out, ZINF_SAVE_BF16, err, sizeof(err));
		T_CHECK(rc == 0, "%s: consolidate bf16: %s", what, err);
		bool same = same_file(out, exp);
		T_CHECK(same, "%s: consolidated bf16 %s differs from the export %s", what, out, exp);
		snprintf(out, sizeof(out), "%s/bf16/config.json", dir);
		T_CHECK(access(out, R_OK) == 0, "%s: no config.json next to the output", what);
		/* inspect: all checks pass */
		FILE *f = fopen("/dev/null", "w");
		rc = zinf_ckpt_inspect(dir, f, err, sizeof(err));
		fclose(f);
		T_CHECK(rc == 0, "%s: inspect of a good checkpoint: %s", what, err);
		if (same)
			printf("%s: consolidated bf16 is byte-identical to the export\n", what);
		free(res);
	}
}

/* One rank's message from a failed load, with the expected fragments. */
static void
expect_refusal(char *res, int world, int rank, const char *a, const char *b, const char *what)
{
	result *x = rank_res(res, rank);
	T_CHECK(x->rc != 0, "%s: rank %d loaded without complaint", what, rank);
	T_CHECK(strstr(x->msg, a) && (!b || strstr(x->msg, b)),
	        "%s: rank %d's message lacks '%s'%s%s: %s", what, rank, a, b ? " / " : "",
	        b ? b : "", x->msg);
	(void)world;
}

static void
refuse_case(void)
{
	char dir[4096], folder[4200], path[4300], err[2048], out[4300];
	snprintf(dir, sizeof(dir), "%s/refuse", g_dir);
	snprintf(folder, sizeof(folder), "%s/global_step%d", dir, K);
	char *res = alloc_res(2);
	job j = {.stage = 2, .offload = "none", .from = 0, .to = K, .save_at = K, .save = dir};
	int bad = run_ranks(&j, 2, res);
	show_failures(res, 2, "refuse: training");
	T_CHECK(bad == 0, "refuse: training the 2-rank checkpoint failed");
	if (bad) {
		free(res);
		return;
	}
	/* another world size */
	job one = {.stage = 2, .offload = "none", .from = K, .to = K, .load = dir};
	run_ranks(&one, 1, res);
	expect_refusal(res, 1, 0, "saved by 2 ranks, resuming on 1", "--num_gpus 2",
	               "world size 1");
	/* another stage (another partition) */
	job st0 = {.stage = 0, .offload = "none", .from = K, .to = K, .load = dir};
	run_ranks(&st0, 2, res);
	expect_refusal(res, 2, 1, "rank 1's shard holds elements", "zero_optimization.stage 2",
	               "stage 0 on a stage 2 checkpoint");
	/* a tampered shard: one byte of rank 1's master */
	snprintf(path, sizeof(path), "%s/rank1.bin", folder);
	int fd = open(path, O_RDWR);
	T_CHECK(fd >= 0, "%s: %s", path, strerror(errno));
	unsigned char byte;
	T_CHECK(pread(fd, &byte, 1, 4096) == 1, "read %s", path);
	byte ^= 0x40;
	T_CHECK(pwrite(fd, &byte, 1, 4096) == 1, "write %s", path);
	close(fd);
	job again = {.stage = 2, .offload = "none", .from = K, .to = K, .load = dir};
	run_ranks(&again, 2, res);
	expect_refusal(res, 2, 1, "rank1.bin", "checksum", "tampered shard, rank 1");
	expect_refusal(res, 2, 0, "another rank could not load", NULL, "tampered shard, rank 0");
	FILE *f = fopen("/dev/null", "w");
	int rc = zinf_ckpt_inspect(dir, f, err, sizeof(err));
	fclose(f);
	T_CHECK(rc == -EIO, "inspect of a tampered shard: rc %d (%s), want -EIO", rc, err);
	snprintf(out, sizeof(out), "%s/out.safetensors", dir);
	rc = zinf_ckpt_consolidate(dir, NULL, out, ZINF_SAVE_F32, err, sizeof(err));
	T_CHECK(rc != 0 && strstr(err, "checksum") && strstr(err, "rank1.bin"),
	        "consolidate of a tampered shard: rc %d: %s", rc, err);
	T_CHECK(access(out, F_OK) != 0, "consolidate left %s behind after failing", out);
	/* a missing shard */
	T_CHECK(unlink(path) == 0, "unlink %s", path);
	rc = zinf_ckpt_consolidate(dir, NULL, out, ZINF_SAVE_F32, err, sizeof(err));
	T_CHECK(rc != 0 && strstr(err, "rank1.bin") && strstr(err, "cannot open"),
	        "consolidate without rank1.bin: rc %d: %s", rc, err);
	run_ranks(&again, 2, res);
	expect_refusal(res, 2, 1, "rank1.bin", "cannot open", "missing shard");
	printf("refused: world size 1 and stage 0 on a 2-rank stage-2 checkpoint, a tampered and "
	       "a missing shard (load, inspect, consolidate)\n");
	free(res);
}

static void
nvme_case(void)
{
	resume_case(1, 3, "nvme");
	char folder[4300];
	snprintf(folder, sizeof(folder), "%s/resume-w1-s3-nvme/global_step%d", g_dir, K);
	/* the master at step K: rerun to K from the checkpoint-free start */
	char *res = alloc_res(1);
	job j = {.stage = 3, .offload = "nvme", .from = 0, .to = K};
	int bad = run_ranks(&j, 1, res);
	T_CHECK(bad == 0, "nvme: training to step %d failed: %s", K, rank_res(res, 0)->msg);
	if (!bad)
		check_fp32(folder, rank_res(res, 0)->master, "nvme");
	free(res);
}

static long
vm_kib(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t kl = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl))
			v = strtol(line + kl + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

static void
rss_case(void)
{
	/* 6 layers of d_model 256: ~4.8M parameters (19 MiB fp32); the largest tensor is 1 MiB */
	g_mc.d_model = 256;
	g_mc.n_head = g_mc.n_kv_head = 4;
	g_mc.head_dim = 64;
	g_mc.d_ff = 1024;
	g_mc.n_layer = 6;
	char err[2048], dir[4096], out[4200];
	T_CHECK(zinf_model_config_validate(&g_mc, err, sizeof(err)) == 0, "%s", err);
	zinf_model_layout lay;
	T_CHECK(zinf_model_layout_init(&g_mc, &lay, err, sizeof(err)) == 0, "%s", err);
	int64_t largest = 0;
	for (int i = 0; i < lay.ntensors; i++)
		if (lay.tensors[i].numel > largest)
			largest = lay.tensors[i].numel;
	long model_kib = (long)(lay.total_numel * 4 / 1024), tensor_kib = (long)(largest * 4 / 1024);
	zinf_model_layout_free(&lay);
	snprintf(dir, sizeof(dir), "%s/rss", g_dir);
	/* a checkpoint straight from create (no training needed for the memory question) */
	pid_t p = fork();
	if (p == 0) {
		job j = {.stage = 0, .offload = "none"};
		zinf_engine *e = NULL;
		int r = make_engine(&j, 0, 1, &e, err, sizeof(err));
		if (!r && (r = zinf_engine_save(e, dir, "t", NULL, 0, false)))
			fprintf(stderr, "%s\n", zinf_engine_error(e));
		if (r && !e)
			fprintf(stderr, "%s\n", err);
		zinf_engine_destroy(e);
		_exit(r ? 1 : 0);
	}
	int st = 0;
	waitpid(p, &st, 0);
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rss: making the checkpoint failed");
	snprintf(out, sizeof(out), "%s/out.safetensors", dir);
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	bool reset = fd >= 0 && write(fd, "5", 1) == 1;
	if (fd >= 0)
		close(fd);
	long before = vm_kib("VmHWM:");
	int rc = zinf_ckpt_consolidate(dir, "t", out, ZINF_SAVE_F32, err, sizeof(err));
	long after = vm_kib("VmHWM:");
	T_CHECK(rc == 0, "rss: consolidate: %s", err);
	long grew = after - before;
	printf("rss: consolidate of a %ld KiB model (largest tensor %ld KiB) grew the peak RSS by "
	       "%ld KiB\n", model_kib, tensor_kib, grew);
	/* one tensor buffer, the writer's conversion buffers (touched up to one tensor each),
	 * the 4 MiB checksum buffer and stdio: a few tensors plus 4 MiB, well below the model */
	long bound = 4 * tensor_kib + 4096 + 1024;
#if defined(__SANITIZE_ADDRESS__)
	bool measure = false; /* shadow memory and quarantine make RSS a different question */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	bool measure = false;
#else
	bool measure = true;
#endif
#else
	bool measure = true;
#endif
	if (!reset || before < 0 || !measure) {
		printf("rss: peak RSS not checked (%s)\n",
		       !measure ? "sanitizer build" : "/proc/self/clear_refs not writable");
		return;
	}
	T_CHECK(bound < model_kib, "rss: the bound %ld KiB is not below the model %ld KiB", bound,
	        model_kib);
	T_CHECK(grew <= bound, "rss: consolidate grew the peak RSS by %ld KiB, more than %ld KiB "
	        "(the model is %ld KiB): it is not streaming", grew, bound, model_kib);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test_ckpt resume2|resume4|resume3|consolidate|consolidate3|refuse|nvme|rss\n");
		return T_EXIT_FAIL;
	}
	tiny_model();
	zinf_model_layout lay;
	char err[256];
	if (zinf_model_layout_init(&g_mc, &lay, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return T_EXIT_FAIL;
	}
	g_numel = lay.total_numel;
	zinf_model_layout_free(&lay);
	g_dir = t_mkdtemp("ckpt");
	const char *c = argv[1];
	if (!strcmp(c, "resume2")) {
		resume_case(2, 0, "none");
		resume_case(2, 2, "none");
	} else if (!strcmp(c, "resume4")) {
		resume_case(4, 1, "none");
	} else if (!strcmp(c, "resume3")) {
		resume3_case();
	} else if (!strcmp(c, "consolidate")) {
		consolidate_case(2, NULL);
	} else if (!strcmp(c, "consolidate3")) {
		consolidate_case(3, "0");
		consolidate_case(3, "30000");
	} else if (!strcmp(c, "refuse")) {
		refuse_case();
	} else if (!strcmp(c, "nvme")) {
		nvme_case();
	} else if (!strcmp(c, "rss")) {
		rss_case();
	} else {
		fprintf(stderr, "test_ckpt: unknown suite '%s'\n", c);
		return T_EXIT_FAIL;
	}
	if (!t_failures)
		nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); /* kept for a look when failing */
	return t_result(argv[1]);
}
