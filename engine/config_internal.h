/* engine/config private: the key table shared by the loader (config.c), the printer and the
 * memory plan. */
#ifndef ZINF_ENGINE_CONFIG_INTERNAL_H
#define ZINF_ENGINE_CONFIG_INTERNAL_H

#include <stddef.h>

#include "engine/config.h"

typedef enum cfg_type {
	CFG_BOOL,
	CFG_INT,  /* JSON number with an integral value (1e9 is fine) */
	CFG_NUM,  /* any JSON number */
	CFG_ENUM, /* one of names[] (case-insensitive, as DeepSpeed lowercases) */
	CFG_STR,  /* a path */
	CFG_PAIR, /* [a, b] of numbers (betas) */
} cfg_type;

typedef enum cfg_auto {
	CFG_AUTO_NO = 0,    /* "auto" is an error */
	CFG_AUTO_FLAG,      /* filled from override `ov` (PAIR: ov and ov + 1) */
	CFG_AUTO_SWITCH,    /* true when switch `ov` was given, else false (fp16/bf16.enabled) */
	CFG_AUTO_ZERO,      /* 0, as the HF trainer fills warmup_min_lr */
	CFG_AUTO_BATCH,     /* train_batch_size: micro x accum x world */
	CFG_AUTO_HIDDEN_SQ, /* hidden^2 */
	CFG_AUTO_HIDDEN_SQ_0_9, /* 0.9 x hidden^2 */
	CFG_AUTO_HIDDEN_X10,    /* 10 x hidden */
} cfg_auto;

/* Scheduler types a scheduler.params key belongs to (bit per zinf_scheduler_type). */
#define SCHED_LR     (1u << ZINF_SCHEDULER_WARMUP_LR)
#define SCHED_DECAY  (1u << ZINF_SCHEDULER_WARMUP_DECAY_LR)
#define SCHED_COSINE (1u << ZINF_SCHEDULER_WARMUP_COSINE_LR)

typedef struct cfg_key_def {
	const char *path;
	cfg_type type;
	cfg_auto auto_kind;
	int ov;                   /* zinf_override for CFG_AUTO_FLAG / CFG_AUTO_SWITCH, else -1 */
	int alias_of;             /* canonical zinf_config_key, or -1 */
	unsigned sched_mask;      /* scheduler.params keys only */
	size_t off;               /* field in zinf_config */
	double def, def2;         /* default (PAIR: both) */
	double min, max;          /* inclusive limits for INT / NUM / PAIR elements */
	const char *const *names; /* CFG_ENUM */
	int n_names;
} cfg_key_def;

const cfg_key_def *zinf_cfg_key(int k);
/* "a number", "a string", ... for messages about a JSON value of the wrong type (also used by
 * the HF config.json reader in model.c). */
struct cJSON;
const char *zinf_cfg_json_kind(const struct cJSON *v);
/* Writes "<cfg->path>: <message>" into err (when errlen > 0) and returns -EINVAL. */
int zinf_cfg_fail(const zinf_config *cfg, char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Section i of the key tree ("" is the top level), NULL past the end. */
const char *zinf_cfg_section(int i);
/* Folders of the key tree ("", "fp16", "zero_optimization.offload_param", ...). */
int zinf_cfg_is_section(const char *path);
/* Scheduler type name for messages. */
const char *zinf_cfg_scheduler_name(zinf_scheduler_type t);

#endif
