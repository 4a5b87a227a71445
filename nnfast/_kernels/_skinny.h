/* The skinny products of nnfast's general path (see _kernels.pyx, "Skinny products").
 *
 * Products with one side of a few units (iris: 4 -> 100 -> 3) as loops along the wide side.
 * Outputs are accumulated in GCC/Clang vectors of the build's register width (16 bytes
 * SSE2, 32 AVX2, 64 AVX-512), so that a block stays in registers across the short sum; a
 * row's last columns that do not fill a vector go through one masked (partial) vector, not
 * a scalar loop, whose dependent multiply-adds cost their latency each. Other compilers get
 * the same arithmetic as plain loops.
 *
 *   nnfast_skinny_inner_S(a, b, bias, c, m, k, n, epilogue, gate):
 *                                                    C  = A (m x k) @ B (k x n) [+ bias],
 *       then ReLU (epilogue NNFAST_RELU: relu(z) as 0 where z < 0, so NaN passes) or ReLU's
 *       derivative by its output (NNFAST_RELU_GATE: 0 where gate, m x n, is 0), in registers
 *       before the store: the pass over C that would apply them otherwise is saved
 *   nnfast_skinny_outer_S(left, right, c, m, k, n):  C += L (m x k).T @ R (m x n)
 *   nnfast_skinny_dots_S(a, bt, bias, c, m, k, n):   C  = A (m x k) @ Bt (n x k).T [+ bias]
 *   nnfast_column_sums_S(values, sums, m, n):         sums += values (m x n) summed over rows
 *
 * S is d (double) or f (float). Every output element is a sum in a fixed order that does
 * not depend on where the element falls in a block, so results do not depend on the
 * vector width's alignment with the matrix shapes beyond rounding of the short sums.
 */
#ifndef NNFAST_SKINNY_H
#define NNFAST_SKINNY_H

/* What nnfast_skinny_inner applies to its results before storing them. */
#define NNFAST_LINEAR 0
#define NNFAST_RELU 1
#define NNFAST_RELU_GATE 2

#include <string.h>

#if defined(__GNUC__)
#define NNFAST_SKINNY_VECTORS 1
#if defined(__AVX512F__)
#define NNFAST_VECTOR_BYTES 64
#elif defined(__AVX__)
#define NNFAST_VECTOR_BYTES 32
#else
#define NNFAST_VECTOR_BYTES 16
#endif
typedef double nnfast_vd __attribute__((vector_size(NNFAST_VECTOR_BYTES)));
typedef float nnfast_vf __attribute__((vector_size(NNFAST_VECTOR_BYTES)));
/* The lane masks of comparisons between them (all bits set where true). */
typedef long long nnfast_md __attribute__((vector_size(NNFAST_VECTOR_BYTES)));
typedef int nnfast_mf __attribute__((vector_size(NNFAST_VECTOR_BYTES)));
#define NNFAST_INLINE static inline __attribute__((always_inline))
#else
#define NNFAST_SKINNY_VECTORS 0
#endif

#if NNFAST_SKINNY_VECTORS

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Unaligned loads and stores of a whole vector: memcpy, which compiles to one move; through
 * a temporary, so that the accumulator arrays below never have their address taken and
 * stay in registers. */
#define NNFAST_LOAD(v, p) \
    do { __typeof__(v) tmp_; memcpy(&tmp_, (p), sizeof(tmp_)); (v) = tmp_; } while (0)
#define NNFAST_STORE(p, v) \
    do { __typeof__(v) tmp_ = (v); memcpy((p), &tmp_, sizeof(tmp_)); } while (0)

/* The first `count` lanes (0 < count < lanes) of a vector from / to memory; the other lanes
 * load as 0 and are never stored, and memory past them is never touched. */
#if defined(__AVX512F__)
#define NNFAST_MASK(count) ((1u << (count)) - 1u)
#define NNFAST_LOAD_PART_d(v, p, count) \
    ((v) = (nnfast_vd)_mm512_maskz_loadu_pd((__mmask8)NNFAST_MASK(count), (p)))
#define NNFAST_LOAD_PART_f(v, p, count) \
    ((v) = (nnfast_vf)_mm512_maskz_loadu_ps((__mmask16)NNFAST_MASK(count), (p)))
