/* Shared "zinf <command> <subcommand> ..." dispatch for commands with subcommands. */
#include <stdio.h>
#include <string.h>

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
