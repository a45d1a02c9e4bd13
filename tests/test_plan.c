/* engine/plan: figures against hand-computed ones (gpt2-124m at 1 GPU, llama-7b at 1 and 4),
 * rejection messages, and the written ds_config.json loading through the config loader. */
#include "test_util.h"

#include <math.h>
#include <sys/stat.h>

#include "engine/config.h"
#include "engine/model.h"
#include "engine/plan.h"

static const zinf_plan_option *
find(const zinf_plan *p, int stage, zinf_offload_device opt, zinf_offload_device par)
{
	for (int i = 0; i < p->n; i++)
		if (p->opt[i].stage == stage && p->opt[i].opt == opt && p->opt[i].param == par)
			return &p->opt[i];
	return NULL;
}

static int
index_of(const zinf_plan *p, const zinf_plan_option *o)
{
	return (int)(o - p->opt);
}

static uint64_t
item(const zinf_plan_option *o, const char *what)
{
	for (int k = 0; k < o->n_items; k++)
		if (!strcmp(o->item[k].what, what))
			return o->item[k].bytes;
	return 0;
}

static bool
near(double a, double b)
{
	return fabs(a - b) <= 1e-6 * fabs(b) + 1e-12;
}

/* GPT-2 124M (V 50257 -> 50304 padded, C 768, 12 layers, F 3072, T 1024):
 *   block 0 = wte 50304*768 + wpe 1024*768 = 39,419,904 (the largest block)
 *   layer   = 2*768 + 2304*768 + 2304 + 768*768 + 768 + 2*768 + 3072*768 + 3072
 *             + 768*3072 + 768 = 7,087,872
 *   final   = 2*768 = 1,536
 *   P = 39,419,904 + 12*7,087,872 + 1,536 = 124,475,904
 * Activations per token per layer: 2*(4*768 + 36*64 + 768 + 2*3072) + 4*12 + 16 = 24,640;
 * B 8, T 1024: 8192*(12*24,640 + 4*768) = 2,447,376,384. Logits 4*8*1024*50304 =
 * 1,648,361,472. Stage 0 GPU: 2P (bf16 params) + 4P (fp32 grads) + 12P + act + logits + 1 GiB
 * = 2,240,566,272 + 2,447,376,384 + 1,648,361,472 + 1,073,741,824 = 7,410,045,952. Stage 3
 * without offload_param at 1 GPU is not the zero3 path: the same bytes, no gather slots. */
static void
test_gpt2(void)
{
	zinf_model_config m;
	char err[512];
	T_CHECK(!zinf_model_preset("gpt2-124m", &m, err, sizeof(err)), "%s", err);
	zinf_plan_hw hw;
	zinf_plan_job job;
	zinf_plan_hw_init(&hw);
	zinf_plan_job_init(&job);
	job.micro_batch = 8;
	zinf_plan *p = calloc(1, sizeof(*p));
	T_CHECK(!zinf_plan_compute(&m, &hw, &job, p, err, sizeof(err)), "%s", err);
	T_CHECK_EQ_I64(p->P, 124475904);
	T_CHECK_EQ_I64(p->N, 124475904);
	T_CHECK_EQ_I64(p->Lmax, 39419904);
	T_CHECK_EQ_I64(zinf_plan_layer_act_bytes(&m), 24640);
	T_CHECK_EQ_I64(p->act_bytes, 2447376384ll);
	T_CHECK_EQ_I64(p->n, 14); /* 1 + 2 + 2 + 9 */
	const zinf_plan_option *s0 = find(p, 0, ZINF_DEVICE_NONE, ZINF_DEVICE_NONE);
	T_CHECK(s0 != NULL, "stage 0 missing");
	if (s0) {
		T_CHECK_EQ_I64(item(s0, "logits (fp32)"), 1648361472ll);
		T_CHECK_EQ_I64(item(s0, "fp32 grads"), 4 * 124475904ll);
		T_CHECK_EQ_I64(s0->bytes[ZINF_PLAN_GPU], 7410045952ll);
		T_CHECK_EQ_I64(s0->bytes[ZINF_PLAN_PINNED], 0);
		T_CHECK(s0->fits, "%s", s0->why);
		/* all fit on 80 GB but offload_param without offload_optimizer: stage 0 is the
		 * fastest (no comm at W 1; ties go to the lower stage) */
		T_CHECK_EQ_I64(p->best, index_of(p, s0));
		/* 28 B/param over 3000 GB/s HBM */
		T_CHECK(near(s0->t_opt, 28.0 * 124475904 / 3000e9), "t_opt %g", s0->t_opt);
		double tc = zinf_model_flops_per_token(&m, 1024) * 8192 / 400e12;
		T_CHECK(near(s0->t_compute, tc), "%g vs %g", s0->t_compute, tc);
		T_CHECK(near(s0->t_step, tc + s0->t_opt), "%g", s0->t_step);
	}
	const zinf_plan_option *s3 = find(p, 3, ZINF_DEVICE_NONE, ZINF_DEVICE_NONE);
	T_CHECK(s3 && s0 && s3->bytes[ZINF_PLAN_GPU] == s0->bytes[ZINF_PLAN_GPU] &&
	                !item(s3, "stage-3 gather buffers") && !item(s3, "fp32 grad partition"),
	        "stage 3 at W 1: %llu B", s3 ? (unsigned long long)s3->bytes[ZINF_PLAN_GPU] : 0);
	/* offload_param without offload_optimizer: zinf_engine_create refuses it */
	const zinf_plan_option *po = find(p, 3, ZINF_DEVICE_NONE, ZINF_DEVICE_CPU);
	T_CHECK(po && !po->fits && strstr(po->why, "offload_optimizer cpu or nvme"), "%s",
	        po ? po->why : "-");
	/* recompute: 8192 * (12*2*768 + 24,640 + 4*768) = 8192 * 46,144 = 378,011,648 */
	T_CHECK_EQ_I64(zinf_plan_activation_bytes(&m, 8, 1024, true), 378011648ll);
	/* NVMe options without a path or a bandwidth are rejected, naming the fix */
	const zinf_plan_option *nv = find(p, 3, ZINF_DEVICE_NVME, ZINF_DEVICE_NONE);
	T_CHECK(nv && !nv->fits && strstr(nv->why, "--nvme_path"), "%s", nv ? nv->why : "-");
	free(p);
}

