/*
 * http.c - libmicrohttpd listeners for the data plane and the admin sidecar.
 *
 * Threads. Each listener is one libmicrohttpd daemon in epoll thread-pool mode: N I/O
 * threads (http.threads, default one per core) each run an epoll loop over the
 * connections the listener's acceptor thread handed them (acceptor_main: the only thread
 * that accepts, so that stopping is exact). No I/O thread waits for a shard or an fsync:
 *   - pushes are decoded straight into a row (rowdec) and handed to engine_push_submit()
 *     on the I/O thread; when the engine answers at once the answer is sent at once,
 *     otherwise the request is suspended and the engine's completion (push_done, on a
 *     shard or durability thread) hands the answer back with http_request_complete();
 *   - reads and /ping run on the I/O thread (the engine never makes them wait long);
 *   - /register and /reset, which wait for every earlier push, run on a small elastic
 *     workpool (workpool.h) and answer through http_request_complete() the same way.
 *
 * Per-request state machine (struct http_request, one per HTTP request):
 *   RECEIVING     the URI-log callback created it; the access handler checks the
 *                 framing headers on its first call, then accumulates the body (buffer
 *                 growth is taken from the shared membudget) until its last call, which
 *                 routes the request. Answers that need no engine wait (errors, reads,
 *                 static files, /health) are queued at once.
 *   SUBMITTED     the engine call was started; park() suspends the connection
 *                 (MHD_suspend_connection) unless the answer is already there.
 *   ANSWER_READY  http_request_complete() stored status + body; it resumes the
 *                 connection (MHD_resume_connection, from any thread) if park()
 *                 suspended it, and the access handler's next call queues the answer.
 *                 A compare-and-swap on `handoff` decides which side resumes, so a
 *                 completion racing with park() is neither lost nor resumed twice.
 * libmicrohttpd's completion callback releases the request's body, its push slot (decoder
 * and engine batch, reused) and its budget; the context itself is kept on the connection
 * for its next request (no allocation per keep-alive request), as is the response object
 * of its last small JSON answer, which the next answer of the same length reuses (see
 * queue_reused: no response and header allocations per request). http_stop answers
 * everything still in flight before it stops the daemon (a suspended connection must not
 * outlive it).
 *
 * Per-connection limits (struct conn_ctx, one per TCP connection, created by the
 * connection-notify callback and kept on a list per listener):
 *   - http.max_connections / http.max_connections_per_ip: the accept-policy callback
 *     refuses (closes) a new connection when the open count is at the limit. It counts
 *     the connection itself when it admits it (one acceptor thread per listener, see
 *     acceptor_main), so neither limit is overshot.
 *   - deadlines: each connection carries (phase, deadline) in one atomic word. HEADERS
 *     starts at accept (and again when a keep-alive connection's next request line is
 *     in) with http.header_timeout_ms; BODY starts at the first access-handler call with
 *     http.body_timeout_ms; BUSY (answering) has none; IDLE starts when a request
 *     completes with http.idle_timeout_s. A reaper thread per listener scans the
 *     connection vector a few times per shortest timeout and shuts down (SHUT_RDWR)
 *     every connection past its deadline (in slices and small bursts, see
 *     reap_expired); libmicrohttpd then sees the end of stream and closes it normally. The
 *     reaper claims a connection by a compare-and-swap to REAPED, and every phase change
 *     is a compare-and-swap too, so a request that completes at the deadline either is
 *     answered or is closed, never both. Closing on a deadline sends no answer: there is
 *     no complete request to answer.
 *   - bodies: up to HTTP_BODY_FREE_BYTES per request are covered by the connection cap
 *     (so small pushes are never refused for memory); growth beyond that is taken from
 *     the shared membudget. A Content-Length that cannot fit is answered 503 overloaded
 *     before the body is read (the connection closes); a body whose growth is refused
 *     midway is dropped, the rest is read and discarded, and the request is answered
 *     503 overloaded.
 *
 * Framing: more than one Content-Length, more than one Transfer-Encoding, or both
 * together are answered 400 http_protocol_error and the connection closes (a proxy in
 * front could frame such a request differently: request smuggling). A larger
 * Content-Length than limits.max_body_bytes is answered 413 at once, a chunked body that
 * grows past it likewise at its end. libmicrohttpd 0.9.75 answers requests it cannot
 * parse at all (bad request line, bad header syntax, invalid Content-Length) itself with
 * a small HTML page before any callback of ours runs; it has no hook to replace that body.
 *
 * Routing follows the wire API exactly: path without query, trailing '/' stripped,
 * prefix routes first, wrong method 405, everything else 404 with the raw path.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rowdec.h"
#include "listenfd.h"
#include "site.h"
#include "workpool.h"

/* Body bytes per request not charged to the receive budget (bounded by the cap). */
#define HTTP_BODY_FREE_BYTES (16u * 1024)
/* Bodies up to this size are kept inside the request context, which a keep-alive
 * connection reuses: a small push allocates no body buffer. Larger ones move to the heap. */
#define HTTP_BODY_INLINE 512u
/* libmicrohttpd's per-connection memory (request line, headers, read buffer): request
 * headers up to about 7.5 KB fit (more are answered 431 by libmicrohttpd; common server
 * defaults are 8 KB). libmicrohttpd 0.9.75 zeroes the whole pool after every request and
 * the unused half of the read buffer once a request is in, so the size is paid per
 * request: 8 KB zeroes 12 KB per keep-alive request, 16 KB zeroed 24 KB. */
#define HTTP_CONN_MEMORY_BYTES (8u * 1024)
/* I/O thread stack. */
#define HTTP_IO_STACK_BYTES (2u << 20)
/* Decoders + engine batches kept for reuse between pushes (more are freed after use). */
#define HTTP_PUSH_SLOTS_KEPT 64u
/* Workers for the engine calls that still block (register, reset): see workpool.h. */
#define HTTP_JOB_THREADS_MAX 256u
#define HTTP_JOB_STACK_BYTES (2u << 20)
/* Reaper: scans per shortest timeout, and its bounds. */
#define HTTP_REAP_SCANS_PER_TIMEOUT 4u
#define HTTP_REAP_TICK_MIN_MS 20u
#define HTTP_REAP_TICK_MAX_MS 1000u
/* Reaper: connections looked at per hold of conns_mu (the I/O threads take it to open
 * and close connections, so it is never held for a whole crowd). */
#define HTTP_REAP_SLICE 256u
/* Reaper: connections shut down per pass at most; when more are past their deadline the
 * next pass comes HTTP_REAP_BURST_GAP_US later, so a crowd that expires at once is
 * closed in small bursts the I/O threads absorb between their other connections' events.
 * Each shutdown costs an I/O thread one close (tens of microseconds with the kernel's
 * FIN handling); a burst is what a live request may wait behind, so bursts are kept to a
 * few closes (4,000 closes/s: a crowd of 1,500 in under half a second). One close per
 * pass every 250 us keeps that rate while a live request waits behind one close at most
 * (4 per 1 ms could put it behind four, back to back, for the half second in which the
 * crowd of tests/bench/slowloris-bench expires: every connection of it was opened at
 * the same moment). */
#define HTTP_REAP_BURST 1u
#define HTTP_REAP_BURST_GAP_US 250u
/* First capacity of the listener's connection vector. */
#define HTTP_CONNS_INITIAL 64u
/* Acceptor: connections accepted per wake-up at most, and the pause after an accept()
 * refused for lack of descriptors or memory (nothing frees them at once). */
#define HTTP_ACCEPT_BATCH 64u
#define HTTP_ACCEPT_BACKOFF_MS 100
/* On stop, requests still in progress get this long to finish. */
#define HTTP_DRAIN_MS 3000
/* Buckets of the per-address connection table. */
#define HTTP_IP_BUCKETS 1024u
/* Descriptors kept for files, the WAL and other listeners when checking the cap. */
#define HTTP_FD_RESERVE 256u
#define HTTP_PATH_MAX 2048
/* Request URIs up to this length are kept inside the request context (no allocation). */
#define HTTP_URI_INLINE 96u
/* Data-plane JSON answers up to this size reuse their connection's response object (see
 * queue_reused): a push ack is about 64 bytes. */
#define HTTP_REUSE_BODY_MAX 256u

/* ---- connection phases and deadlines -------------------------------------------------- */

enum conn_phase { PH_NONE = 0, PH_HEADERS = 1, PH_BODY = 2, PH_BUSY = 3, PH_IDLE = 4, PH_REAPED = 5 };
#define PH_BITS 3u
#define PH_MASK ((1u << PH_BITS) - 1)

typedef struct ip_entry {
    struct ip_entry *next;
    unsigned char addr[16];            /* IPv6, or IPv4-mapped */
    uint32_t count;
} ip_entry;

struct http_request;

typedef struct conn_ctx {
    size_t slot;                       /* index in the listener's vector, under conns_mu */
    struct http_request *spare;        /* the last finished request's context, reused by the next */
    int fd;
    _Atomic uint64_t clock;            /* deadline_ms << PH_BITS | phase */
    unsigned char addr[16];
    bool addr_known;
    const _Atomic bool *draining;      /* the listener's: answers say Connection: close */
    /* the last small JSON answer's response object and body, reused by the next answer of
     * the same length (see queue_reused); only the connection's I/O thread touches them */
    struct MHD_Response *resp;
    size_t resp_len;
    char resp_body[HTTP_REUSE_BODY_MAX];
} conn_ctx;

