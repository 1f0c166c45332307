/* lib/nodes/input.c -- the image input (node 0).
 *
 * The input tensor is (N, C, H, W) plain NCHW: dd_model_forward copies the
 * host's images into it. It has no forward or backward of its own; its
 * gradient is what dd_model_input_grad returns and its GFA hook is the
 * "image" hook of the default set.
 */
#include "../graph/graph.h"

const dd__node_ops dd__input_ops = {
    .type = DD_NODE_INPUT,
    .name = "input",
};
