/* libFuzzer harness for token shards: any bytes as a shard file, parsed from memory and then
 * read through the data loader (from a memfd), with the loader's settings taken from the
 * header's unused words; the loader state is round-tripped and fuzzed bytes are offered as a
 * state; the GPT-2 pre-tokeniser walks the same bytes. Must never crash, leak or read out of
 * bounds; every error message starts with the file's name. Seed corpus: tests/fixtures/data. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t
word(const uint8_t *data, size_t size, size_t i)
{
	uint32_t v = 0;
	if (4 * i + 4 <= size)
		memcpy(&v, data + 4 * i, 4);
	return v;
}

static void
run_loader(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz_shard", MFD_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return;
	}
	char path[64], err[1024];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	zinf_loader_opts o;
	zinf_loader_opts_init(&o);
	o.glob = path;
	o.B = 1 + (int)(word(data, size, 3) % 4);
	o.T = 1 + (int)(word(data, size, 4) % 32);
	o.world_size = 1 + (int)(word(data, size, 5) % 3);
	o.rank = (int)(word(data, size, 6) % (uint32_t)o.world_size);
	o.shuffle = word(data, size, 7) & 1;
	o.seed = word(data, size, 8);
	o.slurp_max = word(data, size, 9) & 1;
	o.vocab_size = 1 + word(data, size, 10) % 70000;
	zinf_loader *l = NULL;
	int rc = zinf_loader_open(&l, &o, err, sizeof(err));
	if (rc && strncmp(err, path, strlen(path)))
		abort();
	if (!rc) {
		int n = o.B * o.T;
		int32_t *in = malloc((size_t)n * 4), *tg = malloc((size_t)n * 4);
		uint64_t calls = 2 * zinf_loader_steps_per_epoch(l) + 1;
		for (uint64_t k = 0; k < calls && k < 64; k++) {
			if (zinf_loader_next(l, in, tg, err, sizeof(err))) {
				if (strncmp(err, path, strlen(path)))
					abort();
				break;
			}
			for (int i = 0; i + 1 < n; i++)
				if (tg[i] != in[i + 1] || in[i] < 0 || (uint64_t)in[i] >= o.vocab_size)
					abort();
		}
		zinf_loader_state st, st2;
		uint8_t bytes[ZINF_LOADER_STATE_BYTES];
		zinf_loader_get_state(l, &st);
		zinf_loader_state_encode(&st, bytes);
		if (zinf_loader_state_decode(bytes, sizeof(bytes), &st2, err, sizeof(err)) ||
		    zinf_loader_set_state(l, &st2, err, sizeof(err)))
			abort(); /* its own state always restores */
		if (size >= ZINF_LOADER_STATE_BYTES &&
		    !zinf_loader_state_decode(data + size - ZINF_LOADER_STATE_BYTES,
		                              ZINF_LOADER_STATE_BYTES, &st2, err, sizeof(err))) {
			st2.fingerprint = st.fingerprint; /* reach the consistency checks */
			zinf_loader_set_state(l, &st2, err, sizeof(err));
			if (zinf_loader_next(l, in, tg, err, sizeof(err)) &&
			    strncmp(err, path, strlen(path)))
				abort();
		}
		free(in);
		free(tg);
		zinf_loader_close(l);
	}
	close(fd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	zinf_shard_info info;
	char err[1024];
	int rc = zinf_shard_parse_header("fuzz.bin", data, size, size, &info, err, sizeof(err));
	if (rc && strncmp(err, "fuzz.bin", 8))
		abort();
	if (!rc) {
		uint64_t sum = 0;
		for (uint64_t i = 0; i < info.ntok; i++)
			sum += zinf_shard_token(data, &info, i);
		if (info.width == 2 && sum > info.ntok * 65535)
			abort();
	}
	run_loader(data, size);

	size_t pos = 0;
	while (pos < size) {
		size_t end = zinf_gpt2_pretoken_end((const char *)data, size, pos);
		if (end <= pos || end > size)
			abort();
		pos = end;
	}
	return 0;
}
