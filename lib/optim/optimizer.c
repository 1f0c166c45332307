/* lib/optim/optimizer.c -- SGD (momentum, Nesterov, weight decay), Adam, AdamW.
 *
 * An optimizer is bound to one built model and reads its parameters through
 * the internal struct (m->params[i]: data, grad, count, trainable, decay).
 * The update rules are those of PyTorch, so that a run can be compared with
 * a PyTorch run step by step:
 *   SGD   torch.optim.SGD with dampening 0. The momentum buffer starts at
 *         zero, so the first step gives v = g exactly as PyTorch's "clone on
 *         first step" does.
 *   Adam  torch.optim.Adam (amsgrad off): L2 decay added to the gradient,
 *         bias corrections 1 - beta^t computed in double per step, and
 *         w -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
 *   AdamW torch.optim.AdamW: w *= 1 - lr*wd first, then Adam without decay.
 * All moments live in one 64-byte aligned arena allocated at creation; each
 * trainable parameter gets a slice rounded up to 16 floats so every slice is
 * aligned for the simd loops. A step first checks that every gradient is
 * finite and changes nothing otherwise. The element-wise updates run as
 * OpenMP `parallel for simd` loops with the model's thread count; they have
 * no reductions, so results do not depend on scheduling.
 */
#include <math.h>
#include <string.h>

#include <deepdefense/optim.h>

#include "../core/core.h"
#include "../graph/graph.h"

/* Below this many elements a parameter is updated by the calling thread
 * alone: forking a team costs more than the update of a bias. */
#define DD__OPTIM_PAR_MIN 16384

/* Moment slices are padded to a multiple of 16 floats (64 bytes). */
#define DD__OPTIM_ALIGN_FLOATS 16

struct dd_optimizer {
    dd_model *model;        /* borrowed; must outlive the optimizer */
    dd_optimizer_options o; /* validated copy */
    int64_t t;              /* steps taken */
    int nparams;            /* m->nparams at creation */
    int nbuf;               /* moment buffers per parameter: 0, 1 (SGD) or 2 (Adam) */
    float *arena;           /* all moments, dd__aligned_alloc, zero-filled */
    size_t arena_floats;
};

/* ======================================================================== */
/* Options                                                                   */
/* ======================================================================== */

DD_API void dd_optimizer_options_init_sized(dd_optimizer_options *opts, size_t size, dd_optimizer_kind kind) {
    dd_optimizer_options d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.momentum = 0.9f;
    d.nesterov = 0;
    d.beta1 = 0.9f;
    d.beta2 = 0.999f;
    d.eps = 1e-8f;
    d.decay_all = 0;
    switch (kind) {
    case DD_OPTIM_SGD:
        d.lr = 0.1f;
        d.weight_decay = 5e-4f;
        break;
    case DD_OPTIM_ADAMW:
        d.lr = 1e-3f;
        d.weight_decay = 1e-2f;
        break;
    default: /* DD_OPTIM_ADAM; an unknown kind is reported by create */
        d.lr = 1e-3f;
        d.weight_decay = 0.0f;
        break;
    }
    dd__struct_fill(opts, size, &d, sizeof d);
}

static int finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }

