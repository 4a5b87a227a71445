"""Compiled kernels of nnfast: forward pass, sigmoid, deltas, weight updates, fused fit.

Two training paths share this module: the original's fused step (:func:`original_fit`,
:func:`original_gradient`: sigmoid layers, squared error, plain summed update), kept exactly
as it was so that the tutorial workloads pay nothing for the rest; and the general step
(:func:`fit`, :func:`fit_sparse`, :func:`loss_gradient`: any hidden activation per layer,
scikit-learn's outputs and losses, sample weights, L2, mean or summed gradients, plain / SGD /
Adam), described in its own section below. Python chooses between them once per fit
(``nnfast._training.plan.FitPlan``).

Names: the general path owns the plain names (``_step``, ``_fit_loop``, ``_forward``,
``_hidden_delta``); the original's fused path, which stays beside it, says so
(``_original_step``, ``_original_fit_loop``, ``_original_forward``, ...). What both paths do
the same way is written once and used by both: the batch of rows a step sees
(``_batch_rows``), the Ctrl-C polls (``_count_batch``), the products too small for BLAS
(``_small_forward``, ``_small_backward``, ``_apply_gradient``'s loop) and the BLAS calls.
The general path's integer codes (activations, outputs, optimizers, schedules, reductions,
losses) are defined once, in ``codes.pxd``, cimported here and exported to Python by
``nnfast._kernels.codes``. Its settings are one ``_Config``, fixed for a fit (const in every
function); the optimizer's counters that change as it trains are a ``_Counters`` beside it.

How Python and the kernel split the work
----------------------------------------
``nnfast.network`` validates and coerces every input once, allocates every buffer a fit
needs (``nnfast._training.layout``), and calls :func:`original_fit` once per reporting chunk
(the general path: ``nnfast._kernels.runner`` calls :func:`fit`, with the fit's settings in
one ``TrainConfig`` and the optimizer's state in an ``OptimizerState``). Every ``def`` entry
point checks the sizes of the buffers it is given before it releases the GIL. This module
assumes valid, C-contiguous input of a single floating dtype, allocates nothing, and runs its
loops without the GIL; it takes the GIL back only to poll for signals (Ctrl-C), at most every
20 ms (see "Ctrl-C" below). Compiler directives are set in one place, ``setup.py``.

Memory layout (shared with ``nnfast._training.layout``)
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
The caller passes n_threads > 1 only for networks whose products are large, with BLAS
capped at one thread so that the two thread pools never compete. A dense unclipped fit then
runs each call in one OpenMP parallel region, its batches cut into row blocks ("The team
step"); elsewhere each layer operation runs in its own parallel region over blocks (see
"Threads" below).
"""

from cython cimport floating
from libc.math cimport (INFINITY, M_PI, copysign, copysignf, cos, exp, expf, fabs, fabsf,
                        isfinite, log, pow, sqrt, sqrtf)
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from cython.parallel cimport parallel, prange
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset
from cpython.exc cimport PyErr_CheckSignals
cdef extern from "Python.h":
    # The same call, for a team's thread 0, which reports a pending signal by its status
    # (the exception stays set) instead of raising inside the parallel region.
    int _signals_status "PyErr_CheckSignals"() noexcept
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from scipy.linalg.cython_blas cimport dgemm, sgemm

# The general path's integer codes: defined once, in codes.pxd (compile-time constants here;
# Python reads the same enums from nnfast._kernels.codes, which checks codes passed in).
from nnfast._kernels.codes cimport (ACTIVATION_ELU, ACTIVATION_GELU, ACTIVATION_IDENTITY,
                                    ACTIVATION_LEAKY_RELU, ACTIVATION_LOGISTIC, ACTIVATION_RELU,
                                    ACTIVATION_SILU, ACTIVATION_SOFTPLUS, ACTIVATION_TANH,
                                    OPTIMIZER_ADAM, OPTIMIZER_PLAIN,
                                    OPTIMIZER_SGD, OUTPUT_EXP, OUTPUT_IDENTITY, OUTPUT_LOGISTIC,
                                    OUTPUT_ORIGINAL, OUTPUT_SOFTMAX, REDUCTION_MEAN,
                                    SCHEDULE_INVSCALING, SCHEDULE_COSINE, LOSS_OUTPUT,
                                    LOSS_ABSOLUTE_ERROR, LOSS_HUBER, LOSS_QUANTILE)
from nnfast._kernels import codes as _codes

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define NNFAST_OPENMP 1
    static int nnfast_team_threads(void) { return omp_get_max_threads(); }
    static void nnfast_set_team_threads(int n) { omp_set_num_threads(n); }
    static int nnfast_thread_id(void) { return omp_get_thread_num(); }
    static int nnfast_thread_count(void) { return omp_get_num_threads(); }
    static void nnfast_team_barrier(void) {
        #pragma omp barrier
    }
    #else
    #define NNFAST_OPENMP 0
    static int nnfast_team_threads(void) { return 1; }
    static void nnfast_set_team_threads(int n) { (void)n; }
    static int nnfast_thread_id(void) { return 0; }
    static int nnfast_thread_count(void) { return 1; }
    static void nnfast_team_barrier(void) {}
    #endif
    #if defined(__linux__)
    #include <unistd.h>
    #include <sys/syscall.h>
    static long nnfast_kernel_thread_id(void) { return (long)syscall(SYS_gettid); }
    #else
    static long nnfast_kernel_thread_id(void) { return -1; }
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
    int nnfast_team_threads() noexcept nogil
    void nnfast_set_team_threads(int n) noexcept nogil
    int nnfast_thread_id() noexcept nogil
    int nnfast_thread_count() noexcept nogil
    void nnfast_team_barrier() noexcept nogil
    long nnfast_kernel_thread_id() noexcept nogil
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


def team_threads():
    """Threads the calling thread's parallel regions run with (OpenMP's nthreads setting of
    this thread: OMP_NUM_THREADS, a threadpoolctl limit, or the last set_team_threads); 1
    without OpenMP."""
    return nnfast_team_threads()


def set_team_threads(int n):
    """Sets how many threads run the calling thread's parallel regions (OpenMP's setting is
    per thread: fits in other Python threads keep theirs). The blocks a product is cut into
    are the kernel functions' n_threads argument and fix the arithmetic; this only decides
    how many threads share them, so any value gives the same results."""
    if n < 1:
        raise ValueError(f"team threads = {n}; at least 1 is needed")
    nnfast_set_team_threads(n)


def team_worker_ids(int n):
    """The Linux thread ids of the OpenMP workers that join this thread's parallel regions
    of n threads, besides the calling thread (empty where there are none or ids are not
    available): the caller tells its own idle-spinning workers from other libraries'
    threads when it counts free cores (nnfast._training.threads.KernelTeam)."""
    cdef long ids[256]
    cdef int count = 0
    cdef int* shared_count = &count  # written through: a variable assigned in the region
    n = max(1, min(n, 256))          # would be the thread's own
    with nogil, parallel(num_threads=n):
        ids[nnfast_thread_id()] = nnfast_kernel_thread_id()
        if nnfast_thread_id() == 0:
            shared_count[0] = nnfast_thread_count()
    return [ids[i] for i in range(1, count) if ids[i] > 0]


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
# 3 ulp of NumPy's 1 / (1 + exp(-x)) (tests/kernels/test_kernels.py). Overflow gives +inf and NaN
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
    #define NNFAST_HAS_FMA 1
    #else
    #define nnfast_madd64(a, b, c) ((a) * (b) + (c))
    #define nnfast_madd32(a, b, c) ((a) * (b) + (c))
    #define NNFAST_HAS_FMA 0
    #endif
    """
    double _madd64 "nnfast_madd64"(double a, double b, double c) noexcept nogil
    float _madd32 "nnfast_madd32"(float a, float b, float c) noexcept nogil
    const bint _HAS_FMA "NNFAST_HAS_FMA"


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

# How _gemm reads each operand (BLAS's op codes).
cdef enum _Operand:
    AS_IS = 110        # b'n'
    TRANSPOSED = 116   # b't'


cdef void _gemm(_Operand read_a, _Operand read_b, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb,
                floating beta, floating* c, int ldc) noexcept nogil:
    """C = alpha * op(A) @ op(B) + beta * C, all row-major, through BLAS."""
    cdef char op_a = <char>read_a
    cdef char op_b = <char>read_b
    if floating is double:
        dgemm(&op_b, &op_a, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)
    else:
        sgemm(&op_b, &op_a, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)


# Threads. With n_threads > 1 (the caller asks for it only when the products are large, and
# caps BLAS at one thread meanwhile, so the two thread pools never compete for the cores),
# each layer's work is split into n_threads blocks inside a single parallel region: a block
# of rows for the forward pass and the deltas, elementwise work included; a block of weight
# rows (or columns) for the update, so no two threads write the same memory and no reduction
# is needed. Each block's product is one single-threaded BLAS call.
#
# n_threads fixes the blocks, and with them every rounding; how many threads share the blocks
# is the calling thread's OpenMP setting (set_team_threads), which the caller lowers while
# other threads hold cores (nnfast._training.threads). One thread running both blocks computes what
# two would, bit for bit.

cdef inline Py_ssize_t _block_start(Py_ssize_t n, int n_blocks, int t) noexcept nogil:
    """Start of block t of n_blocks near-equal blocks of range(n)."""
    return n * t // n_blocks


cdef inline void _small_forward(const floating* inputs, const floating* weights,
                                const floating* bias, floating* outputs, Py_ssize_t m,
                                Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """outputs = inputs @ weights [+ bias] as plain loops, for products under _BLAS_MIN_FLOPS
    (both paths; each applies its activation after): each output a dot product kept in a
    register, started from the bias as BLAS's beta = 1 would be."""
    cdef Py_ssize_t i, p, j
    cdef floating acc
    for i in range(m):
        for j in range(n_out):
            acc = 0 if bias == NULL else bias[j]
            for p in range(n_in):
                acc = _madd(inputs[i * n_in + p], weights[p * n_out + j], acc)
            outputs[i * n_out + j] = acc


cdef inline void _small_backward(const floating* delta_next, const floating* weights,
                                 const floating* activations, floating* delta,
                                 Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                                 bint sigmoid_slope) noexcept nogil:
    """delta = delta_next @ weights.T as plain loops, for products under _BLAS_MIN_FLOPS;
    weights is (n_in x n_out). With sigmoid_slope (the original's step), each value is
    scaled by a * (1 - a), a = activations, as it is stored, rather than in a second pass:
    on so few values the pass would wait for these stores to reach memory (they cannot be
    forwarded to its vector loads). Without (the general step), the caller applies the
    layer's derivative after, in scikit-learn's order. Callers pass sigmoid_slope as a
    constant, so the choice folds away once inlined."""
    cdef Py_ssize_t i, p, j
    cdef floating acc
    for i in range(m):
        for p in range(n_in):
            acc = 0
            for j in range(n_out):
                acc = _madd(delta_next[i * n_out + j], weights[p * n_out + j], acc)
            if sigmoid_slope:
                delta[i * n_in + p] = acc * _sigmoid_slope(activations[i * n_in + p])
            else:
                delta[i * n_in + p] = acc


cdef inline void _original_forward(const floating* inputs, const floating* weights,
                                   const floating* bias, floating* outputs, Py_ssize_t m,
                                   Py_ssize_t n_in, Py_ssize_t n_out,
                                   int n_threads) noexcept nogil:
    """outputs = sigmoid(inputs @ weights [+ bias]); bias may be NULL."""
    cdef int t
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        _small_forward(inputs, weights, bias, outputs, m, n_in, n_out)
        _sigmoid_range(outputs, 0, m * n_out)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static"):
            _linear_rows(inputs, weights, bias, outputs, _block_start(m, n_threads, t),
                         _block_start(m, n_threads, t + 1), n_in, n_out, ACTIVATION_LOGISTIC,
                         NULL)
    else:
        _linear_rows(inputs, weights, bias, outputs, 0, m, n_in, n_out, ACTIVATION_LOGISTIC,
                     NULL)


cdef inline double _original_output_delta(const floating* targets, const floating* outputs,
                                          floating* delta, Py_ssize_t n) noexcept nogil:
    """delta = (y - a) * (a * (1 - a)); returns sum |y - a|."""
    cdef Py_ssize_t i
    cdef floating error
    cdef double abs_error_sum = 0.0
    for i in range(n):
        error = targets[i] - outputs[i]
        delta[i] = error * _sigmoid_slope(outputs[i])
        abs_error_sum += fabs(error)
    return abs_error_sum


cdef void _original_hidden_rows(const floating* delta_next, const floating* weights,
                                const floating* activations, floating* delta,
                                Py_ssize_t row_start, Py_ssize_t row_stop, Py_ssize_t n_in,
                                Py_ssize_t n_out) noexcept nogil:
    """delta[rows] = (delta_next[rows] @ weights.T) * (a * (1 - a)) through BLAS."""
    if row_stop <= row_start:
        return
    _gemm(AS_IS, TRANSPOSED, <int>(row_stop - row_start), <int>n_in, <int>n_out, <floating>1,
          &delta_next[row_start * n_out], <int>n_out, weights, <int>n_out, <floating>0,
          &delta[row_start * n_in], <int>n_in)
    _scale_by_slope_range(delta, activations, row_start * n_in, row_stop * n_in)


cdef inline void _original_hidden_delta(const floating* delta_next, const floating* weights,
                                        const floating* activations, floating* delta,
                                        Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                                        int n_threads) noexcept nogil:
    """delta = (delta_next @ weights.T) * (a * (1 - a)); weights is (n_in x n_out)."""
    cdef int t
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        _small_backward(delta_next, weights, activations, delta, m, n_in, n_out, True)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static"):
            _original_hidden_rows(delta_next, weights, activations, delta,
                                  _block_start(m, n_threads, t), _block_start(m, n_threads, t + 1),
                                  n_in, n_out)
    else:
        _original_hidden_rows(delta_next, weights, activations, delta, 0, m, n_in, n_out)


