/* deepdefense/gfa.h -- Gradient-Feature Alignment (GFA) regularisation.
 *
 * A hook on tensor t (the image input or any node output) with weight
 * lambda_t >= 0 adds lambda_t * R_t to the training objective:
 *
 *     J   = L + sum_t lambda_t R_t,        L = the training loss (dd_model_set_loss:
 *                                             cross-entropy by default, or MSE)
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
 * the first convolution included), all with one lambda; dd_gfa_hook_preset
 * and dd_gfa_hook_spec choose others (the paper's FIRST and DEEP: docs/GFA.md).
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
 *  not finite, more than DD_MAX_HOOKS hooks; hooks live in the model, no
 *  allocation). */
DD_API dd_status dd_gfa_hook(dd_model *m, dd_node node, float lambda);

/** METHOD: clears the hooks, then hooks the input of every conv2d and linear
 *  node with `lambda` and sets `mode`. Returns as dd_gfa_hook, and
 *  DD_ERR_INVALID_ARGUMENT for an unknown mode. */
DD_API dd_status dd_gfa_hook_defaults(dd_model *m, float lambda, dd_gfa_mode mode);

/** Hook presets (the paper's variants and one wider set):
 *    DD_GFA_PRESET_FIRST: the input of the first conv2d or linear node in
 *      node order: the image as the first layer sees it (after a normalize
 *      node, if the model has one: in [-1, 1] for a 0.5/0.5 normalize);
 *    DD_GFA_PRESET_DEEP: the input of every conv2d and linear node (the
 *      default set of dd_gfa_hook_defaults);
 *    DD_GFA_PRESET_ALL: every tensor from the image (DD_INPUT) to the one
 *      before the logits, i.e. every node output but the logits'. */
typedef enum dd_gfa_preset {
    DD_GFA_PRESET_FIRST = 0,
    DD_GFA_PRESET_DEEP = 1,
    DD_GFA_PRESET_ALL = 2
} dd_gfa_preset;

/** METHOD: replaces the hooks by `preset`, each with weight lambda (finite,
 *  >= 0); the mode is kept. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (unknown
 *  preset, bad lambda, a preset of more than DD_MAX_HOOKS tensors, a model
 *  without conv2d/linear nodes); on failure the hooks are as they were. */
DD_API dd_status dd_gfa_hook_preset(dd_model *m, dd_gfa_preset preset, float lambda);

/** METHOD: replaces the hooks by those of the text `spec`: comma-separated
 *  items ITEM[:LAMBDA], where ITEM is a preset name ("first", "deep", "all")
 *  or the name of a single-input node, which hooks that node's input (what
 *  the layer sees, as the paper hooks a layer); LAMBDA (a finite decimal
 *  >= 0) defaults to `lambda`. Later items replace the lambda of a tensor
 *  hooked before. Examples: "first", "deep:0.02", "conv1:0.1,fc1:0.05",
 *  "deep:0.01,conv1:0.1". The mode is kept. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (spec NULL or empty, an unknown name, a node
 *  with two inputs, a malformed lambda, more than DD_MAX_HOOKS hooks; the
 *  message names the item); on failure the hooks are as they were. */
DD_API dd_status dd_gfa_hook_spec(dd_model *m, const char *spec, float lambda);

/** METHOD: sets the mode of all hooks (default DD_GFA_SIN2). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (m NULL, unknown mode). */
DD_API dd_status dd_gfa_set_mode(dd_model *m, dd_gfa_mode mode);

/** METHOD: removes every hook; dd_model_backward is then the plain gradient.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (m NULL). */
DD_API dd_status dd_gfa_clear(dd_model *m);

/** METHOD: *count = the number of hooks. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
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
