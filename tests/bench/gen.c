/*
 * gen.c - random numbers, key distributions and event bodies (see gen.h).
 *
 * RNG: xoshiro256** seeded through splitmix64. Zipf: the rejection-inversion sampler
 * of Hörmann & Derflinger (as in Apache Commons RNG), O(1) per draw with no table, so
 * a 10M-key zipf costs nothing to set up. Text is formatted by hand (no printf) because
 * the encoders run once per event on the client's hot path.
 */
#include "gen.h"

#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---- rng ---------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rng_below(rng *r, uint64_t n) {
    /* Lemire's multiply-shift; the bias is < n / 2^64, irrelevant here. */
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

double rng_double(rng *r) {
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- zipf (rejection inversion) ----------------------------------------------------- */

static double helper1(double x) {
    return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

static double helper2(double x) {
    return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

static double zh(const keygen *k, double x) {
    return exp(-k->alpha * log(x));
}

static double zh_integral(const keygen *k, double x) {
    double lx = log(x);
    return helper2((1.0 - k->alpha) * lx) * lx;
}

static double zh_integral_inv(const keygen *k, double x) {
    double t = x * (1.0 - k->alpha);
    if (t < -1.0) t = -1.0;
    return exp(helper1(t) * x);
}

void keygen_init(keygen *k, key_dist dist, uint64_t n, double alpha, uint64_t seq_start, uint64_t seq_step) {
    memset(k, 0, sizeof *k);
    k->dist = dist;
    k->n = n ? n : 1;
    k->alpha = alpha > 0 ? alpha : 0.99;
    k->seq_next = seq_start;
    k->seq_step = seq_step ? seq_step : 1;
    if (dist == KEYS_ZIPF) {
        k->h_x1 = zh_integral(k, 1.5) - 1.0;
        k->h_n = zh_integral(k, (double)k->n + 0.5);
        k->s_term = 2.0 - zh_integral_inv(k, zh_integral(k, 2.5) - zh(k, 2.0));
    }
}

uint64_t keygen_next(keygen *k, rng *r) {
    switch (k->dist) {
    case KEYS_SEQ: {
        uint64_t v = k->seq_next;
        k->seq_next += k->seq_step;
        return v;
    }
    case KEYS_ZIPF:
        for (;;) {
            double u = k->h_n + rng_double(r) * (k->h_x1 - k->h_n);
            double x = zh_integral_inv(k, u);
            double kk = floor(x + 0.5);
            if (kk < 1.0) kk = 1.0;
            else if (kk > (double)k->n) kk = (double)k->n;
            if (kk - x <= k->s_term || u >= zh_integral(k, kk + 0.5) - zh(k, kk))
                return (uint64_t)kk - 1;
        }
    case KEYS_UNIFORM:
    default:
        return rng_below(r, k->n);
    }
}

/* ---- events ------------------------------------------------------------------------- */

void evgen_init(evgen *g, const pipeline *pl, uint64_t seed, const keygen *kg, int64_t time_start, int64_t time_step) {
    memset(g, 0, sizeof *g);
    g->pl = pl;
    rng_seed(&g->r, seed);
    g->kg = *kg;
    g->next_time = time_start;
    g->time_step = time_step ? time_step : 1;
    g->ev.vals = xcalloc(pl->nextra + 1, sizeof *g->ev.vals);
}

void evgen_free(evgen *g) {
    free(g->ev.vals);
    g->ev.vals = NULL;
}

const event *evgen_next(evgen *g) {
    event *e = &g->ev;
    e->key = keygen_next(&g->kg, &g->r);
    e->event_time = g->next_time;
    g->next_time += g->time_step;
    for (size_t i = 0; i < g->pl->nextra; i++) {
        switch (g->pl->extra[i].type) {
        case FT_F64: e->vals[i].milli = (uint32_t)rng_below(&g->r, 1000000); break;
        case FT_I64: e->vals[i].i = (int64_t)rng_below(&g->r, 1000000); break;
        case FT_STR: e->vals[i].s = (uint32_t)rng_below(&g->r, 1000); break;
        }
    }
    return e;
}

/* ---- text --------------------------------------------------------------------------- */

static int u64_text(uint64_t v, char *dst) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
    return n;
}

static int i64_text(int64_t v, char *dst) {
    if (v < 0) {
        dst[0] = '-';
        return 1 + u64_text((uint64_t)0 - (uint64_t)v, dst + 1);
    }
    return u64_text((uint64_t)v, dst);
}

int gen_key_text(uint64_t key, char *dst) {
    dst[0] = 'k';
    if (key >= 100000000ull) return 1 + u64_text(key, dst + 1);
    for (int i = 8; i >= 1; i--) {
        dst[i] = (char)('0' + key % 10);
        key /= 10;
    }
    return 9;
}

static int milli_text(uint32_t m, char *dst) {
    int n = u64_text(m / 1000, dst);
    uint32_t f = m % 1000;
    dst[n++] = '.';
    dst[n++] = (char)('0' + f / 100);
    dst[n++] = (char)('0' + f / 10 % 10);
    dst[n++] = (char)('0' + f % 10);
    return n;
}

int gen_val_text(const pipeline *pl, const event *e, int i, char *dst, int cap) {
    if (cap < 24) return 0;
    switch (pl->extra[i].type) {
    case FT_F64: return milli_text(e->vals[i].milli, dst);
    case FT_I64: return i64_text(e->vals[i].i, dst);
    case FT_STR: dst[0] = 's'; return 1 + u64_text(e->vals[i].s, dst + 1);
    }
    return 0;
}

double gen_val_f64(const pipeline *pl, const event *e, int i) {
    switch (pl->extra[i].type) {
    case FT_F64: return e->vals[i].milli / 1000.0;
    case FT_I64: return (double)e->vals[i].i;
    case FT_STR: return 0.0;
    }
    return 0.0;
}

void gen_body_json(const pipeline *pl, const event *e, bbuf *out) {
    /* worst case per field: name + 24 digits + punctuation */
    size_t need = 64 + strlen(pl->key_json);
    for (size_t i = 0; i < pl->nextra; i++) need += strlen(pl->extra[i].json_name) + 32;
    char *d = bbuf_reserve(out, need);
    char *p = d;
    *p++ = '{';
    size_t kl = strlen(pl->key_json);
    memcpy(p, pl->key_json, kl);
    p += kl;
    *p++ = ':';
    *p++ = '"';
    p += gen_key_text(e->key, p);
    memcpy(p, "\",\"event_time\":", 15);
    p += 15;
    p += i64_text(e->event_time, p);
    for (size_t i = 0; i < pl->nextra; i++) {
        *p++ = ',';
        size_t nl = strlen(pl->extra[i].json_name);
        memcpy(p, pl->extra[i].json_name, nl);
        p += nl;
        *p++ = ':';
        if (pl->extra[i].type == FT_STR) *p++ = '"';
        p += gen_val_text(pl, e, (int)i, p, 32);
        if (pl->extra[i].type == FT_STR) *p++ = '"';
    }
    *p++ = '}';
    out->len += (size_t)(p - d);
    out->data[out->len] = '\0';
}

static int pk_write(void *data, const char *buf, size_t len) {
    bbuf_put((bbuf *)data, buf, len);
    return 0;
}

void gen_packer_init(struct msgpack_packer *pk, bbuf *out) {
    msgpack_packer_init(pk, out, pk_write);
}

static void pk_cstr(msgpack_packer *pk, const char *s, size_t n) {
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void gen_body_msgpack(const pipeline *pl, const event *e, bbuf *out) {
    msgpack_packer pk;
    gen_packer_init(&pk, out);
    char t[32];
    msgpack_pack_map(&pk, 2 + pl->nextra);
    pk_cstr(&pk, pl->key_field, strlen(pl->key_field));
    pk_cstr(&pk, t, (size_t)gen_key_text(e->key, t));
    pk_cstr(&pk, "event_time", 10);
    msgpack_pack_int64(&pk, e->event_time);
    for (size_t i = 0; i < pl->nextra; i++) {
        pk_cstr(&pk, pl->extra[i].name, strlen(pl->extra[i].name));
        switch (pl->extra[i].type) {
        case FT_F64: msgpack_pack_double(&pk, e->vals[i].milli / 1000.0); break;
        case FT_I64: msgpack_pack_int64(&pk, e->vals[i].i); break;
        case FT_STR: pk_cstr(&pk, t, (size_t)gen_val_text(pl, e, (int)i, t, sizeof t)); break;
        }
    }
}
