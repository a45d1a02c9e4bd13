/* engine/data: token shards (llm.c layout), the training/validation data loader, tokenizers
 * (byte-level and GPT-2 byte-level BPE) and the embedded default corpus.
 *
 * Shard format (DESIGN.md, Formats): a 1024-byte header of 256 little-endian int32 --
 * [0] magic, [1] version, [2] token count, the rest zero -- then the tokens:
 *   magic 20240520, version 1: uint16 tokens;  magic 20240801, version 7: uint32 tokens.
 * A shard is valid only when its size is exactly 1024 + count * width bytes.
 *
 * Errors: 0 on success or a negative errno; `err` (when not NULL) then holds one line that
 * starts with the file's path and names the field, the expected and the actual value and, when
 * there is one, the fix. -EINVAL: the data is wrong (bad magic, version, size, token id out of
 * range, a state that does not belong to this loader). Other codes come from the system
 * (-ENOENT, -EACCES, -EIO, -ENOMEM, ...).
 */
#ifndef ZINF_ENGINE_DATA_H
#define ZINF_ENGINE_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Token shards ---- */

#define ZINF_SHARD_HEADER_INTS 256
#define ZINF_SHARD_HEADER_BYTES (ZINF_SHARD_HEADER_INTS * 4)
#define ZINF_SHARD_MAGIC_U16 20240520
#define ZINF_SHARD_VERSION_U16 1
#define ZINF_SHARD_MAGIC_U32 20240801
#define ZINF_SHARD_VERSION_U32 7
#define ZINF_SHARD_MAX_TOKENS INT32_MAX /* the count is an int32 in the header */

typedef struct zinf_shard_info {
	uint64_t ntok; /* tokens after the header */
	int width;     /* bytes per token: 2 (uint16) or 4 (uint32) */
} zinf_shard_info;

/* Checks a shard header against the file's size. `hdr` holds the first hdr_len bytes of the
 * file (hdr_len >= 1024 unless the file is shorter), `file_size` its full size; `name` starts
 * every message. Refused: a file shorter than the header, an unknown magic, a version that
 * does not match the magic, a negative count, a size other than 1024 + count * width (the
 * message gives the expected and the actual size). */
int zinf_shard_parse_header(const char *name, const void *hdr, size_t hdr_len,
                            uint64_t file_size, zinf_shard_info *info, char *err, size_t errlen);

/* Token i of a validated shard held in memory (`buf` is the whole file). */
uint32_t zinf_shard_token(const void *buf, const zinf_shard_info *info, uint64_t i);

/* Smallest width (2 or 4) that holds ids below vocab_size: 2 when vocab_size <= 65536. */
int zinf_shard_width_for_vocab(uint64_t vocab_size);

/* Writes tokens as a shard of `width` bytes per token (2 or 4), atomically: a temporary file
 * in the same folder, fsync, rename over `path`, fsync of the folder. A token that does not
 * fit the width, or more than ZINF_SHARD_MAX_TOKENS tokens, is -ERANGE (nothing is written). */
int zinf_shard_write(const char *path, const uint32_t *tokens, uint64_t n, int width, char *err,
                     size_t errlen);

/* Reads and validates a whole shard into a malloc'd array of n uint32 ids (caller frees). */
int zinf_shard_read_all(const char *path, uint32_t **tokens, uint64_t *n, int *width, char *err,
                        size_t errlen);

