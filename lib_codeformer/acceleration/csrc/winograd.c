/*
 * 3x3 convolution (stride 1, zero padding 1) by Winograd's minimal filtering
 * F(4x4, 3x3) or F(6x6, 3x3), float32, channels-last (NHWC) tensors.
 *
 * Why: a direct 3x3 convolution spends 9 multiply-adds per output pixel,
 * input channel and output channel; F(4x4, 3x3) computes a 4x4 output tile
 * from a 6x6 input tile with 36, i.e. 2.25 instead of 9 per pixel (4x
 * fewer), F(6x6, 3x3) a 6x6 tile from an 8x8 one with 64, i.e. 1.78 per
 * pixel (5.1x fewer). The transforms around the products cost a few adds per
 * value; they are done here block by block so that the transformed tiles
 * stay in the CPU's cache instead of travelling through memory (which is what
 * makes a Winograd convolution assembled from framework operations slower
 * than a direct one). The caller picks the tile: the larger one pays on large
 * images; on small ones its partial tiles and 64/36 larger transformed
 * weights cost more than it saves.
 *
 * Two producers of the input are folded into the read of each block, so
 * their outputs never exist as full images (saving a write and a read of the
 * whole feature map, and the page faults of a fresh allocation):
 *  - a per-channel affine map followed by SiLU: GroupNorm + SiLU, whose
 *    statistics come from channel_moments below;
 *  - 2x nearest-neighbour upsampling of the input.
 * The convolution's padding (one pixel of zeros, or of the input reflected
 * at its edges, as F.pad's "reflect" mode) applies to the produced input,
 * as it would if the producers had run on their own.
 *
 * Layout of the transformed weights U (G g G^T of each 3x3 filter g, made by
 * winograd_transform_weights): U[points][out_channels / CO_BLOCK][in_channels][CO_BLOCK],
 * so that the micro-kernel reads each point's block of weights contiguously.
 * Requirements checked by the caller: in_channels % 16 == 0 and
 * out_channels % CO_BLOCK == 0 (CO_BLOCK is exported by winograd_co_block).
 *
 * Accuracy: F(4x4)'s coefficients (0, +-1, +-2, +-4, +-5, +-8; G's 1/4, 1/6,
 * 1/12, 1/24) and F(6x6)'s (interpolation points 0, +-1, +-2, +-1/2; up to 32
 * and 21/4) keep float32 rounding within about 1e-4 of the official network's
 * outputs over the whole CodeFormer network (the tests check it).
 */
#include <pthread.h>
#include <stdint.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#if defined(__AVX512F__)
#define VEC 16
#define NV 4
#elif defined(__AVX__)
#define VEC 8
#define NV 2
#else
#define VEC 4
#define NV 4
#endif

#ifndef BLOCK_KIB
#define BLOCK_KIB 512 /* transformed input and products per thread block: stay in L2 (see block_bytes) */
#endif
#define ROWS 6              /* tiles per micro-kernel step (register block rows) */
#define CO_BLOCK (VEC * NV) /* output channels per micro-kernel step */
#define MAX_ALPHA 8         /* largest input tile side: F(6x6, 3x3)'s */
#define MAX_THREADS 256
/* The tile-size-dependent steps are inlined into one copy per tile size, each with its sizes constant. */
#define SPECIALISED static inline __attribute__((always_inline))

typedef float vec __attribute__((vector_size(VEC * sizeof(float))));
typedef int ivec __attribute__((vector_size(VEC * sizeof(int))));
/* The same vector in memory at any float's alignment: loads and stores go through it
 * (a memcpy-based load compiled, for AVX2, into round trips through the stack). */
typedef float unaligned_vec __attribute__((vector_size(VEC * sizeof(float)), aligned(4), may_alias));

static inline vec load(const float *p) { return *(const unaligned_vec *)p; }

static inline void store(float *p, vec v) { *(unaligned_vec *)p = v; }

/* A vector written around the caches, straight to memory (a whole aligned line at VEC 16): no read of the
 * line first, as an ordinary store's write-allocate does, and no eviction of data that is still to be used.
 * p must be aligned to the vector's size; where the instruction set has no such store, an ordinary one. */
static inline void store_streaming(float *p, vec v) {
#if defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
    _mm256_stream_ps(p, (__m256)v);
#elif defined(__SSE__)
    _mm_stream_ps(p, (__m128)v);
#else
    store(p, v);
#endif
}

/* Streaming stores are weakly ordered: each thread fences them before its share of the output is read. */
static inline void fence_streaming(void) {
#if defined(__SSE__)
    _mm_sfence();
#endif
}

static inline vec splat(float s) { return (vec){0} + s; }

static inline vec blend(ivec mask, vec yes, vec no) { return (vec)(((ivec)yes & mask) | ((ivec)no & ~mask)); }

/* x limited to [low, high]: one min and one max instruction where there are such, instead of a comparison
 * and a blend each (on AMD's Zen 4, one thread, the GroupNorm + SiLU of a 64-channel 512 x 512 input inside
 * the convolution took about 5.6 ms instead of 6.9). A NaN comes out as low, which is no concern to vexp's
 * callers (NaN in, NaN out). */
static inline vec clamp(vec x, float low, float high) {
#if defined(__AVX512F__)
    return (vec)_mm512_min_ps(_mm512_max_ps((__m512)x, (__m512)splat(low)), (__m512)splat(high));
#elif defined(__AVX__)
    return (vec)_mm256_min_ps(_mm256_max_ps((__m256)x, (__m256)splat(low)), (__m256)splat(high));
#elif defined(__SSE__)
    return (vec)_mm_min_ps(_mm_max_ps((__m128)x, (__m128)splat(low)), (__m128)splat(high));
#else
    x = blend(x < splat(low), splat(low), x);
    return blend(x > splat(high), splat(high), x);
#endif
}

/* exp(x) for |x| < 88, relative error about 2e-7: range reduction by
 * powers of two and a degree-6 polynomial (the Cephes expf coefficients).
 * n = round(x / ln 2) comes from adding 1.5 * 2^23, whose float spacing is 1:
 * the sum's low bits are n itself (an add and a subtract instead of
 * conversions to and from integers and a correction to floor). */
static inline vec vexp(vec x) {
    x = clamp(x, -87.0f, 88.0f);
    const vec magic = splat(12582912.0f);
    const vec shifted = x * 1.44269504088896341f + magic;
    const ivec n = (ivec)shifted - (ivec)magic;
    const vec nf = shifted - magic;
    const vec r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    vec p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const vec y = p * r * r + r + 1.0f;
    return y * (vec)((n + 127) << 23);
}

int winograd_co_block(void) { return CO_BLOCK; }

/* B^T d for one column (or row) of an input tile: alpha = tile + 2 points. */
SPECIALISED void input_1d(const int tile, const vec d[], vec out[]) {
    if (tile == 4) {
        out[0] = 4 * d[0] - 5 * d[2] + d[4];
        out[1] = -4 * (d[1] + d[2]) + d[3] + d[4];
        out[2] = 4 * (d[1] - d[2]) - d[3] + d[4];
        out[3] = 2 * (d[3] - d[1]) - d[2] + d[4];
        out[4] = 2 * (d[1] - d[3]) - d[2] + d[4];
        out[5] = 4 * d[1] - 5 * d[3] + d[5];
        return;
    }
    const vec odd1 = d[1] + d[5] - 4.25f * d[3], even1 = d[2] + d[6] - 4.25f * d[4];
    const vec odd2 = 0.5f * d[1] - 2.5f * d[3] + 2.0f * d[5], even2 = 0.25f * d[2] - 1.25f * d[4] + d[6];
    const vec odd3 = 2.0f * d[1] - 2.5f * d[3] + 0.5f * d[5], even3 = 4.0f * d[2] - 5.0f * d[4] + d[6];
    out[0] = d[0] - d[6] + 5.25f * (d[4] - d[2]);
    out[1] = even1 + odd1;
    out[2] = even1 - odd1;
    out[3] = even2 + odd2;
    out[4] = even2 - odd2;
    out[5] = even3 + odd3;
    out[6] = even3 - odd3;
    out[7] = d[7] - d[1] + 5.25f * (d[3] - d[5]);
}

