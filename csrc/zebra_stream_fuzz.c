/* The test suite's fuzz driver (tests/test_c_codec.py), built with the sanitizers: decodes every record of a
 * file of streams (u32 length, then the bytes) into at most CAPACITY values and writes, per record, the int32
 * zs_status, the u64 value count and the float32 values (count 0 when refused), in the host's byte order.
 *   zebra-stream-fuzz RECORDS OUT CAPACITY */
#include <stdio.h>
#include <stdlib.h>

#include "zebra_stream.h"

int main(int argc, char **argv) {
    FILE *in, *out;
    unsigned long capacity;
    float *values;
    uint8_t *stream;
    uint8_t prefix[4];
    if (argc != 4 || !(in = fopen(argv[1], "rb")) || !(out = fopen(argv[2], "wb"))) return 2;
    capacity = strtoul(argv[3], NULL, 10);
    values = malloc(capacity * sizeof(float) + 1);
    while (values && fread(prefix, 1, 4, in) == 4) {
        uint32_t len = (uint32_t)prefix[0] | (uint32_t)prefix[1] << 8 | (uint32_t)prefix[2] << 16 |
                       (uint32_t)prefix[3] << 24;
        zs_header header;
        int32_t status;
        uint64_t count = 0;
        if (!(stream = malloc(len + 1u)) || fread(stream, 1, len, in) != len) return 2;
        status = (int32_t)zs_decode_values(stream, len, values, capacity, &header);
        if (status == ZS_OK) count = (uint64_t)header.n * header.c * header.h * header.w;
        fwrite(&status, sizeof status, 1, out);
        fwrite(&count, sizeof count, 1, out);
        fwrite(values, sizeof(float), (size_t)count, out);
        free(stream);
    }
    free(values);
    fclose(in);
    return fclose(out) == 0 && values ? 0 : 2;
}