static dd_status validate_options(const dd_optimizer_options *o) {
    DD_RETURN_IF(o->kind != DD_OPTIM_SGD && o->kind != DD_OPTIM_ADAM && o->kind != DD_OPTIM_ADAMW,
                 DD_ERR_INVALID_ARGUMENT, "optimizer options: unknown kind %d", (int)o->kind);
    DD_RETURN_IF(!finite_nonneg(o->lr), DD_ERR_INVALID_ARGUMENT,
                 "optimizer options: lr = %g must be finite and >= 0", (double)o->lr);
    DD_RETURN_IF(!finite_nonneg(o->weight_decay), DD_ERR_INVALID_ARGUMENT,
                 "optimizer options: weight_decay = %g must be finite and >= 0", (double)o->weight_decay);
    DD_RETURN_IF(o->decay_all != 0 && o->decay_all != 1, DD_ERR_INVALID_ARGUMENT,
                 "optimizer options: decay_all = %d must be 0 or 1", o->decay_all);
    if (o->kind == DD_OPTIM_SGD) {
        DD_RETURN_IF(!finite_nonneg(o->momentum) || o->momentum >= 1.0f, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: momentum = %g must be in [0, 1)", (double)o->momentum);
        DD_RETURN_IF(o->nesterov != 0 && o->nesterov != 1, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: nesterov = %d must be 0 or 1", o->nesterov);
        DD_RETURN_IF(o->nesterov && o->momentum == 0.0f, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: Nesterov momentum needs momentum > 0");
    } else {
        DD_RETURN_IF(!finite_nonneg(o->beta1) || o->beta1 >= 1.0f, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: beta1 = %g must be in [0, 1)", (double)o->beta1);
        DD_RETURN_IF(!finite_nonneg(o->beta2) || o->beta2 >= 1.0f, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: beta2 = %g must be in [0, 1)", (double)o->beta2);
        DD_RETURN_IF(!isfinite(o->eps) || o->eps <= 0.0f, DD_ERR_INVALID_ARGUMENT,
                     "optimizer options: eps = %g must be finite and > 0", (double)o->eps);
    }
    return DD_OK;
}

/* ======================================================================== */
/* Construction                                                              */
/* ======================================================================== */

static size_t padded(size_t count) {
    return (count + DD__OPTIM_ALIGN_FLOATS - 1) / DD__OPTIM_ALIGN_FLOATS * DD__OPTIM_ALIGN_FLOATS;
}

static int model_threads(const dd_model *m) {
    if (m->ctx.nthreads > 0) return m->ctx.nthreads;
    if (m->opts.num_threads > 0) return m->opts.num_threads;
    return 1;
}

DD_API dd_status dd_optimizer_create(dd_optimizer **out, dd_model *m, const dd_optimizer_options *user) {
    DD_CHECK_ARG(out != NULL);
    *out = NULL;
    DD_CHECK_ARG(m != NULL);
    DD_CHECK_ARG(user != NULL);
    dd_optimizer_options full;
    dd_optimizer_options_init(&full, DD_OPTIM_SGD);
    DD_FORWARD(DD__STRUCT_READ(&full, user, DD_OPTIMIZER_OPTIONS_SIZE_V1, "dd_optimizer_create",
                               "dd_optimizer_options"));
    const dd_optimizer_options *opts = &full;
    DD_FORWARD(validate_options(opts));
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_optimizer_create: the model is not built");

    int nbuf = 0;
    if (opts->kind == DD_OPTIM_SGD)
        nbuf = opts->momentum != 0.0f ? 1 : 0;
    else
        nbuf = 2;

    size_t floats = 0;
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].trainable) floats += padded(m->params[i].count) * (size_t)nbuf;

    dd_optimizer *opt = dd__calloc(1, sizeof *opt);
    DD_RETURN_IF(opt == NULL, DD_ERR_OUT_OF_MEMORY, "dd_optimizer_create: out of memory");
    opt->model = m;
    opt->o = *opts;
    opt->nparams = m->nparams;
    opt->nbuf = nbuf;
    opt->arena_floats = floats;
    if (floats > 0) {
        opt->arena = dd__aligned_alloc(floats * sizeof(float));
        if (opt->arena == NULL) {
            dd__free(opt);
            return DD_ERROR(DD_ERR_OUT_OF_MEMORY,
                            "dd_optimizer_create: out of memory for %zu floats of state", floats);
        }
    }
    *out = opt;
    return DD_OK;
}

DD_API void dd_optimizer_destroy(dd_optimizer *opt) {
    if (opt == NULL) return;
    dd__free_aligned(opt->arena);
    dd__free(opt);
}

/* ======================================================================== */
/* Update kernels: one parameter, count elements, plain layout               */
/* ======================================================================== */

/* w, g: (count) f32; v: (count) f32 momentum buffer or NULL when mu == 0. */
static void sgd_update(float *restrict w, const float *restrict g, float *restrict v, size_t count, float lr,
                       float wd, float mu, int nesterov, int nt) {
    long long n = (long long)count;
    int par = nt > 1 && count >= DD__OPTIM_PAR_MIN;
    if (v == NULL) {
#pragma omp parallel for simd num_threads(nt) if (par) schedule(static)
        for (long long i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            w[i] -= lr * d;
        }
    } else if (nesterov) {
#pragma omp parallel for simd num_threads(nt) if (par) schedule(static)
        for (long long i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            float b = mu * v[i] + d;
            v[i] = b;
            w[i] -= lr * (d + mu * b);
        }
    } else {
#pragma omp parallel for simd num_threads(nt) if (par) schedule(static)
        for (long long i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            float b = mu * v[i] + d;
            v[i] = b;
            w[i] -= lr * b;
        }
    }
}

/* w, g, m1, m2: (count) f32. l2: decay added to the gradient (Adam);
 * shrink: factor w is multiplied by first (AdamW: 1 - lr*wd, else 1).
 * step_size = lr / (1 - b1^t), bc2s = sqrt(1 - b2^t); the expression
 * order follows PyTorch: w - step_size * (m / (sqrt(v) / bc2s + eps)). */
static void adam_update(float *restrict w, const float *restrict g, float *restrict m1, float *restrict m2,
                        size_t count, float l2, float shrink, float b1, float b2, float eps, float step_size,
                        float bc2s, int nt) {
    long long n = (long long)count;
    int par = nt > 1 && count >= DD__OPTIM_PAR_MIN;
    float c1 = 1.0f - b1, c2 = 1.0f - b2;
#pragma omp parallel for simd num_threads(nt) if (par) schedule(static)
    for (long long i = 0; i < n; i++) {
        float wi = w[i] * shrink;
        float d = g[i] + l2 * wi;
        float a = b1 * m1[i] + c1 * d;
        float s = b2 * m2[i] + c2 * d * d;
        m1[i] = a;
        m2[i] = s;
        w[i] = wi - step_size * (a / (sqrtf(s) / bc2s + eps));
    }
}

/* ======================================================================== */
/* Methods                                                                   */
/* ======================================================================== */

DD_API dd_status dd_optimizer_step(dd_optimizer *opt) {
    DD_CHECK_ARG(opt != NULL);
    dd_model *m = opt->model;
    DD_RETURN_IF(m == NULL || !m->built || m->nparams != opt->nparams, DD_ERR_STATE,
                 "dd_optimizer_step: the model changed since the optimizer was created");
    int nt = model_threads(m);

    for (int i = 0; i < m->nparams; i++) {
        const dd__param *p = &m->params[i];
        if (!p->trainable || p->count == 0) continue;
        DD_RETURN_IF(p->grad == NULL, DD_ERR_STATE, "dd_optimizer_step: parameter %s has no gradient",
                     p->name);
        DD_RETURN_IF(!dd__all_finite(p->grad, p->count, nt), DD_ERR_NUMERIC,
                     "dd_optimizer_step: gradient of %s is not finite; nothing was changed", p->name);
    }

    const dd_optimizer_options *o = &opt->o;
    int64_t t = opt->t + 1;
    /* Bias corrections in double: 1 - b^t loses digits in float as t grows. */
    float step_size = 0.0f, bc2s = 1.0f;
    if (o->kind != DD_OPTIM_SGD) {
        double bc1 = 1.0 - pow((double)o->beta1, (double)t);
        double bc2 = 1.0 - pow((double)o->beta2, (double)t);
        step_size = (float)((double)o->lr / bc1);
        bc2s = (float)sqrt(bc2);
    }

    float *state = opt->arena;
    for (int i = 0; i < m->nparams; i++) {
        dd__param *p = &m->params[i];
        if (!p->trainable) continue;
        size_t slice = padded(p->count);
        float wd = (o->decay_all || p->decay) ? o->weight_decay : 0.0f;
        if (p->count > 0) {
            if (o->kind == DD_OPTIM_SGD) {
                sgd_update(p->data, p->grad, opt->nbuf ? state : NULL, p->count, o->lr, wd, o->momentum,
                           o->nesterov, nt);
            } else if (o->kind == DD_OPTIM_ADAM) {
                adam_update(p->data, p->grad, state, state + slice, p->count, wd, 1.0f, o->beta1, o->beta2,
                            o->eps, step_size, bc2s, nt);
            } else {
                float shrink = (float)(1.0 - (double)o->lr * (double)wd);
                adam_update(p->data, p->grad, state, state + slice, p->count, 0.0f, shrink, o->beta1,
                            o->beta2, o->eps, step_size, bc2s, nt);
            }
        }
        state += slice * (size_t)opt->nbuf;
    }
    opt->t = t;
    dd__model_params_changed(m);
    return DD_OK;
}

DD_API dd_status dd_optimizer_set_lr(dd_optimizer *opt, float lr) {
    DD_CHECK_ARG(opt != NULL);
    DD_RETURN_IF(!finite_nonneg(lr), DD_ERR_INVALID_ARGUMENT,
                 "dd_optimizer_set_lr: lr = %g must be finite and >= 0", (double)lr);
    opt->o.lr = lr;
    return DD_OK;
}

DD_API dd_status dd_optimizer_get_lr(const dd_optimizer *opt, float *lr) {
    DD_CHECK_ARG(opt != NULL);
    DD_CHECK_ARG(lr != NULL);
    *lr = opt->o.lr;
    return DD_OK;
}

DD_API dd_status dd_optimizer_steps(const dd_optimizer *opt, int64_t *steps) {
    DD_CHECK_ARG(opt != NULL);
    DD_CHECK_ARG(steps != NULL);
    *steps = opt->t;
    return DD_OK;
}

/* ======================================================================== */
/* State blob (exact resumption)                                             */
/* ======================================================================== */

/* Layout of the blob, host byte order, no padding (fields copied with
 * memcpy, so the blob needs no alignment):
 *   0  char[8]  magic "DDOPTST" + NUL
 *   8  uint32   format version (1)
 *  12  uint32   kind
 *  16  uint32   moment buffers per parameter (nbuf)
 *  20  uint32   number of parameters of the model
 *  24  uint64   layout fingerprint: FNV-1a over the trainable parameter counts
 *  32  int64    steps taken (t)
 *  40  uint64   number of floats that follow (arena_floats)
 *  48  float32  the moment arena, padding included (zero) */
#define DD__OPTSTATE_HEADER 48
static const char dd__optstate_magic[8] = "DDOPTST";

static uint64_t layout_fingerprint(const dd_optimizer *opt) {
    const dd_model *m = opt->model;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64-bit offset basis */
    for (int i = 0; i < m->nparams; i++) {
        uint64_t v = m->params[i].trainable ? (uint64_t)m->params[i].count + 1u : 0u;
        for (int b = 0; b < 8; b++) {
            h ^= (v >> (8 * b)) & 0xffu;
            h *= 1099511628211ULL; /* FNV-1a 64-bit prime */
        }
    }
    return h;
}

DD_API dd_status dd_optimizer_state_size(const dd_optimizer *opt, size_t *bytes) {
    DD_CHECK_ARG(opt != NULL);
    DD_CHECK_ARG(bytes != NULL);
    *bytes = DD__OPTSTATE_HEADER + opt->arena_floats * sizeof(float);
    return DD_OK;
}

DD_API dd_status dd_optimizer_state_read(const dd_optimizer *opt, void *dst, size_t size) {
    DD_CHECK_ARG(opt != NULL);
    DD_CHECK_ARG(dst != NULL);
    size_t need = DD__OPTSTATE_HEADER + opt->arena_floats * sizeof(float);
    DD_RETURN_IF(size < need, DD_ERR_INVALID_ARGUMENT,
                 "dd_optimizer_state_read: buffer of %zu bytes, the state needs %zu", size, need);
    unsigned char *p = dst;
    uint32_t version = 1, kind = (uint32_t)opt->o.kind, nbuf = (uint32_t)opt->nbuf;
    uint32_t nparams = (uint32_t)opt->nparams;
    uint64_t fp = layout_fingerprint(opt), floats = opt->arena_floats;
    int64_t t = opt->t;
    memcpy(p + 0, dd__optstate_magic, 8);
    memcpy(p + 8, &version, 4);
    memcpy(p + 12, &kind, 4);
    memcpy(p + 16, &nbuf, 4);
    memcpy(p + 20, &nparams, 4);
    memcpy(p + 24, &fp, 8);
    memcpy(p + 32, &t, 8);
    memcpy(p + 40, &floats, 8);
    if (opt->arena_floats > 0) memcpy(p + DD__OPTSTATE_HEADER, opt->arena, opt->arena_floats * sizeof(float));
    return DD_OK;
}

DD_API dd_status dd_optimizer_state_write(dd_optimizer *opt, const void *src, size_t size) {
    DD_CHECK_ARG(opt != NULL);
    DD_CHECK_ARG(src != NULL);
    const unsigned char *p = src;
    DD_RETURN_IF(size < DD__OPTSTATE_HEADER, DD_ERR_FORMAT,
                 "dd_optimizer_state_write: %zu bytes, shorter than the %d-byte header", size,
                 DD__OPTSTATE_HEADER);
    DD_RETURN_IF(memcmp(p, dd__optstate_magic, 8) != 0, DD_ERR_FORMAT,
                 "dd_optimizer_state_write: bad magic at offset 0 (not an optimizer state)");
    uint32_t version, kind, nbuf, nparams;
    uint64_t fp, floats;
    int64_t t;
    memcpy(&version, p + 8, 4);
    memcpy(&kind, p + 12, 4);
    memcpy(&nbuf, p + 16, 4);
    memcpy(&nparams, p + 20, 4);
    memcpy(&fp, p + 24, 8);
    memcpy(&t, p + 32, 8);
    memcpy(&floats, p + 40, 8);
    DD_RETURN_IF(version != 1, DD_ERR_FORMAT,
                 "dd_optimizer_state_write: format version %u at offset 8, expected 1", version);
    DD_RETURN_IF(kind != (uint32_t)opt->o.kind || nbuf != (uint32_t)opt->nbuf, DD_ERR_FORMAT,
                 "dd_optimizer_state_write: state of kind %u with %u moment buffers, this "
                 "optimizer is kind %d with %d",
                 kind, nbuf, (int)opt->o.kind, opt->nbuf);
    DD_RETURN_IF(nparams != (uint32_t)opt->nparams || fp != layout_fingerprint(opt) ||
                     floats != (uint64_t)opt->arena_floats,
                 DD_ERR_FORMAT,
                 "dd_optimizer_state_write: the state belongs to another architecture "
                 "(%u parameters, %llu floats; here %d, %zu)",
                 nparams, (unsigned long long)floats, opt->nparams, opt->arena_floats);
    DD_RETURN_IF(t < 0, DD_ERR_FORMAT, "dd_optimizer_state_write: step count %lld at offset 32",
                 (long long)t);
    size_t need = DD__OPTSTATE_HEADER + opt->arena_floats * sizeof(float);
    DD_RETURN_IF(size != need, DD_ERR_FORMAT,
                 "dd_optimizer_state_write: %zu bytes, the state of this optimizer has %zu", size, need);
    if (opt->arena_floats > 0) {
        /* The blob may be unaligned: check finiteness on a copy made float by float. */
        const unsigned char *q = p + DD__OPTSTATE_HEADER;
        for (size_t i = 0; i < opt->arena_floats; i++) {
            float v;
            memcpy(&v, q + i * sizeof(float), sizeof v);
            DD_RETURN_IF(!isfinite(v), DD_ERR_NUMERIC,
                         "dd_optimizer_state_write: moment %zu (offset %zu) is not finite", i,
                         (size_t)DD__OPTSTATE_HEADER + i * sizeof(float));
        }
        memcpy(opt->arena, q, opt->arena_floats * sizeof(float));
    }
    opt->t = t;
    return DD_OK;
}
