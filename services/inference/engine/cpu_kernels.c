/* Block-quantized weights times fp32 activations on CPU (AVX-512): decode steps (q4_matmul, q8_matmul)
 * and prompts that the prefix cache may reuse (q4_rows, q8_rows, further down).
 *
 * The default model ships as GGUF Q4_1 (linear layers) and Q8_0 (embeddings / LM head): every
 * block of 32 weights is d*q + m (q in 0..15) or d*q (q in -127..127). The fp32 copy the service
 * loads holds exactly those values, so reading them back in their 4.5/8.5-bit form is lossless and
 * moves 4-6x fewer bytes per decode step than fp32, which is what bounds decode on this CPU.
 *
 * y[r, n] = sum_k x[r, k] * w[n, k], activations fp32 (no activation quantization). Decode: per block of 32,
 * sum_k x_k (d q_k + m) is computed as d * (sum_k q_k x_k) + m * (sum_k x_k), the form llama.cpp's
 * dot products use: the inner loop then multiplies the small integers q_k (exact in fp32) and never
 * builds the weights themselves. Outputs are laid out in panels of 16 (one vector lane per output):
 * q[16p .. 16p+15, k] is converted once per k and multiplied by a broadcast activation of every row
 * in the tile (an outer product, the shape that keeps both FMA ports busy when rows share weights).
 *
 * Every output adds its products in one fixed order (k = 0, 1, ... within a block, then the block's
 * two terms, block after block) whatever the tile shape, the number of rows or threads: a row gets
 * bit-identical results alone or in a batch.
 *
 * Panel layout (outputs padded with zero weights to a multiple of 16):
 *   Q4: qs[p][K/2][16] bytes, byte j of lane l = q[16p+l][2j] | q[16p+l][2j+1] << 4;
 *       d[p][K/32][16], m[p][K/32][16].
 *   Q8: qs[p][K][16] int8; d[p][K/32][16].
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

/* One panel's q at k = 2j and 2j + 1, as floats. */
static inline void q4_pair(const void *qs, int64_t j, __m512 *q0, __m512 *q1) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)qs + j * 16)));
    *q0 = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    *q1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
}

static inline void q8_pair(const void *qs, int64_t j, __m512 *q0, __m512 *q1) {
    const int8_t *p = (const int8_t *)qs + j * 32;
    *q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    *q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
}

/* Bytes of one panel's quantized weights. */
static inline int64_t q4_panel_bytes(int64_t K) { return K * 8; }
static inline int64_t q8_panel_bytes(int64_t K) { return K * 16; }

/* ROWS rows times NP panels starting at panel p0 (np of them real; the others repeat p0 and are not
 * stored). xs[r][b]: the sum of row r's activations in block b (used with m; NULL for Q8). Per k
 * pair: each panel's q is converted once, then each row broadcasts its two activations and adds its
 * products to every panel; at the end of a block the block's sums join the totals. */
