/*
 * driver.c - epoll load driver (see driver.h).
 *
 * Per connection: a write buffer the encoders append to, a read buffer the parser
 * consumes, and a ring of `depth` slots, one per request in flight, in send order
 * (every wire answers in FIFO order, so the oldest slot owns the next reply). A slot
 * remembers when the request was due, how many events it carries and how many replies
 * it still waits for (RESP: one per command).
 */
#include "driver.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define RATE_SLACK_NS 50000ull

typedef struct slot {
    uint64_t t_ns;
    uint64_t sent_rt;       /* open loop: CLOCK_REALTIME ns when it was queued for sending */
    uint32_t nevents;       /* 0 for a get */
    uint32_t replies_left;
    uint32_t acked;
    bool failed;
    bool get;
} slot;

typedef struct conn {
    int fd;
    bbuf w;
    size_t wpos;
    bbuf r;
    size_t rpos;
    wire_conn wc;
    slot *ring;
    unsigned head, count;
    bool dead;
    bool blocked;           /* the last send hit EAGAIN: wait for EPOLLOUT before sending */
    uint64_t rx_ns;         /* open loop: kernel receive time (CLOCK_REALTIME) of the last
                             * reply bytes read, 0 if unknown */
} conn;

/* Start gate: workers connect first, then wait here so that they all start at once. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;              /* 0 wait, 1 go, 2 abort */
} gate;

typedef struct worker {
    const driver_cfg *cfg;
    unsigned id;
    pthread_t thread;
    gate *start;
    int epfd;
    conn *conns;
    unsigned nconns, rr;
    evgen gen;
    keygen getkeys;
    rng r;
    bbuf scratch;
    uint64_t quota, sent;     /* ops: events pushed + gets */
    bool sending;
    uint64_t interval_ns, next_due;
    uint64_t inflight;
    /* measured */
    uint64_t t0, t_last;
    driver_result res;
} worker;

uint64_t driver_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t driver_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t driver_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int driver_connect(const char *addr) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = errno;
        close(fd);
        fd = -1;
        errno = e;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* ---- per request ------------------------------------------------------------------- */

static void complete(worker *w, const slot *s, uint64_t now) {
    driver_result *r = &w->res;
    uint64_t lat = now > s->t_ns ? now - s->t_ns : 0;
    r->requests++;
    w->t_last = now;
    if (s->get) {
        hist_add(&r->get_lat, lat);
        if (s->failed) r->gets_failed++;
        else r->gets_ok++;
        return;
    }
    hist_add(&r->push_lat, lat);
    uint32_t acked;
    if (w->cfg->wire->kind == WIRE_REDIS) acked = s->failed ? 0 : s->nevents;
    else acked = s->acked < s->nevents ? s->acked : s->nevents;
    r->events_acked += acked;
    r->events_failed += s->nevents - acked;
}

static void conn_kill(worker *w, conn *c, const char *why) {
    if (c->dead) return;
    c->dead = true;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    for (unsigned i = 0; i < c->count; i++) {
        const slot *s = &c->ring[(c->head + i) % w->cfg->depth];
        w->res.lost += s->get ? 1 : s->nevents;
        if (s->get) w->res.gets_failed++;
        else w->res.events_failed += s->nevents;
    }
    w->inflight -= c->count;
    c->count = 0;
    w->res.conn_errors++;
    if (!w->res.error[0]) snprintf(w->res.error, sizeof w->res.error, "connection lost: %s", why);
}

static void conn_flush(worker *w, conn *c) {
    while (c->wpos < c->w.len) {
        ssize_t n = send(c->fd, c->w.data + c->wpos, c->w.len - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->blocked = true;          /* the edge-triggered EPOLLOUT says when to go on */
                return;
            }
            conn_kill(w, c, strerror(errno));
            return;
        }
        c->wpos += (size_t)n;
    }
    bbuf_reset(&c->w);
    c->wpos = 0;
    c->blocked = false;
}