/* A^T m for one column (or row) of a tile of products: tile outputs from tile + 2 points. */
SPECIALISED void output_1d(const int tile, const vec m[], vec out[]) {
    if (tile == 4) {
        out[0] = m[0] + m[1] + m[2] + m[3] + m[4];
        out[1] = m[1] - m[2] + 2 * (m[3] - m[4]);
        out[2] = m[1] + m[2] + 4 * (m[3] + m[4]);
        out[3] = m[1] - m[2] + 8 * (m[3] - m[4]) + m[5];
        return;
    }
    const vec sum1 = m[1] + m[2], sum2 = m[3] + m[4], sum3 = m[5] + m[6];
    const vec difference1 = m[1] - m[2], difference2 = m[3] - m[4], difference3 = m[5] - m[6];
    out[0] = m[0] + sum1 + sum2 + sum3;
    out[1] = difference1 + 2.0f * difference2 + 0.5f * difference3;
    out[2] = sum1 + 4.0f * sum2 + 0.25f * sum3;
    out[3] = difference1 + 8.0f * difference2 + 0.125f * difference3;
    out[4] = sum1 + 16.0f * sum2 + 0.0625f * sum3;
    out[5] = difference1 + 32.0f * difference2 + 0.03125f * difference3 + m[7];
}

/* G g for one column (or row) (a, b, c) of a 3x3 filter: tile + 2 values. */
SPECIALISED void filter_1d(const int tile, const vec a, const vec b, const vec c, vec out[]) {
    if (tile == 4) {
        out[0] = a * 0.25f;
        out[1] = (a + b + c) * (-1.0f / 6);
        out[2] = (a - b + c) * (-1.0f / 6);
        out[3] = a * (1.0f / 24) + b * (1.0f / 12) + c * (1.0f / 6);
        out[4] = a * (1.0f / 24) - b * (1.0f / 12) + c * (1.0f / 6);
        out[5] = c;
        return;
    }
    out[0] = a;
    out[1] = (a + b + c) * (-2.0f / 9);
    out[2] = (a - b + c) * (-2.0f / 9);
    out[3] = a * (1.0f / 90) + b * (1.0f / 45) + c * (2.0f / 45);
    out[4] = a * (1.0f / 90) - b * (1.0f / 45) + c * (2.0f / 45);
    out[5] = a * (32.0f / 45) + b * (16.0f / 45) + c * (8.0f / 45);
    out[6] = a * (32.0f / 45) - b * (16.0f / 45) + c * (8.0f / 45);
    out[7] = c;
}

int winograd_vector_floats(void) { return VEC; }

/* One thread's running per-channel statistics of the output, for the GroupNorm that reads it
 * next (so that its statistics need no pass of their own over the image): per image and
 * channel, sums of (x - shift) and of its squares over the pixels counted, about a shift
 * that is the first output value the thread wrote there (as in channel_moments below). */
typedef struct {
    double *sums, *squares; /* [batch][out_channels] */
    float *shift;
    int64_t *count;
} moments_t;

typedef struct {
    const float *input;
    const float *norm_scale; /* [batch][in_channels] or NULL */
    const float *norm_shift;
    const float *weights;  /* U */
    const float *bias;     /* may be NULL */
    const float *residual; /* may be NULL: added to the output (same layout) */
    float *output;
    int batch, height, width, in_channels, out_channels, upsample;
    int reflect; /* the input padded by reflection instead of zeros (height and width at least 2) */
    int tile; /* output tile side: 4 or 6 */
    int tiles_y, tiles_x;
    int64_t total_tiles;
    int block_tiles; /* tiles per block, multiple of ROWS */
    int64_t first_block, end_block;
    int stream;           /* the output goes to memory with streaming stores */
    float *V, *M, *strip; /* this thread's working buffers (blocks schedule) */
    moments_t *moments;   /* this thread's output statistics, or NULL */
} job_t;

/* Floats from one point's transformed input to the next in V: the block's tiles x C, plus a cache
 * line where that is an even number of lines. Why: the input transform writes each tile's
 * (tile + 2)^2 points at once, one line per point; at a stride of 48 lines (3 KiB: 12 tiles of 64
 * channels or 6 of 128) those lines fall into 4 of the L1 cache's 64 sets, 16 lines for 8 ways,
 * and evict one another. An odd number of lines puts every point in a set of its own: 5-12 %
 * faster at 64-256 channels on AVX2 Zen 3, one thread. */
#define LINE_FLOATS 16
static inline int64_t point_stride(const job_t *job) {
    const int64_t floats = (int64_t)job->block_tiles * job->in_channels, lines = (floats + LINE_FLOATS - 1) / LINE_FLOATS;
    return (lines | 1) * LINE_FLOATS;
}

/* Where row (or column) i of a padded input of `size` pixels comes from: i itself inside, the pixel
 * reflected across the edge in the padding where `reflect` (i = -1 and i = size), else -1 (zero). Past
 * the padding, under a partial tile whose outputs are not written, -1 too. */
static inline int source_index(int i, int size, int reflect) {
    if (i >= 0 && i < size) return i;
    if (reflect && i == -1) return 1;
    if (reflect && i == size) return size - 2;
    return -1;
}

/* The tile + 2 input rows under one row of tiles, columns first_x - 1 .. first_x + tile * count,
 * as the convolution sees them: upsampled, normalised and activated, padded (zeros or reflected). */
SPECIALISED void fill_strip(const job_t *job, const int tile, int n, int first_y, int first_x, int count, float *strip) {
    const int C = job->in_channels, H = job->height, W = job->width, up = job->upsample, alpha = tile + 2;
    const int source_w = W >> up;
    const int columns = tile * count + 2;
    const float *image = job->input + (int64_t)n * (H >> up) * source_w * C;
    const float *scale = job->norm_scale ? job->norm_scale + (int64_t)n * C : NULL;
    const float *shift = job->norm_shift ? job->norm_shift + (int64_t)n * C : NULL;
    for (int r = 0; r < alpha; r++) {
        const int y = source_index(first_y - 1 + r, H, job->reflect);
        float *row = strip + (int64_t)r * columns * C;
        for (int cx = 0; cx < columns; cx++) {
            const int x = source_index(first_x - 1 + cx, W, job->reflect);
            float *dst = row + (int64_t)cx * C;
            if (y < 0 || x < 0) {
                memset(dst, 0, sizeof(float) * C);
                continue;
            }
            const float *src = image + ((int64_t)(y >> up) * source_w + (x >> up)) * C;
            if (!scale) {
                memcpy(dst, src, sizeof(float) * C);
                continue;
            }
            for (int c = 0; c < C; c += VEC) {
                const vec v = load(src + c) * load(scale + c) + load(shift + c);
                store(dst + c, v / (1.0f + vexp(-v)));
            }
        }
    }
}

/* B^T d B for the tiles of one strip, into V[points][block_tiles][C] (points point_stride apart) at slots first_slot.. */
SPECIALISED void transform_strip(const job_t *job, const int tile, const float *strip, int count, int first_slot, float *V) {
    const int C = job->in_channels, alpha = tile + 2;
    const int64_t columns = tile * count + 2;
    const int64_t stride_point = point_stride(job);
    for (int k = 0; k < count; k++) {
        float *dst = V + (int64_t)(first_slot + k) * C;
        const float *source = strip + (int64_t)tile * k * C;
        for (int c = 0; c < C; c += VEC) {
            vec t[MAX_ALPHA][MAX_ALPHA]; /* t[j]: B^T applied to column j */
            for (int j = 0; j < alpha; j++) {
                vec d[MAX_ALPHA];
                for (int i = 0; i < alpha; i++) d[i] = load(source + ((int64_t)i * columns + j) * C + c);
                input_1d(tile, d, t[j]);
            }
            for (int i = 0; i < alpha; i++) {
                vec d[MAX_ALPHA], out[MAX_ALPHA];
                for (int j = 0; j < alpha; j++) d[j] = t[j][i];
                input_1d(tile, d, out);
                float *row = dst + (int64_t)(i * alpha) * stride_point + c;
                for (int j = 0; j < alpha; j++) store(row + j * stride_point, out[j]);
            }
        }
    }
}

/* The transformed input of the block's slots slot..end - 1: strip by strip (a block may span
 * rows of tiles and images); slots past the last tile are zero. */
