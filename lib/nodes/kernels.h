/* lib/nodes/kernels.h -- our own OpenMP kernels over graph tensors (internal).
 *
 * All of them honour the tensor's layout (plain or nChw<b>c with zero
 * padding channels) and write zeros into padding lanes, so buffers reused
 * for different tensors never carry stale padding. x, y: (n, C, H, W) or
 * (n, C) in t's layout; per-channel arrays have C entries.
 */
#ifndef DD_LIB_NODES_KERNELS_H
#define DD_LIB_NODES_KERNELS_H

#include "../graph/graph.h"

/* y = x * scale[c] + shift[c] (shift may be NULL: 0); y may equal x. */
DD_INTERNAL void dd__chan_affine(const dd__tensor *t, int n, const float *x, float *y, const float *scale,
                                 const float *shift, int nthreads);
/* Per channel, in double: sum_ab[c] = sum of a*b over n, h, w (b NULL: of a),
 * sum_a[c] = sum of a (either output may be NULL). work: scratch of
 * dd__chan_work_doubles(t, nthreads) doubles. Deterministic for a thread count
 * (threads beyond what the work buffer was sized for are not used). */
DD_INTERNAL void dd__chan_sums(const dd__tensor *t, int n, const float *a, const float *b, double *sum_ab,
                               double *sum_a, double *work, int nthreads);
static inline size_t dd__chan_work_doubles(const dd__tensor *t, int nthreads) {
    return 5 * (size_t)((t->c + 15) / 16 * 16) * (size_t)nthreads;
}
/* One pass over three tensors T, g, x: sums[k * C + c] for k = 0..4 are the
 * per-channel sums of T, g, T*g, g*x and T*x (double). work as above. */
DD_INTERNAL void dd__chan_sums3(const dd__tensor *t, int n, const float *tv, const float *gv, const float *xv,
                                double *sums, double *work, int nthreads);
/* y (+)= ca[c] * a + cb[c] * b + cc[c] * e + cd[c] (accumulate: +=, else =;
 * padding lanes get 0 + 0, so a, b, e must have zero padding). */
DD_INTERNAL void dd__chan_lincomb(const dd__tensor *t, int n, float *y, const float *a, const float *b,
                                  const float *e, const float *ca, const float *cb, const float *cc,
                                  const float *cd, int accumulate, int nthreads);
/* y = a + b elementwise over count floats (padding included); with relu
 * y = max(a + b, 0). */
DD_INTERNAL void dd__add2(const float *a, const float *b, float *y, size_t count, int relu, int nthreads);
/* d0 = d1 = dy * [y > 0] over count floats (a ReLU's backward into both
 * inputs of an add); d0 or d1 may be NULL. */
DD_INTERNAL void dd__relu_bwd2(float *d0, float *d1, const float *dy, const float *y, size_t count,
                               int nthreads);
/* dst = src over count floats (OpenMP). */
DD_INTERNAL void dd__copy(float *dst, const float *src, size_t count, int nthreads);

#endif