#define PTILE(KIND, ROWS, NP)                                                                        \
    static void KIND##_tile_##ROWS##x##NP(const float *x, int64_t ldx, const float *xs, const void *qs,  \
                                          const float *d, const float *m, int64_t N, int64_t K,      \
                                          int64_t p0, int64_t np, float *y, int64_t ldy) {           \
        const int64_t nb = K / 32;                                                                   \
        const char *q[NP];                                                                           \
        const float *dp[NP], *mp[NP];                                                                \
        __m512 acc[ROWS][NP];                                                                        \
        for (int j = 0; j < NP; j++) {                                                               \
            const int64_t p = p0 + (j < np ? j : 0);                                                 \
            q[j] = (const char *)qs + p * KIND##_panel_bytes(K);                                     \
            dp[j] = d + p * nb * 16;                                                                 \
            mp[j] = m ? m + p * nb * 16 : NULL;                                                      \
            for (int r = 0; r < ROWS; r++) acc[r][j] = _mm512_setzero_ps();                          \
        }                                                                                            \
        for (int64_t b = 0; b < nb; b++) {                                                           \
            __m512 blk[ROWS][NP];                                                                    \
            for (int r = 0; r < ROWS; r++)                                                           \
                for (int j = 0; j < NP; j++) blk[r][j] = _mm512_setzero_ps();                        \
            for (int64_t i = 0; i < 16; i++) {                                                       \
                const int64_t pair = b * 16 + i;                                                     \
                __m512 q0[NP], q1[NP];                                                               \
                for (int j = 0; j < NP; j++) KIND##_pair(q[j], pair, &q0[j], &q1[j]);                \
                for (int r = 0; r < ROWS; r++) {                                                     \
                    const __m512 x0 = _mm512_set1_ps(x[r * ldx + 2 * pair]);                         \
                    const __m512 x1 = _mm512_set1_ps(x[r * ldx + 2 * pair + 1]);                     \
                    for (int j = 0; j < NP; j++) {                                                   \
                        blk[r][j] = _mm512_fmadd_ps(q0[j], x0, blk[r][j]);                           \
                        blk[r][j] = _mm512_fmadd_ps(q1[j], x1, blk[r][j]);                           \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
            for (int j = 0; j < NP; j++) {                                                           \
                const __m512 dv = _mm512_loadu_ps(dp[j] + b * 16);                                   \
                for (int r = 0; r < ROWS; r++) acc[r][j] = _mm512_fmadd_ps(dv, blk[r][j], acc[r][j]); \
                if (mp[j]) {                                                                         \
                    const __m512 mv = _mm512_loadu_ps(mp[j] + b * 16);                               \
                    for (int r = 0; r < ROWS; r++)                                                   \
                        acc[r][j] = _mm512_fmadd_ps(mv, _mm512_set1_ps(xs[r * nb + b]), acc[r][j]);  \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        for (int j = 0; j < np; j++) {                                                               \
            const int64_t n0 = (p0 + j) * 16, left = N - n0;                                         \
            const __mmask16 keep = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);   \
            for (int r = 0; r < ROWS; r++) _mm512_mask_storeu_ps(y + r * ldy + n0, keep, acc[r][j]); \
        }                                                                                            \
    }

/* Tile shapes: enough independent accumulators to hide the FMA latency (8+), few enough to keep the
 * block sums, the converted q and two activations in registers. */
#define PTILES(KIND)                                                                                 \
    PTILE(KIND, 1, 8) PTILE(KIND, 2, 4) PTILE(KIND, 3, 3) PTILE(KIND, 4, 3) PTILE(KIND, 1, 2)        \
    PTILE(KIND, 2, 2) PTILE(KIND, 3, 2) PTILE(KIND, 4, 2) PTILE(KIND, 5, 2) PTILE(KIND, 6, 2)        \
    PTILE(KIND, 7, 2) PTILE(KIND, 8, 2)                                                              \
    static void KIND##_matmul_(const float *x, int64_t ldx, const float *xs, const void *qs, const float *d, \
                               const float *m, int64_t M, int64_t N, int64_t K, float *y, int64_t ldy, \
                               int threads) {                                                        \
        static const int width[9] = {0, 8, 4, 3, 3, 2, 2, 2, 2};                                     \
        const int64_t panels = (N + 15) / 16, np = width[M < 8 ? M : 8];                             \
        const int64_t tiles = (panels + np - 1) / np, nb = K / 32;                                   \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if (threads > 1)")           \
        for (int64_t t = 0; t < tiles; t++) {                                                        \
            const int64_t p0 = t * np, n = panels - p0 < np ? panels - p0 : np;                      \
            if (M <= 4) { /* few rows: wider tiles, for enough accumulators */                        \
                switch (M) {                                                                         \
                case 1: KIND##_tile_1x8(x, ldx, xs, qs, d, m, N, K, p0, n, y, ldy); break;           \
                case 2: KIND##_tile_2x4(x, ldx, xs, qs, d, m, N, K, p0, n, y, ldy); break;           \
                case 3: KIND##_tile_3x3(x, ldx, xs, qs, d, m, N, K, p0, n, y, ldy); break;           \
                default: KIND##_tile_4x3(x, ldx, xs, qs, d, m, N, K, p0, n, y, ldy); break;          \
                }                                                                                    \
                continue;                                                                            \
            }                                                                                        \
            /* groups of up to 8 rows pass over the tile's 2 panels while they are in cache */        \
            for (int64_t r = 0; r < M; r += 8) {                                                     \
                const float *xr = x + r * ldx, *sr = xs ? xs + r * nb : NULL;                        \
                float *yr = y + r * ldy;                                                             \
                switch (M - r < 8 ? M - r : 8) {                                                     \
                case 1: KIND##_tile_1x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 2: KIND##_tile_2x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 3: KIND##_tile_3x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 4: KIND##_tile_4x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 5: KIND##_tile_5x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 6: KIND##_tile_6x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                case 7: KIND##_tile_7x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;         \
                default: KIND##_tile_8x2(xr, ldx, sr, qs, d, m, N, K, p0, n, yr, ldy); break;        \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }

PTILES(q4)
PTILES(q8)

/* Prompts (q4_rows, q8_rows; x, y and weights as below): y = x w^T for any number of rows, each row's outputs computed the same way whatever the
 * others (what the prefix cache needs: a position gets the same bits whether its prompt's earlier
 * positions were computed in the same call or not). A panel group's weights are expanded once to their
 * exact fp32 values (d q + m) for the whole of K, a buffer that stays in L2; then every group of 8
 * rows runs an 8 x 3-panel outer product over K with its sums in registers, one k after the other.
 * (Not the decode tiles' per-block factoring: that needs per-block sums outside the registers, and
 * prompts never mix with decode rows.) */
#define WP 3 /* panels per tile */
#define ROWS_BODY(R)                                                                                 \
    do {                                                                                             \
        __m512 acc[R][WP];                                                                           \
        for (int r = 0; r < R; r++)                                                                  \
            for (int j = 0; j < WP; j++) acc[r][j] = _mm512_setzero_ps();                            \
        for (int64_t k = 0; k < K; k++) {                                                            \
            __m512 w[WP];                                                                            \
            for (int j = 0; j < WP; j++) w[j] = _mm512_load_ps(wf + (k * WP + j) * 16);              \
            for (int r = 0; r < R; r++) {                                                            \
                const __m512 xb = _mm512_set1_ps(x[(r0 + r) * ldx + k]);                             \
                for (int j = 0; j < WP; j++) acc[r][j] = _mm512_fmadd_ps(w[j], xb, acc[r][j]);       \
            }                                                                                        \
        }                                                                                            \
        for (int j = 0; j < n; j++) {                                                                \
            const int64_t n0 = (p0 + j) * 16, left = N - n0;                                         \
            const __mmask16 keep = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);   \
            for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(y + (r0 + r) * ldy + n0, keep, acc[r][j]); \
        }                                                                                            \
    } while (0)

#define ROWS(KIND)                                                                                   \
    void KIND##_rows(const float *x, int64_t ldx, const void *qs, const float *d, const float *m, int64_t M, \
                     int64_t N, int64_t K, float *y, int64_t ldy, int threads) {                     \
        const int64_t panels = (N + 15) / 16, tiles = (panels + WP - 1) / WP, nb = K / 32;           \
        _Pragma("omp parallel num_threads(threads) if (threads > 1)")                               \
        {                                                                                            \
            float *wf = aligned_alloc(64, (size_t)K * WP * 16 * sizeof(float)); /* [k][panel][16] */ \
            if (!wf) abort();                                                                        \
            _Pragma("omp for schedule(static)")                                                      \
            for (int64_t t = 0; t < tiles; t++) {                                                    \
                const int64_t p0 = WP * t, n = panels - p0 < WP ? panels - p0 : WP;                  \
                for (int j = 0; j < WP; j++) {                                                       \
                    const int64_t p = p0 + (j < n ? j : 0);                                          \
                    const char *q = (const char *)qs + p * KIND##_panel_bytes(K);                    \
                    for (int64_t b = 0; b < nb; b++) {                                               \
                        const __m512 dv = _mm512_loadu_ps(d + (p * nb + b) * 16);                    \
                        const __m512 mv = m ? _mm512_loadu_ps(m + (p * nb + b) * 16) : _mm512_setzero_ps(); \
                        for (int64_t i = b * 16; i < b * 16 + 16; i++) {                             \
                            __m512 q0, q1;                                                           \
                            KIND##_pair(q, i, &q0, &q1);                                             \
                            /* d q + m rounds once: the weight's exact value (q8: m = 0, d q exact) */ \
                            _mm512_store_ps(wf + ((2 * i) * WP + j) * 16, _mm512_fmadd_ps(q0, dv, mv)); \
                            _mm512_store_ps(wf + ((2 * i + 1) * WP + j) * 16, _mm512_fmadd_ps(q1, dv, mv)); \
                        }                                                                            \
                    }                                                                                \
                }                                                                                    \
                int64_t r0 = 0;                                                                      \
                for (; r0 + 8 <= M; r0 += 8) ROWS_BODY(8);                                          \
                for (; r0 < M; r0++) ROWS_BODY(1);                                                   \
            }                                                                                        \
            free(wf);                                                                                \
        }                                                                                            \
    }

ROWS(q4)
ROWS(q8)

/* Decode steps. x: (M, K) row stride ldx; y: (M, N) row stride ldy; K % 32 == 0; weights in panels (see above). */
void q4_matmul(const float *x, int64_t ldx, const uint8_t *qs, const float *d, const float *m, int64_t M,
               int64_t N, int64_t K, float *y, int64_t ldy, int threads) {
    const int64_t nb = K / 32;
    float *xs = malloc(sizeof(float) * (M * nb > 0 ? M * nb : 1));
    if (!xs) abort();
    /* each block's activation sum, 16 lanes then a fixed reduction: the same for every batch */
    for (int64_t r = 0; r < M; r++)
        for (int64_t b = 0; b < nb; b++) {
            const float *p = x + r * ldx + b * 32;
            xs[r * nb + b] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16)));
        }
    q4_matmul_(x, ldx, xs, qs, d, m, M, N, K, y, ldy, threads);
    free(xs);
}

