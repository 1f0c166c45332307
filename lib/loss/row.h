/* lib/loss/row.h -- losses of one logit vector (internal): the per-sample
 * pieces that the attacks and the training losses share.
 *
 * Each takes the logits z (K floats) of one sample and returns the loss in
 * double (accumulated in double, max-shifted where an exp appears); those
 * with a dz argument also write its gradient dL/dz (K floats) when dz is
 * not NULL. The batch losses of training (mean CE, MSE on probabilities,
 * their Hessian-vector products) are in loss.h. Ties in an argmax go to the
 * lowest index, as PyTorch's max.
 */
#ifndef DD_LIB_LOSS_ROW_H
#define DD_LIB_LOSS_ROW_H

#include <math.h>

/* log sum_j exp(z_j), max-shifted. */
static inline double dd__logsumexp(const float *z, int K) {
    double mx = z[0];
    for (int j = 1; j < K; j++)
        if (z[j] > mx) mx = z[j];
    double s = 0.0;
    for (int j = 0; j < K; j++) s += exp((double)z[j] - mx);
    return mx + log(s);
}

/* Argmax of z (K), ties to the lowest index (PyTorch's max). */
static inline int dd__argmax(const float *z, int K) {
    int best = 0;
    for (int j = 1; j < K; j++)
        if (z[j] > z[best]) best = j;
    return best;
}

/* Largest logit other than class y. */
static inline int dd__argmax_except(const float *z, int K, int y) {
    int best = -1;
    for (int j = 0; j < K; j++)
        if (j != y && (best < 0 || z[j] > z[best])) best = j;
    return best;
}

/* Index of the r-th largest entry of z (r = 1: the argmax; ties: the lower
 * index ranks higher). APGD-T and FAB-T take targets this way. */
static inline int dd__rank_index(const float *z, int K, int r) {
    for (int j = 0; j < K; j++) {
        int above = 0;
        for (int q = 0; q < K; q++) above += z[q] > z[j] || (z[q] == z[j] && q < j);
        if (above == r - 1) return j;
    }
    return 0;
}

/* Cross-entropy CE(z, y) = logsumexp(z) - z_y and, if dz != NULL,
 * dz = softmax(z) - onehot(y). Double accumulation, max-shifted. */
static inline double dd__ce_loss(const float *z, int K, int y, float *dz) {
    double mx = z[0];
    for (int j = 1; j < K; j++)
        if (z[j] > mx) mx = z[j];
    double s = 0.0;
    for (int j = 0; j < K; j++) s += exp((double)z[j] - mx);
    double lse = mx + log(s);
    if (dz)
        for (int j = 0; j < K; j++) dz[j] = (float)(exp((double)z[j] - lse) - (j == y ? 1.0 : 0.0));
    return lse - (double)z[y];
}

/* Indices of the 4 largest logits in decreasing order (ties: lower index
 * first); K >= 1, unused entries -1. */
static inline void dd__top4(const float *z, int K, int top[4]) {
    for (int r = 0; r < 4; r++) top[r] = -1;
    for (int j = 0; j < K; j++) {
        int pos = 4;
        while (pos > 0 && (top[pos - 1] < 0 || z[j] > z[top[pos - 1]])) pos--;
        if (pos >= 4) continue;
        for (int r = 3; r > pos; r--) top[r] = top[r - 1];
        top[pos] = j;
    }
}

/* DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), K >= 3
 * (official AutoAttack, autopgd_base.py dlr_loss). If dz != NULL it gets
 * the gradient (zeroed first). */
static inline double dd__dlr_loss(const float *z, int K, int y, float *dz) {
    int top[4];
    dd__top4(z, K, top);
    int o = top[0] == y ? top[1] : top[0];
    double num = (double)z[y] - (double)z[o];
    double den = (double)z[top[0]] - (double)z[top[2]] + 1e-12;
    if (dz) {
        for (int j = 0; j < K; j++) dz[j] = 0.0f;
        dz[y] += (float)(-1.0 / den);
        dz[o] += (float)(1.0 / den);
        dz[top[0]] += (float)(num / (den * den));
        dz[top[2]] -= (float)(num / (den * den));
    }
    return -num / den;
}

/* Targeted DLR(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12),
 * K >= 4 (autopgd_base.py dlr_loss_targeted). */
static inline double dd__dlr_target_loss(const float *z, int K, int y, int t, float *dz) {
    int top[4];
    dd__top4(z, K, top);
    double num = (double)z[y] - (double)z[t];
    double den = (double)z[top[0]] - 0.5 * ((double)z[top[2]] + (double)z[top[3]]) + 1e-12;
    if (dz) {
        for (int j = 0; j < K; j++) dz[j] = 0.0f;
        dz[y] += (float)(-1.0 / den);
        dz[t] += (float)(1.0 / den);
        dz[top[0]] += (float)(num / (den * den));
        dz[top[2]] -= (float)(0.5 * num / (den * den));
        dz[top[3]] -= (float)(0.5 * num / (den * den));
    }
    return -num / den;
}

/* Margin z_y - max_{j != y} z_j (CW, Square). */
static inline double dd__margin(const float *z, int K, int y) {
    return (double)z[y] - (double)z[dd__argmax_except(z, K, y)];
}

#endif
