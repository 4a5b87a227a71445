"""Compiled kernels of nnfast: forward pass, sigmoid, deltas, weight updates, fused fit.

How Python and the kernel split the work
----------------------------------------
``nnfast.network`` validates and coerces every input once, allocates every buffer a fit
needs (``nnfast._layout``), and calls :func:`fit` once per reporting chunk. This module
assumes valid, C-contiguous input of a single floating dtype, allocates nothing, and runs its
loops without the GIL; it takes the GIL back only to poll for signals (Ctrl-C) at an interval
the caller chooses. Compiler directives are set in one place, ``setup.py``.

Memory layout (shared with ``nnfast._layout``)
-----------------------------------------------
params       every layer's weights, and bias when present, back to back in one flat buffer:
             W0 (s0 x s1, row-major), b0 (s1), W1 (s1 x s2), b1 (s2), ...
activations  layers 1..L for one batch of m rows, each (m x s_k) row-major, back to back.
deltas       the same layout as activations.
grad         scratch of at least max(s_k) values (bias sums).

Arithmetic
----------
Each step is the original's: activations a = sigmoid(a_prev @ W [+ b]),
delta_L = (y - a_L) * (a_L * (1 - a_L)), delta_k = (delta_{k+1} @ W_k.T) * (a_k * (1 - a_k)),
then W_k += lr * (a_k.T @ delta_{k+1}) once all deltas are known. Matrix products go to BLAS
(scipy.linalg.cython_blas, as in scikit-learn) from ``get_blas_min_flops()`` multiply-adds
up, and run as plain loops below it, where a BLAS call costs more than the work. The update
sums over the rows of a batch, as the original does.

Threads
-------
The caller passes n_threads > 1 only for networks whose products are large; each layer
operation then runs in one OpenMP parallel region over blocks (see "Threads" below), with
BLAS capped at one thread by the caller so that the two thread pools never compete.
"""

from cython cimport floating
from libc.math cimport INFINITY, fabs, isfinite
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from cython.parallel cimport prange
from libc.string cimport memcpy
from cpython.exc cimport PyErr_CheckSignals
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from *:
    """
    #ifdef _OPENMP
    #define NNFAST_OPENMP 1
    #else
    #define NNFAST_OPENMP 0
    #endif
    #ifndef NNFAST_DEBUG_BUILD
    #define NNFAST_DEBUG_BUILD 0
    #endif
    #if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    #define NNFAST_ISA "x86-64-v4"
    #elif defined(__AVX2__)
    #define NNFAST_ISA "x86-64-v3"
    #else
    #define NNFAST_ISA "baseline"
    #endif
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static int nnfast_cpu_runs(int level) {
        __builtin_cpu_init();
        if (level == 3)
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        if (level == 4)
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        return 0;
    }
    #else
    static int nnfast_cpu_runs(int level) { return 0; }
    #endif
    """
    const int NNFAST_OPENMP
    const int NNFAST_DEBUG_BUILD
    const char* NNFAST_ISA
    int nnfast_cpu_runs(int level) noexcept nogil


# Products of at least this many multiply-adds go to BLAS; smaller ones run as plain loops.
# Measured on a 2-core AMD EPYC (bench/): the call overhead of BLAS dominates below it.
cdef Py_ssize_t _BLAS_MIN_FLOPS = 256


def get_blas_min_flops():
    """Products of at least this many multiply-adds go to BLAS, smaller ones to plain loops."""
    return _BLAS_MIN_FLOPS


def set_blas_min_flops(Py_ssize_t value):
    """Moves the BLAS/loop crossover (for measuring it; bench/ and tests use this)."""
    global _BLAS_MIN_FLOPS
    _BLAS_MIN_FLOPS = value

OPENMP = bool(NNFAST_OPENMP)
# Built with NNFAST_DEBUG=1: bounds checks on, no optimisation.
DEBUG_BUILD = bool(NNFAST_DEBUG_BUILD)
# The instruction set this build was compiled for: "baseline", "x86-64-v3" or "x86-64-v4".
ISA = NNFAST_ISA.decode()


def cpu_runs(int level):
    """Whether this CPU can run the x86-64-v``level`` build of the kernels (3: AVX2 + FMA;
    4: AVX-512 F/DQ/BW/VL as well)."""
    return bool(nnfast_cpu_runs(level))


