/* Removal of swap files on SIGINT/SIGTERM.
 *
 * The one process-wide object in offload: a preallocated table of paths (files and folders).
 * The handler, installed on first registration, unlinks every registered file, removes every
 * registered folder (deepest first; a folder that is not empty stays), restores the previous
 * disposition and re-raises the signal, so the process still dies of it (or the previous
 * handler runs). Everything it does is async-signal-safe (unlink, rmdir, sigaction, raise).
 */
#ifndef ZINF_OFFLOAD_CLEANUP_H
#define ZINF_OFFLOAD_CLEANUP_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OFFLOAD_CLEANUP_MAX      256
#define OFFLOAD_CLEANUP_PATH_MAX 4096

/* Returns a slot >= 0; -ENAMETOOLONG; -ENOSPC when the table is full; -errno from sigaction. */
int offload_cleanup_add(const char *path, bool is_dir);
/* Forgets a slot (does not remove the path). Negative slots are ignored. */
void offload_cleanup_remove(int slot);

#ifdef __cplusplus
}
#endif
#endif