void q8_matmul(const float *x, int64_t ldx, const int8_t *qs, const float *d, int64_t M, int64_t N, int64_t K,
               float *y, int64_t ldy, int threads) {
    q8_matmul_(x, ldx, NULL, qs, d, NULL, M, N, K, y, ldy, threads);
}

/* Packing: find q, d (an fp16 value, as GGUF stores it) and m such that every weight of a block of
 * 32 is exactly d*q + m (Q4) or d*q (Q8). Returns the number of blocks that are not; the caller
 * keeps the fp32 matrix unless that is 0. d*q is exact in fp32 (11 + 8 bits), so d*q + m rounds
 * once, exactly as the kernel's fused multiply-add does. q comes out one value per byte, row-major;
 * kernels.py lays q, d and m out in panels. */
static inline float fp16_round(float v) { return _cvtsh_ss(_cvtss_sh(v, 0)); }
static inline float fp16_step(float v, int up) {
    unsigned short h = _cvtss_sh(v, 0);
    return _cvtsh_ss((unsigned short)(up ? h + 1 : h - 1));
}

static int q4_try(const float *w, float d, float lo, uint8_t *q) {
    for (int i = 0; i < 32; i++) {
        float v = d == 0.0f ? 0.0f : nearbyintf((w[i] - lo) / d);
        v = v < 0.0f ? 0.0f : (v > 15.0f ? 15.0f : v);
        if (d * v + lo != w[i]) return 0;
        q[i] = (uint8_t)v;
    }
    return 1;
}

