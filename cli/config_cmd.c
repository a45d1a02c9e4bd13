/* zinf config: check a ds_config.json (resolved values, their sources, the memory plan per
 * tier per rank) and list the keys zinf reads. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "engine/config.h"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf config check FILE [--num_gpus N] [--nvme_path DIR] [--hidden H]\n"
	        "                         [--params N] [HF-style overrides...]\n"
	        "       zinf config keys\n\n"
	        "check   reads FILE (DeepSpeed ds_config.json), resolves it for N ranks (default "
	        "1)\n"
	        "        and prints every key with its value and source (file, default, auto,\n"
	        "        flag, derived); with --params N (e.g. 7B, 124M, 1.5e9) also the memory\n"
	        "        plan per tier per rank.\n"
	        "keys    lists every key zinf reads, its default and what fills \"auto\".\n\n"
	        "overrides (fill \"auto\", as the HF trainer does): --per_device_train_batch_size "
	        "N\n"
	        "  --gradient_accumulation_steps N --max_grad_norm X --learning_rate X\n"
	        "  --weight_decay X --adam_beta1 X --adam_beta2 X --adam_epsilon X\n"
	        "  --warmup_steps N --max_steps N --fp16 --bf16\n"
	        "--hidden H fills the model-sized \"auto\" buckets (hidden^2, 0.9 hidden^2, "
	        "10 hidden).\n\n"
	        "exit codes: 0 ok, 1 runtime failure, 2 usage error or bad config\n");
}

/* "7B", "124M", "1.5e9", "350K" -> count (decimal suffixes). */
static int
parse_count(const char *s, double max, double *out)
{
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || !isfinite(v))
		return -EINVAL;
	double mul = 1;
	if (*end) {
		switch (*end) {
		case 'K':
		case 'k':
			mul = 1e3;
			break;
		case 'M':
		case 'm':
			mul = 1e6;
			break;
		case 'B':
		case 'b':
		case 'G':
		case 'g':
			mul = 1e9;
			break;
		case 'T':
		case 't':
			mul = 1e12;
			break;
		default:
			return -EINVAL;
		}
		if (end[1])
			return -EINVAL;
	}
	v *= mul;
	if (v < 1 || v > max || v != floor(v))
		return -ERANGE;
	*out = v;
	return 0;
}

static const char *
human(double bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	int u = 0;
	while (bytes >= 1024 && u < 5) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
	return buf;
}

static void
print_source(const zinf_config *cfg, int k, char *buf, size_t len)
{
	zinf_config_source s = (zinf_config_source)cfg->src[k];
	const char *rule = zinf_config_key_auto_rule((zinf_config_key)k);
	if (s == ZINF_SRC_AUTO && rule)
		snprintf(buf, len, "auto: %s", rule);
	else if (s == ZINF_SRC_FLAG)
		snprintf(buf, len, "flag");
	else
		snprintf(buf, len, "%s", zinf_config_source_name(s));
}

static int
cmd_keys(int argc, char **argv)
{
	zinf_config cfg;
	zinf_config_init_defaults(&cfg);
	printf("%-62s %-14s %s\n", "key", "default", "\"auto\" filled by");
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		char val[128];
		zinf_config_key c = zinf_config_key_canonical((zinf_config_key)k);
		const char *rule = zinf_config_key_auto_rule((zinf_config_key)k);
		zinf_config_format_value(&cfg, c, val, sizeof(val));
		if (c != (zinf_config_key)k)
			snprintf(val, sizeof(val), "alias of %s", zinf_config_key_path(c));
		printf("%-62s %-14s %s\n", zinf_config_key_path((zinf_config_key)k), val,
		       rule ? rule : "-");
	}
	return 0;
}

