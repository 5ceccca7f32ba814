/*
 * tcp.c - framed TCP listener (see tcp.h).
 *
 * N I/O threads each run an epoll loop over their own connections. The listener wakes
 * one of them; it accepts and gives each new connection to the thread with the fewest
 * (handing it over through that thread's completion list when it is another's), so a
 * burst of connects spreads over every thread. A connection owns a
 * read buffer and a write buffer and answers its frames strictly in order:
 *
 *   - a run of consecutive OP_PUSH / OP_PUSH_SYNC frames (or one OP_PUSH_MANY) becomes
 *     one engine batch: decoded into rows, submitted with engine_push_submit(). When the
 *     engine completes it at once, the replies are written and parsing goes on. When it
 *     completes later (a shard was busy, or a sync push waits for its fsync), the
 *     connection stops reading and parsing until the engine's done callback hands it
 *     back to its I/O thread (a completion list and an eventfd; the list is also looked
 *     at between two connection events of one epoll turn, so a completed batch does not
 *     wait for the rest of the turn), which writes the replies and resumes. The I/O
 *     thread serves its other connections meanwhile: it never waits for a shard or the
 *     disk. Frames after the batch wait their turn, which is exactly FIFO pipelining.
 *   - OP_REGISTER and OP_RESET may wait (a register's reply for its record to be
 *     durable, a reset for the engine's barrier: every earlier push applied; see
 *     engine_int.h), so they run as a job on the listener's workpool (workpool.h): the
 *     connection is busy exactly as with an asynchronous batch, the job hands it back
 *     through the same completion list, and the I/O thread never blocks on them.
 *   - every other frame is answered on the spot (reads run under the owning shard's
 *     state lock).
 *
 * Limits: at most tcp.max_connections open connections (more are closed at once and
 * counted); a connection idle (nothing received, nothing in flight) for
 * tcp.idle_timeout_s is closed; a frame whose first byte arrived tcp.frame_timeout_ms ago
 * and is still incomplete closes the connection; a connection whose write buffer
 * exceeds TCP_WBUF_HIGH stops being read until the peer drains it, so a client that
 * pipelines without reading cannot grow server memory without bound; the bytes held by
 * partially received frames count against one budget for all connections of both
 * listeners (limits.partial_body_budget_bytes, membudget.h, shared with HTTP bodies): a
 * frame that would exceed it is refused with an `overloaded` error frame and the
 * connection is closed.
 *
 * With security.admin_token_file set, OP_REGISTER and OP_RESET need the connection to
 * have presented the token first with OP_AUTH (0x0050, JSON {"token":"..."}); without it
 * they are refused with an `unauthorized` error frame and nothing changes. Pushes and
 * reads stay open, as on HTTP.
 */
#include "tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "mpjson.h"
#include "rowdec.h"
#include "workpool.h"

#define TCP_WBUF_HIGH (16u << 20)
#define TCP_READ_CHUNK 65536
#define TCP_PUSH_RUN_MAX 1024                 /* push frames folded into one batch */
#define TCP_PARTIAL_FREE (64u << 10)          /* a partial frame this small is not counted */
#define TCP_TOKEN_MAX 4096
#define TCP_JOB_THREADS_MAX 64u               /* register/reset jobs running at once */
#define TCP_JOB_STACK_BYTES (2u << 20)
#define TCP_HANDOFF_BATCH 64                  /* handed-off sockets adopted per wake-up */

/* How one pushed frame is answered when the engine has not seen it. */
typedef enum { ANSWER_ENGINE = 0, ANSWER_UNSUPPORTED, ANSWER_UTF8 } tcp_answer;

/* The pushes of one batch: items, their rows (decoded by `dec` straight from the read
 * buffer, which is not touched while the batch is in flight), and how each is answered.
 * Reused batch after batch. */
typedef struct tcp_pushes {
    engine_batch batch;
    rowdec dec;
    engine_push_item *items;
    rowdec_push *rows;
    uint16_t *ops;             /* reply op per item (push runs) */
    uint8_t *answer;           /* tcp_answer per item */
    char **errs;               /* ANSWER_UTF8: the decoder's message (dec's arena) */
    size_t n, cap;
    bool many;                 /* one OP_PUSH_MANY frame */
} tcp_pushes;

typedef struct tcp_worker tcp_worker;

typedef struct tcp_conn {
    int fd;
    tcp_worker *w;
    bv_buf rbuf;
    size_t rpos;           /* parsed up to here */
    bv_buf wbuf;
    size_t wpos;           /* written up to here */
    bool close_after_write;
    bool reading;          /* EPOLLIN armed */
    uint32_t armed;        /* the epoll events registered now (no EPOLL_CTL_MOD when unchanged) */
    bool busy;             /* a batch is with the engine */
    bool dead;             /* closed by the peer while busy: free on completion */
    bool authed;           /* presented the admin token */
    size_t batch_bytes;    /* rbuf bytes the batch in flight consumed */
    size_t partial_charged;/* bytes charged to the partial-frame budget */
    int64_t last_ms;       /* last byte received or reply sent */
    int64_t frame_ms;      /* first byte of the incomplete frame at rpos (0 = none) */
    tcp_pushes pushes;
    workpool_job job;      /* a register/reset frame in flight on the workpool */
    bool job_active;
    bv_buf job_out;        /* its reply frame, written by the job */
    struct tcp_conn *prev, *next;   /* the worker's connections */
    struct tcp_conn *done_next;     /* completion list */
    bool closed;                    /* conn_close ran: later events of this turn are stale */
    struct tcp_conn *grave_next;    /* closed, freed at the end of the loop's turn */
} tcp_conn;