/* LLaMA-2 7B (V 32000, C 4096, 32 layers, H = KV = 32, hd 128, F 11008, untied):
 *   block 0 = 32000*4096 = 131,072,000
 *   layer   = 4096 + 12288*4096 + 4096*4096 + 4096 + 22016*4096 + 4096*11008 = 202,383,360
 *             (the largest block)
 *   final   = 4096 + 32000*4096 = 131,076,096
 *   P = 6,738,415,616; at 4 GPUs N = 1,684,603,904
 * Stage 3, optimizer cpu, params none, 4 GPUs, B 1, T 2048, recompute, sub-group 1e8, k 4:
 *   params 2N = 3,369,207,808; gather slots 2*2*Lmax + 4*Lmax = 8*202,383,360 =
 *   1,619,066,880; fp32 grad partition 4N = 6,738,415,616; work buffers 4*12*1e8 =
 *   4,800,000,000; per token per layer 2*(4*4096 + 96*128 + 64*128 + 32*128 + 3*11008) + 128
 *   + 8 = 148,104; activations 2048*(32*2*4096 + 148,104 + 4*4096) = 873,742,336; logits
 *   4*2048*32000 = 262,144,000; + 1 GiB 1,073,741,824 => GPU 18,736,318,464.
 *   Pinned: 12N = 20,215,246,848.
 *   comm 3*(3/4)*2P / 100 GB/s; optimizer 12N / 25 GB/s. */