#define NNFAST_STORE_PART_d(p, v, count) \
    _mm512_mask_storeu_pd((p), (__mmask8)NNFAST_MASK(count), (__m512d)(v))
#define NNFAST_STORE_PART_f(p, v, count) \
    _mm512_mask_storeu_ps((p), (__mmask16)NNFAST_MASK(count), (__m512)(v))
#elif defined(__AVX2__)
#define NNFAST_LANES_d(count) \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3))
#define NNFAST_LANES_f(count) \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define NNFAST_LOAD_PART_d(v, p, count) \
    ((v) = (nnfast_vd)_mm256_maskload_pd((p), NNFAST_LANES_d(count)))
#define NNFAST_LOAD_PART_f(v, p, count) \
    ((v) = (nnfast_vf)_mm256_maskload_ps((p), NNFAST_LANES_f(count)))
#define NNFAST_STORE_PART_d(p, v, count) \
    _mm256_maskstore_pd((p), NNFAST_LANES_d(count), (__m256d)(v))
#define NNFAST_STORE_PART_f(p, v, count) \
    _mm256_maskstore_ps((p), NNFAST_LANES_f(count), (__m256)(v))
#else
#define NNFAST_LOAD_PART_GENERIC(v, p, count) do {                                        \
        __typeof__(v) tmp_;                                                               \
        Py_ssize_t lane_;                                                                 \
        memset(&tmp_, 0, sizeof(tmp_));                                                   \
        for (lane_ = 0; lane_ < (count); lane_++) tmp_[lane_] = (p)[lane_];               \
        (v) = tmp_;                                                                       \
    } while (0)
#define NNFAST_STORE_PART_GENERIC(p, v, count) do {                                       \
        __typeof__(v) tmp_ = (v);                                                         \
        Py_ssize_t lane_;                                                                 \
        for (lane_ = 0; lane_ < (count); lane_++) (p)[lane_] = tmp_[lane_];               \
    } while (0)
#define NNFAST_LOAD_PART_d NNFAST_LOAD_PART_GENERIC
#define NNFAST_LOAD_PART_f NNFAST_LOAD_PART_GENERIC
#define NNFAST_STORE_PART_d NNFAST_STORE_PART_GENERIC
#define NNFAST_STORE_PART_f NNFAST_STORE_PART_GENERIC
#endif

/* The sum of a vector's lanes, pairwise (halving the width each time). */
#if defined(__AVX512F__)
#define NNFAST_LANE_SUM_d(v) return _mm512_reduce_add_pd((__m512d)(v))
#define NNFAST_LANE_SUM_f(v) return _mm512_reduce_add_ps((__m512)(v))
#else
#define NNFAST_LANE_SUM_GENERIC(v) do {                                                   \
        __typeof__((v)[0]) lanes_[sizeof(v) / sizeof((v)[0])];                            \
        Py_ssize_t q_, width_;                                                            \
        memcpy(lanes_, &(v), sizeof(v));                                                  \
        for (width_ = sizeof(v) / sizeof((v)[0]) / 2; width_ > 0; width_ /= 2)            \
            for (q_ = 0; q_ < width_; q_++) lanes_[q_] += lanes_[q_ + width_];            \
        return lanes_[0];                                                                 \
    } while (0)
#define NNFAST_LANE_SUM_d NNFAST_LANE_SUM_GENERIC
#define NNFAST_LANE_SUM_f NNFAST_LANE_SUM_GENERIC
#endif

/* Keeps a loaded vector in a register: without it the compiler may fold the load into every
 * multiply-add that reads it, loading the same vector once per row of C (measured 2x slower
 * for three rows). */
#if defined(__AVX512F__)
#define NNFAST_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define NNFAST_IN_REGISTER(v) __asm__("" : "+x"(v))
#endif

/* Vectors per column block of the outer product: its accumulators (up to 4 rows of C times
 * this many vectors) and the block of R must fit the register file (32 vector registers
 * with AVX-512, 16 below it). */
#if NNFAST_VECTOR_BYTES == 64
#define NNFAST_OUTER_VECTORS 4
#else
#define NNFAST_OUTER_VECTORS 2
#endif

/* Rows of C per block of the inner product: they share each load of B's block of 4 vectors
 * (4 * rows accumulators and B's 4 vectors in registers). */
