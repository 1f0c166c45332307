/* lib/loss/loss.h -- training losses at the logits (internal).
 *
 * Every loss here is a mean over the batch of a per-sample function of the
 * logits z (n, K) f32 row-major and the labels (n) in [0, K) (checked by the
 * caller). Each loss gives its value, its gradient dL/dz and, for GFA's
 * second backward (lib/gfa/gfa.c), the product of its Hessian d2L/dz2 with a
 * tangent T_z (the "Zbar" seed of GFA.md's pass 4). With p = softmax(z) and
 * S = diag(p) - p p^T (the softmax Jacobian, symmetric):
 *   CE : L = mean_i -log p_i[y_i]          dL/dz_i = (p_i - e_y) / n
 *                                           H_i t   = S_i t / n
 *   MSE: L = (1 / (n K)) sum_i |p_i - e_y|^2 (on probabilities, one-hot target)
 *        u_i = p_i - e_y                   dL/dz_i = (2 / (n K)) S_i u_i
 *        dp  = S_i t                        H_i t   = (2 / (n K)) (dS[t] u_i + S_i dp)
 *        with dS[t] u = dp * u - dp <p, u> - p <dp, u> (the derivative of S u
 *        along t at fixed u), so H_i t = (2/(nK)) (dp*u + p*dp - dp <p,u>
 *        - p (<dp,u> + <p,dp>)).
 * The MSE Hessian is not positive semidefinite (MSE on probabilities is not
 * convex in z); GFA needs only its product, exact either way.
 */
#ifndef DD_LIB_LOSS_H
#define DD_LIB_LOSS_H

#include "../core/core.h"

/* Softmax cross-entropy, numerically stable (log-sum-exp with the row max).
 * logits: (n, k) f32 row-major; labels: (n) in [0, k) (checked by caller).
 * Writes probs (n, k) = softmax(logits); if dlogits != NULL writes
 * dL/dlogits = (probs - onehot) / n for L = mean CE. Returns the mean CE in
 * *loss (double) and the argmax hits in *correct (either may be NULL). */
DD_INTERNAL void dd__xent(const float *logits, const int32_t *labels, int n, int k, float *probs,
                          float *dlogits, double *loss, int *correct);

/* Mean squared error of the softmax probabilities against one-hot labels,
 * averaged over n * k entries; arguments and outputs as dd__xent. */
DD_INTERNAL void dd__mse(const float *logits, const int32_t *labels, int n, int k, float *probs,
                         float *dlogits, double *loss, int *correct);

/* t (n, k), in place: t_i <- H_i t_i, the Hessian of the mean loss `kind`
 * (DD_LOSS_CE or DD_LOSS_MSE of model.h) at the logits whose softmax is
 * probs (n, k), labels as above (MSE only). */
DD_INTERNAL void dd__loss_hvp(int kind, const float *probs, const int32_t *labels, int n, int k, float *t);

/* Softmax only: probs (n, k) from logits (n, k). */
DD_INTERNAL void dd__softmax(const float *logits, int n, int k, float *probs);

#endif