struct tcp_worker {
    tcp_server *srv;
    pthread_t thread;
    int epfd;
    int done_fd;               /* eventfd: batches completed */
    bool started;
    pthread_mutex_t done_mu;
    tcp_conn *done_head;
    _Atomic bool done_ready;   /* done_head is non-empty (set and cleared under done_mu) */
    tcp_conn *graveyard;       /* closed connections the current turn may still name */
    tcp_conn *conns;           /* list of open connections */
    size_t busy;               /* connections with a batch in flight */
    _Atomic size_t nconns;     /* connections it owns, handed-off ones included */
    int *handoff;              /* accepted sockets handed to this worker (done_mu) */
    size_t nhandoff, handoff_cap;
};

struct tcp_server {
    engine *eng;
    const bv_config *cfg;
    const bv_log *log;
    const char *admin_token;
    int listen_fd;
    int stop_fd;           /* eventfd */
    workpool *jobs;        /* register/reset frames (they wait for the engine) */
    int nworkers;
    tcp_worker *workers;
    _Atomic uint64_t open_conns, refused_conns, timed_out, partial_bytes;
    membudget own_budget;  /* when tcp_start got none */
    membudget *budget;     /* partial frames take their bytes from here (shared with HTTP) */
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- frames ------------------------------------------------------------------------- */

static void put_frame_header(bv_buf *out, uint16_t op, uint8_t ct, size_t payload_len) {
    uint32_t len = (uint32_t)(payload_len + 3);
    unsigned char h[7] = { (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8),
                           (unsigned char)len, (unsigned char)(op >> 8), (unsigned char)op, ct };
    bv_buf_put(out, h, sizeof h);
}

static void put_frame(bv_buf *out, uint16_t op, uint8_t ct, const char *payload, size_t len) {
    put_frame_header(out, op, ct, len);
    bv_buf_put(out, payload, len);
}

static void put_json_frame(bv_buf *out, uint16_t op, bv_buf *body) {
    put_frame(out, op, TCP_CT_JSON, body->data ? body->data : "", body->len);
}

/* A reply whose content type mirrors the request (GET family with msgpack). */
static void put_reply(bv_buf *out, uint16_t op, uint8_t ct, bv_buf *json_body) {
    if (ct != TCP_CT_MSGPACK) {
        put_json_frame(out, op, json_body);
        return;
    }
    json_t *j = json_loadb(json_body->data, json_body->len, JSON_DECODE_ANY, NULL);
    bv_buf mp;
    bv_buf_init(&mp);
    if (j) mpjson_encode(j, &mp);
    json_decref(j);
    put_frame(out, op, TCP_CT_MSGPACK, mp.data ? mp.data : "", mp.len);
    bv_buf_free(&mp);
}

static void put_error(bv_buf *out, const char *code, const char *message, const char *extra_key, long long extra) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw_member m[2];
    size_t n = 0;
    if (message) m[n++] = (jsonw_member){ .key = "message", .str = message };
    if (extra_key) m[n++] = (jsonw_member){ .key = extra_key, .num = extra };
    jsonw_error(&b, code, m, n, false, 0);
    put_json_frame(out, TCP_OP_ERROR, &b);
    bv_buf_free(&b);
}

static void put_unsupported(bv_buf *out) {
    static const char body[] = "{\"code\":\"unsupported\"}";
    put_frame(out, TCP_OP_ERROR, TCP_CT_JSON, body, sizeof body - 1);
}

static json_t *decode_payload(uint8_t ct, const char *p, size_t n, char *err, size_t errlen) {
    if (ct == TCP_CT_MSGPACK) return mpjson_decode(p, n, err, errlen);
    json_error_t je;
    json_t *j = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) snprintf(err, errlen, "%.96s at line %d column %d", je.text, je.line, je.column);
    return j;
}



/* ---- pushes ---------------------------------------------------------------------------- */

static void pushes_init(tcp_pushes *tp) {
    memset(tp, 0, sizeof *tp);
    engine_batch_init(&tp->batch);
    rowdec_init(&tp->dec);
}

static void pushes_reset(tcp_pushes *tp) {
    rowdec_reset(&tp->dec);
    tp->n = 0;
    tp->many = false;
}

static void pushes_free(tcp_pushes *tp) {
    engine_batch_free(&tp->batch);
    rowdec_free(&tp->dec);
    free(tp->items);
    free(tp->rows);
    free(tp->ops);
    free(tp->answer);
    free(tp->errs);
}

static size_t new_item(tcp_pushes *tp, uint16_t op) {
    if (tp->n == tp->cap) {
        size_t cap = tp->cap ? tp->cap * 2 : 64;
        engine_push_item *it = realloc(tp->items, cap * sizeof *it);
        rowdec_push *rows = realloc(tp->rows, cap * sizeof *rows);
        uint16_t *ops = realloc(tp->ops, cap * sizeof *ops);
        uint8_t *answer = realloc(tp->answer, cap * sizeof *answer);
        char **errs = realloc(tp->errs, cap * sizeof *errs);
        if (!it || !rows || !ops || !answer || !errs) abort();
        tp->items = it;
        tp->rows = rows;
        tp->ops = ops;
        tp->answer = answer;
        tp->errs = errs;
        tp->cap = cap;
    }
    size_t i = tp->n++;
    memset(&tp->rows[i], 0, sizeof tp->rows[i]);
    memset(&tp->items[i], 0, sizeof tp->items[i]);
    tp->ops[i] = op;
    tp->answer[i] = ANSWER_UNSUPPORTED;
    tp->errs[i] = NULL;
    return i;
}

