/* The C reference model of the torchzebra activation stream, version 1 (docs/FORMAT.md; API: zebra_stream.h). */
#include "zebra_stream.h"

typedef union { uint32_t u; int32_t i; float f; } word; /* one 32-bit value seen as bits, level or float */

/* ---- bytes, CRC and bit cursors ---- */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void wr64(uint8_t *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* CRC-32 (zlib/IEEE, reflected 0xEDB88320) of n bytes, continuing from crc (0 to start). */
static uint32_t crc32(uint32_t crc, const uint8_t *p, uint64_t n) {
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ nibble[crc & 15u];
        crc = (crc >> 4) ^ nibble[crc & 15u];
    }
    return ~crc;
}

typedef struct { uint8_t *out; const uint8_t *in; uint64_t pos; } cursor; /* a bit position in one map, LSB first */

/* The next n (<= 32) bits, least significant first. */
static uint32_t take(cursor *cur, unsigned n) {
    uint32_t v = 0;
    unsigned got = 0;
    while (got < n) {
        unsigned shift = (unsigned)(cur->pos & 7u), part = 8u - shift;
        if (part > n - got) part = n - got;
        v |= (uint32_t)((cur->in[cur->pos >> 3] >> shift) & ((1u << part) - 1u)) << got;
        got += part;
        cur->pos += part;
    }
    return v;
}

/* Write the n (<= 32) low bits of v, least significant first, into zeroed bytes. */
static void put(cursor *cur, uint32_t v, unsigned n) {
    unsigned done = 0;
    while (done < n) {
        unsigned shift = (unsigned)(cur->pos & 7u), part = 8u - shift;
        if (part > n - done) part = n - done;
        cur->out[cur->pos >> 3] |= (uint8_t)(((v >> done) & ((1u << part) - 1u)) << shift);
        done += part;
        cur->pos += part;
    }
}

/* ---- geometry ---- */

typedef struct {
    uint8_t format;
    unsigned q, is_signed;
    uint32_t c, h, w, bh, bw, gh, gw;
    uint64_t plane, elements, blocks;
} geometry;

/* a*b, or UINT64_MAX when it does not fit. */
static uint64_t mul(uint64_t a, uint64_t b) { return a && b > UINT64_MAX / a ? UINT64_MAX : a * b; }

/* N*C*H*W, or UINT64_MAX when no buffer of 32-bit values could hold it. */
static uint64_t element_count(const zs_header *hd) {
    uint64_t total = mul(mul(mul(hd->n, hd->c), hd->h), hd->w);
    return total > (UINT64_MAX >> 3) ? UINT64_MAX : total;
}

/* The layout of one map of a header whose element count is known to fit. */
static geometry geometry_of(const zs_header *hd) {
    geometry g;
    g.format = hd->format;
    g.q = hd->bits;
    g.is_signed = (hd->flags & ZS_SIGNED) != 0;
    g.c = hd->c;
    g.h = hd->h;
    g.w = hd->w;
    g.bh = hd->block_size == 0 || hd->block_size > hd->h ? hd->h : hd->block_size;
    g.bw = hd->block_size == 0 || hd->block_size > hd->w ? hd->w : hd->block_size;
    g.gh = (uint32_t)(((uint64_t)g.h + g.bh - 1) / g.bh);
    g.gw = (uint32_t)(((uint64_t)g.w + g.bw - 1) / g.bw);
    g.plane = (uint64_t)g.h * g.w;
    g.elements = hd->c * g.plane;
    g.blocks = (uint64_t)hd->c * g.gh * g.gw;
    return g;
}

typedef struct { uint64_t first; uint32_t rows, cols; } block; /* raster index of its top left, its extent */

/* Block j of a map in block-major order (channel, block row, block column). */
static block block_at(const geometry *g, uint64_t j) {
    uint64_t per_channel = (uint64_t)g->gh * g->gw, channel = j / per_channel, rest = j % per_channel;
    uint32_t row = (uint32_t)(rest / g->gw) * g->bh, col = (uint32_t)(rest % g->gw) * g->bw;
    block b;
    b.first = channel * g->plane + (uint64_t)row * g->w + col;
    b.rows = g->h - row < g->bh ? g->h - row : g->bh;
    b.cols = g->w - col < g->bw ? g->w - col : g->bw;
    return b;
}

