/* zinf ckpt: look into checkpoint folders and rebuild full weights from their rank shards
 * (engine/include/engine/ckpt.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "engine/ckpt.h"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf ckpt inspect DIR\n"
	        "       zinf ckpt consolidate DIR [--tag T] --out FILE.safetensors "
	        "[--dtype bf16|fp32]\n\n"
	        "inspect      every checkpoint tag under DIR (a --out folder of zinf train) or DIR\n"
	        "             itself (a tag folder): step, world size, ZeRO stage, model, each\n"
	        "             rank shard's size, elements and checksums. Exit 1 if any check "
	        "fails.\n"
	        "consolidate  the full weights of DIR's latest tag (or --tag T) from the fp32\n"
	        "             master of all rank shards, one tensor at a time (never the whole\n"
	        "             model in memory), as HF-named safetensors (default bf16) plus\n"
	        "             config.json next to it; HF transformers loads the folder.\n\n"
	        "exit codes: 0 ok, 1 runtime failure, 2 usage error\n");
}

static int
cmd_inspect(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-') {
		usage(stderr);
		return 2;
	}
	char err[2048];
	int rc = zinf_ckpt_inspect(argv[1], stdout, err, sizeof(err));
	if (rc) {
		fflush(stdout);
		fprintf(stderr, "zinf ckpt inspect: %s\n", err);
		return 1;
	}
	return 0;
}

static int
cmd_consolidate(int argc, char **argv)
{
	const char *dir = NULL, *tag = NULL, *out = NULL, *dtype = "bf16";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if (!strcmp(a, "--tag") && has)
			tag = argv[++i];
		else if (!strcmp(a, "--out") && has)
			out = argv[++i];
		else if (!strcmp(a, "--dtype") && has)
			dtype = argv[++i];
		else if (a[0] != '-' && !dir)
			dir = a;
		else {
			fprintf(stderr, "zinf ckpt consolidate: unexpected argument '%s'%s\n\n", a,
			        a[0] == '-' && !has ? " (missing its value)" : "");
			usage(stderr);
			return 2;
		}
	}
	if (!dir || !out) {
		fprintf(stderr, "zinf ckpt consolidate: %s\n\n",
		        !dir ? "name the checkpoint folder DIR" : "--out FILE.safetensors is required");
		usage(stderr);
		return 2;
	}
	zinf_save_dtype d;
	if (!strcmp(dtype, "bf16"))
		d = ZINF_SAVE_BF16;
	else if (!strcmp(dtype, "fp32"))
		d = ZINF_SAVE_F32;
	else {
		fprintf(stderr, "zinf ckpt consolidate: --dtype %s: use bf16 or fp32\n", dtype);
		return 2;
	}
	char err[2048];
	if (zinf_ckpt_consolidate(dir, tag, out, d, err, sizeof(err))) {
		fprintf(stderr, "zinf ckpt consolidate: %s\n", err);
		return 1;
	}
	printf("wrote %s (%s) and config.json next to it\n", out, dtype);
	return 0;
}

int
zinf_ckpt_main(int argc, char **argv)
{
	static const zinf_cli_sub subs[] = {{"inspect", cmd_inspect}, {"consolidate", cmd_consolidate}};
	return zinf_cli_dispatch("zinf ckpt", argc, argv, subs, sizeof(subs) / sizeof(subs[0]), usage);
}
