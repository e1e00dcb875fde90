/* The C reference model of the torchzebra activation stream, version 1 (docs/FORMAT.md): decode a stream
 * into levels or float32 values, encode levels into a stream. C99, no dependencies, no allocation, no global
 * state, no I/O: every function works on buffers its caller owns, so a DPI-C import or a bare-metal host can
 * call it. Every refusal of torchzebra.codec.decode is a distinct zs_status; zs_strerror says what it means. */
#ifndef ZEBRA_STREAM_H
#define ZEBRA_STREAM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { ZS_VERSION = 1, ZS_FIXED_HEADER_BYTES = 48 };
enum { ZS_DENSE = 0, ZS_ZVC = 1, ZS_ZEBRA = 2, ZS_ZEBRA_ZVC = 3 };      /* the header's format byte */
enum { ZS_SIGNED = 1, ZS_PER_CHANNEL = 2, ZS_BATCHED = 4 };             /* the header's flag bits */

/* Results, numbered in the order the decoder checks (the first failing check is the one returned, as in
 * torchzebra.codec.decode; ZS_E_ARGUMENT and ZS_E_OUTPUT_TOO_SMALL come from the caller, not the stream). */
typedef enum {
    ZS_OK = 0,
    ZS_E_TRUNCATED_HEADER = 1,   /* fewer bytes than the 48-byte fixed header */
    ZS_E_MAGIC = 2,              /* does not start with "ZBRA" */
    ZS_E_VERSION = 3,            /* a version other than 1 */
    ZS_E_TRUNCATED_TABLES = 4,   /* fewer bytes than the header and its scale and length tables */
    ZS_E_HEADER_CRC = 5,         /* the CRC-32 of the header and tables does not match */
    ZS_E_FIELDS = 6,             /* unknown format code, bits other than 8/16/32, or unknown flag bits */
    ZS_E_SHAPE = 7,              /* a zero dimension, or N > 1 without the batched flag */
    ZS_E_SCALE_COUNT = 8,        /* S is not 0 at 32 bits, C per channel, 1 otherwise */
    ZS_E_TRUNCATED = 9,          /* fewer bytes than header, tables and payload */
    ZS_E_TRAILING = 10,          /* more bytes than header, tables and payload */
    ZS_E_SCALE = 11,             /* a scale that is not a positive finite number, or overflows times the top level */
    ZS_E_LENGTHS_SUM = 12,       /* the map lengths do not add up to the payload size */
    ZS_E_TOO_MANY_ELEMENTS = 13, /* N*C*H*W is more than the caller's output buffer holds */
    ZS_E_PAYLOAD_CRC = 14,       /* the CRC-32 of the payload does not match */
    ZS_E_MAP_TOO_SHORT = 15,     /* a map's length cannot hold its bitmap(s) */
    ZS_E_MAP_LENGTH = 16,        /* a map's bitmaps describe another length than the length table */
    ZS_E_MARKED_ZERO = 17,       /* an element bitmap bit is set over a zero value */
    ZS_E_EMPTY_BLOCK = 18,       /* a block marked non-zero in the block bitmap holds only zeros */
    ZS_E_LEVEL_RANGE = 19,       /* a signed level of -2^(q-1) (outside the symmetric range) */
    ZS_E_NON_FINITE = 20,        /* a 32-bit value that is NaN or infinite */
    ZS_E_ARGUMENT = 21,          /* a null pointer, or a level count other than N*C*H*W */
    ZS_E_OUTPUT_TOO_SMALL = 22,  /* the encoder's output buffer is smaller than the stream */
    ZS_STATUS_COUNT = 23
} zs_status;

/* The fixed header of a stream. zs_encode reads format, bits, flags, n, c, h, w and block_size (0 = "map");
 * zs_inspect and the decoders fill every field once the header and tables pass their checks. */
typedef struct {
    uint8_t version, format, bits, flags;
    uint32_t n, c, h, w, block_size, scales;
    uint64_t payload_bytes;
    uint32_t payload_crc, header_crc;
    uint64_t header_bytes; /* 48 + 4*scales + 8*n: where the payload starts */
} zs_header;

/* What a status means, in one line (never NULL; unknown codes get a line that says so). */
const char *zs_strerror(zs_status status);

/* Check the header and tables of the len-byte stream buf (everything but the payload) and fill *header. */
zs_status zs_inspect(const uint8_t *buf, uint64_t len, zs_header *header);

/* Scale i (i < header->scales) and the byte length of map i (i < header->n) of a stream zs_inspect accepted. */
float zs_scale(const uint8_t *buf, uint32_t i);
uint64_t zs_map_bytes(const uint8_t *buf, const zs_header *header, uint64_t i);

/* Decode every level, raster order (n, c, h, w), into levels[0 .. N*C*H*W-1]: 8/16-bit levels as integers,
 * 32-bit values as the bits of the float32. capacity: how many int32s levels holds (more is refused). */
zs_status zs_decode_levels(const uint8_t *buf, uint64_t len, int32_t *levels, uint64_t capacity,
                           zs_header *header);

/* Decode every value, raster order, into values[0 .. N*C*H*W-1]: level * scale in float32 (32 bits: as stored). */
zs_status zs_decode_values(const uint8_t *buf, uint64_t len, float *values, uint64_t capacity, zs_header *header);

/* Encode count = N*C*H*W levels (raster order, as zs_decode_levels gives them) with spec's format, bits, flags,
 * shape and block size, and its scales (S of them: 0 at 32 bits, C per channel, else 1), into out. *size is the
 * stream's byte length whenever the arguments are valid, so a call with capacity 0 sizes the buffer. */
zs_status zs_encode(const zs_header *spec, const int32_t *levels, uint64_t count, const float *scales,
                    uint8_t *out, uint64_t capacity, uint64_t *size);

#ifdef __cplusplus
}
#endif

#endif