static void conn_fill(worker *w, conn *c, uint64_t now, int64_t wall_ms, uint64_t now_rt) {
    const driver_cfg *cfg = w->cfg;
    while (!c->dead && c->count < cfg->depth && w->sending) {
        if (w->quota && w->sent >= w->quota) {
            w->sending = false;
            break;
        }
        uint64_t t = now;
        if (w->interval_ns) {
            /* Requests due within RATE_SLACK_NS go out now rather than costing a wakeup
             * each; latency counts from the earlier of the scheduled and the real send. */
            if (w->next_due > now + RATE_SLACK_NS) break;
            t = w->next_due < now ? w->next_due : now;
            hist_add(&w->res.send_lag, now - t);
            w->next_due += w->interval_ns;
        }
        slot *s = &c->ring[(c->head + c->count) % cfg->depth];
        bool get = cfg->get_fraction >= 1.0 || (cfg->get_fraction > 0 && rng_double(&w->r) < cfg->get_fraction);
        unsigned replies;
        if (get) {
            replies = wire_get(cfg->wire, keygen_next(&w->getkeys, &w->r), &c->w, &w->scratch);
            s->nevents = 0;
            w->sent++;
        } else {
            uint64_t n = cfg->batch ? cfg->batch : 1;
            if (w->quota && n > w->quota - w->sent) n = w->quota - w->sent;
            replies = wire_push(cfg->wire, &w->gen, (unsigned)n, wall_ms, &c->w, &w->scratch);
            s->nevents = (uint32_t)n;
            w->sent += n;
        }
        s->t_ns = t;
        s->sent_rt = now_rt;
        s->replies_left = replies;
        s->acked = 0;
        s->failed = false;
        s->get = get;
        c->count++;
        w->inflight++;
    }
}

/* recv(), and with SO_TIMESTAMPNS on (open loop) the kernel's receive time of the
 * last segment read into c->rx_ns. */
static ssize_t conn_recv(conn *c, char *d, size_t len) {
    struct iovec iov = { .iov_base = d, .iov_len = len };
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
    ssize_t n = recvmsg(c->fd, &m, 0);
    if (n <= 0) return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            c->rx_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        }
    }
    return n;
}

/* now: monotonic, now_rt: realtime (ns), both read when epoll returned. The socket is
 * edge-triggered: a short read means the receive queue was empty at that moment, and any
 * data arriving later raises a new edge, so reading stops there (one recv per reply)
 * unless the peer has closed or failed (hangup), which raises no further edge: then it
 * reads on to the end of stream or EAGAIN. */
