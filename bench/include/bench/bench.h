/* zinf benchmarks: one entry point per subject, called by `zinf bench <subject>`.
 * Each parses its own flags (argv[0] is the subject name), prints a human table or, with
 * --json, one JSON object on stdout, and returns the process exit code:
 * 0 ok, 1 runtime failure, 2 usage error. */
#ifndef ZINF_BENCH_H
#define ZINF_BENCH_H

#ifdef __cplusplus
extern "C" {
#endif

int zinf_bench_io_main(int argc, char **argv);
int zinf_bench_adam_main(int argc, char **argv);
int zinf_bench_swap_main(int argc, char **argv);
int zinf_bench_optstep_main(int argc, char **argv);
/* zinf tune (tune.c): measures offload/aio settings on a folder, writes a config fragment. */
int zinf_tune_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