SPECIALISED void transform_block(const job_t *job, const int tile, int64_t first_tile, int slot, const int end, float *strip,
                                 float *V) {
    const int per_image = job->tiles_y * job->tiles_x, points = (tile + 2) * (tile + 2);
    while (slot < end && first_tile + slot < job->total_tiles) {
        const int64_t index = first_tile + slot;
        const int n = (int)(index / per_image), rest = (int)(index % per_image);
        const int ty = rest / job->tiles_x, tx = rest % job->tiles_x;
        int count = job->tiles_x - tx;
        if (count > end - slot) count = end - slot;
        if (count > job->total_tiles - index) count = (int)(job->total_tiles - index);
        fill_strip(job, tile, n, ty * tile, tx * tile, count, strip);
        transform_strip(job, tile, strip, count, slot, V);
        slot += count;
    }
    for (; slot < end; slot++)
        for (int p = 0; p < points; p++)
            memset(V + p * point_stride(job) + (int64_t)slot * job->in_channels, 0, sizeof(float) * job->in_channels);
}

/* acc[r] += rows[r][c0:c1] @ U[c0:c1][0:CO_BLOCK] for ROWS rows of `stride` floats: the micro-kernel. */
SPECIALISED void multiply_rows(vec acc[ROWS][NV], const float *rows, const int64_t stride, const float *U, const int c0,
                               const int c1) {
    for (int ci = c0; ci < c1; ci++) {
        vec u[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) u[v] = load(U + (int64_t)ci * CO_BLOCK + v * VEC);
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const float s = rows[r * stride + ci];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] += s * u[v];
        }
    }
}

/* Mp[t][0:CO_BLOCK] = V[p][t][:] @ U[p][:][co:co+CO_BLOCK] for point p and the
 * block's tiles, ROWS tiles at a time held in registers. The input channels are taken
 * CHUNK at a time, so that the chunk's weights (CHUNK x CO_BLOCK floats, 16 KiB) stay in
 * the L1 cache while every group of ROWS tiles passes over them: a whole column of 256
 * or 512 channels' weights (32-128 KiB) would be read from L2 for each group. */
#define CHUNK (16384 / (CO_BLOCK * (int)sizeof(float)))
static void multiply_point(const job_t *job, int p, const float *V, int co, float *Mp) {
    const int C = job->in_channels, K = job->out_channels, T = job->block_tiles;
    const float *Vp = V + p * point_stride(job);
    const float *Up = job->weights + (int64_t)p * C * K + (int64_t)co * C;
    for (int c0 = 0; c0 < C; c0 += CHUNK) {
        const int c1 = c0 + CHUNK < C ? c0 + CHUNK : C;
        for (int t0 = 0; t0 < T; t0 += ROWS) {
            float *Mt = Mp + (int64_t)t0 * CO_BLOCK;
            vec acc[ROWS][NV];
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = c0 ? load(Mt + r * CO_BLOCK + v * VEC) : (vec){0};
            multiply_rows(acc, Vp + (int64_t)t0 * C, C, Up, c0, c1);
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) store(Mt + r * CO_BLOCK + v * VEC, acc[r][v]);
        }
    }
}

/* A^T m A for the block's tiles in slots slot..end - 1, plus bias (and residual), written to
 * the output pixels that lie inside the image. */
SPECIALISED void output_transform(const job_t *job, const int tile, int64_t first_tile, int slot, const int end, int co,
                                  const float *M, moments_t *moments) {
    const int K = job->out_channels, H = job->height, W = job->width, T = job->block_tiles, alpha = tile + 2;
    const int per_image = job->tiles_y * job->tiles_x;
    for (; slot < end; slot++) {
        const int64_t index = first_tile + slot;
        if (index >= job->total_tiles) return;
        const int n = (int)(index / per_image), rest = (int)(index % per_image);
        const int y0 = (rest / job->tiles_x) * tile, x0 = (rest % job->tiles_x) * tile;
        for (int v = 0; v < NV; v++) {
            const int c = co + v * VEC;
            vec t[MAX_ALPHA][MAX_ALPHA]; /* t[j]: A^T applied to column j */
            for (int j = 0; j < alpha; j++) {
                vec m[MAX_ALPHA];
                for (int i = 0; i < alpha; i++) m[i] = load(M + ((int64_t)(i * alpha + j) * T + slot) * CO_BLOCK + v * VEC);
                output_1d(tile, m, t[j]);
            }
            const vec b = job->bias ? load(job->bias + c) : (vec){0};
            const int64_t channel = (int64_t)n * K + c;
            int first = moments && moments->count[channel] == 0, pixels = 0;
            vec shift = moments && !first ? load(moments->shift + channel) : (vec){0}, sum = {0}, squares = {0};
            for (int i = 0; i < tile; i++) {
                const int y = y0 + i;
                if (y >= H) break;
                vec m[MAX_ALPHA], out[MAX_ALPHA];
                for (int j = 0; j < alpha; j++) m[j] = t[j][i];
                output_1d(tile, m, out);
                for (int j = 0; j < tile && x0 + j < W; j++) {
                    const int64_t offset = (((int64_t)n * H + y) * W + x0 + j) * K + c;
                    vec value = out[j] + b;
                    if (job->residual) value += load(job->residual + offset);
                    if (job->stream)
                        store_streaming(job->output + offset, value);
                    else
                        store(job->output + offset, value);
                    if (moments) {
                        if (first) {
                            shift = value;
                            store(moments->shift + channel, value);
                            first = 0;
                        }
                        const vec d = value - shift;
                        sum += d;
                        squares += d * d;
                        pixels++;
                    }
                }
            }
            if (moments)
                for (int lane = 0; lane < VEC; lane++) {
                    moments->sums[channel + lane] += sum[lane];
                    moments->squares[channel + lane] += squares[lane];
                    moments->count[channel + lane] += pixels;
                }
        }
    }
}

SPECIALISED void *run_blocks_of(const job_t *job, const int tile) {
    const int T = job->block_tiles, points = (tile + 2) * (tile + 2);
    const int64_t per_co_block = (int64_t)points * T * CO_BLOCK;
    float *V = job->V, *M = job->M, *strip = job->strip;
    for (int64_t block = job->first_block; block < job->end_block; block++) {
        const int64_t first_tile = block * T;
        transform_block(job, tile, first_tile, 0, T, strip, V);
        /* Point by point, all output channels: the point's transformed input (T x C floats) stays in
         * L1 while every block of output channels passes over it. Output channels outermost would read
         * the whole block's transformed input from L2 once per CO_BLOCK of them (8-12 % slower with
         * 64-128 channels at 256-512 px on AVX2 Zen 3). */
        for (int p = 0; p < points; p++)
            for (int co = 0; co < job->out_channels; co += CO_BLOCK)
                multiply_point(job, p, V, co, M + (co / CO_BLOCK) * per_co_block + (int64_t)p * T * CO_BLOCK);
        for (int co = 0; co < job->out_channels; co += CO_BLOCK)
            output_transform(job, tile, first_tile, 0, T, co, M + (co / CO_BLOCK) * per_co_block, job->moments);
    }
    if (job->stream) fence_streaming();
    return NULL;
}

static void *run_blocks(void *arg) {
    const job_t *job = arg;
    return job->tile == 6 ? run_blocks_of(job, 6) : run_blocks_of(job, 4);
}

/* The host's thread team: GOMP_parallel(fn, data, threads, flags) of the OpenMP runtime that PyTorch
 * runs its own CPU operations on (set by winograd_use_team), or NULL for threads of our own. Between
 * its operations PyTorch's OpenMP threads keep spinning for a while (libgomp's default: 300,000 spins,
 * a few ms) before they sleep; threads of our own started in that time share the cores with them,
 * and a layer ran up to half as fast between PyTorch's operations as it did alone. On the host's team
 * the kernel's shares run on those very threads, which are awake already. */
