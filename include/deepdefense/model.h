/* deepdefense/model.h -- the model graph: building, the passes, parameters.
 *
 * A model is a directed acyclic graph of nodes built one node at a time.
 * Node 0 (DD_INPUT) is the image input, shape (N, C, H, W). Every
 * dd_model_add_* call appends a node that consumes nodes that already exist,
 * so creation order is a topological order. dd_model_build() fixes the
 * graph, allocates every buffer once for up to max_batch samples and
 * initialises parameters (He/Kaiming, from the model's seed).
 *
 * Images at the API boundary are float32, NCHW, normally in [0, 1] pixel
 * space (put a normalize node first to standardise them). Labels are int32
 * in [0, K). Internally activations use oneDNN's blocked nChw16c layout.
 *
 * A training step, as the host writes it:
 *
 *     dd_model_zero_grad(m);
 *     dd_model_forward(m, x, n, DD_TRAIN, NULL);
 *     dd_model_backward(m, labels, &stats);
 *     dd_optimizer_step(opt);
 *
 * Threads: one dd_model may be used by one thread at a time (it may migrate
 * between threads); different models may be used concurrently. The thread
 * count is fixed per model (dd_model_options.num_threads); the library never
 * changes the host's OpenMP settings.
 */
#ifndef DEEPDEFENSE_MODEL_H
#define DEEPDEFENSE_MODEL_H

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque model handle. */
typedef struct dd_model dd_model;

/** Node identifier: index into the model's node array. */
typedef int32_t dd_node;

/** The image input node of every model. */
#define DD_INPUT ((dd_node)0)

/** Most GFA hooks a model can carry (see gfa.h). */
#define DD_MAX_HOOKS 64

/** Pass mode: DD_EVAL uses batch-norm running statistics and leaves them
 *  unchanged; DD_TRAIN uses batch statistics and updates the running ones. */
typedef enum dd_mode { DD_EVAL = 0, DD_TRAIN = 1 } dd_mode;

/** Convolution algorithm choice (dd_model_options.conv_algo). */
typedef enum dd_conv_algo {
    DD_CONV_AUTO = 0,    /**< Winograd for 3x3 stride-1 layers with >= 32 input channels, direct otherwise */
    DD_CONV_DIRECT = 1,  /**< always direct convolution */
    DD_CONV_WINOGRAD = 2 /**< Winograd wherever oneDNN implements it, direct elsewhere */
} dd_conv_algo;

/** Node types, as reported by dd_model_node_info(). Append-only. */
typedef enum dd_node_type {
    DD_NODE_INPUT = 0,
    DD_NODE_NORMALIZE = 1,
    DD_NODE_CONV2D = 2,
    DD_NODE_LINEAR = 3,
    DD_NODE_RELU = 4,
    DD_NODE_MAXPOOL = 5,
    DD_NODE_AVGPOOL = 6,
    DD_NODE_GLOBAL_AVGPOOL = 7,
    DD_NODE_BATCHNORM = 8,
    DD_NODE_ADD = 9,
    DD_NODE_FLATTEN = 10
} dd_node_type;

/** Model options. Fill with dd_model_options_init(), then change fields. */
typedef struct dd_model_options {
    size_t struct_size;     /**< set by dd_model_options_init() (see status.h) */
    int num_threads;        /**< OpenMP threads for this model; 0 = omp_get_max_threads() at creation */
    uint64_t seed;          /**< seed of parameter initialisation (default 1) */
    dd_conv_algo conv_algo; /**< default DD_CONV_AUTO */
    /** 1 (default): run chains of layers as one oneDNN primitive where
     *  possible -- in eval passes conv/linear + batch norm (folded into the
     *  weights) + residual add + ReLU, in both modes conv/linear + ReLU,
     *  batch norm + ReLU and add + ReLU. Results agree with the unfused
     *  passes to float rounding. 0: every node runs on its own. */
    int fuse_layers;
} dd_model_options;
/** The first released layout ends at conv_algo (fuse_layers appended). */
#define DD_MODEL_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_model_options, conv_algo)