cdef void _gradient_block(floating* weights, const floating* inputs, const floating* delta,
                          floating scale, bint accumulate, Py_ssize_t m, Py_ssize_t n_in,
                          Py_ssize_t n_out, Py_ssize_t p_start, Py_ssize_t p_stop,
                          Py_ssize_t j_start, Py_ssize_t j_stop) noexcept nogil:
    """W[p, j] = scale * (inputs[:, p].T @ delta[:, j]) [+ W[p, j]] through BLAS."""
    if p_stop <= p_start or j_stop <= j_start:
        return
    _gemm(TRANSPOSED, AS_IS, <int>(p_stop - p_start), <int>(j_stop - j_start), <int>m, scale,
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
        for t in prange(n_threads, schedule="static"):
            _gradient_block(weights, inputs, delta, scale, accumulate, m, n_in, n_out,
                            _block_start(n_in, n_threads, t),
                            _block_start(n_in, n_threads, t + 1), 0, n_out)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static"):
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


cdef double _original_step(floating* params, const Py_ssize_t* sizes, Py_ssize_t n_layers,
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
        _original_forward(layer_in, weights, weights + n_in * n_out if has_bias else NULL,
                          layer_out, m, n_in, n_out, n_threads)
        layer_in = layer_out
        weights += _layer_params(sizes, k, has_bias)
        if k + 1 < n_layers:
            layer_out += m * n_out
            delta += m * n_out

    # layer_out, delta: the output layer's activations and delta; weights: one past the end.
    abs_error_sum = _original_output_delta(y, layer_out, delta, m * sizes[n_layers])

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
            _original_hidden_delta(delta_next, weights, layer_out, delta, m, n_in, n_out,
                                   n_threads)
            layer_in = layer_out
        else:
            layer_in = x
        _apply_gradient(target, target + n_in * n_out if has_bias else NULL, layer_in,
                        delta_next, learning_rate if gradient_out == NULL else 1,
                        gradient_out == NULL, grad, m, n_in, n_out, n_threads)
    return abs_error_sum


# --------------------------------------------------------------------------------------------
# Ctrl-C. Python's handler only records a signal; the kernel must take the GIL and ask. It
# asks at most every _POLL_SECONDS, whatever a batch costs: the caller's check_every spaces
# looks at the clock by work (a clock read would cost the tutorial's tiny steps ~30%), the
# clock spaces the polls by time (taking the GIL is slow when another Python thread holds it,
# and a debug build or a slow machine does the same work many times slower).
# --------------------------------------------------------------------------------------------

cdef double _POLL_SECONDS = 0.02

cdef extern from "_clock.h":
    double _monotonic_seconds "nnfast_monotonic_seconds"() noexcept nogil


cdef int _poll_signals(double* next_poll) except -1 nogil:
    """Raises what a pending signal's handler raises (KeyboardInterrupt), if _POLL_SECONDS
    have passed since the poll that set next_poll (0 at a fit's start). Kept out of the
    loops: inlined, it changed how GCC compiled the original's step (+20% instructions)."""
    cdef double now = _monotonic_seconds()
    if now >= next_poll[0]:
        next_poll[0] = now + _POLL_SECONDS
        with gil:
            PyErr_CheckSignals()
    return 0


cdef inline const floating* _batch_rows(const floating* values, Py_ssize_t width,
                                        const Py_ssize_t* rows, Py_ssize_t start, Py_ssize_t m,
                                        floating* gathered) noexcept nogil:
    """A batch's m rows of values (row-major, width per row): where they are (rows NULL:
    rows start, start + 1, ...), or gathered in the order rows gives into `gathered`, so that
    every product sees contiguous data."""
    cdef Py_ssize_t r
    if rows == NULL:
        return &values[start * width]
    for r in range(m):
        memcpy(&gathered[r * width], &values[rows[r] * width], width * sizeof(floating))
    return gathered


cdef inline int _count_batch(Py_ssize_t* until_check, Py_ssize_t check_every,
                             double* next_poll) except -1 nogil:
    """Counts a finished batch; every check_every batches (0: never) looks at the clock,
    and polls for signals when it is time (_poll_signals). Between batches, not epochs: an
    epoch of many mini-batches can be long."""
    until_check[0] -= 1
    if until_check[0] == 0:
        until_check[0] = check_every
        _poll_signals(next_poll)
    return 0


cdef int _original_fit_loop(floating* params, const Py_ssize_t* sizes, Py_ssize_t n_layers,
                            bint has_bias, const floating* x, const floating* y, Py_ssize_t n_rows,
                            const Py_ssize_t* order, Py_ssize_t batch_size, Py_ssize_t n_epochs,
                            floating learning_rate, floating* activations, floating* deltas,
                            floating* grad, floating* batch_x, floating* batch_y,
                            Py_ssize_t check_every, int n_threads, double* first_error,
                            Py_ssize_t* epochs_done) except -1 nogil:
    """The original's loop (_fit_loop's, for the original's fused step: the same batches and
    polls, without the general step's losses and counters). Runs n_epochs epochs; returns 0,
    or 1 when the error stopped being finite."""
    cdef Py_ssize_t epoch, start, m
    cdef Py_ssize_t n_in = sizes[0]
    cdef Py_ssize_t n_out = sizes[n_layers]
    cdef Py_ssize_t until_check = check_every  # batches
    cdef double next_poll = 0.0
    cdef double epoch_error
    cdef const Py_ssize_t* rows

    for epoch in range(n_epochs):
        epoch_error = 0.0
        start = 0
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            rows = &order[epoch * n_rows + start] if order != NULL else NULL
            epoch_error += _original_step(params, sizes, n_layers, has_bias,
                                          _batch_rows(x, n_in, rows, start, m, batch_x),
                                          _batch_rows(y, n_out, rows, start, m, batch_y), m,
                                          learning_rate, activations, deltas, grad, NULL,
                                          n_threads)
            start += m
            _count_batch(&until_check, check_every, &next_poll)
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
# The general step: any hidden activation per layer, any output and loss, sample weights,
# L2, mean or summed gradients, and the optimizers, beside the original's fused step above
# (which stays as it is, so the original's path pays nothing for the generality). Python
# chooses one of the two once per fit (nnfast._training.plan.FitPlan.is_original).
#
# Semantics are scikit-learn's MLP (sklearn/neural_network/_multilayer_perceptron.py
# _backprop, _base.py, _stochastic_optimizers.py), restated in nnfast/_training/plan.py and
# mirrored by nnfast/reference.py, the oracle of tests/kernels/test_general_kernel.py.
#
# Gradients go to one scratch buffer of the largest layer's parameter count, not a full
# params-sized one: walking back from the output, layer k's gradient is formed once delta_k
# (which needs W_k before this step's update) is known, and the optimizer updates layer k's
# slice of params right away, while its gradient is still in cache. Every gradient of a step
# still comes from the weights before the step, as in scikit-learn, because delta_k is the
# last reader of W_k. loss_gradient writes the gradient of each layer straight into its
# params-layout output instead.
#
# Gradient clipping (max_grad_norm) needs the norm of the whole step's gradient before any
# layer moves, so a clipped step finishes every layer's G in the params-sized gradient buffer
# (as loss_gradient does), scales it once and then updates all parameters in one pass
# (_clipped_update). The choice is made once per step; the unclipped step is unchanged.
# --------------------------------------------------------------------------------------------

cdef struct _Config:
    # The model and the fit, fixed for a fit (read only by the kernel).
    Py_ssize_t n_layers
    const Py_ssize_t* sizes        # n_layers + 1 widths
    const Py_ssize_t* activations  # n_layers - 1 hidden activation codes
    bint has_bias
    int output
    int reduction
    double alpha
    int optimizer
    int schedule
    double learning_rate_init      # Adam's rate and invscaling's numerator
    double momentum
    bint nesterov
    double power_t
    double beta_1
    double beta_2
    double epsilon
    Py_ssize_t batch_size
    Py_ssize_t check_every
    int n_threads
    int loss                       # LOSS_OUTPUT (the output's own) or a regression loss
    double loss_parameter          # Huber's delta, or the quantile q
    double max_grad_norm           # clip a step's gradient to this global L2 norm; 0: never
    Py_ssize_t schedule_epochs     # "cosine": epochs from the initial rate to 0, warm-up too
    Py_ssize_t warmup_epochs       # "cosine": the linear warm-up's epochs
    const double* dropout          # n_layers - 1 hidden layers' dropout rates; NULL: none
    uint64_t dropout_seed          # the fit's seed of its dropout masks


cdef struct _Counters:
    # The optimizer's counters (nnfast._training.plan's OptimizerState.step / samples_seen /
    # learning_rate): what changes as a fit trains, besides params and the optimizer state.
    # The step functions and the loop update them; the fit's settings (_Config) stay const.
    int64_t step
    int64_t samples_seen
    double learning_rate   # SGD's current rate (after its schedule), the plain step's;
                           # with "cosine", the epoch's rate for Adam too
    int64_t epochs         # "cosine": the schedule's position, the epochs trained under it
    int64_t batch_position  # rows trained before this batch (dropout's masks; the fit loop
                            # sets it, nothing keeps it)


cdef struct _Workspace:
    # Scratch of one fit, allocated by nnfast._training.layout.allocate_general_workspace.
    # void*, as a struct cannot be fused; each user casts to its floating type.
    void* activations   # batch rows x sum(s1..sL)
    void* deltas        # the same
    void* slopes        # the same, for gelu / silu layers' derivatives; NULL without them
    void* bias_sums     # max(s1..sL)
    void* gradient      # P values: a step's gradient, params layout (training only)
    void* batch_x       # batch rows x s0, shuffled fits only
    void* batch_y       # batch rows x sL, shuffled fits only
    void* batch_w       # batch rows, shuffled weighted fits only
    void* transposed    # P values: transposed weight matrices (see "Skinny products")
    void* transposed_gradient  # P values: gradients summed transposed (_blocked_step)
    # A sparse batch transposed (_sparse_layer_update; NULL: the scatter path instead):
    Py_ssize_t* column_starts  # s0 + 1 entry starts per input column
    Py_ssize_t* column_rows    # the batch row of each entry (column_capacity)
    void* column_values        # the value of each entry (column_capacity)
    Py_ssize_t column_capacity
    Py_ssize_t gradient_skipped  # with them, gradient holds layers 1.. (offsets less this)


cdef extern from *:
    """
    /* The machine epsilon of each dtype (numpy.finfo(dtype).eps): scikit-learn clips       */
    /* probabilities to [eps, 1 - eps] of their dtype before taking logs.                   */
    #include <float.h>
    #define NNFAST_EPS64 DBL_EPSILON
    #define NNFAST_EPS32 FLT_EPSILON
    """
    const double _EPS64 "NNFAST_EPS64"
    const float _EPS32 "NNFAST_EPS32"


cdef inline floating _tanh(floating x) noexcept nogil:
    """tanh(x) without branches (selects only), so loops over a layer vectorise.

    tanh(|x|) with the sign of x. For |x| >= 1/2: 1 - 2 / (exp(2|x|) + 1) with nnfast's
    _exp; the subtraction cancels at most about one bit there (tanh(1/2) = 0.46), so the
    result stays within a few ulp (measured: 3 ulp float64, 2 float32). |x| < 1/2, where that
    formula would cancel badly: |x| + |x| * u * P(u), u = x^2, P the near-minimax
    (Chebyshev-economised) polynomial of (tanh(x) / x - 1) / u on u in [0, 1/4], of degree 9
    (float64; error 1e-17 relative) or 4 (float32; 1e-9), computed with mpmath.
    tests/kernels/test_general_kernel.py checks the result against NumPy's tanh over the whole range,
    signed zeros, infinities and NaN included.
    """
    cdef floating a = fabs(x)
    cdef floating u = x * x
    cdef floating poly, small, large
    if floating is double:
        poly = (((((((((5.946956589774769e-05 * u - 0.00022107222975864633) * u
                       + 0.0005849653729022644) * u - 0.001454959384380466) * u
                     + 0.0035920334653723926) * u - 0.008863229270067843) * u
                   + 0.021869488297234514) * u - 0.05396825396361009) * u
                 + 0.13333333333329825) * u - 0.3333333333333333)
    else:
        poly = ((((<float>-0.006942941750416007 * u + <float>0.02147068302533676) * u
                  - <float>0.05393346914596769) * u + <float>0.13333225775482527) * u
                - <float>0.33333332796631665)
    small = a + (a * u) * poly
    large = <floating>1 - <floating>2 / (_exp(a + a) + <floating>1)
    # tanh(|x|) with the sign of x (-0.0 included). NaN: a < 0.5 is false, and _exp passes
    # NaN on.
    if floating is double:
        return copysign(small if a < 0.5 else large, x)
    else:
        return copysignf(small if a < <float>0.5 else large, x)


cdef inline floating _libm_exp(floating x) noexcept nogil:
    """exp(x) by libm, subnormal results included (the exp output's full range)."""
    if floating is double:
        return exp(x)
    else:
        return expf(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    """sqrt(x)."""
    if floating is double:
        return sqrt(x)
    else:
        return sqrtf(x)


cdef inline double _xlogy(double x, double y) noexcept nogil:
    """x * log(y), and 0 where x == 0 unless y is NaN (scipy.special.xlogy)."""
    if x == 0 and y == y:
        return 0.0
    return x * log(y)


# --------------------------------------------------------------------------------------------
# The hidden activations beyond scikit-learn's (nnfast.reference states each formula):
#   leaky_relu  z if z >= 0 else 0.01 z          elu       z if z > 0 else exp(z) - 1
#   gelu        z * Phi(z), Phi the standard normal distribution function (the exact form,
#               0.5 z (1 + erf(z / sqrt 2)), not the tanh approximation)
#   silu        z * sigmoid(z)                   softplus  log(1 + exp(z))
# Each is branch-free (selects only), so loops over a layer vectorise as the sigmoid's do.
# leaky_relu's and elu's derivatives are functions of their outputs, as scikit-learn's
# activations' are: the step keeps only the outputs. gelu's and silu's are not (neither is
# monotonic), and softplus's comes cheaper from its forward pass's exp, so for these three the
# forward pass also writes each unit's derivative to the workspace's "slopes" buffer (the
# activations' layout), which the backward pass reads.
# --------------------------------------------------------------------------------------------

cdef extern from *:
    """
    /* W. J. Cody's rational Chebyshev approximations of erf and erfc (Math. Comp. 23, 1969,  */
    /* 631-637; the coefficients of his CALERF): erf on |x| <= 0.5, erfc(x) exp(x^2) on       */
    /* [0.5, 4] and erfc(x) exp(x^2) x on [4, inf) in 1 / x^2. Relative error below 2e-15 on  */
    /* each (tests/kernels/test_activations.py measures the kernel's against SciPy's).        */
    static const double NNFAST_ERF_P[5] = {3.16112374387056560e00, 1.13864154151050156e02,
        3.77485237685302021e02, 3.20937758913846947e03, 1.85777706184603153e-1};
    static const double NNFAST_ERF_Q[4] = {2.36012909523441209e01, 2.44024637934444173e02,
        1.28261652607737228e03, 2.84423683343917062e03};
    static const double NNFAST_ERFC_P[9] = {5.64188496988670089e-1, 8.88314979438837594e00,
        6.61191906371416295e01, 2.98635138197400131e02, 8.81952221241769090e02,
        1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
        2.15311535474403846e-8};
    static const double NNFAST_ERFC_Q[8] = {1.57449261107098347e01, 1.17693950891312499e02,
        5.37181101862009858e02, 1.62138957456669019e03, 3.29079923573345963e03,
        4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03};
    static const double NNFAST_ERFC_TAIL_P[6] = {3.05326634961232344e-1,
        3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
        6.58749161529837803e-4, 1.63153871373020978e-2};
    static const double NNFAST_ERFC_TAIL_Q[5] = {2.56852019228982242e00,
        1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
        2.33520497626869185e-3};
    """
    const double* _ERF_P "NNFAST_ERF_P"
    const double* _ERF_Q "NNFAST_ERF_Q"
    const double* _ERFC_P "NNFAST_ERFC_P"
    const double* _ERFC_Q "NNFAST_ERFC_Q"
    const double* _ERFC_TAIL_P "NNFAST_ERFC_TAIL_P"
    const double* _ERFC_TAIL_Q "NNFAST_ERFC_TAIL_Q"

# 1 / sqrt(2), 1 / sqrt(pi), 1 / sqrt(2 pi); leaky_relu's slope.
cdef double _SQRT_HALF = 0.7071067811865476
cdef double _INV_SQRT_PI = 0.5641895835477563
cdef double _INV_SQRT_2PI = 0.3989422804014327
cdef double _LEAKY_SLOPE = 0.01


cdef inline floating _square_error(floating a, floating square) noexcept nogil:
    """a * a - square exactly, square being a * a rounded: one fused multiply-add, or,
    without FMA (the baseline build), Dekker's product of a split in halves (whose products
    are exact; no FMA instruction exists there to contract them)."""
    cdef floating split, high, low
    if _HAS_FMA:
        return _madd(a, a, -square)
    split = a * <floating>(134217729.0 if floating is double else 4097.0)
    high = split - (split - a)
    low = a - high
    return ((high * high - square) + <floating>2 * high * low) + low * low


cdef inline floating _normal_cdf(floating z, floating* pdf) noexcept nogil:
    """Phi(z), the standard normal distribution function, and its density phi(z) in pdf.

    Phi(z) = erfc(-t) / 2, t = z / sqrt 2, y = |t|. For y <= 0.5, 1/2 + t P(t^2) / 2 Q(t^2)
    (Cody's erf); beyond, erfc(y) = exp(-t^2) R(y) with Cody's R for [0.5, 4] or for the
    tail, written there as a ratio of polynomials in t^2 (his in 1 / t^2, both multiplied by
    t^10), so the lower tail keeps its relative precision (no 1 - erf cancellation) and
    exp(-t^2) is shared with the density. Each branch is a quotient; the branch's numerator
    and denominator are selected and divided once, so a loop over a layer vectorises with one
    division a unit. exp(-z^2 / 2) is taken of z^2 / 2 and its rounding error
    (_square_error): the rounding of z^2 alone would cost up to 1e-5 of the tail's value in
    float32 and 2e-13 in float64 (measured; SciPy's ndtr has the latter)."""
    cdef floating t = z * <floating>_SQRT_HALF
    cdef floating y = fabs(t) if floating is double else fabsf(t)
    cdef floating square = z * z
    cdef floating w = <floating>0.5 * square  # t^2 as it enters exp, exactly halved
    # exp(-(w + e)) = exp(-w) (1 - e), e = z^2 / 2 - w: its rounding error, exact (none for
    # infinite z, whose residual is inf - inf; NaN z stays NaN through exp(-w)).
    cdef floating residual = <floating>0.5 * _square_error(z, square)
    cdef floating gauss
    if floating is double:
        gauss = _exp(-w) * (1.0 - (residual if fabs(residual) < 1.0 else 0.0))
    else:
        gauss = _exp(-w) * (<float>1 - (residual if fabsf(residual) < <float>1 else 0))
    cdef floating num_small, den_small, num_mid, den_mid, num_tail, den_tail, v
    cdef floating num, den, offset, factor
    # erf(t) = t P(w) / Q(w) for y <= 0.5.
    num_small = ((((<floating>_ERF_P[4] * w + <floating>_ERF_P[0]) * w + <floating>_ERF_P[1])
                  * w + <floating>_ERF_P[2]) * w + <floating>_ERF_P[3])
    den_small = ((((w + <floating>_ERF_Q[0]) * w + <floating>_ERF_Q[1]) * w
                  + <floating>_ERF_Q[2]) * w + <floating>_ERF_Q[3])
    # erfc(y) exp(y^2) = P(y) / Q(y) for 0.5 < y <= 4.
    num_mid = <floating>_ERFC_P[8] * y
    den_mid = y
    num_mid = (num_mid + <floating>_ERFC_P[0]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[0]) * y
    num_mid = (num_mid + <floating>_ERFC_P[1]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[1]) * y
    num_mid = (num_mid + <floating>_ERFC_P[2]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[2]) * y
    num_mid = (num_mid + <floating>_ERFC_P[3]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[3]) * y
    num_mid = (num_mid + <floating>_ERFC_P[4]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[4]) * y
    num_mid = (num_mid + <floating>_ERFC_P[5]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[5]) * y
    num_mid = (num_mid + <floating>_ERFC_P[6]) * y
    den_mid = (den_mid + <floating>_ERFC_Q[6]) * y
    num_mid = num_mid + <floating>_ERFC_P[7]
    den_mid = den_mid + <floating>_ERFC_Q[7]
    # erfc(y) exp(y^2) = (1/sqrt(pi) - P(1/w) / (w Q(1/w))) / y for y > 4: the polynomials
    # reversed in w, (w Q'(w) / sqrt(pi) - P'(w)) / (w Q'(w) y), w kept below where w^5
    # would overflow (erfc is then 0 to the dtype: the exp factor already is).
    v = min(w, <floating>(700.0 if floating is double else 85.0))
    num_tail = (((((<floating>_ERFC_TAIL_P[4] * v + <floating>_ERFC_TAIL_P[3]) * v
                   + <floating>_ERFC_TAIL_P[2]) * v + <floating>_ERFC_TAIL_P[1]) * v
                 + <floating>_ERFC_TAIL_P[0]) * v + <floating>_ERFC_TAIL_P[5])
    den_tail = (((((<floating>_ERFC_TAIL_Q[4] * v + <floating>_ERFC_TAIL_Q[3]) * v
                   + <floating>_ERFC_TAIL_Q[2]) * v + <floating>_ERFC_TAIL_Q[1]) * v
                 + <floating>_ERFC_TAIL_Q[0]) * v + 1) * v
    num_tail = den_tail * <floating>_INV_SQRT_PI - num_tail
    den_tail = den_tail * y
    # Phi = offset + factor * num / den: 1/2 + (t/2) erf-ratio near 0; erfc(y) / 2 below,
    # 1 - erfc(y) / 2 above. NaN fails every comparison and reaches the last case, whose
    # exp factor passes it on.
    num = num_mid if y <= 4 else num_tail
    den = den_mid if y <= 4 else den_tail
    offset = 0 if t < 0 else 1
    factor = <floating>0.5 * gauss if t < 0 else <floating>-0.5 * gauss
    if y <= <floating>0.5:
        num, den, offset, factor = num_small, den_small, <floating>0.5, <floating>0.5 * t
    pdf[0] = gauss * <floating>_INV_SQRT_2PI
    return offset + factor * (num / den)


cdef inline floating _expm1(floating x) noexcept nogil:
    """exp(x) - 1 to full relative precision near 0 (where exp(x) - 1 would cancel): its
    Taylor polynomial for |x| < 1/2 (to degree 15, float32 8: truncation below half an ulp),
    _exp(x) - 1 beyond."""
    cdef floating poly
    if floating is double:
        poly = x * (1.0 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x * (
            1.0 / 720 + x * (1.0 / 5040 + x * (1.0 / 40320 + x * (1.0 / 362880 + x * (
                1.0 / 3628800 + x * (1.0 / 39916800 + x * (1.0 / 479001600 + x * (
                    1.0 / 6227020800.0 + x * (1.0 / 87178291200.0
                                              + x * (1.0 / 1307674368000.0)))))))))))))))
        return poly if fabs(x) < 0.5 else _exp(x) - 1.0
    else:
        poly = x * (<float>1 + x * (<float>(1.0 / 2) + x * (<float>(1.0 / 6) + x * (
            <float>(1.0 / 24) + x * (<float>(1.0 / 120) + x * (<float>(1.0 / 720) + x * (
                <float>(1.0 / 5040) + x * <float>(1.0 / 40320))))))))
        return poly if fabsf(x) < <float>0.5 else _exp(x) - <float>1


cdef inline floating _log1p_unit(floating u) noexcept nogil:
    """log(1 + u) for 0 <= u <= 1: 2 atanh(s), s = u / (2 + u) <= 1/3, its odd series to
    s^33 (float32 s^15), whose truncation is below half an ulp; no cancellation for small u."""
    cdef floating s = u / (<floating>2 + u)
    cdef floating w = s * s
    cdef floating series
    if floating is double:
        series = 1.0 + w * (1.0 / 3 + w * (1.0 / 5 + w * (1.0 / 7 + w * (1.0 / 9 + w * (
            1.0 / 11 + w * (1.0 / 13 + w * (1.0 / 15 + w * (1.0 / 17 + w * (1.0 / 19 + w * (
                1.0 / 21 + w * (1.0 / 23 + w * (1.0 / 25 + w * (1.0 / 27 + w * (
                    1.0 / 29 + w * (1.0 / 31 + w * (1.0 / 33))))))))))))))))
    else:
        series = <float>1 + w * (<float>(1.0 / 3) + w * (<float>(1.0 / 5) + w * (
            <float>(1.0 / 7) + w * (<float>(1.0 / 9) + w * (<float>(1.0 / 11) + w * (
                <float>(1.0 / 13) + w * <float>(1.0 / 15)))))))
    return <floating>2 * s * series


cdef inline void _activate_range(floating* z, Py_ssize_t start, Py_ssize_t stop,
                                 Py_ssize_t activation, floating* slopes) noexcept nogil:
    """z[start:stop] = activation(z[start:stop]) for a hidden activation code; for gelu and
    silu also slopes[start:stop] = activation'(z) (slopes indexed as z)."""
    cdef Py_ssize_t i
    cdef floating value, gate, decay, complement, phi, density
    if activation == ACTIVATION_LOGISTIC:
        _sigmoid_range(z, start, stop)
    elif activation == ACTIVATION_TANH:
        for i in range(start, stop):
            z[i] = _tanh(z[i])
    elif activation == ACTIVATION_RELU:
        # Written so that NaN passes through (as numpy.maximum(z, 0)), for divergence checks.
        for i in range(start, stop):
            z[i] = 0 if z[i] < 0 else z[i]
    elif activation == ACTIVATION_LEAKY_RELU:
        for i in range(start, stop):
            z[i] = z[i] * <floating>_LEAKY_SLOPE if z[i] < 0 else z[i]
    elif activation == ACTIVATION_ELU:
        for i in range(start, stop):
            z[i] = z[i] if z[i] > 0 else _expm1(z[i])
    elif activation == ACTIVATION_SOFTPLUS:
        # Its slope, sigmoid(z), from the same exp(-|z|): cheaper kept than recomputed from
        # the output (1 - exp(-a)) in the backward pass.
        for i in range(start, stop):
            value = z[i]
            if floating is double:
                decay = _exp(-fabs(value))
            else:
                decay = _exp(-fabsf(value))
            slopes[i] = (<floating>1 if value >= 0 else decay) / (<floating>1 + decay)
            z[i] = (value if value > 0 else 0) + _log1p_unit(decay)
    elif activation == ACTIVATION_GELU:
        for i in range(start, stop):
            value = z[i]
            phi = _normal_cdf(value, &density)
            slopes[i] = phi + value * density
            z[i] = value * phi
    elif activation == ACTIVATION_SILU:
        for i in range(start, stop):
            value = z[i]
            decay = _exp(-value)
            gate = <floating>1 / (<floating>1 + decay)
            # 1 - sigmoid(z) = exp(-z) sigmoid(z), without cancellation where sigmoid is near
            # 1 (their product is inf * 0 far below 0, where 1 - sigmoid is exact instead).
            complement = <floating>1 - gate if value < 0 else decay * gate
            slopes[i] = gate * (<floating>1 + value * complement)
            z[i] = value * gate


cdef inline void _scale_by_derivative_range(floating* delta, const floating* a,
                                            Py_ssize_t start, Py_ssize_t stop,
                                            Py_ssize_t activation,
                                            const floating* slopes) noexcept nogil:
    """delta[start:stop] *= activation'(.), written in terms of the activation's output a, or,
    given slopes, read from them (gelu, silu, or a layer dropout masked: the forward pass kept
    them)."""
    cdef Py_ssize_t i
    if slopes != NULL:
        for i in range(start, stop):
            delta[i] = delta[i] * slopes[i]
    elif activation == ACTIVATION_LOGISTIC:
        # scikit-learn's order: delta *= a, then delta *= 1 - a.
        for i in range(start, stop):
            delta[i] = (delta[i] * a[i]) * (<floating>1 - a[i])
    elif activation == ACTIVATION_TANH:
        for i in range(start, stop):
            delta[i] = delta[i] * (<floating>1 - a[i] * a[i])
    elif activation == ACTIVATION_RELU:
        for i in range(start, stop):
            delta[i] = 0 if a[i] == 0 else delta[i]
    elif activation == ACTIVATION_LEAKY_RELU:
        # The output's sign is the input's; at 0 the slope is the negative side's.
        for i in range(start, stop):
            delta[i] = delta[i] if a[i] > 0 else delta[i] * <floating>_LEAKY_SLOPE
    elif activation == ACTIVATION_ELU:
        # exp(z) = a + 1 below 0.
        for i in range(start, stop):
            delta[i] = delta[i] if a[i] > 0 else delta[i] * (a[i] + <floating>1)