int64_t q4_pack(const float *w, int64_t blocks, uint8_t *qs, float *d, float *m, int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad) if (threads > 1)
    for (int64_t b = 0; b < blocks; b++) {
        const float *x = w + b * 32;
        float lo = x[0], hi = x[0];
        for (int i = 1; i < 32; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        float d0 = fp16_round((hi - lo) / 15.0f);
        float candidates[3] = {d0, fp16_step(d0, 1), fp16_step(d0, 0)};
        uint8_t q[32];
        int ok = 0;
        for (int c = 0; c < 3 && !ok; c++) {
            if (candidates[c] >= 0.0f && q4_try(x, candidates[c], lo, q)) {
                ok = 1;
                d[b] = candidates[c];
            }
        }
        if (!ok) {
            bad++;
            continue;
        }
        m[b] = lo;
        for (int i = 0; i < 32; i++) qs[b * 32 + i] = q[i];
    }
    return bad;
}

int64_t q8_pack(const float *w, int64_t blocks, int8_t *qs, float *d, int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad) if (threads > 1)
    for (int64_t b = 0; b < blocks; b++) {
        const float *x = w + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float s = amax / 127.0f;
        int ok = 1;
        for (int i = 0; i < 32; i++) {
            float v = s == 0.0f ? 0.0f : nearbyintf(x[i] / s);
            v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
            if (s * v != x[i]) ok = 0;
            qs[b * 32 + i] = (int8_t)v;
        }
        d[b] = s;
        bad += !ok;
    }
    return bad;
}

/* ---------------------------------------------------------------------------------------------- */
/* Decode-step attention for grouped-query heads over the slot cache, one (row, KV head) per task.
 * Each row reads exactly its own positions (no padding, no mask) in a fixed order, so its output
 * is bit-identical alone or in any batch; the query heads that share a KV head read it once. */
