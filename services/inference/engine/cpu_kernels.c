/* Block-quantized weights times fp32 activations, for decode steps on CPU (AVX-512).
 *
 * The default model ships as GGUF Q4_1 (linear layers) and Q8_0 (embeddings / LM head): every
 * block of 32 weights is d*q + m (q in 0..15) or d*q (q in -127..127). The fp32 copy the service
 * loads holds exactly those values, so reading them back in their 4.5/8.5-bit form is lossless and
 * moves 4-6x fewer bytes per decode step than fp32, which is what bounds decode on this CPU.
 *
 * y[r, n] = sum_k x[r, k] * w[n, k]. Activations stay fp32 (no activation quantization); each
 * output accumulates its blocks in the same order whatever the number of rows or threads, so a row
 * gets bit-identical results alone or in a batch.
 *
 * Q4 layout per output row n: qs[n][K/2] (block b: 16 bytes, low nibbles = elements 0..15, high
 * nibbles = 16..31), d[n][K/32], m[n][K/32]. Q8 layout: qs[n][K] (int8), d[n][K/32].
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* Weights of output n, block b, as two vectors of 16 floats. The block's 16 possible values
 * fma(i, d, m), i = 0..15, are made once and each nibble picks its own (vpermps reads the low 4 bits
 * of each index): the same numbers as fma(q, d, m) per weight, with fewer vector operations. */
static inline void q4_block(const uint8_t *qs, const float *d, const float *m, int64_t K, int64_t n, int64_t b,
                            __m512 *w0, __m512 *w1) {
    const int64_t nb = K / 32;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + n * (K / 2) + b * 16)));
    __m512 lut = _mm512_fmadd_ps(iota, _mm512_set1_ps(d[n * nb + b]), _mm512_set1_ps(m[n * nb + b]));
    *w0 = _mm512_permutexvar_ps(v, lut);
    *w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
}

static inline void q8_block(const int8_t *qs, const float *d, const float *m, int64_t K, int64_t n, int64_t b,
                            __m512 *w0, __m512 *w1) {
    (void)m;
    const int8_t *p = qs + n * K + b * 32;
    __m512 dv = _mm512_set1_ps(d[n * (K / 32) + b]);
    *w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))), dv);
    *w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16)))), dv);
}

/* A tile reads a few short runs of each output's blocks, too short for the hardware prefetcher to
 * pick up: ask for the next tile's (outputs n .. n + count - 1) while this one computes. Prefetches
 * past the end of the matrix are harmless (they never fault). */
static inline void prefetch_lines(const void *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T0);
}

static inline void q4_prefetch_next(const uint8_t *qs, const float *d, const float *m, int64_t K, int64_t n,
                                    int count) {
    prefetch_lines(qs + n * (K / 2), count * (K / 2));
    prefetch_lines(d + n * (K / 32), count * (K / 32) * 4);
    prefetch_lines(m + n * (K / 32), count * (K / 32) * 4);
}

static inline void q8_prefetch_next(const int8_t *qs, const float *d, const float *m, int64_t K, int64_t n,
                                    int count) {
    (void)m;
    prefetch_lines(qs + n * K, count * K);
    prefetch_lines(d + n * (K / 32), count * (K / 32) * 4);
}

/* ROWS activation rows times NCOLS consecutive outputs starting at n0 (nn of them real). Each block of
 * weights is expanded to floats once and used by all ROWS rows; every (row, output) pair has its own
 * accumulator fed in block order, so the result does not depend on ROWS or NCOLS. */