static uint64_t ceil8(uint64_t bits) { return bits / 8 + (bits % 8 != 0); }

static int is_zero(const geometry *g, uint32_t raw) { return (g->q == 32 ? raw & 0x7FFFFFFFu : raw) == 0; }

/* The stream's bits of a level (its two's complement, or the float32's bits at 32 bits). */
static uint32_t raw_of(const geometry *g, int32_t level) {
    word v;
    v.i = level;
    return g->q == 32 ? v.u : v.u & ((1u << g->q) - 1u);
}

/* The level of q stream bits (sign-extended when signed; the float32's bits at 32 bits). */
static int32_t level_of(const geometry *g, uint32_t raw) {
    word v;
    if (g->q == 32 || !g->is_signed) {
        v.u = raw;
        return v.i;
    }
    return (int32_t)(raw ^ (1u << (g->q - 1))) - (int32_t)(1u << (g->q - 1));
}

/* The largest level of q-bit integer data (q 8 or 16): 2^q - 1 unsigned, 2^(q-1) - 1 signed (symmetric range). */
static int32_t top_level(unsigned q, unsigned is_signed) {
    return is_signed ? (int32_t)((1u << (q - 1)) - 1u) : (int32_t)((1u << q) - 1u);
}

/* ZS_OK when a level is one the encoder writes: inside the symmetric range, or a finite float. */
static zs_status check_level(const geometry *g, int32_t level) {
    word v;
    int32_t top;
    v.i = level;
    if (g->q == 32) return (v.u & 0x7F800000u) == 0x7F800000u ? ZS_E_NON_FINITE : ZS_OK;
    top = top_level(g->q, g->is_signed);
    return level > top || level < (g->is_signed ? -top : 0) ? ZS_E_LEVEL_RANGE : ZS_OK;
}

/* A positive finite scale of q-bit levels whose product with the largest level is finite too: every level
   decodes to a finite float32 value. */
static int scale_is_valid(uint8_t q, uint8_t flags, uint32_t bits) {
    word v, product;
    if (bits == 0 || bits >> 31 != 0 || (bits & 0x7F800000u) == 0x7F800000u) return 0;
    if (q != 8 && q != 16) return 1; /* float32 data has no scale to check */
    v.u = bits;
    product.f = (float)top_level(q, (flags & ZS_SIGNED) != 0) * v.f;
    return (product.u & 0x7F800000u) != 0x7F800000u;
}

/* Keep the first failing check: the smallest non-OK status. */
static void note(zs_status *worst, zs_status status) {
    if (status != ZS_OK && (*worst == ZS_OK || status < *worst)) *worst = status;
}

/* ---- header ---- */

static const char *const messages[ZS_STATUS_COUNT] = {
    "ok",
    "stream truncated: shorter than the 48-byte header",
    "not a torchzebra codec stream: it does not start with ZBRA",
    "codec stream version is not supported (this model reads version 1)",
    "stream truncated: shorter than its header and tables",
    "stream header corrupted: its CRC-32 does not match",
    "invalid header fields: format code, bits or flags",
    "invalid shape in the header: a zero dimension, or N > 1 without the batched flag",
    "the header's scale count does not fit its bits and flags",
    "stream truncated: shorter than its header, tables and payload",
    "stream has trailing bytes after its payload",
    "invalid scale: scales must be positive finite numbers, finite times the largest level",
    "the map lengths do not add up to the payload size",
    "the stream describes more values than the output buffer holds",
    "stream payload corrupted: its CRC-32 does not match the header",
    "a map is too short for its bitmap",
    "a map's bitmap describes another length than the length table says",
    "malformed stream: a value marked non-zero in the bitmap is zero",
    "malformed stream: a block marked non-zero in the block bitmap holds only zeros",
    "malformed stream: a level outside the symmetric range",
    "malformed stream: non-finite float values",
    "invalid argument: a null pointer, or a level count other than N*C*H*W",
    "the output buffer is smaller than the stream",
};

const char *zs_strerror(zs_status status) {
    return (unsigned)status < ZS_STATUS_COUNT ? messages[status] : "unknown zebra_stream status";
}

