/* deepdefense/optim.h -- optimizers and learning-rate schedules.
 *
 * An optimizer is bound to one built model and updates its trainable
 * parameters from their accumulated gradients. State (momentum, Adam
 * moments) is allocated once at creation, plain layout, one arena.
 *
 *   SGD:   g = grad + wd*w;  v = mu*v + g;  w -= lr * (nesterov ? g + mu*v : v)
 *          (PyTorch's torch.optim.SGD with dampening 0)
 *   Adam:  g = grad + wd*w;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *          w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 *   AdamW: as Adam without wd in g, and w -= lr*wd*w first (decoupled decay)
 *
 * Threads: like the model it is bound to (one thread at a time).
 */
#ifndef DEEPDEFENSE_OPTIM_H
#define DEEPDEFENSE_OPTIM_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dd_optimizer dd_optimizer;

typedef enum dd_optimizer_kind { DD_OPTIM_SGD = 1, DD_OPTIM_ADAM = 2, DD_OPTIM_ADAMW = 3 } dd_optimizer_kind;

/** Optimizer options. Fill with dd_optimizer_options_init(&o, kind), then
 *  change fields. */
typedef struct dd_optimizer_options {
    size_t struct_size;      /**< set by dd_optimizer_options_init() */
    dd_optimizer_kind kind;  /**< set by dd_optimizer_options_init() */
    float lr;                /**< learning rate (SGD 0.1, Adam/AdamW 1e-3) */
    float momentum;          /**< SGD momentum (default 0.9) */
    int nesterov;            /**< SGD Nesterov momentum (default 0) */
    float weight_decay;      /**< default 5e-4 for SGD, 0 for Adam, 1e-2 for AdamW */
    float beta1, beta2, eps; /**< Adam/AdamW: 0.9, 0.999, 1e-8 */
    int decay_all;           /**< 1: decay every parameter; 0 (default): not biases and batch-norm */
} dd_optimizer_options;
/** The first released layout: every field above (see status.h). */
#define DD_OPTIMIZER_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_optimizer_options, decay_all)

/** dd_optimizer_options_init() for the first `size` bytes of *opts, which
 *  get struct_size = size (for bindings without the inline function; see
 *  status.h). NULL or size < sizeof(size_t) is a no-op. Thread-safe. */
DD_API void dd_optimizer_options_init_sized(dd_optimizer_options *opts, size_t size, dd_optimizer_kind kind);
/** Fills *opts with the defaults of `kind`. NULL is a no-op. Thread-safe. */
static inline void dd_optimizer_options_init(dd_optimizer_options *opts, dd_optimizer_kind kind) {
    dd_optimizer_options_init_sized(opts, sizeof *opts, kind);
}

/** CONSTRUCTOR of dd_optimizer, bound to the built model m (borrowed: m must
 *  outlive the optimizer). opts is copied. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (model not built), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_optimizer_create(dd_optimizer **out, dd_model *m, const dd_optimizer_options *opts);
/** DESTRUCTOR. NULL is a no-op. */
DD_API void dd_optimizer_destroy(dd_optimizer *opt);

/** METHOD: one update of every trainable parameter from its gradient.
 *  Gradients are not zeroed. Returns DD_OK, DD_ERR_INVALID_ARGUMENT,
 *  DD_ERR_STATE (the model changed since the optimizer's creation),
 *  DD_ERR_NUMERIC (a gradient is not finite: nothing is changed). */
DD_API dd_status dd_optimizer_step(dd_optimizer *opt);
/** METHOD: sets the learning rate (finite, >= 0). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, lr negative or not finite). */
DD_API dd_status dd_optimizer_set_lr(dd_optimizer *opt, float lr);
/** METHOD: *lr = the current learning rate. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_optimizer_get_lr(const dd_optimizer *opt, float *lr);
/** METHOD: number of steps taken (Adam's t). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_optimizer_steps(const dd_optimizer *opt, int64_t *steps);

/* ---- state, for exact resumption ----------------------------------------
 * The state of an optimizer is its step count and its moment buffers (SGD
 * momentum; Adam/AdamW first and second moments). Saved with the model's
 * weights (io.h) and restored into an optimizer created with the same
 * options on the same architecture, it makes a resumed run take exactly the
 * steps of an uninterrupted one. The blob is opaque: a small header (magic,
 * format version, kind, layout, step count, size) and the moments as raw
 * float32, in the host's byte order (a blob moves between runs on one
 * platform, not between platforms). The learning rate is not part of it:
 * set it with dd_optimizer_set_lr() (or from a schedule) after restoring. */

