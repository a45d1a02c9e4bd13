/* libFuzzer harness for the ds_config.json loader: any bytes as a config, then resolve with a
 * world size and hidden size taken from the first two bytes. Must never crash, leak or read
 * out of bounds; errors must start with the name. Seed corpus: tests/fixtures/configs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int64_t world = size > 0 ? data[0] % 9 + 1 : 1;
	int64_t hidden = size > 1 ? data[1] * 16 : 0;
	char *json = malloc(size + 1);
	if (!json)
		return 0;
	memcpy(json, data, size);
	json[size] = 0;
	zinf_config *cfg = malloc(sizeof(*cfg));
	if (!cfg) {
		free(json);
		return 0;
	}
	char err[512];
	zinf_config_init_defaults(cfg);
	int rc = zinf_config_load_string("fuzz.json", json, NULL, cfg, err, sizeof(err));
	if (!rc)
		rc = zinf_config_resolve(cfg, world, hidden, err, sizeof(err));
	if (rc && strncmp(err, "fuzz.json", 9))
		abort(); /* every message starts with the file name */
	if (!rc) {
		zinf_memory_plan plan;
		if (zinf_config_memory_plan(cfg, 7000000000ull, &plan))
			abort();
		char buf[256];
		for (int k = 0; k < ZINF_KEY_COUNT; k++)
			zinf_config_format_value(cfg, (zinf_config_key)k, buf, sizeof(buf));
	}
	free(cfg);
	free(json);
	return 0;
}
