/* The block mask of a channels_last activation map in one pass over it (eager CPU), forward and backward.

   What blocks.py's PyTorch path computes for a non-negative map (a ReLU's) scored by its block mean, bit for bit:
   every block's sum in float32, added in the order _strided_sums adds them (down each column of the block, then
   the columns' sums from left to right); the block kept unless its sum <= limit (threshold x block size, clamped to
   the largest float: a NaN sum or limit keeps it); the output the input where kept, else the input times zero
   (a signed zero); and the total of the block sums, from which the l1 penalty is taken. The backward is the
   gradient where kept, else the gradient times zero, plus the penalty's gradient (a constant) where one is given,
   rounded to the map's type once, as autograd's sum of the two bfloat16 gradients is. For threshold calibration,
   the block sums alone.

   The map is (N, H, W, C) in memory, bfloat16 (as uint16) or float32; blocks bh x bw tile H and W; the kept-block
   mask is (N, Hb, Wb, C) bytes. Built and loaded by cpu_kernel.py with ctypes; plain C99 with OpenMP pragmas, no
   Python headers. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_float(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

static inline uint16_t float_to_bf16(float value) { /* round to nearest even; a NaN as c10::BFloat16's scalar code */
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    const uint16_t rounded = (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    return value != value ? 0x7FC0 : rounded;
}

static inline float same_float(float value) { return value; }

#ifdef _OPENMP
#include <omp.h>
static inline int64_t thread_count(void) { return omp_get_num_threads(); }
#else
static inline int64_t thread_count(void) { return 1; }
#endif

/* The block rows of all images (each: bh rows of the map, runs of width x channels values), split between
   ``threads`` threads of the OpenMP runtime PyTorch runs (its libgomp is the one already loaded: the same pool of
   threads); in turn where the kernel is built without OpenMP. Each block row is computed alone, so the split changes
   no value. Every thread allocates its own row buffers first; where any of them could not, none writes anything. */
#define EACH_BLOCK_ROW(ALLOCATED)                                                                \
    const int64_t length = width * channels, blocks = width / bw * channels, rows = height / bh; \
    if (!(ALLOCATED)) {                                                                          \
        _Pragma("omp atomic write")                                                              \
        failed = 1;                                                                              \
    }                                                                                            \
    _Pragma("omp barrier")                                                                       \
    int32_t any_failed;                                                                          \
    _Pragma("omp atomic read")                                                                   \
    any_failed = failed;                                                                         \
    if (!any_failed)                                                                             \
        _Pragma("omp for schedule(static)")                                                      \
        for (int64_t row = 0; row < batch * rows; row++)
#define ROW(base, i) ((base) + ((row * bh + (i)) * width) * channels)
#define LANES 8 /* a block row's total is added in 8 lanes, in a fixed order: vectors, and the same every run */

/* The block sums of the block row ``row`` of x into ``sums`` (width / bw x channels floats), through ``columns``
   (width x channels floats): down each column of the block, then the columns' sums from left to right. */
#define ROW_SUMS(TYPE, LOAD, sums)                                                               \
    {                                                                                            \
        const TYPE *top = ROW(x, 0);                                                             \
        for (int64_t k = 0; k < length; k++) columns[k] = LOAD(top[k]);                          \
        for (int64_t i = 1; i < bh; i++) {                                                       \
            const TYPE *below = ROW(x, i);                                                       \
            for (int64_t k = 0; k < length; k++) columns[k] += LOAD(below[k]);                   \
        }                                                                                        \
        for (int64_t wb = 0; wb < width / bw; wb++) {                                            \
            float *sum = (sums) + wb * channels;                                                 \
            const float *column = columns + wb * bw * channels;                                  \
            for (int64_t c = 0; c < channels; c++) sum[c] = column[c];                           \
            for (int64_t j = 1; j < bw; j++)                                                     \
                for (int64_t c = 0; c < channels; c++) sum[c] += column[j * channels + c];       \
        }                                                                                        \
    }