#if NNFAST_VECTOR_BYTES == 64
#define NNFAST_INNER_ROWS 4
#else
#define NNFAST_INNER_ROWS 2
#endif

/* A vector block of columns [s, s + NV * L) of the output, or with count > 0 one partial
 * vector of count columns; the loops over g < G and v < NV have constant bounds at every
 * call site, so the compiler unrolls them and keeps the accumulators in registers. */
#define NNFAST_DEFINE_SKINNY(T, V, M, S)                                                  \
NNFAST_INLINE V nnfast_epilogue_##S(V z, int epilogue, const T* gate, const int count) { \
    const V zero = {0};                                                                 \
    V g;                                                                                \
    if (epilogue == NNFAST_RELU)                                                        \
        return (V)((M)z & ~(M)(z < zero));                                              \
    if (epilogue == NNFAST_RELU_GATE) {                                                 \
        if (count) NNFAST_LOAD_PART_##S(g, gate, count);                                \
        else NNFAST_LOAD(g, gate);                                                      \
        return (V)((M)z & ~(M)(g == zero));                                             \
    }                                                                                   \
    return z;                                                                           \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_inner_block_##S(const T* a, const T* b, const T* bias, T* c,   \
                                          Py_ssize_t i, Py_ssize_t k, Py_ssize_t n,      \
                                          Py_ssize_t s, const int R, const int NV,       \
                                          const int count, int epilogue,                 \
                                          const T* gate) {                               \
    /* C[i:i+R, s:s+NV*L] (or a partial vector of count columns): R rows share each     \
       load of B, R * NV independent chains of multiply-adds. */                        \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    V acc[NNFAST_INNER_ROWS][4], w, start;                                              \
    const V zero = {0};                                                                 \
    Py_ssize_t p;                                                                       \
    int r, v;                                                                           \
    for (v = 0; v < NV; v++) {                                                          \
        if (bias == NULL) start = zero;                                                 \
        else if (count) NNFAST_LOAD_PART_##S(start, bias + s, count);                   \
        else NNFAST_LOAD(start, bias + s + v * L);                                      \
        for (r = 0; r < R; r++) acc[r][v] = start;                                      \
    }                                                                                   \
    for (p = 0; p < k; p++) {                                                           \
        const T* row = b + p * n + s;                                                   \
        for (v = 0; v < NV; v++) {                                                      \
            if (count) NNFAST_LOAD_PART_##S(w, row, count);                             \
            else NNFAST_LOAD(w, row + v * L);                                           \
            NNFAST_IN_REGISTER(w);                                                      \
            for (r = 0; r < R; r++) acc[r][v] += a[(i + r) * k + p] * w;                \
        }                                                                               \
    }                                                                                   \
    for (r = 0; r < R; r++) {                                                           \
        T* c_row = c + (i + r) * n + s;                                                 \
        const T* gate_row = gate == NULL ? NULL : gate + (i + r) * n + s;               \
        for (v = 0; v < NV; v++) {                                                      \
            acc[r][v] = nnfast_epilogue_##S(acc[r][v], epilogue, gate_row + v * L,      \
                                            count);                                     \
            if (count) NNFAST_STORE_PART_##S(c_row, acc[r][v], count);                  \
            else NNFAST_STORE(c_row + v * L, acc[r][v]);                                \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_inner_rows_##S(const T* a, const T* b, const T* bias, T* c,    \
                                         Py_ssize_t i, Py_ssize_t k, Py_ssize_t n,       \
                                         const int R, int epilogue, const T* gate) {    \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    Py_ssize_t s;                                                                       \
    for (s = 0; s + 4 * L <= n; s += 4 * L)                                             \
        nnfast_inner_block_##S(a, b, bias, c, i, k, n, s, R, 4, 0, epilogue, gate);     \
    for (; s + L <= n; s += L)                                                          \
        nnfast_inner_block_##S(a, b, bias, c, i, k, n, s, R, 1, 0, epilogue, gate);     \
    if (s < n)                                                                          \
        nnfast_inner_block_##S(a, b, bias, c, i, k, n, s, R, 1, (int)(n - s), epilogue, \
                               gate);                                                   \
}                                                                                       \
                                                                                        \