static uint32_t expected_scales(uint8_t bits, uint8_t flags, uint32_t channels) {
    return bits == 32 ? 0 : (flags & ZS_PER_CHANNEL ? channels : 1);
}

/* The format, bits and flags checks, then the shape checks, that the decoder and the encoder share. */
static zs_status check_fields(const zs_header *hd) {
    if (hd->format > ZS_ZEBRA_ZVC || (hd->bits != 8 && hd->bits != 16 && hd->bits != 32) ||
        (hd->flags & ~(ZS_SIGNED | ZS_PER_CHANNEL | ZS_BATCHED)))
        return ZS_E_FIELDS;
    if (!hd->n || !hd->c || !hd->h || !hd->w || (!(hd->flags & ZS_BATCHED) && hd->n != 1)) return ZS_E_SHAPE;
    return ZS_OK;
}

zs_status zs_inspect(const uint8_t *buf, uint64_t len, zs_header *header) {
    zs_header hd;
    uint64_t table_end, sum = 0, i;
    zs_status status;
    if (!buf || !header) return ZS_E_ARGUMENT;
    if (len < ZS_FIXED_HEADER_BYTES) return ZS_E_TRUNCATED_HEADER;
    if (buf[0] != 'Z' || buf[1] != 'B' || buf[2] != 'R' || buf[3] != 'A') return ZS_E_MAGIC;
    hd.version = buf[4];
    if (hd.version != ZS_VERSION) return ZS_E_VERSION;
    hd.format = buf[5];
    hd.bits = buf[6];
    hd.flags = buf[7];
    hd.n = rd32(buf + 8);
    hd.c = rd32(buf + 12);
    hd.h = rd32(buf + 16);
    hd.w = rd32(buf + 20);
    hd.block_size = rd32(buf + 24);
    hd.scales = rd32(buf + 28);
    hd.payload_bytes = rd64(buf + 32);
    hd.payload_crc = rd32(buf + 40);
    hd.header_crc = rd32(buf + 44);
    table_end = ZS_FIXED_HEADER_BYTES + 4 * (uint64_t)hd.scales + 8 * (uint64_t)hd.n;
    if (len < table_end) return ZS_E_TRUNCATED_TABLES;
    if (crc32(crc32(0, buf, 44), buf + ZS_FIXED_HEADER_BYTES, table_end - ZS_FIXED_HEADER_BYTES) != hd.header_crc)
        return ZS_E_HEADER_CRC;
    status = check_fields(&hd);
    if (status != ZS_OK) return status;
    if (hd.scales != expected_scales(hd.bits, hd.flags, hd.c)) return ZS_E_SCALE_COUNT;
    if (len - table_end != hd.payload_bytes) return len - table_end < hd.payload_bytes ? ZS_E_TRUNCATED : ZS_E_TRAILING;
    for (i = 0; i < hd.scales; i++)
        if (!scale_is_valid(hd.bits, hd.flags, rd32(buf + ZS_FIXED_HEADER_BYTES + 4 * i))) return ZS_E_SCALE;
    for (i = 0; i < hd.n; i++) {
        uint64_t bytes = rd64(buf + ZS_FIXED_HEADER_BYTES + 4 * (uint64_t)hd.scales + 8 * i);
        if (bytes > hd.payload_bytes - sum) return ZS_E_LENGTHS_SUM;
        sum += bytes;
    }
    if (sum != hd.payload_bytes) return ZS_E_LENGTHS_SUM;
    hd.header_bytes = table_end;
    *header = hd;
    return ZS_OK;
}

float zs_scale(const uint8_t *buf, uint32_t i) {
    word v;
    v.u = rd32(buf + ZS_FIXED_HEADER_BYTES + 4 * (uint64_t)i);
    return v.f;
}

uint64_t zs_map_bytes(const uint8_t *buf, const zs_header *header, uint64_t i) {
    return rd64(buf + ZS_FIXED_HEADER_BYTES + 4 * (uint64_t)header->scales + 8 * i);
}

/* ---- decoding ---- */

/* Elements of the blocks whose bit is set in a map's B-bit block bitmap. */
static uint64_t occupied_elements(const geometry *g, const uint8_t *map) {
    cursor bits = {0, 0, 0};
    uint64_t j, total = 0;
    bits.in = map;
    for (j = 0; j < g->blocks; j++) {
        if (take(&bits, 1)) {
            block b = block_at(g, j);
            total += (uint64_t)b.rows * b.cols;
        }
    }
    return total;
}