static void conn_read(worker *w, conn *c, uint64_t now, uint64_t now_rt, bool hangup) {
    c->rx_ns = 0;
    for (;;) {
        char *d = bbuf_reserve(&c->r, READ_CHUNK);
        ssize_t n = w->interval_ns ? conn_recv(c, d, READ_CHUNK) : recv(c->fd, d, READ_CHUNK, 0);
        if (n > 0) {
            c->r.len += (size_t)n;
            if (n < READ_CHUNK && !hangup) break;
            continue;
        }
        if (n == 0) {
            conn_kill(w, c, "closed by peer");
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_kill(w, c, strerror(errno));
        return;
    }
    for (;;) {
        size_t used = 0;
        wire_reply rep = { 0 };
        int rc = wire_parse(w->cfg->wire, &c->wc, c->r.data + c->rpos, c->r.len - c->rpos, &used, &rep);
        c->rpos += used;
        if (rc == 0) break;
        if (rc < 0 || c->count == 0) {
            conn_kill(w, c, rc < 0 ? "unparseable reply" : "reply without a request");
            return;
        }
        slot *s = &c->ring[c->head];
        if (!rep.ok) s->failed = true;
        s->acked += rep.acked;
        if (--s->replies_left == 0) {
            complete(w, s, now);
            /* the reply sat in the socket this long before beava-bench read it (at least:
             * the stamp is the last segment's) */
            if (c->rx_ns) {
                hist_add(&w->res.recv_lag, now_rt > c->rx_ns ? now_rt - c->rx_ns : 0);
                /* written -> reply in the socket: the server's share (plus loopback) */
                hist_add(&w->res.server_lat, c->rx_ns > s->sent_rt ? c->rx_ns - s->sent_rt : 0);
            }
            c->head = (c->head + 1) % w->cfg->depth;
            c->count--;
            w->inflight--;
        }
    }
    if (c->rpos == c->r.len) {
        bbuf_reset(&c->r);
        c->rpos = 0;
    } else if (c->rpos > (1u << 20)) {
        bbuf_consume(&c->r, c->rpos);
        c->rpos = 0;
    }
}

/* ---- thread ------------------------------------------------------------------------ */

static void reset_measure(worker *w, uint64_t now) {
    driver_result *r = &w->res;
    r->events_acked = r->events_failed = r->gets_ok = r->gets_failed = r->requests = 0;
    hist_reset(&r->push_lat);
    hist_reset(&r->get_lat);
    hist_reset(&r->send_lag);
    hist_reset(&r->server_lat);
    hist_reset(&r->recv_lag);
    w->t0 = now;
    w->t_last = now;
}

/* Closed-loop push runs measure throughput: their load threads run SCHED_BATCH, so that
 * a reply waking one of them does not preempt the server thread that sent it on a
 * shared core (a remote client never would); the kernel still gives them their fair
 * share of CPU. Open-loop (--rate) and get runs measure latency and keep the default
 * policy: a load thread there must run as soon as its timer or reply is due. */
static void load_thread_policy(const driver_cfg *cfg) {
    if (!cfg->sched_batch || cfg->rate > 0 || cfg->get_fraction > 0) return;
    struct sched_param sp = { .sched_priority = 0 };
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);   /* best effort */
}

static void *worker_main(void *arg) {
    worker *w = arg;
    const driver_cfg *cfg = w->cfg;
    struct epoll_event evs[64];
    load_thread_policy(cfg);
    pthread_mutex_lock(&w->start->mu);
    while (w->start->state == 0) pthread_cond_wait(&w->start->cv, &w->start->mu);
    int st = w->start->state;
    pthread_mutex_unlock(&w->start->mu);
    if (st != 1) return NULL;
    uint64_t start = driver_now_ns();
    uint64_t warm_end = start + (uint64_t)(cfg->warmup_s * 1e9);
    uint64_t stop = cfg->duration_s > 0 ? warm_end + (uint64_t)(cfg->duration_s * 1e9) : UINT64_MAX;
    bool measuring = cfg->warmup_s <= 0;
    w->t0 = w->t_last = start;
    w->next_due = start;
    w->sending = w->nconns > 0 && (cfg->max_ops == 0 || w->quota > 0) && (cfg->duration_s > 0 || cfg->max_ops > 0);
    uint64_t drain_deadline = 0;
    for (;;) {
        uint64_t now = driver_now_ns();
        if (!measuring && now >= warm_end) {
            reset_measure(w, now);
            measuring = true;
        }
        if (w->sending && now >= stop) w->sending = false;
        if (w->sending) {
            int64_t wall = driver_wall_ms();
            uint64_t now_rt = w->interval_ns ? driver_realtime_ns() : 0;
            for (unsigned i = 0; i < w->nconns; i++) {
                conn *c = &w->conns[(w->rr + i) % w->nconns];
                conn_fill(w, c, now, wall, now_rt);
            }
            w->rr++;
        }
        unsigned live = 0;
        for (unsigned i = 0; i < w->nconns; i++) {
            conn *c = &w->conns[i];
            if (c->dead) continue;
            live++;
            if (c->wpos < c->w.len && !c->blocked) conn_flush(w, c);
        }
        if (live == 0) break;
        if (!w->sending) {
            if (w->inflight == 0) break;
            if (!drain_deadline) drain_deadline = now + (uint64_t)(cfg->drain_timeout_s * 1e9);
            else if (now > drain_deadline) {
                w->res.lost += w->inflight;
                if (!w->res.error[0])
                    snprintf(w->res.error, sizeof w->res.error, "%llu requests unanswered after the drain timeout",
                             (unsigned long long)w->inflight);
                break;
            }
        }
        uint64_t wait_ns = 50000000ull;
        if (w->sending && stop != UINT64_MAX && stop > now && stop - now < wait_ns) wait_ns = stop - now;
        if (w->sending && w->interval_ns) {
            wait_ns = w->next_due > now + RATE_SLACK_NS ? w->next_due - now - RATE_SLACK_NS : 0;
            /* all slots busy: nothing to do until a reply comes back */
            bool free_slot = false;
            for (unsigned i = 0; i < w->nconns && !free_slot; i++)
                free_slot = !w->conns[i].dead && w->conns[i].count < cfg->depth;
            if (!free_slot) wait_ns = 10000000ull;
        }
        struct timespec ts = { .tv_sec = (time_t)(wait_ns / 1000000000ull), .tv_nsec = (long)(wait_ns % 1000000000ull) };
        int n = epoll_pwait2(w->epfd, evs, 64, &ts, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            snprintf(w->res.error, sizeof w->res.error, "epoll: %s", strerror(errno));
            break;
        }
        now = driver_now_ns();
        uint64_t now_rt = w->interval_ns ? driver_realtime_ns() : 0;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->dead) continue;
            uint32_t ev = evs[i].events;
            if ((ev & EPOLLOUT) && c->blocked) conn_flush(w, c);
            if (!c->dead && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
                conn_read(w, c, now, now_rt, (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) != 0);
        }
    }
    if (!measuring) reset_measure(w, driver_now_ns());  /* ended inside the warmup */
    return NULL;
}