static void nnfast_skinny_inner_##S(const T* a, const T* b, const T* bias, T* c,         \
                                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,            \
                                    int epilogue, const T* gate) {                       \
    Py_ssize_t i;                                                                       \
    for (i = 0; i + NNFAST_INNER_ROWS <= m; i += NNFAST_INNER_ROWS)                     \
        nnfast_inner_rows_##S(a, b, bias, c, i, k, n, NNFAST_INNER_ROWS, epilogue, gate); \
    for (; i + 2 <= m; i += 2)                                                          \
        nnfast_inner_rows_##S(a, b, bias, c, i, k, n, 2, epilogue, gate);               \
    if (i < m) nnfast_inner_rows_##S(a, b, bias, c, i, k, n, 1, epilogue, gate);        \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_outer_block_##S(const T* left, const T* right, T* c,           \
                                          Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,      \
                                          Py_ssize_t p0, const int G, Py_ssize_t s,      \
                                          const int NV, const int count) {               \
    /* C[p0:p0+G, block] += L[:, p0:p0+G].T @ R[:, block]: the block of R is read once   \
       for all G rows of C. */                                                          \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    V acc[4][NNFAST_OUTER_VECTORS], w[NNFAST_OUTER_VECTORS], old;                       \
    const V zero = {0};                                                                 \
    Py_ssize_t i;                                                                       \
    int g, v;                                                                           \
    for (g = 0; g < G; g++)                                                             \
        for (v = 0; v < NV; v++) acc[g][v] = zero;                                      \
    for (i = 0; i < m; i++) {                                                           \
        const T* row = right + i * n + s;                                               \
        const T* l = left + i * k + p0;                                                 \
        for (v = 0; v < NV; v++) {                                                      \
            if (count) NNFAST_LOAD_PART_##S(w[v], row, count);                          \
            else NNFAST_LOAD(w[v], row + v * L);                                        \
            NNFAST_IN_REGISTER(w[v]);                                                   \
        }                                                                               \
        for (g = 0; g < G; g++) {                                                       \
            const T x = l[g];                                                           \
            for (v = 0; v < NV; v++) acc[g][v] += x * w[v];                             \
        }                                                                               \
    }                                                                                   \
    for (g = 0; g < G; g++) {                                                           \
        T* out = c + (p0 + g) * n + s;                                                  \
        for (v = 0; v < NV; v++) {                                                      \
            if (count) {                                                                \
                NNFAST_LOAD_PART_##S(old, out, count);                                  \
                old += acc[g][v];                                                       \
                NNFAST_STORE_PART_##S(out, old, count);                                 \
            } else {                                                                    \
                NNFAST_LOAD(old, out + v * L);                                          \
                old += acc[g][v];                                                       \
                NNFAST_STORE(out + v * L, old);                                         \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_outer_rows_##S(const T* left, const T* right, T* c,            \
                                         Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,       \
                                         Py_ssize_t p0, const int G) {                   \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    const Py_ssize_t width = NNFAST_OUTER_VECTORS * L;                                  \
    Py_ssize_t s;                                                                       \
    for (s = 0; s + width <= n; s += width)                                             \
        nnfast_outer_block_##S(left, right, c, m, k, n, p0, G, s, NNFAST_OUTER_VECTORS, 0); \
    for (; s + L <= n; s += L)                                                          \
        nnfast_outer_block_##S(left, right, c, m, k, n, p0, G, s, 1, 0);                \
    if (s < n)                                                                          \
        nnfast_outer_block_##S(left, right, c, m, k, n, p0, G, s, 1, (int)(n - s));     \
}                                                                                       \
                                                                                        \
static void nnfast_skinny_outer_##S(const T* left, const T* right, T* c,                 \
                                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {          \
    Py_ssize_t p0;                                                                      \
    /* Rows of C in groups of up to 4. */                                               \
    for (p0 = 0; p0 + 4 <= k; p0 += 4)                                                  \
        nnfast_outer_rows_##S(left, right, c, m, k, n, p0, 4);                          \
    switch (k - p0) {                                                                   \
        case 3: nnfast_outer_rows_##S(left, right, c, m, k, n, p0, 3); break;           \
        case 2: nnfast_outer_rows_##S(left, right, c, m, k, n, p0, 2); break;           \
        case 1: nnfast_outer_rows_##S(left, right, c, m, k, n, p0, 1); break;           \
        default: break;                                                                 \
    }                                                                                   \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_sums_block_##S(const T* values, T* sums, Py_ssize_t m,         \
                                         Py_ssize_t n, Py_ssize_t s, const int NV,       \
                                         const int count) {                             \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    V acc[4], w;                                                                        \
    Py_ssize_t i;                                                                       \
    int v;                                                                              \
    for (v = 0; v < NV; v++) {                                                          \
        if (count) NNFAST_LOAD_PART_##S(acc[v], sums + s, count);                       \
        else NNFAST_LOAD(acc[v], sums + s + v * L);                                     \
    }                                                                                   \
    for (i = 0; i < m; i++) {                                                           \
        for (v = 0; v < NV; v++) {                                                      \
            if (count) NNFAST_LOAD_PART_##S(w, values + i * n + s, count);              \
            else NNFAST_LOAD(w, values + i * n + s + v * L);                            \
            acc[v] += w;                                                                \
        }                                                                               \
    }                                                                                   \
    for (v = 0; v < NV; v++) {                                                          \
        if (count) NNFAST_STORE_PART_##S(sums + s, acc[v], count);                      \
        else NNFAST_STORE(sums + s + v * L, acc[v]);                                    \
    }                                                                                   \
}                                                                                       \
                                                                                        \
static void nnfast_column_sums_##S(const T* values, T* sums, Py_ssize_t m,               \
                                   Py_ssize_t n) {                                      \
    /* A block of columns is summed in registers over all rows, stored once. */         \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    Py_ssize_t s;                                                                       \
    for (s = 0; s + 4 * L <= n; s += 4 * L)                                             \
        nnfast_sums_block_##S(values, sums, m, n, s, 4, 0);                             \
    for (; s + L <= n; s += L)                                                          \
        nnfast_sums_block_##S(values, sums, m, n, s, 1, 0);                             \
    if (s < n) nnfast_sums_block_##S(values, sums, m, n, s, 1, (int)(n - s));           \
}                                                                                       \
                                                                                        \
NNFAST_INLINE T nnfast_lane_sum_##S(V v) {                                               \
    /* Pairwise, halving the width: log2(lanes) dependent additions, not lanes. */      \
    NNFAST_LANE_SUM_##S(v);                                                             \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_dots_block_##S(const T* a, const T* bt, const T* bias, T* c,   \
                                         Py_ssize_t i, Py_ssize_t k, Py_ssize_t n,       \
                                         Py_ssize_t j0, const int R, const int G) {      \
    /* C[i:i+R, j0:j0+G]: R rows of A against G rows of Bt, each product once a vector   \
       of partial sums, R * G independent chains. */                                    \
    const Py_ssize_t L = sizeof(V) / sizeof(T);                                         \
    V acc[4][4], x[4], y;                                                               \
    const V zero = {0};                                                                 \
    Py_ssize_t p;                                                                       \
    int r, g;                                                                           \
    for (r = 0; r < R; r++)                                                             \
        for (g = 0; g < G; g++) acc[r][g] = zero;                                       \
    for (p = 0; p + L <= k; p += L) {                                                   \
        for (r = 0; r < R; r++) NNFAST_LOAD(x[r], a + (i + r) * k + p);                 \
        for (g = 0; g < G; g++) {                                                       \
            NNFAST_LOAD(y, bt + (j0 + g) * k + p);                                      \
            for (r = 0; r < R; r++) acc[r][g] += x[r] * y;                              \
        }                                                                               \
    }                                                                                   \
    if (p < k) {                                                                        \
        for (r = 0; r < R; r++) NNFAST_LOAD_PART_##S(x[r], a + (i + r) * k + p, k - p); \
        for (g = 0; g < G; g++) {                                                       \
            NNFAST_LOAD_PART_##S(y, bt + (j0 + g) * k + p, k - p);                      \
            for (r = 0; r < R; r++) acc[r][g] += x[r] * y;                              \
        }                                                                               \
    }                                                                                   \
    for (r = 0; r < R; r++)                                                             \
        for (g = 0; g < G; g++)                                                         \
            c[(i + r) * n + j0 + g] = nnfast_lane_sum_##S(acc[r][g])                    \
                                      + (bias == NULL ? (T)0 : bias[j0 + g]);           \
}                                                                                       \
                                                                                        \
NNFAST_INLINE void nnfast_dots_rows_##S(const T* a, const T* bt, const T* bias, T* c,    \
                                        Py_ssize_t i, Py_ssize_t k, Py_ssize_t n,        \
                                        const int R) {                                  \
    Py_ssize_t j0;                                                                      \
    for (j0 = 0; j0 + 4 <= n; j0 += 4)                                                  \
        nnfast_dots_block_##S(a, bt, bias, c, i, k, n, j0, R, 4);                       \
    switch (n - j0) {                                                                   \
        case 3: nnfast_dots_block_##S(a, bt, bias, c, i, k, n, j0, R, 3); break;        \
        case 2: nnfast_dots_block_##S(a, bt, bias, c, i, k, n, j0, R, 2); break;        \
        case 1: nnfast_dots_block_##S(a, bt, bias, c, i, k, n, j0, R, 1); break;        \
        default: break;                                                                 \
    }                                                                                   \
}                                                                                       \
                                                                                        \
