/* deepdefense/zoo.h -- preset architectures.
 *
 *   "cnn-cw"          Carlini-Wagner CIFAR CNN: conv3x3 64, 64, maxpool2,
 *                     conv3x3 128, 128, maxpool2 (no padding), linear
 *                     3200->256->256->K, ReLU between (for 3x32x32 input).
 *   "resnet20"        He et al. CIFAR ResNet-20 with batch norm and 1x1
 *                     stride-2 conv + BN shortcuts (option B).
 *   "preact-resnet18" pre-activation ResNet-18 (64..512 channels).
 *   "mlp"             flatten, linear 256, ReLU, linear K (for small tests).
 *
 * With normalize = 1 a per-channel normalize node (mean, std: C floats each,
 * copied; NULL = CIFAR-10's statistics for 3 channels, 0.5/0.5 otherwise)
 * comes first, so the model takes [0,1] pixels.
 */
#ifndef DEEPDEFENSE_ZOO_H
#define DEEPDEFENSE_ZOO_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/** CONSTRUCTOR of dd_model: builds preset `arch` for (channels, height,
 *  width) inputs and num_classes outputs, with up to max_batch samples.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (unknown arch, shapes too small),
 *  DD_ERR_OUT_OF_MEMORY, DD_ERR_BACKEND. */
DD_API dd_status dd_zoo_create(dd_model **out, const char *arch, int channels, int height, int width,
                               int num_classes, int normalize, const float *mean, const float *std,
                               int max_batch, const dd_model_options *opts);

#ifdef __cplusplus
}
#endif
#endif
