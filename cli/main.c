/* The zinf command: subcommand dispatch. Exit codes: 0 ok, 1 runtime failure, 2 usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "commands.h"

#ifndef ZINF_VERSION
#define ZINF_VERSION "unknown"
#endif

typedef struct subcommand {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} subcommand;

static const subcommand bench_subjects[] = {
	{"io", zinf_bench_io_main, "NVMe/file throughput through iosched (compare with fio)"},
	{"adam", zinf_bench_adam_main, "fused Adam/AdamW step throughput on GPU or CPU"},
	{"swap", zinf_bench_swap_main, "NVMe -> pinned -> GPU swapping through offload/"},
	{"optstep", zinf_bench_optstep_main, "optimizer step on offloaded state (cpu/nvme)"},
	{"model", zinf_bench_model_main, "model forward+backward tokens/s and TFLOP/s"},
};

static void
usage_top(FILE *f)
{
	fprintf(f, "usage: zinf <command> [options]\n\n"
		   "commands:\n"
		   "  bench <subject>   benchmarks (zinf bench --help lists subjects)\n"
		   "  config check FILE resolve a ds_config.json, print it and the memory plan\n"
		   "  eval              mean loss of a model (folder or preset) over token shards\n"
		   "  plan              ZeRO stage and offload that fit, bytes per tier, step time\n"
		   "  tune              measure offload/aio settings on a disk, write a config\n"
		   "  data encode       text -> token shards (byte-level or GPT-2 BPE); data info\n"
		   "  train             train a model (no arguments: the built-in demo job)\n"
		   "  launch            one process per GPU (or --cpu rank) running a command\n"
		   "  ckpt              inspect checkpoints; consolidate rank shards to safetensors\n"
		   "  version           print the version\n\n"
		   "options:\n"
		   "  -h, --help        this help; `zinf <command> --help` for a command's options\n"
		   "  --version         print the version\n\n"
		   "exit codes: 0 ok, 1 runtime failure, 2 usage error\n");
}

static void
usage_bench(FILE *f)
{
	fprintf(f, "usage: zinf bench <subject> [options] [--json]\n\nsubjects:\n");
	for (size_t i = 0; i < sizeof(bench_subjects) / sizeof(bench_subjects[0]); i++)
		fprintf(f, "  %-8s %s\n", bench_subjects[i].name, bench_subjects[i].summary);
	fprintf(f, "\n`zinf bench <subject> --help` lists a subject's options.\n");
}

static int
cmd_bench(int argc, char **argv)
{
	if (argc < 2) {
		usage_bench(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage_bench(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(bench_subjects) / sizeof(bench_subjects[0]); i++)
		if (!strcmp(argv[1], bench_subjects[i].name))
			return bench_subjects[i].main(argc - 1, argv + 1);
	fprintf(stderr, "zinf bench: unknown subject '%s'\n\n", argv[1]);
	usage_bench(stderr);
	return 2;
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage_top(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (getenv("ZINF_LINE_BUFFERED")) /* set by zinf launch: its ranks' stdout is a pipe */
		setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage_top(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
		printf("zinf %s\n", ZINF_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "bench"))
		return cmd_bench(argc - 1, argv + 1);
	if (!strcmp(cmd, "config"))
		return zinf_config_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "eval"))
		return zinf_eval_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "plan"))
		return zinf_plan_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "tune"))
		return zinf_tune_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "data"))
		return zinf_data_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "train"))
		return zinf_train_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "ckpt"))
		return zinf_ckpt_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "launch"))
		return zinf_launch_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "comm-selftest"))
		return zinf_comm_selftest_main(argc - 1, argv + 1);
	fprintf(stderr, "zinf: unknown command '%s'\n\n", cmd);
	usage_top(stderr);
	return 2;
}
