/*
 * http_floor.c - beava-http-floor: the least an HTTP/1.1 keep-alive server can do per
 * push request, as a ceiling for beava's HTTP row on the machine that runs it.
 *
 *   beava-http-floor --addr 127.0.0.1:PORT [--threads N]
 *
 * prints "beava-http-floor listening on HOST:PORT" once bound (PORT 0: a free port).
 * N threads (default 2, as many as beava's HTTP threads) each own a SO_REUSEPORT listener
 * and an epoll set. Per readable connection: one recv, then for every complete request in
 * the buffer (headers up to "\r\n\r\n", then Content-Length bytes of body) a fixed
 * 200 with a push acknowledgement body ({"ack_lsn":...}, what beava-bench counts as an
 * ack), all of them in one send. No parsing beyond that, no engine, no WAL: what is left
 * is the kernel's work (loopback TCP, epoll, wake-ups) and a few hundred instructions.
 * beava-bench runs against it with --no-register (run-all's http_floor row). It is a
 * benchmark tool, not a server: a request over HTTP_FLOOR_BUF bytes closes the
 * connection, so does anything unparsable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_FLOOR_BUF (64u * 1024)     /* bytes of unanswered requests per connection */
#define HTTP_FLOOR_OUT (64u * 1024)     /* bytes of answers sent at once */
#define HTTP_FLOOR_EVENTS 64            /* epoll events per wait */
#define HTTP_FLOOR_THREADS_MAX 64
#define HTTP_FLOOR_BACKLOG 1024

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n"
                               "{\"ack_lsn\":12345678,\"ok\":1}";

typedef struct floor_conn {
    int fd;
    size_t len;
    char buf[HTTP_FLOOR_BUF];
} floor_conn;

typedef struct floor_thread {
    pthread_t thread;
    struct sockaddr_in addr;
    int listen_fd, epoll_fd;
} floor_thread;

static void conn_close(floor_conn *c) {
    close(c->fd);
    free(c);
}

/* Content-Length of the header block [p, p + n), 0 without one, -1 when malformed. */
static long content_length(const char *p, size_t n) {
    static const char name[] = "\r\ncontent-length:";
    for (size_t i = 0; i + sizeof name - 1 <= n; i++) {
        if (strncasecmp(p + i, name, sizeof name - 1) != 0) continue;
        char *end;
        errno = 0;
        long v = strtol(p + i + sizeof name - 1, &end, 10);
        return errno || v < 0 || v > (long)HTTP_FLOOR_BUF ? -1 : v;
    }
    return 0;
}

/* Answer every complete request in c's buffer. Returns false when c must be closed. */
static bool conn_serve(floor_conn *c) {
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r <= 0) return r < 0 && (errno == EAGAIN || errno == EINTR);
    c->len += (size_t)r;
    char out[HTTP_FLOOR_OUT];
    size_t ol = 0, used = 0;
    for (;;) {
        const char *start = c->buf + used;
        const char *he = memmem(start, c->len - used, "\r\n\r\n", 4);
        if (!he) break;
        size_t hl = (size_t)(he + 4 - start);
        long bl = content_length(start, hl);
        if (bl < 0) return false;
        if (c->len - used < hl + (size_t)bl) break;
        if (ol + sizeof RESPONSE - 1 > sizeof out) {            /* out is full: send it */
            if (send(c->fd, out, ol, MSG_NOSIGNAL) != (ssize_t)ol) return false;
            ol = 0;
        }
        memcpy(out + ol, RESPONSE, sizeof RESPONSE - 1);
        ol += sizeof RESPONSE - 1;
        used += hl + (size_t)bl;
    }
    if (used == 0 && c->len == sizeof c->buf) return false;      /* one request over the cap */
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    return ol == 0 || send(c->fd, out, ol, MSG_NOSIGNAL) == (ssize_t)ol;
}

static void accept_all(floor_thread *t) {
    for (;;) {
        int fd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        floor_conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->len = 0;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(t->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) conn_close(c);
    }
}

static void *floor_run(void *arg) {
    floor_thread *t = arg;
    struct epoll_event evs[HTTP_FLOOR_EVENTS];
    for (;;) {
        int n = epoll_wait(t->epoll_fd, evs, HTTP_FLOOR_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            floor_conn *c = evs[i].data.ptr;
            if (!c) accept_all(t);
            else if (!conn_serve(c)) conn_close(c);      /* closing removes it from the set */
        }
    }
    return NULL;
}

static int floor_listen(floor_thread *t) {
    t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (t->listen_fd < 0 || setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(t->listen_fd, (const struct sockaddr *)&t->addr, sizeof t->addr) != 0 ||
        listen(t->listen_fd, HTTP_FLOOR_BACKLOG) != 0)
        return -1;
    t->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (t->epoll_fd < 0 || epoll_ctl(t->epoll_fd, EPOLL_CTL_ADD, t->listen_fd, &ev) != 0) return -1;
    return 0;
}

static int parse_addr(const char *s, struct sockaddr_in *a) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= INET_ADDRSTRLEN) return -1;
    char host[INET_ADDRSTRLEN];
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    long nthreads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0) addr = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0) nthreads = strtol(argv[i + 1], NULL, 10);
    }
    struct sockaddr_in a;
    if (!addr || parse_addr(addr, &a) != 0 || nthreads < 1 || nthreads > HTTP_FLOOR_THREADS_MAX || argc % 2 == 0) {
        fprintf(stderr, "usage: beava-http-floor --addr IPV4:PORT [--threads 1..%d]\n", HTTP_FLOOR_THREADS_MAX);
        return 2;
    }
    floor_thread *ts = calloc((size_t)nthreads, sizeof *ts);
    if (!ts) return 1;
    for (long i = 0; i < nthreads; i++) {
        ts[i].addr = a;
        if (floor_listen(&ts[i]) != 0) {
            fprintf(stderr, "beava-http-floor: listen on %s: %s\n", addr, strerror(errno));
            return 1;
        }
        socklen_t al = sizeof a;         /* port 0: the others share the port the first got */
        if (i == 0 && getsockname(ts[0].listen_fd, (struct sockaddr *)&a, &al) != 0) return 1;
    }
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    printf("beava-http-floor listening on %s:%u\n", host, (unsigned)ntohs(a.sin_port));
    fflush(stdout);
    for (long i = 1; i < nthreads; i++)
        if (pthread_create(&ts[i].thread, NULL, floor_run, &ts[i]) != 0) return 1;
    floor_run(&ts[0]);                  /* runs until killed */
    return 0;
}