# --------------------------------------------------------------------------------------------
# exp and sigmoid
#
# libm's exp is a scalar call that stops the compiler vectorising a loop over a whole layer, and
# then costs more than the rest of a small network's step. _exp is branch-free (selects only),
# so loops over it vectorise. Range reduction exp(x) = 2**n * exp(r), n = round(x / ln 2),
# |r| <= ln(2) / 2, with ln 2 split in two (Cody-Waite) so n * ln2_hi is exact; exp(r) is its
# Taylor polynomial to degree 13 (float64) or 7 (float32), whose truncation error is below
# half an ulp on that interval, evaluated by Estrin's scheme. The sigmoid built on it is within
# 3 ulp of NumPy's 1 / (1 + exp(-x)) (tests/test_kernels.py). Overflow gives +inf and NaN
# propagates. _exp serves the sigmoid only: below x = -707 (float32: -86) it returns 0 instead
# of a subnormal number, which leaves 1 + exp(x) == 1 exactly as the true value would.
# --------------------------------------------------------------------------------------------

# Unsigned, so that the exponent arithmetic wraps (defined) for inputs outside the range,
# whose results the final selects replace.
cdef union _Bits64:
    double value
    uint64_t bits

cdef union _Bits32:
    float value
    uint32_t bits

cdef extern from *:
    """
    /* Constants of nnfast's exp as compile-time values, so that loops calling it vectorise. */
    /* Adding 1.5 * 2**52 (2**23 for float32) rounds to an integer and leaves it in the low   */
    /* mantissa bits, so n is read from the bits without a float->int conversion (SSE2 has   */
    /* none for packed doubles).                                                             */
    static const double NNFAST_SHIFT64 = 6755399441055744.0;
    static const long long NNFAST_SHIFT64_BITS = 0x4338000000000000LL;
    static const float NNFAST_SHIFT32 = 12582912.0f;
    static const int NNFAST_SHIFT32_BITS = 0x4B400000;
    static const double NNFAST_LOG2E64 = 1.4426950408889634;
    static const float NNFAST_LOG2E32 = 1.44269504f;
    /* ln 2 = hi + lo with hi's trailing bits zero, so n * hi is exact (Cody-Waite). */
    static const double NNFAST_LN2_HI64 = 6.93147180369123816490e-01;
    static const double NNFAST_LN2_LO64 = 1.90821492927058770002e-10;
    static const float NNFAST_LN2_HI32 = 0.693145751953125f;
    static const float NNFAST_LN2_LO32 = 1.428606765330187e-06f;
    """
    const double _SHIFT64 "NNFAST_SHIFT64"
    const int64_t _SHIFT64_BITS "NNFAST_SHIFT64_BITS"
    const float _SHIFT32 "NNFAST_SHIFT32"
    const int32_t _SHIFT32_BITS "NNFAST_SHIFT32_BITS"
    const double _LOG2E64 "NNFAST_LOG2E64"
    const float _LOG2E32 "NNFAST_LOG2E32"
    const double _LN2_HI64 "NNFAST_LN2_HI64"
    const double _LN2_LO64 "NNFAST_LN2_LO64"
    const float _LN2_HI32 "NNFAST_LN2_HI32"
    const float _LN2_LO32 "NNFAST_LN2_LO32"