static void
test_llama(const char *dir)
{
	zinf_model_config m;
	char err[512];
	T_CHECK(!zinf_model_preset("llama-7b", &m, err, sizeof(err)), "%s", err);
	zinf_plan_hw hw;
	zinf_plan_job job;
	zinf_plan_hw_init(&hw);
	zinf_plan_job_init(&job);
	hw.gpus = 4;
	hw.host_mem = 512ull << 30;
	job.seq = 2048;
	job.recompute = true;
	zinf_plan *p = calloc(1, sizeof(*p));
	T_CHECK(!zinf_plan_compute(&m, &hw, &job, p, err, sizeof(err)), "%s", err);
	T_CHECK_EQ_I64(p->P, 6738415616ll);
	T_CHECK_EQ_I64(p->N, 1684603904ll);
	T_CHECK_EQ_I64(p->Lmax, 202383360);
	T_CHECK_EQ_I64(zinf_plan_layer_act_bytes(&m), 148104);
	const zinf_plan_option *o = find(p, 3, ZINF_DEVICE_CPU, ZINF_DEVICE_NONE);
	T_CHECK(o != NULL, "missing");
	if (o) {
		T_CHECK_EQ_I64(item(o, "stage-3 gather buffers"), 8 * 202383360ll);
		T_CHECK_EQ_I64(item(o, "fp32 grad partition"), 4 * 1684603904ll);
		T_CHECK_EQ_I64(item(o, "optimizer work buffers"), 4800000000ll);
		T_CHECK_EQ_I64(item(o, "activations"), 873742336);
		T_CHECK_EQ_I64(o->bytes[ZINF_PLAN_GPU], 18736318464ll);
		T_CHECK_EQ_I64(o->bytes[ZINF_PLAN_PINNED], 20215246848ll);
		T_CHECK_EQ_I64(o->bytes[ZINF_PLAN_NVME], 0);
		T_CHECK(near(o->t_comm, 3 * 0.75 * 2 * 6738415616.0 / 100e9), "%g", o->t_comm);
		T_CHECK(near(o->t_opt, 12 * 1684603904.0 / 25e9), "%g", o->t_opt);
		T_CHECK(o->fits, "%s", o->why);
	}
	/* offload_param cpu: params 2N and the grad partition 4N move to pinned host memory; the
	 * work buffers carry the gradient slice and 16-bit output too, 4*(12+4+2)*1e8 =
	 * 7,200,000,000, and the output leaves through 4*2*1e8 = 800,000,000 pinned sink bytes.
	 * GPU 18,736,318,464 - 2N - 4N + 2,400,000,000 more work bytes = 11,028,695,040;
	 * pinned 2N + 4N + 12N + 800,000,000 = 31,122,870,272 */
	const zinf_plan_option *pc = find(p, 3, ZINF_DEVICE_CPU, ZINF_DEVICE_CPU);
	T_CHECK(pc != NULL, "missing");
	if (pc) {
		T_CHECK_EQ_I64(item(pc, "fp32 grad partition"), 4 * 1684603904ll);
		T_CHECK_EQ_I64(item(pc, "optimizer work buffers"), 7200000000ll);
		T_CHECK_EQ_I64(item(pc, "optimizer 16-bit sink"), 800000000ll);
		T_CHECK_EQ_I64(pc->bytes[ZINF_PLAN_GPU], 11028695040ll);
		T_CHECK_EQ_I64(pc->bytes[ZINF_PLAN_PINNED], 31122870272ll);
	}
	/* stage 2 at 4 GPUs keeps the full fp32 gradient vector (reduce-scatter in place):
	 * 4P = 26,953,662,464 */
	const zinf_plan_option *s2 = find(p, 2, ZINF_DEVICE_CPU, ZINF_DEVICE_NONE);
	T_CHECK(s2 && item(s2, "fp32 grads") == 4 * 6738415616ll, "stage 2 grads");
	/* stage 0 at 4 GPUs: 18 B/param of 6.7 G params cannot fit 80 GB */
	const zinf_plan_option *s0 = find(p, 0, ZINF_DEVICE_NONE, ZINF_DEVICE_NONE);
	T_CHECK(s0 && !s0->fits && strstr(s0->why, "GiB of GPU memory needed per rank, 80.0 GiB "
	                                            "available (--gpu_mem)"),
	        "%s", s0 ? s0->why : "-");
	T_CHECK(p->best >= 0, "nothing fits");

	/* 1 GPU, 64 GiB host, NVMe at 3/2 GB/s: only NVMe optimizer offload fits the host */
	hw.gpus = 1;
	hw.host_mem = 64ull << 30;
	hw.nvme_read_bw = 3;
	hw.nvme_write_bw = 2;
	snprintf(hw.nvme_path, sizeof(hw.nvme_path), "%s", dir);
	T_CHECK(!zinf_plan_compute(&m, &hw, &job, p, err, sizeof(err)), "%s", err);
	const zinf_plan_option *c = find(p, 3, ZINF_DEVICE_CPU, ZINF_DEVICE_NONE);
	T_CHECK(c && !c->fits && strstr(c->why, "GiB of host memory needed per rank, 64.0 GiB "
	                                         "available (--host_mem 64.0 GiB over 1 ranks)"),
	        "%s", c ? c->why : "-");
	const zinf_plan_option *nv = find(p, 3, ZINF_DEVICE_NVME, ZINF_DEVICE_NONE);
	T_CHECK(nv && nv->fits, "%s", nv ? nv->why : "-");
	if (nv) {
		/* 12P on NVMe; swap buffers (4+1)*12*1e8 + 4*16 MiB pinned; read then write */
		T_CHECK_EQ_I64(nv->bytes[ZINF_PLAN_NVME], 12 * 6738415616ll);
		T_CHECK_EQ_I64(item(nv, "optimizer swap buffers"), 6000000000ll + 4 * (16 << 20));
		T_CHECK(near(nv->t_opt, 12 * 6738415616.0 / 3e9 + 12 * 6738415616.0 / 2e9), "%g",
		        nv->t_opt);
	}
	T_CHECK(p->best >= 0 && p->opt[p->best].opt == ZINF_DEVICE_NVME, "best %d", p->best);

	/* the recommended config, and an NVMe-for-both one, load and resolve at 1 rank */
	char path[4200];
	snprintf(path, sizeof(path), "%s/ds_config.json", dir);
	const zinf_plan_option *both = find(p, 3, ZINF_DEVICE_NVME, ZINF_DEVICE_NVME);
	int idxs[2] = {p->best, both ? index_of(p, both) : -1};
	for (int t = 0; t < 2; t++) {
		T_CHECK(!zinf_plan_write_config(p, idxs[t], &hw, &job, path, err, sizeof(err)), "%s",
		        err);
		zinf_config *cfg = malloc(sizeof(*cfg));
		zinf_config_init_defaults(cfg);
		int r = zinf_config_load_file(path, NULL, cfg, err, sizeof(err));
		T_CHECK(r == 0, "%s", err);
		if (!r)
			T_CHECK(!zinf_config_resolve(cfg, 1, m.d_model, err, sizeof(err)), "%s", err);
		T_CHECK_EQ_I64(cfg->stage, 3);
		T_CHECK_EQ_I64(cfg->offload_optimizer.device, ZINF_DEVICE_NVME);
		T_CHECK_EQ_I64(cfg->sub_group_size, 100000000);
		T_CHECK(!strcmp(cfg->offload_optimizer.nvme_path, dir), "%s",
		        cfg->offload_optimizer.nvme_path);
		if (t == 1) {
			T_CHECK_EQ_I64(cfg->offload_param.device, ZINF_DEVICE_NVME);
			/* buffer_size raised to the largest block */
			T_CHECK_EQ_I64(cfg->offload_param.buffer_size, 202383360);
		}
		free(cfg);
	}
	unlink(path);
	T_CHECK(zinf_plan_write_config(p, -1, &hw, &job, path, err, sizeof(err)) == -EINVAL &&
	                strstr(err, "no configuration fits"),
	        "%s", err);
	/* bad numbers are refused naming the flag */
	job.seq = 100000;
	T_CHECK(zinf_plan_compute(&m, &hw, &job, p, err, sizeof(err)) == -EINVAL &&
	                strstr(err, "--seq 100000"),
	        "%s", err);
	free(p);
}

