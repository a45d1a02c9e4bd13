/* engine/data internals shared by data.c and tokenize.c. */
#ifndef ZINF_ENGINE_DATA_INTERNAL_H
#define ZINF_ENGINE_DATA_INTERNAL_H

#include <stdio.h>

/* Writes the message to err (when the function has one) and yields rc; needs `err` and
 * `errlen` in scope. */
#define FAIL(rc, ...)                                                                           \
	((err) && (errlen) ? (void)snprintf((err), (errlen), __VA_ARGS__) : (void)0, (rc))

#endif
