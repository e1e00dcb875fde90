/* zebra-stream: decode or inspect a torchzebra codec stream (docs/FORMAT.md) without Python.
 *   zebra-stream inspect FILE.zbra                  the fields of torchzebra.codec.inspect, one per line
 *   zebra-stream decode FILE.zbra -o OUT [--values]  raw little-endian levels in the stream's own width
 *                                                    (--values: float32 values), raster order (n, c, h, w)
 * Exit status: 0 done, 1 the stream is refused (the message names the zs_status), 2 usage or file error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zebra_stream.h"

#define MAX_ELEMENTS ((uint64_t)1 << 31) /* torchzebra.codec.MAX_ELEMENTS */

static const char *const FORMATS[] = {"dense", "zvc", "zebra", "zebra_zvc"};

static int usage(void) {
    fputs("usage: zebra-stream inspect FILE.zbra\n"
          "       zebra-stream decode FILE.zbra -o OUT [--values]\n", stderr);
    return 2;
}

/* The whole file, malloc'd (NULL with a message on failure). */
static uint8_t *read_file(const char *path, uint64_t *len) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long size;
    if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        *len = (uint64_t)size;
        fclose(f);
        return buf;
    }
    fprintf(stderr, "zebra-stream: cannot read %s\n", path);
    free(buf);
    if (f) fclose(f);
    return NULL;
}

static int refused(const char *path, zs_status status) {
    fprintf(stderr, "zebra-stream: %s: %s (zs_status %d)\n", path, zs_strerror(status), (int)status);
    return 1;
}

static void print_inspect(const uint8_t *buf, const zs_header *hd) {
    uint64_t i;
    printf("format: %s\nversion: %u\nshape:", FORMATS[hd->format], (unsigned)hd->version);
    if (hd->flags & ZS_BATCHED) printf(" %lu", (unsigned long)hd->n);
    printf(" %lu %lu %lu\n", (unsigned long)hd->c, (unsigned long)hd->h, (unsigned long)hd->w);
    if (hd->block_size) printf("block_size: %lu\n", (unsigned long)hd->block_size);
    else printf("block_size: map\n");
    printf("bits: %u\nsigned: %s\nper_channel: %s\nscale:", (unsigned)hd->bits,
           hd->flags & ZS_SIGNED ? "true" : "false", hd->flags & ZS_PER_CHANNEL ? "true" : "false");
    for (i = 0; i < hd->scales; i++) printf(" %.9g", (double)zs_scale(buf, (uint32_t)i));
    printf("\nheader_bytes: %llu\npayload_bytes: %llu\nmap_bytes:", (unsigned long long)hd->header_bytes,
           (unsigned long long)hd->payload_bytes);
    for (i = 0; i < hd->n; i++) printf(" %llu", (unsigned long long)zs_map_bytes(buf, hd, i));
    printf("\n");
}

/* Decode into out as little-endian bytes: levels in the stream's width, or float32 values. */
static int decode_to(const char *path, const uint8_t *buf, uint64_t len, const char *out, int values) {
    zs_header hd;
    zs_status status = zs_inspect(buf, len, &hd);
    uint64_t planes = (uint64_t)hd.n * hd.c, plane = (uint64_t)hd.h * hd.w, count, i, width;
    int32_t *levels;
    uint8_t *bytes;
    FILE *f;
    int ok;
    if (status != ZS_OK) return refused(path, status);
    if (planes > MAX_ELEMENTS || plane > MAX_ELEMENTS || planes * plane > MAX_ELEMENTS)
        return refused(path, ZS_E_TOO_MANY_ELEMENTS);
    count = planes * plane;
    width = values ? 4 : hd.bits / 8;
    levels = malloc((size_t)count * 4 + 1);
    bytes = malloc((size_t)(count * width) + 1);
    if (!levels || !bytes) {
        fprintf(stderr, "zebra-stream: out of memory for %llu values\n", (unsigned long long)count);
        free(levels);
        free(bytes);
        return 2;
    }
    status = values ? zs_decode_values(buf, len, (float *)levels, count, &hd)
                    : zs_decode_levels(buf, len, levels, count, &hd);
    for (i = 0; status == ZS_OK && i < count * width; i++) {
        uint32_t word;
        memcpy(&word, levels + i / width, 4);
        bytes[i] = (uint8_t)(word >> (8 * (i % width)));
    }
    free(levels);
    if (status != ZS_OK) {
        free(bytes);
        return refused(path, status);
    }
    f = fopen(out, "wb");
    ok = f && fwrite(bytes, 1, (size_t)(count * width), f) == (size_t)(count * width);
    ok = f && fclose(f) == 0 && ok;
    free(bytes);
    if (!ok) fprintf(stderr, "zebra-stream: cannot write %s\n", out);
    return ok ? 0 : 2;
}

int main(int argc, char **argv) {
    uint8_t *buf;
    uint64_t len;
    int rc, values = argc == 6 && strcmp(argv[5], "--values") == 0;
    if (argc == 3 && strcmp(argv[1], "inspect") == 0) {
        zs_header hd;
        zs_status status;
        if (!(buf = read_file(argv[2], &len))) return 2;
        status = zs_inspect(buf, len, &hd);
        rc = status == ZS_OK ? 0 : refused(argv[2], status);
        if (rc == 0) print_inspect(buf, &hd);
    } else if ((argc == 5 || values) && strcmp(argv[1], "decode") == 0 && strcmp(argv[3], "-o") == 0) {
        if (!(buf = read_file(argv[2], &len))) return 2;
        rc = decode_to(argv[2], buf, len, argv[4], values);
    } else {
        return usage();
    }
    free(buf);
    return rc;
}