typedef void (*team_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
static team_parallel_t team_parallel = NULL;

void winograd_use_team(void *gomp_parallel) { team_parallel = (team_parallel_t)gomp_parallel; }

int winograd_uses_team(void) { return team_parallel != NULL; }

typedef struct {
    void *(*work)(void *);
    char *jobs;
    size_t job_size;
    int count;  /* shares */
    int next;   /* the next share to claim */
    int failed; /* a share failed */
} team_work_t;

/* Each member of the team claims shares until none is left, so that the work is done whatever the
 * size of the team the runtime grants (one, inside another parallel region). */
static void run_claimed(void *arg) {
    team_work_t *team = arg;
    for (int i; (i = __atomic_fetch_add(&team->next, 1, __ATOMIC_RELAXED)) < team->count;)
        if (team->work(team->jobs + i * team->job_size) != NULL) __atomic_store_n(&team->failed, 1, __ATOMIC_RELAXED);
}

/* Run the `threads` shares of a job (jobs: an array of them, job_size bytes each) on as many threads,
 * the caller's included: the host's team where there is one, else threads started here.
 * Returns nonzero if a share failed (no memory for its buffers). */
static int run_parallel(void *(*work)(void *), void *jobs, size_t job_size, int threads) {
    if (team_parallel != NULL && threads > 1) {
        team_work_t team = {work, jobs, job_size, threads, 0, 0};
        team_parallel(run_claimed, &team, (unsigned)threads, 0);
        return team.failed;
    }
    pthread_t ids[MAX_THREADS];
    int created[MAX_THREADS] = {0};
    int failed = 0;
    for (int i = 1; i < threads; i++) {
        void *job = (char *)jobs + i * job_size;
        created[i] = pthread_create(&ids[i], NULL, work, job) == 0;
        /* No thread to be had: do this share on the calling thread instead. */
        if (!created[i]) failed |= work(job) != NULL;
    }
    failed |= work(jobs) != NULL;
    for (int i = 1; i < threads; i++) {
        void *result = NULL;
        if (created[i]) pthread_join(ids[i], &result);
        failed |= result != NULL;
    }
    return failed;
}

/* The shared schedule, for layers with many channels. Their transformed weights (points x C x K
 * floats: 9.4 MB at 256 channels, 37.7 MB at 512 in 4 x 4 tiles) stay in no cache, and the blocks
 * above, sized for the transformed input to stay in one core's L2, read all of them from memory once
 * per block of a few tiles (6 at 512 channels): the products wait on memory. Here the threads share
 * one group of many tiles (each point's transformed input ~SHARED_POINT_KIB) in three stages: they
 * transform the group's input tiles between them, then split the points, each point's weights read
 * once per group and used on every tile of it, then transform the products back, again split by
 * tiles. The group's input and products (~points x SHARED_POINT_KIB each) live in the shared L3. */
#ifndef SHARED_POINT_KIB
#define SHARED_POINT_KIB 128
#endif

typedef struct {
    const job_t *job;
    int stage;          /* 0: input transform of slots, 1: products of points, 2: output transform of slots */
    int first, end;     /* this thread's slots or points */
    int64_t first_tile; /* the group's */
    float *V, *M, *strip;
    moments_t *moments; /* this thread's output statistics, or NULL */
} stage_t;

SPECIALISED void run_stage_of(const stage_t *share, const int tile) {
    const job_t *job = share->job;
    const int T = job->block_tiles, points = (tile + 2) * (tile + 2);
    const int64_t per_co_block = (int64_t)points * T * CO_BLOCK;
    if (share->stage == 0) {
        transform_block(job, tile, share->first_tile, share->first, share->end, share->strip, share->V);
    } else if (share->stage == 1) {
        for (int p = share->first; p < share->end; p++)
            for (int co = 0; co < job->out_channels; co += CO_BLOCK)
                multiply_point(job, p, share->V, co, share->M + (co / CO_BLOCK) * per_co_block + (int64_t)p * T * CO_BLOCK);
    } else {
        for (int co = 0; co < job->out_channels; co += CO_BLOCK)
            output_transform(job, tile, share->first_tile, share->first, share->end, co, share->M + (co / CO_BLOCK) * per_co_block,
                             share->moments);
        if (job->stream) fence_streaming();
    }
}

static void *run_stage(void *arg) {
    const stage_t *share = arg;
    if (share->job->tile == 6)
        run_stage_of(share, 6);
    else
        run_stage_of(share, 4);
    return NULL;
}

static int run_shared(const job_t *job, float *V, float *M, float *strips, int64_t strip_floats, moments_t *moments,
                      int threads) {
    const int T = job->block_tiles, points = (job->tile + 2) * (job->tile + 2);
    int failed = 0;
    stage_t shares[MAX_THREADS];
    for (int64_t first_tile = 0; !failed && first_tile < job->total_tiles; first_tile += T) {
        for (int stage = 0; stage < 3 && !failed; stage++) {
            const int items = stage == 1 ? points : T;
            for (int i = 0; i < threads; i++)
                shares[i] = (stage_t){job, stage, items * i / threads, items * (i + 1) / threads, first_tile, V, M,
                                      strips + strip_floats * i, moments ? moments + i : NULL};
            failed |= run_parallel(run_stage, shares, sizeof(stage_t), threads);
        }
    }
    return failed;
}

/* The threads' output statistics combined into moments ([3][batch][out_channels]: sums of
 * (x - shift), sums of (x - shift)^2, the shift; channel_moments' layout), all about the shift of
 * the first thread that counted each channel: its sums move to another shift d away exactly,
 * as sum + count d and squares + 2 d sum + count d^2. */
static void combine_moments(const moments_t *parts, int threads, int64_t channels, double *moments) {
    for (int64_t k = 0; k < channels; k++) {
        int reference = 0;
        while (reference < threads - 1 && parts[reference].count[k] == 0) reference++;
        const double shift = parts[reference].shift[k];
        double sum = 0, squares = 0;
        for (int i = 0; i < threads; i++) {
            const double d = (double)parts[i].shift[k] - shift, count = (double)parts[i].count[k];
            if (parts[i].count[k] == 0) continue;
            sum += parts[i].sums[k] + count * d;
            squares += parts[i].squares[k] + 2 * d * parts[i].sums[k] + count * d * d;
        }
        moments[k] = sum;
        moments[channels + k] = squares;
        moments[2 * channels + k] = shift;
    }
}

/* How a layer's tiles are split between the threads and the working memory that takes, in floats;
 * shared by winograd_workspace_floats (the caller's allocation) and winograd_conv3x3 (which carves it
 * up). Each part starts on a cache line. */
typedef struct {
    int threads;
    int64_t blocks;                         /* per-thread schedule: blocks of the job's block_tiles tiles */
    int64_t v_floats, m_floats, strip_floats; /* V and M: per thread, or the group's (shared); strip: per thread */
    int64_t floats;                         /* all of it, plus a line to align its start */
} plan_t;

static int64_t whole_lines(int64_t floats) { return (floats + LINE_FLOATS - 1) / LINE_FLOATS * LINE_FLOATS; }

/* The L2 cache's size in bytes as the system reports it (per core), 0 where it does not say. Asked once:
 * in a virtual machine each CPUID behind sysconf traps to the hypervisor. */
static int64_t l2_bytes(void) {
    static int64_t known = -1;
    int64_t size = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (size >= 0) return size;
    size = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported > 0) size = reported;
#endif
    __atomic_store_n(&known, size, __ATOMIC_RELAXED);
    return size;
}

/* Bytes of transformed input and products per block of tiles (blocks schedule). Each block streams all
 * of U, the layer's transformed weights, past its tiles, so a block of T tiles does T multiply-adds per
 * weight it reads. Where U and the block fit in L2 together, U stays there from block to block and
 * BLOCK_KIB suffices (on 512 KiB L2s, as AMD's Zen 3, nothing larger fits). Where they do not, U comes
 * from L3 for every block, and a larger block, up to 3/4 of a larger L2, reads it fewer times: on a
 * Xeon with 2 MiB of L2 and AVX-512, 128 -> 128 channels at 256 px (4 MiB of U) took 22 ms instead of
 * 30, 256 -> 128 at 256 px 47 instead of 68; 64 -> 64 at 512 px (1 MiB of U) is faster as it was.
 * At most LARGEST_BLOCK_KIB, the best size measured there (2 MiB blocks were slower): an L2 reported
 * larger may be shared by several cores (Intel's E-core clusters). Only from GROWING_L2_KIB of L2, where
 * the gain was measured: on AMD's Zen 4 (1 MiB) 768 KiB blocks were no faster than 512 (three alternating
 * runs within 5 % of each other at 64 -> 64 @512, 128 -> 128 and 256 -> 128 @256; a first run 20 % slower at
 * 64 -> 64), and they take 1.5x the working memory. */
#define LARGEST_BLOCK_KIB 1536
#define GROWING_L2_KIB 2048
static int64_t block_bytes(int points, int C, int K) {
    const int64_t weights = (int64_t)points * C * K * (int64_t)sizeof(float), l2 = l2_bytes();
    const int64_t base = (int64_t)BLOCK_KIB * 1024, most = (int64_t)LARGEST_BLOCK_KIB * 1024;
    const int64_t larger = l2 / 4 * 3 < most ? l2 / 4 * 3 : most;
    return l2 >= (int64_t)GROWING_L2_KIB * 1024 && weights + base > l2 && larger > base ? larger : base;
}