static void nnfast_skinny_dots_##S(const T* a, const T* bt, const T* bias, T* c,         \
                                   Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {           \
    Py_ssize_t i;                                                                       \
    /* Rows in fours: each load of Bt serves them all. */                               \
    for (i = 0; i + 4 <= m; i += 4) nnfast_dots_rows_##S(a, bt, bias, c, i, k, n, 4);    \
    switch (m - i) {                                                                    \
        case 3: nnfast_dots_rows_##S(a, bt, bias, c, i, k, n, 3); break;                 \
        case 2: nnfast_dots_rows_##S(a, bt, bias, c, i, k, n, 2); break;                 \
        case 1: nnfast_dots_rows_##S(a, bt, bias, c, i, k, n, 1); break;                 \
        default: break;                                                                 \
    }                                                                                   \
}

#else  /* !NNFAST_SKINNY_VECTORS: the same products as plain loops */

#define NNFAST_DEFINE_SKINNY(T, V, M, S)                                                  \
static void nnfast_skinny_inner_##S(const T* a, const T* b, const T* bias, T* c,         \
                                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,            \
                                    int epilogue, const T* gate) {                       \
    Py_ssize_t i, p, j;                                                                 \
    for (i = 0; i < m; i++) {                                                           \
        for (j = 0; j < n; j++) c[i * n + j] = bias ? bias[j] : (T)0;                   \
        for (p = 0; p < k; p++)                                                         \
            for (j = 0; j < n; j++) c[i * n + j] += a[i * k + p] * b[p * n + j];        \
        for (j = 0; j < n; j++) {                                                       \
            if (epilogue == NNFAST_RELU && c[i * n + j] < 0) c[i * n + j] = 0;           \
            if (epilogue == NNFAST_RELU_GATE && gate[i * n + j] == 0) c[i * n + j] = 0;  \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
static void nnfast_skinny_outer_##S(const T* left, const T* right, T* c,                 \
                                    Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {          \
    Py_ssize_t i, p, j;                                                                 \
    for (i = 0; i < m; i++)                                                             \
        for (p = 0; p < k; p++)                                                         \
            for (j = 0; j < n; j++) c[p * n + j] += left[i * k + p] * right[i * n + j]; \
}                                                                                       \
static void nnfast_column_sums_##S(const T* values, T* sums, Py_ssize_t m,               \
                                   Py_ssize_t n) {                                      \
    Py_ssize_t i, j;                                                                    \
    for (i = 0; i < m; i++)                                                             \
        for (j = 0; j < n; j++) sums[j] += values[i * n + j];                           \
}                                                                                       \
static void nnfast_skinny_dots_##S(const T* a, const T* bt, const T* bias, T* c,         \
                                   Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) {           \
    Py_ssize_t i, p, j;                                                                 \
    for (i = 0; i < m; i++)                                                             \
        for (j = 0; j < n; j++) {                                                       \
            T total = 0;                                                                \
            for (p = 0; p < k; p++) total += a[i * k + p] * bt[j * k + p];              \
            c[i * n + j] = total + (bias ? bias[j] : (T)0);                             \
        }                                                                               \
}

#endif  /* NNFAST_SKINNY_VECTORS */

NNFAST_DEFINE_SKINNY(double, nnfast_vd, nnfast_md, d)
NNFAST_DEFINE_SKINNY(float, nnfast_vf, nnfast_mf, f)

#endif  /* NNFAST_SKINNY_H */