static inline __m512 exp512(__m512 x) {
    /* exp(x): 2^n * p(r), |r| <= ln2/2, ~1 ulp; saturates below -87.3 and above 88.3 */
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Eight horizontal sums at once: lane j of the result is the sum of the lanes of v[j]. */
static inline __m256 hsum8(const __m512 *v) {
    __m256 h[8];
    for (int j = 0; j < 8; j++)
        h[j] = _mm256_add_ps(_mm512_castps512_ps256(v[j]), _mm512_extractf32x8_ps(v[j], 1));
    __m256 a = _mm256_hadd_ps(h[0], h[1]), b = _mm256_hadd_ps(h[2], h[3]);
    __m256 c = _mm256_hadd_ps(h[4], h[5]), d = _mm256_hadd_ps(h[6], h[7]);
    a = _mm256_hadd_ps(a, b);
    c = _mm256_hadd_ps(c, d);
    return _mm256_add_ps(_mm256_permute2f128_ps(a, c, 0x20), _mm256_permute2f128_ps(a, c, 0x31));
}

/* One (row, KV head): its G query heads against its L positions. C = head dim / 16. */
#define ATTEND_TASK(NAME, G_, C_)                                                                    \
    static void NAME(const float *q, const float *kp, const float *vp, const float *ks, const float *vs,  \
                     int64_t S, int64_t L, int64_t stride, int64_t G, int64_t C, float scale, float *out, \
                     float *s) {                                                                     \
        const int64_t g_n = G_ ? G_ : G, c_n = C_ ? C_ : C;                                          \
        __m512 qv[G_ ? G_ : 16][C_ ? C_ : 16];                                                       \
        for (int64_t g = 0; g < g_n; g++)                                                            \
            for (int64_t c = 0; c < c_n; c++) qv[g][c] = _mm512_loadu_ps(q + g * c_n * 16 + c * 16);  \
        const __m256 sc = _mm256_set1_ps(scale);                                                     \
        for (int64_t g = 0; g < g_n; g++) {                                                          \
            float *sg = s + g * L;                                                                   \
            int64_t t = 0;                                                                           \
            for (; t + 8 <= L; t += 8) {                                                             \
                const float *kb = t < S ? ks : kp; /* S % 8 == 0: a run of 8 is on one side */        \
                __m512 acc[8];                                                                       \
                for (int j = 0; j < 8; j++) {                                                        \
                    const float *k = kb + (t + j) * stride;                                          \
                    acc[j] = _mm512_mul_ps(qv[g][0], _mm512_loadu_ps(k));                            \
                    for (int64_t c = 1; c < c_n; c++)                                                \
                        acc[j] = _mm512_fmadd_ps(qv[g][c], _mm512_loadu_ps(k + c * 16), acc[j]);     \
                }                                                                                    \
                _mm256_storeu_ps(sg + t, _mm256_mul_ps(hsum8(acc), sc));                             \
            }                                                                                        \
            for (; t < L; t++) {                                                                     \
                const float *k = (t < S ? ks : kp) + t * stride;                                     \
                __m512 acc = _mm512_mul_ps(qv[g][0], _mm512_loadu_ps(k));                            \
                for (int64_t c = 1; c < c_n; c++) acc = _mm512_fmadd_ps(qv[g][c], _mm512_loadu_ps(k + c * 16), acc); \
                __m512 one[8] = {acc, _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),  \
                                 _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()}; \
                sg[t] = _mm256_cvtss_f32(hsum8(one)) * scale;                                        \
            }                                                                                        \
        }                                                                                            \
        float inv[G_ ? G_ : 16];                                                                     \
        for (int64_t g = 0; g < g_n; g++) {                                                          \
            float *sg = s + g * L;                                                                   \
            __m512 mx = _mm512_set1_ps(-INFINITY);                                                   \
            int64_t t = 0;                                                                           \
            for (; t + 16 <= L; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sg + t));            \
            if (t < L) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, (__mmask16)((1u << (L - t)) - 1), sg + t)); \
            __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();         \
            for (t = 0; t + 16 <= L; t += 16) {                                                      \
                __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(sg + t), m));                        \
                _mm512_storeu_ps(sg + t, e);                                                         \
                sum = _mm512_add_ps(sum, e);                                                         \
            }                                                                                        \
            if (t < L) {                                                                             \
                __mmask16 k = (__mmask16)((1u << (L - t)) - 1);                                      \
                __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sg + t), m))); \
                _mm512_mask_storeu_ps(sg + t, k, e);                                                 \
                sum = _mm512_add_ps(sum, e);                                                         \
            }                                                                                        \
            inv[g] = 1.0f / _mm512_reduce_add_ps(sum);                                               \
        }                                                                                            \
        __m512 acc[G_ ? G_ : 16][C_ ? C_ : 16];                                                      \
        for (int64_t g = 0; g < g_n; g++)                                                            \
            for (int64_t c = 0; c < c_n; c++) acc[g][c] = _mm512_setzero_ps();                      \
        for (int part = 0; part < 2; part++) { /* the shared positions (leader's slot), then the own */ \
            const float *vb = part ? vp : vs;                                                        \
            const int64_t t1 = part ? L : (S < L ? S : L);                                           \
            for (int64_t t = part ? S : 0; t < t1; t++) {                                            \
                const float *v = vb + t * stride;                                                    \
                for (int64_t c = 0; c < c_n; c++) {                                                  \
                    __m512 x = _mm512_loadu_ps(v + c * 16);                                          \
                    for (int64_t g = 0; g < g_n; g++)                                                \
                        acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(s[g * L + t]), x, acc[g][c]);     \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        for (int64_t g = 0; g < g_n; g++) {                                                          \
            __m512 w = _mm512_set1_ps(inv[g]);                                                       \
            for (int64_t c = 0; c < c_n; c++)                                                        \
                _mm512_storeu_ps(out + g * c_n * 16 + c * 16, _mm512_mul_ps(acc[g][c], w));          \
        }                                                                                            \
    }

ATTEND_TASK(attend_g3_d64, 3, 4)
ATTEND_TASK(attend_g4_d64, 4, 4)
ATTEND_TASK(attend_g4_d128, 4, 8)
ATTEND_TASK(attend_g8_d128, 8, 8)
ATTEND_TASK(attend_any, 0, 0)

/* q: (B, H, D); keys/values: (row capacity, position capacity, KVH, D); lengths[b]: positions of
 * row b including the one just written; out: (B, H, D); scratch: B*KVH rows of G*max(lengths).
 * Needs D % 16 == 0, D <= 256 and H / KVH <= 16. Returns -1 when the shape is not supported. */
/* Rows whose prompts began with the same cached blocks hold bit-identical keys and values there (the
 * prefix cache guarantees it): `sharing` lets such rows read those positions from one row's slot (the
 * leader's), and orders the tasks so that a thread takes one KV head of a whole group in a row, while
 * the shared positions are still in its cache. Each row's arithmetic is unchanged, only where it reads. */
typedef struct {
    const int64_t *task;   /* B*KVH tasks in processing order, each b*KVH + h; NULL: b-major order */
    const int64_t *leader; /* per row: the row whose slot holds its first `shared` positions */
    const int64_t *shared; /* per row: positions read from the leader's slot (0: none) */
} sharing;

static inline void attend_task(const float *q, const float *kp, const float *vp, const float *ks, const float *vs,
                               int64_t S, int64_t L, int64_t stride, int64_t G, int64_t C, float scale, float *out,
                               float *s) {
    if (G == 3 && C == 4) attend_g3_d64(q, kp, vp, ks, vs, S, L, stride, G, C, scale, out, s);
    else if (G == 4 && C == 4) attend_g4_d64(q, kp, vp, ks, vs, S, L, stride, G, C, scale, out, s);
    else if (G == 4 && C == 8) attend_g4_d128(q, kp, vp, ks, vs, S, L, stride, G, C, scale, out, s);
    else if (G == 8 && C == 8) attend_g8_d128(q, kp, vp, ks, vs, S, L, stride, G, C, scale, out, s);
    else attend_any(q, kp, vp, ks, vs, S, L, stride, G, C, scale, out, s);
}

static int attend_(const float *q, int64_t q_stride, const float *keys, const float *values,
                   const int64_t *lengths, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t cap, float scale,
                   float *out, float *scratch, int64_t scratch_stride, const sharing *share, int threads) {
    const int64_t G = H / KVH, C = D / 16;
    if (D % 16 || C > 16 || G > 16 || G * KVH != H) return -1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t i = 0; i < B * KVH; i++) {
        const int64_t task = share && share->task ? share->task[i] : i;
        const int64_t b = task / KVH, h = task % KVH;
        const int64_t a = share && share->leader ? share->leader[b] : b, S = share && share->shared ? share->shared[b] : 0;
        const float *qp = q + b * q_stride + h * G * D;
        const float *kp = keys + (b * cap * KVH + h) * D, *vp = values + (b * cap * KVH + h) * D;
        const float *ks = keys + (a * cap * KVH + h) * D, *vs = values + (a * cap * KVH + h) * D;
        float *op = out + (b * H + h * G) * D, *s = scratch + task * scratch_stride;
        attend_task(qp, kp, vp, ks, vs, S, lengths[b], KVH * D, G, C, scale, op, s);
    }
    return 0;
}

