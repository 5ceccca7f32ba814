/*
 * tcp.h - the framed TCP listener (port 8081), reference-wire-api.md §7.
 *
 * Frame: [u32 length BE][u16 op BE][u8 content_type][payload], length counting op +
 * content_type + payload. Content types 0x01 JSON and 0x02 MessagePack. Responses on a
 * connection come back strictly in request order (FIFO), so clients may pipeline.
 * N I/O threads each run an epoll loop over their own connections; all of them accept
 * from the shared listening socket (EPOLLEXCLUSIVE).
 *
 * Opcodes beyond the reference: 0x0011 PUSH_SYNC really waits until the event is on
 * disk (DECISIONS §2); 0x0012 PUSH_MANY takes {"events":[{"event","body"},...]} (at most
 * TCP_PUSH_MANY_MAX) and answers op 0x0012 {"acks":[ack-or-error, ...]} in order;
 * 0x0050 AUTH takes {"token":"..."} and, when security.admin_token_file is set, is what
 * lets a connection send OP_REGISTER and OP_RESET (answered {"authenticated":true}, or an
 * `unauthorized` error frame).
 */
#ifndef BEAVA_TCP_H
#define BEAVA_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "engine.h"
#include "log.h"

#define TCP_OP_PING 0x0000
#define TCP_OP_REGISTER 0x0001
#define TCP_OP_PUSH 0x0010
#define TCP_OP_PUSH_SYNC 0x0011
#define TCP_OP_PUSH_MANY 0x0012
#define TCP_OP_GET 0x0020
#define TCP_OP_MGET 0x0021
#define TCP_OP_GET_MULTI 0x0022
#define TCP_OP_GET_RESPONSE 0x0023
#define TCP_OP_BATCH_GET 0x0024
#define TCP_OP_RESET 0x0040
#define TCP_OP_AUTH 0x0050              /* ours: {"token":T} once per connection */
#define TCP_OP_ERROR 0xFFFF
#define TCP_CT_JSON 0x01
#define TCP_CT_MSGPACK 0x02
#define TCP_PUSH_MANY_MAX 10000

typedef struct tcp_server tcp_server;

/* admin_token: NULL = no token required (it must outlive the server). */
tcp_server *tcp_start(const char *addr, engine *eng, const bv_config *cfg, const bv_log *log, const char *admin_token,
                      int threads, char *bound, size_t boundlen, char *err, size_t errlen);

/* Connection counters for /metrics. */
typedef struct tcp_stats {
    uint64_t open_connections, refused_connections, timed_out_connections, partial_frame_bytes;
} tcp_stats;
void tcp_counters(tcp_server *s, tcp_stats *out);

/* Stop accepting and reading, close every connection, join the threads, free. */
void tcp_stop(tcp_server *s);

/* Handle one complete frame (exposed for tests and the fuzzer): appends the response
 * frame(s) to out. Returns false when the connection must be closed after writing. */
bool tcp_handle_frame(engine *eng, const bv_config *cfg, const char *admin_token, bool *authed, uint16_t op,
                      uint8_t ct, const char *payload, size_t len, bv_buf *out);

#endif
