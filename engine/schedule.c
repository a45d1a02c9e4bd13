/* LR schedules and the fp16 loss scaler, with DeepSpeed's formulas and parameter names (see
 * engine/include/engine/engine.h for the formulas). Pure arithmetic over small structs: the
 * state that a checkpoint must carry is last_batch_iteration (schedule) and cur_scale,
 * cur_hysteresis, cur_iter, last_overflow_iter (scaler). */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "engine/engine.h"

int
zinf_lr_schedule_init(zinf_lr_schedule *s, const zinf_config *cfg, char *err, size_t errlen)
{
	*s = (zinf_lr_schedule){0};
	s->type = cfg->scheduler_type;
	s->warmup_type = cfg->warmup_type;
	s->min_lr = cfg->warmup_min_lr;
	s->max_lr = cfg->warmup_max_lr;
	s->base_lr = cfg->lr;
	s->warmup_num_steps = cfg->warmup_num_steps;
	s->total_num_steps = cfg->total_num_steps;
	s->warmup_min_ratio = cfg->warmup_min_ratio;
	s->cos_min_ratio = cfg->cos_min_ratio;
	s->last_batch_iteration = -1;
	if ((s->type == ZINF_SCHEDULER_WARMUP_DECAY_LR || s->type == ZINF_SCHEDULER_WARMUP_COSINE_LR) &&
	    s->total_num_steps <= 0) {
		snprintf(err, errlen,
		         "%s: scheduler.params.total_num_steps: not set; %s needs it (the step at "
		         "which the decay ends): write a number in the file or pass --max_steps N",
		         cfg->path,
		         s->type == ZINF_SCHEDULER_WARMUP_DECAY_LR ? "WarmupDecayLR" : "WarmupCosineLR");
		return -EINVAL;
	}
	return 0;
}

/* DeepSpeed's warmup gamma for iteration it < w (w = max(2, warmup_num_steps)). */
static double
warm_gamma(const zinf_lr_schedule *s, double w, int64_t it)
{
	if (s->warmup_type == ZINF_WARMUP_LINEAR)
		return (double)it / w;
	return log((double)it + 1.0) / log(w);
}

double
zinf_lr_schedule_at(const zinf_lr_schedule *s, int64_t it)
{
	double w = (double)(s->warmup_num_steps > 2 ? s->warmup_num_steps : 2);
	double total = (double)s->total_num_steps;
	switch (s->type) {
	case ZINF_SCHEDULER_NONE:
		return s->base_lr;
	case ZINF_SCHEDULER_WARMUP_LR:
	case ZINF_SCHEDULER_WARMUP_DECAY_LR: {
		if (it < 0)
			return s->min_lr;
		double gamma;
		if ((double)it < w)
			gamma = warm_gamma(s, w, it);
		else if (s->type == ZINF_SCHEDULER_WARMUP_LR)
			gamma = 1.0;
		else
			gamma = fmax(0.0, (total - (double)it) / fmax(1.0, total - w));
		return s->min_lr + (s->max_lr - s->min_lr) * gamma;
	}
	case ZINF_SCHEDULER_WARMUP_COSINE_LR: {
		if (it < 0)
			return 0.0;
		double ratio;
		if ((double)it < w) {
			ratio = s->warmup_min_ratio + warm_gamma(s, w, it) * (1.0 - s->warmup_min_ratio);
		} else {
			double real_last = (double)it - w + 1.0;
			double real_total = total - w;
			if (real_total <= 0)
				real_total = 1.0;
			double c = (1.0 + cos(M_PI * real_last / real_total)) / 2.0;
			ratio = fmax(0.0, s->cos_min_ratio + (1.0 - s->cos_min_ratio) * c);
		}
		return s->base_lr * ratio;
	}
	}
	return s->base_lr;
}

double
zinf_lr_schedule_step(zinf_lr_schedule *s)
{
	s->last_batch_iteration++;
	return zinf_lr_schedule_at(s, s->last_batch_iteration);
}

double
zinf_lr_schedule_lr(const zinf_lr_schedule *s)
{
	return zinf_lr_schedule_at(s, s->last_batch_iteration);
}

void
zinf_loss_scaler_init(zinf_loss_scaler *ls, const zinf_config *cfg)
{
	*ls = (zinf_loss_scaler){0};
	ls->scale_factor = 2.0;
	ls->last_overflow_iter = -1;
	ls->scale_window = 1000;
	ls->min_scale = 1.0;
	ls->delayed_shift = ls->cur_hysteresis = 1;
	if (cfg->fp16_enabled && cfg->fp16_loss_scale == 0) {
		ls->dynamic = true;
		ls->cur_scale = ldexp(1.0, (int)cfg->fp16_initial_scale_power);
		ls->scale_window = cfg->fp16_loss_scale_window > 0 ? cfg->fp16_loss_scale_window : 1;
		ls->min_scale = cfg->fp16_min_loss_scale;
		ls->delayed_shift = cfg->fp16_hysteresis > 0 ? cfg->fp16_hysteresis : 1;
		ls->cur_hysteresis = ls->delayed_shift;
		ls->consecutive_hysteresis = cfg->fp16_consecutive_hysteresis;
	} else if (cfg->fp16_enabled) {
		ls->cur_scale = cfg->fp16_loss_scale;
	} else {
		ls->cur_scale = 1.0;
	}
}

int
zinf_loss_scaler_update(zinf_loss_scaler *ls, bool overflow, char *msg, size_t msglen)
{
	if (msg && msglen)
		msg[0] = '\0';
	if (!ls->dynamic) {
		if (overflow && msg)
			snprintf(msg, msglen,
			         "OVERFLOW: inf/NaN in the gradients, skipping step (static loss "
			         "scale %.0f, unchanged)",
			         ls->cur_scale);
		ls->cur_iter++;
		return 0;
	}
	if (overflow) {
		if (ls->delayed_shift == 1 || ls->cur_hysteresis == 1) {
			if (ls->cur_scale <= ls->min_scale) {
				if (msg)
					snprintf(msg, msglen,
					         "OVERFLOW at the minimum loss scale %.0f "
					         "(fp16.min_loss_scale): the gradients overflow even "
					         "unscaled; lower the learning rate, set "
					         "gradient_clipping, or train in bf16",
					         ls->cur_scale);
				return -ERANGE;
			}
			double next = fmax(ls->cur_scale / ls->scale_factor, ls->min_scale);
			if (msg)
				snprintf(msg, msglen,
				         "OVERFLOW: skipping step; loss scale %.0f -> %.0f", ls->cur_scale,
				         next);
			ls->cur_scale = next;
		} else {
			if (msg)
				snprintf(msg, msglen,
				         "OVERFLOW: skipping step; loss scale %.0f kept, hysteresis "
				         "%lld -> %lld",
				         ls->cur_scale, (long long)ls->cur_hysteresis,
				         (long long)ls->cur_hysteresis - 1);
			ls->cur_hysteresis--;
		}
		ls->last_overflow_iter = ls->cur_iter;
	} else {
		if (ls->consecutive_hysteresis)
			ls->cur_hysteresis = ls->delayed_shift;
		if ((ls->cur_iter - ls->last_overflow_iter) % ls->scale_window == 0) {
			if (!ls->consecutive_hysteresis)
				ls->cur_hysteresis = ls->delayed_shift;
			ls->cur_scale *= ls->scale_factor;
		}
	}
	ls->cur_iter++;
	return 0;
}
