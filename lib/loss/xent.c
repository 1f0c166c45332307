/* lib/loss/xent.c -- softmax cross-entropy at the logits.
 *
 * Logits are tiny (n x K, K = 10 typically), so a plain loop beats any
 * primitive. Each row: m = max z, s = sum exp(z - m), p = exp(z - m) / s,
 * CE = log s + m - z_y, accumulated in double. The gradient of the batch
 * mean is (p - onehot) / n. Ties in the argmax count the first maximum.
 */
#include "loss.h"

#include <math.h>

void dd__softmax(const float *logits, int n, int k, float *probs) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        float mx = z[0];
        for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0;
        for (int j = 0; j < k; j++) s += exp((double)z[j] - mx);
        for (int j = 0; j < k; j++) p[j] = (float)(exp((double)z[j] - mx) / s);
    }
}

void dd__xent(const float *logits, const int32_t *labels, int n, int k, float *probs, float *dlogits,
              double *loss, int *correct) {
    double total = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        int arg = 0;
        float mx = z[0];
        for (int j = 1; j < k; j++)
            if (z[j] > mx) {
                mx = z[j];
                arg = j;
            }
        double s = 0;
        for (int j = 0; j < k; j++) s += exp((double)z[j] - mx);
        for (int j = 0; j < k; j++) p[j] = (float)(exp((double)z[j] - mx) / s);
        total += log(s) + (double)mx - (double)z[labels[i]];
        hits += arg == labels[i];
        if (dlogits) {
            float *d = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++) d[j] = (p[j] - (j == labels[i] ? 1.0f : 0.0f)) / (float)n;
        }
    }
    if (loss) *loss = total / n;
    if (correct) *correct = hits;
}
