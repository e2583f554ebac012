/* corsair.h: what the corsair backend offers beyond backend.h: access to its timing model
 * (per-op and per-block schedules, parameters) and its numerics settings, for the report
 * tools, the bench and the tests.  The backend itself is created with
 * fb_create("corsair", ...); options are "key=value" strings in fb_config_t.options:
 *   weights=bfp8|bfp4   weight format (default bfp8: BFP[8|8]{64}; bfp4: BFP[4|8]{128})
 *   inputs=bfp8|bfp4    GEMM input format (default bfp8)
 *   any key of the timing model's parameter table (timing.h), e.g. mapping=tp cards=4,
 *   exp=poly2 (which also switches the softmax numerics to the polynomial exp).
 * Same thread rules as backend.h: the thread that drives the backend. */
#ifndef FD_CORSAIR_H
#define FD_CORSAIR_H

#include <stdbool.h>

#include "backends/backend.h"
#include "backends/corsair/bfp.h"
#include "backends/corsair/timing.h"

/* The backend's timing model, or NULL when be is not a corsair backend. */
cs_sim_t *fb_corsair_sim(fb_backend_t *be);
/* Its formats and exp choice (false when be is not a corsair backend). */
bool fb_corsair_formats(const fb_backend_t *be, cs_bfp_fmt_t *weights, cs_bfp_fmt_t *inputs,
                        bool *poly2_exp);

#endif