/** Fills the first `size` bytes of *opts with the defaults and sets
 *  struct_size = size (zero past the library's layout). NULL or size <
 *  sizeof(size_t) is a no-op. Thread-safe. For bindings that cannot use
 *  the inline dd_model_options_init(). */
DD_API void dd_model_options_init_sized(dd_model_options *opts, size_t size);
/** Fills *opts with defaults. NULL is a no-op. Thread-safe. */
static inline void dd_model_options_init(dd_model_options *opts) {
    dd_model_options_init_sized(opts, sizeof *opts);
}

/** CONSTRUCTOR of dd_model. Creates an empty model whose input is
 *  (N, channels, height, width) images and whose logits have num_classes
 *  entries. opts may be NULL (defaults); it is copied.
 *  On failure *out is NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (out NULL,
 *  a size < 1 or absurdly large, opts not filled by dd_model_options_init
 *  or out of range), DD_ERR_OUT_OF_MEMORY, DD_ERR_BACKEND (oneDNN's CPU
 *  engine could not be created). Thread-safe. */
DD_API dd_status dd_model_create(dd_model **out, int channels, int height, int width, int num_classes,
                                 const dd_model_options *opts);

/** DESTRUCTOR of dd_model. NULL is a no-op. Optimizers and attacks bound to
 *  the model must be destroyed first. */
DD_API void dd_model_destroy(dd_model *m);

/* ---- building the graph -------------------------------------------------
 * Each add function appends one node consuming existing nodes and writes its
 * id to *out. Names (optional, copied, at most 63 bytes, unique in the
 * model; longer or repeated names give DD_ERR_INVALID_ARGUMENT) label the
 * node's parameters in checkpoints ("<name>.weight"); NULL or "" gives
 * "<type><id>". Options structs are required (NULL is refused): fill them
 * with their _init function.
 * Adding is only allowed before dd_model_build() (else DD_ERR_STATE).
 * Shape mismatches give DD_ERR_INVALID_ARGUMENT with a message. */

/** 2-D convolution options; fill with dd_conv2d_options_init(). */
typedef struct dd_conv2d_options {
    size_t struct_size;     /**< set by the init function (the size of the caller's struct) */
    int out_channels;       /**< required, >= 1 */
    int kernel_h, kernel_w; /**< default 3x3 */
    int stride_h, stride_w; /**< default 1 */
    int pad_h, pad_w;       /**< zero padding each side, default 0 */
    int bias;               /**< 1 = learnable bias (default), 0 = none */
    const char *name;       /**< optional, copied */
} dd_conv2d_options;
/** The first released layout: every field above. */
#define DD_CONV2D_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_conv2d_options, name)
/** dd_conv2d_options_init() for `size` bytes (see dd_model_options_init_sized()). */
DD_API void dd_conv2d_options_init_sized(dd_conv2d_options *opts, size_t size);
/** Fills *opts with the defaults above (out_channels 0: set it). NULL is a
 *  no-op. Thread-safe. */
static inline void dd_conv2d_options_init(dd_conv2d_options *opts) {
    dd_conv2d_options_init_sized(opts, sizeof *opts);
}

/** Pooling options (max and average); fill with dd_pool_options_init(). */
typedef struct dd_pool_options {
    size_t struct_size;     /**< set by the init function (the size of the caller's struct) */
    int kernel_h, kernel_w; /**< default 2x2 */
    int stride_h, stride_w; /**< default 2 */
    int pad_h, pad_w;       /**< default 0; average pooling counts padding (PyTorch's default) */
    const char *name;       /**< optional node name, copied (NULL: "<type><id>") */
} dd_pool_options;
/** The first released layout: every field above. */
#define DD_POOL_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_pool_options, name)
/** dd_pool_options_init() for `size` bytes (see dd_model_options_init_sized()). */
DD_API void dd_pool_options_init_sized(dd_pool_options *opts, size_t size);
/** Fills *opts with the defaults above. NULL is a no-op. Thread-safe. */
static inline void dd_pool_options_init(dd_pool_options *opts) {
    dd_pool_options_init_sized(opts, sizeof *opts);
}