static plan_t plan_layer(job_t *job, int shared, int threads) {
    const int tile = job->tile, alpha = tile + 2, points = alpha * alpha, C = job->in_channels, K = job->out_channels;
    plan_t plan = {0};
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    if (shared) {
        /* Groups of about equal size, so that the last is not mostly empty slots (each costs its products). */
        const int64_t most = (SHARED_POINT_KIB * 1024) / (C * (int64_t)sizeof(float));
        const int64_t groups = (job->total_tiles + most - 1) / most;
        const int64_t per_group = (job->total_tiles + groups - 1) / groups;
        job->block_tiles = (int)((per_group + ROWS - 1) / ROWS * ROWS);
    } else {
        const int block_tiles = (int)(block_bytes(points, C, K) / (points * (C + K) * (int64_t)sizeof(float)));
        job->block_tiles = block_tiles < ROWS ? ROWS : block_tiles - block_tiles % ROWS;
        plan.blocks = (job->total_tiles + job->block_tiles - 1) / job->block_tiles;
        if (threads > plan.blocks) threads = (int)plan.blocks;
    }
    plan.threads = threads;
    plan.v_floats = whole_lines(points * point_stride(job));
    plan.m_floats = whole_lines((int64_t)points * job->block_tiles * K);
    plan.strip_floats = whole_lines((int64_t)alpha * (tile * job->block_tiles + 2) * C);
    const int64_t per_thread = plan.strip_floats + (shared ? 0 : plan.v_floats + plan.m_floats);
    plan.floats = (shared ? plan.v_floats + plan.m_floats : 0) + threads * per_thread + LINE_FLOATS;
    return plan;
}

static job_t layer_job(int batch, int height, int width, int in_channels, int out_channels, int tile) {
    job_t job = {.batch = batch, .height = height, .width = width, .in_channels = in_channels, .out_channels = out_channels,
                 .tile = tile == 6 ? 6 : 4};
    job.tiles_y = (height + job.tile - 1) / job.tile;
    job.tiles_x = (width + job.tile - 1) / job.tile;
    job.total_tiles = (int64_t)batch * job.tiles_y * job.tiles_x;
    return job;
}

/* The floats of working memory winograd_conv3x3 takes for this layer (its workspace argument). Why the
 * caller provides it: the buffers are megabytes (2.4-9.6 MB for the shared schedule at 256 channels),
 * which malloc may map fresh from the system and unmap again on every call: a 256-channel layer at
 * 32-64 px called over and over took 1,200-2,500 page faults per call (about 4 us each in a virtual
 * machine), about 30 % of its time. The caller's recycled buffers take none, whatever malloc does. */
int64_t winograd_workspace_floats(int batch, int height, int width, int in_channels, int out_channels, int tile, int shared,
                                  int threads) {
    job_t job = layer_job(batch, height, width, in_channels, out_channels, tile);
    return plan_layer(&job, shared, threads).floats;
}

/* output = conv3x3(produce(input)) + bias (+ residual) in tiles of tile x tile (4 or 6)
 * outputs, from weights transformed for that tile; shared: the shared schedule (above), else
 * each thread its own blocks; stream: the output is written with streaming stores, straight to
 * memory, where it is aligned to the vector's size (the caller asks for them for outputs larger
 * than the L3 cache: the next layer finds none of those in the caches anyway, and an ordinary
 * store first reads each line from memory); moments, where not
 * NULL, receives the output's per-image, per-channel statistics in channel_moments' layout, for
 * the GroupNorm that reads it next; reflect: the input padded by reflecting it at its edges instead of
 * with zeros (taken where height and width are at least 2). height and width are the convolution's
 * (after upsampling: the input is height/2 x width/2 when upsample is 1). workspace: winograd_workspace_floats(...) floats
 * for the same arguments. Returns 0 on success, nonzero if the statistics' memory could not be allocated. */
int winograd_conv3x3(const float *input, int batch, int height, int width, int in_channels, int upsample, int reflect,
                     const float *norm_scale, const float *norm_shift, const float *weights, int out_channels,
                     const float *bias, const float *residual, float *output, int tile, int shared, int stream,
                     double *moments, int threads, float *workspace) {
    job_t base = layer_job(batch, height, width, in_channels, out_channels, tile);
    base.input = input, base.norm_scale = norm_scale, base.norm_shift = norm_shift, base.weights = weights;
    base.bias = bias, base.residual = residual, base.output = output, base.upsample = upsample ? 1 : 0;
    base.reflect = reflect && height >= 2 && width >= 2;
    base.stream = stream && (uintptr_t)output % (VEC * sizeof(float)) == 0;
    const plan_t plan = plan_layer(&base, shared, threads);
    threads = plan.threads;
    float *next = (float *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    /* Each thread's statistics: sums and squares (double), count and shift per image and channel
     * (out_channels is a multiple of 16, so every thread's part stays 8-byte aligned). */
    const int64_t channels = (int64_t)batch * out_channels;
    const size_t per_channel = 2 * sizeof(double) + sizeof(int64_t) + sizeof(float);
    moments_t parts[MAX_THREADS];
    char *statistics = moments ? calloc((size_t)threads * channels, per_channel) : NULL;
    if (moments && !statistics) return 1;
    for (int i = 0; moments && i < threads; i++) {
        char *own = statistics + (size_t)i * channels * per_channel;
        parts[i].sums = (double *)own;
        parts[i].squares = parts[i].sums + channels;
        parts[i].count = (int64_t *)(parts[i].squares + channels);
        parts[i].shift = (float *)(parts[i].count + channels);
    }
    int failed;
    if (shared) {
        float *V = next, *M = V + plan.v_floats, *strips = M + plan.m_floats;
        failed = run_shared(&base, V, M, strips, plan.strip_floats, moments ? parts : NULL, threads);
    } else {
        job_t jobs[MAX_THREADS];
        for (int i = 0; i < threads; i++) {
            jobs[i] = base;
            jobs[i].first_block = plan.blocks * i / threads;
            jobs[i].end_block = plan.blocks * (i + 1) / threads;
            jobs[i].V = next;
            jobs[i].M = jobs[i].V + plan.v_floats;
            jobs[i].strip = jobs[i].M + plan.m_floats;
            next = jobs[i].strip + plan.strip_floats;
            jobs[i].moments = moments ? parts + i : NULL;
        }
        failed = run_parallel(run_blocks, jobs, sizeof(job_t), threads);
    }
    if (moments && !failed) combine_moments(parts, threads, channels, moments);
    free(statistics);
    return failed;
}

typedef struct {
    const float *weights; /* g: [out_channels][in_channels][3][3] at the given strides (floats) */
    int64_t stride_out, stride_in, stride_y, stride_x;
    int in_channels, out_channels, tile;
    float *transformed; /* U */
    int first_block, end_block; /* output-channel blocks of CO_BLOCK */
} transform_job_t;

/* Input channels whose filters transform_weights_of gathers at a time. */
#ifndef GATHERED_CHANNELS
#define GATHERED_CHANNELS 16
#endif

/* U for the job's blocks of CO_BLOCK filters. Each block's filters are first gathered, GATHERED_CHANNELS input
 * channels at a time, into [channel][tap][CO_BLOCK] (36 KiB at AVX-512's 64 filters), which the transform
 * then reads as whole vectors. Why: the model keeps its weights channels-last (tap-major, input channels
 * contiguous), and gathering a vector's VEC filters tap by tap straight from them read 144 lines per vector,
 * 576 for a block's 4 vectors, which no L1 holds from one input channel to the next: 2.4 ms for 256 -> 256
 * channels in 4 x 4 tiles on one Zen 4 core, against 0.84 ms for the same weights in PyTorch's default layout
 * (gathered: 0.92 and 0.83 ms). The next group's lines are prefetched (the weights come from memory: a model's
 * parameters are read once per pass), and U is written with streaming stores: it is megabytes, read back from
 * memory by the convolution, and written through the caches each line was first read from memory. In the
 * network on that machine (2 cores) a 256 -> 256 layer's transform took 0.57 ms instead of 1.33, and one face
 * 1721 ms instead of 1833 (medians of 12 passes alternating in one process). */
SPECIALISED void transform_weights_of(const transform_job_t *job, const int tile) {
    const int C = job->in_channels, K = job->out_channels, alpha = tile + 2;
    const int64_t per_point = (int64_t)K * C;
    float gathered[GATHERED_CHANNELS][9][CO_BLOCK];
    for (int kb = job->first_block; kb < job->end_block; kb++) {
        for (int c0 = 0; c0 < C; c0 += GATHERED_CHANNELS) {
            const int count = C - c0 < GATHERED_CHANNELS ? C - c0 : GATHERED_CHANNELS;
            for (int lane = 0; lane < CO_BLOCK; lane++) {
                const float *filter = job->weights + ((int64_t)kb * CO_BLOCK + lane) * job->stride_out + c0 * job->stride_in;
                for (int tap = 0; tap < 9; tap++) {
                    const float *g = filter + (tap / 3) * job->stride_y + (tap % 3) * job->stride_x;
                    __builtin_prefetch(g + GATHERED_CHANNELS * job->stride_in); /* the next group's, from memory */
                    for (int c = 0; c < count; c++) gathered[c][tap][lane] = g[c * job->stride_in];
                }
            }
            for (int c = 0; c < count; c++) {
                for (int v = 0; v < NV; v++) {
                    vec t[3][MAX_ALPHA]; /* t[x]: G applied to column x of the taps */
                    for (int x = 0; x < 3; x++)
                        filter_1d(tile, load(gathered[c][x] + v * VEC), load(gathered[c][3 + x] + v * VEC),
                                  load(gathered[c][6 + x] + v * VEC), t[x]);
                    float *out = job->transformed + ((int64_t)kb * C + c0 + c) * CO_BLOCK + v * VEC;
                    for (int i = 0; i < alpha; i++) {
                        vec row[MAX_ALPHA]; /* (G g) G^T */
                        filter_1d(tile, t[0][i], t[1][i], t[2][i], row);
                        for (int j = 0; j < alpha; j++) store_streaming(out + (i * alpha + j) * per_point, row[j]);
                    }
                }
            }
        }
    }
}

static void *run_transform(void *arg) {
    const transform_job_t *job = arg;
    if (job->tile == 6)
        transform_weights_of(job, 6);
    else
        transform_weights_of(job, 4);
    fence_streaming();
    return NULL;
}

/* U = G g G^T for every filter, in float32, for tiles of tile x tile (4 or 6) outputs, laid out
 * for winograd_conv3x3: U[(tile + 2)^2][out_channels / CO_BLOCK][in_channels][CO_BLOCK]. Made on
 * each call rather than kept: keeping it would take 4x (7.1x) the weights' memory, and it costs
 * 1-2 % of the convolution at 256-512 px (10-30 % at 64-32 px with 256 channels, mostly the
 * writes of U to memory). */
int winograd_transform_weights(const float *weights, int out_channels, int in_channels, int64_t stride_out,
                               int64_t stride_in, int64_t stride_y, int64_t stride_x, float *transformed, int tile,
                               int threads) {
    const int blocks = out_channels / CO_BLOCK;
    if (threads > blocks) threads = blocks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    transform_job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (transform_job_t){weights, stride_out, stride_in, stride_y, stride_x, in_channels, out_channels,
                                    tile == 6 ? 6 : 4, transformed, blocks * i / threads, blocks * (i + 1) / threads};
    }
    return run_parallel(run_transform, jobs, sizeof(transform_job_t), threads);
}

