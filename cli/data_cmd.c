/* zinf data: make token shards from text (byte-level or GPT-2 BPE), check shards, write the
 * default corpus. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "engine/data.h"

#define TEXT_MAX ((size_t)16 << 30)

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: zinf data encode --text FILE [--text FILE ...] --out SHARD\n"
	        "                        [--vocab vocab.json --merges merges.txt]\n"
	        "                        [--val-fraction F --val-out VAL_SHARD]\n"
	        "       zinf data info SHARD [SHARD ...]\n"
	        "       zinf data corpus --out FILE [--bytes N] [--seed S]\n\n"
	        "encode  tokenizes the text files, in order, into one token shard (llm.c layout).\n"
	        "        Default: byte-level tokens (id = byte value, vocab 256). With --vocab and\n"
	        "        --merges: GPT-2 byte-level BPE, with <|endoftext|> (when the vocab has it)\n"
	        "        before each file. uint16 tokens when the vocab has <= 65536 ids, else\n"
	        "        uint32. --val-fraction F moves the last F of the tokens to VAL_SHARD.\n"
	        "info    validates shards and prints their width, token count and id range.\n"
	        "corpus  writes the embedded default training text (English-like, from a seeded\n"
	        "        grammar; %u bytes and seed %u unless given).\n\n"
	        "exit codes: 0 ok, 1 runtime failure or invalid data, 2 usage error\n",
	        ZINF_DEFAULT_CORPUS_BYTES, ZINF_DEFAULT_CORPUS_SEED);
}

/* The value of a flag at argv[*i]; NULL (after a message) when it is missing. */
static const char *
flag_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "zinf data: %s needs a value\n", argv[*i]);
		return NULL;
	}
	*i += 1;
	return argv[*i];
}

