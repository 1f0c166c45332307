/* lib/core/numeric.c -- numerical checks shared by the passes and optimizers.
 *
 * dd__all_finite() decides whether a float buffer holds any NaN or Inf, the
 * test behind DD_ERR_NUMERIC. It looks at the exponent bits (all ones means
 * Inf or NaN), which stays correct even if a file is ever compiled with
 * -ffast-math, where isfinite() may be folded to 1. Buffers of at least
 * DD_FINITE_PAR floats are split across the model's threads with an OpenMP
 * reduction (counting non-finite values, so no early exit is needed);
 * smaller ones are scanned serially, where a parallel region would cost more
 * than the scan.
 */
#include <string.h>

#include "core.h"

/* Below ~64k floats (256 KiB, L2-resident) a parallel region costs more than it saves. */
#define DD_FINITE_PAR ((size_t)1 << 16)
#define DD_F32_EXP_MASK 0x7f800000u

static int dd_bad(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & DD_F32_EXP_MASK) == DD_F32_EXP_MASK;
}

int dd__all_finite(const float *x, size_t count, int nthreads) {
    if (count == 0) return 1;
    if (count < DD_FINITE_PAR || nthreads <= 1) {
        for (size_t i = 0; i < count; i++)
            if (dd_bad(x[i])) return 0;
        return 1;
    }
    long long bad = 0;
    long long n = (long long)count;
#pragma omp parallel for num_threads(nthreads) reduction(+ : bad) schedule(static)
    for (long long i = 0; i < n; i++) bad += dd_bad(x[i]);
    return bad == 0;
}