/* 1x1 convolution: output[p][k] = sum_c input[p][c] W[k][c] + bias[k] (+ residual[p][k]), pixels
 * channels-last, on the Winograd products' micro-kernel (a 1x1 convolution is one product "point"
 * with no transforms around it). Why: PyTorch's 1x1 convolution of a channels-last image reached
 * 14-25 G multiply-adds per second on one AVX2 Zen 3 core for the residual blocks' shortcuts (64-256
 * channels at 256-512 px), against about 39 at the core's peak. Weights packed as
 * [out_channels / CO_BLOCK][in_channels][CO_BLOCK]. The residual may be the output itself: it is
 * read, with the bias, as the sums' starting value, before the first chunk of input channels is
 * added and the sums stored. */
#define POINTWISE_PIXELS (16 * ROWS) /* pixels per step: their input rows stay in L2 */

typedef struct {
    const float *input, *weights, *bias, *residual;
    float *output;
    int in_channels, out_channels;
    int64_t first_pixel, end_pixel; /* this thread's pixels, ROWS at a time but the last share's tail */
} pointwise_job_t;

/* ROWS pixels from `pixel` (rows: input rows of in_channels floats; out: output rows of out_channels),
 * output channels co .. co + CO_BLOCK - 1, input channels c0 .. c1 - 1 added to what is there (or to
 * bias + residual, where c0 is 0). */
static void pointwise_step(const pointwise_job_t *job, const float *rows, const float *residual, float *out, int co, int c0,
                           int c1) {
    const int C = job->in_channels, K = job->out_channels;
    const float *U = job->weights + (int64_t)co * C;
    vec acc[ROWS][NV];
    for (int r = 0; r < ROWS; r++)
        for (int v = 0; v < NV; v++) {
            const int64_t at = (int64_t)r * K + co + v * VEC;
            if (c0) {
                acc[r][v] = load(out + at);
                continue;
            }
            acc[r][v] = job->bias ? load(job->bias + co + v * VEC) : (vec){0};
            if (residual) acc[r][v] += load(residual + at);
        }
    multiply_rows(acc, rows, C, U, c0, c1);
    for (int r = 0; r < ROWS; r++)
        for (int v = 0; v < NV; v++) store(out + (int64_t)r * K + co + v * VEC, acc[r][v]);
}

/* Share `part` of `parts` of `lines` cache lines from `start` prefetched toward L2 (to be written, where `write`).
 * Why: the 1x1 convolutions stream their input and residual from memory once, and the next step's rows,
 * prefetched while this step's products run, are in cache when it starts; the hardware's own prefetchers had
 * left a 128 -> 64 channel layer at 512 x 512 at 35 ms instead of 28 (2 Zen 4 cores). */
static inline void prefetch_share(const float *start, int64_t lines, int64_t part, int64_t parts, int write) {
    for (int64_t line = lines * part / parts; line < lines * (part + 1) / parts; line++) {
        if (write)
            __builtin_prefetch(start + line * LINE_FLOATS, 1, 1);
        else
            __builtin_prefetch(start + line * LINE_FLOATS, 0, 1);
    }
}

static void *run_pointwise(void *arg) {
    const pointwise_job_t *job = arg;
    const int C = job->in_channels, K = job->out_channels;
    /* The last few pixels (fewer than ROWS) go through a zero-padded copy of ROWS rows. */
    float *tail = malloc(sizeof(float) * ROWS * ((int64_t)C + 2 * K));
    if (!tail) return (void *)1;
    float *tail_residual = tail + (int64_t)ROWS * C, *tail_out = tail_residual + (int64_t)ROWS * K;
    for (int64_t first = job->first_pixel; first < job->end_pixel; first += POINTWISE_PIXELS) {
        const int64_t end = first + POINTWISE_PIXELS < job->end_pixel ? first + POINTWISE_PIXELS : job->end_pixel;
        const int64_t whole = first + (end - first) / ROWS * ROWS, left = end - whole;
        const int64_t next_end = end + POINTWISE_PIXELS < job->end_pixel ? end + POINTWISE_PIXELS : job->end_pixel;
        const int64_t input_lines = (next_end - end) * C / LINE_FLOATS;
        const int64_t residual_lines = job->residual ? (next_end - end) * K / LINE_FLOATS : 0, steps = (whole - first) / ROWS;
        for (int co = 0; co < K; co += CO_BLOCK)
            for (int c0 = 0; c0 < C; c0 += CHUNK)
                for (int64_t p = first; p < whole; p += ROWS) {
                    if (co == 0 && c0 == 0) {
                        const int64_t step = (p - first) / ROWS;
                        prefetch_share(job->input + end * C, input_lines, step, steps, 0);
                        if (job->residual) prefetch_share(job->residual + end * K, residual_lines, step, steps, 1);
                    }
                    pointwise_step(job, job->input + p * C, job->residual ? job->residual + p * K : NULL, job->output + p * K,
                                   co, c0, c0 + CHUNK < C ? c0 + CHUNK : C);
                }
        if (left == 0) continue;
        memset(tail, 0, sizeof(float) * ROWS * ((int64_t)C + K));
        memcpy(tail, job->input + whole * C, sizeof(float) * left * C);
        if (job->residual) memcpy(tail_residual, job->residual + whole * K, sizeof(float) * left * K);
        for (int co = 0; co < K; co += CO_BLOCK)
            for (int c0 = 0; c0 < C; c0 += CHUNK)
                pointwise_step(job, tail, job->residual ? tail_residual : NULL, tail_out, co, c0, c0 + CHUNK < C ? c0 + CHUNK : C);
        memcpy(job->output + whole * K, tail_out, sizeof(float) * left * K);
    }
    free(tail);
    return NULL;
}