/* ---- setup ------------------------------------------------------------------------- */

static void worker_free(worker *w) {
    for (unsigned i = 0; w->conns && i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->fd >= 0) close(c->fd);
        bbuf_free(&c->w);
        bbuf_free(&c->r);
        wire_conn_free(&c->wc);
        free(c->ring);
    }
    free(w->conns);
    if (w->epfd >= 0) close(w->epfd);
    evgen_free(&w->gen);
    bbuf_free(&w->scratch);
}

static int worker_setup(worker *w, const driver_cfg *cfg, unsigned id, unsigned nconns) {
    w->cfg = cfg;
    w->id = id;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    bbuf_init(&w->scratch);
    unsigned T = cfg->threads;
    if (cfg->max_ops) w->quota = cfg->max_ops / T + (id < cfg->max_ops % T ? 1 : 0);
    if (cfg->rate > 0) w->interval_ns = (uint64_t)(1e9 * T / cfg->rate);
    if (w->interval_ns == 0 && cfg->rate > 0) w->interval_ns = 1;
    keygen kg;
    keygen_init(&kg, cfg->dist, cfg->keys, cfg->alpha, id, T);
    /* event_time: one counter over all threads, interleaved */
    evgen_init(&w->gen, cfg->wire->pl, cfg->seed * 1000003ull + id, &kg, cfg->time_base + id, T);
    keygen_init(&w->getkeys, cfg->dist == KEYS_SEQ ? KEYS_UNIFORM : cfg->dist, cfg->keys, cfg->alpha, 0, 1);
    rng_seed(&w->r, cfg->seed * 7919ull + id + 1);
    hist_reset(&w->res.push_lat);
    hist_reset(&w->res.get_lat);
    hist_reset(&w->res.send_lag);
    hist_reset(&w->res.server_lat);
    hist_reset(&w->res.recv_lag);
    w->conns = xcalloc(nconns + 1, sizeof *w->conns);
    w->nconns = nconns;
    for (unsigned i = 0; i < nconns; i++) {
        conn *c = &w->conns[i];
        c->fd = -1;
        bbuf_init(&c->w);
        bbuf_init(&c->r);
        wire_conn_init(cfg->wire, &c->wc);
        c->ring = xcalloc(cfg->depth, sizeof *c->ring);
    }
    if (w->epfd < 0) {
        snprintf(w->res.error, sizeof w->res.error, "epoll_create: %s", strerror(errno));
        return -1;
    }
    for (unsigned i = 0; i < nconns; i++) {
        conn *c = &w->conns[i];
        c->fd = driver_connect(cfg->addr);
        if (c->fd < 0) {
            snprintf(w->res.error, sizeof w->res.error, "connect %s: %s", cfg->addr, strerror(errno));
            return -1;
        }
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        if (w->interval_ns) {      /* open loop: when each reply reached the socket (recv_lag) */
            int one = 1;
            setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        }
        /* edge-triggered, both directions armed once: no epoll_ctl per blocked send, and
         * the kernel does not poll every reported socket a second time on the next
         * epoll_wait (as it does for level-triggered ones) */
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            snprintf(w->res.error, sizeof w->res.error, "epoll_ctl: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void gate_open(gate *g, int state) {
    pthread_mutex_lock(&g->mu);
    g->state = state;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

int driver_run(const driver_cfg *in, driver_result *res) {
    driver_cfg cfg = *in;
    memset(res, 0, sizeof *res);
    if (cfg.conns == 0) cfg.conns = 1;
    if (cfg.depth == 0) cfg.depth = 1;
    if (cfg.threads == 0) cfg.threads = 1;
    if (cfg.threads > cfg.conns) cfg.threads = cfg.conns;
    if (cfg.drain_timeout_s <= 0) cfg.drain_timeout_s = 30;
    worker *ws = xcalloc(cfg.threads, sizeof *ws);
    for (unsigned t = 0; t < cfg.threads; t++) ws[t].epfd = -1;
    gate start = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .state = 0 };
    int rc = 0;
    unsigned started = 0;
    for (unsigned t = 0; t < cfg.threads && rc == 0; t++) {
        unsigned nc = cfg.conns / cfg.threads + (t < cfg.conns % cfg.threads ? 1 : 0);
        ws[t].start = &start;
        if (worker_setup(&ws[t], &cfg, t, nc) != 0) {
            snprintf(res->error, sizeof res->error, "%s", ws[t].res.error);
            rc = -1;
        }
    }
    for (unsigned t = 0; t < cfg.threads && rc == 0; t++) {
        if (pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]) != 0) {
            snprintf(res->error, sizeof res->error, "pthread_create failed");
            rc = -1;
        } else {
            started++;
        }
    }
    gate_open(&start, rc == 0 ? 1 : 2);
    uint64_t t0 = UINT64_MAX, t1 = 0;
    for (unsigned t = 0; t < started; t++) {
        pthread_join(ws[t].thread, NULL);
        if (rc != 0) continue;
        const driver_result *r = &ws[t].res;
        res->events_acked += r->events_acked;
        res->events_failed += r->events_failed;
        res->gets_ok += r->gets_ok;
        res->gets_failed += r->gets_failed;
        res->requests += r->requests;
        res->lost += r->lost;
        res->conn_errors += r->conn_errors;
        hist_merge(&res->push_lat, &r->push_lat);
        hist_merge(&res->get_lat, &r->get_lat);
        hist_merge(&res->send_lag, &r->send_lag);
        hist_merge(&res->server_lat, &r->server_lat);
        hist_merge(&res->recv_lag, &r->recv_lag);
        if (!res->error[0] && r->error[0]) snprintf(res->error, sizeof res->error, "%s", r->error);
        if (ws[t].t0 < t0) t0 = ws[t].t0;
        if (ws[t].t_last > t1) t1 = ws[t].t_last;
    }
    res->elapsed_s = t1 > t0 ? (double)(t1 - t0) / 1e9 : 0.0;
    pthread_mutex_destroy(&start.mu);
    pthread_cond_destroy(&start.cv);
    for (unsigned t = 0; t < cfg.threads; t++) worker_free(&ws[t]);
    free(ws);
    return rc;
}