/* ---- Data loader ----
 *
 * Shards: the files matched by a glob, sorted by name; every shard is opened and validated
 * when the loader opens. A batch is B*T+1 consecutive tokens of one shard: inputs are tokens
 * [0, B*T), targets tokens [1, B*T+1), row-major [B][T] int32. Shard s holds
 * floor((ntok - 1) / (B*T)) batches starting at multiples of B*T; a shard too short for one
 * batch contributes none. An epoch is the sequence of all batches of all shards, in shard
 * order then batch order; with shuffling both orders are permuted per epoch by a counter-based
 * RNG keyed by (seed, epoch), so any position can be recomputed from the state alone.
 *
 * Ranks: batch k of the epoch goes to rank k mod world_size. Each rank takes
 * steps_per_epoch = floor(total batches / world_size) batches per epoch (the remainder, fewer
 * than world_size batches, is skipped so all ranks wrap together); a rank's position advances
 * by world_size batches per step, so ranks read disjoint batches that together cover the
 * epoch. After the last step of an epoch the next call starts epoch + 1.
 *
 * Reading: a shard of at most slurp_max token bytes is read whole when the loader enters it;
 * a larger one is read per batch with pread. The file is reopened and its size checked against
 * the size seen at open each time the loader enters it. Every token is checked against
 * vocab_size: a token >= vocab_size is -EINVAL naming the shard, the token's position in it and
 * its value.
 *
 * Validation: open a second loader over the validation glob (shuffle off) and call
 * zinf_loader_reset() before each evaluation pass.
 */

#define ZINF_LOADER_SLURP_BYTES (64u << 20)

typedef struct zinf_loader zinf_loader;

typedef struct zinf_loader_opts {
	const char *glob;    /* shard files, e.g. "data/train_*.bin" (a plain path works too) */
	int B, T;            /* micro-batch: B sequences of T tokens, B*T < 2^30 */
	int rank, world_size; /* 0 <= rank < world_size */
	uint64_t vocab_size;  /* the model's vocab size: every token must be below it */
	bool shuffle;        /* permute shard order and batch order per epoch */
	uint64_t seed;       /* shuffling seed (part of the saved state) */
	uint64_t slurp_max;  /* shards of at most this many token bytes are read whole;
	                      * 0: ZINF_LOADER_SLURP_BYTES, 1: always pread per batch */
} zinf_loader_opts;

/* Defaults: B=1, T=1, rank 0 of 1, vocab 65536, no shuffle, seed 1337. */
void zinf_loader_opts_init(zinf_loader_opts *o);

int zinf_loader_open(zinf_loader **out, const zinf_loader_opts *opts, char *err, size_t errlen);
void zinf_loader_close(zinf_loader *l);

/* Fills inputs and targets (B*T int32 each) with this rank's next batch and advances. */
int zinf_loader_next(zinf_loader *l, int32_t *inputs, int32_t *targets, char *err,
                     size_t errlen);

/* Back to the first batch of epoch 0 (same seed). */
void zinf_loader_reset(zinf_loader *l);

uint64_t zinf_loader_steps_per_epoch(const zinf_loader *l); /* batches per rank per epoch */
uint64_t zinf_loader_total_batches(const zinf_loader *l);   /* all ranks, one epoch */
size_t zinf_loader_shard_count(const zinf_loader *l);
const char *zinf_loader_shard_path(const zinf_loader *l, size_t i); /* sorted order */

/* The loader's full position. epoch and step say where the next batch comes from; shard and
 * batch are derived from them (the shard's index in the sorted list and the batch's index in
 * that shard) and are checked on restore; fingerprint identifies B, T, rank, world size,
 * shuffle and the shards' sizes, so a state cannot be restored into a different loader. */
typedef struct zinf_loader_state {
	uint64_t seed;
	uint64_t epoch;
	uint64_t step;  /* next step of this rank within the epoch, < steps_per_epoch */
	uint64_t shard; /* shard of the next batch (index in the sorted list) */
	uint64_t batch; /* batch index within that shard */
	uint64_t fingerprint;
	uint32_t rank, world_size;
	uint32_t shuffle;
} zinf_loader_state;

#define ZINF_LOADER_STATE_BYTES 80

void zinf_loader_get_state(const zinf_loader *l, zinf_loader_state *st);
/* -EINVAL when the state belongs to another loader (fingerprint, rank, world size, shuffle)
 * or is inconsistent (step out of range, shard/batch not those the step maps to). */
int zinf_loader_set_state(zinf_loader *l, const zinf_loader_state *st, char *err,
                          size_t errlen);
/* Fixed little-endian encoding with a magic, a version and a checksum, for checkpoints. */
void zinf_loader_state_encode(const zinf_loader_state *st, uint8_t out[ZINF_LOADER_STATE_BYTES]);
int zinf_loader_state_decode(const uint8_t *buf, size_t len, zinf_loader_state *st, char *err,
                             size_t errlen);

