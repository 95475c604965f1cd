/*
 * 3x3 convolution (stride 1, zero padding 1) by Winograd's minimal filtering
 * F(4x4, 3x3), float32, channels-last (NHWC) tensors.
 *
 * Why: a direct 3x3 convolution spends 9 multiply-adds per output pixel,
 * input channel and output channel; F(4x4, 3x3) computes a 4x4 output tile
 * from a 6x6 input tile with 36, i.e. 2.25 instead of 9 per pixel (4x
 * fewer). The transforms around the products cost a few adds per value;
 * they are done here block by block so that the transformed tiles stay in
 * the CPU's cache instead of travelling through memory (which is what makes
 * a Winograd convolution assembled from framework operations slower than a
 * direct one).
 *
 * Two producers of the input are folded into the read of each block, so
 * their outputs never exist as full images (saving a write and a read of the
 * whole feature map, and the page faults of a fresh allocation):
 *  - a per-channel affine map followed by SiLU: GroupNorm + SiLU, whose
 *    statistics come from channel_moments below;
 *  - 2x nearest-neighbour upsampling of the input.
 * The convolution's zero padding applies to the produced input, as it would
 * if the producers had run on their own.
 *
 * Layout of the pre-transformed weights U (computed in Python, in float64,
 * from the 3x3 kernel g as G g G^T): U[36][out_channels / CO_BLOCK][in_channels][CO_BLOCK],
 * so that the micro-kernel reads each point's block of weights contiguously.
 * Requirements checked by the caller: in_channels % 16 == 0 and
 * out_channels % CO_BLOCK == 0 (CO_BLOCK is exported by winograd_co_block).
 *
 * Accuracy: the transforms' coefficients (0, +-1, +-2, +-4, +-5, +-8 and
 * G's 1/4, 1/6, 1/12, 1/24) keep float32 rounding within about 1e-4 of the
 * official network's outputs over the whole CodeFormer network (the tests
 * check it).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
#define BLOCK_KIB 512 /* transformed input per thread block: stays in L2 */
#endif
#define ROWS 6                 /* tiles per micro-kernel step (register block rows) */
#define CO_BLOCK (VEC * NV)    /* output channels per micro-kernel step */
#define ALPHA 6                /* input tile side */
#define TILE 4                 /* output tile side */
#define POINTS (ALPHA * ALPHA) /* products per tile and channel pair */
#define MAX_THREADS 256

typedef float vec __attribute__((vector_size(VEC * sizeof(float))));
typedef int ivec __attribute__((vector_size(VEC * sizeof(int))));
/* The same vector in memory at any float's alignment: loads and stores go through it
 * (a memcpy-based load compiled, for AVX2, into round trips through the stack). */
typedef float unaligned_vec __attribute__((vector_size(VEC * sizeof(float)), aligned(4), may_alias));

static inline vec load(const float *p) { return *(const unaligned_vec *)p; }

static inline void store(float *p, vec v) { *(unaligned_vec *)p = v; }

static inline vec splat(float s) { return (vec){0} + s; }

static inline vec blend(ivec mask, vec yes, vec no) { return (vec)(((ivec)yes & mask) | ((ivec)no & ~mask)); }

/* exp(x) for |x| < 88, relative error about 2e-7: range reduction by
 * powers of two and a degree-6 polynomial (the Cephes expf coefficients). */
