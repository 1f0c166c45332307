/* lib/attacks/trades.c -- the TRADES training loss (Zhang et al. 2019).
 *
 *     L = CE(f(x), y) + beta * KL(softmax(f(x)) || softmax(f(x')))
 * both terms averaged over the batch, x' from the TRADES_KL attack. The
 * reference trades.py evaluates model(x) twice and model(x') once, all in
 * train mode, and backpropagates through both arguments of the KL. With
 * p = softmax(z), q = softmax(z'), KL_i = sum_j p_j (log p_j - log q_j):
 *     dL/dz' = beta/n (q - p)
 *     dL/dz  = 1/n (p - onehot(y)) + beta/n p (log p - log q - KL_i)
 * The model keeps the activations of one forward pass, so the gradient is
 * accumulated in the same three passes as the reference (and batch-norm
 * running statistics move three times, as there): forward x (z), forward
 * x' and dd_model_backward_logits(dL/dz'), forward x again and the
 * backward of dL/dz. With GFA hooks the last backward is
 * dd_model_backward(labels) (cross-entropy + GFA on the natural batch)
 * followed by dd_model_backward_logits of the KL part, so the hooks
 * regularise the natural cross-entropy term; without hooks it is one
 * dd_model_backward_logits of the whole dL/dz.
 */
#include "attack_internal.h"

#include <deepdefense/gfa.h>

/* zn, za, dz: scratch of n*K floats each; stats full-size (or NULL). */
static dd_status trades_backward(dd_model *m, const float *xn, const float *xa, const int32_t *y, int n,
                                 float beta, dd_step_stats *stats, float *zn, float *za, float *dz) {
    int K = 0;
    DD_FORWARD(dd_model_num_classes(m, &K));
    DD_FORWARD(dd_model_forward(m, xn, n, DD_TRAIN, zn));
    DD_FORWARD(dd_model_forward(m, xa, n, DD_TRAIN, za));
    double ce = 0.0, kl = 0.0;
    int correct = 0;
    const double inv = 1.0 / n;
    /* dL/dz' first; the natural-pass gradient is built after the backward. */
    for (int i = 0; i < n; i++) {
        const float *a = zn + (size_t)i * K, *b = za + (size_t)i * K;
        double la, lb, kli = 0.0;
        la = dd__logsumexp(a, K);
        lb = dd__logsumexp(b, K);
        for (int j = 0; j < K; j++) {
            double lp = (double)a[j] - la, lq = (double)b[j] - lb, p = exp(lp);
            kli += p * (lp - lq);
            dz[(size_t)i * K + j] = (float)(beta * inv * (exp(lq) - p));
        }
        kl += kli;
        ce += la - (double)a[y[i]];
        correct += dd__argmax(a, K) == y[i];
    }
    DD_RETURN_IF(!isfinite(ce) || !isfinite(kl), DD_ERR_NUMERIC, "TRADES: the loss is not finite");
    DD_FORWARD(dd_model_backward_logits(m, dz, NULL));
    DD_FORWARD(dd_model_forward(m, xn, n, DD_TRAIN, zn));
    int hooks = 0;
    DD_FORWARD(dd_gfa_num_hooks(m, &hooks));
    for (int i = 0; i < n; i++) {
        const float *a = zn + (size_t)i * K, *b = za + (size_t)i * K;
        double la, lb, kli = 0.0;
        la = dd__logsumexp(a, K);
        lb = dd__logsumexp(b, K);
        for (int j = 0; j < K; j++) {
            double lp = (double)a[j] - la, lq = (double)b[j] - lb;
            kli += exp(lp) * (lp - lq);
        }
        for (int j = 0; j < K; j++) {
            double lp = (double)a[j] - la, lq = (double)b[j] - lb, p = exp(lp);
            double g = beta * inv * p * (lp - lq - kli);
            if (!hooks) g += inv * (p - (j == y[i] ? 1.0 : 0.0));
            dz[(size_t)i * K + j] = (float)g;
        }
    }
    if (hooks) {
        DD_FORWARD(dd_model_backward(m, y, stats));
        DD_FORWARD(dd_model_backward_logits(m, dz, NULL));
        if (stats) stats->objective += beta * kl * inv;
    } else {
        DD_FORWARD(dd_model_backward_logits(m, dz, stats));
        if (stats) {
            stats->loss = ce * inv;
            stats->objective = ce * inv + beta * kl * inv;
            stats->correct = correct;
            stats->batch = n;
        }
    }
    return DD_OK;
}