int attend(const float *q, const float *keys, const float *values, const int64_t *lengths, int64_t B,
           int64_t H, int64_t KVH, int64_t D, int64_t cap, float scale, float *out, float *scratch,
           int64_t scratch_stride, int threads) {
    return attend_(q, H * D, keys, values, lengths, B, H, KVH, D, cap, scale, out, scratch, scratch_stride, NULL,
                   threads);
}

/* Prompt attention, causal: query row i (absolute position start + i) against positions 0..start+i of
 * one sequence's keys/values, laid out (positions, KVH, D). Each row is a decode-attention task reading
 * exactly its own positions in a fixed order, so its bits depend neither on the other rows nor on how
 * many there are: a prompt whose first positions came from the prefix cache gets the bits of a fresh one
 * on any CPU. (torch's flash attention cuts the queries into blocks by the prompt's length, and the
 * matrix product inside a block may give a row other bits for another block height; on some CPUs it
 * does.) q: (M, H, D); out: (M, H, D); scratch: threads * G * (start + M) floats. */
int attend_causal(const float *q, const float *keys, const float *values, int64_t M, int64_t start, int64_t H,
                  int64_t KVH, int64_t D, float scale, float *out, float *scratch, int threads) {
    const int64_t G = H / KVH, C = D / 16, per_thread = G * (start + M);
    if (D % 16 || C > 16 || G > 16 || G * KVH != H) return -1;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4) if (threads > 1)
    for (int64_t i = 0; i < M * KVH; i++) {
        const int64_t b = i / KVH, h = i % KVH;
        const float *kp = keys + h * D, *vp = values + h * D;
        attend_task(q + (b * H + h * G) * D, kp, vp, kp, vp, 0, start + b + 1, KVH * D, G, C, scale,
                    out + (b * H + h * G) * D, scratch + (int64_t)omp_get_thread_num() * per_thread);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* A whole decode step through the decoder layers of a Llama model whose projections are all packed:
 * one call instead of ~25 tensor operations per layer from Python. Same arithmetic as the model:
 * RMSNorm (fp32), fused q/k/v, rotary embedding (rotate-half), GQA attention over the slot cache,
 * output projection + residual, RMSNorm, fused gate/up, SiLU(gate) * up, down projection + residual.
 * Every step treats each row on its own, so a row's result does not depend on the batch. */
typedef struct {
    int64_t bits; /* 4 or 8 */
    int64_t out_features, in_features;
    const void *qs;
    const float *d, *m, *bias; /* m is NULL for 8-bit, bias may be NULL */
} qmat;

typedef struct {
    const float *norm_in, *norm_post;
    qmat qkv, o, gate_up, down;
} qlayer;

/* LoRA adapters in decode steps: a fused matrix's delta is a few parts (q, k and v each have their own
 * A and B), each adding scale * B (A x) to its own run of outputs. A: (rank, in) row-major; Bt: B
 * transposed, (rank, out). Per row and in a fixed order, so a row's bits do not depend on the batch. */
typedef struct {
    int64_t rank, in_features, out_features, out_offset;
    const float *A, *Bt;
    float scale;
} lora_part;

typedef struct {
    int64_t nparts;
    const lora_part *parts;
} lora_mat;

typedef struct {
    lora_mat qkv, o, gate_up, down;
} lora_layer;

static void lora_apply(const lora_mat *lm, const float *x, float *y) {
    for (int64_t p = 0; p < lm->nparts; p++) {
        const lora_part *part = lm->parts + p;
        float t[256];
        for (int64_t j = 0; j < part->rank; j++) {
            const float *a = part->A + j * part->in_features;
            __m512 acc = _mm512_setzero_ps();
            int64_t i = 0;
            for (; i + 16 <= part->in_features; i += 16)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x + i), acc);
            float s = _mm512_reduce_add_ps(acc);
            for (; i < part->in_features; i++) s += a[i] * x[i];
            t[j] = s * part->scale;
        }
        float *out = y + part->out_offset;
        for (int64_t j = 0; j < part->rank; j++) {
            const float *b = part->Bt + j * part->out_features;
            const __m512 tj = _mm512_set1_ps(t[j]);
            int64_t n = 0;
            for (; n + 16 <= part->out_features; n += 16)
                _mm512_storeu_ps(out + n, _mm512_fmadd_ps(tj, _mm512_loadu_ps(b + n), _mm512_loadu_ps(out + n)));
            for (; n < part->out_features; n++) out[n] += t[j] * b[n];
        }
    }
}

