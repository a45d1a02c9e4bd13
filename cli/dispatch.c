/* Shared "zinf <command> <subcommand> ..." dispatch for commands with subcommands, and the
 * size parser the commands share. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "commands.h"

int
zinf_cli_dispatch(const char *prog, int argc, char **argv, const zinf_cli_sub *subs, size_t n,
                  void (*usage)(FILE *f))
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].main(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown subcommand '%s' (", prog, argv[1]);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%s%s", i ? ", " : "", subs[i].name);
	fprintf(stderr, ")\n\n");
	usage(stderr);
	return 2;
}

/* "80G", "512GiB", "1.5T", "1000000" -> bytes (K M G T and KiB.. binary; KB MB GB TB decimal). */
int
zinf_cli_parse_size(const char *prog, const char *flag, const char *v, uint64_t *out)
{
	static const struct {
		const char *s;
		double m;
	} units[] = {{"", 1},         {"B", 1},          {"K", 0x1p10},   {"KiB", 0x1p10},
	             {"KB", 1e3},     {"M", 0x1p20},     {"MiB", 0x1p20}, {"MB", 1e6},
	             {"G", 0x1p30},   {"GiB", 0x1p30},   {"GB", 1e9},     {"T", 0x1p40},
	             {"TiB", 0x1p40}, {"TB", 1e12}};
	char *end;
	errno = 0;
	double x = strtod(v, &end), mult = 0;
	for (size_t i = 0; end != v && i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcasecmp(end, units[i].s))
			mult = units[i].m;
	if (end == v || !mult || errno || !(x > 0) || x * mult > 1e18) {
		fprintf(stderr,
		        "%s: %s '%s': not a size > 0; pass e.g. %s 80G (K M G T binary, KB MB "
		        "GB TB decimal)\n",
		        prog, flag, v, flag);
		return -EINVAL;
	}
	*out = (uint64_t)(x * mult);
	return 0;
}

