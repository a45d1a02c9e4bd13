/* Checkpoint folders seen from outside a training run (zinf ckpt, tests): the partition table
 * of a manifest, streaming access to rank shards, inspect and consolidate.
 *
 * A tag folder saved by W ranks holds rank0.bin .. rank<W-1>.bin (engine.h's shard format).
 * Rank r's sections fp32_master / exp_avg / exp_avg_sq hold the optimizer state of the
 * elements it owns: the concatenation, in vector order, of its ranges in the manifest's
 * "partition" table ([{"rank": r, "numel": n, "ranges": [[begin, end], ...]}, ...]). At ZeRO
 * stage 0 every rank holds everything, so only rank 0 stores the state (the others' ranges
 * are empty); every rank stores its own "client" section (its data loader position).
 *
 * Consolidation never holds the model: every tensor is assembled from the byte ranges of the
 * shards that hold it (pread), converted and appended to the safetensors file, so the peak
 * is one tensor (the largest, usually the embedding) plus fixed-size buffers. Checksums are
 * verified first by streaming each section in 4 MiB pieces.
 *
 * Errors: 0 or -errno with one line in err naming the file, the value and the fix. */
#ifndef ZINF_ENGINE_CKPT_H
#define ZINF_ENGINE_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"
#include "engine/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- partition table -------------------------------------------------------------------- */

typedef struct zinf_ckpt_part {
	int nranges;
	zinf_zero_range *ranges; /* vector order */
	int64_t numel;           /* sum of the ranges: the length of the rank's state sections */
} zinf_ckpt_part;

/* What each of `world` ranks stores for a model layout at a ZeRO stage (the engine's
 * zinf_zero_partition_init over the layout's blocks; stage 0: rank 0 everything, others
 * nothing). parts gets `world` entries (free with zinf_ckpt_parts_free). */
int zinf_ckpt_parts(const zinf_model_layout *lay, int stage, int world, zinf_ckpt_part **parts,
                    char *err, size_t errlen);
void zinf_ckpt_parts_free(zinf_ckpt_part *parts, int world);
/* Writes the manifest's "partition": [...] member (no trailing comma or newline). */
void zinf_ckpt_parts_json(FILE *f, const zinf_ckpt_part *parts, int world);
/* true when a and b hold the same ranges. */
bool zinf_ckpt_part_equal(const zinf_ckpt_part *a, const zinf_ckpt_part *b);
/* "[[0, 4096], [8192, 9000]]" into buf (truncated with "..." past buflen). */
void zinf_ckpt_part_str(const zinf_ckpt_part *p, char *buf, size_t buflen);

/* ---- shared staging folder (several ranks write one checkpoint) ----------------------------
 * DIR/.TAG.tmp-ranks: its path into tmp (every rank). begin (rank 0 only, before the others
 * write): creates DIR, removes a stale staging folder of an interrupted save, makes it anew. */
int zinf_ckpt_staging_path(const char *dir, const char *tag, char *tmp, size_t tmplen,
                           char *err, size_t errlen);
int zinf_ckpt_begin_shared(const char *dir, const char *tag, char *tmp, size_t tmplen,
                           char *err, size_t errlen);

/* ---- manifest --------------------------------------------------------------------------- */

typedef struct zinf_ckpt_manifest {
	char folder[4096]; /* the tag folder */
	char tag[256];
	int world_size, stage;
	int64_t total_numel, global_steps;
	char model_name[64], arch[16], precision[8];
	zinf_ckpt_part *parts; /* world_size entries */
} zinf_ckpt_manifest;

/* Reads FOLDER/manifest.json (folder: a tag folder). A checkpoint without "partition" (saved
 * by one rank before the table existed) gets rank 0 = [0, total_numel). */
int zinf_ckpt_manifest_read(const char *folder, zinf_ckpt_manifest *m, char *err, size_t errlen);
void zinf_ckpt_manifest_free(zinf_ckpt_manifest *m);

/* ---- shards, streamed -------------------------------------------------------------------- */

typedef struct zinf_ckpt_shard_sec {
	char name[32];
	uint64_t offset, len, sum;
} zinf_ckpt_shard_sec;

typedef struct zinf_ckpt_shard {
	char path[4200];
	int fd, rank, nsec;
	uint64_t file_size;
	zinf_ckpt_shard_sec sec[ZINF_CKPT_MAX_SECTIONS];
} zinf_ckpt_shard;

/* Opens FOLDER/rank<R>.bin and checks its header and that every section lies inside it. */
int zinf_ckpt_shard_open(const char *folder, int rank, zinf_ckpt_shard *s, char *err,
                         size_t errlen);
void zinf_ckpt_shard_close(zinf_ckpt_shard *s);
/* The section named `name`, or NULL. */
const zinf_ckpt_shard_sec *zinf_ckpt_shard_find(const zinf_ckpt_shard *s, const char *name);
/* Checksums of every section, streamed in 4 MiB pieces; -EIO naming the section. */
int zinf_ckpt_shard_verify(const zinf_ckpt_shard *s, char *err, size_t errlen);
/* len bytes at byte `at` of a section. */
int zinf_ckpt_shard_pread(const zinf_ckpt_shard *s, const zinf_ckpt_shard_sec *sec, uint64_t at,
                          void *buf, size_t len, char *err, size_t errlen);

/* ---- tools (ckpt_tools.c) ------------------------------------------------------------------ */

/* zinf ckpt inspect: every tag under DIR (or DIR itself as a tag folder), its world size,
 * stage, steps, shard sizes and checksums, printed to f. Returns -EIO when a checksum fails
 * (after printing all), other errors when a tag cannot be read. */
int zinf_ckpt_inspect(const char *dir, FILE *f, char *err, size_t errlen);

/* zinf ckpt consolidate: the full weights of DIR (its `latest`, or tag `tag` under it, or DIR
 * itself as a tag folder) from the fp32 master of all shards into out (HF names) and
 * config.json next to it. The model config comes from the tag folder's model_config.json
 * (else config.json there; else the error asks for it). dtype ZINF_SAVE_F32 or _BF16. */
int zinf_ckpt_consolidate(const char *dir, const char *tag, const char *out,
                          zinf_save_dtype dtype, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