/** Batch-norm options; fill with dd_batchnorm_options_init(). */
typedef struct dd_batchnorm_options {
    size_t struct_size; /**< set by the init function (the size of the caller's struct) */
    float eps;          /**< default 1e-5 */
    float momentum;     /**< running = (1-momentum)*running + momentum*batch; default 0.1 */
    const char *name;   /**< optional node name, copied (NULL: "<type><id>") */
} dd_batchnorm_options;
/** The first released layout: every field above. */
#define DD_BATCHNORM_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_batchnorm_options, name)
/** dd_batchnorm_options_init() for `size` bytes (see dd_model_options_init_sized()). */
DD_API void dd_batchnorm_options_init_sized(dd_batchnorm_options *opts, size_t size);
/** Fills *opts with the defaults above. NULL is a no-op. Thread-safe. */
static inline void dd_batchnorm_options_init(dd_batchnorm_options *opts) {
    dd_batchnorm_options_init_sized(opts, sizeof *opts);
}

/** Per-channel (x - mean[c]) / std[c]. mean and std have C entries (copied);
 *  std[c] > 0. Works on any tensor of the input's channel count.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_normalize(dd_model *m, dd_node input, const float *mean, const float *std,
                                        int count, const char *name, dd_node *out);
/** Convolution of a 4-D tensor. Weight (OC, IC, KH, KW), bias (OC).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_conv2d(dd_model *m, dd_node input, const dd_conv2d_options *opts, dd_node *out);
/** Fully connected layer on a 2-D tensor (N, IN): weight (OUT, IN), bias (OUT).
 *  bias: 1 = with bias, 0 = without.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_linear(dd_model *m, dd_node input, int out_features, int bias, const char *name,
                                     dd_node *out);
/** Element-wise max(x, 0), any shape (the output has the input's shape).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_relu(dd_model *m, dd_node input, const char *name, dd_node *out);
/** Max pooling of a 4-D tensor; opts (required, from dd_pool_options_init())
 *  gives window, stride and padding; padding positions never win the maximum.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_maxpool(dd_model *m, dd_node input, const dd_pool_options *opts, dd_node *out);
/** Average pooling of a 4-D tensor (opts as for max pooling; padding is
 *  counted in the divisor, as PyTorch's default).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_avgpool(dd_model *m, dd_node input, const dd_pool_options *opts, dd_node *out);
/** Mean over H and W: (N, C, H, W) -> (N, C).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_global_avgpool(dd_model *m, dd_node input, const char *name, dd_node *out);
/** Batch normalisation over N, H, W per channel: gamma/beta learnable,
 *  running mean/var (unbiased, as PyTorch) kept as buffers.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_batchnorm(dd_model *m, dd_node input, const dd_batchnorm_options *opts,
                                        dd_node *out);
/** Element-wise a + b; both of the same shape (the residual connection).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_add(dd_model *m, dd_node a, dd_node b, const char *name, dd_node *out);
/** (N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's flatten).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, an input that does not
 *  exist or has the wrong shape, bad options or name), DD_ERR_STATE (the
 *  model is built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_add_flatten(dd_model *m, dd_node input, const char *name, dd_node *out);

/** Fixes the graph with `logits` as output (must be 2-D with num_classes
 *  features), allocates all buffers for batches of up to max_batch samples
 *  and initialises the parameters from the seed. After it, the add
 *  functions give DD_ERR_STATE. Primitives are created at the first pass
 *  that needs them, not here. Returns DD_OK, DD_ERR_INVALID_ARGUMENT,
 *  DD_ERR_STATE (already built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_build(dd_model *m, dd_node logits, int max_batch);

/* ---- passes ------------------------------------------------------------ */