typedef enum req_state { REQ_RECEIVING = 0, REQ_SUBMITTED, REQ_ANSWER_READY } req_state;
/* Who resumes a request whose answer comes from another thread (see park()). */
typedef enum req_handoff { HANDOFF_NONE = 0, HANDOFF_PARKED, HANDOFF_DONE } req_handoff;

struct http_server;
typedef int (*req_job_fn)(struct http_server *s, struct http_request *rc, bv_buf *out, bool *replay);

/* One push in flight: its decoder (the row's memory) and its engine batch, reused. */
typedef struct push_slot {
    struct push_slot *next;            /* the server's free list */
    rowdec dec;
    engine_batch batch;
    engine_push_item item;
    rowdec_push decoded;               /* item.row points here: it must outlive the push */
    struct http_server *s;
    struct http_request *rc;
} push_slot;

struct http_request {
    struct http_server *s;
    struct MHD_Connection *conn;
    conn_ctx *cc;                      /* its connection's (NULL if that could not be made) */
    char *raw_uri;                     /* as sent, with query: uri_inline or allocated */
    char uri_inline[HTTP_URI_INLINE];
    char *arg;                         /* route argument (event name, legacy get path) */
    bv_buf body;                       /* cap managed here: see body_reserve */
    uint64_t declared;                 /* Content-Length, 0 if none */
    uint64_t charged;                  /* bytes taken from the budget */
    uint64_t received;                 /* body bytes read so far (kept or dropped) */
    bool started, too_large, over_budget;
    bool sync;                         /* push-sync */
    bool api_get;                      /* /api/get: allow-listed tables only */
    _Atomic int state;                 /* req_state */
    _Atomic int handoff;               /* req_handoff */
    bool parked;                       /* suspended (counted in stats->suspended) */
    push_slot *push;                   /* while a push is in flight or answered */
    req_job_fn job_fn;
    workpool_job job;
    int answer_status;
    bv_buf answer;
    bool answer_replay;
    /* last: not cleared when the context is reused (see uri_log) */
    char body_inline[HTTP_BODY_INLINE + 1];
};

typedef http_request req_ctx;

struct http_server {
    struct MHD_Daemon *daemon;
    http_role role;
    http_deps deps;
    int fd;                            /* the listening socket: only the acceptor accepts on it */
    int mhd_fd;                        /* libmicrohttpd's own listening socket (see acceptor_main) */
    int stop_efd;                      /* wakes the acceptor to stop */
    pthread_t acceptor;
    bool acceptor_started;
    _Atomic pid_t acceptor_tid;        /* the acceptor's thread id while it runs, else 0 (accept_policy) */
    bv_site *site;
    bv_site_allow allow;
    membudget own_budget;              /* when deps.body_budget is NULL */
    membudget *budget;
    http_stats own_stats;
    http_stats *stats;
    workpool *jobs;                    /* data plane only */
    pthread_mutex_t slots_mu;
    push_slot *free_slots;
    unsigned nfree_slots;
    _Atomic unsigned inflight;         /* pushes submitted to the engine, not yet answered */
    _Atomic bool draining;             /* http_stop waits for inflight to reach 0 */
    _Atomic bool closing;              /* http_stop: no push is submitted any more (503) */
    _Atomic uint32_t open_here;        /* admitted connections (see admit) */
    pthread_mutex_t flight_mu;
    pthread_cond_t flight_cv;
    uint32_t max_conns, max_per_ip;
    uint64_t header_ms, body_ms, idle_ms;
    struct timespec t0;                /* monotonic origin of deadlines */
    pthread_mutex_t conns_mu;          /* conns vector and ip table */
    conn_ctx **conns;                  /* open connections, unordered (swap-remove) */
    size_t nconns, conns_cap;
    ip_entry **ip_table;               /* HTTP_IP_BUCKETS, only with a per-address limit */
    pthread_t reaper;
    bool reaper_started, stopping;
    pthread_cond_t reaper_cv;
};

/* Deadlines are read on every phase change of every request (three times per keep-alive
 * request), so they use the coarse clock: no timer read, a resolution of one kernel tick
 * (a few ms), far below the shortest deadline (http.header_timeout_ms >= 100). */
#define HTTP_DEADLINE_CLOCK CLOCK_MONOTONIC_COARSE

static uint64_t now_ms(const http_server *s) {
    struct timespec ts;
    clock_gettime(HTTP_DEADLINE_CLOCK, &ts);
    return (uint64_t)(ts.tv_sec - s->t0.tv_sec) * 1000u + (uint64_t)((ts.tv_nsec - s->t0.tv_nsec) / 1000000);
}

static uint64_t clock_pack(uint64_t deadline, enum conn_phase ph) { return deadline << PH_BITS | (uint64_t)ph; }
static enum conn_phase clock_phase(uint64_t v) { return (enum conn_phase)(v & PH_MASK); }
static uint64_t clock_deadline(uint64_t v) { return v >> PH_BITS; }

/* Move a connection to `ph` with `timeout_ms` from now (0 = no deadline). Returns false
 * when the reaper already claimed it (the caller then drops the connection). With
 * only_from != PH_NONE the move happens only from that phase (true is still returned
 * when the phase is another live one). */
static bool conn_enter(http_server *s, conn_ctx *cc, enum conn_phase ph, uint64_t timeout_ms, enum conn_phase only_from) {
    if (!cc) return true;
    uint64_t next = clock_pack(timeout_ms ? now_ms(s) + timeout_ms : 0, ph);
    uint64_t cur = atomic_load(&cc->clock);
    for (;;) {
        if (clock_phase(cur) == PH_REAPED) return false;
        if (only_from != PH_NONE && clock_phase(cur) != only_from) return true;
        if (atomic_compare_exchange_weak(&cc->clock, &cur, next)) return true;
    }
}

static conn_ctx *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* True when the peer has closed its side of the connection (a zero-byte peek). MHD's
 * edge-triggered epoll loop can miss an end of stream that arrives together with the
 * last body bytes: its read returns the bytes short of its buffer, MHD takes the socket
 * for drained, and no further edge comes. A request whose body is still incomplete would
 * then hold its buffer and budget until the body deadline. The access handler asks after
 * every body chunk that leaves the body incomplete (a peek is one non-blocking syscall on
 * that path only; complete single-read pushes never pay it). */
