// SPDX-License-Identifier: Apache-2.0
/*
 * Connection setup latency: connect() to ADDR:PORT, wait for the server's first byte,
 * close; COUNT times; prints p50, p90 and p99 in microseconds. The server side is any
 * listener that writes on accept. Used by bench/services.ts, where the address is a
 * service's ClusterIP translated by iptables DNAT or by Hypha's socket hooks.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s ADDR PORT COUNT\n", argv[0]);
		return 2;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}
	int count = atoi(argv[3]);
	double *lat = calloc(count, sizeof(double));
	for (int i = 0; i < count; i++) {
		double t0 = now_us();
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			perror("connect");
			return 1;
		}
		char b;
		if (read(fd, &b, 1) != 1) {
			perror("read");
			return 1;
		}
		struct linger l = { 1, 0 }; /* RST on close: no TIME_WAIT pile-up over many runs */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		close(fd);
		lat[i] = now_us() - t0;
	}
	qsort(lat, count, sizeof(double), cmp);
	printf("{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f}\n", lat[count / 2], lat[count * 9 / 10], lat[count * 99 / 100]);
	return 0;
}