static void
print_plan(const zinf_config *cfg, double params)
{
	zinf_memory_plan plan;
	char h[32];
	if (zinf_config_memory_plan(cfg, (uint64_t)params, &plan))
		return;
	const char *prec = cfg->bf16_enabled ? "bf16" : cfg->fp16_enabled ? "fp16" : "fp32";
	printf("\nmemory plan per rank: %.0f params, world size %lld, ZeRO stage %lld, %s; "
	       "partition N = ceil(params / world) = %llu elements\n",
	       params, (long long)cfg->world_size, (long long)cfg->stage, prec,
	       (unsigned long long)plan.partition_elems);
	printf("  %-24s %-5s %14s %20s\n", "state", "tier", "size", "bytes");
	for (int i = 0; i < plan.n_items; i++)
		printf("  %-24s %-5s %14s %20llu\n", plan.item[i].what,
		       zinf_tier_name(plan.item[i].tier),
		       human((double)plan.item[i].bytes, h, sizeof(h)),
		       (unsigned long long)plan.item[i].bytes);
	for (int t = 0; t < ZINF_TIER_COUNT; t++)
		printf("  %-24s %-5s %14s %20llu\n", "total", zinf_tier_name((zinf_tier)t),
		       human((double)plan.per_tier[t], h, sizeof(h)),
		       (unsigned long long)plan.per_tier[t]);
	printf("formula: params b x (stage 3 ? N : P) on offload_param.device (stage 3) else GPU;"
	       " grads 4 x (stage >= 2 ? N : P) (fp32) on GPU, host with offload_param;\n"
	       "  fp32 master (mixed precision only), Adam m, Adam v 4 x (stage >= 1 ? N : P) "
	       "each on offload_optimizer.device;\n"
	       "  b = 2 for fp16/bf16, 4 for fp32; NVMe staging: buffer_count x "
	       "min(sub_group_size, N) x 4 (optimizer), buffer_count x buffer_size x b (params);\n"
	       "  activations and all-gather buffers not counted.\n");
}

static int
cmd_check(int argc, char **argv)
{
	const char *file = NULL;
	double world = 1, hidden = 0, params = 0;
	zinf_config_overrides ov;
	zinf_config_overrides_init(&ov);
	char err[1024];
	for (int i = 1; i < argc;) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		int rc = zinf_config_override_arg(&ov, argc, argv, &i, err, sizeof(err));
		if (rc == 0)
			continue;
		if (rc != -ENOENT) {
			fprintf(stderr, "zinf config check: %s\n", err);
			return 2;
		}
		const char *names[3] = {"--num_gpus", "--hidden", "--params"};
		double *dst[3] = {&world, &hidden, &params};
		double max[3] = {1 << 20, 1 << 24, 1e15};
		int which = -1;
		for (int n = 0; n < 3; n++)
			if (!strcmp(a, names[n]))
				which = n;
		if (which >= 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "zinf config check: %s needs a value\n", a);
				return 2;
			}
			rc = parse_count(argv[i + 1], max[which], dst[which]);
			if (rc) {
				fprintf(stderr,
				        "zinf config check: %s '%s' is not a whole number in "
				        "[1, %.0f]\n",
				        a, argv[i + 1], max[which]);
				return 2;
			}
			i += 2;
			continue;
		}
		if (a[0] == '-' && a[1]) {
			fprintf(stderr, "zinf config check: unknown option '%s'\n\n", a);
			usage(stderr);
			return 2;
		}
		if (file) {
			fprintf(stderr, "zinf config check: one FILE only (got '%s' and '%s')\n",
			        file, a);
			return 2;
		}
		file = a;
		i++;
	}
	if (!file) {
		usage(stderr);
		return 2;
	}

	zinf_config cfg;
	zinf_config_init_defaults(&cfg);
	int rc = zinf_config_load_file(file, &ov, &cfg, err, sizeof(err));
	if (!rc)
		rc = zinf_config_resolve(&cfg, (int64_t)world, (int64_t)hidden, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s\n", err); /* starts with the file's path */
		return rc == -EINVAL ? 2 : 1;
	}
	if (ov.nvme_path && cfg.offload_optimizer.device != ZINF_DEVICE_NVME &&
	    cfg.offload_param.device != ZINF_DEVICE_NVME)
		fprintf(stderr,
		        "zinf config check: note: --nvme_path %s is unused: no offload "
		        "device is nvme\n",
		        ov.nvme_path);

	printf("%s: ok for world size %lld", file, (long long)world);
	if (hidden > 0)
		printf(", hidden size %lld", (long long)hidden);
	printf("\n%-62s %-22s %s\n", "key", "value", "source");
	for (int k = 0; k < ZINF_KEY_COUNT; k++) {
		if (zinf_config_key_canonical((zinf_config_key)k) != (zinf_config_key)k)
			continue;
		char val[ZINF_CONFIG_PATH_MAX + 32], src[96];
		zinf_config_format_value(&cfg, (zinf_config_key)k, val, sizeof(val));
		print_source(&cfg, k, src, sizeof(src));
		printf("%-62s %-22s %s\n", zinf_config_key_path((zinf_config_key)k), val, src);
	}
	if (params > 0)
		print_plan(&cfg, params);
	return 0;
}

int
zinf_config_main(int argc, char **argv)
{
	static const zinf_cli_sub subs[] = {{"check", cmd_check}, {"keys", cmd_keys}};
	return zinf_cli_dispatch("zinf config", argc, argv, subs, sizeof(subs) / sizeof(subs[0]),
	                         usage);
}