/* A prompt's rows (M of them, any number): each gets the same delta, the same bits, as in a decode step
 * (and whatever the other rows), so adapter prompts can use the prefix cache too. */
void lora_rows(const lora_mat *lm, const float *x, int64_t ldx, int64_t M, float *y, int64_t ldy, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && M > 1)
    for (int64_t r = 0; r < M; r++) lora_apply(lm, x + r * ldx, y + r * ldy);
}

/* Each row with an adapter (slot[b] >= 0) gets its adapter's delta for this matrix of layer l. */
#define LORA_APPLY(MAT, x, ldx, y, ldy)                                                              \
    if (lora && slot)                                                                                \
        for (int64_t b = 0; b < B; b++)                                                              \
            if (slot[b] >= 0) lora_apply(&lora[slot[b] * nlayers + l].MAT, (x) + b * (ldx), (y) + b * (ldy))

static void qmat_apply(const qmat *w, const float *x, int64_t M, float *y, int threads) {
    if (w->bits == 4)
        q4_matmul(x, w->in_features, (const uint8_t *)w->qs, w->d, w->m, M, w->out_features, w->in_features, y,
                  w->out_features, threads);
    else
        q8_matmul(x, w->in_features, (const int8_t *)w->qs, w->d, M, w->out_features, w->in_features, y,
                  w->out_features, threads);
    if (w->bias)
        for (int64_t r = 0; r < M; r++)
            for (int64_t n = 0; n < w->out_features; n++) y[r * w->out_features + n] += w->bias[n];
}

/* Llama's RMSNorm of each row. Rows are independent (and spread over threads when there are many, as
 * in a prompt); within a row the sum of squares runs 16 lanes wide in a fixed order. */
void rms_norm(const float *x, const float *weight, int64_t rows, int64_t n, float eps, float *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && rows >= 64)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        __m512 acc = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= n; i += 16) {
            const __m512 v = _mm512_loadu_ps(xr + i);
            acc = _mm512_fmadd_ps(v, v, acc);
        }
        float ss = _mm512_reduce_add_ps(acc);
        for (; i < n; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)n + eps);
        const __m512 iv = _mm512_set1_ps(inv);
        for (i = 0; i + 16 <= n; i += 16)
            _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_loadu_ps(weight + i), _mm512_mul_ps(_mm512_loadu_ps(xr + i), iv)));
        for (; i < n; i++) o[i] = weight[i] * (xr[i] * inv);
    }
}