#define TILE(KIND, QT, ROWS, NCOLS)                                                                  \
    static void KIND##_tile_##ROWS##x##NCOLS(const float *x, int64_t ldx, const QT *qs, const float *d, \
                                             const float *m, int64_t K, int64_t n0, int64_t nn,     \
                                             float *y, int64_t ldy) {                               \
        __m512 acc[ROWS][NCOLS];                                                                     \
        for (int r = 0; r < ROWS; r++)                                                               \
            for (int j = 0; j < NCOLS; j++) acc[r][j] = _mm512_setzero_ps();                         \
        KIND##_prefetch_next(qs, d, m, K, n0 + NCOLS, NCOLS);                                        \
        for (int64_t b = 0; b < K / 32; b++) {                                                       \
            __m512 w0[NCOLS], w1[NCOLS];                                                             \
            for (int j = 0; j < NCOLS; j++) KIND##_block(qs, d, m, K, n0 + (j < nn ? j : 0), b, &w0[j], &w1[j]); \
            for (int r = 0; r < ROWS; r++) {                                                         \
                __m512 x0 = _mm512_loadu_ps(x + r * ldx + b * 32);                                   \
                __m512 x1 = _mm512_loadu_ps(x + r * ldx + b * 32 + 16);                              \
                for (int j = 0; j < NCOLS; j++) {                                                    \
                    acc[r][j] = _mm512_fmadd_ps(w0[j], x0, acc[r][j]);                               \
                    acc[r][j] = _mm512_fmadd_ps(w1[j], x1, acc[r][j]);                               \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
        for (int r = 0; r < ROWS; r++)                                                               \
            for (int j = 0; j < nn; j++) y[r * ldy + n0 + j] = _mm512_reduce_add_ps(acc[r][j]);      \
    }

/* Few rows (memory-bound): 4 outputs per tile keep 4+ FMA chains in flight. Many rows
 * (compute-bound): 8 rows share each expanded block, 2 outputs per tile (16 accumulators). */
#define TILES(KIND, QT)                                                                              \
    TILE(KIND, QT, 1, 4) TILE(KIND, QT, 2, 4) TILE(KIND, QT, 3, 4) TILE(KIND, QT, 4, 4)              \
    TILE(KIND, QT, 1, 2) TILE(KIND, QT, 2, 2) TILE(KIND, QT, 3, 2) TILE(KIND, QT, 4, 2)              \
    TILE(KIND, QT, 5, 2) TILE(KIND, QT, 6, 2) TILE(KIND, QT, 7, 2) TILE(KIND, QT, 8, 2)              \
    static void KIND##_matmul_(const float *x, int64_t ldx, const QT *qs, const float *d, const float *m, \
                               int64_t M, int64_t N, int64_t K, float *y, int64_t ldy, int threads) { \
        const int64_t ncols = M <= 4 ? 4 : 2, tiles = (N + ncols - 1) / ncols;                      \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if (threads > 1)")           \
        for (int64_t t = 0; t < tiles; t++) {                                                        \
            const int64_t n0 = t * ncols, nn = N - n0 < ncols ? N - n0 : ncols;                      \
            if (ncols == 4) {                                                                        \
                switch (M) {                                                                         \
                case 1: KIND##_tile_1x4(x, ldx, qs, d, m, K, n0, nn, y, ldy); break;                 \
                case 2: KIND##_tile_2x4(x, ldx, qs, d, m, K, n0, nn, y, ldy); break;                 \
                case 3: KIND##_tile_3x4(x, ldx, qs, d, m, K, n0, nn, y, ldy); break;                 \
                default: KIND##_tile_4x4(x, ldx, qs, d, m, K, n0, nn, y, ldy); break;                \
                }                                                                                    \
                continue;                                                                            \
            }                                                                                        \
            /* the tile's weights stay in L1 while each group of 8 rows passes over them */          \
            for (int64_t r = 0; r < M; r += 8) {                                                     \
                const float *xr = x + r * ldx;                                                       \
                float *yr = y + r * ldy;                                                             \
                switch (M - r < 8 ? M - r : 8) {                                                     \
                case 1: KIND##_tile_1x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 2: KIND##_tile_2x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 3: KIND##_tile_3x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 4: KIND##_tile_4x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 5: KIND##_tile_5x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 6: KIND##_tile_6x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                case 7: KIND##_tile_7x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;               \
                default: KIND##_tile_8x2(xr, ldx, qs, d, m, K, n0, nn, yr, ldy); break;              \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }

TILES(q4, uint8_t)
TILES(q8, int8_t)

/* x: (M, K) row stride ldx; y: (M, N) row stride ldy; K % 32 == 0. */
void q4_matmul(const float *x, int64_t ldx, const uint8_t *qs, const float *d, const float *m, int64_t M,
               int64_t N, int64_t K, float *y, int64_t ldy, int threads) {
    q4_matmul_(x, ldx, qs, d, m, M, N, K, y, ldy, threads);
}

void q8_matmul(const float *x, int64_t ldx, const int8_t *qs, const float *d, int64_t M, int64_t N, int64_t K,
               float *y, int64_t ldy, int threads) {
    q8_matmul_(x, ldx, qs, d, NULL, M, N, K, y, ldy, threads);
}

/* Packing: find q, d (an fp16 value, as GGUF stores it) and m such that every weight of a block of
 * 32 is exactly d*q + m (Q4) or d*q (Q8). Returns the number of blocks that are not; the caller
 * keeps the fp32 matrix unless that is 0. d*q is exact in fp32 (11 + 8 bits), so d*q + m rounds
 * once, exactly as the kernel's fused multiply-add does. */
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
        for (int i = 0; i < 16; i++) qs[b * 16 + i] = (uint8_t)(q[i] | (q[i + 16] << 4));
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
    static void NAME(const float *q, const float *kp, const float *vp, int64_t L, int64_t stride,    \
                     int64_t G, int64_t C, float scale, float *out, float *s) {                      \
        const int64_t g_n = G_ ? G_ : G, c_n = C_ ? C_ : C;                                          \
        __m512 qv[G_ ? G_ : 16][C_ ? C_ : 16];                                                       \
        for (int64_t g = 0; g < g_n; g++)                                                            \
            for (int64_t c = 0; c < c_n; c++) qv[g][c] = _mm512_loadu_ps(q + g * c_n * 16 + c * 16);  \
        const __m256 sc = _mm256_set1_ps(scale);                                                     \
        for (int64_t g = 0; g < g_n; g++) {                                                          \
            float *sg = s + g * L;                                                                   \
            int64_t t = 0;                                                                           \
            for (; t + 8 <= L; t += 8) {                                                             \
                __m512 acc[8];                                                                       \
                for (int j = 0; j < 8; j++) {                                                        \
                    const float *k = kp + (t + j) * stride;                                          \
                    acc[j] = _mm512_mul_ps(qv[g][0], _mm512_loadu_ps(k));                            \
                    for (int64_t c = 1; c < c_n; c++)                                                \
                        acc[j] = _mm512_fmadd_ps(qv[g][c], _mm512_loadu_ps(k + c * 16), acc[j]);     \
                }                                                                                    \
                _mm256_storeu_ps(sg + t, _mm256_mul_ps(hsum8(acc), sc));                             \
            }                                                                                        \
            for (; t < L; t++) {                                                                     \
                const float *k = kp + t * stride;                                                    \
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
        for (int64_t t = 0; t < L; t++) {                                                            \
            const float *v = vp + t * stride;                                                        \
            for (int64_t c = 0; c < c_n; c++) {                                                      \
                __m512 x = _mm512_loadu_ps(v + c * 16);                                              \
                for (int64_t g = 0; g < g_n; g++)                                                    \
                    acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(s[g * L + t]), x, acc[g][c]);         \
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
static int attend_(const float *q, int64_t q_stride, const float *keys, const float *values,
                   const int64_t *lengths, int64_t B, int64_t H, int64_t KVH, int64_t D, int64_t cap, float scale,
                   float *out, float *scratch, int64_t scratch_stride, int threads) {
    const int64_t G = H / KVH, C = D / 16;
    if (D % 16 || C > 16 || G > 16 || G * KVH != H) return -1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t task = 0; task < B * KVH; task++) {
        const int64_t b = task / KVH, h = task % KVH;
        const float *qp = q + b * q_stride + h * G * D;
        const float *kp = keys + (b * cap * KVH + h) * D, *vp = values + (b * cap * KVH + h) * D;
        float *op = out + (b * H + h * G) * D, *s = scratch + task * scratch_stride;
        if (G == 3 && C == 4) attend_g3_d64(qp, kp, vp, lengths[b], KVH * D, G, C, scale, op, s);
        else if (G == 4 && C == 4) attend_g4_d64(qp, kp, vp, lengths[b], KVH * D, G, C, scale, op, s);
        else if (G == 4 && C == 8) attend_g4_d128(qp, kp, vp, lengths[b], KVH * D, G, C, scale, op, s);
        else if (G == 8 && C == 8) attend_g8_d128(qp, kp, vp, lengths[b], KVH * D, G, C, scale, op, s);
        else attend_any(qp, kp, vp, lengths[b], KVH * D, G, C, scale, op, s);
    }
    return 0;
}

int attend(const float *q, const float *keys, const float *values, const int64_t *lengths, int64_t B,
           int64_t H, int64_t KVH, int64_t D, int64_t cap, float scale, float *out, float *scratch,
           int64_t scratch_stride, int threads) {
    return attend_(q, H * D, keys, values, lengths, B, H, KVH, D, cap, scale, out, scratch, scratch_stride,
                   threads);
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

static void qmat_apply(const qmat *w, const float *x, int64_t M, float *y, int threads) {
    if (w->bits == 4)
        q4_matmul_(x, w->in_features, (const uint8_t *)w->qs, w->d, w->m, M, w->out_features, w->in_features, y,
                   w->out_features, threads);
    else
        q8_matmul_(x, w->in_features, (const int8_t *)w->qs, w->d, NULL, M, w->out_features, w->in_features, y,
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
                  const int64_t *seen, int64_t max_seen, float *work, int threads) {
    const int64_t nqkv = (H + 2 * KVH) * D, G = H / KVH;
    float *h = work, *qkv = h + B * hidden, *att = qkv + B * nqkv, *tmp = att + B * H * D;
    float *gu = tmp + B * hidden, *act = gu + B * 2 * inter, *scratch = act + B * inter;
    for (int64_t l = 0; l < nlayers; l++) {
        const qlayer *L = layers + l;
        rms_norm(x, L->norm_in, B, hidden, eps, h, 1);
        qmat_apply(&L->qkv, h, B, qkv, threads);
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
                         G * max_seen, threads);
        if (rc) return rc;
        qmat_apply(&L->o, att, B, tmp, threads);
        for (int64_t i = 0; i < B * hidden; i++) x[i] += tmp[i];
        rms_norm(x, L->norm_post, B, hidden, eps, h, 1);
        qmat_apply(&L->gate_up, h, B, gu, threads);
        silu_mul(gu, gu + inter, B, inter, 2 * inter, act, 1);
        qmat_apply(&L->down, act, B, tmp, threads);
        for (int64_t i = 0; i < B * hidden; i++) x[i] += tmp[i];
    }
    return 0;
}