/* Item i from its decoded push (rows[i]). */
static void item_from_row(tcp_pushes *tp, size_t i, bool sync) {
    rowdec_push *rp = &tp->rows[i];
    engine_push_item *it = &tp->items[i];
    if (!rp->event) return;                                   /* unsupported */
    it->event = rp->event;
    it->event_len = rp->event_len;
    it->data_is_object = rp->data_is_object;
    it->data_kind = rp->data_kind;
    it->has_control_char = rp->has_control_char;
    it->sync = sync;
    tp->answer[i] = ANSWER_ENGINE;
}

/* A decode failure of item i: invalid UTF-8 is named; everything else is the
 * reference's {"code":"unsupported"}. */
static void item_failed(tcp_pushes *tp, size_t i, int rc, const char *err) {
    tp->items[i].event = NULL;
    if (rc == ROWDEC_EUTF8) {
        tp->answer[i] = ANSWER_UTF8;
        size_t l = strlen(err);
        tp->errs[i] = arena_dup(&tp->dec.mem, err, l + 1);
    }
}

/* Decode one OP_PUSH / OP_PUSH_SYNC frame into the next item. */
static void add_push_frame(tcp_pushes *tp, const bv_config *cfg, uint16_t op, uint8_t ct, const char *p, size_t n) {
    char err[256];
    size_t i = new_item(tp, op);
    int rc = ct == TCP_CT_MSGPACK ? rowdec_msgpack_push(&tp->dec, p, n, &tp->rows[i], err, sizeof err)
                                  : rowdec_json_push_tcp(&tp->dec, p, n, &tp->rows[i], err, sizeof err);
    if (rc != ROWDEC_OK) {
        item_failed(tp, i, rc, err);
        return;
    }
    item_from_row(tp, i, op == TCP_OP_PUSH_SYNC || cfg->durability == DURABILITY_SYNC);
}

/* Decode an OP_PUSH_MANY frame. False: the frame as a whole is refused (error written). */
static bool add_many_frame(tcp_pushes *tp, const bv_config *cfg, uint8_t ct, const char *p, size_t n, bv_buf *out) {
    char err[256];
    rowdec_batch rb;
    int rc = ct == TCP_CT_MSGPACK ? rowdec_msgpack_push_many(&tp->dec, p, n, TCP_PUSH_MANY_MAX, &rb, err, sizeof err)
                                  : rowdec_json_push_many(&tp->dec, p, n, TCP_PUSH_MANY_MAX, &rb, err, sizeof err);
    if (rc == ROWDEC_ETOOMANY) {
        put_error(out, "batch_too_large", "OP_PUSH_MANY takes at most 10000 events", "limit", TCP_PUSH_MANY_MAX);
        return false;
    }
    if (rc == ROWDEC_EUTF8) {
        put_error(out, "invalid_utf8", err, NULL, 0);
        return false;
    }
    if (rc != ROWDEC_OK) {
        put_unsupported(out);
        return false;
    }
    tp->many = true;
    for (size_t k = 0; k < rb.n; k++) {
        size_t i = new_item(tp, TCP_OP_PUSH_MANY);
        tp->rows[i] = rb.items[k];
        item_from_row(tp, i, cfg->durability == DURABILITY_SYNC);
    }
    return true;
}

/* Point every item at its row (the arrays may have moved while they grew). */
static void pushes_seal(tcp_pushes *tp) {
    for (size_t i = 0; i < tp->n; i++) tp->items[i].row = &tp->rows[i].row;
    tp->batch.items = tp->items;
    tp->batch.n = tp->n;
}

static bool is_push_op(uint16_t op) { return op == TCP_OP_PUSH || op == TCP_OP_PUSH_SYNC; }
static bool is_content_type(uint8_t ct) { return ct == TCP_CT_JSON || ct == TCP_CT_MSGPACK; }

/* Write the replies of a completed batch. */
static void pushes_render(tcp_pushes *tp, bv_buf *out) {
    bv_buf b;
    bv_buf_init(&b);
    if (tp->many) bv_buf_puts(&b, "{\"acks\":[");
    for (size_t i = 0; i < tp->n; i++) {
        engine_push_item *it = &tp->items[i];
        if (tp->many) {
            if (i) bv_buf_putc(&b, ',');
            if (tp->answer[i] != ANSWER_ENGINE) bv_buf_puts(&b, "{\"code\":\"unsupported\"}");
            else engine_push_body(&it->res, TRANSPORT_TCP, &b);
            continue;
        }
        if (tp->answer[i] == ANSWER_UTF8) {
            put_error(out, "invalid_utf8", tp->errs[i], NULL, 0);
            continue;
        }
        if (tp->answer[i] != ANSWER_ENGINE) {
            put_unsupported(out);
            continue;
        }
        b.len = 0;
        int st = engine_push_body(&it->res, TRANSPORT_TCP, &b);
        put_json_frame(out, st == 200 ? tp->ops[i] : TCP_OP_ERROR, &b);
    }
    if (tp->many) {
        bv_buf_puts(&b, "]}");
        put_json_frame(out, TCP_OP_PUSH_MANY, &b);
    }
    bv_buf_free(&b);
}

typedef struct push_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} push_wait;