/* out[r, i] = silu(gate[r, i]) * up[r, i]; gate and up rows `stride` floats apart, out rows `inter`. */
void silu_mul(const float *gate, const float *up, int64_t rows, int64_t inter, int64_t stride, float *out,
              int threads) {
    const __m512 one = _mm512_set1_ps(1.0f);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && rows >= 64)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate + r * stride, *u = up + r * stride;
        float *o = out + r * inter;
        int64_t i = 0;
        for (; i + 16 <= inter; i += 16) {
            __m512 gv = _mm512_loadu_ps(g + i);
            __m512 sg = _mm512_div_ps(gv, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
            _mm512_storeu_ps(o + i, _mm512_mul_ps(sg, _mm512_loadu_ps(u + i)));
        }
        for (; i < inter; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* Rotate-half rotary embedding in place: `rows` rows of `heads` vectors of D floats, rows `stride`
 * floats apart; cos/sin hold one D-vector per row (the row's position). */
void rope(float *x, int64_t rows, int64_t heads, int64_t D, int64_t stride, const float *cos, const float *sin,
          int threads) {
    const int64_t half = D / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && rows >= 64)
    for (int64_t b = 0; b < rows; b++) {
        const float *c = cos + b * D, *s = sin + b * D;
        for (int64_t head = 0; head < heads; head++) {
            float *v = x + b * stride + head * D;
            for (int64_t i = 0; i < half; i++) {
                const float lo = v[i], hi = v[i + half];
                v[i] = lo * c[i] + (-hi) * s[i];
                v[i + half] = hi * c[i + half] + lo * s[i + half];
            }
        }
    }
}

/* x: (B, hidden), updated in place. cos/sin: (B, D), the rows of each row's position. slots[b]: flat
 * (row * capacity + position) index where row b's new key/value go; seen[b]: positions row b attends
 * to. keys/values[l]: layer l's cache, (row capacity, capacity, KVH, D). work: see decode_work_floats. */
int64_t decode_work_floats(int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t hidden, int64_t inter,
                           int64_t max_seen) {
    const int64_t nqkv = (H + 2 * KVH) * D;
    return B * (hidden + nqkv + H * D + hidden + 2 * inter + inter) + B * H * max_seen;
}

int decode_layers(int64_t B, int64_t nlayers, const qlayer *layers, float *const *keys, float *const *values,
                  int64_t cap, int64_t H, int64_t KVH, int64_t D, int64_t hidden, int64_t inter, float eps,
                  float scale, float *x, const float *cos, const float *sin, const int64_t *slots,
                  const int64_t *seen, int64_t max_seen, const int64_t *task_order, const int64_t *leader,
                  const int64_t *shared, const lora_layer *lora, const int64_t *slot, float *work, int threads) {
    const sharing share = {task_order, leader, shared};
    const int64_t nqkv = (H + 2 * KVH) * D, G = H / KVH;
    float *h = work, *qkv = h + B * hidden, *att = qkv + B * nqkv, *tmp = att + B * H * D;
    float *gu = tmp + B * hidden, *act = gu + B * 2 * inter, *scratch = act + B * inter;
    for (int64_t l = 0; l < nlayers; l++) {
        const qlayer *L = layers + l;
        rms_norm(x, L->norm_in, B, hidden, eps, h, 1);
        qmat_apply(&L->qkv, h, B, qkv, threads);
        LORA_APPLY(qkv, h, hidden, qkv, nqkv);
        rope(qkv, B, H + KVH, D, nqkv, cos, sin, 1); /* queries and keys */
        for (int64_t b = 0; b < B; b++) {
            float *kdst = keys[l] + slots[b] * KVH * D, *vdst = values[l] + slots[b] * KVH * D;
            const float *ksrc = qkv + b * nqkv + H * D, *vsrc = ksrc + KVH * D;
            for (int64_t i = 0; i < KVH * D; i++) {
                kdst[i] = ksrc[i];
                vdst[i] = vsrc[i];
            }
        }
        int rc = attend_(qkv, nqkv, keys[l], values[l], seen, B, H, KVH, D, cap, scale, att, scratch,
                         G * max_seen, &share, threads);
        if (rc) return rc;
        qmat_apply(&L->o, att, B, tmp, threads);
        LORA_APPLY(o, att, H * D, tmp, hidden);
        for (int64_t i = 0; i < B * hidden; i++) x[i] += tmp[i];
        rms_norm(x, L->norm_post, B, hidden, eps, h, 1);
        qmat_apply(&L->gate_up, h, B, gu, threads);
        LORA_APPLY(gate_up, h, hidden, gu, 2 * inter);
        silu_mul(gu, gu + inter, B, inter, 2 * inter, act, 1);
        qmat_apply(&L->down, act, B, tmp, threads);
        LORA_APPLY(down, act, inter, tmp, hidden);
        for (int64_t i = 0; i < B * hidden; i++) x[i] += tmp[i];
    }
    return 0;
}
