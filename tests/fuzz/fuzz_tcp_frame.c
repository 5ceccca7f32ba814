/*
 * fuzz_tcp_frame.c - libFuzzer target for the TCP request path: the input is split into
 * frames as the listener would (u32 length, u16 op, u8 content type, payload) and each is
 * handled against an engine with a small registered pipeline, so the JSON and msgpack
 * decoders, push validation, gets and registers all see hostile bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "engine.h"
#include "server/tcp.h"

static const char pipeline[] =
    "{\"nodes\":[{\"kind\":\"event\",\"name\":\"E\",\"schema\":{\"fields\":{\"k\":\"str\",\"v\":\"f64\"},"
    "\"optional_fields\":[\"o\"]},\"dedupe_key\":\"o\"},"
    "{\"kind\":\"derivation\",\"name\":\"T\",\"output_kind\":\"table\",\"upstreams\":[\"E\"],"
    "\"ops\":[{\"op\":\"group_by\",\"keys\":[\"k\"],\"agg\":{\"c\":{\"op\":\"count\",\"params\":{\"window\":\"1h\"}},"
    "\"q\":{\"op\":\"quantile\",\"params\":{\"field\":\"v\",\"window\":\"1h\"}},"
    "\"t\":{\"op\":\"top_k\",\"params\":{\"field\":\"k\",\"k\":3}}}}],\"table_primary_key\":[\"k\"]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bv_config cfg;
    config_defaults(&cfg);
    cfg.test_mode = true;
    engine_options eo = { .test_mode = true, .memory_gov_enforce = true };
    engine *eng = engine_new(&eo);
    bv_buf out;
    bv_buf_init(&out);
    engine_register(eng, pipeline, sizeof pipeline - 1, &out);
    size_t off = 0;
    while (size - off >= 7) {
        uint32_t len = (uint32_t)data[off] << 24 | (uint32_t)data[off + 1] << 16 | (uint32_t)data[off + 2] << 8 | data[off + 3];
        if (len < 3 || len > size - off - 4) break;
        uint16_t op = (uint16_t)(data[off + 4] << 8 | data[off + 5]);
        uint8_t ct = data[off + 6];
        out.len = 0;
        bool authed = false;
        tcp_handle_frame(eng, &cfg, NULL, &authed, op, ct, (const char *)data + off + 7, len - 3, &out);
        off += 4 + (size_t)len;
    }
    bv_buf_free(&out);
    engine_free(eng);
    config_free(&cfg);
    return 0;
}
