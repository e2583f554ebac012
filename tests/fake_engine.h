/* fake_engine.h: knobs of the test double in fake_engine.c (see there).  Test-only. */
#ifndef FD_FAKE_ENGINE_H
#define FD_FAKE_ENGINE_H

#include "engine/engine.h"

extern int fake_step_us;        /* pause between steps */
extern int fake_first_token_ms; /* a slow "prefill" before each sequence's first token */
extern int fake_capacity;       /* sequences admitted before FD_EFULL */
extern int fake_error_token;    /* a prompt ending in this id fails with ENG_FINISH_ERROR */
extern int fake_paused;         /* non-zero: no step runs, requests stay queued (set it with
                                   __atomic_store_n: the engine thread reads it) */

int fake_open(eng_t **out);
void fake_close(eng_t *e);
int fake_live(eng_t *e);        /* sequences not yet DONE */

#endif
