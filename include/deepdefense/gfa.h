/* deepdefense/gfa.h -- Gradient-Feature Alignment (GFA) regularisation.
 *
 * A hook on tensor t (the image input or any node output) with weight
 * lambda_t >= 0 adds lambda_t * R_t to the training objective:
 *
 *     J   = L + sum_t lambda_t R_t,        L = mean softmax cross-entropy
 *     g_i = B * dL/dY_t[i]   (per-sample gradient),   h_i = Y_t[i] (feature)
 *     c_i = <g_i, h_i> / sqrt((|g_i|^2 + eps)(|h_i|^2 + eps)),   eps = 1e-12
 *     DD_GFA_SIN2    (default): r_i = 1 - c_i^2          (scale- and sign-free)
 *     DD_GFA_TANGENT          : r_i = |g_i - (<g_i,h_i>/(|h_i|^2+eps)) h_i|^2
 *     DD_GFA_COS              : r_i = 1 - c_i   (the plain cosine penalty: sign
 *                               matters, an anti-aligned gradient costs 2)
 *     R_t = mean_i r_i
 *
 * With hooks set, dd_model_backward() computes the exact dJ/dtheta by four
 * passes (forward, backward, a tangent pass in forward order through each
 * node's Jacobian-vector product, and a second backward), about 2.3x the
 * arithmetic of a plain step. dd_step_stats reports L, each R_t, the mean
 * |c_i| per hook (the alignment) and J. The default hooks are the inputs of
 * every conv2d and linear node (the image, or the normalised image, feeding
 * the first convolution included), all with one lambda.
 *
 * Choosing lambda: with SIN2 each hook adds up to lambda to J (r is in
 * [0, 1]), so seven hooks at lambda = 1 outweigh the cross-entropy; see the
 * README for measured values. TANGENT is not scale-free: its useful lambda
 * is much smaller.
 *
 * Memory: hooks add a tangent buffer for every tensor from the first hooked
 * one on, and a second buffer for hooked tensors and batch-norm inputs.
 * Setting hooks on a built model reallocates its activations (the next call
 * must be a forward pass). Hooks are saved in checkpoints.
 */
#ifndef DEEPDEFENSE_GFA_H
#define DEEPDEFENSE_GFA_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dd_gfa_mode {
    DD_GFA_SIN2 = 0,    /**< r = 1 - cos^2 (default) */
    DD_GFA_TANGENT = 1, /**< r = |tangential component of g|^2 */
    DD_GFA_COS = 2      /**< r = 1 - cos (the plain cosine penalty; in [0, 2]) */
} dd_gfa_mode;

/** METHOD of dd_model: hooks tensor `node` (DD_INPUT or a node id) with
 *  weight lambda (finite, >= 0). Hooking a hooked tensor replaces its lambda.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (node out of range, lambda < 0 or
 *  not finite, more than DD_MAX_HOOKS hooks), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_gfa_hook(dd_model *m, dd_node node, float lambda);

/** METHOD: clears the hooks, then hooks the input of every conv2d and linear
 *  node with `lambda` and sets `mode`. Returns as dd_gfa_hook, and
 *  DD_ERR_INVALID_ARGUMENT for an unknown mode. */
DD_API dd_status dd_gfa_hook_defaults(dd_model *m, float lambda, dd_gfa_mode mode);

/** METHOD: sets the mode of all hooks (default DD_GFA_SIN2). */
DD_API dd_status dd_gfa_set_mode(dd_model *m, dd_gfa_mode mode);

/** METHOD: removes every hook; dd_model_backward is then the plain gradient. */
DD_API dd_status dd_gfa_clear(dd_model *m);

/** METHOD: number of hooks; and hook i's tensor and lambda (outputs may be NULL). */
DD_API dd_status dd_gfa_num_hooks(const dd_model *m, int *count);
/** METHOD: hook `index`'s tensor and lambda (either output may be NULL).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (m NULL, index out of range). */
DD_API dd_status dd_gfa_get_hook(const dd_model *m, int index, dd_node *node, float *lambda);
/** METHOD: *mode = the mode of the hooks. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_gfa_get_mode(const dd_model *m, dd_gfa_mode *mode);

#ifdef __cplusplus
}
#endif
#endif