/* Set bits among bits [start, start + count) of a map. */
static uint64_t ones(const uint8_t *map, uint64_t start, uint64_t count) {
    cursor bits = {0, 0, 0};
    uint64_t k, total = 0;
    bits.in = map;
    bits.pos = start;
    for (k = 0; k < count; k++) total += take(&bits, 1);
    return total;
}

/* The first failing structural check of one map of `bytes` bytes: room for its bitmaps, then its length. */
static zs_status check_map(const geometry *g, const uint8_t *map, uint64_t bytes) {
    uint64_t meta = 0, values = g->elements;
    if (g->format == ZS_ZVC) {
        if (bytes < ceil8(g->elements)) return ZS_E_MAP_TOO_SHORT;
        meta = g->elements;
        values = ones(map, 0, g->elements);
    } else if (g->format != ZS_DENSE) {
        if (bytes < ceil8(g->blocks)) return ZS_E_MAP_TOO_SHORT;
        meta = g->blocks;
        values = occupied_elements(g, map);
        if (g->format == ZS_ZEBRA_ZVC) {
            meta += values;
            if (bytes < ceil8(meta)) return ZS_E_MAP_TOO_SHORT;
            values = ones(map, g->blocks, values);
        }
    }
    return bytes == ceil8(meta) + values * (g->q / 8) ? ZS_OK : ZS_E_MAP_LENGTH;
}

typedef struct {
    int32_t *levels;     /* where levels go, or NULL */
    float *values;       /* where values go, or NULL */
    const uint8_t *table; /* the stream's scales */
    int per_channel;
} sink;

/* Store the value of stream bits `raw` at raster index `at` (channel `channel`). */
static void store(const geometry *g, const sink *s, uint64_t at, uint64_t channel, uint32_t raw) {
    word v;
    if (s->levels) {
        s->levels[at] = level_of(g, raw);
        return;
    }
    v.u = raw;
    if (g->q != 32) {
        word scale;
        scale.u = rd32(s->table + 4 * (s->per_channel ? channel : 0));
        v.f = (float)level_of(g, raw) * scale.f;
    }
    s->values[at] = v.f;
}

/* Read one value, check it (ZS_E_MARKED_ZERO when a bitmap bit promised a non-zero), store it at `at`; its bits. */
static uint32_t read_value(const geometry *g, const sink *s, cursor *values, uint64_t at, int marked,
                           zs_status *worst) {
    uint32_t raw = take(values, g->q);
    if (marked && is_zero(g, raw)) note(worst, ZS_E_MARKED_ZERO);
    note(worst, check_level(g, level_of(g, raw)));
    store(g, s, at, at / g->plane % g->c, raw);
    return raw;
}

/* Decode one map (whose lengths check_map accepted) into the sink at raster offset `base`. */
static zs_status decode_map(const geometry *g, const sink *s, const uint8_t *map, uint64_t base) {
    zs_status worst = ZS_OK;
    cursor bits = {0, 0, 0}, elements = {0, 0, 0}, values = {0, 0, 0};
    uint64_t i, j;
    bits.in = elements.in = values.in = map;
    if (g->format == ZS_DENSE || g->format == ZS_ZVC) {
        values.pos = g->format == ZS_ZVC ? g->elements : 0;
        for (i = 0; i < g->elements; i++)
            if (g->format == ZS_DENSE || take(&bits, 1))
                read_value(g, s, &values, base + i, g->format == ZS_ZVC, &worst);
        return worst;
    }
    elements.pos = g->blocks;
    values.pos = g->blocks + (g->format == ZS_ZEBRA_ZVC ? occupied_elements(g, map) : 0);
    for (j = 0; j < g->blocks; j++) {
        block b;
        uint32_t r, k;
        int any = 0;
        if (!take(&bits, 1)) continue;
        b = block_at(g, j);
        for (r = 0; r < b.rows; r++) {
            for (k = 0; k < b.cols; k++) {
                uint64_t at = base + b.first + (uint64_t)r * g->w + k;
                if (g->format == ZS_ZEBRA) {
                    any |= !is_zero(g, read_value(g, s, &values, at, 0, &worst));
                } else if (take(&elements, 1)) {
                    any = 1;
                    read_value(g, s, &values, at, 1, &worst);
                }
            }
        }
        if (!any) note(&worst, ZS_E_EMPTY_BLOCK);
    }
    return worst;
}