static void wait_done(engine_batch *b) {
    push_wait *w = b->owner;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Submit and wait (the frame-at-a-time entry point below). */
static void pushes_run_blocking(engine *eng, tcp_pushes *tp, bv_buf *out) {
    push_wait w = { .done = false };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pushes_seal(tp);
    tp->batch.done = wait_done;
    tp->batch.owner = &w;
    if (!engine_push_submit(eng, &tp->batch)) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pushes_render(tp, out);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static bool token_matches(const char *want, const char *got, size_t gl) {
    size_t wl = strlen(want);
    unsigned char diff = (unsigned char)(wl != gl);
    for (size_t i = 0; i < wl; i++) diff |= (unsigned char)(want[i] ^ (i < gl ? got[i] : 0));
    return diff == 0;
}

/* OP_AUTH {"token":"..."}: remembers the result for the connection. */
static void do_auth(const char *admin_token, bool *authed, uint8_t ct, const char *p, size_t n, bv_buf *out) {
    char err[128];
    json_t *req = ct == TCP_CT_JSON && n <= TCP_TOKEN_MAX ? decode_payload(ct, p, n, err, sizeof err) : NULL;
    json_t *tok = json_is_object(req) ? json_object_get(req, "token") : NULL;
    if (!json_is_string(tok)) {
        json_decref(req);
        put_error(out, "invalid_auth", "OP_AUTH takes a JSON payload {\"token\":\"...\"}", NULL, 0);
        return;
    }
    bool ok = !admin_token || token_matches(admin_token, json_string_value(tok), json_string_length(tok));
    json_decref(req);
    if (!ok) {
        *authed = false;
        put_error(out, "unauthorized", "the token does not match security.admin_token_file", NULL, 0);
        return;
    }
    *authed = true;
    static const char body[] = "{\"authenticated\":true}";
    put_frame(out, TCP_OP_AUTH, TCP_CT_JSON, body, sizeof body - 1);
}

bool tcp_handle_frame(engine *eng, const bv_config *cfg, const char *admin_token, bool *authed, uint16_t op,
                      uint8_t ct, const char *p, size_t n, bv_buf *out) {
    bv_buf b;
    bv_buf_init(&b);
    char err[256], msg[128];
    switch (op) {
    case TCP_OP_PING:
        bv_buf_printf(&b, "{\"registry_version\":%llu,\"server_version\":\"0.0.6\"}",
                      (unsigned long long)engine_registry_version(eng));
        put_json_frame(out, TCP_OP_PING, &b);
        break;
    case TCP_OP_AUTH:
        do_auth(admin_token, authed, ct, p, n, out);
        break;
    case TCP_OP_REGISTER: {
        if (admin_token && !*authed) {
            put_error(out, "unauthorized", "OP_REGISTER needs OP_AUTH with the admin token first", NULL, 0);
            break;
        }
        if (ct != TCP_CT_JSON) {
            snprintf(msg, sizeof msg, "unsupported content_type for register: 0x%02x", ct);
            put_error(out, "unsupported_content_type", msg, NULL, 0);
            break;
        }
        int st = engine_register(eng, p, n, &b);
        put_json_frame(out, st == 200 ? TCP_OP_REGISTER : TCP_OP_ERROR, &b);
        break;
    }
    case TCP_OP_PUSH:
    case TCP_OP_PUSH_SYNC:
    case TCP_OP_PUSH_MANY: {
        if (!is_content_type(ct)) {
            snprintf(msg, sizeof msg, "unsupported content_type: 0x%02x", ct);
            put_error(out, "unsupported_content_type", msg, NULL, 0);
            break;
        }
        tcp_pushes tp;
        pushes_init(&tp);
        bool ok = true;
        if (op == TCP_OP_PUSH_MANY) ok = add_many_frame(&tp, cfg, ct, p, n, out);
        else add_push_frame(&tp, cfg, op, ct, p, n);
        if (ok) pushes_run_blocking(eng, &tp, out);
        pushes_free(&tp);
        break;
    }
    case TCP_OP_GET:
    case TCP_OP_MGET:
    case TCP_OP_GET_MULTI:
    case TCP_OP_BATCH_GET:
    case TCP_OP_RESET: {
        if (ct != TCP_CT_JSON && ct != TCP_CT_MSGPACK) {
            snprintf(msg, sizeof msg, "unsupported content_type: 0x%02x", ct);
            put_error(out, "unsupported_content_type", msg, NULL, 0);
            break;
        }
        int st;
        if (op == TCP_OP_RESET && admin_token && !*authed) {
            put_error(out, "unauthorized", "OP_RESET needs OP_AUTH with the admin token first", NULL, 0);
            break;
        }
        if (op == TCP_OP_RESET) {
            st = engine_reset(eng, &b);
            put_json_frame(out, st == 200 ? TCP_OP_GET_RESPONSE : TCP_OP_ERROR, &b);
            break;
        }
        json_t *req = decode_payload(ct, p, n, err, sizeof err);
        if (op == TCP_OP_GET) st = engine_get(eng, TRANSPORT_TCP, req, req ? NULL : err, &b);
        else if (op == TCP_OP_BATCH_GET) st = engine_batch_get(eng, req, req ? NULL : err, &b);
        else st = engine_get_multi(eng, req, op == TCP_OP_MGET, &b);
        json_decref(req);
        if (st != 200) put_json_frame(out, TCP_OP_ERROR, &b);
        else if (op == TCP_OP_BATCH_GET) put_json_frame(out, TCP_OP_GET_RESPONSE, &b);
        else put_reply(out, TCP_OP_GET_RESPONSE, ct, &b);
        break;
    }
    default:
        snprintf(msg, sizeof msg, "opcode 0x%04x is not recognised by this server", op);
        put_error(out, "unknown_op", msg, "op", op);
        break;
    }
    bv_buf_free(&b);
    return true;
}


/* ---- connections -------------------------------------------------------------------- */

static void conn_free(tcp_server *s, tcp_conn *c) {
    close(c->fd);
    atomic_fetch_sub(&s->partial_bytes, c->partial_charged);
    membudget_give(s->budget, c->partial_charged);
    atomic_fetch_sub(&s->open_conns, 1);
    atomic_fetch_sub(&c->w->nconns, 1);
    bv_buf_free(&c->rbuf);
    bv_buf_free(&c->wbuf);
    pushes_free(&c->pushes);
    bv_buf_free(&c->job_out);
    free(c);
}

static void conn_unlink(tcp_worker *w, tcp_conn *c) {
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Free c at the end of the loop's turn: an event of this turn's epoll_wait may still name
 * it (drain_done runs between connection events). */
static void conn_bury(tcp_worker *w, tcp_conn *c) {
    c->grave_next = w->graveyard;
    w->graveyard = c;
}

static void free_graveyard(tcp_worker *w) {
    while (w->graveyard) {
        tcp_conn *c = w->graveyard;
        w->graveyard = c->grave_next;
        conn_free(w->srv, c);
    }
}

static void conn_close(tcp_worker *w, tcp_conn *c) {
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    conn_unlink(w, c);
    c->closed = true;
    if (c->busy) {                       /* the engine still holds its batch: free on completion */
        c->dead = true;
        return;
    }
    conn_bury(w, c);
}

/* A batch or job finished (any thread): hand the connection back to its worker. */
static void conn_hand_back(tcp_conn *c) {
    tcp_worker *w = c->w;
    pthread_mutex_lock(&w->done_mu);
    bool was_empty = w->done_head == NULL;
    c->done_next = w->done_head;
    w->done_head = c;
    atomic_store_explicit(&w->done_ready, true, memory_order_relaxed);
    pthread_mutex_unlock(&w->done_mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t wr = write(w->done_fd, &one, sizeof one);
        (void)wr;
    }
}

static void batch_done(engine_batch *b) { conn_hand_back(b->owner); }

static uint32_t frame_len(const tcp_conn *c, size_t pos);

/* On a workpool thread: the register/reset frame at rpos. The connection is busy, so
 * its I/O thread touches neither rbuf nor `authed` until the hand-back. */
static void job_run(workpool_job *job) {
    tcp_conn *c = (tcp_conn *)((char *)job - offsetof(tcp_conn, job));
    tcp_server *s = c->w->srv;
    const unsigned char *h = (const unsigned char *)c->rbuf.data + c->rpos;   /* the frame, still in rbuf */
    tcp_handle_frame(s->eng, s->cfg, s->admin_token, &c->authed, (uint16_t)(h[4] << 8 | h[5]), h[6],
                     (const char *)h + 7, frame_len(c, c->rpos) - 3, &c->job_out);
    conn_hand_back(c);
}

/* Hand the register/reset frame at rpos (payload of `len` bytes) to the workpool. False
 * when the pool cannot take it (stopping): the caller answers it on the spot. */
static bool conn_submit_job(tcp_server *s, tcp_conn *c, uint32_t len) {
    c->job.fn = job_run;
    c->job_active = true;
    c->batch_bytes = 4 + 3 + (size_t)len;
    c->busy = true;
    c->w->busy++;
    if (workpool_submit(s->jobs, &c->job)) return true;
    c->w->busy--;
    c->busy = false;
    c->job_active = false;
    c->batch_bytes = 0;
    return false;
}

/* Submit the batch in c->pushes (its frames span `bytes` from rpos). True when it
 * completed at once (replies written, rpos advanced). */
static bool conn_submit(tcp_server *s, tcp_conn *c, size_t bytes) {
    tcp_pushes *tp = &c->pushes;
    pushes_seal(tp);
    tp->batch.done = batch_done;
    tp->batch.owner = c;
    c->batch_bytes = bytes;
    c->busy = true;
    if (!engine_push_submit(s->eng, &tp->batch)) {
        c->w->busy++;
        return false;
    }
    c->busy = false;
    pushes_render(tp, &c->wbuf);
    pushes_reset(tp);
    c->rpos += bytes;
    return true;
}

static void conn_finish_batch(tcp_conn *c) {
    if (c->job_active) {
        bv_buf_put(&c->wbuf, c->job_out.data, c->job_out.len);
        c->job_out.len = 0;
        c->job_active = false;
    } else {
        pushes_render(&c->pushes, &c->wbuf);
        pushes_reset(&c->pushes);
    }
    c->rpos += c->batch_bytes;
    c->batch_bytes = 0;
    c->busy = false;
}

static uint32_t frame_len(const tcp_conn *c, size_t pos) {
    const unsigned char *h = (const unsigned char *)c->rbuf.data + pos;
    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

/* Collect the run of complete push frames at rpos (at most TCP_PUSH_RUN_MAX) into
 * c->pushes. Returns the bytes they span (0: none). */
static size_t collect_push_run(tcp_server *s, tcp_conn *c, uint32_t maxlen) {
    size_t pos = c->rpos;
    while (c->pushes.n < TCP_PUSH_RUN_MAX && c->rbuf.len - pos >= 7) {
        uint32_t len = frame_len(c, pos);
        if (len > maxlen || len < 3 || c->rbuf.len - pos < 4 + (size_t)len) break;
        const unsigned char *h = (const unsigned char *)c->rbuf.data + pos;
        uint16_t op = (uint16_t)(h[4] << 8 | h[5]);
        uint8_t ct = h[6];
        if (!is_push_op(op) || !is_content_type(ct)) break;
        add_push_frame(&c->pushes, s->cfg, op, ct, (const char *)h + 7, len - 3);
        pos += 4 + (size_t)len;
    }
    return pos - c->rpos;
}

/* The partial frame at rpos (if any): charge its declared size to the budget once.
 * False: over budget (error frame written, connection to close). */
static bool charge_partial(tcp_server *s, tcp_conn *c, uint32_t len) {
    size_t want = len > TCP_PARTIAL_FREE ? (size_t)len : 0;
    if (want <= c->partial_charged) return true;
    uint64_t extra = want - c->partial_charged;
    if (membudget_take(s->budget, extra)) {
        atomic_fetch_add(&s->partial_bytes, extra);
        c->partial_charged = want;
        return true;
    }
    put_error(&c->wbuf, "overloaded", "too many partially received frames on this server; retry shortly", NULL, 0);
    c->close_after_write = true;
    return false;
}

static void release_partial(tcp_server *s, tcp_conn *c) {
    if (!c->partial_charged) return;
    atomic_fetch_sub(&s->partial_bytes, c->partial_charged);
    membudget_give(s->budget, c->partial_charged);
    c->partial_charged = 0;
}

/* Parse and answer complete frames until a batch goes asynchronous or input runs out.
 * Returns false to close now. */
static bool conn_process(tcp_server *s, tcp_conn *c) {
    uint32_t maxlen = s->cfg->tcp_max_frame_bytes + 3u;
    while (!c->busy && !c->close_after_write && c->rbuf.len - c->rpos >= 4) {
        const unsigned char *h = (const unsigned char *)c->rbuf.data + c->rpos;
        uint32_t len = frame_len(c, c->rpos);
        if (len > maxlen) {
            char msg[128];
            snprintf(msg, sizeof msg, "declared frame length %u exceeds limit %u", len, maxlen);
            bv_buf b;
            bv_buf_init(&b);
            jsonw_member m[] = { { .key = "declared", .num = len }, { .key = "limit", .num = maxlen },
                                 { .key = "message", .str = msg } };
            jsonw_error(&b, "frame_too_large", m, 3, false, 0);
            put_json_frame(&c->wbuf, TCP_OP_ERROR, &b);
            bv_buf_free(&b);
            c->close_after_write = true;
            break;
        }
        if (len < 3) {
            /* every reply to the frames before it is already in wbuf, ahead of this */
            char msg[96];
            snprintf(msg, sizeof msg, "declared frame length %u is shorter than the 3-byte op and content type", len);
            put_error(&c->wbuf, "malformed_frame", msg, NULL, 0);
            c->close_after_write = true;
            break;
        }
        if (c->rbuf.len - c->rpos < 4 + (size_t)len) {
            if (!charge_partial(s, c, len)) break;
            if (!c->frame_ms) c->frame_ms = mono_ms();
            break;
        }
        release_partial(s, c);
        c->frame_ms = 0;
        uint16_t op = (uint16_t)(h[4] << 8 | h[5]);
        uint8_t ct = h[6];
        if (is_push_op(op) && is_content_type(ct)) {
            size_t bytes = collect_push_run(s, c, maxlen);
            if (!conn_submit(s, c, bytes)) return true;       /* answered later */
            continue;
        }
        if (op == TCP_OP_PUSH_MANY && is_content_type(ct)) {
            if (add_many_frame(&c->pushes, s->cfg, ct, (const char *)h + 7, len - 3, &c->wbuf)) {
                if (!conn_submit(s, c, 4 + (size_t)len)) return true;
            } else {
                c->rpos += 4 + (size_t)len;
            }
            continue;
        }
        if ((op == TCP_OP_REGISTER || op == TCP_OP_RESET) && conn_submit_job(s, c, len - 3))
            return true;                                      /* answered later */
        tcp_handle_frame(s->eng, s->cfg, s->admin_token, &c->authed, op, ct, (const char *)h + 7, len - 3, &c->wbuf);
        c->rpos += 4 + (size_t)len;
    }
    if (c->busy) return true;
    if (c->rpos == c->rbuf.len) {
        c->rbuf.len = 0;
        c->rpos = 0;
    } else if (c->rpos > (1u << 20)) {
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
    return true;
}

/* Write what we can. Returns false on a fatal write error. */
static bool conn_flush(tcp_conn *c) {
    while (c->wpos < c->wbuf.len) {
        ssize_t n = send(c->fd, c->wbuf.data + c->wpos, c->wbuf.len - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (errno == EINTR) continue;
            return false;
        }
        c->wpos += (size_t)n;
    }
    c->wbuf.len = 0;
    c->wpos = 0;
    return true;
}

static void conn_rearm(tcp_worker *w, tcp_conn *c) {
    bool want_write = c->wpos < c->wbuf.len;
    /* no reading while a batch is in flight: its rows point into rbuf */
    c->reading = !c->busy && !c->close_after_write && c->wbuf.len - c->wpos < TCP_WBUF_HIGH;
    struct epoll_event ev = { .events = (c->reading ? EPOLLIN : 0) | (want_write ? EPOLLOUT : 0) | EPOLLRDHUP,
                              .data.ptr = c };
    if (ev.events == c->armed) return;   /* the common case: one system call less per event */
    c->armed = ev.events;
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Flush, then decide: close, keep going, re-arm. Returns false when finished. */
static bool conn_settle(tcp_worker *w, tcp_conn *c) {
    if (!conn_flush(c)) return false;
    if (c->close_after_write && c->wpos == c->wbuf.len && !c->busy) return false;
    /* frames left unprocessed while we were throttled or busy */
    if (!c->busy && c->wbuf.len == 0 && c->rbuf.len > c->rpos) {
        if (!conn_process(w->srv, c)) return false;
        if (!conn_flush(c)) return false;
        if (c->close_after_write && c->wpos == c->wbuf.len && !c->busy) return false;
    }
    conn_rearm(w, c);
    return true;
}

/* Returns false when the connection is finished. */
static bool conn_event(tcp_worker *w, tcp_conn *c, uint32_t events) {
    tcp_server *s = w->srv;
    if (events & (EPOLLERR | EPOLLHUP)) return false;
    if ((events & EPOLLIN) && c->reading) {
        for (;;) {
            bv_buf_reserve(&c->rbuf, TCP_READ_CHUNK);
            ssize_t n = recv(c->fd, c->rbuf.data + c->rbuf.len, TCP_READ_CHUNK, 0);
            if (n > 0) {
                c->rbuf.len += (size_t)n;
                c->last_ms = mono_ms();
                if (!conn_process(s, c)) return false;
                if (c->busy || c->close_after_write || c->wbuf.len - c->wpos >= TCP_WBUF_HIGH) break;
                /* a short read drained the socket: epoll (level-triggered) reports what
                 * comes next, so no recv that would only say EAGAIN */
                if ((size_t)n < TCP_READ_CHUNK) break;
                continue;
            }
            if (n == 0) {
                conn_flush(c);
                return false;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return false;
        }
    }
    return conn_settle(w, c);
}

/* Take an accepted socket into w's loop (on w's thread; already counted in open_conns
 * and w->nconns). */
static void conn_adopt(tcp_worker *w, int fd) {
    tcp_server *s = w->srv;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tcp_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        atomic_fetch_sub(&s->open_conns, 1);
        atomic_fetch_sub(&w->nconns, 1);
        return;
    }
    c->fd = fd;
    c->w = w;
    c->reading = true;
    c->last_ms = mono_ms();
    bv_buf_init(&c->rbuf);
    bv_buf_init(&c->wbuf);
    pushes_init(&c->pushes);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
    c->armed = ev.events;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) conn_close(w, c);
}

/* The worker with the fewest connections (w itself on a tie). */
static tcp_worker *least_loaded(tcp_worker *w) {
    tcp_server *s = w->srv;
    tcp_worker *best = w;
    size_t least = atomic_load(&w->nconns);
    for (int i = 0; i < s->nworkers; i++) {
        size_t n = atomic_load(&s->workers[i].nconns);
        if (n < least) {
            least = n;
            best = &s->workers[i];
        }
    }
    return best;
}

/* Hand an accepted socket to another worker: it adopts it when it next drains its
 * completion list (woken through its eventfd). */
static void hand_off(tcp_worker *to, int fd) {
    pthread_mutex_lock(&to->done_mu);
    if (to->nhandoff == to->handoff_cap) {
        size_t cap = to->handoff_cap ? to->handoff_cap * 2 : 16;
        int *h = realloc(to->handoff, cap * sizeof *h);
        if (!h) abort();
        to->handoff = h;
        to->handoff_cap = cap;
    }
    to->handoff[to->nhandoff++] = fd;
    pthread_mutex_unlock(&to->done_mu);
    uint64_t one = 1;
    ssize_t wr = write(to->done_fd, &one, sizeof one);
    (void)wr;
}

/* Accept what is pending. Whichever worker the listener woke, each connection goes to
 * the worker with the fewest (a burst of connects would otherwise all land on the one
 * that woke first, and one I/O thread would serve every client). */
static void accept_all(tcp_worker *w) {
    tcp_server *s = w->srv;
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (atomic_load(&s->open_conns) >= s->cfg->tcp_max_connections) {
            atomic_fetch_add(&s->refused_conns, 1);
            close(fd);
            continue;
        }
        atomic_fetch_add(&s->open_conns, 1);
        tcp_worker *to = least_loaded(w);
        atomic_fetch_add(&to->nconns, 1);
        if (to == w) conn_adopt(w, fd);
        else hand_off(to, fd);
    }
}

/* Batches the engine completed: write their replies and resume their connections. */
static void drain_done(tcp_worker *w) {
    uint64_t v;
    ssize_t rd = read(w->done_fd, &v, sizeof v);
    (void)rd;
    pthread_mutex_lock(&w->done_mu);
    tcp_conn *list = NULL;             /* in completion order (done_head is newest first) */
    while (w->done_head) {
        tcp_conn *c = w->done_head;
        w->done_head = c->done_next;
        c->done_next = list;
        list = c;
    }
    atomic_store_explicit(&w->done_ready, false, memory_order_relaxed);
    int handed[TCP_HANDOFF_BATCH];
    size_t nh = 0;
    while (w->nhandoff > 0 && nh < TCP_HANDOFF_BATCH) handed[nh++] = w->handoff[--w->nhandoff];
    bool more = w->nhandoff > 0;
    pthread_mutex_unlock(&w->done_mu);
    for (size_t i = 0; i < nh; i++) conn_adopt(w, handed[i]);
    if (more) {                        /* the rest on the next turn of the loop */
        uint64_t one = 1;
        ssize_t wr = write(w->done_fd, &one, sizeof one);
        (void)wr;
    }
    while (list) {
        tcp_conn *c = list;
        list = c->done_next;
        w->busy--;
        conn_finish_batch(c);
        if (c->dead) {
            conn_bury(w, c);
            continue;
        }
        c->last_ms = mono_ms();
        if (!conn_settle(w, c)) conn_close(w, c);
    }
}

/* Once a second: idle connections and frames that take too long. */
static void sweep_timeouts(tcp_worker *w) {
    tcp_server *s = w->srv;
    int64_t now = mono_ms();
    uint64_t idle_ms = (uint64_t)s->cfg->tcp_idle_timeout_s * 1000u;
    for (tcp_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->busy) continue;
        if (now - c->last_ms > 1000 && c->pushes.dec.mem.head) {
            /* a quiet connection keeps no decoder memory (10,000 idle clients x 64 KiB) */
            rowdec_free(&c->pushes.dec);
            rowdec_init(&c->pushes.dec);
        }
        bool slow_frame = c->frame_ms && now - c->frame_ms > (int64_t)s->cfg->tcp_frame_timeout_ms;
        bool idle = idle_ms && c->wpos == c->wbuf.len && now - c->last_ms > (int64_t)idle_ms;
        if (!slow_frame && !idle) continue;
        atomic_fetch_add(&s->timed_out, 1);
        if (slow_frame) {
            put_error(&c->wbuf, "frame_timeout", "the frame did not arrive whole within tcp.frame_timeout_ms", NULL, 0);
            conn_flush(c);
        }
        conn_close(w, c);
    }
}

static void *worker_main(void *arg) {
    tcp_worker *w = arg;
    tcp_server *s = w->srv;
    pthread_setname_np(pthread_self(), "beava-tcp");   /* for top, perf sched and gdb */
    struct epoll_event evs[128];
    int64_t last_sweep = mono_ms();
    bool stopping = false;
    for (;;) {
        int n = epoll_wait(w->epfd, evs, 128, 1000);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &s->listen_fd) {
                if (!stopping) accept_all(w);
            } else if (ptr == &s->stop_fd) {
                stopping = true;
            } else if (ptr == &w->done_fd) {
                drain_done(w);
            } else {
                tcp_conn *c = ptr;
                if (c->closed) continue;            /* closed earlier in this turn */
                if (!conn_event(w, c, evs[i].events)) conn_close(w, c);
                /* batches the engine completed meanwhile (another thread applied them):
                 * answer them now, not after the rest of this turn's connections */
                if (atomic_load_explicit(&w->done_ready, memory_order_relaxed)) drain_done(w);
            }
        }
        if (stopping) {
            /* close what is idle; wait for the engine to hand back batches in flight */
            for (tcp_conn *c = w->conns, *next; c; c = next) {
                next = c->next;
                conn_close(w, c);
            }
            if (w->busy == 0) break;
        }
        int64_t now = mono_ms();
        if (now - last_sweep >= 1000) {
            last_sweep = now;
            sweep_timeouts(w);
        }
        free_graveyard(w);
    }
    free_graveyard(w);
    for (tcp_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        conn_free(s, c);
    }
    w->conns = NULL;
    return NULL;
}

void tcp_counters(tcp_server *s, tcp_stats *out) {
    out->open_connections = atomic_load(&s->open_conns);
    out->refused_connections = atomic_load(&s->refused_conns);
    out->timed_out_connections = atomic_load(&s->timed_out);
    out->partial_frame_bytes = atomic_load(&s->partial_bytes);
}

tcp_server *tcp_start(const char *addr, engine *eng, const bv_config *cfg, const bv_log *log, const char *admin_token,
                      membudget *budget, int threads, char *bound, size_t boundlen, char *err, size_t errlen) {
    tcp_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->eng = eng;
    s->cfg = cfg;
    s->log = log;
    s->admin_token = admin_token;
    membudget_init(&s->own_budget, cfg->partial_body_budget_bytes);
    s->budget = budget ? budget : &s->own_budget;
    s->stop_fd = -1;
    s->listen_fd = http_bind_listen(addr, bound, boundlen, err, errlen);
    if (s->listen_fd < 0) goto fail;
    int fl = fcntl(s->listen_fd, F_GETFL);
    if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot make the TCP listener non-blocking: %s", strerror(errno));
        goto fail;
    }
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    s->jobs = workpool_new(TCP_JOB_THREADS_MAX, TCP_JOB_STACK_BYTES);
    if (!s->jobs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->nworkers = threads < 1 ? 1 : threads;
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers) goto fail;
    for (int i = 0; i < s->nworkers; i++) {
        tcp_worker *w = &s->workers[i];
        w->srv = s;
        w->epfd = -1;
        w->done_fd = -1;
        pthread_mutex_init(&w->done_mu, NULL);
    }
    for (int i = 0; i < s->nworkers; i++) {
        tcp_worker *w = &s->workers[i];
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event lev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &s->listen_fd };
        struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &s->stop_fd };
        struct epoll_event dev = { .events = EPOLLIN, .data.ptr = &w->done_fd };
        if (w->epfd < 0 || w->done_fd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->listen_fd, &lev) != 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->stop_fd, &sev) != 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->done_fd, &dev) != 0) {
            snprintf(err, errlen, "epoll: %s", strerror(errno));
            goto fail;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start a TCP I/O thread");
            goto fail;
        }
        w->started = true;
    }
    return s;
fail:
    tcp_stop(s);
    return NULL;
}

void tcp_stop(tcp_server *s) {
    if (!s) return;
    if (s->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t wr = write(s->stop_fd, &one, sizeof one);
        (void)wr;
    }
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        tcp_worker *w = &s->workers[i];
        if (w->started) pthread_join(w->thread, NULL);
        if (w->epfd >= 0) close(w->epfd);
        if (w->done_fd >= 0) close(w->done_fd);
        for (size_t k = 0; k < w->nhandoff; k++) {   /* handed off but never adopted */
            close(w->handoff[k]);
            atomic_fetch_sub(&s->open_conns, 1);
        }
        free(w->handoff);
        pthread_mutex_destroy(&w->done_mu);
    }
    free(s->workers);
    workpool_free(s->jobs);    /* the workers waited for every job they handed out */
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->stop_fd >= 0) close(s->stop_fd);
    free(s);
}
