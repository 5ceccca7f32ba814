/*
 * port_guard.c — per-request deadlines on the control port (see port_guard.h).
 *
 * The list is a doubly linked list of live connections; the sweeper walks it once per
 * PORT_GUARD_TICK_MS. With the port's connection limit (trigger.max_connections) the walk
 * is short; a timer wheel would do better for thousands, which the limit rules out.
 */
#include "port_guard.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define PORT_GUARD_TICK_MS 250

struct guarded {
    struct guarded *prev, *next;
    struct port_guard *g;
    int fd;
    int64_t since_ms; /* connection opened or previous request done (monotonic) */
    bool read;        /* the current request is fully read */
    bool cut;         /* shut down by the sweeper */
};

struct port_guard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    int64_t deadline_ms;
    struct guarded *head;
};

static void *sweeper(void *arg) {
    struct port_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        int64_t now = ctl_mono_ms();
        for (struct guarded *x = g->head; x; x = x->next) {
            if (!x->read && !x->cut && now - x->since_ms > g->deadline_ms) {
                shutdown(x->fd, SHUT_RDWR);
                x->cut = true;
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += PORT_GUARD_TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

struct port_guard *port_guard_new(int64_t deadline_ms) {
    struct port_guard *g = ctl_calloc(1, sizeof *g);
    g->deadline_ms = deadline_ms;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->thread, NULL, sweeper, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return NULL;
    }
    return g;
}

void port_guard_free(struct port_guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    while (g->head) { /* only if the daemon was not stopped first */
        struct guarded *x = g->head;
        g->head = x->next;
        free(x);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

void port_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
    struct port_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct guarded *x = ctl_calloc(1, sizeof *x);
        x->g = g;
        x->fd = ci ? ci->connect_fd : -1;
        x->since_ms = ctl_mono_ms();
        x->read = x->fd < 0; /* no descriptor: nothing the sweeper could do */
        pthread_mutex_lock(&g->mu);
        x->next = g->head;
        if (g->head) g->head->prev = x;
        g->head = x;
        pthread_mutex_unlock(&g->mu);
        *socket_context = x;
        return;
    }
    struct guarded *x = *socket_context;
    if (!x) return;
    pthread_mutex_lock(&g->mu);
    if (x->prev) x->prev->next = x->next;
    else g->head = x->next;
    if (x->next) x->next->prev = x->prev;
    pthread_mutex_unlock(&g->mu);
    free(x);
    *socket_context = NULL;
}

static struct guarded *guarded_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void port_guard_request_read(struct MHD_Connection *c) {
    struct guarded *x = guarded_of(c);
    if (!x) return;
    pthread_mutex_lock(&x->g->mu);
    x->read = true;
    pthread_mutex_unlock(&x->g->mu);
}

void port_guard_request_done(struct MHD_Connection *c) {
    struct guarded *x = guarded_of(c);
    if (!x) return;
    pthread_mutex_lock(&x->g->mu);
    x->read = false;
    x->since_ms = ctl_mono_ms();
    pthread_mutex_unlock(&x->g->mu);
}
