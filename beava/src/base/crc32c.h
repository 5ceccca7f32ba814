/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every
 * WAL record, WAL segment header and snapshot file.
 *
 * crc32c(buf, len) is the standard check value ("123456789" -> 0xE3069283): initial value
 * ~0, final xor ~0. crc32c_extend() continues a previous result, so
 * crc32c_extend(crc32c(a), b) == crc32c(a || b); pass 0 to start.
 *
 * Pure functions, no state, safe from any thread. On x86-64 the SSE4.2 crc32 instruction
 * is used when the CPU has it (checked at run time); elsewhere a slice-by-8 table walk.
 * crc32c_sw_extend() always takes the table path (tests compare the two).
 */
#ifndef BEAVA_SERVER_CRC32C_H
#define BEAVA_SERVER_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_sw_extend(uint32_t crc, const void *buf, size_t len);

static inline uint32_t crc32c(const void *buf, size_t len) { return crc32c_extend(0, buf, len); }

/* 1 when crc32c_extend() uses the hardware instruction on this CPU. */
int crc32c_hw_available(void);

#endif