/** Forward pass on n images x: (n, C, H, W) f32 NCHW, borrowed. n in
 *  [1, max_batch]. logits (optional, may be NULL): (n, K) f32 written on
 *  success. The activations stay inside the model for backward /
 *  input_grad. DD_TRAIN updates batch-norm running statistics.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (not built),
 *  DD_ERR_NUMERIC (x holds NaN/Inf; nothing changed), DD_ERR_BACKEND,
 *  DD_ERR_OUT_OF_MEMORY (first use of a batch size creates primitives). */
DD_API dd_status dd_model_forward(dd_model *m, const float *x, int n, dd_mode mode, float *logits);

/** Inference: the eval-mode logits of n images x: (n, C, H, W) f32 NCHW,
 *  borrowed; logits: (n, K) f32, written (on failure their content is
 *  unspecified). n in [1, max_batch]. Unlike dd_model_forward it keeps no
 *  state for dd_model_backward / dd_model_input_grad (those return
 *  DD_ERR_STATE until the next dd_model_forward), which lets it split the
 *  batch instead of every layer: with num_threads T > 1 and n >= 16 each
 *  thread runs chunks of 8 images through its own single-thread copy of
 *  the model, with no barrier between layers (batch 128 on the 2-core
 *  machine: 5% (resnet20) to 12% (cnn-cw) faster than dd_model_forward).
 *  The T copies are made on first use (each with the activation memory of
 *  an 8-image batch) and take the model's parameters and batch-norm
 *  statistics whenever they have changed.
 *  Results agree with dd_model_forward in DD_EVAL to float rounding and
 *  do not depend on the thread that ran a chunk.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (not built),
 *  DD_ERR_NUMERIC (x holds NaN/Inf), DD_ERR_BACKEND, DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_predict(dd_model *m, const float *x, int n, float *logits);

/** What a backward pass reports. Fill struct_size with
 *  dd_step_stats_init(); every other field is written. */
typedef struct dd_step_stats {
    size_t struct_size;               /**< set by dd_step_stats_init() */
    double loss;                      /**< L: the training loss (dd_model_set_loss) over the batch */
    double objective;                 /**< J = L + sum_t lambda_t R_t (= loss without hooks) */
    int correct;                      /**< samples whose argmax logit equals the label */
    int batch;                        /**< n of the forward pass */
    int num_hooks;                    /**< GFA hooks active (see gfa.h) */
    dd_node hook_node[DD_MAX_HOOKS];  /**< the hooked tensor of hook t */
    double hook_lambda[DD_MAX_HOOKS]; /**< lambda_t */
    double hook_reg[DD_MAX_HOOKS];    /**< R_t = mean_i r_i */
    double hook_align[DD_MAX_HOOKS];  /**< mean_i |cos(g_i, h_i)| */
} dd_step_stats;
/** The first released layout: every field above. */
#define DD_STEP_STATS_SIZE_V1 DD_SIZE_THROUGH(dd_step_stats, hook_align)
/** dd_step_stats_init() for `size` bytes (see dd_model_options_init_sized()). */
DD_API void dd_step_stats_init_sized(dd_step_stats *stats, size_t size);
/** Sets stats->struct_size and zeroes the other fields (the passes write
 *  them, up to struct_size). NULL is a no-op. Thread-safe. */
static inline void dd_step_stats_init(dd_step_stats *stats) {
    dd_step_stats_init_sized(stats, sizeof *stats);
}

