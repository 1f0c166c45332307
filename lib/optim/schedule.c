/* lib/optim/schedule.c -- learning-rate schedules as pure functions of the step.
 *
 * A schedule holds no state: dd_lr_schedule_eval(s, step) computes the rate
 * from the closed form, so a host can resume a run at any step and two
 * evaluations of the same step always agree. Arithmetic is in double and
 * rounded to float once at the end.
 *   constant   base
 *   step       base * gamma^floor(t / step_size)
 *   cosine     base * t / warmup for t < warmup (as HuggingFace's
 *              get_cosine_schedule_with_warmup), then
 *              min + (base - min) * (1 + cos(pi * p)) / 2, p = (t - warmup) / (total - warmup)
 *   one-cycle  base * t / warmup for t < warmup, then linear from base down to
 *              min at t = total
 * with t = min(step, total_steps) whenever total_steps > 0, so steps past the
 * end keep the final value. total_steps = 0 means "no end" and is accepted
 * for the constant and step schedules only.
 */
#include <math.h>
#include <string.h>

#include <deepdefense/optim.h>

#include "../core/core.h"

/* pi to double precision (M_PI is not ISO C). */
#define DD__PI 3.14159265358979323846

DD_API void dd_lr_schedule_init_sized(dd_lr_schedule *user, size_t size, dd_schedule_kind kind, float base_lr,
                                      int64_t total_steps) {
    dd_lr_schedule d, *s = &d;
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->base_lr = base_lr;
    s->min_lr = 0.0f;
    s->gamma = 0.1f;
    s->total_steps = total_steps;
    /* Step decay: three equal periods over the run by default (0 when the run
     * is shorter than 3 steps or unbounded: the host must then set it). */
    s->step_size = total_steps > 0 ? total_steps / 3 : 0;
    s->warmup_steps = 0;
    /* One-cycle warms up over the first 30% of the run (torch's OneCycleLR
     * pct_start = 0.3), floor(0.3 * total) computed without overflow. */
    if (kind == DD_SCHED_ONE_CYCLE && total_steps > 0)
        s->warmup_steps = total_steps / 10 * 3 + total_steps % 10 * 3 / 10;
    dd__struct_fill(user, size, s, sizeof *s);
}

static dd_status validate(const dd_lr_schedule *s) {
    DD_RETURN_IF(s->kind != DD_SCHED_CONSTANT && s->kind != DD_SCHED_STEP && s->kind != DD_SCHED_COSINE &&
                     s->kind != DD_SCHED_ONE_CYCLE,
                 DD_ERR_INVALID_ARGUMENT, "lr schedule: unknown kind %d", (int)s->kind);
    DD_RETURN_IF(!isfinite(s->base_lr) || s->base_lr < 0.0f, DD_ERR_INVALID_ARGUMENT,
                 "lr schedule: base_lr = %g must be finite and >= 0", (double)s->base_lr);
    DD_RETURN_IF(s->total_steps < 0, DD_ERR_INVALID_ARGUMENT, "lr schedule: total_steps = %lld must be >= 0",
                 (long long)s->total_steps);
    switch (s->kind) {
    case DD_SCHED_STEP:
        DD_RETURN_IF(!isfinite(s->gamma) || s->gamma < 0.0f, DD_ERR_INVALID_ARGUMENT,
                     "lr schedule: gamma = %g must be finite and >= 0", (double)s->gamma);
        DD_RETURN_IF(s->step_size < 1, DD_ERR_INVALID_ARGUMENT, "lr schedule: step_size = %lld must be >= 1",
                     (long long)s->step_size);
        break;
    case DD_SCHED_COSINE:
    case DD_SCHED_ONE_CYCLE:
        DD_RETURN_IF(!isfinite(s->min_lr) || s->min_lr < 0.0f, DD_ERR_INVALID_ARGUMENT,
                     "lr schedule: min_lr = %g must be finite and >= 0", (double)s->min_lr);
        DD_RETURN_IF(s->total_steps < 1, DD_ERR_INVALID_ARGUMENT,
                     "lr schedule: total_steps = %lld must be >= 1 for cosine and one-cycle",
                     (long long)s->total_steps);
        DD_RETURN_IF(s->warmup_steps < 0 || s->warmup_steps > s->total_steps, DD_ERR_INVALID_ARGUMENT,
                     "lr schedule: warmup_steps = %lld must be in [0, total_steps = %lld]",
                     (long long)s->warmup_steps, (long long)s->total_steps);
        break;
    default:
        break;
    }
    return DD_OK;
}

DD_API dd_status dd_lr_schedule_eval(const dd_lr_schedule *user, int64_t step, float *lr) {
    DD_CHECK_ARG(user != NULL);
    dd_lr_schedule full;
    dd_lr_schedule_init(&full, DD_SCHED_CONSTANT, 0.0f, 0);
    DD_FORWARD(DD__STRUCT_READ(&full, user, DD_LR_SCHEDULE_SIZE_V1, "dd_lr_schedule_eval", "dd_lr_schedule"));
    const dd_lr_schedule *s = &full;
    DD_CHECK_ARG(lr != NULL);
    DD_RETURN_IF(step < 0, DD_ERR_INVALID_ARGUMENT, "dd_lr_schedule_eval: step = %lld < 0", (long long)step);
    DD_FORWARD(validate(s));

    int64_t t = (s->total_steps > 0 && step > s->total_steps) ? s->total_steps : step;
    double base = s->base_lr, lo = s->min_lr, out = base;
    double warm = (double)s->warmup_steps, total = (double)s->total_steps;
    switch (s->kind) {
    case DD_SCHED_STEP:
        out = base * pow((double)s->gamma, (double)(t / s->step_size));
        break;
    case DD_SCHED_COSINE:
    case DD_SCHED_ONE_CYCLE:
        if (t < s->warmup_steps) {
            out = base * (double)t / warm;
        } else if (s->warmup_steps == s->total_steps) {
            out = base;
        } else {
            double p = ((double)t - warm) / (total - warm); /* in [0, 1] */
            if (s->kind == DD_SCHED_COSINE)
                out = lo + (base - lo) * 0.5 * (1.0 + cos(DD__PI * p));
            else
                out = base + (lo - base) * p;
        }
        break;
    default:
        break;
    }
    *lr = (float)out;
    return DD_OK;
}