static bool peer_closed(const conn_ctx *cc) {
    if (!cc || cc->fd < 0) return false;
    char b;
    ssize_t n = recv(cc->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
}

/* ---- sockets ------------------------------------------------------------------------ */

int http_bind_listen(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen) {
    if (listenfd_is_addr(addr)) return listenfd_adopt(addr, bound, boundlen, err, errlen);   /* inherited */
    char host[CONFIG_ADDR_MAX];
    int port;
    if (config_split_addr(addr, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "'%s' is not a host:port address", addr);
        return -1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char ip[INET6_ADDRSTRLEN] = "?";
    int bport = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        bport = ntohs(s4->sin_port);
        snprintf(bound, boundlen, "%s:%d", ip, bport);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        bport = ntohs(s6->sin6_port);
        snprintf(bound, boundlen, "[%s]:%d", ip, bport);
    }
    return fd;
}

/* ---- connection cap, per-address limit, reaper ------------------------------------------- */

static bool addr_key(const struct sockaddr *sa, unsigned char key[16]) {
    if (!sa) return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &s4->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

static ip_entry **ip_slot(http_server *s, const unsigned char key[16]) {
    uint32_t h = 2166136261u;                      /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ key[i]) * 16777619u;
    ip_entry **pp = &s->ip_table[h % HTTP_IP_BUCKETS];
    while (*pp && memcmp((*pp)->addr, key, 16) != 0) pp = &(*pp)->next;
    return pp;
}

/* Under conns_mu. */
static uint32_t ip_count(http_server *s, const unsigned char key[16]) {
    ip_entry *e = *ip_slot(s, key);
    return e ? e->count : 0;
}

/* Under conns_mu. Returns false when out of memory (the address is then not counted). */
static bool ip_add(http_server *s, const unsigned char key[16]) {
    ip_entry **pp = ip_slot(s, key);
    if (!*pp) {
        ip_entry *e = calloc(1, sizeof *e);
        if (!e) return false;
        memcpy(e->addr, key, 16);
        *pp = e;
    }
    (*pp)->count++;
    return true;
}

static void ip_del(http_server *s, const unsigned char key[16]) {
    ip_entry **pp = ip_slot(s, key);
    ip_entry *e = *pp;
    if (!e) return;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

/* ip_del for a caller that does not hold conns_mu. */
static void ip_forget(http_server *s, const unsigned char key[16]) {
    pthread_mutex_lock(&s->conns_mu);
    ip_del(s, key);
    pthread_mutex_unlock(&s->conns_mu);
}

/* Count a connection being admitted into open_here; false at the cap (exactly).
 * accept_policy runs when the acceptor hands a connection to libmicrohttpd, before it
 * exists: libmicrohttpd reports it (MHD_CONNECTION_NOTIFY_STARTED) only once an I/O
 * thread has taken it, which can come after http_stop has started draining. Counted only
 * at that report, a connection could still be unknown when http_stop saw no connection
 * left: its request was then read and applied while MHD_stop_daemon() ran, and the
 * connection closed unanswered. Counted here, it is waited for and answered like any
 * other; and once the acceptor is joined nothing more is admitted (acceptor_tid 0). */
static bool admit(http_server *s) {
    uint32_t v = atomic_load(&s->open_here);
    do {
        if (v >= s->max_conns) return false;
    } while (!atomic_compare_exchange_weak(&s->open_here, &v, v + 1));
    return true;
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addrlen;
    http_server *s = cls;
    /* Only the acceptor admits (MHD_add_connection runs this on the calling thread): a
     * connection libmicrohttpd took from its private loopback socket (see acceptor_main)
     * came from a local process that found that port, not from the listener: refuse it;
     * so is every one once the acceptor has stopped (http_stop). */
    if (gettid() != atomic_load(&s->acceptor_tid)) return MHD_NO;
    if (atomic_load(&s->stats->open) >= s->max_conns) {
        atomic_fetch_add(&s->stats->refused_cap, 1);
        return MHD_NO;
    }
    /* the address is counted here, at admission, like open_here: libmicrohttpd reports
     * the connection (NOTIFY_STARTED, where it gets its conn_ctx) only once an I/O thread
     * takes it from the acceptor, and the acceptor may admit more from the same address
     * meanwhile */
    unsigned char key[16];
    bool counted = false;
    if (s->ip_table && addr_key(addr, key)) {
        pthread_mutex_lock(&s->conns_mu);
        bool over = ip_count(s, key) >= s->max_per_ip;
        if (!over) counted = ip_add(s, key);
        pthread_mutex_unlock(&s->conns_mu);
        if (over) {
            atomic_fetch_add(&s->stats->refused_per_ip, 1);
            return MHD_NO;
        }
        if (!counted) return MHD_NO;             /* out of memory */
    }
    if (admit(s)) return MHD_YES;
    atomic_fetch_add(&s->stats->refused_cap, 1);
    if (counted) ip_forget(s, key);
    return MHD_NO;
}

static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe) {
    http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->stats->open, 1);
        atomic_fetch_add(&s->stats->accepted, 1);   /* open_here: counted by accept_policy */
        /* its address was counted by accept_policy (unless it could not be keyed there) */
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        unsigned char key[16];
        bool keyed = s->ip_table && ai && addr_key(ai->client_addr, key);
        conn_ctx *cc = calloc(1, sizeof *cc);
        *socket_context = cc;
        if (!cc) {                                  /* served, but without deadlines */
            if (keyed) ip_forget(s, key);
            return;
        }
        const union MHD_ConnectionInfo *fdi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        cc->fd = fdi ? fdi->connect_fd : -1;
        cc->draining = &s->draining;
        atomic_init(&cc->clock, clock_pack(now_ms(s) + s->header_ms, PH_HEADERS));
        pthread_mutex_lock(&s->conns_mu);
        if (s->nconns == s->conns_cap) {
            size_t cap = s->conns_cap ? s->conns_cap * 2 : HTTP_CONNS_INITIAL;
            conn_ctx **v = realloc(s->conns, cap * sizeof *v);
            if (!v) {
                if (keyed) ip_del(s, key);
                pthread_mutex_unlock(&s->conns_mu);
                free(cc);                           /* served, but without deadlines */
                *socket_context = NULL;
                return;
            }
            s->conns = v;
            s->conns_cap = cap;
        }
        if (keyed) {
            memcpy(cc->addr, key, sizeof key);
            cc->addr_known = true;
        }
        cc->slot = s->nconns;
        s->conns[s->nconns++] = cc;
        pthread_mutex_unlock(&s->conns_mu);
        return;
    }
    /* closed: libmicrohttpd closes the socket only after this returns, so the reaper (which
     * duplicates descriptors under conns_mu) never touches a reused descriptor */
    conn_ctx *cc = *socket_context;
    atomic_fetch_sub(&s->stats->open, 1);
    if (atomic_fetch_sub(&s->open_here, 1) == 1 && atomic_load(&s->draining)) {
        pthread_mutex_lock(&s->flight_mu);            /* http_stop waits for the last one */
        pthread_cond_broadcast(&s->flight_cv);
        pthread_mutex_unlock(&s->flight_mu);
    }
    if (!cc) return;
    pthread_mutex_lock(&s->conns_mu);
    conn_ctx *last = s->conns[--s->nconns];
    s->conns[cc->slot] = last;
    last->slot = cc->slot;
    if (cc->addr_known) ip_del(s, cc->addr);
    pthread_mutex_unlock(&s->conns_mu);
    free(cc->spare);
    if (cc->resp) MHD_destroy_response(cc->resp);   /* MHD keeps its own reference while sending */
    free(cc);
    *socket_context = NULL;
}

/* One reaper pass: shut down (SHUT_RDWR) up to HTTP_REAP_BURST connections past their
 * deadline. The vector is scanned HTTP_REAP_SLICE entries per hold of conns_mu; the
 * shutdowns (each one sends a FIN, a few microseconds of kernel work) run without it, on
 * a duplicate of the descriptor taken under the lock: libmicrohttpd closes a connection's
 * own descriptor only after the closed-notification (which needs conns_mu) returns, so
 * the duplicate always names the right socket, and its close never touches another. A
 * connection moved by a swap-remove while the lock is dropped may be missed by this
 * pass; the next one sees it. Returns true when the burst limit stopped the pass early. */
static bool reap_expired(http_server *s) {
    uint64_t now = now_ms(s);
    int fds[HTTP_REAP_BURST];
    unsigned nfds = 0;
    bool more = false;
    size_t i = 0;
    for (;;) {
        pthread_mutex_lock(&s->conns_mu);
        if (i >= s->nconns) {                    /* the vector shrank meanwhile */
            pthread_mutex_unlock(&s->conns_mu);
            break;
        }
        size_t end = s->nconns - i > HTTP_REAP_SLICE ? i + HTTP_REAP_SLICE : s->nconns;
        for (; i < end && !more; i++) {
            conn_ctx *cc = s->conns[i];
            uint64_t v = atomic_load(&cc->clock);
            enum conn_phase ph = clock_phase(v);
            if (ph == PH_BUSY || ph == PH_REAPED || ph == PH_NONE || clock_deadline(v) > now) continue;
            if (nfds == HTTP_REAP_BURST) {
                more = true;                     /* left for the next pass */
                break;
            }
            if (!atomic_compare_exchange_strong(&cc->clock, &v, clock_pack(0, PH_REAPED))) continue;
            atomic_fetch_add(ph == PH_HEADERS ? &s->stats->timeout_header
                             : ph == PH_BODY  ? &s->stats->timeout_body
                                              : &s->stats->timeout_idle, 1);
            if (cc->fd < 0) continue;
            int d = fcntl(cc->fd, F_DUPFD_CLOEXEC, 0);
            if (d >= 0) fds[nfds++] = d;
            else shutdown(cc->fd, SHUT_RDWR);    /* no descriptor to spare: under the lock */
        }
        bool done = more || i >= s->nconns;
        pthread_mutex_unlock(&s->conns_mu);
        if (done) break;
    }
    for (unsigned k = 0; k < nfds; k++) {
        shutdown(fds[k], SHUT_RDWR);
        close(fds[k]);
    }
    return more;
}

static void *reaper_main(void *arg) {
    http_server *s = arg;
    uint64_t shortest = s->header_ms;
    if (s->body_ms < shortest) shortest = s->body_ms;
    if (s->idle_ms < shortest) shortest = s->idle_ms;
    uint64_t tick = shortest / HTTP_REAP_SCANS_PER_TIMEOUT;
    if (tick < HTTP_REAP_TICK_MIN_MS) tick = HTTP_REAP_TICK_MIN_MS;
    if (tick > HTTP_REAP_TICK_MAX_MS) tick = HTTP_REAP_TICK_MAX_MS;
    uint64_t wait_us = tick * 1000u;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(wait_us / 1000000u);
        ts.tv_nsec += (long)(wait_us % 1000000u) * 1000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->reaper_cv, &s->conns_mu, &ts);
        if (s->stopping) break;
        pthread_mutex_unlock(&s->conns_mu);
        wait_us = reap_expired(s) ? HTTP_REAP_BURST_GAP_US : tick * 1000u;
        pthread_mutex_lock(&s->conns_mu);
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

/* The acceptor: the only thread that accepts on the listening socket; it hands each
 * connection to libmicrohttpd (MHD_add_connection, which runs accept_policy and gives it
 * to an I/O thread). libmicrohttpd's I/O threads accept only on a private listening
 * socket of their own (loopback, ephemeral port, nothing connects to it): in its epoll
 * thread-pool mode, MHD_quiesce_daemon() races with the I/O threads over removing the
 * listening socket from their epoll sets, and the loser aborts the process ("Failed to
 * remove listen FD from epoll set": a replaced server died with requests in flight, seen
 * about once per thousand stops under load); and an I/O thread past its quiesce check
 * could still take a connection meant for the next server. Stopping is now joining this
 * thread: after that no connection is accepted here, and every one accepted before is
 * counted (accept_policy) and drained by http_stop. */
static void *acceptor_main(void *arg) {
    http_server *s = arg;
    atomic_store(&s->acceptor_tid, gettid());
    struct pollfd pf[2] = { { .fd = s->fd, .events = POLLIN }, { .fd = s->stop_efd, .events = POLLIN } };
    for (;;) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pf[1].revents) break;
        for (unsigned k = 0; k < HTTP_ACCEPT_BATCH; k++) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd = accept4(s->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                    poll(&pf[1], 1, HTTP_ACCEPT_BACKOFF_MS);      /* until a descriptor frees, or stop */
                break;                   /* EAGAIN, or a connection reset before it was taken */
            }
            MHD_add_connection(s->daemon, fd, (struct sockaddr *)&ss, sl);   /* closes fd if refused */
        }
    }
    return NULL;
}