cdef inline floating _exp(floating x) noexcept nogil:
    """exp(x) without branches, for the sigmoid; see the notes above for range and accuracy."""
    cdef _Bits64 shifted64, scale64
    cdef _Bits32 shifted32, scale32
    cdef floating clamped, n, r, r2, r4, twice_poly, result
    # float64 enforces the range by two selects at the end, not by clamping x first: a clamp
    # sits at the head of the dependency chain, where it adds to the latency that bounds a
    # tiny network's step; the selects run beside the polynomial. Outside the range, n and the
    # scale below are meaningless and the selects replace the result.
    if floating is double:
        shifted64.value = x * _LOG2E64 + _SHIFT64
        n = shifted64.value - _SHIFT64
        r = (x - n * _LN2_HI64) - n * _LN2_LO64
        # Estrin's scheme: the same terms as Horner's rule in a tree of depth 4 instead of a
        # chain of 13 dependent multiply-adds, so that consecutive vectors overlap. The
        # coefficients are twice 1/k! (exactly so: doubling is exact), for the scale below.
        r2 = r * r
        r4 = r2 * r2
        twice_poly = ((2.0 + r * 2.0 + r2 * (1.0 + r * (2.0 / 6)))
                      + r4 * ((2.0 / 24 + r * (2.0 / 120)) + r2 * (2.0 / 720 + r * (2.0 / 5040)))
                      + (r4 * r4) * (((2.0 / 40320 + r * (2.0 / 362880))
                                      + r2 * (2.0 / 3628800 + r * (2.0 / 39916800)))
                                     + r4 * (2.0 / 479001600 + r * (2.0 / 6227020800.0))))
        # 2**n as 2 * 2**(n-1): n reaches 1024, whose exponent field would mean inf.
        scale64.bits = (shifted64.bits - _SHIFT64_BITS + 1022) << 52
        result = twice_poly * scale64.value
        result = 0.0 if x < -707.0 else result
        result = INFINITY if x > 709.782712893384 else result
    else:
        # float32 keeps a clamp at the head of the chain: measured 5% faster on tutorial3
        # float32 than the selects, where float64 is 7% slower with it.
        clamped = min(max(x, <float>-86.0), <float>88.72283)
        shifted32.value = clamped * _LOG2E32 + _SHIFT32
        n = shifted32.value - _SHIFT32
        r = (clamped - n * _LN2_HI32) - n * _LN2_LO32
        r2 = r * r
        twice_poly = ((<float>2 + r * <float>2 + r2 * (<float>1 + r * <float>(2.0 / 6)))
                      + (r2 * r2) * ((<float>(2.0 / 24) + r * <float>(2.0 / 120))
                                     + r2 * (<float>(2.0 / 720) + r * <float>(2.0 / 5040))))
        scale32.bits = (shifted32.bits - _SHIFT32_BITS + 126) << 23
        result = twice_poly * scale32.value
        result = <float>INFINITY if x > <float>88.7228391 else result
    # NaN needs no select of its own: both comparisons are false for it, and it passes through
    # the polynomial unchanged.
    return result


cdef extern from *:
    """
    /* a * b + c in one rounding where the target has FMA (the compiler contracts a * b + c  */
    /* there anyway). Spelt as a call, so that GCC does not vectorise the short dot products  */
    /* of tiny layers into in-order reductions, which measured slower than scalar code.      */
    #if defined(__FMA__)
    #define nnfast_madd64(a, b, c) __builtin_fma((a), (b), (c))
    #define nnfast_madd32(a, b, c) __builtin_fmaf((a), (b), (c))
    #else
    #define nnfast_madd64(a, b, c) ((a) * (b) + (c))
    #define nnfast_madd32(a, b, c) ((a) * (b) + (c))
    #endif
    """
    double _madd64 "nnfast_madd64"(double a, double b, double c) noexcept nogil
    float _madd32 "nnfast_madd32"(float a, float b, float c) noexcept nogil


cdef inline floating _madd(floating a, floating b, floating c) noexcept nogil:
    """a * b + c, fused where the instruction set has FMA."""
    if floating is double:
        return _madd64(a, b, c)
    else:
        return _madd32(a, b, c)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    """1 / (1 + exp(-x)): exp overflows to +inf for x < -709 and the quotient is then an
    exact 0, so the plain formula is stable and needs no branch."""
    return <floating>1 / (<floating>1 + _exp(-x))


cdef inline floating _sigmoid_slope(floating a) noexcept nogil:
    """a * (1 - a): the sigmoid's derivative written in terms of its output a."""
    return a * (<floating>1 - a)