static inline vec vexp(vec x) {
    x = blend(x < splat(-87.0f), splat(-87.0f), x);
    x = blend(x > splat(88.0f), splat(88.0f), x);
    const vec scaled = x * 1.44269504088896341f + 0.5f;
    ivec n = __builtin_convertvector(scaled, ivec);
    n -= (ivec)(__builtin_convertvector(n, vec) > scaled) & 1; /* truncation to floor */
    const vec nf = __builtin_convertvector(n, vec);
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

int winograd_vector_floats(void) { return VEC; }

typedef struct {
    const float *input;
    const float *norm_scale; /* [batch][in_channels] or NULL */
    const float *norm_shift;
    const float *weights;  /* U */
    const float *bias;     /* may be NULL */
    const float *residual; /* may be NULL: added to the output (same layout) */
    float *output;
    int batch, height, width, in_channels, out_channels, upsample;
    int tiles_y, tiles_x;
    int64_t total_tiles;
    int block_tiles; /* tiles per block, multiple of ROWS */
    int64_t first_block, end_block;
} job_t;

/* The 6 input rows under one row of tiles, columns first_x - 1 .. first_x + 4 * count,
 * as the convolution sees them: upsampled, normalised and activated, zero outside. */
static void fill_strip(const job_t *job, int n, int first_y, int first_x, int count, float *strip) {
    const int C = job->in_channels, H = job->height, W = job->width, up = job->upsample;
    const int source_w = W >> up;
    const int columns = TILE * count + 2;
    const float *image = job->input + (int64_t)n * (H >> up) * source_w * C;
    const float *scale = job->norm_scale ? job->norm_scale + (int64_t)n * C : NULL;
    const float *shift = job->norm_shift ? job->norm_shift + (int64_t)n * C : NULL;
    for (int r = 0; r < ALPHA; r++) {
        const int y = first_y - 1 + r;
        float *row = strip + (int64_t)r * columns * C;
        for (int cx = 0; cx < columns; cx++) {
            const int x = first_x - 1 + cx;
            float *dst = row + (int64_t)cx * C;
            if (y < 0 || y >= H || x < 0 || x >= W) {
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

/* B^T d B for the tiles of one strip, into V[36][block_tiles][C] at slots first_slot.. */
static void transform_strip(const job_t *job, const float *strip, int count, int first_slot, float *V) {
    const int C = job->in_channels;
    const int64_t columns = TILE * count + 2;
    const int64_t stride_point = (int64_t)job->block_tiles * C;
    for (int k = 0; k < count; k++) {
        float *dst = V + (int64_t)(first_slot + k) * C;
        const float *tile = strip + (int64_t)TILE * k * C;
        for (int c = 0; c < C; c += VEC) {
            vec t[ALPHA][ALPHA];
            for (int j = 0; j < ALPHA; j++) {
                vec d[ALPHA];
                for (int i = 0; i < ALPHA; i++) d[i] = load(tile + ((int64_t)i * columns + j) * C + c);
                t[0][j] = 4 * d[0] - 5 * d[2] + d[4];
                t[1][j] = -4 * (d[1] + d[2]) + d[3] + d[4];
                t[2][j] = 4 * (d[1] - d[2]) - d[3] + d[4];
                t[3][j] = 2 * (d[3] - d[1]) - d[2] + d[4];
                t[4][j] = 2 * (d[1] - d[3]) - d[2] + d[4];
                t[5][j] = 4 * d[1] - 5 * d[3] + d[5];
            }
            for (int i = 0; i < ALPHA; i++) {
                const vec *d = t[i];
                float *row = dst + (int64_t)(i * ALPHA) * stride_point + c;
                store(row + 0 * stride_point, 4 * d[0] - 5 * d[2] + d[4]);
                store(row + 1 * stride_point, -4 * (d[1] + d[2]) + d[3] + d[4]);
                store(row + 2 * stride_point, 4 * (d[1] - d[2]) - d[3] + d[4]);
                store(row + 3 * stride_point, 2 * (d[3] - d[1]) - d[2] + d[4]);
                store(row + 4 * stride_point, 2 * (d[1] - d[3]) - d[2] + d[4]);
                store(row + 5 * stride_point, 4 * d[1] - 5 * d[3] + d[5]);
            }
        }
    }
}

/* The block's transformed input: strip by strip (a block may span rows of tiles and
 * images); slots past the last tile are zero. */
static void transform_block(const job_t *job, int64_t first_tile, float *strip, float *V) {
    const int T = job->block_tiles, per_image = job->tiles_y * job->tiles_x;
    int slot = 0;
    while (slot < T && first_tile + slot < job->total_tiles) {
        const int64_t tile = first_tile + slot;
        const int n = (int)(tile / per_image), rest = (int)(tile % per_image);
        const int ty = rest / job->tiles_x, tx = rest % job->tiles_x;
        int count = job->tiles_x - tx;
        if (count > T - slot) count = T - slot;
        if (count > job->total_tiles - tile) count = (int)(job->total_tiles - tile);
        fill_strip(job, n, ty * TILE, tx * TILE, count, strip);
        transform_strip(job, strip, count, slot, V);
        slot += count;
    }
    for (; slot < T; slot++)
        for (int p = 0; p < POINTS; p++) memset(V + ((int64_t)p * T + slot) * job->in_channels, 0, sizeof(float) * job->in_channels);
}

/* M[p][t][0:CO_BLOCK] = V[p][t][:] @ U[p][:][co:co+CO_BLOCK] for all 36 points p
 * and the block's tiles, ROWS tiles at a time held in registers. */
static void multiply(const job_t *job, const float *V, int co, float *M) {
    const int C = job->in_channels, K = job->out_channels, T = job->block_tiles;
    for (int p = 0; p < POINTS; p++) {
        const float *Vp = V + (int64_t)p * T * C;
        const float *Up = job->weights + (int64_t)p * C * K + (int64_t)co * C;
        float *Mp = M + (int64_t)p * T * CO_BLOCK;
        for (int t0 = 0; t0 < T; t0 += ROWS) {
            vec acc[ROWS][NV];
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = (vec){0};
            const float *Vt = Vp + (int64_t)t0 * C;
            for (int ci = 0; ci < C; ci++) {
                vec u[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) u[v] = load(Up + (int64_t)ci * CO_BLOCK + v * VEC);
#pragma GCC unroll 6
                for (int r = 0; r < ROWS; r++) {
                    const float s = Vt[(int64_t)r * C + ci];
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[r][v] += s * u[v];
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) store(Mp + (int64_t)(t0 + r) * CO_BLOCK + v * VEC, acc[r][v]);
        }
    }
}

/* A^T m A for each tile of the block, plus bias (and residual), written to
 * the output pixels that lie inside the image. */
static void output_transform(const job_t *job, int64_t first_tile, int co, const float *M) {
    const int K = job->out_channels, H = job->height, W = job->width, T = job->block_tiles;
    const int per_image = job->tiles_y * job->tiles_x;
    for (int slot = 0; slot < T; slot++) {
        const int64_t tile = first_tile + slot;
        if (tile >= job->total_tiles) return;
        const int n = (int)(tile / per_image), rest = (int)(tile % per_image);
        const int y0 = (rest / job->tiles_x) * TILE, x0 = (rest % job->tiles_x) * TILE;
        for (int v = 0; v < NV; v++) {
            const int c = co + v * VEC;
            vec m[ALPHA][ALPHA], t[TILE][ALPHA];
            for (int p = 0; p < POINTS; p++) m[p / ALPHA][p % ALPHA] = load(M + ((int64_t)p * T + slot) * CO_BLOCK + v * VEC);
            for (int j = 0; j < ALPHA; j++) {
                const vec m0 = m[0][j], m1 = m[1][j], m2 = m[2][j], m3 = m[3][j], m4 = m[4][j], m5 = m[5][j];
                t[0][j] = m0 + m1 + m2 + m3 + m4;
                t[1][j] = m1 - m2 + 2 * (m3 - m4);
                t[2][j] = m1 + m2 + 4 * (m3 + m4);
                t[3][j] = m1 - m2 + 8 * (m3 - m4) + m5;
            }
            const vec b = job->bias ? load(job->bias + c) : (vec){0};
            for (int i = 0; i < TILE; i++) {
                const int y = y0 + i;
                if (y >= H) break;
                const vec m0 = t[i][0], m1 = t[i][1], m2 = t[i][2], m3 = t[i][3], m4 = t[i][4], m5 = t[i][5];
                const vec out[TILE] = {
                    m0 + m1 + m2 + m3 + m4 + b,
                    m1 - m2 + 2 * (m3 - m4) + b,
                    m1 + m2 + 4 * (m3 + m4) + b,
                    m1 - m2 + 8 * (m3 - m4) + m5 + b,
                };
                for (int j = 0; j < TILE && x0 + j < W; j++) {
                    const int64_t offset = (((int64_t)n * H + y) * W + x0 + j) * K + c;
                    const vec value = job->residual ? out[j] + load(job->residual + offset) : out[j];
                    store(job->output + offset, value);
                }
            }
        }
    }
}

static void *run_blocks(void *arg) {
    const job_t *job = arg;
    const int T = job->block_tiles;
    float *V = malloc(sizeof(float) * POINTS * T * job->in_channels);
    float *M = malloc(sizeof(float) * POINTS * T * CO_BLOCK);
    float *strip = malloc(sizeof(float) * ALPHA * (TILE * T + 2) * job->in_channels);
    const int ok = V && M && strip;
    for (int64_t block = job->first_block; ok && block < job->end_block; block++) {
        const int64_t first_tile = block * T;
        transform_block(job, first_tile, strip, V);
        for (int co = 0; co < job->out_channels; co += CO_BLOCK) {
            multiply(job, V, co, M);
            output_transform(job, first_tile, co, M);
        }
    }
    free(V);
    free(M);
    free(strip);
    return ok ? NULL : (void *)1;
}

/* Run run_blocks' shares of a job on `threads` threads (the caller's one included).
 * Returns nonzero if a share failed (no memory for its buffers). */
static int run_parallel(void *(*work)(void *), void *jobs, size_t job_size, int threads) {
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

/* output = conv3x3(produce(input)) + bias (+ residual). height and width are the
 * convolution's (after upsampling: the input is height/2 x width/2 when
 * upsample is 1). Returns 0 on success, nonzero if the working buffers could not be
 * allocated (the caller then falls back to a direct convolution). */
int winograd_conv3x3(const float *input, int batch, int height, int width, int in_channels, int upsample,
                     const float *norm_scale, const float *norm_shift, const float *weights, int out_channels,
                     const float *bias, const float *residual, float *output, int threads) {
    job_t base = {
        .input = input, .norm_scale = norm_scale, .norm_shift = norm_shift, .weights = weights, .bias = bias,
        .residual = residual, .output = output, .batch = batch, .height = height, .width = width,
        .in_channels = in_channels, .out_channels = out_channels, .upsample = upsample ? 1 : 0,
        .tiles_y = (height + TILE - 1) / TILE, .tiles_x = (width + TILE - 1) / TILE,
    };
    base.total_tiles = (int64_t)batch * base.tiles_y * base.tiles_x;
    int block_tiles = (BLOCK_KIB * 1024) / (POINTS * in_channels * (int)sizeof(float));
    block_tiles = block_tiles < ROWS ? ROWS : block_tiles - block_tiles % ROWS;
    base.block_tiles = block_tiles;
    const int64_t blocks = (base.total_tiles + block_tiles - 1) / block_tiles;
    if (threads > blocks) threads = (int)blocks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        jobs[i] = base;
        jobs[i].first_block = blocks * i / threads;
        jobs[i].end_block = blocks * (i + 1) / threads;
    }
    return run_parallel(run_blocks, jobs, sizeof(job_t), threads);
}

typedef struct {
    const float *weights; /* g: [out_channels][in_channels][3][3] at the given strides (floats) */
    int64_t stride_out, stride_in, stride_y, stride_x;
    int in_channels, out_channels;
    float *transformed; /* U */
    int first_block, end_block; /* output-channel blocks of CO_BLOCK */
} transform_job_t;

/* Winograd F(4x4, 3x3) filter transform G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6],
 * [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]: rows of G applied to (a, b, c). */
#define G_ROWS(a, b, c)                                                                                              \
    {(a) * 0.25f, ((a) + (b) + (c)) * (-1.0f / 6), ((a) - (b) + (c)) * (-1.0f / 6),                               \
     (a) * (1.0f / 24) + (b) * (1.0f / 12) + (c) * (1.0f / 6), (a) * (1.0f / 24) - (b) * (1.0f / 12) + (c) * (1.0f / 6), (c)}

static void *run_transform(void *arg) {
    const transform_job_t *job = arg;
    const int C = job->in_channels, K = job->out_channels;
    const int64_t per_point = (int64_t)K * C;
    for (int kb = job->first_block; kb < job->end_block; kb++) {
        for (int c = 0; c < C; c++) {
            for (int v = 0; v < NV; v++) {
                vec g[3][3];
                for (int y = 0; y < 3; y++)
                    for (int x = 0; x < 3; x++)
                        for (int lane = 0; lane < VEC; lane++) {
                            const int64_t k = (int64_t)kb * CO_BLOCK + v * VEC + lane;
                            g[y][x][lane] = job->weights[k * job->stride_out + c * job->stride_in + y * job->stride_y + x * job->stride_x];
                        }
                vec t[ALPHA][3]; /* G g */
                for (int x = 0; x < 3; x++) {
                    const vec column[ALPHA] = G_ROWS(g[0][x], g[1][x], g[2][x]);
                    for (int i = 0; i < ALPHA; i++) t[i][x] = column[i];
                }
                float *out = job->transformed + ((int64_t)kb * C + c) * CO_BLOCK + v * VEC;
                for (int i = 0; i < ALPHA; i++) {
                    const vec row[ALPHA] = G_ROWS(t[i][0], t[i][1], t[i][2]); /* (G g) G^T */
                    for (int j = 0; j < ALPHA; j++) store(out + (i * ALPHA + j) * per_point, row[j]);
                }
            }
        }
    }
    return NULL;
}

/* U = G g G^T for every filter, in float32, laid out for winograd_conv3x3:
 * U[36][out_channels / CO_BLOCK][in_channels][CO_BLOCK]. Computed on each call rather than
 * kept: it costs about 1 % of the convolution and would take 4x the weights' memory. */
int winograd_transform_weights(const float *weights, int out_channels, int in_channels, int64_t stride_out,
                               int64_t stride_in, int64_t stride_y, int64_t stride_x, float *transformed, int threads) {
    const int blocks = out_channels / CO_BLOCK;
    if (threads > blocks) threads = blocks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    transform_job_t jobs[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (transform_job_t){weights, stride_out, stride_in, stride_y, stride_x, in_channels, out_channels,
                                    transformed, blocks * i / threads, blocks * (i + 1) / threads};
    }
    return run_parallel(run_transform, jobs, sizeof(transform_job_t), threads);
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
