/* engine/model internals shared by model.c and model_weights.c. */
#ifndef ZINF_ENGINE_MODEL_INTERNAL_H
#define ZINF_ENGINE_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"

/* Formats the message into err and returns rc. */
int zinf_model_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The init stream of one tensor: a key from the seed and the tensor's HF name. */
uint64_t zinf_model_tensor_key(uint64_t seed, const char *name);
/* std * N(0,1) for elements [from, to) of the stream `key` into out[0 .. to-from). */
void zinf_model_normal_fill(uint64_t key, int64_t from, int64_t to, float std, float *out);
/* Zeroes alignment gaps, block tails and padded vocabulary rows. */
void zinf_model_zero_padding(const zinf_model_layout *lay, float *params);

/* fp32 <-> bf16 / f16, rounding to nearest even; NaN stays NaN, overflow becomes infinity. */
uint16_t zinf_f32_to_bf16(float f);
float zinf_bf16_to_f32(uint16_t h);
uint16_t zinf_f32_to_f16(float f);
float zinf_f16_to_f32(uint16_t h);

#endif
