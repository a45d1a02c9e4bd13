/* Backend-independent parts of the optimizer API: config defaults and checks, dtype names,
 * and the host-side finish of the gradient statistics. */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "adam_math.h"
#include "kernels/adam.h"

const char *
zinf_dtype_name(zinf_dtype t)
{
	switch (t) {
	case ZINF_DTYPE_FP32: return "fp32";
	case ZINF_DTYPE_BF16: return "bf16";
	case ZINF_DTYPE_FP16: return "fp16";
	}
	return "unknown";
}

void
zinf_adam_cfg_init(zinf_adam_cfg *cfg)
{
	cfg->lr = 1e-3f;
	cfg->beta1 = 0.9f;
	cfg->beta2 = 0.999f;
	cfg->eps = 1e-8f;
	cfg->weight_decay = 0.01f;
	cfg->step = 1;
	cfg->decay = ZINF_ADAM_DECAY_DECOUPLED;
	cfg->grad_dtype = ZINF_DTYPE_FP32;
	cfg->moment_dtype = ZINF_DTYPE_FP32;
	cfg->param16_dtype = ZINF_DTYPE_BF16;
}

static int
bad(const char *field, double value, const char *limit)
{
	fprintf(stderr, "zinf adam: %s = %g is out of range (%s)\n", field, value, limit);
	return -EINVAL;
}

int
zinf_adam_cfg_check(const zinf_adam_cfg *cfg)
{
	if (!cfg)
		return -EINVAL;
	if (!(cfg->lr >= 0.0f) || !isfinite(cfg->lr))
		return bad("lr", cfg->lr, "must be finite and >= 0");
	if (!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f))
		return bad("beta1", cfg->beta1, "must be in [0, 1)");
	if (!(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f))
		return bad("beta2", cfg->beta2, "must be in [0, 1)");
	if (!(cfg->eps > 0.0f) || !isfinite(cfg->eps))
		return bad("eps", cfg->eps, "must be finite and > 0");
	if (!(cfg->weight_decay >= 0.0f) || !isfinite(cfg->weight_decay))
		return bad("weight_decay", cfg->weight_decay, "must be finite and >= 0");
	if (cfg->step < 1)
		return bad("step", (double)cfg->step, "must be >= 1 (1-based)");
	if (cfg->decay != ZINF_ADAM_DECAY_L2 && cfg->decay != ZINF_ADAM_DECAY_DECOUPLED)
		return bad("decay", cfg->decay, "L2 (0) or DECOUPLED (1)");
	if ((unsigned)cfg->grad_dtype > ZINF_DTYPE_FP16)
		return bad("grad_dtype", cfg->grad_dtype, "fp32, bf16 or fp16");
	if (cfg->moment_dtype != ZINF_DTYPE_FP32 && cfg->moment_dtype != ZINF_DTYPE_BF16)
		return bad("moment_dtype", cfg->moment_dtype, "fp32 or bf16");
	if (cfg->param16_dtype != ZINF_DTYPE_BF16 && cfg->param16_dtype != ZINF_DTYPE_FP16)
		return bad("param16_dtype", cfg->param16_dtype, "bf16 or fp16");
	return 0;
}

void
zinf_grad_stats_finish(zinf_grad_stats *s, float loss_scale, float max_norm)
{
	zinf_grad_finish(s->sumsq, loss_scale, max_norm, &s->norm, &s->clip_coef, &s->grad_mult);
}
