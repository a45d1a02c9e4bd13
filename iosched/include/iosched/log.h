/* Logging for every zinf layer: one line per message on stderr, prefixed with the subsystem
 * and the object it is about ("iosched: /nvme/x: ..."). The level comes from the environment
 * variable ZINF_LOG = error | warn | info | debug (default warn). */
#ifndef ZINF_LOG_H
#define ZINF_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zinf_log_level {
	ZINF_LOG_ERROR = 0,
	ZINF_LOG_WARN = 1,
	ZINF_LOG_INFO = 2,
	ZINF_LOG_DEBUG = 3,
} zinf_log_level;

/* True when messages of `level` are printed. */
int zinf_log_enabled(zinf_log_level level);
void zinf_log(zinf_log_level level, const char *subsys, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