/* output = input W^T + bias (+ residual) for pixels x in_channels inputs (see above). Returns nonzero if
 * a working buffer could not be allocated. */
int pointwise_conv(const float *input, int64_t pixels, int in_channels, const float *weights, int out_channels,
                   const float *bias, const float *residual, float *output, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    const int64_t steps = (pixels + ROWS - 1) / ROWS;
    if (threads > steps) threads = (int)steps;
    if (threads < 1) threads = 1;
    pointwise_job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        const int64_t first = steps * i / threads * ROWS, end = steps * (i + 1) / threads * ROWS;
        jobs[i] = (pointwise_job_t){input, weights, bias, residual, output, in_channels, out_channels,
                                    first, end < pixels ? end : pixels};
    }
    return run_parallel(run_pointwise, jobs, sizeof(pointwise_job_t), threads);
}

typedef struct {
    const float *input;
    int channels;
    int64_t first_pixel, end_pixel; /* over all images: pixel p belongs to image p / pixels */
    int64_t pixels;
    double *sums; /* [batch][channels] sums, then [batch][channels] sums of squares */
    int batch;
} moments_job_t;

/* One pass over the pixels, all channels at once (a pass per channel vector would read
 * the image C / VEC times from memory): float partial sums over runs of RUN pixels,
 * added up in double. About the image's first pixel, so that a large mean does not
 * cancel the variance away. */
#define RUN 64
static void *run_moments(void *arg) {
    moments_job_t *job = arg;
    const int C = job->channels;
    double *sums = job->sums, *squares = job->sums + (int64_t)job->batch * C;
    float *partial = malloc(sizeof(float) * 2 * C);
    if (!partial) return (void *)1;
    float *run_sums = partial, *run_squares = partial + C;
    for (int64_t p = job->first_pixel; p < job->end_pixel;) {
        const int64_t n = p / job->pixels, end = (n + 1) * job->pixels < job->end_pixel ? (n + 1) * job->pixels : job->end_pixel;
        const float *shift = job->input + n * job->pixels * C;
        for (int64_t run = p; run < end; run += RUN) {
            const int64_t stop = run + RUN < end ? run + RUN : end;
            memset(partial, 0, sizeof(float) * 2 * C);
            for (int64_t i = run; i < stop; i++) {
                const float *pixel = job->input + i * C;
                for (int c = 0; c < C; c += VEC) {
                    const vec v = load(pixel + c) - load(shift + c);
                    store(run_sums + c, load(run_sums + c) + v);
                    store(run_squares + c, load(run_squares + c) + v * v);
                }
            }
            for (int c = 0; c < C; c++) {
                sums[n * C + c] += run_sums[c];
                squares[n * C + c] += run_squares[c];
            }
        }
        p = end;
    }
    free(partial);
    return NULL;
}

/* Per image and channel, what GroupNorm's statistics are made of, for an NHWC tensor
 * (channels % VEC == 0): out[0] the sum of (x - shift), out[1] the sum of (x - shift)^2,
 * out[2] the shift (the image's first pixel), each [batch][channels]. */
int channel_moments(const float *input, int batch, int64_t pixels, int channels, double *out, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    const int64_t values = (int64_t)2 * batch * channels;
    double *partial = calloc((size_t)threads * values, sizeof(double));
    if (!partial) return 1;
    moments_job_t jobs[MAX_THREADS];
    const int64_t total = (int64_t)batch * pixels;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (moments_job_t){input, channels, total * i / threads, total * (i + 1) / threads, pixels,
                                  partial + i * values, batch};
    }
    const int failed = run_parallel(run_moments, jobs, sizeof(moments_job_t), threads);
    for (int64_t k = 0; k < values; k++) {
        double sum = 0;
        for (int i = 0; i < threads; i++) sum += partial[i * values + k];
        out[k] = sum;
    }
    for (int n = 0; n < batch; n++)
        for (int c = 0; c < channels; c++) out[values + (int64_t)n * channels + c] = input[(int64_t)n * pixels * channels + c];
    free(partial);
    return failed;
}

/* GroupNorm as a per-image, per-channel affine map x * scale + shift, from channel_moments' statistics
 * (moments: [3][batch][channels] sums of (x - shift), of its squares, and the shift, over `pixels` pixels):
 * per channel the mean and the squared deviations about it, then per group of channels / groups channels
 * by Chan's combination, the biased variance as nn.GroupNorm takes it, in double. weight and bias (per
 * channel) may be NULL (no affine parameters). Why in C: the same dozen small tensor operations in PyTorch
 * cost about a third of a millisecond per convolution, about 17 ms of one face. */
void group_norm_affine(const double *moments, int batch, int channels, int groups, int64_t pixels, double eps,
                       const float *weight, const float *bias, float *scale, float *shift) {
    const int per_group = channels / groups;
    const double count = (double)pixels;
    for (int n = 0; n < batch; n++)
        for (int group = 0; group < groups; group++) {
            const int64_t first = (int64_t)n * channels + (int64_t)group * per_group;
            const int64_t values = (int64_t)batch * channels;
            double mean = 0;
            for (int c = 0; c < per_group; c++) mean += moments[2 * values + first + c] + moments[first + c] / count;
            mean /= per_group;
            double squares = 0;
            for (int c = 0; c < per_group; c++) {
                const double sum = moments[first + c], channel_mean = moments[2 * values + first + c] + sum / count;
                const double deviations = moments[values + first + c] - sum * sum / count;
                squares += (deviations > 0 ? deviations : 0) + count * (channel_mean - mean) * (channel_mean - mean);
            }
            const double inverse_std = 1.0 / sqrt(squares / (count * per_group) + eps);
            for (int c = 0; c < per_group; c++) {
                const int channel = group * per_group + c;
                const double factor = inverse_std * (weight ? (double)weight[channel] : 1.0);
                scale[first + c] = (float)factor;
                shift[first + c] = (float)((bias ? (double)bias[channel] : 0.0) - mean * factor);
            }
        }
}

/* Direct 3x3 convolutions (stride 1, zero padding 1, channels-last) of layers with few channels on one side,
 * which Winograd's tiles do not suit: a network's first layer, from an RGB image (3 -> 64 channels in CodeFormer),
 * and its last, to one (64 -> 3). PyTorch's (oneDNN) took 19.5 and 24.8 ms for those at 512 x 512 on 2 Zen 4
 * cores, 0.2 and 0.16 of their peak multiply-add rate (its other convolutions reach 0.6-0.9): its vectors run
 * along channels that are not there.
 *
 * Few inputs: the micro-kernel's ROWS pixels x CO_BLOCK output channels held in registers, one tap at a time
 * (weights [out_channels / CO_BLOCK][9][in_channels][CO_BLOCK]), as the products stage does with a point.
 * Few outputs: vectors along the input channels (a multiple of VEC), a sum per pixel and output channel added
 * up across its lanes at the end (weights [out_channels][9][in_channels]). Each thread takes whole output rows. */
#define MAX_FEW_OUTPUTS 4   /* output channels the few-outputs form keeps in registers per pixel */
#define FEW_OUTPUT_PIXELS 6 /* pixels it computes at once, each input vector loaded once per tap for all outputs */

typedef struct {
    const float *input, *weights, *bias;
    float *output;
    int height, width, in_channels, out_channels;
    int stream;                 /* the output goes to memory with streaming stores (few inputs) */
    int64_t first_row, end_row; /* over batch x height */
} direct_job_t;

/* Sum of a vector's lanes. */
static inline float lanes_sum(vec v) {
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps((__m512)v);
#else
    float sum = 0;
    for (int lane = 0; lane < VEC; lane++) sum += v[lane];
    return sum;
#endif
}

/* Whether direct_conv3x3 computes these channel counts in its few-inputs form (else few outputs). */
static int few_inputs_form(int out_channels) { return out_channels % CO_BLOCK == 0 && out_channels > MAX_FEW_OUTPUTS; }