static dd_status check_args(dd_model *m, const float *xn, const float *xa, const int32_t *y, int n,
                            float beta, dd_step_stats *stats, const char *fn) {
    DD_RETURN_IF(!m || !xn || !xa || !y, DD_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
    DD_RETURN_IF(!isfinite(beta) || beta < 0.0f, DD_ERR_INVALID_ARGUMENT,
                 "%s: beta = %g must be finite and >= 0", fn, (double)beta);
    DD_FORWARD(dd__stats_check(stats, fn));
    int B = 0, K = 0;
    dd_status s = dd_model_max_batch(m, &B);
    DD_RETURN_IF(s != DD_OK, DD_ERR_STATE, "%s: the model is not built", fn);
    DD_FORWARD(dd_model_num_classes(m, &K));
    DD_RETURN_IF(n < 1 || n > B, DD_ERR_INVALID_ARGUMENT, "%s: n = %d outside [1, max_batch = %d]", fn, n, B);
    for (int i = 0; i < n; i++)
        DD_RETURN_IF(y[i] < 0 || y[i] >= K, DD_ERR_INVALID_ARGUMENT, "%s: labels[%d] = %d outside [0, %d)",
                     fn, i, (int)y[i], K);
    return DD_OK;
}

dd_status dd_model_backward_trades(dd_model *m, const float *x_nat, const float *x_adv, const int32_t *labels,
                                   int n, float beta, dd_step_stats *stats) {
    DD_FORWARD(check_args(m, x_nat, x_adv, labels, n, beta, stats, "dd_model_backward_trades"));
    int K = 0;
    DD_FORWARD(dd_model_num_classes(m, &K));
    float *buf = dd__malloc(3 * (size_t)n * K * sizeof(float));
    DD_RETURN_IF(!buf, DD_ERR_OUT_OF_MEMORY, "dd_model_backward_trades: out of memory");
    dd_step_stats full;
    dd_step_stats_init(&full);
    dd_status s = trades_backward(m, x_nat, x_adv, labels, n, beta, &full, buf, buf + (size_t)n * K,
                                  buf + 2 * (size_t)n * K);
    dd__free(buf);
    if (s == DD_OK) dd__stats_out(stats, &full);
    return s;
}

dd_status dd_attack_trades_step(dd_attack *a, dd_optimizer *opt, const float *x, const int32_t *labels, int n,
                                float beta, float *x_adv_out, dd_step_stats *stats) {
    DD_RETURN_IF(!a || !opt, DD_ERR_INVALID_ARGUMENT, "dd_attack_trades_step: attack or optimizer is NULL");
    DD_FORWARD(check_args(a->m, x, a->out, labels, n, beta, stats, "dd_attack_trades_step"));
    DD_FORWARD(dd_attack_run(a, x, labels, n, a->out, NULL));
    if (x_adv_out) memcpy(x_adv_out, a->out, (size_t)n * a->d * sizeof(float));
    DD_FORWARD(dd_model_zero_grad(a->m));
    /* The handle's logit buffers hold max_batch rows: no allocation here. */
    dd_step_stats full;
    dd_step_stats_init(&full);
    DD_FORWARD(
        trades_backward(a->m, x, a->out, labels, n, beta, &full, a->clean_logits, a->logits, a->dlogits));
    DD_FORWARD(dd_optimizer_step(opt));
    dd__stats_out(stats, &full);
    return DD_OK;
}