/* libmicrohttpd's own listening socket (see acceptor_main), or -1 with err. */
static int private_listener(char *err, size_t errlen) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0) {
        snprintf(err, errlen, "cannot open the HTTP listener's private socket: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* Raise the descriptor soft limit to the hard limit (each connection is one descriptor)
 * and log both. Returns the soft limit now in force. */
static rlim_t raise_fd_limit(const bv_log *log) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    }
    char f[96];
    snprintf(f, sizeof f, "\"soft\":%llu,\"hard\":%llu", (unsigned long long)rl.rlim_cur,
             (unsigned long long)rl.rlim_max);
    bv_log_emit(log, LOG_INFO, "server.fd_limit", f);
    return rl.rlim_cur;
}

static void http_stats_metrics(const http_stats *st, bv_buf *out) {
    http_stats *m = (http_stats *)st;
    bv_buf_printf(out,
                  "# HELP beava_http_connections_open Data-plane HTTP connections open now.\n"
                  "# TYPE beava_http_connections_open gauge\nbeava_http_connections_open %llu\n"
                  "# HELP beava_http_connections_accepted_total Data-plane HTTP connections accepted.\n"
                  "# TYPE beava_http_connections_accepted_total counter\nbeava_http_connections_accepted_total %llu\n"
                  "# HELP beava_http_connections_refused_total Connections closed at accept by a limit.\n"
                  "# TYPE beava_http_connections_refused_total counter\n"
                  "beava_http_connections_refused_total{limit=\"max_connections\"} %llu\n"
                  "beava_http_connections_refused_total{limit=\"max_connections_per_ip\"} %llu\n"
                  "# HELP beava_http_timeouts_total Connections closed for missing a deadline.\n"
                  "# TYPE beava_http_timeouts_total counter\n"
                  "beava_http_timeouts_total{phase=\"header\"} %llu\nbeava_http_timeouts_total{phase=\"body\"} %llu\n"
                  "beava_http_timeouts_total{phase=\"idle\"} %llu\n"
                  "# HELP beava_http_framing_errors_total Requests refused for ambiguous framing headers.\n"
                  "# TYPE beava_http_framing_errors_total counter\nbeava_http_framing_errors_total %llu\n"
                  "# HELP beava_http_overloaded_total Requests answered 503 because the body budget was spent.\n"
                  "# TYPE beava_http_overloaded_total counter\nbeava_http_overloaded_total %llu\n"
                  "# HELP beava_http_requests_suspended Requests waiting for their engine answer now.\n"
                  "# TYPE beava_http_requests_suspended gauge\nbeava_http_requests_suspended %llu\n",
                  (unsigned long long)atomic_load(&m->open), (unsigned long long)atomic_load(&m->accepted),
                  (unsigned long long)atomic_load(&m->refused_cap), (unsigned long long)atomic_load(&m->refused_per_ip),
                  (unsigned long long)atomic_load(&m->timeout_header), (unsigned long long)atomic_load(&m->timeout_body),
                  (unsigned long long)atomic_load(&m->timeout_idle), (unsigned long long)atomic_load(&m->framing_errors),
                  (unsigned long long)atomic_load(&m->overloaded), (unsigned long long)atomic_load(&m->suspended));
}

/* ---- responses ---------------------------------------------------------------------- */

/* The data plane's answer headers. send_buf_opt compares these pointers, not the text. */
static const char HTTP_CT_JSON[] = "application/json";
static const char HTTP_RUNTIME[] = "hand-rolled";

/* Queue a small data-plane JSON answer through the connection's reusable response: an
 * MHD response whose body is the connection's own buffer (MHD_RESPMEM_PERSISTENT), with
 * the constant headers added once. The object is made again only when the body length
 * changes (a push ack keeps its length for millions of pushes), which saves creating,
 * filling and freeing a response and its headers per request. Overwriting the buffer is
 * safe: libmicrohttpd answers one request of a connection at a time and releases its
 * reference to the previous answer (after sending all of it) before the next request's
 * handler runs. Returns false when it could not (the caller takes the general path). */
static bool queue_reused(struct MHD_Connection *c, conn_ctx *cc, int status, const bv_buf *body,
                         enum MHD_Result *ret) {
    if (cc->resp && cc->resp_len != body->len) {
        MHD_destroy_response(cc->resp);
        cc->resp = NULL;
    }
    if (!cc->resp) {
        struct MHD_Response *r = MHD_create_response_from_buffer(body->len, cc->resp_body, MHD_RESPMEM_PERSISTENT);
        if (!r) return false;
        if (MHD_add_response_header(r, "Content-Type", HTTP_CT_JSON) != MHD_YES ||
            MHD_add_response_header(r, "X-Runtime", HTTP_RUNTIME) != MHD_YES) {
            MHD_destroy_response(r);
            return false;
        }
        cc->resp = r;
        cc->resp_len = body->len;
    }
    if (body->len) memcpy(cc->resp_body, body->data, body->len);
    *ret = MHD_queue_response(c, (unsigned)status, cc->resp);
    return true;
}