/* Columns first_x .. first_x + count - 1 of input rows y - 1 .. y + 1 of image n into rows ([3][count][C]), zero
 * outside the image. */
static void copy_direct_rows(const direct_job_t *job, int n, int y, int first_x, int count, float *rows) {
    const int C = job->in_channels, H = job->height, W = job->width;
    memset(rows, 0, sizeof(float) * 3 * (int64_t)count * C);
    const int x0 = first_x < 0 ? 0 : first_x, x1 = first_x + count > W ? W : first_x + count;
    for (int r = 0; r < 3; r++) {
        const int source_y = y - 1 + r;
        if (source_y >= 0 && source_y < H && x1 > x0)
            memcpy(rows + ((int64_t)r * count + x0 - first_x) * C, job->input + (((int64_t)n * H + source_y) * W + x0) * C,
                   sizeof(float) * (int64_t)(x1 - x0) * C);
    }
}

/* An output row in the few-inputs form: ROWS pixels x CO_BLOCK output channels at a time, from a zero-bordered
 * copy of its three input rows (few channels: a few KiB). */
static void few_inputs_row(const direct_job_t *job, int n, int y, float *rows, float *out_row) {
    const int C = job->in_channels, K = job->out_channels, W = job->width, columns = W + 2 + ROWS;
    copy_direct_rows(job, n, y, -1, columns, rows);
    for (int x0 = 0; x0 < W; x0 += ROWS) {
        const int count = W - x0 < ROWS ? W - x0 : ROWS;
        for (int co = 0; co < K; co += CO_BLOCK) {
            vec acc[ROWS][NV];
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = job->bias ? load(job->bias + co + v * VEC) : (vec){0};
            const float *U = job->weights + (int64_t)(co / CO_BLOCK) * 9 * C * CO_BLOCK;
            for (int tap = 0; tap < 9; tap++)
                multiply_rows(acc, rows + ((int64_t)(tap / 3) * columns + x0 + tap % 3) * C, C, U + (int64_t)tap * C * CO_BLOCK, 0,
                              C);
            for (int r = 0; r < count; r++)
                for (int v = 0; v < NV; v++) {
                    float *at = out_row + (int64_t)(x0 + r) * K + co + v * VEC;
                    if (job->stream)
                        store_streaming(at, acc[r][v]);
                    else
                        store(at, acc[r][v]);
                }
        }
    }
}

/* FEW_OUTPUT_PIXELS pixels from x0, output channels k0 .. k0 + outputs - 1; source[r]: input row y - 1 + r from
 * column x0 - 1 on, NULL where that row is outside the image. One copy per number of outputs, so that the sums
 * and the weights stay in registers. */
SPECIALISED void few_outputs_step_of(const direct_job_t *job, const float *const source[3], int x0, int count, int k0,
                                     const int outputs, float *out_row) {
    const int C = job->in_channels, K = job->out_channels;
    vec acc[FEW_OUTPUT_PIXELS][MAX_FEW_OUTPUTS];
    for (int p = 0; p < FEW_OUTPUT_PIXELS; p++)
        for (int k = 0; k < outputs; k++) acc[p][k] = (vec){0};
    for (int tap = 0; tap < 9; tap++) {
        if (!source[tap / 3]) continue;
        const float *first = source[tap / 3] + (int64_t)(tap % 3) * C;
        for (int c = 0; c < C; c += VEC) {
            vec u[MAX_FEW_OUTPUTS];
            for (int k = 0; k < outputs; k++) u[k] = load(job->weights + ((int64_t)(k0 + k) * 9 + tap) * C + c);
            for (int p = 0; p < FEW_OUTPUT_PIXELS; p++) {
                const vec value = load(first + (int64_t)p * C + c);
                for (int k = 0; k < outputs; k++) acc[p][k] += value * u[k];
            }
        }
    }
    for (int p = 0; p < count; p++)
        for (int k = 0; k < outputs; k++)
            out_row[(int64_t)(x0 + p) * K + k0 + k] = lanes_sum(acc[p][k]) + (job->bias ? job->bias[k0 + k] : 0.0f);
}

static void few_outputs_step(const direct_job_t *job, const float *const source[3], int x0, int count, int k0, int outputs,
                             float *out_row) {
    switch (outputs) {
    case 1: few_outputs_step_of(job, source, x0, count, k0, 1, out_row); break;
    case 2: few_outputs_step_of(job, source, x0, count, k0, 2, out_row); break;
    case 3: few_outputs_step_of(job, source, x0, count, k0, 3, out_row); break;
    default: few_outputs_step_of(job, source, x0, count, k0, MAX_FEW_OUTPUTS, out_row);
    }
}

/* An output row in the few-outputs form. Its input rows are read where they lie (many channels: a 512 x 512 x
 * 64 image is 64 MiB, and copying three rows per output row took more time than the arithmetic), but for the
 * pixel groups at the image's left and right edges, which read a zero-bordered copy of their columns. */
static void few_outputs_row(const direct_job_t *job, int n, int y, float *edge, float *out_row) {
    const int C = job->in_channels, H = job->height, W = job->width, K = job->out_channels, span = FEW_OUTPUT_PIXELS + 2;
    for (int x0 = 0; x0 < W; x0 += FEW_OUTPUT_PIXELS) {
        const int count = W - x0 < FEW_OUTPUT_PIXELS ? W - x0 : FEW_OUTPUT_PIXELS;
        const float *source[3];
        if (x0 >= 1 && x0 + span - 1 <= W) {
            for (int r = 0; r < 3; r++) {
                const int source_y = y - 1 + r;
                source[r] = source_y < 0 || source_y >= H ? NULL : job->input + (((int64_t)n * H + source_y) * W + x0 - 1) * C;
            }
        } else {
            copy_direct_rows(job, n, y, x0 - 1, span, edge);
            for (int r = 0; r < 3; r++) source[r] = edge + (int64_t)r * span * C;
        }
        for (int k0 = 0; k0 < K; k0 += MAX_FEW_OUTPUTS)
            few_outputs_step(job, source, x0, count, k0, K - k0 < MAX_FEW_OUTPUTS ? K - k0 : MAX_FEW_OUTPUTS, out_row);
    }
}

static void *run_direct(void *arg) {
    const direct_job_t *job = arg;
    const int H = job->height, W = job->width, few_inputs = few_inputs_form(job->out_channels);
    const int64_t floats = 3 * (int64_t)(few_inputs ? W + 2 + ROWS : FEW_OUTPUT_PIXELS + 2) * job->in_channels;
    float *rows = malloc(sizeof(float) * floats);
    if (!rows) return (void *)1;
    for (int64_t image_row = job->first_row; image_row < job->end_row; image_row++) {
        const int n = (int)(image_row / H), y = (int)(image_row % H);
        float *out_row = job->output + image_row * W * job->out_channels;
        if (few_inputs)
            few_inputs_row(job, n, y, rows, out_row);
        else
            few_outputs_row(job, n, y, rows, out_row);
    }
    free(rows);
    if (job->stream) fence_streaming();
    return NULL;
}

/* output = conv3x3(input) + bias for images with few input channels (out_channels a multiple of CO_BLOCK and
 * above MAX_FEW_OUTPUTS; weights [out_channels / CO_BLOCK][9][in_channels][CO_BLOCK]) or else few output
 * channels (any number, MAX_FEW_OUTPUTS per pass; in_channels a multiple of VEC; weights
 * [out_channels][9][in_channels]). stream: the few-inputs form writes the output with streaming stores, where it
 * is aligned to the vector's size (the caller asks for them as for winograd_conv3x3). Returns nonzero if a
 * thread's working rows could not be allocated. */
int direct_conv3x3(const float *input, int batch, int height, int width, int in_channels, const float *weights,
                   int out_channels, const float *bias, float *output, int stream, int threads) {
    const int64_t rows = (int64_t)batch * height;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > rows) threads = (int)rows;
    if (threads < 1) threads = 1;
    stream = stream && (uintptr_t)output % (VEC * sizeof(float)) == 0;
    direct_job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++)
        jobs[i] = (direct_job_t){input, weights, bias, output, height, width, in_channels, out_channels, stream,
                                 rows * i / threads, rows * (i + 1) / threads};
    return run_parallel(run_direct, jobs, sizeof(direct_job_t), threads);
}

/* The most output channels the few-outputs form of direct_conv3x3 takes in one pass over the pixels. */
int direct_few_outputs(void) { return MAX_FEW_OUTPUTS; }