cdef inline bint _keeps_slopes(Py_ssize_t activation) noexcept nogil:
    """Whether an activation's derivative is kept in the slopes buffer: gelu's and silu's
    are not functions of their output; softplus's is, but costs less from the forward pass's
    exp."""
    return (activation == ACTIVATION_GELU or activation == ACTIVATION_SILU
            or activation == ACTIVATION_SOFTPLUS)


cdef inline bint _drops(const _Config* config, Py_ssize_t k, bint training) noexcept nogil:
    """Whether dropout masks hidden layer k in this step."""
    return training and config.dropout != NULL and config.dropout[k] > 0


cdef inline floating* _layer_slopes(const _Config* config, Py_ssize_t k, bint training,
                                    floating* slopes, const floating* activations,
                                    const floating* layer) noexcept nogil:
    """The slopes of hidden layer k, whose activations start at layer (slopes has the
    activations' layout), or NULL when the layer's derivative is computed from its output;
    NULL for the output layer."""
    if k + 1 >= config.n_layers or not (_keeps_slopes(config.activations[k])
                                        or _drops(config, k, training)):
        return NULL
    return slopes + (layer - activations)


# --------------------------------------------------------------------------------------------
# Dropout (inverted, in training): nnfast.reference states the masks ("dropout"); each unit's
# is a function of the fit's seed and of its counter (its row's position in the fit's stream
# of rows, its layer, its place in the layer), so they do not depend on batches, row blocks or
# threads. SplitMix64's finaliser mixes the counter.
# --------------------------------------------------------------------------------------------

cdef extern from *:
    """
    static const unsigned long long NNFAST_GOLDEN = 0x9E3779B97F4A7C15ULL;
    static const unsigned long long NNFAST_MIX_1 = 0xBF58476D1CE4E5B9ULL;
    static const unsigned long long NNFAST_MIX_2 = 0x94D049BB133111EBULL;
    """
    const uint64_t _GOLDEN "NNFAST_GOLDEN"
    const uint64_t _MIX_1 "NNFAST_MIX_1"
    const uint64_t _MIX_2 "NNFAST_MIX_2"


cdef inline uint64_t _dropout_draw(uint64_t seed, uint64_t counter) noexcept nogil:
    """The top 53 bits of the mixed counter: the unit is kept when they reach the layer's
    threshold, floor(rate * 2**53)."""
    cdef uint64_t z = seed + counter * _GOLDEN
    z = (z ^ (z >> 30)) * _MIX_1
    z = (z ^ (z >> 27)) * _MIX_2
    return (z ^ (z >> 31)) >> 11


cdef void _drop_units(const _Config* config, Py_ssize_t k, int64_t first_position,
                      floating* a, floating* slopes, Py_ssize_t rows,
                      Py_ssize_t n_out) noexcept nogil:
    """Masks hidden layer k's activations a (rows x n_out, the batch's rows from
    first_position on): a kept unit is scaled by 1 / (1 - rate), a dropped one zeroed, and
    slopes (the layer's, its layout) become the derivative times the same factor, so that the
    backward pass needs only them. gelu and silu wrote their derivative already; the others'
    is computed here from the unmasked output."""
    cdef Py_ssize_t r, j, i, offset = 0, total = 0
    cdef double rate = config.dropout[k]
    cdef uint64_t threshold = <uint64_t>(rate * 9007199254740992.0)  # floor(rate * 2**53)
    cdef floating scale = <floating>(1.0 / (1.0 - rate))
    cdef floating factor
    cdef uint64_t base
    for j in range(1, config.n_layers):
        total += config.sizes[j]
        if j <= k:
            offset += config.sizes[j]
    if not _keeps_slopes(config.activations[k]):
        for i in range(rows * n_out):
            slopes[i] = 1
        _scale_by_derivative_range(slopes, a, 0, rows * n_out, config.activations[k], NULL)
    for r in range(rows):
        base = <uint64_t>(first_position + r) * <uint64_t>total + <uint64_t>offset
        for j in range(n_out):
            i = r * n_out + j
            factor = (scale if _dropout_draw(config.dropout_seed, base + <uint64_t>j) >= threshold
                      else 0)
            slopes[i] = slopes[i] * factor
            a[i] = a[i] * factor


cdef void _linear_rows(const floating* inputs, const floating* weights, const floating* bias,
                       floating* outputs, Py_ssize_t row_start, Py_ssize_t row_stop,
                       Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t activation,
                       floating* slopes) noexcept nogil:
    """outputs[rows] = activation(inputs[rows] @ weights [+ bias]) through BLAS (slopes: see
    _activate_range)."""
    cdef Py_ssize_t i
    if row_stop <= row_start:
        return
    if bias != NULL:
        for i in range(row_start, row_stop):
            memcpy(&outputs[i * n_out], bias, n_out * sizeof(floating))
    _gemm(AS_IS, AS_IS, <int>(row_stop - row_start), <int>n_out, <int>n_in, <floating>1,
          &inputs[row_start * n_in], <int>n_in, weights, <int>n_out,
          <floating>(0 if bias == NULL else 1), &outputs[row_start * n_out], <int>n_out)
    _activate_range(outputs, row_start * n_out, row_stop * n_out, activation, slopes)


# --------------------------------------------------------------------------------------------
# Skinny products of the general path. scikit-learn's models put a few inputs or a few outputs
# on one side of a wide hidden layer (iris: 4 -> 100 -> 3); every product of a step then has
# one dimension of a handful, where BLAS spends more on its call, packing and edge tiles than
# on the multiply-adds (measured with callgrind: ~80% of a [4, 100, 3] epoch). From
# _SKINNY_DIM down each such product runs as one of three loops along the wide dimension (C
# code in _skinny.h, on the compiler's vector types):
#   _skinny_inner:  C = A @ B with A's rows short (k small): each block of a row's outputs is
#                   a sum of k scaled rows of B, held in registers.
#   _skinny_dots:   C = A @ Bt.T with C's rows short (n small): each output is a dot product
#                   of two contiguous rows, summed in a vector's lanes.
#   _skinny_outer:  C += L.T @ R with L's rows short: a block of up to 4 rows of C is a sum
#                   over rows of R scaled by L's columns, held in registers.
# The products whose short side is the other one read a transposed copy (workspace
# "transposed"). Summation order differs from BLAS's by rounding only.
#
# When every layer of a serial fit is skinny, a step runs in blocks of rows (_blocked_step):
# each block goes forward and back through all layers while its activations and deltas are
# still in the L1 cache, adding its share to every layer's gradient; the optimizer then
# steps once, as for the whole batch. Whole-batch passes would stream every hidden layer
# through L2 some ten times a step (iris: 120 KB each time), which measured slower than all
# of the multiply-adds.
# --------------------------------------------------------------------------------------------

# The short side of a product (in units) at or below which the skinny loops replace BLAS.
cdef Py_ssize_t _SKINNY_DIM = 16
# Layers whose both sides are at most this many units run as the loops too (0: none), on the
# calling thread as skinny layers do. nnfast._kernels.blas_kernels sets it where
# the loops outrun the BLAS in the process: an AVX-512 build beside a BLAS on kernels without
# AVX-512 (OpenBLAS on a CPU it does not know). Such a layer runs as a short input's would:
# forward and gradient with vectors along its outputs, its hidden delta along its inputs
# (_along_outputs, _along_inputs).
cdef Py_ssize_t _LOOP_UNITS = 0

cdef extern from "_skinny.h":
    enum:
        NNFAST_LINEAR
        NNFAST_RELU
        NNFAST_RELU_GATE
    void _skinny_inner_d "nnfast_skinny_inner_d"(const double* a, const double* b,
                                                 const double* bias, double* c, Py_ssize_t m,
                                                 Py_ssize_t k, Py_ssize_t n, int epilogue,
                                                 const double* gate) noexcept nogil
    void _skinny_inner_f "nnfast_skinny_inner_f"(const float* a, const float* b,
                                                 const float* bias, float* c, Py_ssize_t m,
                                                 Py_ssize_t k, Py_ssize_t n, int epilogue,
                                                 const float* gate) noexcept nogil
    void _skinny_outer_d "nnfast_skinny_outer_d"(const double* left, const double* right,
                                                 double* c, Py_ssize_t m, Py_ssize_t k,
                                                 Py_ssize_t n) noexcept nogil
    void _skinny_outer_f "nnfast_skinny_outer_f"(const float* left, const float* right,
                                                 float* c, Py_ssize_t m, Py_ssize_t k,
                                                 Py_ssize_t n) noexcept nogil
    void _skinny_dots_d "nnfast_skinny_dots_d"(const double* a, const double* bt,
                                               const double* bias, double* c, Py_ssize_t m,
                                               Py_ssize_t k, Py_ssize_t n) noexcept nogil
    void _skinny_dots_f "nnfast_skinny_dots_f"(const float* a, const float* bt,
                                               const float* bias, float* c, Py_ssize_t m,
                                               Py_ssize_t k, Py_ssize_t n) noexcept nogil
    void _column_sums_d "nnfast_column_sums_d"(const double* values, double* sums,
                                               Py_ssize_t m, Py_ssize_t n) noexcept nogil
    void _column_sums_f "nnfast_column_sums_f"(const float* values, float* sums,
                                               Py_ssize_t m, Py_ssize_t n) noexcept nogil


def get_skinny_dim():
    """The short side of a product at or below which the general path skips BLAS."""
    return _SKINNY_DIM


def set_skinny_dim(Py_ssize_t value):
    """Moves the skinny-loop/BLAS crossover (for measuring it; tests use 0 to force BLAS)."""
    global _SKINNY_DIM
    _SKINNY_DIM = value


def get_loop_units():
    """Layers whose both sides are at most this many units skip BLAS too (0: none)."""
    return _LOOP_UNITS


def set_loop_units(Py_ssize_t value):
    """Sets get_loop_units() (nnfast._kernels.blas_kernels decides it once, at import)."""
    global _LOOP_UNITS
    if value < 0:
        raise ValueError(f"loop units must be at least 0, got {value}")
    _LOOP_UNITS = value


def runs_as_loops(Py_ssize_t n_in, Py_ssize_t n_out):
    """Whether a layer of n_in -> n_out units runs its products as the kernels' own loops,
    on the calling thread, rather than through BLAS (see "Skinny products")."""
    return _skinny(n_in, n_out)


cdef void _transpose(const floating* source, floating* target, Py_ssize_t rows,
                     Py_ssize_t columns) noexcept nogil:
    """target (columns x rows) = source (rows x columns).T"""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(columns):
            target[j * rows + i] = source[i * columns + j]


cdef inline void _skinny_inner(const floating* a, const floating* b, const floating* bias,
                               floating* c, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                               int epilogue=NNFAST_LINEAR,
                               const floating* gate=NULL) noexcept nogil:
    """C (m x n) = A (m x k) @ B (k x n) [+ bias], for small k; then the epilogue (_skinny.h:
    ReLU, or ReLU's derivative where gate, the layer's outputs, is 0)."""
    if floating is double:
        _skinny_inner_d(a, b, bias, c, m, k, n, epilogue, gate)
    else:
        _skinny_inner_f(a, b, bias, c, m, k, n, epilogue, gate)


