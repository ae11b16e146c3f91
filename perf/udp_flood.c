/* Sends COUNT numbered RFC 5424 datagrams to 127.0.0.1:PORT with
 * sendmmsg(2), in batches of 256, as fast as the kernel takes them.
 * Prints how many were sent. Built by perf/syslog_peer.py.
 *
 *   udp_flood PORT FIRST COUNT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 256
#define MESSAGE_MAX 256

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: udp_flood PORT FIRST COUNT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long first = atol(argv[2]), count = atol(argv[3]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        perror("connect");
        return 1;
    }
    static char texts[BATCH][MESSAGE_MAX];
    struct iovec vectors[BATCH];
    struct mmsghdr headers[BATCH];
    long sent = 0;
    for (long next = first; next < first + count;) {
        int batch = 0;
        for (; batch < BATCH && next + batch < first + count; batch++) {
            long number = next + batch;
            int length = snprintf(texts[batch], MESSAGE_MAX,
                "<165>1 2026-11-27T12:00:00.%03ldZ web%02ld.example.net opensips 4242 ID47 "
                "[origin@32473 ip=\"10.0.0.%ld\" software=\"opensips\"] call %09ld from sip:alice@example.net answered",
                number % 1000, number % 16, number % 250, number);
            vectors[batch] = (struct iovec){texts[batch], (size_t)length};
            memset(&headers[batch], 0, sizeof headers[batch]);
            headers[batch].msg_hdr.msg_iov = &vectors[batch];
            headers[batch].msg_hdr.msg_iovlen = 1;
        }
        int done = sendmmsg(fd, headers, batch, 0);
        if (done > 0) {
            sent += done;
            next += done;
        } else {
            next += batch; /* ENOBUFS and the like: counted as not sent */
        }
    }
    printf("%ld\n", sent);
    return 0;
}