/** The training loss L of dd_model_backward, over a batch of n samples with
 *  softmax probabilities p_i = softmax(z_i) and one-hot labels e_{y_i}:
 *    DD_LOSS_CE  (default): L = mean_i -log p_i[y_i]
 *    DD_LOSS_MSE          : L = (1 / (n K)) sum_i |p_i - e_{y_i}|^2, the mean
 *                           squared error of the probabilities (not of the
 *                           logits) over all n * K entries.
 *  GFA's g (gfa.h) is the gradient of this L. The attacks (attack.h) keep
 *  their own losses (cross-entropy unless an attack says otherwise),
 *  including the inner maximisation of dd_attack_train_step: only the
 *  outer, training step uses L. */
typedef enum dd_loss_kind {
    DD_LOSS_CE = 0, /**< mean softmax cross-entropy */
    DD_LOSS_MSE = 1 /**< mean squared error of softmax probabilities vs one-hot */
} dd_loss_kind;

/** METHOD: sets the training loss (saved in checkpoints). Takes effect at
 *  the next dd_model_backward. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (m
 *  NULL, unknown kind). */
DD_API dd_status dd_model_set_loss(dd_model *m, dd_loss_kind loss);
/** METHOD: *loss = the training loss. Returns DD_OK, DD_ERR_INVALID_ARGUMENT
 *  (NULL). */
DD_API dd_status dd_model_get_loss(const dd_model *m, dd_loss_kind *loss);

/** Backward pass of the training loss (dd_model_set_loss; by default the
 *  mean softmax cross-entropy) of the last forward pass against labels:
 *  (n) int32 in [0, K), borrowed. Accumulates dJ/dtheta
 *  into the parameter gradients (+= ; see dd_model_zero_grad). With GFA
 *  hooks (gfa.h) this is the exact gradient of J = L + sum lambda_t R_t.
 *  stats may be NULL. The last forward must have been a DD_TRAIN or DD_EVAL
 *  pass of this model. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (labels NULL
 *  or out of range: nothing accumulated), DD_ERR_STATE (no forward pass),
 *  DD_ERR_NUMERIC (non-finite loss or gradient: the accumulated gradients
 *  are left as they were), DD_ERR_BACKEND, DD_ERR_OUT_OF_MEMORY (a
 *  primitive or its scratch could not be allocated), DD_ERR_UNSUPPORTED (a
 *  GFA hook behind a node that has no tangent pass). On failure *stats is
 *  unchanged. */
DD_API dd_status dd_model_backward(dd_model *m, const int32_t *labels, dd_step_stats *stats);

/** Backward pass from a host-given loss gradient at the logits: dlogits
 *  (n, K) f32 = dL/dlogits of the last forward pass (borrowed). Accumulates
 *  dL/dtheta into the parameter gradients like dd_model_backward, for losses
 *  the library does not define (TRADES' KL term, custom objectives). GFA
 *  hooks are ignored here (they regularise the training loss of
 *  dd_model_backward only). stats may be NULL; its loss fields are zero.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (no forward pass),
 *  DD_ERR_NUMERIC (dlogits or the result not finite: gradients unchanged),
 *  DD_ERR_BACKEND, DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_backward_logits(dd_model *m, const float *dlogits, dd_step_stats *stats);

/** Sets every parameter gradient to zero. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (m NULL), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_zero_grad(dd_model *m);

/** Vector-Jacobian product for attacks: given dlogits (n, K) f32 from the
 *  host, writes dx = (d logits / d x)^T dlogits, (n, C, H, W) f32 NCHW,
 *  for the last forward pass (normally DD_EVAL). Parameter gradients are
 *  not touched. Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (not
 *  built, no forward pass), DD_ERR_NUMERIC (dlogits or dx not finite),
 *  DD_ERR_BACKEND, DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_input_grad(dd_model *m, const float *dlogits, float *dx);

/** Copies the logits of the last forward pass: out has room for count
 *  floats, count >= n*K. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL,
 *  count too small), DD_ERR_STATE (no forward pass yet). */
DD_API dd_status dd_model_get_logits(const dd_model *m, float *out, size_t count);

/* ---- introspection and parameters ---------------------------------------- */