/** METHOD: *bytes = the size of the state blob of opt. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL). */
DD_API dd_status dd_optimizer_state_size(const dd_optimizer *opt, size_t *bytes);

/** METHOD: copies the state of opt into dst (caller-owned, size bytes, size
 *  >= dd_optimizer_state_size()). Returns DD_OK, DD_ERR_INVALID_ARGUMENT
 *  (NULL, size too small: nothing written). */
DD_API dd_status dd_optimizer_state_read(const dd_optimizer *opt, void *dst, size_t size);

/** METHOD: restores the state of opt from src (borrowed, size bytes) as
 *  produced by dd_optimizer_state_read() on an optimizer of the same kind,
 *  momentum setting and model architecture. Everything is checked before
 *  anything changes. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL),
 *  DD_ERR_FORMAT (bad magic or version, size mismatch, another kind or
 *  parameter layout, negative step count), DD_ERR_NUMERIC (a non-finite
 *  moment). */
DD_API dd_status dd_optimizer_state_write(dd_optimizer *opt, const void *src, size_t size);

/* ---- learning-rate schedules: pure functions of the step ---------------- */

typedef enum dd_schedule_kind {
    DD_SCHED_CONSTANT = 0, /**< base_lr */
    DD_SCHED_STEP = 1,     /**< base_lr * gamma^(step / step_size) */
    DD_SCHED_COSINE = 2,   /**< linear warm-up, then min_lr + (base-min)(1+cos(pi t))/2 */
    DD_SCHED_ONE_CYCLE =
        3 /**< linear 0 -> base over warmup_steps (default 30% of total), then linear -> min_lr */
} dd_schedule_kind;

/** A learning-rate schedule: a pure function of the step (see
 *  dd_lr_schedule_eval). Fill with dd_lr_schedule_init(). */
typedef struct dd_lr_schedule {
    size_t struct_size;    /**< set by dd_lr_schedule_init() */
    dd_schedule_kind kind; /**< the shape of the schedule */
    float base_lr;         /**< the peak (or constant) learning rate */
    float min_lr;          /**< cosine and one-cycle floor, default 0 */
    float gamma;           /**< step decay factor, default 0.1 */
    int64_t step_size;     /**< step decay period (steps) */
    int64_t warmup_steps;  /**< cosine: linear warm-up steps (default 0) */
    int64_t total_steps;   /**< cosine and one-cycle length */
} dd_lr_schedule;
/** The first released layout: every field above (see status.h). */
#define DD_LR_SCHEDULE_SIZE_V1 DD_SIZE_THROUGH(dd_lr_schedule, total_steps)

/** dd_lr_schedule_init() for the first `size` bytes of *s, which get
 *  struct_size = size (for bindings without the inline function; see
 *  status.h). NULL or size < sizeof(size_t) is a no-op. Thread-safe. */
DD_API void dd_lr_schedule_init_sized(dd_lr_schedule *s, size_t size, dd_schedule_kind kind, float base_lr,
                                      int64_t total_steps);
/** Fills *s with `kind`, base_lr, total_steps and the defaults: min_lr 0,
 *  gamma 0.1, step_size total_steps / 3 (0 when total_steps < 3: set it),
 *  warmup_steps 0, or floor(0.3 * total_steps) for one-cycle. total_steps 0
 *  means no end (constant and step only). NULL is a no-op. Thread-safe. */
static inline void dd_lr_schedule_init(dd_lr_schedule *s, dd_schedule_kind kind, float base_lr,
                                       int64_t total_steps) {
    dd_lr_schedule_init_sized(s, sizeof *s, kind, base_lr, total_steps);
}
/** Learning rate at `step` (0-based). Steps past total_steps give the final value.
 *  Warm-ups start at 0 for step 0 and reach base_lr at step warmup_steps.
 *  Returns DD_OK, DD_ERR_INVALID_ARGUMENT (NULL, step < 0, unknown kind,
 *  negative or non-finite rates, step_size < 1 for step decay, total_steps < 1
 *  for cosine/one-cycle, warmup_steps outside [0, total_steps]). Pure; thread-safe. */
DD_API dd_status dd_lr_schedule_eval(const dd_lr_schedule *s, int64_t step, float *lr);

#ifdef __cplusplus
}
#endif
#endif
