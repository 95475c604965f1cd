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
 * Layout of the pre-transformed weights U (computed in Python, in float64,
 * from the 3x3 kernel g as G g G^T): U[36][in_channels][out_channels].
 * Requirements checked by the caller: in_channels % 16 == 0 and
 * out_channels % CO_BLOCK == 0 (CO_BLOCK is exported by winograd_co_block).
 *
 * Accuracy: the transforms' coefficients (0, +-1, +-2, +-4, +-5, +-8 and
 * G's 1/4, 1/6, 1/12, 1/24) keep float32 rounding within about 2e-5 of the
 * direct convolution over the whole CodeFormer network (measured against
 * the official network's outputs; the tests check it).
 */
#include <pthread.h>
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

#define ROWS 6                 /* tiles per micro-kernel step (register block rows) */
#define CO_BLOCK (VEC * NV)    /* output channels per micro-kernel step */
#define ALPHA 6                /* input tile side */
#define TILE 4                 /* output tile side */
#define POINTS (ALPHA * ALPHA) /* products per tile and channel pair */
#define MAX_THREADS 256

typedef float vec __attribute__((vector_size(VEC * sizeof(float)), aligned(4)));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void store(float *p, vec v) { memcpy(p, &v, sizeof(v)); }

int winograd_co_block(void) { return CO_BLOCK; }

typedef struct {
    const float *input;
    const float *weights; /* U */
    const float *bias;    /* may be NULL */
    const float *residual; /* may be NULL: added to the output (same layout) */
    float *output;
    int batch, height, width, in_channels, out_channels;
    int tiles_y, tiles_x;
    long total_tiles;
    int block_tiles;       /* tiles per block, multiple of ROWS */
    long first_block, end_block;
} job_t;

/* B^T d B for one 6x6 tile of one channel vector; rows/columns outside the
 * image read as zero (that is the padding). V is [36][block_tiles][C]. */
static void input_transform(const job_t *job, long tile, int slot, float *V) {
    const int C = job->in_channels, H = job->height, W = job->width;
    const long stride_point = (long)job->block_tiles * C;
    float *dst = V + (long)slot * C;
    if (tile >= job->total_tiles) {
        for (int p = 0; p < POINTS; p++) memset(dst + p * stride_point, 0, sizeof(float) * C);
        return;
    }
    const int per_image = job->tiles_y * job->tiles_x;
    const int n = (int)(tile / per_image), rest = (int)(tile % per_image);
    const int y0 = (rest / job->tiles_x) * TILE - 1, x0 = (rest % job->tiles_x) * TILE - 1;
    const float *image = job->input + (long)n * H * W * C;
    const vec zero = {0};
    for (int c = 0; c < C; c += VEC) {
        vec d[ALPHA][ALPHA], t[ALPHA][ALPHA];
        for (int i = 0; i < ALPHA; i++) {
            const int y = y0 + i;
            for (int j = 0; j < ALPHA; j++) {
                const int x = x0 + j;
                d[i][j] = (y >= 0 && y < H && x >= 0 && x < W) ? load(image + ((long)y * W + x) * C + c) : zero;
            }
        }
        for (int j = 0; j < ALPHA; j++) {
            const vec d0 = d[0][j], d1 = d[1][j], d2 = d[2][j], d3 = d[3][j], d4 = d[4][j], d5 = d[5][j];
            t[0][j] = 4 * d0 - 5 * d2 + d4;
            t[1][j] = -4 * (d1 + d2) + d3 + d4;
            t[2][j] = 4 * (d1 - d2) - d3 + d4;
            t[3][j] = 2 * (d3 - d1) - d2 + d4;
            t[4][j] = 2 * (d1 - d3) - d2 + d4;
            t[5][j] = 4 * d1 - 5 * d3 + d5;
        }
        for (int i = 0; i < ALPHA; i++) {
            const vec d0 = t[i][0], d1 = t[i][1], d2 = t[i][2], d3 = t[i][3], d4 = t[i][4], d5 = t[i][5];
            float *row = dst + (long)(i * ALPHA) * stride_point + c;
            store(row + 0 * stride_point, 4 * d0 - 5 * d2 + d4);
            store(row + 1 * stride_point, -4 * (d1 + d2) + d3 + d4);
            store(row + 2 * stride_point, 4 * (d1 - d2) - d3 + d4);
            store(row + 3 * stride_point, 2 * (d3 - d1) - d2 + d4);
            store(row + 4 * stride_point, 2 * (d1 - d3) - d2 + d4);
            store(row + 5 * stride_point, 4 * d1 - 5 * d3 + d5);
        }
    }
}

/* M[p][t][0:CO_BLOCK] = V[p][t][:] @ U[p][:][co:co+CO_BLOCK] for all 36 points p
 * and the block's tiles, ROWS tiles at a time held in registers. */
static void multiply(const job_t *job, const float *V, int co, float *M) {
    const int C = job->in_channels, K = job->out_channels, T = job->block_tiles;
    for (int p = 0; p < POINTS; p++) {
        const float *Vp = V + (long)p * T * C;
        const float *Up = job->weights + (long)p * C * K + co;
        float *Mp = M + (long)p * T * CO_BLOCK;
        for (int t0 = 0; t0 < T; t0 += ROWS) {
            vec acc[ROWS][NV];
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = (vec){0};
            const float *Vt = Vp + (long)t0 * C;
            for (int ci = 0; ci < C; ci++) {
                vec u[NV];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) u[v] = load(Up + (long)ci * K + v * VEC);
#pragma GCC unroll 6
                for (int r = 0; r < ROWS; r++) {
                    const float s = Vt[(long)r * C + ci];
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[r][v] += s * u[v];
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++) store(Mp + (long)(t0 + r) * CO_BLOCK + v * VEC, acc[r][v]);
        }
    }
}

/* A^T m A for each tile of the block, plus bias (and residual), written to
 * the output pixels that lie inside the image. */
static void output_transform(const job_t *job, long first_tile, int co, const float *M) {
    const int K = job->out_channels, H = job->height, W = job->width, T = job->block_tiles;
    const int per_image = job->tiles_y * job->tiles_x;
    for (int slot = 0; slot < T; slot++) {
        const long tile = first_tile + slot;
        if (tile >= job->total_tiles) return;
        const int n = (int)(tile / per_image), rest = (int)(tile % per_image);
        const int y0 = (rest / job->tiles_x) * TILE, x0 = (rest % job->tiles_x) * TILE;
        for (int v = 0; v < NV; v++) {
            const int c = co + v * VEC;
            vec m[ALPHA][ALPHA], t[TILE][ALPHA];
            for (int p = 0; p < POINTS; p++) m[p / ALPHA][p % ALPHA] = load(M + ((long)p * T + slot) * CO_BLOCK + v * VEC);
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
                    const long offset = (((long)n * H + y) * W + x0 + j) * K + c;
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
    float *V = aligned_alloc(64, sizeof(float) * POINTS * T * job->in_channels);
    float *M = aligned_alloc(64, sizeof(float) * POINTS * T * CO_BLOCK);
    if (!V || !M) {
        free(V);
        free(M);
        return (void *)1;
    }
    for (long block = job->first_block; block < job->end_block; block++) {
        const long first_tile = block * T;
        for (int slot = 0; slot < T; slot++) input_transform(job, first_tile + slot, slot, V);
        for (int co = 0; co < job->out_channels; co += CO_BLOCK) {
            multiply(job, V, co, M);
            output_transform(job, first_tile, co, M);
        }
    }
    free(V);
    free(M);
    return NULL;
}

/* Returns 0 on success, nonzero if memory for the per-thread buffers or a
 * thread could not be had (the caller then falls back to a direct convolution). */
int winograd_conv3x3(const float *input, int batch, int height, int width, int in_channels, const float *weights,
                     int out_channels, const float *bias, const float *residual, float *output, int threads) {
    job_t base = {input, weights, bias, residual, output, batch, height, width, in_channels, out_channels};
    base.tiles_y = (height + TILE - 1) / TILE;
    base.tiles_x = (width + TILE - 1) / TILE;
    base.total_tiles = (long)batch * base.tiles_y * base.tiles_x;
    /* Transformed input block of about 96 KiB per thread: it stays in L2 while
     * every output-channel block reuses it. */
    int block_tiles = (BLOCK_KIB * 1024) / (POINTS * in_channels * (int)sizeof(float));
    block_tiles = block_tiles < ROWS ? ROWS : block_tiles - block_tiles % ROWS;
    base.block_tiles = block_tiles;
    const long blocks = (base.total_tiles + block_tiles - 1) / block_tiles;
    if (threads < 1) threads = 1;
    if (threads > blocks) threads = (int)blocks;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    job_t jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int created[MAX_THREADS] = {0};
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        jobs[i] = base;
        jobs[i].first_block = blocks * i / threads;
        jobs[i].end_block = blocks * (i + 1) / threads;
    }
    for (int i = 1; i < threads; i++) {
        created[i] = pthread_create(&ids[i], NULL, run_blocks, &jobs[i]) == 0;
        /* No thread to be had: do this share on the calling thread instead. */
        if (!created[i]) failed |= run_blocks(&jobs[i]) != NULL;
    }
    failed |= run_blocks(&jobs[0]) != NULL;
    for (int i = 1; i < threads; i++) {
        if (created[i]) {
            void *result;
            pthread_join(ids[i], &result);
            failed |= result != NULL;
        }
    }
    return failed;
}