/* Everything zs_decode_levels and zs_decode_values share: checks in the reference decoder's order, then values. */
static zs_status decode(const uint8_t *buf, uint64_t len, sink *s, uint64_t capacity, zs_header *header) {
    zs_header hd;
    geometry g;
    zs_status worst = ZS_OK;
    const uint8_t *payload;
    uint64_t total, i, offset;
    zs_status status = zs_inspect(buf, len, &hd);
    if (status != ZS_OK) return status;
    if (header) *header = hd;
    total = element_count(&hd);
    if (total > capacity) return ZS_E_TOO_MANY_ELEMENTS;
    payload = buf + hd.header_bytes;
    if (crc32(0, payload, hd.payload_bytes) != hd.payload_crc) return ZS_E_PAYLOAD_CRC;
    g = geometry_of(&hd);
    s->table = buf + ZS_FIXED_HEADER_BYTES;
    s->per_channel = hd.scales > 1;
    for (i = 0; i < total; i++) {
        if (s->levels) s->levels[i] = 0;
        else s->values[i] = 0.0f;
    }
    for (i = 0, offset = 0; i < hd.n; offset += zs_map_bytes(buf, &hd, i), i++)
        note(&worst, check_map(&g, payload + offset, zs_map_bytes(buf, &hd, i)));
    if (worst != ZS_OK) return worst;
    for (i = 0, offset = 0; i < hd.n; offset += zs_map_bytes(buf, &hd, i), i++)
        note(&worst, decode_map(&g, s, payload + offset, i * g.elements));
    return worst;
}

zs_status zs_decode_levels(const uint8_t *buf, uint64_t len, int32_t *levels, uint64_t capacity,
                           zs_header *header) {
    sink s = {0, 0, 0, 0};
    if (!levels) return ZS_E_ARGUMENT;
    s.levels = levels;
    return decode(buf, len, &s, capacity, header);
}

zs_status zs_decode_values(const uint8_t *buf, uint64_t len, float *values, uint64_t capacity, zs_header *header) {
    sink s = {0, 0, 0, 0};
    if (!values) return ZS_E_ARGUMENT;
    s.values = values;
    return decode(buf, len, &s, capacity, header);
}

/* ---- encoding ---- */

/* Whether a block of a map's levels holds a non-zero. */
static int occupied(const geometry *g, const int32_t *levels, block b) {
    uint32_t r, k;
    for (r = 0; r < b.rows; r++)
        for (k = 0; k < b.cols; k++)
            if (!is_zero(g, raw_of(g, levels[b.first + (uint64_t)r * g->w + k]))) return 1;
    return 0;
}

/* Metadata bits and value count of one map's levels in the format. */
static void extent(const geometry *g, const int32_t *levels, uint64_t *meta, uint64_t *values) {
    uint64_t i, j, nonzero = 0, kept = 0;
    for (i = 0; i < g->elements; i++) nonzero += !is_zero(g, raw_of(g, levels[i]));
    if (g->format == ZS_ZEBRA || g->format == ZS_ZEBRA_ZVC) {
        for (j = 0; j < g->blocks; j++) {
            block b = block_at(g, j);
            if (occupied(g, levels, b)) kept += (uint64_t)b.rows * b.cols;
        }
    }
    *meta = g->format == ZS_DENSE ? 0
            : g->format == ZS_ZVC ? g->elements
                                  : g->blocks + (g->format == ZS_ZEBRA_ZVC ? kept : 0);
    *values = g->format == ZS_DENSE ? g->elements : g->format == ZS_ZEBRA ? kept : nonzero;
}