static enum MHD_Result send_buf_opt(struct MHD_Connection *c, int status, const char *ctype, bv_buf *body,
                                    const char *runtime, bool replay, bool close) {
    /* a server being replaced (http_stop) tells every client to reconnect: the listening
     * socket may already belong to the next server */
    conn_ctx *cc = conn_of(c);
    if (!close && cc && cc->draining && atomic_load(cc->draining)) close = true;
    if (cc && !close && !replay && ctype == HTTP_CT_JSON && runtime == HTTP_RUNTIME &&
        body->len <= HTTP_REUSE_BODY_MAX) {
        enum MHD_Result ret;
        if (queue_reused(c, cc, status, body, &ret)) {
            bv_buf_free(body);
            return ret;
        }
    }
    size_t len = body->len;
    char *data = bv_buf_steal(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    if (runtime) MHD_add_response_header(r, "X-Runtime", runtime);
    if (replay) MHD_add_response_header(r, "X-Beava-Idempotent-Replay", "1");
    if (close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_buf(struct MHD_Connection *c, int status, const char *ctype, bv_buf *body,
                                const char *runtime, bool replay) {
    return send_buf_opt(c, status, ctype, body, runtime, replay, false);
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, bv_buf *body) {
    return send_buf(c, status, HTTP_CT_JSON, body, HTTP_RUNTIME, false);
}

/* {"error":{"code":CODE[,EXTRA_KEY:EXTRA_VAL]}} */
static void error_body(bv_buf *b, const char *code, const char *extra_key, const char *extra_val) {
    jsonw_member m = { .key = extra_key, .str = extra_val };
    jsonw_error(b, code, &m, extra_key ? 1 : 0, false, 0);
}

static enum MHD_Result send_error_opt(struct MHD_Connection *c, int status, const char *code, const char *extra_key,
                                      const char *extra_val, bool close) {
    bv_buf b;
    bv_buf_init(&b);
    error_body(&b, code, extra_key, extra_val);
    return send_buf_opt(c, status, HTTP_CT_JSON, &b, HTTP_RUNTIME, false, close);
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code, const char *extra_key,
                                  const char *extra_val) {
    return send_error_opt(c, status, code, extra_key, extra_val, false);
}

static enum MHD_Result send_not_found(struct MHD_Connection *c, const char *raw) {
    return send_error(c, 404, "not_found", "path", raw);
}

static enum MHD_Result send_method_not_allowed(struct MHD_Connection *c, const char *method, const char *raw) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw_member m[] = { { .key = "method", .str = method }, { .key = "path", .str = raw } };
    jsonw_error(&b, "method_not_allowed", m, 2, false, 0);
    return send_json(c, 405, &b);
}

/* ---- suspending a request for its engine call ------------------------------------------- */

void http_request_complete(http_request *rc, int status, bv_buf *body, bool replay) {
    struct MHD_Connection *c = rc->conn;
    rc->answer_status = status;
    rc->answer = *body;
    bv_buf_init(body);
    rc->answer_replay = replay;
    atomic_store_explicit(&rc->state, REQ_ANSWER_READY, memory_order_release);
    /* whoever comes second resumes: if the handler has not parked the request yet it
     * sees HANDOFF_DONE and answers at once (see park) */
    if (atomic_exchange(&rc->handoff, HANDOFF_DONE) == HANDOFF_PARKED)
        MHD_resume_connection(c);      /* rc belongs to the I/O thread from here on */
}

/* The access handler's call once the answer is stored: send it. */
static enum MHD_Result send_answer(http_server *s, struct MHD_Connection *c, req_ctx *rc) {
    if (rc->parked) atomic_fetch_sub(&s->stats->suspended, 1);
    rc->parked = false;
    return send_buf(c, rc->answer_status, HTTP_CT_JSON, &rc->answer, HTTP_RUNTIME, rc->answer_replay);
}

/* After work was started whose completion calls http_request_complete (from any thread,
 * possibly already): answer now if it is done, else suspend the connection until it is.
 * The compare-and-swap settles the race with a completion running meanwhile: if it wins,
 * the completion saw no parked request and did not resume, so we resume ourselves and
 * the handler's next call sends the answer. */
static enum MHD_Result park(http_server *s, struct MHD_Connection *c, req_ctx *rc) {
    if (atomic_load(&rc->handoff) == HANDOFF_DONE) return send_answer(s, c, rc);
    rc->parked = true;
    atomic_fetch_add(&s->stats->suspended, 1);
    MHD_suspend_connection(c);
    int expect = HANDOFF_NONE;
    if (!atomic_compare_exchange_strong(&rc->handoff, &expect, HANDOFF_PARKED)) MHD_resume_connection(c);
    return MHD_YES;
}

/* Workpool side of submit(): run the blocking engine call, hand its answer back. */
static void run_job(workpool_job *job) {
    req_ctx *rc = (req_ctx *)((char *)job - offsetof(req_ctx, job));
    bv_buf out;
    bv_buf_init(&out);
    bool replay = false;
    int status = rc->job_fn(rc->s, rc, &out, &replay);
    http_request_complete(rc, status, &out, replay);
}

/* Run fn (an engine call that may block: register, reset) on the workpool and answer
 * the request when it returns, without holding the I/O thread meanwhile. */
static enum MHD_Result submit(http_server *s, struct MHD_Connection *c, req_ctx *rc, req_job_fn fn) {
    rc->job_fn = fn;
    rc->conn = c;
    rc->job.fn = run_job;
    atomic_store(&rc->state, REQ_SUBMITTED);
    if (!workpool_submit(s->jobs, &rc->job)) run_job(&rc->job);   /* stopping: answer inline */
    return park(s, c, rc);
}

/* Run fn on the I/O thread and answer at once (calls that never wait: reads, ping). */
static enum MHD_Result answer_now(http_server *s, struct MHD_Connection *c, req_ctx *rc, req_job_fn fn) {
    bv_buf out;
    bv_buf_init(&out);
    bool replay = false;
    int status = fn(s, rc, &out, &replay);
    return send_buf(c, status, HTTP_CT_JSON, &out, HTTP_RUNTIME, replay);
}

static const char *body_data(const req_ctx *rc) { return rc->body.data ? rc->body.data : ""; }

/* ---- pushes: decoded into a row on the I/O thread, answered by the engine's completion ---- */

static push_slot *slot_get(http_server *s) {
    pthread_mutex_lock(&s->slots_mu);
    push_slot *p = s->free_slots;
    if (p) {
        s->free_slots = p->next;
        s->nfree_slots--;
    }
    pthread_mutex_unlock(&s->slots_mu);
    if (p) return p;
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->s = s;
    rowdec_init(&p->dec);
    engine_batch_init(&p->batch);
    return p;
}

static void slot_free(push_slot *p) {
    rowdec_free(&p->dec);
    engine_batch_free(&p->batch);
    free(p);
}

static void slot_put(http_server *s, push_slot *p) {
    rowdec_reset(&p->dec);
    p->rc = NULL;
    pthread_mutex_lock(&s->slots_mu);
    bool keep = s->nfree_slots < HTTP_PUSH_SLOTS_KEPT;
    if (keep) {
        p->next = s->free_slots;
        s->free_slots = p;
        s->nfree_slots++;
    }
    pthread_mutex_unlock(&s->slots_mu);
    if (!keep) slot_free(p);
}

/* A push submitted to the engine is answered. Counted down under flight_mu: http_stop
 * reads the count under it, so it cannot see zero (and free the server) while a
 * completing thread is still between the decrement and its wake-up of http_stop. */
static void flight_end(http_server *s) {
    pthread_mutex_lock(&s->flight_mu);
    if (atomic_fetch_sub(&s->inflight, 1) == 1 && atomic_load(&s->draining)) pthread_cond_broadcast(&s->flight_cv);
    pthread_mutex_unlock(&s->flight_mu);
}

/* http_stop: wait until every push submitted to the engine is answered. */
static void flight_wait_zero(http_server *s) {
    pthread_mutex_lock(&s->flight_mu);
    while (atomic_load(&s->inflight) > 0) pthread_cond_wait(&s->flight_cv, &s->flight_mu);
    pthread_mutex_unlock(&s->flight_mu);
}

/* The engine's completion of an asynchronous push (a shard or fsync thread). */
static void push_done(engine_batch *b) {
    push_slot *p = b->owner;
    http_server *s = p->s;
    bv_buf out;
    bv_buf_init(&out);
    int status = engine_push_body(&p->item.res, TRANSPORT_HTTP, &out);
    http_request_complete(p->rc, status, &out, p->item.res.replay);
    flight_end(s);
}

/* POST /push (event NULL: the envelope names it) or /push/<event> (the bare data). */
static enum MHD_Result do_push(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *event, bool sync) {
    push_slot *p = slot_get(s);
    if (!p) return MHD_NO;
    rc->push = p;
    p->rc = rc;
    rowdec_push *rp = &p->decoded;
    char err[256] = "";
    int r = event ? rowdec_json_data(&p->dec, body_data(rc), rc->body.len, rp, err, sizeof err)
                  : rowdec_json_push_http(&p->dec, body_data(rc), rc->body.len, rp, err, sizeof err);
    if (r != ROWDEC_OK) {
        if (event) {
            char reason[320];
            snprintf(reason, sizeof reason, "event data must be a JSON object: %s", err);
            return send_error(c, 400, "invalid_event", "reason", reason);
        }
        if (r == ROWDEC_EENVELOPE)
            return send_error(c, 400, "missing_event_name_in_body", "reason", "the body needs a string member `event`");
        return send_error(c, 400, "invalid_json_body", "reason", err);
    }
    engine_push_item *it = &p->item;
    memset(it, 0, sizeof *it);
    it->event = event ? event : rp->event;
    it->event_len = event ? strlen(event) : rp->event_len;
    it->row = &rp->row;
    it->data_is_object = rp->data_is_object;
    it->data_kind = rp->data_kind;
    it->has_control_char = rp->has_control_char;
    it->sync = sync || s->deps.cfg->durability == DURABILITY_SYNC;
    p->batch.items = it;
    p->batch.n = 1;
    p->batch.done = push_done;
    p->batch.owner = p;
    rc->conn = c;
    atomic_store(&rc->state, REQ_SUBMITTED);
    atomic_fetch_add(&s->inflight, 1);
    /* counted before the check, so http_stop's wait after it sets `closing` sees this push
     * whenever this check did not see `closing` */
    if (atomic_load(&s->closing)) {
        flight_end(s);
        atomic_store(&rc->state, REQ_RECEIVING);
        return send_error_opt(c, 503, "overloaded", "reason", "the server is stopping; retry", true);
    }
    if (engine_push_submit(s->deps.eng, &p->batch)) {            /* answered at once */
        flight_end(s);
        atomic_store(&rc->state, REQ_RECEIVING);
        bv_buf out;
        bv_buf_init(&out);
        int status = engine_push_body(&it->res, TRANSPORT_HTTP, &out);
        return send_buf(c, status, HTTP_CT_JSON, &out, HTTP_RUNTIME, it->res.replay);
    }
    return park(s, c, rc);
}

/* ---- data-plane handlers ------------------------------------------------------------ */

static bool is_json_content_type(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

static bool token_ok(struct MHD_Connection *c, const char *token) {
    if (!token) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) return false;
    const char *got = h + 7;
    size_t gl = strlen(got), tl = strlen(token);
    unsigned char diff = (unsigned char)(gl != tl);
    for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(token[i] ^ (i < gl ? got[i] : 0));
    return diff == 0;
}

static enum MHD_Result send_unauthorized(struct MHD_Connection *c) {
    return send_error(c, 401, "unauthorized", "reason",
                      "this route requires Authorization: Bearer <token> (security.admin_token_file)");
}

/* Jobs: each runs one engine call for a suspended request and writes the answer body. */

static int job_register(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)replay;
    return engine_register(s->deps.eng, body_data(rc), rc->body.len, out);
}

static json_t *parse_body(req_ctx *rc, char *err, size_t errlen) {
    json_error_t jerr;
    if (rc->body.len == 0) {
        snprintf(err, errlen, "EOF while parsing a value at line 1 column 0");
        return NULL;
    }
    json_t *j = json_loadb(rc->body.data, rc->body.len, JSON_DECODE_ANY, &jerr);
    if (!j) snprintf(err, errlen, "%s at line %d column %d", jerr.text, jerr.line, jerr.column);
    return j;
}

/* POST /get, and /api/get (only allow-listed tables, else the route does not exist). */
static int job_get(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)replay;
    char perr[256];
    json_t *req = parse_body(rc, perr, sizeof perr);
    if (rc->api_get && req) {
        json_t *t = json_is_object(req) ? json_object_get(req, "table") : NULL;
        if (!json_is_string(t) || !bv_site_table_allowed(&s->allow, json_string_value(t))) {
            json_decref(req);
            error_body(out, "not_found", "path", rc->raw_uri);
            return 404;
        }
    }
    int status = engine_get(s->deps.eng, TRANSPORT_HTTP, req, req ? NULL : perr, out);
    json_decref(req);
    return status;
}

static int job_batch_get(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)replay;
    char perr[256];
    json_t *req = parse_body(rc, perr, sizeof perr);
    int status = engine_batch_get(s->deps.eng, req, req ? NULL : perr, out);
    json_decref(req);
    return status;
}

static int job_ping(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)rc;
    (void)replay;
    return engine_ping(s->deps.eng, out);
}