/** Description of a node (strings borrowed, valid until the model is destroyed). */
typedef struct dd_node_info {
    size_t struct_size;          /**< the caller's sizeof, set by dd_model_node_info() */
    dd_node_type type;           /**< the node's type */
    const char *name;            /**< its name (borrowed) */
    int num_inputs;              /**< 0 (the input node), 1, or 2 (add) */
    dd_node inputs[2];           /**< the nodes it consumes */
    int ndims;                   /**< 2: (N, C) or 4: (N, C, H, W) */
    int channels, height, width; /**< per-sample output shape (H = W = 1 when ndims == 2) */
    /* Configuration (appended fields; 0 / NULL where a node type has none). */
    int kernel_h, kernel_w;  /**< conv2d, maxpool, avgpool */
    int stride_h, stride_w;  /**< conv2d, maxpool, avgpool */
    int pad_h, pad_w;        /**< conv2d, maxpool, avgpool: zero padding each side */
    float eps, momentum;     /**< batchnorm */
    const float *mean, *std; /**< normalize: `channels` entries each (borrowed as the strings) */
} dd_node_info;
/** The first released layout ends at width (the configuration appended). */
#define DD_NODE_INFO_SIZE_V1 DD_SIZE_THROUGH(dd_node_info, width)

/** Description of a parameter or buffer (strings borrowed as above). */
typedef struct dd_param_info {
    size_t struct_size; /**< the caller's sizeof, set by dd_model_param_info() */
    const char *name;   /**< e.g. "conv1.weight", "bn1.running_mean" */
    dd_node node;       /**< the node that owns it */
    int ndims;          /**< entries of dims in use (1 to 4) */
    int64_t dims[4];    /**< PyTorch shape, e.g. (OC, IC, KH, KW) */
    size_t count;       /**< number of floats */
    int trainable;      /**< 0 for batch-norm running statistics */
} dd_param_info;
/** The first released layout: every field above. */
#define DD_PARAM_INFO_SIZE_V1 DD_SIZE_THROUGH(dd_param_info, trainable)

/** METHOD: *count = the number of nodes, the input included (built or
 *  not). Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_model_num_nodes(const dd_model *m, int *count);
/** METHOD: fills the first `size` bytes of *info with node `node`'s
 *  description and sets info->struct_size = size. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, no such node, size outside
 *  [DD_NODE_INFO_SIZE_V1, the library's sizeof]). Thread-safe on a model
 *  no other thread changes. */
DD_API dd_status dd_model_node_info_sized(const dd_model *m, dd_node node, dd_node_info *info, size_t size);
/** METHOD: describes node `node` (see dd_model_node_info_sized()). */
static inline dd_status dd_model_node_info(const dd_model *m, dd_node node, dd_node_info *info) {
    return dd_model_node_info_sized(m, node, info, sizeof *info);
}
/** The logits node given to dd_model_build. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_logits_node(const dd_model *m, dd_node *node);
/** METHOD: *k = the number of classes K given at creation. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_model_num_classes(const dd_model *m, int *k);
/** METHOD: the per-sample input shape (C, H, W) given at creation. Returns
 *  DD_OK, DD_ERR_INVALID_ARGUMENT (a NULL pointer). */
DD_API dd_status dd_model_input_shape(const dd_model *m, int *c, int *h, int *w);
/** METHOD: *max_batch = the largest batch of the passes, as given to
 *  dd_model_build(). Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL),
 *  DD_ERR_STATE (not built). */
DD_API dd_status dd_model_max_batch(const dd_model *m, int *max_batch);
/** Number of parameter tensors (trainable ones and batch-norm buffers).
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_num_params(const dd_model *m, int *count);
/** METHOD: fills the first `size` bytes of *info with parameter `index`'s
 *  description (0 .. dd_model_num_params() - 1; strings borrowed until the
 *  model is destroyed) and sets info->struct_size = size. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, index out of range, size outside
 *  [DD_PARAM_INFO_SIZE_V1, the library's sizeof]), DD_ERR_STATE (not
 *  built). Thread-safe on a model no other thread changes. */
