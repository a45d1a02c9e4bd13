/* zinf plan: bytes per tier per rank for each ZeRO stage and offload choice, the fastest that
 * fits, its predicted step time, and that choice written as ds_config.json (engine/plan.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "commands.h"
#include "engine/plan.h"

#define PROG "zinf plan"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf plan --model MODEL|PRESET [--gpus N] [options]\n\n"
	        "  --model M          preset (gpt2-124m ... llama-7b) or folder with config.json\n"
	        "  --gpus N           ranks on the node (default 1)\n"
	        "  --gpu_mem SIZE     memory per GPU (default 80G)\n"
	        "  --host_mem SIZE    host memory for all ranks (default 256G)\n"
	        "  --nvme_path DIR    swap folder (NVMe options need it, or --tuned)\n"
	        "  --nvme_bw GB/s     NVMe read and write rate of the node (or --nvme_read_bw,\n"
	        "                     --nvme_write_bw; NVMe options need them, or --tuned)\n"
	        "  --pcie_bw GB/s     per GPU, each direction (default 25)\n"
	        "  --net_bw GB/s      collective bus bandwidth per rank, N > 1 (default 100)\n"
	        "  --hbm_bw GB/s      GPU memory bandwidth (default 3000)\n"
	        "  --tflops X         achieved bf16 TFLOP/s per GPU (default 400)\n"
	        "  --tuned FILE       zinf tune's output: NVMe rates, path and offload knobs\n"
	        "  --batch B          micro batch per GPU (default 1)\n"
	        "  --seq T            sequence length (default 1024)\n"
	        "  --grad_accum K     gradient accumulation steps (default 1)\n"
	        "  --recompute        activation checkpointing per layer\n"
	        "  --sub_group_size N elements per optimizer sub-group (default 1e8)\n"
	        "  --buffer_count K   offload_optimizer.buffer_count (default 4)\n"
	        "  --out FILE         write the recommended ds_config.json\n\n"
	        "sizes: K M G T binary (1G = 2^30), no suffix = bytes. Exit: 0 a configuration fits,\n"
	        "1 none fits or a file could not be read/written, 2 usage error.\n");
}

static int
parse_size(const char *flag, const char *v, uint64_t *out)
{
	return zinf_cli_parse_size(PROG, flag, v, out);
}

static int
parse_num(const char *flag, const char *v, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (end == v || *end || errno || !(x >= min) || !(x <= max)) {
		fprintf(stderr, PROG ": %s '%s': not a number in %g..%g\n", flag, v, min, max);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

static const char *
flag_val(int argc, char **argv, int *i, const char *flag)
{
	size_t n = strlen(flag);
	if (strncmp(argv[*i], flag, n))
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n])
		return NULL;
	if (*i + 1 >= argc) {
		fprintf(stderr, PROG ": %s needs a value\n", flag);
		return "";
	}
	return argv[++*i];
}

static void
print_plan(const zinf_plan *p, const zinf_model_config *m, const zinf_plan_hw *hw,
           const zinf_plan_job *job)
{
	const double G = 1024.0 * 1024.0 * 1024.0;
	printf("model %s: %llu parameters in the flat vector, %d layers, largest block %llu\n",
	       m->name, (unsigned long long)p->P, m->n_layer, (unsigned long long)p->Lmax);
	printf("ranks %d (partition %llu), micro batch %d x seq %d x accum %d, recompute %s\n",
	       hw->gpus, (unsigned long long)p->N, job->micro_batch, job->seq, job->grad_accum,
	       job->recompute ? "on" : "off");
	printf("activations %.2f GiB per rank (%llu B per token per layer)\n",
	       (double)p->act_bytes / G, (unsigned long long)zinf_plan_layer_act_bytes(m));
	printf("hardware: GPU %.1f GiB, host %.1f GiB / %d ranks, %.0f TFLOP/s, PCIe %.1f GB/s, "
	       "NVMe r/w %.2f/%.2f GB/s%s, net %.0f GB/s\n\n",
	       (double)hw->gpu_mem / G, (double)hw->host_mem / G, hw->gpus, hw->tflops,
	       hw->pcie_bw, hw->nvme_read_bw, hw->nvme_write_bw,
	       hw->nvme_mixed_bw > 0 ? " (tuned)" : "", hw->net_bw);
	printf("%-38s %9s %9s %9s %9s %9s  %s\n", "option (GiB per rank)", "gpu", "pinned",
	       "pageable", "nvme", "step s", "");
	for (int i = 0; i < p->n; i++) {
		const zinf_plan_option *o = &p->opt[i];
		printf("%-38s %9.2f %9.2f %9.2f %9.2f %9.3f  %s\n", o->name,
		       (double)o->bytes[ZINF_PLAN_GPU] / G, (double)o->bytes[ZINF_PLAN_PINNED] / G,
		       (double)o->bytes[ZINF_PLAN_PAGEABLE] / G,
		       (double)o->bytes[ZINF_PLAN_NVME] / G, o->t_step,
		       i == p->best ? "<- recommended" : o->fits ? "fits" : "rejected");
	}
	printf("\nwhy:\n");
	for (int i = 0; i < p->n; i++)
		printf("  %s\n", p->opt[i].why);
	if (p->best < 0)
		return;
	const zinf_plan_option *o = &p->opt[p->best];
	printf("\nrecommended: %s\n", o->name);
	for (int k = 0; k < o->n_items; k++)
		printf("  %-26s %-8s %10.3f GiB\n", o->item[k].what,
		       zinf_plan_tier_name(o->item[k].tier), (double)o->item[k].bytes / G);
	printf("  predicted step %.3f s = forward+backward %.3f s (compute %.3f, param I/O %.3f) "
	       "+ comm %.3f s + optimizer %.3f s\n",
	       o->t_step, o->t_compute > o->t_param_io ? o->t_compute : o->t_param_io,
	       o->t_compute, o->t_param_io, o->t_comm, o->t_opt);
}

int
zinf_plan_main(int argc, char **argv)
{
	zinf_plan_hw hw;
	zinf_plan_job job;
	zinf_plan_hw_init(&hw);
	zinf_plan_job_init(&job);
	const char *model = NULL, *out = NULL, *tuned = NULL, *nvme_path = NULL;
	double nbw = 0, nrbw = 0, nwbw = 0, x;
	bool have_nvme_bw = false;
	int gpus = 1, batch = -1, seq = -1, accum = -1, recompute = -1;
	double sg = 0, bc = 0;
	uint64_t gpu_mem = 0, host_mem = 0;
	double pcie = 0, net = 0, hbm = 0, tflops = 0;
	for (int i = 1; i < argc; i++) {
		const char *v;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--recompute")) {
			recompute = 1;
			continue;
		}
#define NUM(flag, lo, hi, dst)                                                                  \
	if ((v = flag_val(argc, argv, &i, flag))) {                                             \
		if (parse_num(flag, v, lo, hi, &x))                                             \
			return 2;                                                               \
		dst = x;                                                                        \
		continue;                                                                       \
	}
#define STR(flag, dst)                                                                          \
	if ((v = flag_val(argc, argv, &i, flag))) {                                             \
		if (!*v)                                                                        \
			return 2;                                                               \
		dst = v;                                                                        \
		continue;                                                                       \
	}
#define SIZE(flag, dst)                                                                         \
	if ((v = flag_val(argc, argv, &i, flag))) {                                             \
		if (parse_size(flag, v, &dst))                                                  \
			return 2;                                                               \
		continue;                                                                       \
	}
		STR("--model", model)
		STR("--out", out)
		STR("--tuned", tuned)
		STR("--nvme_path", nvme_path)
		SIZE("--gpu_mem", gpu_mem)
		SIZE("--host_mem", host_mem)
		NUM("--gpus", 1, 1024, gpus)
		NUM("--batch", 1, 1 << 20, batch)
		NUM("--seq", 1, 1 << 24, seq)
		NUM("--grad_accum", 1, 1 << 20, accum)
		NUM("--sub_group_size", 1, 1e12, sg)
		NUM("--buffer_count", 1, 1024, bc)
		NUM("--pcie_bw", 1e-3, 1e4, pcie)
		NUM("--net_bw", 1e-3, 1e5, net)
		NUM("--hbm_bw", 1e-3, 1e5, hbm)
		NUM("--tflops", 1e-3, 1e5, tflops)
		if ((v = flag_val(argc, argv, &i, "--nvme_bw"))) {
			if (parse_num("--nvme_bw", v, 1e-3, 1e4, &nbw))
				return 2;
			have_nvme_bw = true;
			continue;
		}
		NUM("--nvme_read_bw", 1e-3, 1e4, nrbw)
		NUM("--nvme_write_bw", 1e-3, 1e4, nwbw)
#undef NUM
#undef STR
#undef SIZE
		fprintf(stderr, PROG ": unknown option '%s' (see zinf plan --help)\n", argv[i]);
		return 2;
	}
	if (!model) {
		fprintf(stderr, PROG ": --model is required (a preset such as llama-7b, or a folder "
		                "with config.json)\n");
		return 2;
	}
	char err[1024];
	if (tuned && zinf_plan_load_tuned(tuned, &hw, &job, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		return 1;
	}
	/* flags override the tuned numbers */
	hw.gpus = gpus;
	if (gpu_mem)
		hw.gpu_mem = gpu_mem;
	if (host_mem)
		hw.host_mem = host_mem;
	if (pcie > 0)
		hw.pcie_bw = pcie;
	if (net > 0)
		hw.net_bw = net;
	if (hbm > 0)
		hw.hbm_bw = hbm;
	if (tflops > 0)
		hw.tflops = tflops;
	if (have_nvme_bw) {
		hw.nvme_read_bw = hw.nvme_write_bw = nbw;
		hw.nvme_mixed_bw = 0;
	}
	if (nrbw > 0)
		hw.nvme_read_bw = nrbw, hw.nvme_mixed_bw = 0;
	if (nwbw > 0)
		hw.nvme_write_bw = nwbw, hw.nvme_mixed_bw = 0;
	if (nvme_path) {
		struct stat st;
		if (stat(nvme_path, &st) || !S_ISDIR(st.st_mode)) {
			fprintf(stderr,
			        PROG ": --nvme_path '%s': not an existing folder; create it or pass "
			        "the NVMe mount point\n",
			        nvme_path);
			return 2;
		}
		char *rp = realpath(nvme_path, NULL);
		snprintf(hw.nvme_path, sizeof(hw.nvme_path), "%s", rp ? rp : nvme_path);
		free(rp);
	}
	if (batch > 0)
		job.micro_batch = batch;
	if (seq > 0)
		job.seq = seq;
	if (accum > 0)
		job.grad_accum = accum;
	if (recompute > 0)
		job.recompute = true;
	if (sg > 0)
		job.sub_group_size = (uint64_t)sg;
	if (bc > 0)
		job.opt_buffer_count = (unsigned)bc;

	zinf_model_config m;
	char weights[4096];
	if (zinf_model_resolve(model, &m, weights, sizeof(weights), err, sizeof(err))) {
		fprintf(stderr, PROG ": --model: %s\n", err);
		return 2;
	}
	zinf_plan *p = malloc(sizeof(*p));
	if (!p)
		return 1;
	int rc = 0;
	if (zinf_plan_compute(&m, &hw, &job, p, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s\n", err);
		free(p);
		return 2;
	}
	print_plan(p, &m, &hw, &job);
	if (p->best < 0) {
		fprintf(stderr,
		        PROG ": no configuration fits (reasons above): add --recompute, lower "
		        "--batch, or give NVMe (--nvme_path with --nvme_bw, or --tuned)\n");
		rc = 1;
	} else if (out) {
		if (zinf_plan_write_config(p, p->best, &hw, &job, out, err, sizeof(err))) {
			fprintf(stderr, PROG ": %s\n", err);
			rc = 1;
		} else {
			printf("wrote %s (check it: zinf config check %s --num_gpus %d)\n", out, out,
			       hw.gpus);
		}
	}
	free(p);
	return rc;
}