/* Every block's sum (N, Hb, Wb, C) in float32, as the forward takes them, for threshold calibration.
   Returns 0, or -1 where it could not allocate its buffers (then nothing is written). */
#define SUMS(NAME, TYPE, LOAD)                                                                   \
    int32_t NAME(const TYPE *x, float *restrict block_sums, int64_t batch, int64_t height, int64_t width, \
                 int64_t channels, int64_t bh, int64_t bw, int32_t threads) {                    \
        int32_t failed = 0;                                                                      \
        (void)threads; /* used by the OpenMP pragma only */                                      \
        _Pragma("omp parallel num_threads(threads < 1 ? 1 : threads)")                           \
        {                                                                                        \
            float *restrict columns = malloc(width * channels * sizeof *columns);                \
            EACH_BLOCK_ROW(columns) ROW_SUMS(TYPE, LOAD, block_sums + row * blocks)              \
            free(columns);                                                                       \
        }                                                                                        \
        return failed ? -1 : 0;                                                                  \
    }

/* The masked map (x times 1 where kept, times 0 where dropped: a dropped block holds finite values only, since
   its sum is at most the largest float, so its product is x's signed zero), the kept-block mask and, in *total,
   the total of the block sums (each block row's, added in row order: the same for any number of threads).
   Returns 0, or -1 where it could not allocate its buffers (then nothing is written). */
#define FORWARD(NAME, TYPE, LOAD, APPLY, FACTOR_TYPE, FACTOR)                                    \
    int32_t NAME(const TYPE *x, TYPE *y, uint8_t *restrict keep, int64_t batch, int64_t height, \
                 int64_t width, int64_t channels, int64_t bh, int64_t bw, float limit, double *total, \
                 int32_t threads) {                                                              \
        int32_t failed = 0;                                                                      \
        (void)threads; /* used by the OpenMP pragma only */                                      \
        double *row_totals = malloc((batch * (height / bh) + 1) * sizeof *row_totals);           \
        if (!row_totals) return -1;                                                              \
        _Pragma("omp parallel num_threads(threads < 1 ? 1 : threads)")                           \
        {                                                                                        \
            float *restrict columns = malloc(width * channels * sizeof *columns);                \
            float *restrict sums = malloc(width / bw * channels * sizeof *sums);                 \
            FACTOR_TYPE *restrict factors = malloc(width * channels * sizeof *factors);          \
            EACH_BLOCK_ROW(columns && sums && factors) {                                         \
                ROW_SUMS(TYPE, LOAD, sums)                                                       \
                uint8_t *restrict kept = keep + row * blocks;                                    \
                for (int64_t q = 0; q < blocks; q++) kept[q] = !(sums[q] <= limit);              \
                double lanes[LANES] = {0.0};                                                     \
                int64_t q = 0;                                                                   \
                for (; q + LANES <= blocks; q += LANES)                                          \
                    for (int64_t lane = 0; lane < LANES; lane++) lanes[lane] += sums[q + lane];  \
                for (; q < blocks; q++) lanes[0] += sums[q];                                     \
                double row_total = 0.0;                                                          \
                for (int64_t lane = 0; lane < LANES; lane++) row_total += lanes[lane];           \
                row_totals[row] = row_total;                                                     \
                for (int64_t wb = 0; wb < width / bw; wb++)                                      \
                    for (int64_t j = 0; j < bw; j++)                                             \
                        for (int64_t c = 0; c < channels; c++)                                   \
                            factors[(wb * bw + j) * channels + c] = FACTOR(kept[wb * channels + c]); \
                for (int64_t i = 0; i < bh; i++) {                                               \
                    const TYPE *in = ROW(x, i);                                                  \
                    TYPE *out = ROW(y, i);                                                       \
                    for (int64_t k = 0; k < length; k++) out[k] = APPLY(in[k], factors[k]);     \
                }                                                                                \
            }                                                                                    \
            free(columns);                                                                       \
            free(sums);                                                                          \
            free(factors);                                                                       \
        }                                                                                        \
        *total = 0.0;                                                                            \
        for (int64_t row = 0; !failed && row < batch * (height / bh); row++) *total += row_totals[row]; \
        free(row_totals);                                                                        \
        return failed ? -1 : 0;                                                                  \
    }

