#include "iosched/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
log_threshold(void)
{
	/* Read once; benign race: every thread computes the same value. */
	static int threshold = -1;
	if (threshold < 0) {
		const char *e = getenv("ZINF_LOG");
		int t = ZINF_LOG_WARN;
		if (e) {
			if (!strcmp(e, "error"))
				t = ZINF_LOG_ERROR;
			else if (!strcmp(e, "info"))
				t = ZINF_LOG_INFO;
			else if (!strcmp(e, "debug"))
				t = ZINF_LOG_DEBUG;
		}
		threshold = t;
	}
	return threshold;
}

int
zinf_log_enabled(zinf_log_level level)
{
	return (int)level <= log_threshold();
}

void
zinf_log(zinf_log_level level, const char *subsys, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	if (!zinf_log_enabled(level))
		return;
	char line[2048];
	int n = snprintf(line, sizeof(line), "zinf %s: %s: ", names[level], subsys);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", line);
}