cdef inline void _sigmoid_range(floating* z, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """z[start:stop] = sigmoid(z[start:stop])."""
    cdef Py_ssize_t i
    for i in range(start, stop):
        z[i] = _sigmoid(z[i])


cdef inline void _scale_by_slope_range(floating* delta, const floating* activations,
                                       Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """delta[start:stop] *= a * (1 - a) for a = activations[start:stop]."""
    cdef Py_ssize_t i
    for i in range(start, stop):
        delta[i] = delta[i] * _sigmoid_slope(activations[i])


# --------------------------------------------------------------------------------------------
# Matrix products. Row-major C = A @ B is column-major C.T = B.T @ A.T, so BLAS is called with
# the operands swapped (the scikit-learn _gemm convention). Products under _BLAS_MIN_FLOPS
# multiply-adds run as plain loops instead, each output a dot product kept in a register.
# --------------------------------------------------------------------------------------------

cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb,
                floating beta, floating* c, int ldc) noexcept nogil:
    """C = alpha * op(A) @ op(B) + beta * C, all row-major, through BLAS."""
    cdef char op_a = b't' if trans_a else b'n'
    cdef char op_b = b't' if trans_b else b'n'
    if floating is double:
        dgemm(&op_b, &op_a, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)
    else:
        sgemm(&op_b, &op_a, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)


# Threads. With n_threads > 1 (the caller asks for it only when the products are large, and
# caps BLAS at one thread meanwhile, so the two thread pools never compete for the cores),
# each layer's work is split into one block per thread inside a single parallel region: a
# block of rows for the forward pass and the deltas, elementwise work included; a block of
# weight rows (or columns) for the update, so no two threads write the same memory and no
# reduction is needed. Each block's product is one single-threaded BLAS call.

cdef inline Py_ssize_t _block_start(Py_ssize_t n, int n_blocks, int t) noexcept nogil:
    """Start of block t of n_blocks near-equal blocks of range(n)."""
    return n * t // n_blocks


cdef void _forward_rows(const floating* inputs, const floating* weights,
                        const floating* bias, floating* outputs, Py_ssize_t row_start,
                        Py_ssize_t row_stop, Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """outputs[rows] = sigmoid(inputs[rows] @ weights [+ bias]) through BLAS."""
    cdef Py_ssize_t i
    if row_stop <= row_start:
        return
    if bias != NULL:
        for i in range(row_start, row_stop):
            memcpy(&outputs[i * n_out], bias, n_out * sizeof(floating))
    _gemm(False, False, <int>(row_stop - row_start), <int>n_out, <int>n_in, <floating>1,
          &inputs[row_start * n_in], <int>n_in, weights, <int>n_out,
          <floating>(0 if bias == NULL else 1), &outputs[row_start * n_out], <int>n_out)
    _sigmoid_range(outputs, row_start * n_out, row_stop * n_out)


cdef inline void _forward_layer(const floating* inputs, const floating* weights,
                                const floating* bias, floating* outputs, Py_ssize_t m,
                                Py_ssize_t n_in, Py_ssize_t n_out, int n_threads) noexcept nogil:
    """outputs = sigmoid(inputs @ weights [+ bias]); bias may be NULL."""
    cdef Py_ssize_t i, p, j
    cdef int t
    cdef floating acc
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        for i in range(m):
            for j in range(n_out):
                acc = 0 if bias == NULL else bias[j]
                for p in range(n_in):
                    acc = _madd(inputs[i * n_in + p], weights[p * n_out + j], acc)
                outputs[i * n_out + j] = acc
        _sigmoid_range(outputs, 0, m * n_out)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            _forward_rows(inputs, weights, bias, outputs, _block_start(m, n_threads, t),
                          _block_start(m, n_threads, t + 1), n_in, n_out)
    else:
        _forward_rows(inputs, weights, bias, outputs, 0, m, n_in, n_out)


cdef inline double _output_delta(const floating* targets, const floating* outputs, floating* delta,
                                 Py_ssize_t n) noexcept nogil:
    """delta = (y - a) * (a * (1 - a)); returns sum |y - a|."""
    cdef Py_ssize_t i
    cdef floating error
    cdef double abs_error_sum = 0.0
    for i in range(n):
        error = targets[i] - outputs[i]
        delta[i] = error * _sigmoid_slope(outputs[i])
        abs_error_sum += fabs(error)
    return abs_error_sum


cdef void _hidden_rows(const floating* delta_next, const floating* weights,
                       const floating* activations, floating* delta, Py_ssize_t row_start,
                       Py_ssize_t row_stop, Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """delta[rows] = (delta_next[rows] @ weights.T) * (a * (1 - a)) through BLAS."""
    if row_stop <= row_start:
        return
    _gemm(False, True, <int>(row_stop - row_start), <int>n_in, <int>n_out, <floating>1,
          &delta_next[row_start * n_out], <int>n_out, weights, <int>n_out, <floating>0,
          &delta[row_start * n_in], <int>n_in)
    _scale_by_slope_range(delta, activations, row_start * n_in, row_stop * n_in)


cdef inline void _hidden_delta(const floating* delta_next, const floating* weights,
                               const floating* activations, floating* delta, Py_ssize_t m,
                               Py_ssize_t n_in, Py_ssize_t n_out, int n_threads) noexcept nogil:
    """delta = (delta_next @ weights.T) * (a * (1 - a)); weights is (n_in x n_out)."""
    cdef Py_ssize_t i, p, j
    cdef int t
    cdef floating acc
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        for i in range(m):
            for p in range(n_in):
                acc = 0
                for j in range(n_out):
                    acc = _madd(delta_next[i * n_out + j], weights[p * n_out + j], acc)
                # Scaled here rather than in a second pass: on so few values the pass would
                # wait for these stores to reach memory (they cannot be forwarded to its
                # vector loads).
                delta[i * n_in + p] = acc * _sigmoid_slope(activations[i * n_in + p])
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            _hidden_rows(delta_next, weights, activations, delta,
                         _block_start(m, n_threads, t), _block_start(m, n_threads, t + 1),
                         n_in, n_out)
    else:
        _hidden_rows(delta_next, weights, activations, delta, 0, m, n_in, n_out)


cdef void _gradient_block(floating* weights, const floating* inputs, const floating* delta,
                          floating scale, bint accumulate, Py_ssize_t m, Py_ssize_t n_in,
                          Py_ssize_t n_out, Py_ssize_t p_start, Py_ssize_t p_stop,
                          Py_ssize_t j_start, Py_ssize_t j_stop) noexcept nogil:
    """W[p, j] = scale * (inputs[:, p].T @ delta[:, j]) [+ W[p, j]] through BLAS."""
    if p_stop <= p_start or j_stop <= j_start:
        return
    _gemm(True, False, <int>(p_stop - p_start), <int>(j_stop - j_start), <int>m, scale,
          &inputs[p_start], <int>n_in, &delta[j_start], <int>n_out,
          <floating>(1 if accumulate else 0), &weights[p_start * n_out + j_start], <int>n_out)


cdef inline void _apply_gradient(floating* weights, floating* bias, const floating* inputs,
                                 const floating* delta, floating scale, bint accumulate,
                                 floating* scratch, Py_ssize_t m, Py_ssize_t n_in,
                                 Py_ssize_t n_out, int n_threads) noexcept nogil:
    """W = scale * (inputs.T @ delta) [+ W]; bias = scale * delta.sum(0) [+ bias].

    Training accumulates with scale = learning rate; Network.gradient overwrites with
    scale = 1. bias may be NULL; scratch holds at least n_out values.
    """
    cdef Py_ssize_t i, p, j
    cdef int t
    cdef floating acc
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        # The sum over rows first, then the scale, as BLAS and the reference round it.
        for p in range(n_in):
            for j in range(n_out):
                acc = 0
                for i in range(m):
                    acc = _madd(inputs[i * n_in + p], delta[i * n_out + j], acc)
                weights[p * n_out + j] = (scale * acc
                                          + (weights[p * n_out + j] if accumulate else 0))
    elif n_threads > 1 and n_in >= n_out:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            _gradient_block(weights, inputs, delta, scale, accumulate, m, n_in, n_out,
                            _block_start(n_in, n_threads, t),
                            _block_start(n_in, n_threads, t + 1), 0, n_out)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static", num_threads=n_threads):
            _gradient_block(weights, inputs, delta, scale, accumulate, m, n_in, n_out, 0, n_in,
                            _block_start(n_out, n_threads, t),
                            _block_start(n_out, n_threads, t + 1))
    else:
        _gradient_block(weights, inputs, delta, scale, accumulate, m, n_in, n_out, 0, n_in,
                        0, n_out)
    if bias != NULL:
        # Row by row, so that a tall delta is read once, in order.
        for j in range(n_out):
            scratch[j] = 0
        for i in range(m):
            for j in range(n_out):
                scratch[j] += delta[i * n_out + j]
        for j in range(n_out):
            bias[j] = scale * scratch[j] + (bias[j] if accumulate else 0)


# --------------------------------------------------------------------------------------------
# One training step and the fused loop
# --------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _layer_params(const Py_ssize_t* sizes, Py_ssize_t k,
                                     bint has_bias) noexcept nogil:
    """Number of parameters of layer k: its weight matrix and, when present, its bias."""
    return sizes[k] * sizes[k + 1] + (sizes[k + 1] if has_bias else 0)


cdef double _train_step(floating* params, const Py_ssize_t* sizes, Py_ssize_t n_layers,
                        bint has_bias, const floating* x, const floating* y, Py_ssize_t m,
                        floating learning_rate, floating* activations, floating* deltas,
                        floating* grad, floating* gradient_out, int n_threads) noexcept nogil:
    """One forward/backward pass on m rows; returns sum |y - output|.

    Updates params, or, when gradient_out is not NULL, leaves them alone and writes the
    update direction (inputs.T @ delta per layer, in the params layout) to gradient_out.
    """
    cdef Py_ssize_t k, n_in, n_out
    cdef const floating* layer_in = x
    cdef floating* weights = params
    cdef floating* layer_out = activations
    cdef floating* delta = deltas
    cdef floating* delta_next
    cdef floating* target
    cdef double abs_error_sum

    for k in range(n_layers):
        n_in = sizes[k]
        n_out = sizes[k + 1]
        _forward_layer(layer_in, weights, weights + n_in * n_out if has_bias else NULL,
                       layer_out, m, n_in, n_out, n_threads)
        layer_in = layer_out
        weights += _layer_params(sizes, k, has_bias)
        if k + 1 < n_layers:
            layer_out += m * n_out
            delta += m * n_out

    # layer_out, delta: the output layer's activations and delta; weights: one past the end.
    abs_error_sum = _output_delta(y, layer_out, delta, m * sizes[n_layers])

    # Each W_k is read for delta_k before it is updated, as in the original, where every delta
    # is computed before any weight changes: delta_k needs only W_k, which nothing updates
    # before this point.
    for k in range(n_layers - 1, -1, -1):
        n_in = sizes[k]
        n_out = sizes[k + 1]
        weights -= _layer_params(sizes, k, has_bias)
        target = weights if gradient_out == NULL else gradient_out + (weights - params)
        delta_next = delta
        if k > 0:
            layer_out -= m * n_in
            delta -= m * n_in
            _hidden_delta(delta_next, weights, layer_out, delta, m, n_in, n_out, n_threads)
            layer_in = layer_out
        else:
            layer_in = x
        _apply_gradient(target, target + n_in * n_out if has_bias else NULL, layer_in,
                        delta_next, learning_rate if gradient_out == NULL else 1,
                        gradient_out == NULL, grad, m, n_in, n_out, n_threads)
    return abs_error_sum


cdef int _fit_loop(floating* params, const Py_ssize_t* sizes, Py_ssize_t n_layers,
                   bint has_bias, const floating* x, const floating* y, Py_ssize_t n_rows,
                   const Py_ssize_t* order, Py_ssize_t batch_size, Py_ssize_t n_epochs,
                   floating learning_rate, floating* activations, floating* deltas,
                   floating* grad, floating* batch_x, floating* batch_y,
                   Py_ssize_t check_every, int n_threads, double* first_error,
                   Py_ssize_t* epochs_done) except -1 nogil:
    """Runs n_epochs epochs; returns 0, or 1 when the error stopped being finite."""
    cdef Py_ssize_t epoch, start, m, r, row
    cdef Py_ssize_t n_in = sizes[0]
    cdef Py_ssize_t n_out = sizes[n_layers]
    cdef Py_ssize_t until_check = check_every  # batches
    cdef double epoch_error
    cdef const floating* batch_in
    cdef const floating* batch_target

    for epoch in range(n_epochs):
        epoch_error = 0.0
        start = 0
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            if order != NULL:
                # Shuffled mini-batch: gather its rows so every product sees contiguous data.
                for r in range(m):
                    row = order[epoch * n_rows + start + r]
                    memcpy(&batch_x[r * n_in], &x[row * n_in], n_in * sizeof(floating))
                    memcpy(&batch_y[r * n_out], &y[row * n_out], n_out * sizeof(floating))
                batch_in = batch_x
                batch_target = batch_y
            else:
                batch_in = &x[start * n_in]
                batch_target = &y[start * n_out]
            epoch_error += _train_step(params, sizes, n_layers, has_bias, batch_in,
                                       batch_target, m, learning_rate, activations, deltas,
                                       grad, NULL, n_threads)
            start += m
            # Polled between batches, not epochs: an epoch of many mini-batches can be long.
            until_check -= 1
            if until_check == 0:
                until_check = check_every
                with gil:
                    if PyErr_CheckSignals() == -1:
                        return -1
        if epoch == 0:
            first_error[0] = epoch_error / (n_rows * n_out)
        # A sum of |y - a| is finite exactly when every term is: one test per epoch catches
        # divergence at the iteration it happens.
        if not isfinite(epoch_error):
            epochs_done[0] = epoch
            return 1
        epochs_done[0] = epoch + 1
    return 0


# --------------------------------------------------------------------------------------------
# Python entry points. Each assumes the caller (nnfast.network) validated shapes and dtypes.
# --------------------------------------------------------------------------------------------

def sigmoid_inplace(floating[::1] values):  # INOUT
    """values = 1 / (1 + exp(-values)), in place.

    Parameters
    ----------
    values : float32 or float64 contiguous 1-D array, overwritten.
    """
    with nogil:
        _sigmoid_range(&values[0], 0, values.shape[0])


def sigmoid_derivative(const floating[::1] activations,  # IN
                       floating[::1] out):               # OUT
    """out = activations * (1 - activations), the derivative from the sigmoid's output.

    Parameters
    ----------
    activations : float32 or float64 contiguous 1-D array.
    out : array of the same dtype and length, overwritten.
    """
    cdef Py_ssize_t i
    with nogil:
        for i in range(activations.shape[0]):
            out[i] = _sigmoid_slope(activations[i])


def forward_layer(const floating[:, ::1] inputs,   # IN (m, n_in)
                  const floating[:, ::1] weights,  # IN (n_in, n_out)
                  const floating[::1] bias,        # IN (n_out,) or (0,) for none
                  floating[:, ::1] outputs,        # OUT (m, n_out)
                  int n_threads=1):
    """outputs = sigmoid(inputs @ weights + bias).

    Parameters
    ----------
    inputs, weights : 2-D arrays of one float dtype.
    bias : 1-D array of length n_out, or of length 0 for no bias.
    outputs : (m, n_out) array, overwritten.
    n_threads : threads (row blocks) for a product that goes to BLAS.
    """
    with nogil:
        _forward_layer(&inputs[0, 0], &weights[0, 0],
                       &bias[0] if bias.shape[0] > 0 else NULL, &outputs[0, 0],
                       inputs.shape[0], inputs.shape[1], weights.shape[1], n_threads)


def output_delta(const floating[:, ::1] targets,  # IN (m, n_out)
                 const floating[:, ::1] outputs,  # IN (m, n_out)
                 floating[:, ::1] delta):         # OUT (m, n_out)
    """delta = (targets - outputs) * (outputs * (1 - outputs)).

    Returns
    -------
    float
        sum of |targets - outputs|.
    """
    cdef double abs_error_sum
    with nogil:
        abs_error_sum = _output_delta(&targets[0, 0], &outputs[0, 0], &delta[0, 0],
                                      targets.shape[0] * targets.shape[1])
    return abs_error_sum


def hidden_delta(const floating[:, ::1] delta_next,   # IN (m, n_out)
                 const floating[:, ::1] weights,      # IN (n_in, n_out)
                 const floating[:, ::1] activations,  # IN (m, n_in)
                 floating[:, ::1] delta,              # OUT (m, n_in)
                 int n_threads=1):
    """delta = (delta_next @ weights.T) * (activations * (1 - activations))."""
    with nogil:
        _hidden_delta(&delta_next[0, 0], &weights[0, 0], &activations[0, 0], &delta[0, 0],
                      delta_next.shape[0], weights.shape[0], weights.shape[1], n_threads)


def apply_gradient(floating[:, ::1] weights,        # INOUT (n_in, n_out)
                   floating[::1] bias,              # INOUT (n_out,) or (0,) for none
                   const floating[:, ::1] inputs,   # IN (m, n_in)
                   const floating[:, ::1] delta,    # IN (m, n_out)
                   floating learning_rate,
                   floating[::1] grad,              # scratch, >= n_out
                   int n_threads=1):
    """weights += learning_rate * (inputs.T @ delta); bias += learning_rate * delta.sum(0)."""
    with nogil:
        _apply_gradient(&weights[0, 0], &bias[0] if bias.shape[0] > 0 else NULL,
                        &inputs[0, 0], &delta[0, 0], learning_rate, True, &grad[0],
                        inputs.shape[0], weights.shape[0], weights.shape[1], n_threads)


def gradient(const floating[::1] params,          # IN all weights and biases, flat
             const Py_ssize_t[::1] sizes,         # IN layer sizes s0..sL
             bint has_bias,
             const floating[:, ::1] x,            # IN (m, s0)
             const floating[:, ::1] y,            # IN (m, sL)
             floating[::1] activations,           # scratch, m * sum(s1..sL)
             floating[::1] deltas,                # scratch, same size as activations
             floating[::1] grad,                  # scratch, max(s1..sL)
             floating[::1] gradient_out,          # OUT, same layout and size as params
             int n_threads=1):
    """The update direction of one full-batch step, without applying it.

    Returns
    -------
    float
        sum |y - output| of the forward pass.
    """
    cdef double abs_error_sum
    with nogil:
        # params is only read when gradient_out is given; the cast drops const for the
        # shared step function's signature.
        abs_error_sum = _train_step(<floating*>&params[0], &sizes[0], sizes.shape[0] - 1,
                                    has_bias, &x[0, 0], &y[0, 0], x.shape[0], 1,
                                    &activations[0], &deltas[0], &grad[0], &gradient_out[0],
                                    n_threads)
    return abs_error_sum


def fit(floating[::1] params,              # INOUT all weights and biases, flat
        const Py_ssize_t[::1] sizes,       # IN layer sizes s0..sL
        bint has_bias,
        const floating[:, ::1] x,          # IN (n_rows, s0)
        const floating[:, ::1] y,          # IN (n_rows, sL)
        const Py_ssize_t[:, ::1] order,    # IN (n_epochs, n_rows) row order, or (0, 0)
        Py_ssize_t batch_size,
        Py_ssize_t n_epochs,
        floating learning_rate,
        floating[::1] activations,         # scratch, batch_size * sum(s1..sL)
        floating[::1] deltas,              # scratch, same size as activations
        floating[::1] grad,                # scratch, max(s1..sL)
        floating[::1] batch_x,             # scratch, batch_size * s0 when order is given
        floating[::1] batch_y,             # scratch, batch_size * sL when order is given
        Py_ssize_t check_every,            # batches between polls for Ctrl-C; 0: never
        int n_threads=1):
    """Trains for n_epochs epochs in one call, without the GIL.

    Parameters
    ----------
    params : flat weights (and biases), updated in place; see the module notes for the layout.
    sizes : layer sizes, at least two.
    has_bias : whether params holds a bias after each weight matrix.
    x, y : inputs and targets, one row per sample.
    order : for shuffled mini-batches, the row order of every epoch; (0, 0) for stored order.
    batch_size : rows per step; n_rows for full batch.
    n_epochs : passes over the rows.
    learning_rate : step size.
    activations, deltas, grad, batch_x, batch_y : scratch buffers sized by the caller.
    check_every : poll for signals (Ctrl-C) after this many batches; 0 never polls (for
        fits off the main thread, where Python handles no signals).
    n_threads : threads for the elementwise passes over large layers (BLAS has its own).

    Returns
    -------
    epochs_done : int
        Completed epochs; fewer than n_epochs when the error became non-finite, in which case
        the epoch at index ``epochs_done`` is the one that produced it.
    first_error : float
        Mean |y - output| of the first epoch (before its updates), NaN if n_epochs is 0.
    diverged : bool
        Whether the error stopped being finite.
    """
    cdef double first_error = float("nan")
    cdef Py_ssize_t epochs_done = 0
    cdef int status
    with nogil:
        status = _fit_loop(&params[0], &sizes[0], sizes.shape[0] - 1, has_bias,
                           &x[0, 0], &y[0, 0], x.shape[0],
                           &order[0, 0] if order.shape[0] > 0 else NULL,
                           batch_size, n_epochs, learning_rate,
                           &activations[0], &deltas[0], &grad[0],
                           &batch_x[0] if batch_x.shape[0] > 0 else NULL,
                           &batch_y[0] if batch_y.shape[0] > 0 else NULL,
                           check_every, n_threads, &first_error, &epochs_done)
    return epochs_done, first_error, status == 1
