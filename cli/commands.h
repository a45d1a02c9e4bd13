/* Subcommands of the zinf command, one entry point each: argv[0] is the subcommand name.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage error or bad config. */
#ifndef ZINF_CLI_COMMANDS_H
#define ZINF_CLI_COMMANDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A command's subcommands (argv[0] of main is the subcommand name). */
typedef struct zinf_cli_sub {
	const char *name;
	int (*main)(int argc, char **argv);
} zinf_cli_sub;
/* Runs the subcommand argv[1] names; no argument or an unknown one: usage on stderr, exit 2
 * (the message names the subcommands); -h/--help: usage on stdout, exit 0. (dispatch.c) */
int zinf_cli_dispatch(const char *prog, int argc, char **argv, const zinf_cli_sub *subs, size_t n,
                      void (*usage)(FILE *f));

/* "80G", "512GiB", "1.5T", "1000000" -> bytes (K M G T and KiB.. binary; KB MB GB TB
 * decimal); a bad value: a message naming prog and flag on stderr, -EINVAL. (dispatch.c) */
int zinf_cli_parse_size(const char *prog, const char *flag, const char *v, uint64_t *out);

/* zinf config check FILE ... | zinf config keys (config_cmd.c) */
int zinf_config_main(int argc, char **argv);

/* zinf plan --model M --gpus N ... (plan_cmd.c) */
int zinf_plan_main(int argc, char **argv);

/* zinf data encode|info|corpus ... (data_cmd.c) */
int zinf_data_main(int argc, char **argv);

/* zinf eval --model M --data GLOB | --tokens FILE [--dump DIR] (model_cmd.c) */
int zinf_eval_main(int argc, char **argv);
/* zinf bench model --model M --batch B --seq T ... (model_cmd.c) */
int zinf_bench_model_main(int argc, char **argv);

/* zinf ckpt inspect|consolidate ... (ckpt_cmd.c) */
int zinf_ckpt_main(int argc, char **argv);

/* zinf train ... (train_cmd.c) */
int zinf_train_main(int argc, char **argv);

/* zinf launch --num_gpus N ... -- <command> ...; the hidden zinf comm-selftest (launch_cmd.c) */
int zinf_launch_main(int argc, char **argv);
/* The `zinf train --num_gpus N` short form: runs `zinf argv[0] argv[1..]` (argv without
 * --num_gpus) as nproc local ranks (cpu != 0: CPU ranks), MASTER_ADDR/MASTER_PORT from the
 * environment or the defaults; returns zinf launch's exit status. A command that finds
 * WORLD_SIZE set is already a rank and must not call it again. */
int zinf_launch_command(int nproc, int cpu, int argc, char **argv);
int zinf_comm_selftest_main(int argc, char **argv);

#endif