cdef inline void _skinny_outer(const floating* left, const floating* right, floating* c,
                               Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """C (k x n) += L (m x k).T @ R (m x n), for small k."""
    if floating is double:
        _skinny_outer_d(left, right, c, m, k, n)
    else:
        _skinny_outer_f(left, right, c, m, k, n)


cdef inline void _skinny_dots(const floating* a, const floating* bt, const floating* bias,
                              floating* c, Py_ssize_t m, Py_ssize_t k,
                              Py_ssize_t n) noexcept nogil:
    """C (m x n) = A (m x k) @ Bt (n x k).T [+ bias], for small n."""
    if floating is double:
        _skinny_dots_d(a, bt, bias, c, m, k, n)
    else:
        _skinny_dots_f(a, bt, bias, c, m, k, n)


cdef inline bint _loop_layer(Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """Whether a layer with no short side still runs as loops (_LOOP_UNITS)."""
    return n_in <= _LOOP_UNITS and n_out <= _LOOP_UNITS


cdef inline bint _skinny(Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """Whether a layer's products run as loops. In a fit cut into blocks too: its skinny
    layers (digits' 100 -> 10 output, say) run on the calling thread, faster than blocks of a
    BLAS call would, while its wide layers are shared by the team."""
    return n_in <= _SKINNY_DIM or n_out <= _SKINNY_DIM or _loop_layer(n_in, n_out)


cdef inline bint _along_outputs(Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """A skinny layer's forward product and weight gradient run with vectors along its
    outputs (_skinny_inner; _skinny_outer in place), not along its inputs (dot products; the
    gradient transposed), which a short output takes."""
    return n_in <= _SKINNY_DIM or (n_out > _SKINNY_DIM and _loop_layer(n_in, n_out))


cdef inline bint _along_inputs(Py_ssize_t n_in, Py_ssize_t n_out) noexcept nogil:
    """A skinny layer's hidden delta runs with vectors along its inputs (_skinny_inner on
    the transposed weights), not as dot products, which a short input takes."""
    return n_out <= _SKINNY_DIM or (n_in > _SKINNY_DIM and _loop_layer(n_in, n_out))


cdef void _layer_gradient(floating* grad, const floating* inputs, const floating* delta,
                          bint has_bias, floating* bias_sums, floating* transposed,
                          Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                          int n_threads) noexcept nogil:
    """grad[:n_in * n_out] = inputs.T @ delta; grad's bias part (has_bias) = delta.sum(0)."""
    if m * n_in * n_out < _BLAS_MIN_FLOPS or not _skinny(n_in, n_out):
        _apply_gradient(grad, grad + n_in * n_out if has_bias else NULL, inputs, delta, 1,
                        False, bias_sums, m, n_in, n_out, n_threads)
        return
    if _along_outputs(n_in, n_out):
        memset(grad, 0, n_in * n_out * sizeof(floating))
        _skinny_outer(inputs, delta, grad, m, n_in, n_out)
    else:
        # grad.T = delta.T @ inputs, rows of n_in values, then transposed into place.
        memset(transposed, 0, n_in * n_out * sizeof(floating))
        _skinny_outer(delta, inputs, transposed, m, n_out, n_in)
        _transpose(transposed, grad, n_out, n_in)
    if has_bias:
        memset(grad + n_in * n_out, 0, n_out * sizeof(floating))
        _add_column_sums(delta, grad + n_in * n_out, m, n_out)


cdef void _forward(const floating* inputs, const floating* weights,
                   const floating* bias, floating* outputs, Py_ssize_t m,
                   Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t activation,
                   floating* slopes, floating* transposed, int n_threads) noexcept nogil:
    """outputs = activation(inputs @ weights [+ bias]); the output layer passes identity and
    applies its own function afterwards (softmax works on whole rows). slopes: see
    _activate_range; transposed: scratch of n_in * n_out values."""
    cdef int t
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        _small_forward(inputs, weights, bias, outputs, m, n_in, n_out)
        _activate_range(outputs, 0, m * n_out, activation, slopes)
    elif _skinny(n_in, n_out):
        if _along_outputs(n_in, n_out):
            _skinny_inner(inputs, weights, bias, outputs, m, n_in, n_out,
                          NNFAST_RELU if activation == ACTIVATION_RELU else NNFAST_LINEAR)
            if activation != ACTIVATION_RELU:
                _activate_range(outputs, 0, m * n_out, activation, slopes)
        else:
            _transpose(weights, transposed, n_in, n_out)
            _skinny_dots(inputs, transposed, bias, outputs, m, n_in, n_out)
            _activate_range(outputs, 0, m * n_out, activation, slopes)
    elif n_threads > 1:
        # Each thread's block of rows, elementwise work included (see "Threads" above).
        for t in prange(n_threads, schedule="static"):
            _linear_rows(inputs, weights, bias, outputs, _block_start(m, n_threads, t),
                         _block_start(m, n_threads, t + 1), n_in, n_out, activation, slopes)
    else:
        _linear_rows(inputs, weights, bias, outputs, 0, m, n_in, n_out, activation, slopes)


cdef void _output_activation(floating* z, Py_ssize_t m, Py_ssize_t n_out,
                             int output) noexcept nogil:
    """z = out(z) in place, for an output code; O(m * n_out), so serial."""
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef floating largest, total
    if output == OUTPUT_ORIGINAL or output == OUTPUT_LOGISTIC:
        _sigmoid_range(z, 0, m * n_out)
    elif output == OUTPUT_EXP:
        for i in range(m * n_out):
            z[i] = _libm_exp(z[i])
    elif output == OUTPUT_SOFTMAX:
        # exp(z - max) <= 1: no overflow. nnfast's _exp returns 0 rather than a subnormal
        # below exp(-707) (float32: exp(-86)); probabilities that small are clipped to eps
        # before any log, and their contribution to a delta is below any rounding.
        # Three passes, so that the exps run as one vectorised loop over the whole batch
        # (rows of a few outputs are too short to vectorise); the values are the same.
        for i in range(m):
            row = &z[i * n_out]
            largest = row[0]
            for j in range(1, n_out):
                largest = row[j] if row[j] > largest else largest
            for j in range(n_out):
                row[j] = row[j] - largest
        for i in range(m * n_out):
            z[i] = _exp(z[i])
        for i in range(m):
            row = &z[i * n_out]
            total = 0
            for j in range(n_out):
                total = total + row[j]
            for j in range(n_out):
                row[j] = row[j] / total


cdef double _output_loss_and_delta(int output, const floating* y, const floating* a,
                                   floating* delta, const floating* weight, Py_ssize_t m,
                                   Py_ssize_t n_out) noexcept nogil:
    """delta = (a - y) [* a * (1 - a) for "original"] [* weight per row]; returns the rows'
    summed data loss, which _scaled_loss turns into the batch's (nnfast._training.plan, "Losses").

    weight is NULL for unit weights. Losses are summed in float64 from
    the dtype's clipped probabilities; log and exp by libm (O(m * n_out), never the bottleneck).
    """
    cdef Py_ssize_t i, j, at
    cdef floating eps, p, difference
    cdef floating row_weight = 1
    cdef double row_sum, total = 0.0
    eps = _EPS64 if floating is double else _EPS32
    if output == OUTPUT_SOFTMAX and n_out > 1 and weight == NULL:
        # The classifiers' case on its own: the delta as one vectorised pass, and the loss
        # (the same sums as below) only where y is not 0 (elsewhere xlogy adds exactly 0,
        # unless a is NaN, which the divergence check then sees in the row's total).
        for i in range(m * n_out):
            delta[i] = a[i] - y[i]
        for i in range(m):
            row_sum = 0.0
            for j in range(n_out):
                at = i * n_out + j
                if y[at] != 0 or a[at] != a[at]:
                    p = min(max(a[at], eps), <floating>1 - eps)
                    row_sum -= _xlogy(y[at], p)
            total += row_sum
        return total
    for i in range(m):
        if weight != NULL:
            row_weight = weight[i]
        row_sum = 0.0
        for j in range(n_out):
            at = i * n_out + j
            difference = a[at] - y[at]
            if output == OUTPUT_ORIGINAL:
                # The original's delta with the descent sign: the gradient of its squared
                # error through the sigmoid.
                delta[at] = difference * _sigmoid_slope(a[at])
                row_sum += <double>difference * difference
            else:
                delta[at] = difference
                if output == OUTPUT_IDENTITY:
                    row_sum += <double>difference * difference
                elif output == OUTPUT_LOGISTIC or (output == OUTPUT_SOFTMAX and n_out == 1):
                    p = min(max(a[at], eps), <floating>1 - eps)
                    row_sum -= _xlogy(y[at], p) + _xlogy(<floating>1 - y[at], <floating>1 - p)
                elif output == OUTPUT_SOFTMAX:
                    p = min(max(a[at], eps), <floating>1 - eps)
                    row_sum -= _xlogy(y[at], p)
                else:  # OUTPUT_EXP: half the Poisson deviance, y log(y / a) - y + a
                    row_sum += _xlogy(y[at], y[at] / a[at]) - y[at] + a[at]
            if weight != NULL:
                delta[at] = delta[at] * row_weight
        total += row_weight * row_sum
    return total


cdef inline double _scaled_loss(int output, double total, double weight_sum,
                                Py_ssize_t n_out) noexcept nogil:
    """The batch's data loss from _output_loss_and_delta's sum: the weighted average over
    rows (weight_sum: m for unit weights) of the output's loss."""
    if output == OUTPUT_IDENTITY:
        return 0.5 * total / (weight_sum * n_out)
    if output == OUTPUT_ORIGINAL:
        return 0.5 * total / weight_sum
    return total / weight_sum


cdef double _regression_loss_and_delta(int loss, double parameter, const floating* y,
                                       const floating* a, floating* delta,
                                       const floating* weight, Py_ssize_t m,
                                       Py_ssize_t n_out) noexcept nogil:
    """The robust regression losses of an identity output, per element of r = a - y, as
    nnfast.reference's: delta = loss'(r) [* weight per row]; returns the rows' weighted sum
    of the per-element losses (summed in float64).

    huber (parameter d): 0.5 r^2 where |r| <= d, else d (|r| - d / 2); loss' = clip(r, -d, d).
    absolute_error: |r|; loss' = sign(r) (0 at 0).
    quantile (parameter q): q (y - a) where y >= a, else (1 - q) (a - y); loss' = -q where
    y > a, 1 - q where y < a, 0 at equality. NaN residuals give a NaN loss.
    """
    cdef Py_ssize_t i, j, at
    cdef floating r
    cdef floating bound = <floating>parameter
    cdef floating below = <floating>(-parameter)
    cdef floating above = <floating>(1.0 - parameter)
    cdef floating row_weight = 1
    cdef double row_sum, total = 0.0
    # The loss chosen around each row's loop, not per element.
    for i in range(m):
        if weight != NULL:
            row_weight = weight[i]
        row_sum = 0.0
        at = i * n_out
        if loss == LOSS_HUBER:
            for j in range(at, at + n_out):
                r = a[j] - y[j]
                if fabs(r) <= bound:
                    row_sum += 0.5 * (<double>r * r)
                else:
                    row_sum += parameter * (fabs(<double>r) - 0.5 * parameter)
                delta[j] = min(max(r, -bound), bound)
        elif loss == LOSS_ABSOLUTE_ERROR:
            for j in range(at, at + n_out):
                r = a[j] - y[j]
                row_sum += fabs(<double>r)
                delta[j] = <floating>((r > 0) - (r < 0))
        else:  # LOSS_QUANTILE
            for j in range(at, at + n_out):
                r = a[j] - y[j]
                if r <= 0:
                    row_sum += parameter * -(<double>r)
                else:
                    row_sum += (1.0 - parameter) * r
                delta[j] = below if r < 0 else (above if r > 0 else 0)
        if weight != NULL:
            for j in range(at, at + n_out):
                delta[j] = delta[j] * row_weight
        total += row_weight * row_sum
    return total


cdef inline double _loss_and_delta(const _Config* config, const floating* y, const floating* a,
                                   floating* delta, const floating* weight, Py_ssize_t m,
                                   Py_ssize_t n_out) noexcept nogil:
    """The output delta and summed data loss of the config's loss (_batch_loss scales it)."""
    if config.loss == LOSS_OUTPUT:
        return _output_loss_and_delta(config.output, y, a, delta, weight, m, n_out)
    return _regression_loss_and_delta(config.loss, config.loss_parameter, y, a, delta, weight,
                                      m, n_out)


cdef inline double _batch_loss(const _Config* config, double total, double weight_sum,
                               Py_ssize_t n_out) noexcept nogil:
    """_scaled_loss for the config's loss: the regression losses average over rows (weighted)
    and outputs, as squared error does, without its 1/2."""
    if config.loss == LOSS_OUTPUT:
        return _scaled_loss(config.output, total, weight_sum, n_out)
    return total / (weight_sum * n_out)


cdef double _abs_error_sum(const floating* y, const floating* a, Py_ssize_t n) noexcept nogil:
    """sum |y - a| (the original's reported error)."""
    cdef Py_ssize_t i
    cdef double total = 0.0
    for i in range(n):
        total += fabs(y[i] - a[i])
    return total


cdef void _hidden_rows(const floating* delta_next, const floating* weights,
                       const floating* activations, floating* delta,
                       Py_ssize_t row_start, Py_ssize_t row_stop, Py_ssize_t n_in,
                       Py_ssize_t n_out, Py_ssize_t activation,
                       const floating* slopes) noexcept nogil:
    """delta[rows] = (delta_next[rows] @ weights.T) * activation'(a[rows]) through BLAS."""
    if row_stop <= row_start:
        return
    _gemm(AS_IS, TRANSPOSED, <int>(row_stop - row_start), <int>n_in, <int>n_out, <floating>1,
          &delta_next[row_start * n_out], <int>n_out, weights, <int>n_out, <floating>0,
          &delta[row_start * n_in], <int>n_in)
    _scale_by_derivative_range(delta, activations, row_start * n_in, row_stop * n_in,
                               activation, slopes)


cdef void _hidden_delta(const floating* delta_next, const floating* weights,
                        const floating* activations, floating* delta, Py_ssize_t m,
                        Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t activation,
                        const floating* slopes, floating* transposed,
                        int n_threads) noexcept nogil:
    """delta = (delta_next @ weights.T) * activation'(activations), or * slopes when given
    (_scale_by_derivative_range); weights is n_in x n_out, transposed scratch of as many
    values."""
    cdef int t
    cdef bint gated
    if m * n_in * n_out < _BLAS_MIN_FLOPS:
        _small_backward(delta_next, weights, activations, delta, m, n_in, n_out, False)
        _scale_by_derivative_range(delta, activations, 0, m * n_in, activation, slopes)
    elif _skinny(n_in, n_out):
        if _along_inputs(n_in, n_out):
            _transpose(weights, transposed, n_in, n_out)
            # ReLU's derivative fused as a gate on its output, unless slopes are kept.
            gated = activation == ACTIVATION_RELU and slopes == NULL
            _skinny_inner(delta_next, transposed, NULL, delta, m, n_out, n_in,
                          NNFAST_RELU_GATE if gated else NNFAST_LINEAR, activations)
            if not gated:
                _scale_by_derivative_range(delta, activations, 0, m * n_in, activation, slopes)
        else:
            _skinny_dots(delta_next, weights, NULL, delta, m, n_out, n_in)
            _scale_by_derivative_range(delta, activations, 0, m * n_in, activation, slopes)
    elif n_threads > 1:
        for t in prange(n_threads, schedule="static"):
            _hidden_rows(delta_next, weights, activations, delta,
                         _block_start(m, n_threads, t),
                         _block_start(m, n_threads, t + 1), n_in, n_out, activation, slopes)
    else:
        _hidden_rows(delta_next, weights, activations, delta, 0, m, n_in, n_out,
                     activation, slopes)


cdef inline void _finish_gradient(floating* grad, const floating* weights, Py_ssize_t n_weights,
                                  Py_ssize_t n_bias, floating alpha,
                                  floating denominator) noexcept nogil:
    """grad[:n_weights] = (grad + alpha * W) / denominator; the bias part / denominator.

    For loss_gradient (training finishes the gradient in _update_range); scikit-learn's
    order of operations (_compute_loss_grad), skipped where it is exact.
    """
    cdef Py_ssize_t i
    if alpha != 0:
        for i in range(n_weights):
            grad[i] = (grad[i] + alpha * weights[i]) / denominator
    elif denominator != 1:
        for i in range(n_weights):
            grad[i] = grad[i] / denominator
    if denominator != 1:
        for i in range(n_weights, n_weights + n_bias):
            grad[i] = grad[i] / denominator


cdef inline void _update_range(const _Config* config, floating* params, const floating* grad,
                               floating* first, floating* second, Py_ssize_t start,
                               Py_ssize_t stop, bint penalised, floating alpha,
                               floating denominator, double step_rate) noexcept nogil:
    """Finishes the gradient of params[start:stop] and applies the optimizer to them.

    g = (grad + alpha * W) / denominator for weights (penalised), grad / denominator for
    biases: scikit-learn's order of operations (_compute_loss_grad), in the same pass as the
    update, so the layer's gradient is read once. first/second: this slice of the optimizer
    state (SGD: velocities in first; Adam: m, v); step_rate is this step's rate (_step_rate:
    the current learning rate, or Adam's bias-corrected one). Constants are cast to the
    dtype first, as NumPy does with Python floats, so float32 fits compute in float32 as
    scikit-learn's. Plain loops: they vectorise (sqrt
    and division included, see setup.py's -fno-math-errno).
    """
    cdef Py_ssize_t i
    cdef floating g, velocity
    cdef floating rate = <floating>step_rate
    cdef floating momentum = <floating>config.momentum
    cdef floating beta_1 = <floating>config.beta_1
    cdef floating beta_2 = <floating>config.beta_2
    cdef floating one_minus_beta_1 = <floating>(1.0 - config.beta_1)
    cdef floating one_minus_beta_2 = <floating>(1.0 - config.beta_2)
    cdef floating epsilon = <floating>config.epsilon
    if config.optimizer == OPTIMIZER_PLAIN:
        for i in range(start, stop):
            g = ((grad[i] + alpha * params[i]) if penalised else grad[i]) / denominator
            params[i] = params[i] - rate * g
    elif config.optimizer == OPTIMIZER_SGD and config.nesterov:
        for i in range(start, stop):
            g = ((grad[i] + alpha * params[i]) if penalised else grad[i]) / denominator
            velocity = momentum * first[i] - rate * g
            first[i] = velocity
            params[i] = params[i] + (momentum * velocity - rate * g)
    elif config.optimizer == OPTIMIZER_SGD:
        for i in range(start, stop):
            g = ((grad[i] + alpha * params[i]) if penalised else grad[i]) / denominator
            velocity = momentum * first[i] - rate * g
            first[i] = velocity
            params[i] = params[i] + velocity
    else:
        for i in range(start, stop):
            g = ((grad[i] + alpha * params[i]) if penalised else grad[i]) / denominator
            first[i] = beta_1 * first[i] + one_minus_beta_1 * g
            second[i] = beta_2 * second[i] + one_minus_beta_2 * (g * g)
            params[i] = params[i] + (-rate * first[i]) / (_sqrt(second[i]) + epsilon)


cdef inline void _optimizer_update(const _Config* config, floating* params,
                                   const floating* grad, floating* first, floating* second,
                                   Py_ssize_t n_weights, Py_ssize_t n_bias, floating alpha,
                                   floating denominator, double step_rate) noexcept nogil:
    """One layer's update: its weights (L2-penalised) then its biases (not penalised)."""
    _update_range(config, params, grad, first, second, 0, n_weights, True, alpha, denominator,
                  step_rate)
    _update_range(config, params, grad, first, second, n_weights, n_weights + n_bias, False,
                  alpha, denominator, step_rate)


cdef double _squared_weights(const _Config* config, const floating* params) noexcept nogil:
    """sum over layers of ||W_k||^2 (biases are not penalised), in float64."""
    cdef Py_ssize_t k, i, n_weights
    cdef double total0 = 0.0, total1 = 0.0, total2 = 0.0, total3 = 0.0
    cdef const floating* weights = params
    # Four partial sums: one chain of dependent additions would take its latency per weight.
    for k in range(config.n_layers):
        n_weights = config.sizes[k] * config.sizes[k + 1]
        for i in range(0, n_weights - 3, 4):
            total0 += <double>weights[i] * weights[i]
            total1 += <double>weights[i + 1] * weights[i + 1]
            total2 += <double>weights[i + 2] * weights[i + 2]
            total3 += <double>weights[i + 3] * weights[i + 3]
        for i in range(n_weights - n_weights % 4, n_weights):
            total0 += <double>weights[i] * weights[i]
        weights += _layer_params(config.sizes, k, config.has_bias)
    return (total0 + total1) + (total2 + total3)


cdef double _squared_weight_range(const _Config* config, const floating* params,
                                  Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """||W||^2 over params[start:stop]'s weights (biases skipped), in float64 (four partial
    sums, as _squared_weights)."""
    cdef Py_ssize_t k, i, low, high, offset = 0, n_weights
    cdef double total0 = 0.0, total1 = 0.0, total2 = 0.0, total3 = 0.0
    for k in range(config.n_layers):
        n_weights = config.sizes[k] * config.sizes[k + 1]
        low = max(start, offset)
        high = min(stop, offset + n_weights)
        i = low
        while i + 3 < high:
            total0 += <double>params[i] * params[i]
            total1 += <double>params[i + 1] * params[i + 1]
            total2 += <double>params[i + 2] * params[i + 2]
            total3 += <double>params[i + 3] * params[i + 3]
            i += 4
        while i < high:
            total0 += <double>params[i] * params[i]
            i += 1
        offset += _layer_params(config.sizes, k, config.has_bias)
    return (total0 + total1) + (total2 + total3)


cdef inline double _weight_sum(const floating* weight, Py_ssize_t m) noexcept nogil:
    """The batch's sum of sample weights (m for unit weights: weight NULL)."""
    cdef Py_ssize_t i
    cdef double total = 0.0
    if weight == NULL:
        return m
    for i in range(m):
        total += weight[i]
    return total


cdef inline double _penalised_loss(const _Config* config, const floating* params,
                                   double data_loss, double penalty_denominator) noexcept nogil:
    """The loss with the L2 penalty of the weights before the step's update."""
    if config.alpha == 0:
        return data_loss
    return _add_penalty(config, data_loss, _squared_weights(config, params),
                        penalty_denominator)


cdef inline double _add_penalty(const _Config* config, double data_loss,
                                double squared_weights, double penalty_denominator) noexcept nogil:
    """data_loss + alpha / 2 * ||W||^2 / penalty_denominator (squared_weights: the sum)."""
    return data_loss + 0.5 * config.alpha * squared_weights / penalty_denominator


cdef inline double _step_rate(const _Config* config, _Counters* counters) noexcept nogil:
    """The rate of a training step: SGD's and the plain step's current learning rate; for
    Adam, counts the step and returns its bias-corrected rate (of the initial rate, or with
    "cosine" of the epoch's)."""
    if config.optimizer != OPTIMIZER_ADAM:
        return counters.learning_rate
    counters.step += 1
    return ((counters.learning_rate if config.schedule == SCHEDULE_COSINE
             else config.learning_rate_init)
            * sqrt(1.0 - pow(config.beta_2, counters.step))
            / (1.0 - pow(config.beta_1, counters.step)))


cdef inline double _cosine_rate(const _Config* config, int64_t epoch) noexcept nogil:
    """The "cosine" schedule's rate of the epoch at this position (nnfast.reference's
    cosine_rate, operation for operation): lr * (epoch + 1) / (W + 1) over the W warm-up
    epochs, then lr * 0.5 * (1 + cos(pi * (epoch - W) / (E - W))) up to the schedule's E
    epochs, and 0 from there on."""
    cdef double warmup = <double>config.warmup_epochs
    if epoch < config.warmup_epochs:
        return config.learning_rate_init * (epoch + 1.0) / (warmup + 1.0)
    if epoch >= config.schedule_epochs:
        return 0.0
    return config.learning_rate_init * 0.5 * (
        1.0 + cos(M_PI * (epoch - warmup) / (config.schedule_epochs - warmup)))


cdef void _clipped_update(const _Config* config, floating* params, floating* state,
                          floating* grad, Py_ssize_t n_params, double step_rate) noexcept nogil:
    """A clipped step: the step's whole gradient G (params layout, finished) is scaled by
    max_grad_norm / (||G|| + 1e-6) when that is below 1 (torch.nn.utils.clip_grad_norm_'s
    rule; the norm summed in float64), then the optimizer updates every parameter."""
    cdef Py_ssize_t i
    cdef double total = 0.0, scale
    cdef floating factor
    for i in range(n_params):
        total += <double>grad[i] * grad[i]
    scale = config.max_grad_norm / (sqrt(total) + 1e-6)
    if scale < 1.0:
        factor = <floating>scale
        for i in range(n_params):
            grad[i] = grad[i] * factor
    # G is finished: no penalty to add, nothing to divide (x / 1 is exact).
    _update_range(config, params, grad, state if config.optimizer != OPTIMIZER_PLAIN else NULL,
                  state + n_params if config.optimizer == OPTIMIZER_ADAM else NULL, 0,
                  n_params, False, 0, 1, step_rate)


cdef inline void _finish_layer(const _Config* config, floating* params, floating* state,
                               floating* layer_grad, Py_ssize_t offset, Py_ssize_t k,
                               Py_ssize_t n_params, floating alpha, floating denominator,
                               double step_rate, bint training) noexcept nogil:
    """Layer k's summed gradient layer_grad (the layer's part of a gradient in the params
    layout; the layer's params start at offset) becomes G (loss_gradient) or moves the
    layer's weights (training: the optimizer's update)."""
    cdef Py_ssize_t n_in = config.sizes[k], n_out = config.sizes[k + 1]
    cdef Py_ssize_t n_layer = _layer_params(config.sizes, k, config.has_bias)
    if not training:
        _finish_gradient(layer_grad, params + offset, n_in * n_out,
                         n_layer - n_in * n_out, alpha, denominator)
    else:
        _optimizer_update(config, params + offset, layer_grad,
                          state + offset if config.optimizer != OPTIMIZER_PLAIN else NULL,
                          state + n_params + offset if config.optimizer == OPTIMIZER_ADAM else NULL,
                          n_in * n_out, n_layer - n_in * n_out, alpha, denominator, step_rate)



# --------------------------------------------------------------------------------------------
# Sparse inputs (CSR). Text and one-hot data: X with a few non-zeros per row among thousands
# of columns, never densified. Only the first layer sees X, and only two of its products:
# the forward pass X_batch @ W0 (each batch row a sum of the rows of W0 its non-zeros pick,
# scaled: a contiguous, vectorised axpy of n_out values per non-zero) and the gradient
# X_batch.T @ delta (each non-zero adds its scaled delta row to the gradient row of its
# column: a scatter). A batch's rows are read where they are, through the epoch order: no
# copy of X, no scratch beyond the dense path's O(batch x hidden). Every other part of the
# step (the hidden layers, the loss, the optimizer's dense update of every parameter, as
# scikit-learn's) is the dense path's code. Chosen once per step, at layer 0
# (_step's `sparse` argument; NULL for dense X). Summation order: each output the
# row's non-zeros in stored order from 0, then the bias, as scipy's CSR product and
# scikit-learn's forward pass; the gradient sums the batch's rows in order per column.
# Indices are int32 or int64 (scipy's choice, used as given: no copy of the indices).
# --------------------------------------------------------------------------------------------

ctypedef fused index_t:
    int32_t
    int64_t


cdef struct _SparseRows:
    # A CSR matrix (canonical: checked by _bind_csr) and the rows of the current batch.
    const void* data        # nnz values of the params' dtype
    const void* indices     # nnz column indices, int32 or int64 (wide_index)
    const void* indptr      # n_rows + 1 row starts, of the indices' type
    bint wide_index
    const Py_ssize_t* rows  # the batch's row ids (an epoch order's slice), or NULL:
    Py_ssize_t start        # rows start, start + 1, ... in stored order


cdef inline Py_ssize_t _csr_row(const _SparseRows* sparse, Py_ssize_t r) noexcept nogil:
    """The row of X that is row r of the batch."""
    return sparse.rows[r] if sparse.rows != NULL else sparse.start + r


cdef void _sparse_forward_rows(const index_t* indptr, const index_t* indices,
                               const floating* data, const _SparseRows* sparse,
                               const floating* weights, const floating* bias,
                               floating* outputs, Py_ssize_t row_start, Py_ssize_t row_stop,
                               Py_ssize_t n_out, Py_ssize_t activation,
                               floating* slopes) noexcept nogil:
    """outputs[rows] = activation(X[batch rows] @ weights [+ bias])."""
    cdef Py_ssize_t r, row, p, j
    cdef floating value
    cdef floating* out
    cdef const floating* w
    for r in range(row_start, row_stop):
        row = _csr_row(sparse, r)
        out = &outputs[r * n_out]
        memset(out, 0, n_out * sizeof(floating))
        for p in range(<Py_ssize_t>indptr[row], <Py_ssize_t>indptr[row + 1]):
            value = data[p]
            w = &weights[<Py_ssize_t>indices[p] * n_out]
            for j in range(n_out):
                out[j] = out[j] + value * w[j]
        if bias != NULL:
            for j in range(n_out):
                out[j] = out[j] + bias[j]
    _activate_range(outputs, row_start * n_out, row_stop * n_out, activation, slopes)


cdef void _sparse_gradient_columns(const index_t* indptr, const index_t* indices,
                                   const floating* data, const _SparseRows* sparse,
                                   const floating* delta, floating* grad, Py_ssize_t m,
                                   Py_ssize_t n_out, Py_ssize_t column_start,
                                   Py_ssize_t column_stop) noexcept nogil:
    """grad[:, columns] += X[batch rows].T @ delta[:, columns] (grad n_in x n_out)."""
    cdef Py_ssize_t r, row, p, j
    cdef floating value
    cdef floating* g
    cdef const floating* d
    for r in range(m):
        row = _csr_row(sparse, r)
        d = &delta[r * n_out]
        for p in range(<Py_ssize_t>indptr[row], <Py_ssize_t>indptr[row + 1]):
            value = data[p]
            g = &grad[<Py_ssize_t>indices[p] * n_out]
            for j in range(column_start, column_stop):
                g[j] = g[j] + value * d[j]


cdef void _sparse_forward_block(const _SparseRows* sparse, const floating* weights,
                                const floating* bias, floating* outputs,
                                Py_ssize_t row_start, Py_ssize_t row_stop, Py_ssize_t n_out,
                                Py_ssize_t activation, floating* slopes) noexcept nogil:
    """_sparse_forward_rows for the struct's index type."""
    if sparse.wide_index:
        _sparse_forward_rows(<const int64_t*>sparse.indptr, <const int64_t*>sparse.indices,
                             <const floating*>sparse.data, sparse, weights, bias, outputs,
                             row_start, row_stop, n_out, activation, slopes)
    else:
        _sparse_forward_rows(<const int32_t*>sparse.indptr, <const int32_t*>sparse.indices,
                             <const floating*>sparse.data, sparse, weights, bias, outputs,
                             row_start, row_stop, n_out, activation, slopes)


cdef void _sparse_gradient_block(const _SparseRows* sparse, const floating* delta,
                                 floating* grad, Py_ssize_t m, Py_ssize_t n_out,
                                 Py_ssize_t column_start, Py_ssize_t column_stop) noexcept nogil:
    """_sparse_gradient_columns for the struct's index type."""
    if sparse.wide_index:
        _sparse_gradient_columns(<const int64_t*>sparse.indptr, <const int64_t*>sparse.indices,
                                 <const floating*>sparse.data, sparse, delta, grad, m, n_out,
                                 column_start, column_stop)
    else:
        _sparse_gradient_columns(<const int32_t*>sparse.indptr, <const int32_t*>sparse.indices,
                                 <const floating*>sparse.data, sparse, delta, grad, m, n_out,
                                 column_start, column_stop)


cdef void _sparse_forward(const _SparseRows* sparse, const floating* weights,
                          const floating* bias, floating* outputs, Py_ssize_t m,
                          Py_ssize_t n_out, Py_ssize_t activation, floating* slopes,
                          int n_threads) noexcept nogil:
    """outputs = activation(X[batch] @ weights [+ bias]); threads take blocks of rows."""
    cdef int t
    if n_threads > 1:
        for t in prange(n_threads, schedule="static"):
            _sparse_forward_block(sparse, weights, bias, outputs, _block_start(m, n_threads, t),
                                  _block_start(m, n_threads, t + 1), n_out, activation,
                                  slopes)
    else:
        _sparse_forward_block(sparse, weights, bias, outputs, 0, m, n_out, activation, slopes)


cdef void _sparse_gradient(floating* grad, const _SparseRows* sparse, const floating* delta,
                           bint has_bias, Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                           int n_threads) noexcept nogil:
    """grad[:n_in * n_out] = X[batch].T @ delta; grad's bias part (has_bias) = delta.sum(0).
    Threads take blocks of the columns (no two write the same value)."""
    cdef int t
    memset(grad, 0, n_in * n_out * sizeof(floating))
    if n_threads > 1:
        for t in prange(n_threads, schedule="static"):
            _sparse_gradient_block(sparse, delta, grad, m, n_out,
                                   _block_start(n_out, n_threads, t),
                                   _block_start(n_out, n_threads, t + 1))
    else:
        _sparse_gradient_block(sparse, delta, grad, m, n_out, 0, n_out)
    if has_bias:
        memset(grad + n_in * n_out, 0, n_out * sizeof(floating))
        _add_column_sums(delta, grad + n_in * n_out, m, n_out)


cdef void _transpose_batch(const index_t* indptr, const index_t* indices,
                           const floating* data, const _SparseRows* sparse, Py_ssize_t m,
                           Py_ssize_t n_in, Py_ssize_t* starts, Py_ssize_t* entry_rows,
                           floating* entry_values) noexcept nogil:
    """The batch's rows as columns: column j's entries are entry_rows / entry_values
    [starts[j]:starts[j + 1]], in increasing batch row (a counting sort)."""
    cdef Py_ssize_t r, row, p, j, at
    memset(starts, 0, (n_in + 1) * sizeof(Py_ssize_t))
    for r in range(m):
        row = _csr_row(sparse, r)
        for p in range(<Py_ssize_t>indptr[row], <Py_ssize_t>indptr[row + 1]):
            starts[<Py_ssize_t>indices[p] + 1] += 1
    for j in range(n_in):
        starts[j + 1] += starts[j]
    # Fill, with starts[j] as column j's cursor; it ends at column j + 1's start, so the
    # starts are shifted back by one column afterwards.
    for r in range(m):
        row = _csr_row(sparse, r)
        for p in range(<Py_ssize_t>indptr[row], <Py_ssize_t>indptr[row + 1]):
            j = indices[p]
            at = starts[j]
            entry_rows[at] = r
            entry_values[at] = data[p]
            starts[j] = at + 1
    for j in range(n_in, 0, -1):
        starts[j] = starts[j - 1]
    starts[0] = 0


cdef void _sparse_layer_update(const _Config* config, floating* params, floating* state,
                               Py_ssize_t n_params, const _SparseRows* sparse,
                               const floating* delta, Py_ssize_t m, Py_ssize_t n_in,
                               Py_ssize_t n_out, floating alpha, floating denominator,
                               double step_rate, const _Workspace* work) noexcept nogil:
    """The first layer's training update for a sparse batch, row by row of W0: row j's
    gradient (X[batch].T @ delta)[j] is summed from column j's entries of the transposed
    batch into one row of scratch and the optimizer steps that row at once. The same sums in
    the same order as _sparse_gradient then _finish_layer (each row's entries in increasing
    batch row), without a gradient of W0's size: one pass over W0 and its optimizer state
    per step instead of three."""
    cdef Py_ssize_t j, q, i
    cdef floating value
    cdef const floating* d
    cdef floating* row_grad = <floating*>work.bias_sums  # max(s1..sL) >= n_out values
    cdef Py_ssize_t* starts = work.column_starts
    cdef Py_ssize_t* entry_rows = work.column_rows
    cdef floating* entry_values = <floating*>work.column_values
    cdef floating* first = state if config.optimizer != OPTIMIZER_PLAIN else NULL
    cdef floating* second = state + n_params if config.optimizer == OPTIMIZER_ADAM else NULL
    if sparse.wide_index:
        _transpose_batch(<const int64_t*>sparse.indptr, <const int64_t*>sparse.indices,
                         <const floating*>sparse.data, sparse, m, n_in, starts, entry_rows,
                         entry_values)
    else:
        _transpose_batch(<const int32_t*>sparse.indptr, <const int32_t*>sparse.indices,
                         <const floating*>sparse.data, sparse, m, n_in, starts, entry_rows,
                         entry_values)
    for j in range(n_in):
        memset(row_grad, 0, n_out * sizeof(floating))
        for q in range(starts[j], starts[j + 1]):
            value = entry_values[q]
            d = &delta[entry_rows[q] * n_out]
            for i in range(n_out):
                row_grad[i] = row_grad[i] + value * d[i]
        _update_range(config, params + j * n_out, row_grad,
                      first + j * n_out if first != NULL else NULL,
                      second + j * n_out if second != NULL else NULL, 0, n_out, True, alpha,
                      denominator, step_rate)
    if config.has_bias:
        memset(row_grad, 0, n_out * sizeof(floating))
        _add_column_sums(delta, row_grad, m, n_out)
        j = n_in * n_out
        _update_range(config, params + j, row_grad, first + j if first != NULL else NULL,
                      second + j if second != NULL else NULL, 0, n_out, False, alpha,
                      denominator, step_rate)


cdef double _step(const _Config* config, _Counters* counters, floating* params,
                  floating* state, const floating* x, const floating* y, const floating* weight,
                  Py_ssize_t m, const _Workspace* work, floating* grad_out, double* abs_error,
                  const _SparseRows* sparse) noexcept nogil:
    """One forward/backward pass on m rows; returns the batch loss (nnfast._training.plan, "Losses").

    With grad_out NULL, applies the optimizer to params (and state, and counters);
    otherwise writes the gradient G in the params layout to grad_out and changes nothing
    (counters may then be NULL).
    weight is NULL for unit weights. abs_error receives sum |y - a| (for "original").
    Networks whose every layer is skinny take _blocked_step, the same step by row blocks.
    sparse: the batch's rows of a CSR X (x is then unused), or NULL for dense x.
    """
    cdef Py_ssize_t k, n_in, n_out, n_params = 0, n_layer, offset
    cdef Py_ssize_t n_layers = config.n_layers
    cdef Py_ssize_t n_last = config.sizes[n_layers]
    cdef floating* activations = <floating*>work.activations
    cdef floating* deltas = <floating*>work.deltas
    cdef floating* slopes = <floating*>work.slopes
    cdef floating* bias_sums = <floating*>work.bias_sums
    cdef floating* transposed = <floating*>work.transposed
    cdef floating* grad = grad_out if grad_out != NULL else <floating*>work.gradient
    cdef const floating* layer_in = x
    cdef floating* weights = params
    cdef floating* layer_out = activations
    cdef floating* delta = deltas
    cdef floating* delta_next
    cdef double weight_sum, penalty_denominator, loss, step_rate = 0.0
    cdef floating denominator, alpha = <floating>config.alpha
    cdef floating* layer_grad
    cdef floating* layer_slopes
    cdef bint training = grad_out == NULL
    # Sparse rows in training, serial, with the transposed-batch buffers: the first layer's
    # update row by row (_sparse_layer_update), and a gradient buffer for layers 1.. only.
    cdef bint clipping = grad_out == NULL and config.max_grad_norm > 0
    cdef bint row_update = (sparse != NULL and grad_out == NULL and work.column_starts != NULL
                            and config.n_threads <= 1 and not clipping)
    cdef Py_ssize_t grad_skipped = work.gradient_skipped if row_update else 0

    if sparse == NULL and _all_skinny(config):
        return _blocked_step(config, counters, params, state, x, y, weight, m, work, grad_out,
                             abs_error)

    for k in range(n_layers):
        n_params += _layer_params(config.sizes, k, config.has_bias)

    # Forward.
    for k in range(n_layers):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        layer_slopes = _layer_slopes(config, k, training, slopes, activations, layer_out)
        if k == 0 and sparse != NULL:
            _sparse_forward(sparse, weights, weights + n_in * n_out if config.has_bias else NULL,
                            layer_out, m, n_out,
                            config.activations[k] if k + 1 < n_layers else ACTIVATION_IDENTITY,
                            layer_slopes, config.n_threads)
        else:
            _forward(layer_in, weights,
                     weights + n_in * n_out if config.has_bias else NULL, layer_out, m,
                     n_in, n_out,
                     config.activations[k] if k + 1 < n_layers else ACTIVATION_IDENTITY,
                     layer_slopes, transposed, config.n_threads)
        if k + 1 < n_layers and _drops(config, k, training):
            _drop_units(config, k, counters.batch_position, layer_out, layer_slopes, m, n_out)
        layer_in = layer_out
        weights += _layer_params(config.sizes, k, config.has_bias)
        if k + 1 < n_layers:
            layer_out += m * n_out
            delta += m * n_out
    _output_activation(layer_out, m, n_last, config.output)

    # Loss and output delta; the penalty from the weights before this step's update.
    weight_sum = _weight_sum(weight, m)
    abs_error[0] = (_abs_error_sum(y, layer_out, m * n_last) if config.output == OUTPUT_ORIGINAL
                    else 0.0)
    loss = _batch_loss(config, _loss_and_delta(config, y, layer_out, delta, weight, m, n_last),
                       weight_sum, n_last)
    penalty_denominator = weight_sum if config.reduction == REDUCTION_MEAN else 1.0
    denominator = <floating>penalty_denominator
    loss = _penalised_loss(config, params, loss, penalty_denominator)
    if grad_out == NULL:
        step_rate = _step_rate(config, counters)

    # Backward: layer by layer from the output; see the section notes for the update order.
    for k in range(n_layers - 1, -1, -1):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        n_layer = _layer_params(config.sizes, k, config.has_bias)
        weights -= n_layer
        offset = weights - params
        delta_next = delta
        if k > 0:
            layer_out -= m * n_in
            delta -= m * n_in
            _hidden_delta(delta_next, weights, layer_out, delta, m, n_in, n_out,
                          config.activations[k - 1],
                          _layer_slopes(config, k - 1, training, slopes, activations,
                                        layer_out),
                          transposed, config.n_threads)
            layer_in = layer_out
        else:
            layer_in = x
        # The layer's gradient = layer_in.T @ delta_next, bias part = its column sums.
        if k == 0 and row_update:
            # Training on sparse rows: each row of W0 gets its gradient and its update in
            # one pass, without a gradient of W0's size.
            _sparse_layer_update(config, params, state, n_params, sparse, delta_next, m, n_in,
                                 n_out, alpha, denominator, step_rate, work)
            continue
        # The gradient buffer starts at layer 1 when row_update (work.gradient_skipped).
        layer_grad = grad + (offset - grad_skipped)
        if k == 0 and sparse != NULL:
            _sparse_gradient(layer_grad, sparse, delta_next, config.has_bias, m, n_in, n_out,
                             config.n_threads)
        else:
            _layer_gradient(layer_grad, layer_in, delta_next, config.has_bias, bias_sums,
                            transposed, m, n_in, n_out, config.n_threads)
        _finish_layer(config, params, state, layer_grad, offset, k, n_params, alpha,
                      denominator, step_rate, grad_out == NULL and not clipping)
    if clipping:
        _clipped_update(config, params, state, grad, n_params, step_rate)
    return loss


# The bytes of a row block's activations and deltas (all layers) in _blocked_step: within
# the L1 data cache (32-48 KiB on current x86-64) beside the weights it reads.
cdef Py_ssize_t _BLOCK_BYTES = 16384


cdef inline bint _all_skinny(const _Config* config) noexcept nogil:
    """Whether every product of a step is a skinny loop (see "Skinny products")."""
    cdef Py_ssize_t k
    if config.n_threads > 1:
        return False  # a fit cut into blocks has a wide layer for its team
    for k in range(config.n_layers):
        if not _skinny(config.sizes[k], config.sizes[k + 1]):
            return False
    return True


cdef inline void _add_column_sums(const floating* values, floating* sums, Py_ssize_t rows,
                                  Py_ssize_t columns) noexcept nogil:
    """sums += values (rows x columns).sum(axis=0), a block of columns in registers."""
    if floating is double:
        _column_sums_d(values, sums, rows, columns)
    else:
        _column_sums_f(values, sums, rows, columns)


cdef double _blocked_step(const _Config* config, _Counters* counters, floating* params,
                          floating* state, const floating* x, const floating* y,
                          const floating* weight, Py_ssize_t m, const _Workspace* work,
                          floating* grad_out, double* abs_error) noexcept nogil:
    """_step for networks whose every layer is skinny, a block of rows at a time:
    each block runs forward and back through every layer while it is in the L1 cache and
    adds its share to every layer's gradient; the gradient (and so the update) is the whole
    batch's, up to the rounding of its sums. Layers with a wide input sum their gradient
    transposed (workspace "transposed_gradient") and are transposed back at the end."""
    cdef Py_ssize_t k, r0, rows, n_in, n_out, n_layer, offset, units, activation
    cdef Py_ssize_t n_params = 0
    cdef Py_ssize_t n_layers = config.n_layers
    cdef Py_ssize_t n_last = config.sizes[n_layers]
    cdef Py_ssize_t units_per_row = 0
    cdef Py_ssize_t block
    cdef floating* activations = <floating*>work.activations
    cdef floating* deltas = <floating*>work.deltas
    cdef floating* slopes = <floating*>work.slopes
    cdef floating* layer_slopes
    cdef bint training = grad_out == NULL
    cdef bint gated
    cdef floating* transposed = <floating*>work.transposed
    cdef floating* transposed_grad = <floating*>work.transposed_gradient
    cdef floating* grad = grad_out if grad_out != NULL else <floating*>work.gradient
    cdef floating* weights
    cdef floating* layer_out = NULL
    cdef floating* delta
    cdef floating* delta_next
    cdef const floating* layer_in
    cdef double weight_sum, penalty_denominator, loss, step_rate = 0.0
    cdef double loss_sum = 0.0, abs_sum = 0.0
    cdef floating denominator, alpha = <floating>config.alpha
    cdef bint clipping = grad_out == NULL and config.max_grad_norm > 0

    # The step's fixed parts: the transposed weights that the forward dot products (a wide
    # input) and the backward inner products (a short output, below the first layer) read,
    # and the zeroed gradients.
    for k in range(n_layers):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        n_layer = _layer_params(config.sizes, k, config.has_bias)
        if not _along_outputs(n_in, n_out) or (k > 0 and _along_inputs(n_in, n_out)):
            _transpose(params + n_params, transposed + n_params, n_in, n_out)
        memset(grad + n_params, 0, n_layer * sizeof(floating))
        if not _along_outputs(n_in, n_out):
            memset(transposed_grad + n_params, 0, n_in * n_out * sizeof(floating))
        n_params += n_layer
        units_per_row += n_out
    block = max(4, min(64, _BLOCK_BYTES // (2 * <Py_ssize_t>sizeof(floating) * units_per_row)))

    r0 = 0
    while r0 < m:
        rows = min(block, m - r0)
        # Forward. Layer k's outputs start at activations + m * units (units: the widths of
        # the layers before it), these rows r0 * n_out further on; deltas alike.
        layer_in = x + r0 * config.sizes[0]
        weights = params
        units = 0
        for k in range(n_layers):
            n_in = config.sizes[k]
            n_out = config.sizes[k + 1]
            layer_out = activations + m * units + r0 * n_out
            activation = config.activations[k] if k + 1 < n_layers else ACTIVATION_IDENTITY
            layer_slopes = _layer_slopes(config, k, training, slopes, activations, layer_out)
            if _along_outputs(n_in, n_out):
                _skinny_inner(layer_in, weights,
                              weights + n_in * n_out if config.has_bias else NULL, layer_out,
                              rows, n_in, n_out,
                              NNFAST_RELU if activation == ACTIVATION_RELU else NNFAST_LINEAR)
                if activation != ACTIVATION_RELU:
                    _activate_range(layer_out, 0, rows * n_out, activation, layer_slopes)
            else:
                _skinny_dots(layer_in, transposed + (weights - params),
                             weights + n_in * n_out if config.has_bias else NULL, layer_out,
                             rows, n_in, n_out)
                _activate_range(layer_out, 0, rows * n_out, activation, layer_slopes)
            if k + 1 < n_layers and _drops(config, k, training):
                _drop_units(config, k, counters.batch_position + r0, layer_out, layer_slopes,
                            rows, n_out)
            layer_in = layer_out
            weights += _layer_params(config.sizes, k, config.has_bias)
            units += n_out
        _output_activation(layer_out, rows, n_last, config.output)
        delta = deltas + (layer_out - activations)
        if config.output == OUTPUT_ORIGINAL:
            abs_sum += _abs_error_sum(y + r0 * n_last, layer_out, rows * n_last)
        loss_sum += _loss_and_delta(config, y + r0 * n_last, layer_out, delta,
                                    weight + r0 if weight != NULL else NULL, rows, n_last)
        # Backward, with the weights before this step's update.
        for k in range(n_layers - 1, -1, -1):
            n_in = config.sizes[k]
            n_out = config.sizes[k + 1]
            weights -= _layer_params(config.sizes, k, config.has_bias)
            offset = weights - params
            units -= n_out
            delta_next = delta
            layer_in = (activations + m * (units - n_in) + r0 * n_in if k > 0
                        else x + r0 * n_in)
            if _along_outputs(n_in, n_out):
                _skinny_outer(layer_in, delta_next, grad + offset, rows, n_in, n_out)
            else:
                _skinny_outer(delta_next, layer_in, transposed_grad + offset, rows, n_out,
                              n_in)
            if config.has_bias:
                _add_column_sums(delta_next, grad + offset + n_in * n_out, rows, n_out)
            if k > 0:
                delta = deltas + m * (units - n_in) + r0 * n_in
                activation = config.activations[k - 1]
                layer_slopes = _layer_slopes(config, k - 1, training, slopes, activations,
                                             layer_in)
                # ReLU's derivative fused as a gate on its output, unless slopes are kept.
                gated = activation == ACTIVATION_RELU and layer_slopes == NULL
                if _along_inputs(n_in, n_out):
                    _skinny_inner(delta_next, transposed + offset, NULL, delta, rows, n_out,
                                  n_in, NNFAST_RELU_GATE if gated else NNFAST_LINEAR, layer_in)
                    if not gated:
                        _scale_by_derivative_range(delta, layer_in, 0, rows * n_in,
                                                   activation, layer_slopes)
                else:
                    _skinny_dots(delta_next, weights, NULL, delta, rows, n_out, n_in)
                    _scale_by_derivative_range(delta, layer_in, 0, rows * n_in, activation,
                                               layer_slopes)
        r0 += rows

    weight_sum = _weight_sum(weight, m)
    abs_error[0] = abs_sum
    loss = _batch_loss(config, loss_sum, weight_sum, n_last)
    penalty_denominator = weight_sum if config.reduction == REDUCTION_MEAN else 1.0
    denominator = <floating>penalty_denominator
    loss = _penalised_loss(config, params, loss, penalty_denominator)
    if grad_out == NULL:
        step_rate = _step_rate(config, counters)
    offset = 0
    for k in range(n_layers):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        if not _along_outputs(n_in, n_out):
            _transpose(transposed_grad + offset, grad + offset, n_out, n_in)
        _finish_layer(config, params, state, grad + offset, offset, k, n_params, alpha,
                      denominator, step_rate, grad_out == NULL and not clipping)
        offset += _layer_params(config.sizes, k, config.has_bias)
    if clipping:
        _clipped_update(config, params, state, grad, n_params, step_rate)
    return loss


cdef int _fit_loop(const _Config* config, _Counters* counters, floating* params,
                   floating* state, const floating* x, const _SparseRows* sparse,
                   const floating* y, const floating* weight, Py_ssize_t n_rows,
                   const Py_ssize_t* order, Py_ssize_t n_epochs, const _Workspace* work,
                   double* epoch_losses, Py_ssize_t* epochs_done) except -1 nogil:
    """Runs n_epochs epochs of the general step; returns 0, or 1 when an epoch's loss was
    not finite (epochs_done then indexes that epoch). x is dense rows, or NULL for a CSR x
    (sparse, else NULL), whose batches are read where they are, through the epoch's order;
    only the dense arrays of a shuffled batch are gathered."""
    cdef Py_ssize_t epoch, start, m
    cdef Py_ssize_t n_in = config.sizes[0]
    cdef Py_ssize_t n_out = config.sizes[config.n_layers]
    cdef Py_ssize_t until_check = config.check_every  # batches
    cdef double next_poll = 0.0
    cdef double epoch_loss, abs_error, batch_loss
    cdef const Py_ssize_t* rows
    cdef _SparseRows batch
    if sparse != NULL:
        batch = sparse[0]

    for epoch in range(n_epochs):
        epoch_loss = 0.0
        start = 0
        if config.schedule == SCHEDULE_COSINE:
            counters.learning_rate = _cosine_rate(config, counters.epochs)
        while start < n_rows:
            m = min(config.batch_size, n_rows - start)
            rows = &order[epoch * n_rows + start] if order != NULL else NULL
            if sparse != NULL:
                batch.rows = rows
                batch.start = start
            counters.batch_position = counters.samples_seen + start
            # A CSR x (x NULL) is read where it is; unit weights are no weights (NULL).
            batch_loss = _step(config, counters, params, state,
                               _batch_rows(x, n_in, rows, start, m, <floating*>work.batch_x)
                               if x != NULL else NULL,
                               _batch_rows(y, n_out, rows, start, m, <floating*>work.batch_y),
                               _batch_rows(weight, 1, rows, start, m, <floating*>work.batch_w)
                               if weight != NULL else NULL,
                               m, work, NULL, &abs_error, &batch if sparse != NULL else NULL)
            # The original reports mean |y - a| over the epoch; the others scikit-learn's
            # accumulated loss, each batch's loss weighted by its rows.
            epoch_loss += abs_error if config.output == OUTPUT_ORIGINAL else batch_loss * m
            start += m
            _count_batch(&until_check, config.check_every, &next_poll)
        epoch_losses[epoch] = epoch_loss / (n_rows * n_out if config.output == OUTPUT_ORIGINAL
                                            else n_rows)
        # The epoch's end, as scikit-learn's: rows seen, then the schedule.
        counters.samples_seen += n_rows
        if config.optimizer == OPTIMIZER_SGD and config.schedule == SCHEDULE_INVSCALING:
            counters.learning_rate = (config.learning_rate_init
                                      / pow(counters.samples_seen + 1.0, config.power_t))
        elif config.schedule == SCHEDULE_COSINE:
            counters.epochs += 1
        if not isfinite(epoch_losses[epoch]):
            epochs_done[0] = epoch
            return 1
        epochs_done[0] = epoch + 1
    return 0


# --------------------------------------------------------------------------------------------
# The team step. A threaded dense fit (n_threads blocks, no clipping) runs each kernel call in
# one parallel region: every batch's rows are cut into n_threads row blocks, each block goes
# forward and back through every layer on one thread (single-threaded BLAS and skinny loops,
# as the serial step) and writes its own gradient (workspace "gradient" holds n_threads of
# them); after a barrier each thread sums the blocks' gradients, in block order, over its
# range of every layer's parameters and applies the optimizer there; a second barrier ends
# the batch. Two barriers a batch instead of a fork and a join per product, nothing serial
# but the batch's bookkeeping (thread 0: the counters, the loss, the Ctrl-C poll), and the
# output layer, the loss and the deltas shared too: at digits' size (1.3M multiply-adds a
# batch) that is what makes a second thread pay.
#
# The blocks fix the arithmetic, as elsewhere: the team takes blocks t, t + T, ... for T
# threads, so one thread running every block computes what n_threads threads would, bit for
# bit. The gradient is the batch's up to the rounding of its row sums (as _blocked_step's).
# --------------------------------------------------------------------------------------------

cdef struct _Team:
    # What a team's threads share; thread 0 alone writes it, between barriers.
    int n_blocks
    int64_t first_position    # samples_seen when the call began (dropout's row positions)
    double step_rate          # this batch's (_step_rate)
    double* block_losses      # n_blocks: each block's summed data loss
    double* block_errors      # n_blocks: each block's sum |y - a| ("original")
    double* block_squares     # n_blocks: ||W||^2 of each block's share of the weights
                              # (alpha > 0), before the batch's update
    int stop                  # 0 go on; 1 an epoch's loss was not finite; -1 a signal's
                              # exception is set


cdef int _team_poll(Py_ssize_t* until_check, Py_ssize_t check_every,
                    double* next_poll) noexcept nogil:
    """_count_batch for a team's thread 0: -1 with the signal handler's exception set, else 0
    (an exception may not unwind through the parallel region's barriers)."""
    cdef double now
    cdef int status = 0
    until_check[0] -= 1
    if until_check[0] != 0:
        return 0
    until_check[0] = check_every
    now = _monotonic_seconds()
    if now < next_poll[0]:
        return 0
    next_poll[0] = now + _POLL_SECONDS
    with gil:
        status = _signals_status()
    return status


cdef double _block_pass(const _Config* config, int64_t position, const floating* params,
                        const floating* x, const floating* y, const floating* weight,
                        Py_ssize_t m, Py_ssize_t r0, Py_ssize_t rows, const _Workspace* work,
                        floating* grad, floating* transposed, floating* bias_sums,
                        double* abs_error) noexcept nogil:
    """Rows r0 .. r0 + rows of a training batch of m rows forward and back: returns their
    summed data loss and writes their gradient to grad (params layout, not yet divided or
    penalised). x, y, weight: the block's own rows (weight NULL: unit weights); position:
    the batch's first row in the fit's stream of rows (dropout); transposed, bias_sums:
    this block's scratch (P and max(s1..sL) values)."""
    cdef Py_ssize_t k, n_in, n_out, units = 0, offset
    cdef Py_ssize_t n_layers = config.n_layers
    cdef Py_ssize_t n_last = config.sizes[n_layers]
    cdef floating* activations = <floating*>work.activations
    cdef floating* deltas = <floating*>work.deltas
    cdef floating* slopes = <floating*>work.slopes
    cdef const floating* layer_in = x
    cdef const floating* weights = params
    cdef floating* layer_out = NULL
    cdef floating* layer_slopes
    cdef floating* delta
    cdef floating* delta_next
    cdef double loss

    for k in range(n_layers):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        # Layer k's outputs for the batch start at activations + m * units; this block's
        # rows r0 * n_out further on (deltas and slopes alike).
        layer_out = activations + m * units + r0 * n_out
        layer_slopes = _layer_slopes(config, k, True, slopes, activations, layer_out)
        _forward(layer_in, weights, weights + n_in * n_out if config.has_bias else NULL,
                 layer_out, rows, n_in, n_out,
                 config.activations[k] if k + 1 < n_layers else ACTIVATION_IDENTITY,
                 layer_slopes, transposed, 1)
        if k + 1 < n_layers and _drops(config, k, True):
            _drop_units(config, k, position + r0, layer_out, layer_slopes, rows, n_out)
        layer_in = layer_out
        weights += _layer_params(config.sizes, k, config.has_bias)
        units += n_out
    _output_activation(layer_out, rows, n_last, config.output)
    delta = deltas + (layer_out - activations)
    abs_error[0] = (_abs_error_sum(y, layer_out, rows * n_last)
                    if config.output == OUTPUT_ORIGINAL else 0.0)
    loss = _loss_and_delta(config, y, layer_out, delta, weight, rows, n_last)

    for k in range(n_layers - 1, -1, -1):
        n_in = config.sizes[k]
        n_out = config.sizes[k + 1]
        weights -= _layer_params(config.sizes, k, config.has_bias)
        offset = weights - params
        units -= n_out
        delta_next = delta
        if k > 0:
            layer_out = activations + m * (units - n_in) + r0 * n_in
            delta = deltas + (layer_out - activations)
            _hidden_delta(delta_next, weights, layer_out, delta, rows, n_in, n_out,
                          config.activations[k - 1],
                          _layer_slopes(config, k - 1, True, slopes, activations, layer_out),
                          transposed, 1)
            layer_in = layer_out
        else:
            layer_in = x
        _layer_gradient(grad + offset, layer_in, delta_next, config.has_bias, bias_sums,
                        transposed, rows, n_in, n_out, 1)
    return loss


cdef inline const floating* _block_rows(const floating* values, Py_ssize_t width,
                                        const Py_ssize_t* order_rows, Py_ssize_t start,
                                        Py_ssize_t r0, Py_ssize_t rows,
                                        floating* gathered) noexcept nogil:
    """_batch_rows for the rows r0 .. r0 + rows of a batch (gathered: the batch's buffer,
    which this block fills from its row r0 on)."""
    if order_rows == NULL:
        return &values[(start + r0) * width]
    return _batch_rows(values, width, order_rows + r0, start + r0, rows,
                       gathered + r0 * width)


cdef void _team_update(const _Config* config, floating* params, floating* state,
                       floating* grads, Py_ssize_t n_params, int n_blocks, int thread,
                       int n_team, floating alpha, floating denominator,
                       double step_rate) noexcept nogil:
    """A thread's share of a team step's update: each layer's weights, then its biases, cut
    into n_team ranges; on its range the blocks' gradients summed in block order (into block
    0's), then the optimizer (_update_range). A parameter's arithmetic is the same whichever
    thread takes it."""
    cdef Py_ssize_t k, i, offset = 0, n_weights, n_layer, begin, length, low, high
    cdef int b, part
    cdef floating* first = state if config.optimizer != OPTIMIZER_PLAIN else NULL
    cdef floating* second = state + n_params if config.optimizer == OPTIMIZER_ADAM else NULL
    cdef const floating* block
    for k in range(config.n_layers):
        n_layer = _layer_params(config.sizes, k, config.has_bias)
        n_weights = config.sizes[k] * config.sizes[k + 1]
        for part in range(2):
            begin = offset if part == 0 else offset + n_weights
            length = n_weights if part == 0 else n_layer - n_weights
            low = begin + _block_start(length, n_team, thread)
            high = begin + _block_start(length, n_team, thread + 1)
            for b in range(1, n_blocks):
                block = grads + b * n_params
                for i in range(low, high):
                    grads[i] += block[i]
            _update_range(config, params, grads, first, second, low, high, part == 0, alpha,
                          denominator, step_rate)
        offset += n_layer


cdef void _team_worker(const _Config* config, _Counters* counters, floating* params,
                       floating* state, const floating* x, const floating* y,
                       const floating* weight, Py_ssize_t n_rows, const Py_ssize_t* order,
                       Py_ssize_t n_epochs, const _Workspace* work, double* epoch_losses,
                       Py_ssize_t* epochs_done, _Team* team) noexcept nogil:
    """One thread of _team_fit_loop: _fit_loop's epochs and batches, the step cut into
    row blocks (see "The team step")."""
    cdef int thread = nnfast_thread_id()
    cdef int n_team = nnfast_thread_count()
    cdef int b, n_blocks = team.n_blocks
    cdef Py_ssize_t k, epoch, start, m, r0, rows, n_params = 0, widest = 0
    cdef Py_ssize_t n_in = config.sizes[0]
    cdef Py_ssize_t n_out = config.sizes[config.n_layers]
    cdef Py_ssize_t until_check = config.check_every  # batches
    cdef double next_poll = 0.0, epoch_loss = 0.0, total, errors, squares, loss
    cdef double weight_sum, penalty_denominator
    cdef int64_t position
    cdef const Py_ssize_t* order_rows
    cdef const floating* batch_w
    cdef floating* grads = <floating*>work.gradient
    for k in range(config.n_layers):
        n_params += _layer_params(config.sizes, k, config.has_bias)
        widest = max(widest, config.sizes[k + 1])

    for epoch in range(n_epochs):
        start = 0
        while start < n_rows:
            m = min(config.batch_size, n_rows - start)
            order_rows = &order[epoch * n_rows + start] if order != NULL else NULL
            position = team.first_position + epoch * n_rows + start
            if thread == 0:
                if start == 0 and config.schedule == SCHEDULE_COSINE:
                    counters.learning_rate = _cosine_rate(config, counters.epochs)
                team.step_rate = _step_rate(config, counters)
            b = thread
            while b < n_blocks:
                if config.alpha != 0:
                    # The penalty's ||W||^2, a share per block (block order when summed).
                    team.block_squares[b] = _squared_weight_range(
                        config, params, _block_start(n_params, n_blocks, b),
                        _block_start(n_params, n_blocks, b + 1))
                r0 = _block_start(m, n_blocks, b)
                rows = _block_start(m, n_blocks, b + 1) - r0
                # Each block gathers its own rows of a shuffled batch.
                team.block_losses[b] = _block_pass(
                    config, position, params,
                    _block_rows(x, n_in, order_rows, start, r0, rows,
                                <floating*>work.batch_x),
                    _block_rows(y, n_out, order_rows, start, r0, rows,
                                <floating*>work.batch_y),
                    _block_rows(weight, 1, order_rows, start, r0, rows,
                                <floating*>work.batch_w) if weight != NULL else NULL,
                    m, r0, rows, work, grads + b * n_params,
                    <floating*>work.transposed + b * n_params,
                    <floating*>work.bias_sums + b * widest, &team.block_errors[b])
                b += n_team
            nnfast_team_barrier()

            batch_w = NULL
            if weight != NULL:
                batch_w = weight + start if order_rows == NULL else <floating*>work.batch_w
            weight_sum = _weight_sum(batch_w, m)
            penalty_denominator = weight_sum if config.reduction == REDUCTION_MEAN else 1.0
            _team_update(config, params, state, grads, n_params, n_blocks, thread, n_team,
                         <floating>config.alpha, <floating>penalty_denominator, team.step_rate)
            start += m
            if thread == 0:
                total = 0.0
                errors = 0.0
                squares = 0.0
                for b in range(n_blocks):
                    total += team.block_losses[b]
                    errors += team.block_errors[b]
                    squares += team.block_squares[b]
                if config.output == OUTPUT_ORIGINAL:
                    epoch_loss += errors
                else:
                    loss = _batch_loss(config, total, weight_sum, n_out)
                    if config.alpha != 0:
                        loss = _add_penalty(config, loss, squares, penalty_denominator)
                    epoch_loss += loss * m
                if _team_poll(&until_check, config.check_every, &next_poll) < 0:
                    team.stop = -1
                elif start >= n_rows:
                    # The epoch's end, as _fit_loop's.
                    epoch_losses[epoch] = epoch_loss / (n_rows * n_out
                                                        if config.output == OUTPUT_ORIGINAL
                                                        else n_rows)
                    epoch_loss = 0.0
                    counters.samples_seen += n_rows
                    if (config.optimizer == OPTIMIZER_SGD
                            and config.schedule == SCHEDULE_INVSCALING):
                        counters.learning_rate = (config.learning_rate_init
                                                  / pow(counters.samples_seen + 1.0,
                                                        config.power_t))
                    elif config.schedule == SCHEDULE_COSINE:
                        counters.epochs += 1
                    if not isfinite(epoch_losses[epoch]):
                        epochs_done[0] = epoch
                        team.stop = 1
                    else:
                        epochs_done[0] = epoch + 1
            nnfast_team_barrier()
            if team.stop != 0:
                return


cdef int _team_fit_loop(const _Config* config, _Counters* counters, floating* params,
                        floating* state, const floating* x, const floating* y,
                        const floating* weight, Py_ssize_t n_rows, const Py_ssize_t* order,
                        Py_ssize_t n_epochs, const _Workspace* work, double* epoch_losses,
                        Py_ssize_t* epochs_done, _Team* team) except -1 nogil:
    """_fit_loop for a threaded dense fit, in one parallel region (see "The team step");
    the same returns, and raises what a signal's handler raises."""
    team.first_position = counters.samples_seen
    team.stop = 0
    with parallel():
        _team_worker(config, counters, params, state, x, y, weight, n_rows, order, n_epochs,
                     work, epoch_losses, epochs_done, team)
    if team.stop == -1:
        return -1  # the exception is set (_team_poll)
    return 1 if team.stop == 1 else 0


# --------------------------------------------------------------------------------------------
# Size checks of the Python entry points: O(layers) (the order check is O(entries), cheaper
# than the epochs it orders), before nogil, so a wrong call is a ValueError naming the buffer,
# never an out-of-bounds access.
# --------------------------------------------------------------------------------------------

cdef int _require_length(Py_ssize_t actual, Py_ssize_t needed, str name,
                         bint at_least=True) except -1:
    """ValueError unless a buffer's length is (at least) needed."""
    if actual < needed if at_least else actual != needed:
        raise ValueError(f"{name} has {actual} values; {'at least ' if at_least else ''}"
                         f"{needed} are needed")
    return 0


cdef int _require_shape(Py_ssize_t rows, Py_ssize_t columns, Py_ssize_t want_rows,
                        Py_ssize_t want_columns, str name) except -1:
    if rows != want_rows or columns != want_columns:
        raise ValueError(f"{name} has shape ({rows}, {columns}); ({want_rows}, {want_columns}) "
                         "is needed")
    return 0


cdef Py_ssize_t _check_layer_sizes(const Py_ssize_t[::1] sizes, bint has_bias) except -1:
    """Checks the layer widths; returns the parameter count they imply."""
    cdef Py_ssize_t k, total = 0
    if sizes.shape[0] < 2:
        raise ValueError(f"sizes needs at least two layer widths, got {sizes.shape[0]}")
    for k in range(sizes.shape[0]):
        if sizes[k] < 1:
            raise ValueError(f"sizes[{k}] = {sizes[k]}: every layer needs at least one unit")
    for k in range(sizes.shape[0] - 1):
        total += _layer_params(&sizes[0], k, has_bias)
    return total


cdef int _check_order(const Py_ssize_t[:, ::1] order, Py_ssize_t n_epochs,
                      Py_ssize_t n_rows) except -1:
    """An epoch order array is (0, 0), or (>= n_epochs, n_rows) of row indices."""
    cdef Py_ssize_t e, r, bad = -1
    if order.shape[0] == 0 and order.shape[1] == 0:
        return 0
    if not (order.shape[0] >= n_epochs and order.shape[1] == n_rows):
        raise ValueError(f"order has shape ({order.shape[0]}, {order.shape[1]}); (0, 0) or "
                         f"(at least {n_epochs}, {n_rows}) is needed")
    with nogil:
        for e in range(n_epochs):
            for r in range(n_rows):
                if order[e, r] < 0 or order[e, r] >= n_rows:
                    bad = e * n_rows + r
    if bad >= 0:
        raise ValueError(f"order[{bad // max(n_rows, 1)}, {bad % max(n_rows, 1)}] is not a row "
                         f"index in [0, {n_rows})")
    return 0


cdef int _check_step_buffers(const Py_ssize_t[::1] sizes, Py_ssize_t n_params, Py_ssize_t rows,
                             Py_ssize_t params_length, const floating[:, ::1] x,
                             const floating[:, ::1] y, const floating[::1] activations,
                             const floating[::1] deltas, const floating[::1] grad) except -1:
    """The buffers of the original's gradient and fit, for steps of up to `rows` rows."""
    cdef Py_ssize_t k, n_layers = sizes.shape[0] - 1, hidden_values = 0, widest = 0
    for k in range(1, n_layers + 1):
        hidden_values += sizes[k]
        widest = max(widest, sizes[k])
    _require_length(params_length, n_params, "params", at_least=False)
    if x.shape[0] < 1:
        raise ValueError("x has no rows")
    _require_shape(x.shape[0], x.shape[1], x.shape[0], sizes[0], "x")
    _require_shape(y.shape[0], y.shape[1], x.shape[0], sizes[n_layers], "y")
    _require_length(activations.shape[0], rows * hidden_values, "activations")
    _require_length(deltas.shape[0], rows * hidden_values, "deltas")
    _require_length(grad.shape[0], widest, "grad")
    return 0


# --------------------------------------------------------------------------------------------
# Python entry points. nnfast.network validates and coerces the data; each entry point checks
# the sizes of the buffers it is given (_require... above) before it releases the GIL.
# --------------------------------------------------------------------------------------------

def sigmoid_inplace(floating[::1] values):  # INOUT
    """values = 1 / (1 + exp(-values)), in place.

    Parameters
    ----------
    values : float32 or float64 contiguous 1-D array, overwritten.
    """
    if values.shape[0] == 0:
        return
    with nogil:
        _sigmoid_range(&values[0], 0, values.shape[0])


def tanh_inplace(floating[::1] values):  # INOUT
    """values = tanh(values), in place, by the general path's vectorisable tanh.

    Parameters
    ----------
    values : float32 or float64 contiguous 1-D array, overwritten.
    """
    cdef Py_ssize_t i
    with nogil:
        for i in range(values.shape[0]):
            values[i] = _tanh(values[i])


def activate(floating[::1] values,  # INOUT
             int activation,
             floating[::1] slopes):  # OUT
    """values = activation(values) and slopes = activation'(values before), elementwise, by
    the general path's loops for a hidden activation code (nnfast._kernels.codes.Activation):
    the forward loop, then the backward one scaling ones (from the outputs, or the slopes the
    forward loop kept).

    Parameters
    ----------
    values : float32 or float64 contiguous 1-D array, overwritten.
    activation : int
    slopes : array of values' dtype and length, written.
    """
    _check_code(_codes.Activation, activation, "activation")
    _require_length(slopes.shape[0], values.shape[0], "slopes", at_least=False)
    cdef Py_ssize_t i, n = values.shape[0]
    if n == 0:
        return
    with nogil:
        _activate_range(&values[0], 0, n, activation, &slopes[0])
        if not _keeps_slopes(activation):
            for i in range(n):
                slopes[i] = 1
            _scale_by_derivative_range(&slopes[0], &values[0], 0, n, activation, NULL)


def sigmoid_derivative(const floating[::1] activations,  # IN
                       floating[::1] out):               # OUT
    """out = activations * (1 - activations), the derivative from the sigmoid's output.

    Parameters
    ----------
    activations : float32 or float64 contiguous 1-D array.
    out : array of the same dtype and length, overwritten.
    """
    cdef Py_ssize_t i
    _require_length(out.shape[0], activations.shape[0], "out", at_least=False)
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
    cdef Py_ssize_t m = inputs.shape[0], n_in = weights.shape[0], n_out = weights.shape[1]
    if not (n_in >= 1 and n_out >= 1):
        raise ValueError(f"weights has shape ({n_in}, {n_out}); a layer needs "
                         "at least one unit on each side")
    _require_shape(inputs.shape[0], inputs.shape[1], m, n_in, "inputs")
    if not (bias.shape[0] == 0 or bias.shape[0] == n_out):
        raise ValueError(f"bias has {bias.shape[0]} values; 0 (none) or {n_out} are needed")
    _require_shape(outputs.shape[0], outputs.shape[1], m, n_out, "outputs")
    if n_threads < 1:
        raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
    if m == 0:
        return
    with nogil:
        _original_forward(&inputs[0, 0], &weights[0, 0],
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
    _require_shape(outputs.shape[0], outputs.shape[1], targets.shape[0], targets.shape[1],
                   "outputs")
    _require_shape(delta.shape[0], delta.shape[1], targets.shape[0], targets.shape[1], "delta")
    if targets.shape[0] == 0 or targets.shape[1] == 0:
        return 0.0
    with nogil:
        abs_error_sum = _original_output_delta(&targets[0, 0], &outputs[0, 0], &delta[0, 0],
                                               targets.shape[0] * targets.shape[1])
    return abs_error_sum


def hidden_delta(const floating[:, ::1] delta_next,   # IN (m, n_out)
                 const floating[:, ::1] weights,      # IN (n_in, n_out)
                 const floating[:, ::1] activations,  # IN (m, n_in)
                 floating[:, ::1] delta,              # OUT (m, n_in)
                 int n_threads=1):
    """delta = (delta_next @ weights.T) * (activations * (1 - activations))."""
    cdef Py_ssize_t m = delta_next.shape[0], n_in = weights.shape[0], n_out = weights.shape[1]
    if not (n_in >= 1 and n_out >= 1):
        raise ValueError(f"weights has shape ({n_in}, {n_out}); a layer needs "
                         "at least one unit on each side")
    _require_shape(delta_next.shape[0], delta_next.shape[1], m, n_out, "delta_next")
    _require_shape(activations.shape[0], activations.shape[1], m, n_in, "activations")
    _require_shape(delta.shape[0], delta.shape[1], m, n_in, "delta")
    if n_threads < 1:
        raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
    if m == 0:
        return
    with nogil:
        _original_hidden_delta(&delta_next[0, 0], &weights[0, 0], &activations[0, 0], &delta[0, 0],
                               delta_next.shape[0], weights.shape[0], weights.shape[1], n_threads)


def apply_gradient(floating[:, ::1] weights,        # INOUT (n_in, n_out)
                   floating[::1] bias,              # INOUT (n_out,) or (0,) for none
                   const floating[:, ::1] inputs,   # IN (m, n_in)
                   const floating[:, ::1] delta,    # IN (m, n_out)
                   floating learning_rate,
                   floating[::1] grad,              # scratch, >= n_out
                   int n_threads=1):
    """weights += learning_rate * (inputs.T @ delta); bias += learning_rate * delta.sum(0)."""
    cdef Py_ssize_t m = inputs.shape[0], n_in = weights.shape[0], n_out = weights.shape[1]
    if not (n_in >= 1 and n_out >= 1):
        raise ValueError(f"weights has shape ({n_in}, {n_out}); a layer needs "
                         "at least one unit on each side")
    if not (bias.shape[0] == 0 or bias.shape[0] == n_out):
        raise ValueError(f"bias has {bias.shape[0]} values; 0 (none) or {n_out} are needed")
    _require_shape(inputs.shape[0], inputs.shape[1], m, n_in, "inputs")
    _require_shape(delta.shape[0], delta.shape[1], m, n_out, "delta")
    _require_length(grad.shape[0], n_out, "grad")
    if n_threads < 1:
        raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
    if m == 0:
        return
    with nogil:
        _apply_gradient(&weights[0, 0], &bias[0] if bias.shape[0] > 0 else NULL,
                        &inputs[0, 0], &delta[0, 0], learning_rate, True, &grad[0],
                        inputs.shape[0], weights.shape[0], weights.shape[1], n_threads)


def original_gradient(const floating[::1] params,   # IN all weights and biases, flat
                      const Py_ssize_t[::1] sizes,  # IN layer sizes s0..sL
                      bint has_bias,
                      const floating[:, ::1] x,     # IN (m, s0)
                      const floating[:, ::1] y,     # IN (m, sL)
                      floating[::1] activations,    # scratch, m * sum(s1..sL)
                      floating[::1] deltas,         # scratch, same size as activations
                      floating[::1] grad,           # scratch, max(s1..sL)
                      floating[::1] gradient_out,   # OUT, same layout and size as params
                      int n_threads=1):
    """The update direction of one full-batch step, without applying it.

    Returns
    -------
    float
        sum |y - output| of the forward pass.
    """
    cdef double abs_error_sum
    cdef Py_ssize_t n_params = _check_layer_sizes(sizes, has_bias)
    cdef Py_ssize_t m = x.shape[0], n_layers = sizes.shape[0] - 1
    _check_step_buffers(sizes, n_params, m, params.shape[0], x, y, activations, deltas, grad)
    _require_length(gradient_out.shape[0], n_params, "gradient_out", at_least=False)
    if n_threads < 1:
        raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
    with nogil:
        # params is only read when gradient_out is given; the cast drops const for the
        # shared step function's signature.
        abs_error_sum = _original_step(<floating*>&params[0], &sizes[0], sizes.shape[0] - 1,
                                       has_bias, &x[0, 0], &y[0, 0], x.shape[0], 1,
                                       &activations[0], &deltas[0], &grad[0], &gradient_out[0],
                                       n_threads)
    return abs_error_sum


def original_fit(floating[::1] params,            # INOUT all weights and biases, flat
                 const Py_ssize_t[::1] sizes,     # IN layer sizes s0..sL
                 bint has_bias,
                 const floating[:, ::1] x,        # IN (n_rows, s0)
                 const floating[:, ::1] y,        # IN (n_rows, sL)
                 const Py_ssize_t[:, ::1] order,  # IN (n_epochs, n_rows) row order, or (0, 0)
                 Py_ssize_t batch_size,
                 Py_ssize_t n_epochs,
                 floating learning_rate,
                 floating[::1] activations,       # scratch, batch_size * sum(s1..sL)
                 floating[::1] deltas,            # scratch, same size as activations
                 floating[::1] grad,              # scratch, max(s1..sL)
                 floating[::1] batch_x,           # scratch, batch_size * s0 when order is given
                 floating[::1] batch_y,           # scratch, batch_size * sL when order is given
                 Py_ssize_t check_every,          # batches between looks at the clock; 0: never
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
    check_every : look at the clock after this many batches, and poll for signals (Ctrl-C)
        when 20 ms have passed since the last poll; 0 never polls (for fits off the main
        thread, where Python handles no signals).
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
    cdef Py_ssize_t n_params = _check_layer_sizes(sizes, has_bias)
    cdef Py_ssize_t n_rows = x.shape[0], n_layers = sizes.shape[0] - 1, rows
    cdef bint gathered = order.shape[0] > 0 or order.shape[1] > 0
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}; at least 1 is needed")
    if n_epochs < 0:
        raise ValueError(f"n_epochs = {n_epochs}; at least 0 is needed")
    if check_every < 0:
        raise ValueError(f"check_every = {check_every}; at least 0 is needed")
    if n_threads < 1:
        raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
    rows = min(batch_size, n_rows)
    _check_step_buffers(sizes, n_params, rows, params.shape[0], x, y, activations, deltas, grad)
    _check_order(order, n_epochs, n_rows)
    if gathered:
        _require_length(batch_x.shape[0], rows * sizes[0], "batch_x")
        _require_length(batch_y.shape[0], rows * sizes[n_layers], "batch_y")
    if n_epochs == 0:
        return 0, first_error, False
    with nogil:
        status = _original_fit_loop(&params[0], &sizes[0], sizes.shape[0] - 1, has_bias,
                                    &x[0, 0], &y[0, 0], x.shape[0],
                                    &order[0, 0] if order.shape[0] > 0 else NULL,
                                    batch_size, n_epochs, learning_rate,
                                    &activations[0], &deltas[0], &grad[0],
                                    &batch_x[0] if batch_x.shape[0] > 0 else NULL,
                                    &batch_y[0] if batch_y.shape[0] > 0 else NULL,
                                    check_every, n_threads, &first_error, &epochs_done)
    return epochs_done, first_error, status == 1


# --------------------------------------------------------------------------------------------
# The general path's entry points
# --------------------------------------------------------------------------------------------

cdef int _check_code(object codes, object value, str name) except -1:
    """ValueError unless value is one of the codes of an enum of nnfast._kernels.codes (asked
    of its members: Cython's enums convert any int, as a C enum holds one)."""
    if value not in [int(code) for code in codes]:
        raise ValueError(f"{name} = {value} is not a code of {codes.__name__} "
                         f"({', '.join(f'{code.name}={int(code)}' for code in codes)})")
    return 0


cdef class TrainConfig:
    """Everything the general step needs besides the buffers: one object, not a dozen
    positional arguments. Built from an nnfast._training.plan.FitPlan by nnfast._kernels.runner.

    Parameters (keyword-only)
    -------------------------
    sizes : sequence of int
        Layer widths s0..sL, at least two, each >= 1.
    bias : bool
    activations : sequence of int
        Hidden activation code (nnfast._training.plan) of each of the L - 1 hidden layers.
    output, reduction, optimizer, schedule : int
        nnfast._training.plan codes.
    alpha : float
        L2 penalty.
    learning_rate_init : float
        Adam's rate, and the numerator of the invscaling schedule.
    momentum, nesterov, power_t : SGD's.
    beta_1, beta_2, epsilon : Adam's.
    batch_size : int >= 1
        Rows per step of fit (loss_gradient takes all rows).
    check_every : int >= 0
        Batches between looks at the clock for a Ctrl-C poll (at most one per 20 ms); 0
        never polls.
    n_threads : int >= 1
        Kernel threads, for networks whose products are large.
    loss : int, default 0
        A nnfast._training.plan loss code: 0 the output's own loss; the regression losses
        need the identity output.
    loss_parameter : float
        Huber's delta (> 0) or the quantile (in (0, 1)) of those losses.
    max_grad_norm : float >= 0, default 0
        Clip each step's gradient to this global L2 norm; 0 never clips.
    schedule_epochs, warmup_epochs : int
        The "cosine" schedule's length (>= 1) and its warm-up (0 <= warmup < length).
    dropout : sequence of float, default ()
        Each hidden layer's dropout rate in [0, 1), or empty for none.
    dropout_seed : int in [0, 2**64), default 0
        The seed of the fit's dropout masks (nnfast.reference.dropout_masks).
    The optimizer's counters (step, samples_seen, learning_rate, epochs) are not settings:
    they change as a fit trains, and :func:`fit` reads and updates them on the optimizer
    state it is given (nnfast._training.plan.OptimizerState), so a TrainConfig is fixed once
    built.
    """

    cdef _Config c
    cdef Py_ssize_t* _sizes
    cdef Py_ssize_t* _activations
    cdef double* _dropout

    def __cinit__(self):
        self._sizes = NULL
        self._activations = NULL
        self._dropout = NULL

    def __dealloc__(self):
        PyMem_Free(self._sizes)
        PyMem_Free(self._activations)
        PyMem_Free(self._dropout)

    def __init__(self, *, sizes, bint bias, activations, int output, int reduction,
                 double alpha, int optimizer, int schedule, double learning_rate_init,
                 double momentum, bint nesterov, double power_t, double beta_1, double beta_2,
                 double epsilon, Py_ssize_t batch_size, Py_ssize_t check_every,
                 int n_threads, int loss=LOSS_OUTPUT, double loss_parameter=0.0,
                 double max_grad_norm=0.0, Py_ssize_t schedule_epochs=0,
                 Py_ssize_t warmup_epochs=0, dropout=(), uint64_t dropout_seed=0):
        cdef Py_ssize_t k
        if self._sizes != NULL:
            # fit may be reading the sizes without the GIL in another thread.
            raise TypeError("a TrainConfig is fixed once built; make a new one")
        sizes = [int(s) for s in sizes]
        activations = [int(a) for a in activations]
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least two layer widths, got {len(sizes)}")
        for k, width in enumerate(sizes):
            if width < 1:
                raise ValueError(f"sizes[{k}] = {width}: every layer needs at least one unit")
            if width > INT_MAX:
                raise ValueError(f"sizes[{k}] = {width} exceeds BLAS's largest dimension "
                                 f"{INT_MAX}")
        if len(activations) != len(sizes) - 2:
            raise ValueError(f"{len(activations)} hidden activation codes for "
                             f"{len(sizes) - 2} hidden layers")
        for k, code in enumerate(activations):
            _check_code(_codes.Activation, code, f"activations[{k}]")
        _check_code(_codes.Output, output, "output")
        _check_code(_codes.Reduction, reduction, "reduction")
        _check_code(_codes.Optimizer, optimizer, "optimizer")
        _check_code(_codes.Schedule, schedule, "schedule")
        if not (1 <= batch_size <= INT_MAX):
            raise ValueError(f"batch_size = {batch_size}; 1 to {INT_MAX} (BLAS's largest "
                             "dimension) is needed")
        if check_every < 0:
            raise ValueError(f"check_every = {check_every}; at least 0 is needed")
        if n_threads < 1:
            raise ValueError(f"n_threads = {n_threads}; at least 1 is needed")
        _check_code(_codes.Loss, loss, "loss")
        if loss != LOSS_OUTPUT and output != OUTPUT_IDENTITY:
            raise ValueError(f"loss = {loss} needs the identity output ({OUTPUT_IDENTITY}), "
                             f"got output = {output}")
        if loss == LOSS_HUBER and not (0 < loss_parameter < INFINITY):
            raise ValueError(f"loss_parameter = {loss_parameter}: Huber's delta must be > 0")
        if loss == LOSS_QUANTILE and not (0 < loss_parameter < 1):
            raise ValueError(f"loss_parameter = {loss_parameter}: the quantile must be in "
                             "(0, 1)")
        if not (0 <= max_grad_norm < INFINITY):
            raise ValueError(f"max_grad_norm = {max_grad_norm}; a finite value >= 0 (0: no "
                             "clipping) is needed")
        if schedule == SCHEDULE_COSINE and not (0 <= warmup_epochs < schedule_epochs):
            raise ValueError(f"schedule_epochs = {schedule_epochs}, warmup_epochs = "
                             f"{warmup_epochs}: the cosine schedule needs 0 <= warmup_epochs "
                             "< schedule_epochs")
        dropout = [float(rate) for rate in dropout]
        if dropout and len(dropout) != len(sizes) - 2:
            raise ValueError(f"{len(dropout)} dropout rates for {len(sizes) - 2} hidden "
                             "layers")
        for k, rate in enumerate(dropout):
            if not (0 <= rate < 1):
                raise ValueError(f"dropout[{k}] = {rate}; a rate in [0, 1) is needed")

        PyMem_Free(self._sizes)
        PyMem_Free(self._activations)
        self._sizes = <Py_ssize_t*>PyMem_Malloc(len(sizes) * sizeof(Py_ssize_t))
        self._activations = <Py_ssize_t*>PyMem_Malloc(len(sizes) * sizeof(Py_ssize_t))
        if any(rate > 0 for rate in dropout):
            self._dropout = <double*>PyMem_Malloc(len(dropout) * sizeof(double))
            if self._dropout == NULL:
                raise MemoryError()
            for k in range(len(dropout)):
                self._dropout[k] = dropout[k]
        if self._sizes == NULL or self._activations == NULL:
            raise MemoryError()
        for k in range(len(sizes)):
            self._sizes[k] = sizes[k]
        for k in range(len(activations)):
            self._activations[k] = activations[k]
        self.c.n_layers = len(sizes) - 1
        self.c.sizes = self._sizes
        self.c.activations = self._activations
        self.c.has_bias = bias
        self.c.output = output
        self.c.reduction = reduction
        self.c.alpha = alpha
        self.c.optimizer = optimizer
        self.c.schedule = schedule
        self.c.learning_rate_init = learning_rate_init
        self.c.momentum = momentum
        self.c.nesterov = nesterov
        self.c.power_t = power_t
        self.c.beta_1 = beta_1
        self.c.beta_2 = beta_2
        self.c.epsilon = epsilon
        self.c.batch_size = batch_size
        self.c.check_every = check_every
        self.c.n_threads = n_threads
        self.c.loss = loss
        self.c.loss_parameter = loss_parameter
        self.c.max_grad_norm = max_grad_norm
        self.c.schedule_epochs = schedule_epochs
        self.c.warmup_epochs = warmup_epochs
        self.c.dropout = self._dropout
        self.c.dropout_seed = dropout_seed

    @property
    def sizes(self):
        """The layer widths, as a tuple."""
        return tuple(self._sizes[k] for k in range(self.c.n_layers + 1))

    @property
    def n_params(self):
        """Length of the flat params buffer these sizes imply (nnfast._training.layout)."""
        cdef Py_ssize_t k, total = 0
        for k in range(self.c.n_layers):
            total += _layer_params(self._sizes, k, self.c.has_bias)
        return total

    @property
    def state_size(self):
        """Length of the optimizer state buffer: 0 (plain), P (SGD), 2P (Adam)."""
        return self.n_params * (0 if self.c.optimizer == OPTIMIZER_PLAIN
                                else 1 if self.c.optimizer == OPTIMIZER_SGD else 2)


cdef int _read_counters(object state, _Counters* counters) except -1:
    """counters = the optimizer state's step, samples_seen, learning_rate and epochs."""
    counters.step = state.step
    counters.samples_seen = state.samples_seen
    counters.learning_rate = state.learning_rate
    counters.epochs = state.epochs
    return 0


cdef int _write_counters(const _Counters* counters, object state) except -1:
    """The optimizer state's step, samples_seen, learning_rate and epochs = counters."""
    state.step = counters.step
    state.samples_seen = counters.samples_seen
    state.learning_rate = counters.learning_rate
    state.epochs = counters.epochs
    return 0


cdef floating[::1] _state_values(object state, const floating[::1] params):
    """The optimizer state's values, a writable contiguous array of the params' dtype."""
    cdef floating[::1] values
    try:
        values = state.values
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state.values must be a writable contiguous 1-D array of the "
                         f"params' dtype: {exc}") from None
    return values


cdef int _check_general_data(TrainConfig config, Py_ssize_t n_params,
                             const floating[:, ::1] x, const floating[:, ::1] y,
                             const floating[::1] sample_weight) except -1:
    cdef Py_ssize_t n_rows = x.shape[0]
    _require_length(n_params, config.n_params, "params", at_least=False)
    if n_rows < 1:
        raise ValueError("x has no rows")
    if n_rows > INT_MAX:
        # loss_gradient passes all rows to BLAS as one int dimension.
        raise ValueError(f"x has {n_rows} rows; at most {INT_MAX} (BLAS's largest dimension)")
    _require_shape(x.shape[0], x.shape[1], n_rows, config._sizes[0], "x")
    _require_shape(y.shape[0], y.shape[1], n_rows, config._sizes[config.c.n_layers], "y")
    if not (sample_weight.shape[0] == 0 or sample_weight.shape[0] == n_rows):
        raise ValueError(f"sample_weight has {sample_weight.shape[0]} values; 0 (none) or "
                         f"{n_rows} are needed")
    return 0


cdef void* _workspace_pointer(dict workspace, str name, Py_ssize_t needed,
                              const floating[::1] params, list keep) except NULL:
    """workspace[name]'s data, checked to be a contiguous array of the params' dtype with at
    least needed values; the array is appended to keep, which the caller holds while the
    kernel runs."""
    cdef floating[::1] view
    if name not in workspace:
        raise ValueError(f"workspace has no buffer {name!r}")
    array = workspace[name]
    try:
        view = array
    except (TypeError, ValueError) as exc:
        raise ValueError(f"workspace[{name!r}] must be a writable contiguous 1-D array of the "
                         f"params' dtype: {exc}") from None
    _require_length(view.shape[0], needed, f"workspace[{name!r}]")
    keep.append(array)
    return &view[0]


cdef list _fill_workspace(TrainConfig config, dict workspace, Py_ssize_t rows, bint training,
                          bint gathered, bint weighted, const floating[::1] params,
                          _Workspace* work, bint sparse_input=False,
                          Py_ssize_t gradient_skipped=0, Py_ssize_t blocks=1):
    """Checks the workspace buffers for batches of `rows` rows and points work at them;
    returns the arrays, for the caller to hold while the kernel runs. sparse_input: x is
    CSR (no gathered rows of x; the transposes serve the dense layers 1.. only, through the
    step's whole-batch path, which uses one layer's at a time). blocks: the team step's row
    blocks (dense training), each with its own gradient, transposes and bias sums."""
    cdef Py_ssize_t k, hidden_values = 0, widest = 0, dense_layer = 0
    cdef Py_ssize_t n_params = config.n_params
    cdef const _Config* c = &config.c
    cdef list keep = []
    for k in range(c.n_layers):
        hidden_values += c.sizes[k + 1]
        widest = max(widest, c.sizes[k + 1])
        if k > 0:
            dense_layer = max(dense_layer, c.sizes[k] * c.sizes[k + 1])
    work.activations = _workspace_pointer(workspace, "activations", rows * hidden_values,
                                          params, keep)
    work.deltas = _workspace_pointer(workspace, "deltas", rows * hidden_values, params, keep)
    work.slopes = NULL
    for k in range(c.n_layers - 1):
        if _keeps_slopes(c.activations[k]) or _drops(c, k, training):
            work.slopes = _workspace_pointer(workspace, "slopes", rows * hidden_values, params,
                                             keep)
            break
    work.bias_sums = _workspace_pointer(workspace, "bias_sums", widest * blocks, params, keep)
    work.gradient = work.batch_x = work.batch_y = work.batch_w = NULL
    work.transposed = work.transposed_gradient = NULL
    work.column_starts = work.column_rows = NULL
    work.column_values = NULL
    work.column_capacity = 0
    work.gradient_skipped = 0
    if not sparse_input:
        work.transposed = _workspace_pointer(workspace, "transposed", n_params * blocks,
                                             params, keep)
        work.transposed_gradient = _workspace_pointer(workspace, "transposed_gradient",
                                                      n_params, params, keep)
    elif dense_layer > 0:
        work.transposed = _workspace_pointer(workspace, "transposed", dense_layer, params,
                                             keep)
    work.gradient_skipped = gradient_skipped
    if training and n_params > gradient_skipped:
        work.gradient = _workspace_pointer(workspace, "gradient",
                                           (n_params - gradient_skipped) * blocks, params, keep)
    if gathered and not sparse_input:
        work.batch_x = _workspace_pointer(workspace, "batch_x", rows * c.sizes[0], params,
                                          keep)
    if gathered:
        work.batch_y = _workspace_pointer(workspace, "batch_y", rows * c.sizes[c.n_layers],
                                          params, keep)
        if weighted:
            work.batch_w = _workspace_pointer(workspace, "batch_w", rows, params, keep)
    return keep


cdef tuple _train(TrainConfig config, floating[::1] params, object state,
                  floating[::1] values, const floating* x, const _SparseRows* sparse,
                  const floating[:, ::1] y, const floating[::1] sample_weight,
                  const Py_ssize_t[:, ::1] order, const _Workspace* work,
                  double[::1] epoch_losses):
    """What fit and fit_sparse share once their buffers are checked: _fit_loop without the
    GIL, on the optimizer state's values and counters, whose new values are written back to
    state also when the loop raises (Ctrl-C). Returns (epochs_done, diverged)."""
    cdef Py_ssize_t n_epochs = epoch_losses.shape[0]
    cdef Py_ssize_t epochs_done = 0
    cdef _Counters counters
    cdef _Team team
    cdef int status
    if n_epochs == 0:
        return 0, False
    team.n_blocks = config.c.n_threads if _team_steps(&config.c, sparse != NULL) else 0
    team.block_losses = NULL
    if team.n_blocks > 0:
        # Once per call, before the loop: the blocks' sums (_Team).
        team.block_losses = <double*>PyMem_Malloc(3 * team.n_blocks * sizeof(double))
        if team.block_losses == NULL:
            raise MemoryError()
        team.block_errors = team.block_losses + team.n_blocks
        team.block_squares = team.block_errors + team.n_blocks
    _read_counters(state, &counters)
    try:
        with nogil:
            # order is (0, 0) or has n_epochs rows and more (_check_order).
            if team.n_blocks > 0:
                status = _team_fit_loop(
                    &config.c, &counters, &params[0],
                    &values[0] if values.shape[0] > 0 else NULL, x, &y[0, 0],
                    &sample_weight[0] if sample_weight.shape[0] > 0 else NULL, y.shape[0],
                    &order[0, 0] if order.shape[0] > 0 else NULL, n_epochs, work,
                    &epoch_losses[0], &epochs_done, &team)
            else:
                status = _fit_loop(&config.c, &counters, &params[0],
                                   &values[0] if values.shape[0] > 0 else NULL, x, sparse,
                                   &y[0, 0],
                                   &sample_weight[0] if sample_weight.shape[0] > 0 else NULL,
                                   y.shape[0], &order[0, 0] if order.shape[0] > 0 else NULL,
                                   n_epochs, work, &epoch_losses[0], &epochs_done)
    finally:
        PyMem_Free(team.block_losses)
        _write_counters(&counters, state)
    return epochs_done, status == 1


cdef inline bint _team_steps(const _Config* config, bint sparse_input) noexcept nogil:
    """Whether a fit trains by the team step: threaded (n_threads blocks), dense, unclipped
    (a clipped step needs the whole gradient's norm before any update)."""
    return config.n_threads > 1 and not sparse_input and config.max_grad_norm <= 0


def fit(TrainConfig config,
        floating[::1] params,                 # INOUT all weights and biases, flat
        state,                                # INOUT OptimizerState (values: floating[::1])
        const floating[:, ::1] x,             # IN (n_rows, s0)
        const floating[:, ::1] y,             # IN (n_rows, sL)
        const floating[::1] sample_weight,    # IN (n_rows,), or (0,) for none
        const Py_ssize_t[:, ::1] order,       # IN (>= n_epochs, n_rows), or (0, 0)
        dict workspace,                       # scratch (nnfast._training.layout)
        double[::1] epoch_losses):            # OUT (n_epochs,)
    """Trains len(epoch_losses) epochs of the general step in one call, without the GIL.

    Parameters
    ----------
    config : TrainConfig
        The model and the fit's hyperparameters (fixed).
    params : flat weights and biases (nnfast._training.layout), updated in place.
    state : nnfast._training.plan.OptimizerState, updated in place: its values (P
        velocities for SGD, P first then P second moments for Adam, nothing for the plain
        step, each in the params layout, of the params' dtype) and its counters (step,
        samples_seen, learning_rate, epochs), which move with params batch by batch and are
        written back also when the fit stops early (divergence, Ctrl-C).
    x, y : inputs and targets, one row per sample.
    sample_weight : a weight per row, or an empty array for unit weights.
    order : each epoch's row order for shuffled mini-batches, or (0, 0) for stored order.
    workspace : dict of scratch arrays of the params' dtype, from
        ``nnfast._training.layout.allocate_general_workspace`` (activations, deltas, bias_sums,
        gradient, transposed, transposed_gradient; batch_x, batch_y and batch_w when order
        is given).
    epoch_losses : receives each epoch's loss (nnfast._training.plan, "Losses").

    Returns
    -------
    epochs_done : int
        Completed epochs; fewer than requested when an epoch's loss was not finite, which is
        then the epoch at index ``epochs_done`` (its loss is in epoch_losses).
    diverged : bool
        Whether an epoch's loss was not finite.
    """
    cdef Py_ssize_t n_rows = x.shape[0]
    cdef bint gathered = order.shape[0] > 0 or order.shape[1] > 0
    cdef floating[::1] values = _state_values(state, params)
    cdef _Workspace work
    cdef list keep

    _check_general_data(config, params.shape[0], x, y, sample_weight)
    _require_length(values.shape[0], config.state_size, "state.values", at_least=False)
    _check_order(order, epoch_losses.shape[0], n_rows)
    keep = _fill_workspace(config, workspace, min(config.c.batch_size, n_rows), True,
                           gathered, sample_weight.shape[0] > 0, params, &work, False, 0,
                           config.c.n_threads if _team_steps(&config.c, False) else 1)
    return _train(config, params, state, values, &x[0, 0], NULL, y, sample_weight, order,
                  &work, epoch_losses)


def loss_gradient(TrainConfig config,
                  const floating[::1] params,           # IN all weights and biases, flat
                  const floating[:, ::1] x,             # IN (n_rows, s0)
                  const floating[:, ::1] y,             # IN (n_rows, sL)
                  const floating[::1] sample_weight,    # IN (n_rows,), or (0,) for none
                  dict workspace,                       # scratch for n_rows rows
                  floating[::1] grad_out):              # OUT like params
    """Full-batch loss and gradient (scikit-learn's _backprop), for L-BFGS and for Dask.

    Parameters
    ----------
    config : TrainConfig
        The model; its optimizer settings, batch size and counters are not used.
    params, x, y, sample_weight : as for fit (params is only read).
    workspace : activations, deltas, bias_sums, transposed and transposed_gradient for all
        n_rows rows (no gradient: grad_out is written instead).
    grad_out : receives the gradient G (reduction "mean": divided by the weight sum; alpha
        included), in the params layout.

    Returns
    -------
    float
        The loss: the data loss plus the L2 penalty (nnfast._training.plan, "Losses").
    """
    cdef _Workspace work
    cdef list keep
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef double loss, abs_error
    _check_general_data(config, params.shape[0], x, y, sample_weight)
    _require_length(grad_out.shape[0], params.shape[0], "grad_out", at_least=False)
    keep = _fill_workspace(config, workspace, x.shape[0], False, False, weighted, params,
                           &work)
    with nogil:
        # params is only read when grad_out is given; the cast drops const for the shared
        # step function's signature.
        loss = _step(&config.c, NULL, <floating*>&params[0], NULL, &x[0, 0], &y[0, 0],
                     &sample_weight[0] if weighted else NULL, x.shape[0], &work,
                     &grad_out[0], &abs_error, NULL)
    return loss


# --------------------------------------------------------------------------------------------
# The general path's entry points for a CSR x (see "Sparse inputs"). The structure of the
# matrix is checked here, O(rows + non-zeros) without the GIL, so that the kernel never reads
# outside its arrays or params whatever it is given: row starts from 0, non-decreasing, within
# the arrays; every column index within the input layer.
# --------------------------------------------------------------------------------------------

cdef Py_ssize_t _csr_fault(const index_t* indptr, const index_t* indices, Py_ssize_t n_rows,
                           Py_ssize_t n_values, Py_ssize_t n_columns) noexcept nogil:
    """0 for a well-formed CSR structure; else 1 (row starts) or 2 (a column index)."""
    cdef Py_ssize_t r, p
    if indptr[0] != 0 or indptr[n_rows] > n_values:
        return 1
    for r in range(n_rows):
        if indptr[r + 1] < indptr[r]:
            return 1
    for p in range(<Py_ssize_t>indptr[n_rows]):
        if indices[p] < 0 or indices[p] >= n_columns:
            return 2
    return 0


cdef Py_ssize_t _bind_csr(object indptr, object indices, Py_ssize_t n_values,
                          Py_ssize_t n_columns, _SparseRows* out,
                          Py_ssize_t* widest_row=NULL) except -1:
    """Points out at a CSR structure (indptr, indices: contiguous 1-D arrays, both int32 or
    both int64, as scipy makes them) after checking it; n_values: the length of the data."""
    cdef const int32_t[::1] indptr32, indices32
    cdef const int64_t[::1] indptr64, indices64
    cdef Py_ssize_t n_rows, fault, r, widest
    try:
        indptr32 = indptr
        indices32 = indices
        out.wide_index = False
    except (TypeError, ValueError):
        try:
            indptr64 = indptr
            indices64 = indices
            out.wide_index = True
        except (TypeError, ValueError):
            raise TypeError("indptr and indices must be contiguous 1-D arrays, both int32 or "
                            "both int64") from None
    if out.wide_index:
        n_rows = indptr64.shape[0] - 1
        n_values = min(n_values, indices64.shape[0])
    else:
        n_rows = indptr32.shape[0] - 1
        n_values = min(n_values, indices32.shape[0])
    if n_rows < 1:
        raise ValueError("x has no rows")
    with nogil:
        if out.wide_index:
            fault = _csr_fault(&indptr64[0], &indices64[0] if n_values > 0 else NULL, n_rows,
                               n_values, n_columns)
        else:
            fault = _csr_fault(&indptr32[0], &indices32[0] if n_values > 0 else NULL, n_rows,
                               n_values, n_columns)
    if fault == 1:
        raise ValueError(f"indptr is not a CSR matrix's row starts for {n_values} values: "
                         "0 first, non-decreasing, the last at most the values' count")
    if fault == 2:
        raise ValueError(f"indices holds a column index outside [0, {n_columns})")
    if widest_row != NULL:
        # The most non-zeros in a row (after the checks: the row starts are monotone).
        widest = 0
        with nogil:
            for r in range(n_rows):
                if out.wide_index:
                    widest = max(widest, <Py_ssize_t>(indptr64[r + 1] - indptr64[r]))
                else:
                    widest = max(widest, <Py_ssize_t>(indptr32[r + 1] - indptr32[r]))
        widest_row[0] = widest
    if out.wide_index:
        out.indptr = &indptr64[0]
        out.indices = &indices64[0] if n_values > 0 else NULL
    else:
        out.indptr = &indptr32[0]
        out.indices = &indices32[0] if n_values > 0 else NULL
    out.rows = NULL
    out.start = 0
    return n_rows


cdef int _check_sparse_data(TrainConfig config, Py_ssize_t n_params, Py_ssize_t n_rows,
                            const floating[:, ::1] y,
                            const floating[::1] sample_weight) except -1:
    _require_length(n_params, config.n_params, "params", at_least=False)
    if n_rows > INT_MAX:
        raise ValueError(f"x has {n_rows} rows; at most {INT_MAX} (BLAS's largest dimension)")
    _require_shape(y.shape[0], y.shape[1], n_rows, config._sizes[config.c.n_layers], "y")
    if not (sample_weight.shape[0] == 0 or sample_weight.shape[0] == n_rows):
        raise ValueError(f"sample_weight has {sample_weight.shape[0]} values; 0 (none) or "
                         f"{n_rows} are needed")
    return 0


cdef int _fill_column_buffers(TrainConfig config, dict workspace, Py_ssize_t entries,
                              const floating[::1] params, _Workspace* work,
                              list keep) except -1:
    """Points work at the transposed-batch buffers of the workspace (column_starts: s0 + 1
    intp; column_rows, intp, and column_values, the params' dtype: at least `entries`, the
    most non-zeros a batch can hold). Without them (or with threads) the kernel takes the
    scatter path (work's pointers stay NULL)."""
    cdef Py_ssize_t[::1] starts, rows
    try:
        starts = workspace["column_starts"]
        rows = workspace["column_rows"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"workspace's column_starts and column_rows must be writable "
                         f"contiguous intp arrays: {exc}") from None
    _require_length(starts.shape[0], config._sizes[0] + 1, "workspace['column_starts']")
    _require_length(rows.shape[0], entries, "workspace['column_rows']")
    work.column_values = (_workspace_pointer(workspace, "column_values", entries, params, keep)
                          if entries > 0 else NULL)
    keep.append(workspace["column_starts"])
    keep.append(workspace["column_rows"])
    work.column_starts = &starts[0]
    work.column_rows = &rows[0] if rows.shape[0] > 0 else NULL
    work.column_capacity = rows.shape[0]
    return 0


def fit_sparse(TrainConfig config,
               floating[::1] params,               # INOUT all weights and biases, flat
               state,                              # INOUT OptimizerState, as for fit
               const floating[::1] data,           # IN x's non-zero values (CSR)
               indptr,                             # IN (n_rows + 1,) int32 or int64
               indices,                            # IN x's column indices, as indptr
               const floating[:, ::1] y,           # IN (n_rows, sL)
               const floating[::1] sample_weight,  # IN (n_rows,), or (0,) for none
               const Py_ssize_t[:, ::1] order,     # IN (>= n_epochs, n_rows), or (0, 0)
               dict workspace,                     # scratch (layout, sparse=True)
               double[::1] epoch_losses):          # OUT (n_epochs,)
    """:func:`fit` for x a CSR matrix of sizes[0] columns (data, indptr, indices; scipy's
    arrays of a canonical matrix, used as given); the same loop, which reads each batch's
    rows of x where they are. The workspace is
    ``nnfast._training.layout.allocate_general_workspace(..., sparse=True)``'s: no gathered
    rows of x and small transposes. Returns (epochs_done, diverged) as fit."""
    cdef _SparseRows sparse
    cdef Py_ssize_t widest_row = 0
    cdef Py_ssize_t n_rows = _bind_csr(indptr, indices, data.shape[0], config._sizes[0],
                                       &sparse, &widest_row)
    cdef bint gathered = order.shape[0] > 0 or order.shape[1] > 0
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef floating[::1] values = _state_values(state, params)
    cdef _Workspace work
    cdef list keep
    sparse.data = &data[0] if data.shape[0] > 0 else NULL
    _check_sparse_data(config, params.shape[0], n_rows, y, sample_weight)
    _require_length(values.shape[0], config.state_size, "state.values", at_least=False)
    _check_order(order, epoch_losses.shape[0], n_rows)
    # The first layer's row-by-row update runs serially, given the transposed-batch buffers;
    # the gradient buffer then holds the layers behind it only. A clipped step needs the
    # whole gradient before any update (_clipped_update): no row-by-row update then.
    cdef bint row_update = (config.c.n_threads <= 1 and config.c.max_grad_norm == 0
                            and "column_starts" in workspace)
    keep = _fill_workspace(config, workspace, min(config.c.batch_size, n_rows), True,
                           gathered, weighted, params, &work, True,
                           _layer_params(config._sizes, 0, config.c.has_bias) if row_update
                           else 0)
    if row_update:
        _fill_column_buffers(config, workspace,
                             min(min(config.c.batch_size, n_rows) * widest_row, data.shape[0]),
                             params, &work, keep)
    return _train(config, params, state, values, NULL, &sparse, y, sample_weight, order, &work,
                  epoch_losses)


def loss_gradient_sparse(TrainConfig config,
                         const floating[::1] params,           # IN all weights and biases
                         const floating[::1] data,             # IN x's non-zero values (CSR)
                         indptr,                               # IN (n_rows + 1,) int32/int64
                         indices,                              # IN column indices, as indptr
                         const floating[:, ::1] y,             # IN (n_rows, sL)
                         const floating[::1] sample_weight,    # IN (n_rows,), or (0,)
                         dict workspace,                       # scratch for n_rows rows
                         floating[::1] grad_out):              # OUT like params
    """:func:`loss_gradient` for x a CSR matrix (as :func:`fit_sparse`); the
    workspace is ``allocate_general_workspace(..., training=False, sparse=True)``'s."""
    cdef _SparseRows sparse
    cdef Py_ssize_t n_rows = _bind_csr(indptr, indices, data.shape[0], config._sizes[0],
                                       &sparse)
    cdef _Workspace work
    cdef list keep
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef double loss, abs_error
    sparse.data = &data[0] if data.shape[0] > 0 else NULL
    _check_sparse_data(config, params.shape[0], n_rows, y, sample_weight)
    _require_length(grad_out.shape[0], params.shape[0], "grad_out", at_least=False)
    keep = _fill_workspace(config, workspace, n_rows, False, False, weighted, params, &work,
                           True)
    with nogil:
        loss = _step(&config.c, NULL, <floating*>&params[0], NULL, NULL, &y[0, 0],
                     &sample_weight[0] if weighted else NULL, n_rows, &work,
                     &grad_out[0], &abs_error, &sparse)
    return loss