static int job_reset(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)rc;
    (void)replay;
    return engine_reset(s->deps.eng, out);
}

static int job_get_legacy(http_server *s, req_ctx *rc, bv_buf *out, bool *replay) {
    (void)replay;
    return engine_get_legacy(s->deps.eng, rc->arg, out);
}

static bool set_arg(req_ctx *rc, const char *arg) {
    free(rc->arg);
    rc->arg = strdup(arg);
    return rc->arg != NULL;
}

/* A push route; `event` (the path's event name, NULL for the envelope) is copied into
 * the request, which outlives an asynchronous push. */
static enum MHD_Result push_route(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *event, bool sync) {
    if (event && !set_arg(rc, event)) return MHD_NO;
    return do_push(s, c, rc, event ? rc->arg : NULL, sync);
}

static enum MHD_Result do_register(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *raw) {
    if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
    if (!is_json_content_type(c)) {
        bv_buf b;
        bv_buf_init(&b);
        jsonw_member m[] = { { .key = "path", .str = raw }, { .key = "reason", .str = "expected application/json" } };
        jsonw_error(&b, "unsupported_media_type", m, 2, true, engine_registry_version(s->deps.eng));
        return send_json(c, 415, &b);
    }
    return submit(s, c, rc, job_register);
}

static bool starts_with(const char *s, const char *prefix, const char **rest) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0) return false;
    *rest = s + n;
    return true;
}

static enum MHD_Result serve_static(http_server *s, struct MHD_Connection *c, const char *raw) {
    bv_site_file f;
    int st = bv_site_resolve(s->site, raw, &f);
    if (st != 200) {
        bv_buf b;
        bv_buf_init(&b);
        jsonw_member m = { .key = "path", .str = raw };
        jsonw_error(&b, st == 404 ? "not_found" : "bad_path", &m, 1, false, 0);
        return send_json(c, st, &b);
    }
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    struct MHD_Response *r;
    int status = 200;
    if (bv_site_not_modified(inm, f.etag)) {
        close(f.fd);
        status = 304;
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_fd((size_t)f.size, f.fd);   /* the response closes fd */
        if (!r) close(f.fd);
    }
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", f.content_type);
    MHD_add_response_header(r, "ETag", f.etag);
    MHD_add_response_header(r, "Cache-Control", f.cache_control);
    MHD_add_response_header(r, "X-Content-Type-Options", BV_SITE_NOSNIFF);
    MHD_add_response_header(r, "Content-Security-Policy", BV_SITE_CSP);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result route_data(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *method) {
    const char *raw = rc->raw_uri ? rc->raw_uri : "/";
    /* path = raw without query, trailing '/' stripped */
    char path[HTTP_PATH_MAX];
    size_t pl = strcspn(raw, "?");
    if (pl >= sizeof path) return send_error(c, 414, "http_protocol_error", "reason", "request path too long");
    memcpy(path, raw, pl);
    path[pl] = 0;
    while (pl > 0 && path[pl - 1] == '/') path[--pl] = 0;
    bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
    const char *rest;

    if (starts_with(path, "/push/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return push_route(s, c, rc, rest, false);
    }
    if (starts_with(path, "/push-sync/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return push_route(s, c, rc, rest, true);
    }
    if (starts_with(path, "/push-batch/", &rest) && *rest) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return push_route(s, c, rc, rest, false);
    }
    if (strcmp(path, "/push") == 0 || strcmp(path, "/push-sync") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return push_route(s, c, rc, NULL, path[5] == '-');
    }
    if (strcmp(path, "/ping") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return answer_now(s, c, rc, job_ping);
    }
    if (strcmp(path, "/reset") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
        return submit(s, c, rc, job_reset);
    }
    if (starts_with(path, "/get/", &rest) && strchr(rest, '/') && rest[0] != '/') {
        if (!get) return send_method_not_allowed(c, method, raw);
        if (!set_arg(rc, rest)) return MHD_NO;
        return answer_now(s, c, rc, job_get_legacy);
    }
    if (strcmp(path, "/get") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return answer_now(s, c, rc, job_get);
    }
    if (strcmp(path, "/batch_get") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return answer_now(s, c, rc, job_batch_get);
    }
    if (strcmp(path, "/register") == 0) {
        if (!post) return send_method_not_allowed(c, method, raw);
        return do_register(s, c, rc, raw);
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0) {
        if (!get) return send_method_not_allowed(c, method, raw);
        bv_buf out;
        bv_buf_init(&out);
        bool ready = path[1] == 'r';
        bv_buf_puts(&out, ready ? "{\"status\":\"ready\"}" : "{\"status\":\"ok\"}");
        return send_json(c, 200, &out);
    }
    if (strcmp(path, "/registry") == 0) {
        if (!get) return send_method_not_allowed(c, method, raw);
        return send_not_found(c, raw);
    }
    /* the website's aliases: only allow-listed tables and events */
    char event[BV_SITE_MAX_NAME + 1];
    switch (bv_site_api_route(raw, event)) {
    case BV_SITE_API_GET:
        if (s->allow.n_public_tables == 0) return send_not_found(c, raw);
        if (!post) return send_method_not_allowed(c, method, raw);
        rc->api_get = true;
        return answer_now(s, c, rc, job_get);
    case BV_SITE_API_PUSH:
        if (!bv_site_event_allowed(&s->allow, event)) return send_not_found(c, raw);
        if (!post) return send_method_not_allowed(c, method, raw);
        return push_route(s, c, rc, event, false);
    case BV_SITE_API_NOT_FOUND:
        return send_not_found(c, raw);
    case BV_SITE_API_NONE:
        break;
    }
    if (s->site && (get || strcmp(method, "HEAD") == 0)) return serve_static(s, c, raw);
    return send_not_found(c, raw);
}

/* ---- admin handlers ----------------------------------------------------------------- */

static enum MHD_Result send_empty(struct MHD_Connection *c, int status) {
    bv_buf b;
    bv_buf_init(&b);
    return send_buf(c, status, NULL, &b, "beava-admin", false);
}

static enum MHD_Result route_admin(http_server *s, struct MHD_Connection *c, req_ctx *rc, const char *method) {
    (void)rc;
    const char *raw = rc->raw_uri ? rc->raw_uri : "/";
    char path[512];
    size_t pl = strcspn(raw, "?");
    if (pl >= sizeof path) return send_empty(c, 404);
    memcpy(path, raw, pl);
    path[pl] = 0;
    while (pl > 1 && path[pl - 1] == '/') path[--pl] = 0;
    bool get = strcmp(method, "GET") == 0;
    bv_buf out;
    bv_buf_init(&out);
    if (strcmp(path, "/snapshot") == 0) {
        if (strcmp(method, "POST") != 0) return send_empty(c, 405);
        if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
        if (!s->deps.snapshot) {
            jsonw_member m = { .key = "reason", .str = "the server runs with --memory-only" };
            jsonw_error(&out, "snapshots_disabled", &m, 1, false, 0);
            return send_buf(c, 409, "application/json", &out, "beava-admin", false);
        }
        int st = s->deps.snapshot(s->deps.ctx, &out);
        return send_buf(c, st, "application/json", &out, "beava-admin", false);
    }
    if (s->deps.cfg->test_mode && strncmp(path, "/debug/", 7) == 0 && strcmp(method, "POST") == 0) {
        /* test-mode hooks: which shard owns a key; pause/resume a shard (overload tests) */
        json_t *req = json_loadb(rc->body.data ? rc->body.data : "", rc->body.len, 0, NULL);
        int st = 400;
        if (req && strcmp(path, "/debug/shard-of") == 0 && json_is_string(json_object_get(req, "table")) &&
            json_is_string(json_object_get(req, "key"))) {
            unsigned sh = engine_shard_of(s->deps.eng, json_string_value(json_object_get(req, "table")),
                                          json_string_value(json_object_get(req, "key")));
            bv_buf_printf(&out, "{\"shard\":%u}", sh);
            st = 200;
        } else if (req && strcmp(path, "/debug/pause-shard") == 0 && json_is_integer(json_object_get(req, "shard"))) {
            engine_pause_shard(s->deps.eng, (unsigned)json_integer_value(json_object_get(req, "shard")),
                               json_is_true(json_object_get(req, "paused")));
            bv_buf_puts(&out, "{\"ok\":true}");
            st = 200;
        } else {
            jsonw_error(&out, "bad_request", NULL, 0, false, 0);
        }
        json_decref(req);
        return send_buf(c, st, "application/json", &out, "beava-admin", false);
    }
    if (strcmp(path, "/cluster") == 0 && s->deps.cluster_status) {      /* cluster mode: members, owners, lag */
        if (!get) return send_empty(c, 405);
        int st = s->deps.cluster_status(s->deps.ctx, &out);
        return send_buf(c, st, "application/json", &out, "beava-admin", false);
    }
    if (strncmp(path, "/cluster/", 9) == 0 && s->deps.cluster_admin) {
        if (!token_ok(c, s->deps.admin_token)) return send_unauthorized(c);
        const char *q = strchr(raw, '?');
        const char *ctype = "application/json";
        int st = s->deps.cluster_admin(s->deps.ctx, method, path + 9, q ? q + 1 : "", rc->body.data ? rc->body.data : "",
                                       rc->body.len, &out, &ctype);
        return send_buf(c, st, ctype, &out, "beava-admin", false);
    }
    bool known = strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0 || strcmp(path, "/registry") == 0 ||
                 strcmp(path, "/metrics") == 0;
    if (!known) return send_empty(c, 404);
    if (!get) return send_empty(c, 405);
    if (strcmp(path, "/health") == 0) {
        bv_buf_puts(&out, "{\"status\":\"ok\"}");
        return send_buf(c, 200, "application/json", &out, "beava-admin", false);
    }
    if (strcmp(path, "/ready") == 0) {
        bool ready = s->deps.ready ? atomic_load(s->deps.ready) : true;
        bv_buf_puts(&out, ready ? "{\"status\":\"ready\"" : "{\"status\":\"recovering\"");
        if (!ready && s->deps.progress) s->deps.progress(s->deps.ctx, &out);   /* ,"progress":{...} */
        bv_buf_putc(&out, '}');
        return send_buf(c, ready ? 200 : 503, "application/json", &out, "beava-admin", false);
    }
    bool ready = s->deps.ready ? atomic_load(s->deps.ready) : true;
    if (strcmp(path, "/registry") == 0) {
        if (!ready) {
            bv_buf_puts(&out, "{\"status\":\"recovering\"}");
            return send_buf(c, 503, "application/json", &out, "beava-admin", false);
        }
        engine_registry_info(s->deps.eng, &out);
        return send_buf(c, 200, "application/json", &out, "beava-admin", false);
    }
    /* /metrics */
    if (ready) engine_metrics(s->deps.eng, &out);
    bv_buf_printf(&out, "# HELP beava_ready 1 once recovery is complete.\n# TYPE beava_ready gauge\nbeava_ready %d\n",
                  ready ? 1 : 0);
    if (s->deps.extra_metrics) s->deps.extra_metrics(s->deps.ctx, &out);
    if (s->deps.data_stats) http_stats_metrics(s->deps.data_stats, &out);
    membudget_metrics(s->budget, &out);
    return send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &out, "beava-admin", false);
}

/* ---- libmicrohttpd glue ------------------------------------------------------------- */

/* An empty body in the context's own storage. */
static void body_inline_init(req_ctx *rc) {
    rc->body.data = rc->body_inline;
    rc->body.len = 0;
    rc->body.cap = HTTP_BODY_INLINE;
}

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *c) {
    http_server *s = cls;
    /* a keep-alive connection's next request line is in: its header deadline starts */
    conn_ctx *cc = conn_of(c);
    conn_enter(s, cc, PH_HEADERS, s->header_ms, PH_IDLE);
    /* a keep-alive connection reuses its previous request's context (see request_done) */
    req_ctx *rc = cc ? cc->spare : NULL;
    if (rc) {
        cc->spare = NULL;
        memset(rc, 0, offsetof(req_ctx, body_inline));
    } else {
        rc = malloc(sizeof *rc);
        if (!rc) return NULL;
        memset(rc, 0, offsetof(req_ctx, body_inline));
    }
    rc->s = s;
    rc->cc = cc;
    if (!uri) uri = "/";
    size_t ul = strlen(uri);
    if (ul < sizeof rc->uri_inline) {
        memcpy(rc->uri_inline, uri, ul + 1);
        rc->raw_uri = rc->uri_inline;
    } else if (!(rc->raw_uri = strdup(uri))) {
        free(rc);
        return NULL;
    }
    body_inline_init(rc);
    bv_buf_init(&rc->answer);
    atomic_init(&rc->state, REQ_RECEIVING);
    atomic_init(&rc->handoff, HANDOFF_NONE);
    return rc;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    return strlen(s);
}