static void
test_tuned_file(const char *dir)
{
	char path[4200], rpath[4200], err[512];
	snprintf(path, sizeof(path), "%s/tuned.json", dir);
	snprintf(rpath, sizeof(rpath), "%s/tuned.report.json", dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "{\"aio\": {\"block_size\": 2097152, \"queue_depth\": 32, \"thread_count\": 2,"
	           " \"backend\": \"libaio\"}, \"zero_optimization\": {\"stage\": 3,"
	           " \"sub_group_size\": 4194304, \"offload_optimizer\": {\"device\": \"nvme\","
	           " \"nvme_path\": \"%s\", \"pin_memory\": false, \"buffer_count\": 6}}}\n",
	        dir);
	fclose(f);
	zinf_plan_hw hw;
	zinf_plan_job job;
	zinf_plan_hw_init(&hw);
	zinf_plan_job_init(&job);
	/* the fragment alone: its report is missing, and the message says so */
	T_CHECK(zinf_plan_load_tuned(path, &hw, &job, err, sizeof(err)) == -ENOENT &&
	                strstr(err, "tuned.report.json"),
	        "%s", err);
	f = fopen(rpath, "w");
	fprintf(f, "{\"zinf_tune\": {\"nvme_path\": \"%s\", \"read_GBps\": 3.5, \"write_GBps\": 2.5,"
	           " \"mixed_GBps\": 2.8}, \"config\": {}}\n",
	        dir);
	fclose(f);
	T_CHECK(!zinf_plan_load_tuned(path, &hw, &job, err, sizeof(err)), "%s", err);
	T_CHECK(hw.nvme_read_bw == 3.5 && hw.nvme_write_bw == 2.5 && hw.nvme_mixed_bw == 2.8,
	        "%g %g %g", hw.nvme_read_bw, hw.nvme_write_bw, hw.nvme_mixed_bw);
	T_CHECK(!strcmp(hw.nvme_path, dir), "%s", hw.nvme_path);
	T_CHECK_EQ_I64(job.sub_group_size, 4194304);
	T_CHECK_EQ_I64(job.opt_buffer_count, 6);
	T_CHECK(!job.pin_memory, "pin");
	T_CHECK_EQ_I64(job.aio_block_size, 2097152);
	T_CHECK_EQ_I64(job.aio_queue_depth, 32);
	T_CHECK_EQ_I64(job.aio_thread_count, 2);
	T_CHECK_EQ_I64(job.aio_backend, ZINF_AIO_LIBAIO);
	unlink(path);
	unlink(rpath);
}

int
main(void)
{
	char *dir = t_mkdtemp("test_plan");
	char *rp = realpath(dir, NULL);
	test_gpt2();
	test_llama(rp);
	test_tuned_file(rp);
	rmdir(dir);
	free(rp);
	free(dir);
	if (t_failures) {
		fprintf(stderr, "test_plan: %d checks failed\n", t_failures);
		return T_EXIT_FAIL;
	}
	printf("test_plan: ok\n");
	return T_EXIT_PASS;
}