/* The gradient times the mask (1 or 0, as the PyTorch path multiplies it), plus the penalty's constant gradient
   where ``add`` is set, rounded to the map's type once. Returns 0, or -1 where it could not allocate its buffer
   (then nothing is written). */
#define BACKWARD(NAME, TYPE, LOAD, STORE)                                                        \
    int32_t NAME(const TYPE *restrict grad, TYPE *restrict result, const uint8_t *restrict keep, int64_t batch, \
                 int64_t height, int64_t width, int64_t channels, int64_t bh, int64_t bw, float constant, \
                 int32_t add, int32_t threads) {                                                 \
        int32_t failed = 0;                                                                      \
        (void)threads; /* used by the OpenMP pragma only */                                      \
        _Pragma("omp parallel num_threads(threads < 1 ? 1 : threads)")                           \
        {                                                                                        \
            float *restrict factors = malloc(width * channels * sizeof *factors);                \
            EACH_BLOCK_ROW(factors) {                                                            \
                const uint8_t *kept = keep + row * blocks;                                       \
                for (int64_t wb = 0; wb < width / bw; wb++)                                      \
                    for (int64_t j = 0; j < bw; j++)                                             \
                        for (int64_t c = 0; c < channels; c++)                                   \
                            factors[(wb * bw + j) * channels + c] = (float)kept[wb * channels + c]; \
                for (int64_t i = 0; i < bh; i++) {                                               \
                    const TYPE *restrict in = ROW(grad, i);                                      \
                    TYPE *restrict out = ROW(result, i);                                         \
                    if (add)                                                                     \
                        for (int64_t k = 0; k < length; k++) out[k] = STORE(LOAD(in[k]) * factors[k] + constant); \
                    else                                                                         \
                        for (int64_t k = 0; k < length; k++) out[k] = STORE(LOAD(in[k]) * factors[k]); \
                }                                                                                \
            }                                                                                    \
            free(factors);                                                                       \
        }                                                                                        \
        return failed ? -1 : 0;                                                                  \
    }

#define BITS_AND(bits, mask) ((uint16_t)((bits) & (mask)))
#define TIMES(value, factor) ((value) * (factor))

#define BITS_OF(kept) ((uint16_t)(0x8000 | 0x7FFF * (kept))) /* all bits where kept, the sign bit where dropped */
#define ONE_OR_ZERO(kept) ((float)(kept))

FORWARD(zebra_mask_forward_bf16, uint16_t, bf16_to_float, BITS_AND, uint16_t, BITS_OF)
FORWARD(zebra_mask_forward_f32, float, same_float, TIMES, float, ONE_OR_ZERO)
BACKWARD(zebra_mask_backward_bf16, uint16_t, bf16_to_float, float_to_bf16)
BACKWARD(zebra_mask_backward_f32, float, same_float, same_float)
SUMS(zebra_block_sums_bf16, uint16_t, bf16_to_float)
SUMS(zebra_block_sums_f32, float, same_float)

/* The number of threads a kernel asked for ``threads`` runs on: at most that many with OpenMP, else 1. */
int32_t zebra_mask_threads(int32_t threads) {
    int32_t used = 1;
    (void)threads;
    _Pragma("omp parallel num_threads(threads)")
    {
        _Pragma("omp single")
        used = (int32_t)thread_count();
    }
    return used;
}

/* 1 where built with OpenMP (the block rows split between threads), else 0. */
int32_t zebra_mask_parallel(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