/* Write one map's stream into zeroed bytes. */
static void write_map(const geometry *g, const int32_t *levels, uint8_t *map) {
    cursor bits = {0, 0, 0}, elements = {0, 0, 0}, values = {0, 0, 0};
    uint64_t i, j, meta, count;
    bits.out = elements.out = values.out = map;
    extent(g, levels, &meta, &count);
    if (g->format == ZS_DENSE || g->format == ZS_ZVC) {
        values.pos = meta;
        for (i = 0; i < g->elements; i++) {
            uint32_t raw = raw_of(g, levels[i]);
            if (g->format == ZS_ZVC) put(&bits, !is_zero(g, raw), 1);
            if (g->format == ZS_DENSE || !is_zero(g, raw)) put(&values, raw, g->q);
        }
        return;
    }
    elements.pos = g->blocks;
    values.pos = meta;
    for (j = 0; j < g->blocks; j++) {
        block b = block_at(g, j);
        uint32_t r, k;
        int any = occupied(g, levels, b);
        put(&bits, (uint32_t)any, 1);
        for (r = 0; any && r < b.rows; r++) {
            for (k = 0; k < b.cols; k++) {
                uint32_t raw = raw_of(g, levels[b.first + (uint64_t)r * g->w + k]);
                if (g->format == ZS_ZEBRA_ZVC) put(&elements, !is_zero(g, raw), 1);
                if (g->format == ZS_ZEBRA || !is_zero(g, raw)) put(&values, raw, g->q);
            }
        }
    }
}

static uint64_t map_size(const geometry *g, const int32_t *levels) {
    uint64_t meta, values;
    extent(g, levels, &meta, &values);
    return ceil8(meta) + values * (g->q / 8);
}

zs_status zs_encode(const zs_header *spec, const int32_t *levels, uint64_t count, const float *scales,
                    uint8_t *out, uint64_t capacity, uint64_t *size) {
    zs_header hd;
    geometry g;
    uint64_t i, table_end, payload = 0;
    uint8_t *tables;
    zs_status status;
    if (!spec || !levels || !size || (capacity && !out)) return ZS_E_ARGUMENT;
    hd = *spec;
    status = check_fields(&hd);
    if (status != ZS_OK) return status;
    hd.scales = expected_scales(hd.bits, hd.flags, hd.c);
    if ((hd.scales && !scales) || element_count(&hd) != count) return ZS_E_ARGUMENT;
    for (i = 0; i < hd.scales; i++) {
        word v;
        v.f = scales[i];
        if (!scale_is_valid(hd.bits, hd.flags, v.u)) return ZS_E_SCALE;
    }
    g = geometry_of(&hd);
    for (i = 0; i < count; i++) {
        status = check_level(&g, levels[i]);
        if (status != ZS_OK) return status;
    }
    for (i = 0; i < hd.n; i++) payload += map_size(&g, levels + i * g.elements);
    table_end = ZS_FIXED_HEADER_BYTES + 4 * (uint64_t)hd.scales + 8 * (uint64_t)hd.n;
    *size = table_end + payload;
    if (capacity < *size) return ZS_E_OUTPUT_TOO_SMALL;
    tables = out + ZS_FIXED_HEADER_BYTES;
    for (i = table_end; i < *size; i++) out[i] = 0;
    for (i = 0, payload = 0; i < hd.n; i++) {
        uint64_t bytes = map_size(&g, levels + i * g.elements);
        write_map(&g, levels + i * g.elements, out + table_end + payload);
        wr64(tables + 4 * (uint64_t)hd.scales + 8 * i, bytes);
        payload += bytes;
    }
    for (i = 0; i < hd.scales; i++) {
        word v;
        v.f = scales[i];
        wr32(tables + 4 * i, v.u);
    }
    out[0] = 'Z';
    out[1] = 'B';
    out[2] = 'R';
    out[3] = 'A';
    out[4] = ZS_VERSION;
    out[5] = hd.format;
    out[6] = hd.bits;
    out[7] = hd.flags;
    wr32(out + 8, hd.n);
    wr32(out + 12, hd.c);
    wr32(out + 16, hd.h);
    wr32(out + 20, hd.w);
    wr32(out + 24, hd.block_size);
    wr32(out + 28, hd.scales);
    wr64(out + 32, payload);
    wr32(out + 40, crc32(0, out + table_end, payload));
    wr32(out + 44, crc32(crc32(0, out, 44), tables, table_end - ZS_FIXED_HEADER_BYTES));
    return ZS_OK;
}