DD_API dd_status dd_model_param_info_sized(const dd_model *m, int index, dd_param_info *info, size_t size);
/** METHOD: describes parameter `index` (see dd_model_param_info_sized()). */
static inline dd_status dd_model_param_info(const dd_model *m, int index, dd_param_info *info) {
    return dd_model_param_info_sized(m, index, info, sizeof *info);
}
/** Copies parameter `index` (PyTorch layout) into dst, count == info.count.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, index out of range, count
 *  not the parameter's), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_param_read(const dd_model *m, int index, float *dst, size_t count);
/** Overwrites parameter `index` from src (count == info.count). Returns
 *  DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, index out of range, count not the
 *  parameter's), DD_ERR_STATE (not built), DD_ERR_NUMERIC (nothing written)
 *  if src holds NaN or Inf. */
DD_API dd_status dd_model_param_write(dd_model *m, int index, const float *src, size_t count);
/** Copies the accumulated gradient of parameter `index` (zeros for a
 *  batch-norm running statistic, which has no gradient). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, index out of range, count not the
 *  parameter's), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_grad_read(const dd_model *m, int index, float *dst, size_t count);
/** METHOD: every parameter gradient as one contiguous, writable float
 *  buffer, for hosts that reduce gradients themselves (data-parallel
 *  training over MPI, deepdefense/mpi.h, or any communicator). *grads
 *  points at *count floats owned by the model, valid until it is destroyed
 *  (the buffer never moves after dd_model_build). Layout: parameter i
 *  (dd_model_param_info order) occupies count_i floats at offset
 *  dd_model_param_offset(i), in PyTorch layout; the gaps between
 *  parameters (padding to 16 floats) and the slots of batch-norm running
 *  statistics (which have no gradient) hold zeros after dd_model_zero_grad
 *  and stay zero under the passes, so reducing the whole buffer is safe
 *  (a sum of zeros). The optimizer reads it as it is at dd_optimizer_step:
 *  scaling or replacing it in place (an average over processes) is what
 *  the step then applies. Not thread-safe against passes of this model.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_grad_buffer(dd_model *m, float **grads, size_t *count);
/** METHOD: *offset = where parameter `index` starts in dd_model_grad_buffer
 *  (in floats). Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, index out of
 *  range), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_param_offset(const dd_model *m, int index, size_t *offset);
/** Seconds spent inside oneDNN primitives (execute + wait) by this model
 *  since creation or the last reset (reset != 0 zeroes the counter after
 *  reading). For benchmarks: time outside = wall time - this. Returns
 *  DD_OK, DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_model_primitive_seconds(dd_model *m, double *seconds, int reset);
/** METHOD (debugging): what the last passes ran, as text, one line per
 *  node: the forward's fusion chains; for each kind of backward pass run so
 *  far (plain backward, input gradient, GFA's pass 2, its tangent pass 3 and
 *  its second backward, pass 4) the variant of each node's step (its own
 *  backward, given to a neighbour, applying a neighbour's ReLU mask or
 *  folded batch norm), the gradient it reads and those it writes or adds
 *  to. The text is NUL-terminated and cut to fit size bytes (buf may be
 *  NULL when size is 0); *needed (optional) receives the size the whole
 *  text needs, its NUL included. Lines and their wording are for people and
 *  may change between versions.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (m NULL, or buf NULL with size >
 *  0), DD_ERR_STATE (no forward pass yet). Reads the model: not safe while
 *  another thread runs a pass on it. */
DD_API dd_status dd_model_schedule(const dd_model *m, char *buf, size_t size, size_t *needed);
/** Bytes the model holds (arenas and the shared scratchpad). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_STATE (not built). */
DD_API dd_status dd_model_memory_size(const dd_model *m, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
