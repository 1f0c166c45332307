/* lib/loss/loss.h -- losses at the logits (internal). */
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

/* Softmax only: probs (n, k) from logits (n, k). */
DD_INTERNAL void dd__softmax(const float *logits, int n, int k, float *probs);

#endif
