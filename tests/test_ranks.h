/* Helpers for tests that run several ranks on this host (test_comm, test_zero, test_ckpt). */
#ifndef ZINF_TEST_RANKS_H
#define ZINF_TEST_RANKS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_util.h"

/* A loopback TCP port nobody listens on right now, for MASTER_PORT. */
static inline int
t_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &l)) {
		perror("t_free_port");
		exit(T_EXIT_FAIL);
	}
	close(fd);
	return ntohs(a.sin_port);
}

#endif