static void body_release(http_server *s, req_ctx *rc) {
    if (rc->body.data != rc->body_inline) free(rc->body.data);
    body_inline_init(rc);
    if (rc->charged) membudget_give(s->budget, rc->charged);
    rc->charged = 0;
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    http_server *s = cls;
    (void)toe;
    req_ctx *rc = *con_cls;
    conn_ctx *cc = conn_of(c);
    conn_enter(s, cc, PH_IDLE, s->idle_ms, PH_NONE);
    if (!rc) return;
    body_release(s, rc);
    if (rc->push) slot_put(s, rc->push);
    bv_buf_free(&rc->answer);
    free(rc->arg);
    if (rc->raw_uri != rc->uri_inline) free(rc->raw_uri);
    *con_cls = NULL;
    /* kept for the connection's next request (freed with the connection) */
    if (cc && !cc->spare) cc->spare = rc;
    else free(rc);
}

/* Make room for `need` body bytes. Growth doubles, bounded by the declared length (or the
 * body cap for chunked bodies); what exceeds HTTP_BODY_FREE_BYTES is taken from the
 * budget first. Returns false when the budget refuses (nothing changes). */
static bool body_reserve(http_server *s, req_ctx *rc, size_t need) {
    if (need <= rc->body.cap) return true;
    size_t bound = rc->declared ? (size_t)rc->declared : (size_t)s->deps.cfg->max_body_bytes;
    size_t want = rc->body.cap;
    while (want < need) want *= 2;
    if (want > bound) want = bound > need ? bound : need;
    uint64_t charge = want > HTTP_BODY_FREE_BYTES ? want - HTTP_BODY_FREE_BYTES : 0;
    if (charge > rc->charged && !membudget_take(s->budget, charge - rc->charged)) return false;
    bool inline_now = rc->body.data == rc->body_inline;
    char *p = inline_now ? malloc(want + 1) : realloc(rc->body.data, want + 1);
    if (!p) {
        if (charge > rc->charged) membudget_give(s->budget, charge - rc->charged);
        return false;
    }
    if (inline_now) memcpy(p, rc->body_inline, rc->body.len);
    rc->body.data = p;
    rc->body.cap = want;
    if (charge > rc->charged) rc->charged = charge;
    return true;
}

typedef struct framing_count {
    unsigned content_length, transfer_encoding;
    const char *length;                /* the first Content-Length value */
} framing_count;

/* One pass over the request headers: counts the framing headers and keeps the
 * Content-Length value (no second lookup). Names are compared only when their length
 * matches, so the other headers cost a length test each. */
static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                     const char *value, size_t value_size) {
    (void)kind;
    (void)value_size;
    framing_count *f = cls;
    if (key_size == sizeof MHD_HTTP_HEADER_CONTENT_LENGTH - 1 && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->content_length++ == 0) f->length = value;
    } else if (key_size == sizeof MHD_HTTP_HEADER_TRANSFER_ENCODING - 1 &&
               strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding++;
    }
    return MHD_YES;
}

/* A Content-Length value as a number. libmicrohttpd has already refused the request
 * (400) unless the value is decimal digits; a value past 2^64 - 1 saturates (over any
 * body cap). */
static uint64_t length_value(const char *v) {
    while (*v == ' ' || *v == '\t') v++;
    uint64_t n = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        unsigned d = (unsigned)(*v - '0');
        if (n > (UINT64_MAX - d) / 10) return UINT64_MAX;
        n = n * 10 + d;
    }
    return n;
}

/* First access-handler call: the headers are in. Returns MHD_YES to read the body, or the
 * result of queueing an early answer (which closes the connection: the body is unread). */
static enum MHD_Result on_headers(http_server *s, struct MHD_Connection *c, req_ctx *rc, bool *answered) {
    *answered = true;
    framing_count f = { 0, 0, NULL };
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.content_length > 1 || f.transfer_encoding > 1 || (f.content_length && f.transfer_encoding)) {
        atomic_fetch_add(&s->stats->framing_errors, 1);
        const char *why = f.content_length > 1 ? "more than one Content-Length header"
                          : f.transfer_encoding > 1 ? "more than one Transfer-Encoding header"
                                                    : "both Content-Length and Transfer-Encoding";
        char reason[160];
        snprintf(reason, sizeof reason, "ambiguous request framing: %s", why);
        return send_error_opt(c, 400, "http_protocol_error", "reason", reason, true);
    }
    uint64_t cap = s->deps.cfg->max_body_bytes;
    const char *cl = f.length;
    if (cl) {
        uint64_t v = length_value(cl);
        if (v > cap) {
            char reason[128];
            snprintf(reason, sizeof reason, "request body of %s bytes exceeds the limit of %llu bytes", cl,
                     (unsigned long long)cap);
            return send_error(c, 413, "http_protocol_error", "reason", reason);
        }
        rc->declared = v;
        /* refuse now what cannot fit, rather than read part of it first */
        if (v > HTTP_BODY_FREE_BYTES && v - HTTP_BODY_FREE_BYTES > s->budget->limit - membudget_used(s->budget)) {
            atomic_fetch_add(&s->stats->overloaded, 1);
            return send_error_opt(c, 503, "overloaded", "reason",
                                  "the server is receiving too many request bodies at once; retry shortly", true);
        }
    }
    *answered = false;
    return MHD_YES;
}

/* After a body chunk: MHD_YES to read on, MHD_NO (close, request_done releases the
 * buffer and its budget) when the declared body can no longer arrive because the peer
 * closed (see peer_closed). A chunked body is never judged so: its end may already sit
 * in MHD's buffer behind a legitimate half-close. */