/* ---- Tokenizers (engine/tokenize.c) ---- */

/* A growable array of token ids. Zero-initialise; free with zinf_tokens_free. */
typedef struct zinf_tokens {
	uint32_t *ids;
	size_t n, cap;
} zinf_tokens;

int zinf_tokens_push(zinf_tokens *t, uint32_t id);
void zinf_tokens_free(zinf_tokens *t);

/* Byte-level: one token per byte, id = byte value (vocab 256). */
#define ZINF_BYTE_VOCAB 256
int zinf_tokenize_bytes(const void *text, size_t len, zinf_tokens *out);

/* GPT-2 byte-level BPE from a vocab.json ({"token": id, ...}, tokens written in GPT-2's
 * byte-to-unicode alphabet) and a merges.txt (an optional "#version" line, then "left right"
 * per line, highest priority first).
 *
 * Encoding splits the text with GPT-2's pre-tokenisation pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * then merges each piece's bytes by merge rank (lowest rank first, every occurrence of that
 * pair, until no pair has a rank). Unicode classes: \s is the White_Space set; \p{L} and
 * \p{N} come from a table of code point ranges taken from the Python `regex` module (2026.5.9)
 * that GPT-2's encoder uses, so pre-tokenisation matches it exactly for the Unicode version that
 * module carries; APPROXIMATION: a character assigned in a later Unicode version counts as
 * neither letter nor number (it joins punctuation runs), and the ids still decode to the same
 * bytes. Invalid UTF-8 bytes are single non-letter characters. */
typedef struct zinf_bpe zinf_bpe;

int zinf_bpe_load(zinf_bpe **out, const char *vocab_path, const char *merges_path, char *err,
                  size_t errlen);
void zinf_bpe_free(zinf_bpe *b);
/* max id + 1 */
uint64_t zinf_bpe_vocab_size(const zinf_bpe *b);
/* Id of a vocab entry given as raw bytes (e.g. "<|endoftext|>"), or -1. */
int64_t zinf_bpe_token_id(const zinf_bpe *b, const char *bytes, size_t len);
/* Appends the ids of text. -EINVAL when a piece's merged symbol is not in the vocab (the
 * message names the symbol). */
int zinf_bpe_encode(zinf_bpe *b, const char *text, size_t len, zinf_tokens *out, char *err,
                    size_t errlen);
/* Appends the bytes of ids to a malloc'd buffer (*out, *len; caller frees). -EINVAL naming an
 * id that is not in the vocab. */
int zinf_bpe_decode(const zinf_bpe *b, const uint32_t *ids, size_t n, char **out, size_t *len,
                    char *err, size_t errlen);

/* End of the GPT-2 pre-token that starts at text[pos] (pos < len), as an offset > pos. */
size_t zinf_gpt2_pretoken_end(const char *text, size_t len, size_t pos);

/* Reads a whole file (a text to encode, a tokenizer file) into a malloc'd, NUL-terminated
 * buffer; more than max bytes is -EFBIG. Caller frees *buf. */
int zinf_data_read_file(const char *path, size_t max, char **buf, size_t *len, char *err,
                        size_t errlen);

/* ---- Default corpus ---- */

#define ZINF_DEFAULT_CORPUS_BYTES (320u << 10)
#define ZINF_DEFAULT_CORPUS_SEED 20240520u

/* English-like text from a seeded grammar and word lists, in paragraphs: deterministic for a
 * (seed, bytes) pair, at least `bytes` long (it stops at the end of the sentence that reaches
 * it), NUL-terminated, malloc'd (caller frees). bytes 0 means ZINF_DEFAULT_CORPUS_BYTES. */
int zinf_data_default_corpus(uint64_t seed, size_t bytes, char **text, size_t *len);

/* The default corpus as byte-level shards: the first (1 - val_fraction) of the tokens to
 * train_path, the rest to val_path (NULL: everything to train_path). */
int zinf_data_write_default_shards(const char *train_path, const char *val_path,
                                   double val_fraction, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