static int
parse_u64(const char *s, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int
cmd_encode(int argc, char **argv)
{
	const char **texts = calloc((size_t)argc, sizeof(*texts));
	int ntext = 0;
	const char *out = NULL, *vocab = NULL, *merges = NULL, *val_out = NULL;
	double val_fraction = 0;
	bool have_fraction = false;
	int rc = 2;
	if (!texts) {
		fprintf(stderr, "zinf data encode: out of memory\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			free(texts);
			return 0;
		}
		const char **dst = !strcmp(a, "--out")      ? &out
		                   : !strcmp(a, "--vocab")  ? &vocab
		                   : !strcmp(a, "--merges") ? &merges
		                   : !strcmp(a, "--val-out") ? &val_out
		                                             : NULL;
		if (!strcmp(a, "--text")) {
			if (!(v = flag_value(argc, argv, &i)))
				goto out;
			texts[ntext++] = v;
		} else if (dst) {
			if (!(v = flag_value(argc, argv, &i)))
				goto out;
			*dst = v;
		} else if (!strcmp(a, "--val-fraction")) {
			if (!(v = flag_value(argc, argv, &i)))
				goto out;
			char *end;
			val_fraction = strtod(v, &end);
			if (end == v || *end || !(val_fraction > 0 && val_fraction < 1)) {
				fprintf(stderr,
				        "zinf data encode: --val-fraction '%s' must be a number in "
				        "(0, 1), e.g. 0.01\n",
				        v);
				goto out;
			}
			have_fraction = true;
		} else {
			fprintf(stderr, "zinf data encode: unknown option '%s'\n\n", a);
			usage(stderr);
			goto out;
		}
	}
	if (!ntext || !out) {
		fprintf(stderr, "zinf data encode: needs --text FILE and --out SHARD\n\n");
		usage(stderr);
		goto out;
	}
	if (!vocab != !merges) {
		fprintf(stderr, "zinf data encode: BPE needs both --vocab and --merges\n");
		goto out;
	}
	if (have_fraction != (val_out != NULL)) {
		fprintf(stderr, "zinf data encode: --val-fraction and --val-out go together\n");
		goto out;
	}

	char err[1024];
	zinf_bpe *bpe = NULL;
	rc = 1;
	if (vocab && zinf_bpe_load(&bpe, vocab, merges, err, sizeof(err))) {
		fprintf(stderr, "zinf data encode: %s\n", err);
		goto out;
	}
	uint64_t vocab_size = bpe ? zinf_bpe_vocab_size(bpe) : ZINF_BYTE_VOCAB;
	int64_t eot = bpe ? zinf_bpe_token_id(bpe, "<|endoftext|>", 13) : -1;
	zinf_tokens tok = {0};
	int e = 0;
	for (int t = 0; t < ntext && !e; t++) {
		char *text;
		size_t len;
		e = zinf_data_read_file(texts[t], TEXT_MAX, &text, &len, err, sizeof(err));
		if (e)
			break;
		if (eot >= 0)
			e = zinf_tokens_push(&tok, (uint32_t)eot);
		if (!e && bpe)
			e = zinf_bpe_encode(bpe, text, len, &tok, err, sizeof(err));
		else if (!e)
			e = zinf_tokenize_bytes(text, len, &tok);
		if (e == -ENOMEM)
			snprintf(err, sizeof(err), "%s: out of memory for its tokens", texts[t]);
		free(text);
	}
	zinf_bpe_free(bpe);
	int width = zinf_shard_width_for_vocab(vocab_size);
	uint64_t nval = have_fraction ? (uint64_t)((double)tok.n * val_fraction) : 0;
	uint64_t ntrain = tok.n - nval;
	if (!e && have_fraction && (nval == 0 || ntrain == 0)) {
		snprintf(err, sizeof(err),
		         "--val-fraction %g of %zu tokens leaves %s empty; give more text or another "
		         "fraction",
		         val_fraction, tok.n, nval ? "the training shard" : "the validation shard");
		e = -EINVAL;
	}
	if (!e)
		e = zinf_shard_write(out, tok.ids, ntrain, width, err, sizeof(err));
	if (!e && val_out)
		e = zinf_shard_write(val_out, tok.ids + ntrain, nval, width, err, sizeof(err));
	if (e) {
		fprintf(stderr, "zinf data encode: %s\n", err);
	} else {
		printf("%s: %llu tokens (uint%d, vocab %llu, %s) from %d file(s)\n", out,
		       (unsigned long long)ntrain, width * 8, (unsigned long long)vocab_size,
		       vocab ? "GPT-2 BPE" : "byte-level", ntext);
		if (val_out)
			printf("%s: %llu tokens (validation, the last %g)\n", val_out,
			       (unsigned long long)nval, val_fraction);
		rc = 0;
	}
	zinf_tokens_free(&tok);
out:
	free(texts);
	return rc;
}

static int
cmd_info(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		char err[1024];
		uint32_t *tok;
		uint64_t n;
		int width;
		if (zinf_shard_read_all(argv[i], &tok, &n, &width, err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			rc = 1;
			continue;
		}
		uint32_t lo = UINT32_MAX, hi = 0;
		for (uint64_t k = 0; k < n; k++) {
			lo = tok[k] < lo ? tok[k] : lo;
			hi = tok[k] > hi ? tok[k] : hi;
		}
		free(tok);
		printf("%s: ok, uint%d tokens (magic %d, version %d), %llu tokens", argv[i],
		       width * 8, width == 2 ? ZINF_SHARD_MAGIC_U16 : ZINF_SHARD_MAGIC_U32,
		       width == 2 ? ZINF_SHARD_VERSION_U16 : ZINF_SHARD_VERSION_U32,
		       (unsigned long long)n);
		if (n)
			printf(", ids %u..%u", lo, hi);
		printf("\n");
	}
	return rc;
}

static int
cmd_corpus(int argc, char **argv)
{
	const char *out = NULL;
	unsigned long long bytes = ZINF_DEFAULT_CORPUS_BYTES, seed = ZINF_DEFAULT_CORPUS_SEED;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		unsigned long long *dst = !strcmp(a, "--bytes") ? &bytes
		                          : !strcmp(a, "--seed") ? &seed
		                                                 : NULL;
		if (!strcmp(a, "--out")) {
			if (!(out = flag_value(argc, argv, &i)))
				return 2;
		} else if (dst) {
			if (!(v = flag_value(argc, argv, &i)))
				return 2;
			if (parse_u64(v, dst) || (dst == &bytes && (*dst < 1 || *dst > (1ull << 32)))) {
				fprintf(stderr, "zinf data corpus: %s '%s' is not a whole number%s\n", a,
				        v, dst == &bytes ? " in [1, 2^32]" : "");
				return 2;
			}
		} else {
			fprintf(stderr, "zinf data corpus: unknown option '%s'\n\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!out) {
		fprintf(stderr, "zinf data corpus: needs --out FILE\n");
		return 2;
	}
	char *text;
	size_t len;
	if (zinf_data_default_corpus(seed, (size_t)bytes, &text, &len)) {
		fprintf(stderr, "zinf data corpus: out of memory for %llu bytes\n", bytes);
		return 1;
	}
	FILE *f = fopen(out, "wb");
	int rc = !f;
	if (f) {
		rc = fwrite(text, 1, len, f) != len;
		rc |= fclose(f) != 0;
	}
	if (rc)
		fprintf(stderr, "zinf data corpus: %s: cannot write: %s\n", out, strerror(errno));
	free(text);
	if (!rc)
		printf("%s: %zu bytes of default corpus (seed %llu)\n", out, len, seed);
	return rc;
}

int
zinf_data_main(int argc, char **argv)
{
	static const zinf_cli_sub subs[] = {{"encode", cmd_encode}, {"info", cmd_info}, {"corpus", cmd_corpus}};
	return zinf_cli_dispatch("zinf data", argc, argv, subs, sizeof(subs) / sizeof(subs[0]), usage);
}
