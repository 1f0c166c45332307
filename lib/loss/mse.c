/* lib/loss/mse.c -- mean squared error on softmax probabilities, and the
 * Hessian-vector products of both training losses (GFA's pass-4 seed).
 *
 * The formulas are derived in loss.h. Rows are tiny (K = 10 typically), so
 * plain loops in double per row; the results are rounded to float once.
 */
#include <math.h>

#include <deepdefense/model.h>

#include "loss.h"
#include "row.h"

void dd__mse(const float *logits, const int32_t *labels, int n, int k, float *probs, float *dlogits,
             double *loss, int *correct) {
    dd__softmax(logits, n, k, probs);
    double total = 0, scale = 2.0 / ((double)n * k);
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        const float *p = probs + (size_t)i * k;
        double pu = 0;
        for (int j = 0; j < k; j++) {
            double u = (double)p[j] - (j == labels[i]);
            total += u * u;
            pu += (double)p[j] * u;
        }
        hits += dd__argmax(z, k) == labels[i];
        if (dlogits) {
            float *d = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++) {
                double u = (double)p[j] - (j == labels[i]);
                d[j] = (float)(scale * p[j] * (u - pu)); /* (S u)_j = p_j (u_j - <p, u>) */
            }
        }
    }
    if (loss) *loss = total / ((double)n * k);
    if (correct) *correct = hits;
}

void dd__loss_hvp(int kind, const float *probs, const int32_t *labels, int n, int k, float *t) {
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float *ti = t + (size_t)i * k;
        double pt = 0;
        for (int j = 0; j < k; j++) pt += (double)p[j] * ti[j];
        if (kind != DD_LOSS_MSE) {
            for (int j = 0; j < k; j++) ti[j] = (float)((double)p[j] * (ti[j] - pt) / n);
            continue;
        }
        /* dp = S t; H t = (2/(nK)) (dp*u + p*dp - dp <p,u> - p (<dp,u> + <p,dp>)) */
        /* dp_j = p_j (t_j - <p, t>) needs only t_j: recomputed in the second
         * loop, which overwrites t_j last */
        double pu = 0, dpu = 0, pdp = 0;
        for (int j = 0; j < k; j++) {
            double u = (double)p[j] - (j == labels[i]);
            double dp = (double)p[j] * (ti[j] - pt);
            pu += (double)p[j] * u;
            dpu += dp * u;
            pdp += (double)p[j] * dp;
        }
        double scale = 2.0 / ((double)n * k);
        for (int j = 0; j < k; j++) {
            double u = (double)p[j] - (j == labels[i]);
            double dp = (double)p[j] * (ti[j] - pt);
            ti[j] = (float)(scale * (dp * u + p[j] * dp - dp * pu - p[j] * (dpu + pdp)));
        }
    }
}