static enum MHD_Result body_more(const req_ctx *rc) {
    if (rc->declared && rc->received < rc->declared && peer_closed(rc->cc)) return MHD_NO;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)url;
    (void)version;
    http_server *s = cls;
    req_ctx *rc = *con_cls;
    if (!rc) return MHD_NO;
    int state = atomic_load_explicit(&rc->state, memory_order_acquire);
    if (state == REQ_ANSWER_READY) return send_answer(s, c, rc);
    if (state == REQ_SUBMITTED) return MHD_YES;                 /* not called while suspended */
    if (!rc->started) {
        rc->started = true;
        if (!conn_enter(s, rc->cc, PH_BODY, s->body_ms, PH_NONE)) return MHD_NO;
        bool answered;
        enum MHD_Result r = on_headers(s, c, rc, &answered);
        if (answered) conn_enter(s, rc->cc, PH_BUSY, 0, PH_NONE);
        return r;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        rc->received += n;
        if (rc->too_large || rc->over_budget) return body_more(rc);   /* read and drop the rest */
        if (rc->body.len + n > s->deps.cfg->max_body_bytes) {
            rc->too_large = true;
            body_release(s, rc);
            return body_more(rc);
        }
        if (!body_reserve(s, rc, rc->body.len + n)) {
            rc->over_budget = true;
            body_release(s, rc);
            return body_more(rc);
        }
        memcpy(rc->body.data + rc->body.len, upload_data, n);
        rc->body.len += n;
        return body_more(rc);
    }
    if (!conn_enter(s, rc->cc, PH_BUSY, 0, PH_NONE)) return MHD_NO;
    if (rc->too_large) {
        char reason[128];
        snprintf(reason, sizeof reason, "request body exceeds the limit of %llu bytes",
                 (unsigned long long)s->deps.cfg->max_body_bytes);
        return send_error(c, 413, "http_protocol_error", "reason", reason);
    }
    if (rc->over_budget) {
        atomic_fetch_add(&s->stats->overloaded, 1);
        return send_error(c, 503, "overloaded", "reason",
                          "the server is receiving too many request bodies at once; retry shortly");
    }
    return s->role == HTTP_DATA ? route_data(s, c, rc, method) : route_admin(s, c, rc, method);
}

static unsigned default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

http_server *http_start(http_role role, const char *addr, const http_deps *deps, int threads, char *bound,
                        size_t boundlen, char *err, size_t errlen) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const bv_config *cfg = deps->cfg;
    s->role = role;
    s->deps = *deps;
    s->fd = -1;
    s->mhd_fd = -1;
    s->stop_efd = -1;
    clock_gettime(HTTP_DEADLINE_CLOCK, &s->t0);
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_mutex_init(&s->slots_mu, NULL);
    pthread_mutex_init(&s->flight_mu, NULL);
    pthread_cond_init(&s->flight_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    membudget_init(&s->own_budget, cfg->partial_body_budget_bytes);
    s->budget = deps->body_budget ? deps->body_budget : &s->own_budget;
    s->stats = role == HTTP_DATA && deps->data_stats ? deps->data_stats : &s->own_stats;
    s->max_conns = cfg->http_max_connections;
    s->max_per_ip = cfg->http_max_connections_per_ip;
    s->header_ms = cfg->http_header_timeout_ms;
    s->body_ms = cfg->http_body_timeout_ms;
    s->idle_ms = (uint64_t)cfg->http_idle_timeout_s * 1000u;
    s->allow.public_tables = cfg->public_tables;
    s->allow.n_public_tables = cfg->npublic_tables;
    s->allow.public_events = cfg->public_events;
    s->allow.n_public_events = cfg->npublic_events;
    unsigned nthreads = threads > 0 ? (unsigned)threads : default_threads();
    if (role == HTTP_DATA) {
        rlim_t soft = raise_fd_limit(deps->log);
        if (soft && (rlim_t)s->max_conns + HTTP_FD_RESERVE > soft)
            bv_log_msg(deps->log, LOG_WARN, "server.fd_limit_low",
                       "http.max_connections is %u but the descriptor limit is %llu: connections past about %llu "
                       "will fail at accept",
                       (unsigned)s->max_conns, (unsigned long long)soft,
                       (unsigned long long)(soft > HTTP_FD_RESERVE ? soft - HTTP_FD_RESERVE : 0));
        s->jobs = workpool_new(HTTP_JOB_THREADS_MAX, HTTP_JOB_STACK_BYTES);
        if (!s->jobs) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (s->max_per_ip) {
        s->ip_table = calloc(HTTP_IP_BUCKETS, sizeof *s->ip_table);
        if (!s->ip_table) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    s->fd = http_bind_listen(addr, bound, boundlen, err, errlen);
    if (s->fd < 0) goto fail;
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot make the listening socket non-blocking: %s", strerror(errno));
        goto fail;
    }
    s->mhd_fd = private_listener(err, errlen);
    if (s->mhd_fd < 0) goto fail;
    s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_efd < 0) {
        snprintf(err, errlen, "cannot create the HTTP acceptor's eventfd: %s", strerror(errno));
        goto fail;
    }
    if (role == HTTP_DATA && cfg->site_dir[0]) {
        bv_err serr;
        if (bv_site_open(cfg->site_dir, 0, &s->site, &serr) != 0) {
            snprintf(err, errlen, "site.dir %s: %s", cfg->site_dir, serr.reason);
            goto fail;
        }
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        snprintf(err, errlen, "cannot start the HTTP connection reaper");
        goto fail;
    }
    s->reaper_started = true;
    /* libmicrohttpd splits its own connection limit evenly over the pool threads; ours is
     * global (accept_policy), so each thread may hold all of it. Its inactivity timeout
     * (one second past the idle timeout, so the reaper acts and counts first) still bounds
     * a client that stops reading an answer. */
    /* TURBO: no per-response socket-option toggling (corking) and no shutdown() before close:
     * two to three system calls less per request on the keep-alive path */
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_SUPPRESS_DATE_NO_CLOCK |
                     MHD_USE_TURBO;
    s->daemon = MHD_start_daemon(flags, 0, accept_policy, s, on_request, s,
                                 MHD_OPTION_LISTEN_SOCKET, s->mhd_fd,
                                 MHD_OPTION_THREAD_POOL_SIZE, nthreads,
                                 MHD_OPTION_URI_LOG_CALLBACK, uri_log, s,
                                 MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
                                 MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->http_idle_timeout_s + 1u,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY_BYTES,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)(s->max_conns + 1) * nthreads,
                                 MHD_OPTION_THREAD_STACK_SIZE, (size_t)HTTP_IO_STACK_BYTES,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "libmicrohttpd could not start on %s", bound);
        goto fail;
    }
    s->mhd_fd = -1;                      /* the daemon's now: MHD_stop_daemon closes it */
    if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
        snprintf(err, errlen, "cannot start the HTTP acceptor");
        goto fail;
    }
    s->acceptor_started = true;
    return s;
fail:
    http_stop(s);
    return NULL;
}

void http_stop(http_server *s) {
    if (!s) return;
    if (s->acceptor_started) {            /* stop accepting (see acceptor_main) */
        uint64_t one = 1;
        while (write(s->stop_efd, &one, sizeof one) < 0 && errno == EINTR) {}
        pthread_join(s->acceptor, NULL);
        atomic_store(&s->acceptor_tid, 0);   /* its id may be reused: nothing is admitted now */
    }
    /* every suspended request is answered and resumed before the daemon may stop; a
     * request submitted after this runs its job inline */
    workpool_stop(s->jobs);
    /* and every push the engine still owes an answer (it must be answered and resumed) */
    atomic_store(&s->draining, true);
    flight_wait_zero(s);
    /* requests still being received or answered get HTTP_DRAIN_MS to finish (their answers
     * say Connection: close), so a replaced server drops no request it has taken. Every
     * connection the acceptor handed over is counted (admit), including one no I/O thread
     * has reported yet */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += HTTP_DRAIN_MS / 1000;
    pthread_mutex_lock(&s->flight_mu);
    while (s->daemon && atomic_load(&s->open_here) > 0)
        if (pthread_cond_timedwait(&s->flight_cv, &s->flight_mu, &until) != 0) break;
    pthread_mutex_unlock(&s->flight_mu);
    /* pushes taken during the drain may still wait for the engine (a sync push for its
     * fsync): libmicrohttpd must not stop with their requests suspended, nor may their
     * completions outlive this struct. From here on a push is refused (503, close). */
    atomic_store(&s->closing, true);
    flight_wait_zero(s);
    if (s->daemon) MHD_stop_daemon(s->daemon);
    workpool_free(s->jobs);
    if (s->reaper_started) {
        pthread_mutex_lock(&s->conns_mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->reaper_cv);
        pthread_mutex_unlock(&s->conns_mu);
        pthread_join(s->reaper, NULL);
    }
    if (s->mhd_fd >= 0) close(s->mhd_fd);
    if (s->stop_efd >= 0) close(s->stop_efd);
    if (s->fd >= 0) close(s->fd);
    bv_site_close(s->site);
    if (s->ip_table) {
        for (unsigned i = 0; i < HTTP_IP_BUCKETS; i++)
            for (ip_entry *e = s->ip_table[i], *n; e; e = n) {
                n = e->next;
                free(e);
            }
        free(s->ip_table);
    }
    free(s->conns);
    for (push_slot *p = s->free_slots, *n; p; p = n) {
        n = p->next;
        slot_free(p);
    }
    pthread_cond_destroy(&s->flight_cv);
    pthread_mutex_destroy(&s->flight_mu);
    pthread_mutex_destroy(&s->slots_mu);
    pthread_cond_destroy(&s->reaper_cv);
    pthread_mutex_destroy(&s->conns_mu);
    free(s);
}
