/* lib/nodes/batchnorm_gfa.c -- second-order GFA terms of training-mode batch norm.
 *
 * Per channel, over the M = N*H*W positions j, with batch mean mu, biased
 * variance var, s = 1/sqrt(var + eps), xhat = (x - mu) s, the backward is
 *     dx_j = gamma s (g_j - mean(g) - xhat_j mean(g xhat)),
 * so F = <T, dx(g)> = gamma s M (A - m_g m_T) with
 *     A = mean(T g) - mean(T) mean(g),  m_g = mean(g xhat),  m_T = mean(T xhat).
 * Its derivatives (s and xhat depend on x; derivation in the GFA issue note):
 *     dF/dgamma = s M (A - m_g m_T)
 *     dF/dx_j   = -gamma s^2 [ xhat_j (A - 3 m_g m_T) + (g_j - mean g) m_T
 *                              + (T_j - mean T) m_g ]
 * The second is an affine combination of x, g and T per channel, added into
 * xbar by one kernel. The five sums come from one pass over T, g and x.
 */
#include <math.h>

#include "../graph/graph_internal.h"
#include "batchnorm.h"
#include "kernels.h"

dd_status dd__bn_train_second_order(dd__node *n, dd__bn_plan *p, dd__ctx *ctx, const float *tx,
                                    const float *gy, float *xbar, int xbar_fresh, int *xbar_written) {
    const dd__bn_state *st = n->state;
    const dd__tensor *t = &n->out;
    const float *x = dd__in(n, 0)->data;
    int C = t->c;
    double M = (double)ctx->n * t->h * t->w;
    double *sum = p->work + dd__chan_work_doubles(t, ctx->nthreads);
    dd__chan_sums3(t, ctx->n, tx, gy, x, sum, p->work, ctx->nthreads);
    const double *sT = sum, *sg = sum + C, *sTg = sum + 2 * C, *sgx = sum + 3 * C, *sTx = sum + 4 * C;
    /* Coefficients in the plan's float rows 4..7 (the eval slope row is unused in training). */
    float *ca = p->buf + 4 * C;
    dd__param *gamma = dd__node_param(n, 0);
    float *cb = ca + C, *cc = ca + 2 * C, *cd = ca + 3 * C;
    for (int c = 0; c < C; c++) {
        double mu = p->bmean[c], s = 1.0 / sqrt((double)p->bvar[c] + st->eps);
        double mT = sT[c] / M, mg = sg[c] / M;
        double Av = sTg[c] / M - mT * mg;
        double m_g = s * (sgx[c] / M - mu * mg); /* mean(g xhat) */
        double m_T = s * (sTx[c] / M - mu * mT); /* mean(T xhat) */
        double gam = gamma->data[c];
        gamma->grad[c] += (float)(s * M * (Av - m_g * m_T));
        if (xbar) {
            double K = -gam * s * s;
            double q = Av - 3 * m_g * m_T;
            ca[c] = (float)(K * s * q);
            cb[c] = (float)(K * m_T);
            cc[c] = (float)(K * m_g);
            cd[c] = (float)(K * (-s * mu * q - mg * m_T - mT * m_g));
        }
    }
    if (xbar) {
        dd__chan_lincomb(t, ctx->n, xbar, x, gy, tx, ca, cb, cc, cd, !xbar_fresh, ctx->nthreads);
        *xbar_written = 1;
    }
    return DD_OK;
}
