/* main.c: fusiond, the daemon.  main() reads as the table of contents: configuration,
 * logging, the event loop and its signals, the engine (the model loads on a worker thread
 * while the loop runs, so /health can say "loading" and signals are answered), the HTTP
 * server, then the loop until a drain ends; shutdown calls the _fini steps in exact
 * reverse.
 *
 * Life of the process, as the service manager sees it (server/notify.h):
 *   STATUS=loading -> (model loaded, socket listening, privileges dropped) READY=1 ->
 *   SIGHUP: RELOADING=1 ... READY=1 -> SIGTERM/SIGINT: STOPPING=1, drain, exit 0.
 * Everything here runs on the loop thread except load_work (a libuv pool thread) and
 * on_engine_step (the engine thread). */
#include <config.h> /* autoconf's; "config.h" would find server/config.h */

#include <pthread.h>
#include <pwd.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/fd.h"
#include "common/log.h"
#include "engine/engine.h"
#include "server/config.h"
#include "server/notify.h"
#include "server/server.h"

/* Exit statuses: 78 (EX_CONFIG) for a configuration the daemon cannot start with, so the
 * unit's RestartPreventExitStatus=78 stops systemd from restarting it in a loop. */
enum { EXIT_CONFIG = 78, EXIT_INTERRUPTED = 130 };
enum { CONTINUE = -1 };

/* After drain_timeout, cancelled requests get this long to wind down before we stop anyway. */
#define CANCEL_GRACE_S 5.0
#define DRAIN_TICK_MS 20

typedef struct daemon {
    cfg_t cfg;
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uv_work_t load_work;
    eng_params_t eng_params;
    eng_t *eng;
    int load_rc;
    char load_err[512];
    bool loading;               /* load_work in flight */
    srv_t *srv;
    pthread_mutex_t srv_lock;   /* guards srv for on_engine_step (engine thread) */
    bool listen_deferred;       /* root with `user`: bind only once the model is open */
    bool ready;                 /* READY=1 sent */
    bool stopping;              /* a drain began */
    bool cancelled;             /* the drain timed out and cancelled what ran */
    double drain_deadline, cancel_deadline;
    int exit_code;
    char **lora_paths;          /* the LoRA adapters (cfg_lora), n_lora */
    float *lora_scales;         /* their global scales at start */
    int n_lora;
} daemon_t;

/* ---- configuration ---- */

static void print_version(void)
{
    printf("fusiond %s\n", PACKAGE_VERSION);
    printf("configuration: %s/fusiond.conf\n", FD_SYSCONFDIR);
    printf("data directory: %s\n", FD_DATADIR);
    const char *demo = cfg_demo_model_path();
    printf("demo model: %s\n", demo ? demo : "not installed");
#ifdef HAVE_LIBSYSTEMD
    printf("sd_notify: libsystemd\n");
#else
    printf("sd_notify: built-in datagram protocol\n");
#endif
}

/* Reads the configuration and answers --help, --version, --dump-config and --test-config.
 * CONTINUE when the daemon should run, else the exit status. */
static int config_init(daemon_t *d, int argc, char **argv)
{
    char err[1024];
    cfg_init(&d->cfg);
    int rc = cfg_load(&d->cfg, argc, argv, err, sizeof(err));
    int action = d->cfg.action;
    if (rc != 0) {
        fprintf(stderr, "fusiond: %s\n", err);
        if (action == CFG_RUN)
            fprintf(stderr, "fusiond: see fusiond --help and fusiond.conf(5) in fusiond(8)\n");
        cfg_fini(&d->cfg);
        return action == CFG_RUN ? EXIT_CONFIG : EXIT_FAILURE;
    }
    switch (action) {
    case CFG_HELP: cfg_print_help(stdout, "fusiond"); break;
    case CFG_VERSION: print_version(); break;
    case CFG_DUMP: cfg_dump(&d->cfg, stdout, d->cfg.verbose); break;
    case CFG_TEST:
        printf("fusiond: configuration OK (%s%s, model %s)\n", d->cfg.config_path,
               d->cfg.config_read ? "" : " absent: defaults and flags",
               cfg_model_path(&d->cfg));
        for (int i = 0; i < d->cfg.ignored_flags.n; i++)
            fprintf(stderr, "fusiond: %s\n", d->cfg.ignored_flags.v[i]);
        break;
    default:
        if (cfg_lora(&d->cfg, &d->lora_paths, &d->lora_scales, &d->n_lora) != 0) {
            fprintf(stderr, "fusiond: out of memory\n");
            cfg_fini(&d->cfg);
            return EXIT_FAILURE;
        }
        return CONTINUE;
    }
    cfg_fini(&d->cfg);
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static void config_fini(daemon_t *d)
{
    for (int i = 0; i < d->n_lora; i++)
        free(d->lora_paths[i]);
    free(d->lora_paths);
    free(d->lora_scales);
    d->lora_paths = NULL;
    d->lora_scales = NULL;
    d->n_lora = 0;
    cfg_fini(&d->cfg);
}

/* ---- logging ---- */

static int log_init(daemon_t *d)
{
    fd_log_init(cfg_fd_log_level(&d->cfg), cfg_fd_log_format(&d->cfg));
    fd_log_info("fusiond %s starting (configuration %s)", PACKAGE_VERSION,
                d->cfg.config_path);
    /* llama-server flags that mean nothing here are never dropped silently */
    for (int i = 0; i < d->cfg.ignored_flags.n; i++)
        fd_log_warn("llama-server flag %s", d->cfg.ignored_flags.v[i]);
    return 0;
}

static void log_fini(daemon_t *d)
{
    fd_log_info("fusiond stopped (exit status %d)", d->exit_code);
    fd_log_fini();
}

/* ---- the loop and its signals ---- */

static void begin_drain(daemon_t *d, const char *why);
static void reload(daemon_t *d);

/* libuv turns each signal into a loop event (its handler only writes to a pipe), so these
 * run on the loop thread like everything else. */
static void on_signal(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;
    switch (signum) {
    case SIGHUP:
        reload(d);
        break;
    case SIGINT:
        if (d->stopping) {
            fd_log_warn("second SIGINT: exiting at once");
            _exit(EXIT_INTERRUPTED);
        }
        begin_drain(d, "SIGINT");
        break;
    default:
        if (d->stopping)
            fd_log_info("SIGTERM: already draining");
        else
            begin_drain(d, "SIGTERM");
        break;
    }
}

static int loop_init(daemon_t *d)
{
    int rc = uv_loop_init(&d->loop);
    if (rc) {
        fd_log_error("event loop: %s", uv_strerror(rc));
        return rc;
    }
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    const int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < FD_ARRAY_LEN(sigs); i++) {
        uv_signal_init(&d->loop, sigs[i]);
        sigs[i]->data = d;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    uv_timer_init(&d->loop, &d->drain_timer);
    d->drain_timer.data = d;
    /* A client that hangs up mid-write must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void loop_fini(daemon_t *d)
{
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->drain_timer, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&d->loop);
    if (rc)
        fd_log_warn("event loop: %s at close", uv_strerror(rc));
}

/* ---- the engine ---- */

/* The engine's step observer: forwards to the server once there is one.  A lock rather than
 * an atomic pointer, so server_fini cannot free the server under a running observer. */
static void on_engine_step(void *ud, double seconds, int batch_seqs, int batch_tokens)
{
    daemon_t *d = ud;
    pthread_mutex_lock(&d->srv_lock);
    if (d->srv)
        srv_on_step(d->srv, seconds, batch_seqs, batch_tokens);
    pthread_mutex_unlock(&d->srv_lock);
}

static void load_work(uv_work_t *w)
{
    daemon_t *d = w->data;
    double t0 = fd_now_s();
    d->load_rc = eng_open(&d->eng, &d->eng_params, d->load_err, sizeof(d->load_err));
    if (d->load_rc == 0)
        fd_log_info("model loaded in %.2f s", fd_now_s() - t0);
}

static int listen_now(daemon_t *d);
static int privileges_drop(daemon_t *d);

static void fail_start(daemon_t *d, int exit_code)
{
    d->exit_code = exit_code;
    ntf_send("STATUS=failed to start, see the log");
    uv_stop(&d->loop);
}

/* A model file that is wrong for us, or options it cannot take, will not load on a restart
 * either; memory or device trouble might. */
static bool load_error_is_config(int rc)
{
    switch (rc) {
    case FD_EFORMAT: case FD_ETRUNC: case FD_EVERSION: case FD_ETYPE: case FD_EUNSUP:
    case FD_ESHAPE: case FD_ECONFIG: case FD_ECTX: case -ENOENT: case -EACCES: case -EINVAL:
        return true;
    default:
        return false;
    }
}

/* Back on the loop: serve, or stop if loading failed or a stop signal came meanwhile. */
static void load_done(uv_work_t *w, int status)
{
    daemon_t *d = w->data;
    d->loading = false;
    if (status == UV_ECANCELED || d->load_rc != 0) {
        fd_log_error("cannot load the model %s: %s", d->eng_params.model_path,
                     status == UV_ECANCELED ? "cancelled" : d->load_err);
        fail_start(d, status == 0 && load_error_is_config(d->load_rc) ? EXIT_CONFIG
                                                                     : EXIT_FAILURE);
        return;
    }
    if (d->stopping || !d->srv) {
        uv_stop(&d->loop);
        return;
    }
    srv_set_engine(d->srv, d->eng);
    if (d->listen_deferred && listen_now(d) != 0) {
        fail_start(d, EXIT_FAILURE);
        return;
    }
    if (privileges_drop(d) != 0) {
        fail_start(d, EXIT_CONFIG);
        return;
    }
    const eng_info_t *in = eng_info(d->eng);
    fd_log_info("serving %s (%s, %s, fusion %s, context %d) on %s://%s:%d/", in->model_id,
                in->arch, in->backend, in->fusion ? "on" : "off", in->n_ctx,
                srv_scheme(d->srv), d->cfg.host, srv_port(d->srv));
    if (in->cache_type_k)
        fd_log_info("KV cache: K %s, V %s, %.1f MiB%s", in->cache_type_k, in->cache_type_v,
                    (double)in->cache_bytes / (1024.0 * 1024.0),
                    in->swa_ring > 0 ? " (sliding-window layers: a ring a sequence)" : "");
    if (in->ctx_checkpoints > 0)
        fd_log_info("context checkpoints: up to %d a cached sequence, %.1f MiB each at most, "
                    "%.1f MiB of host memory at most", in->ctx_checkpoints,
                    (double)in->ckpt_bytes_each / (1024.0 * 1024.0),
                    (double)in->ckpt_bytes_max / (1024.0 * 1024.0));
    for (int i = 0; i < in->n_lora; i++)
        fd_log_info("LoRA adapter %d: %s (scale %g%s)", i, in->lora_paths[i],
                    i < d->n_lora ? (double)d->lora_scales[i] : 0.0,
                    d->cfg.lora_init_without_apply ? ", init without apply" : "");
    if (d->cfg.spec_type != CFG_SPEC_NONE && in->draft_max == 0)
        fd_log_warn("speculative decoding off: the %s backend's driver cannot drop rejected "
                    "draft tokens from its KV cache", in->backend);
    else if (in->draft_model)
        fd_log_info("speculative decoding: draft model %s (%s, context %d), up to %d draft "
                    "tokens (at least %d), while its top token's probability is at least %g",
                    in->draft_model, in->draft_path, in->draft_n_ctx, in->draft_max,
                    d->eng_params.draft_min, (double)d->eng_params.draft_p_min);
    else if (in->draft_max > 0)
        fd_log_info("speculative decoding: ngram, up to %d draft tokens (at least %d), "
                    "n-grams of %d..%d tokens", in->draft_max, d->eng_params.draft_min,
                    d->eng_params.lookup_min, d->eng_params.lookup_max);
    d->ready = true;
    ntf_send("READY=1\nSTATUS=serving %s on %s:%d", in->model_id, d->cfg.host,
             srv_port(d->srv));
}

/* Starts loading the model on a libuv pool thread; load_done continues on the loop. */
static int engine_init(daemon_t *d)
{
    const cfg_t *c = &d->cfg;
    eng_params_t *p = &d->eng_params;
    eng_params_default(p);
    p->model_path = cfg_model_path(c);
    p->backend = cfg_backend_name(c->backend);
    p->backend_options = c->backend_options.n ? (const char *const *)c->backend_options.v
                                              : NULL;
    p->fusion = c->fusion;
    p->softmax_mode = c->softmax == CFG_SOFTMAX_SUMONLY ? FB_SOFTMAX_SUMONLY
                                                        : FB_SOFTMAX_MAXSUM;
    p->threads = c->threads;
    p->cache_type_k = fb_kv_type_from_name(cfg_cache_type_name(c->cache_type_k));
    p->cache_type_v = fb_kv_type_from_name(cfg_cache_type_name(c->cache_type_v));
    p->swa_full = c->swa_full;
    cfg_rope(c, &p->rope);
    p->n_ctx = c->ctx_size;
    p->max_running = c->max_running;
    p->max_waiting = c->max_waiting;
    p->kv_tokens = c->kv_tokens;
    p->prefill_chunk = c->prefill_chunk;
    p->prefix_cache = c->prefix_cache;
    p->prefix_cache_min = c->prefix_cache_min;
    p->ctx_checkpoints = c->ctx_checkpoints;
    if (c->spec_type == CFG_SPEC_NGRAM || c->spec_type == CFG_SPEC_DRAFT) {
        p->draft_max = c->draft_max;
        p->draft_min = c->draft_min;
        p->lookup_max = c->prompt_lookup_max;
        p->lookup_min = c->prompt_lookup_min;
    }
    if (c->spec_type == CFG_SPEC_DRAFT) {
        p->draft_model = c->model_draft;
        p->draft_p_min = strtof(c->draft_p_min, NULL); /* checked: 0..1 */
        p->draft_n_ctx = c->ctx_size_draft;
        p->draft_threads = c->threads_draft;
    }
    p->lora = (const char *const *)d->lora_paths;
    p->n_lora = d->n_lora;
    p->on_step = on_engine_step;
    p->on_step_ud = d;
    if (!p->model_path) {
        fd_log_error("no readable model (model = \"%s\")", c->model);
        return -ENOENT;
    }
    pthread_mutex_init(&d->srv_lock, NULL);
    fd_log_info("loading %s (backend %s, fusion %s)", p->model_path, p->backend,
                p->fusion ? "on" : "off");
    ntf_send("STATUS=loading %s", p->model_path);
    d->load_work.data = d;
    d->loading = true;
    int rc = uv_queue_work(&d->loop, &d->load_work, load_work, load_done);
    if (rc) {
        d->loading = false;
        pthread_mutex_destroy(&d->srv_lock);
        fd_log_error("cannot start loading: %s", uv_strerror(rc));
        return rc;
    }
    return 0;
}

static void engine_fini(daemon_t *d)
{
    /* A load still in flight cannot be interrupted: let it finish, then close. */
    while (d->loading)
        uv_run(&d->loop, UV_RUN_ONCE);
    eng_close(d->eng);
    d->eng = NULL;
    pthread_mutex_destroy(&d->srv_lock);
}

/* ---- the HTTP server ---- */

static void srv_config_from(srv_config_t *s, const cfg_t *c)
{
    srv_config_default(s);
    s->host = c->host;
    s->port = c->port;
    s->model_id = *c->model_alias ? c->model_alias : NULL;
    s->chat_template = *c->chat_template ? c->chat_template : NULL;
    s->chat_template_file = *c->chat_template_file ? c->chat_template_file : NULL;
    s->jinja = c->jinja;
    s->reasoning_format = c->reasoning_format;
    s->has_reasoning_budget = c->reasoning_budget >= 0;
    s->reasoning_budget = c->reasoning_budget;
    s->reasoning_budget_message = *c->reasoning_budget_message ? c->reasoning_budget_message
                                                               : NULL;
    s->no_prefill_assistant = !c->prefill_assistant;
    s->api_keys = c->auth_keys.n ? (const char *const *)c->auth_keys.v : NULL;
    s->cors_origins = c->cors_origins.n ? (const char *const *)c->cors_origins.v : NULL;
    s->max_body_bytes = (size_t)c->max_body_bytes;
    s->request_timeout_s = c->request_timeout;
    s->max_connections = c->max_connections;
    s->idle_timeout_s = c->idle_timeout;
    s->retry_after_s = c->retry_after;
    s->ping_interval_s = c->sse_ping_interval;
    s->max_n = c->max_n;
    s->access_log = c->access_log;
    s->prefix_cache = c->prefix_cache;
    s->embeddings = c->embeddings;
    s->spm_infill = c->spm_infill;
    s->slots = c->slots;
    s->pooling = c->pooling;
    s->responses_store = c->responses_store;
    s->responses_store_bytes = (size_t)c->responses_store_bytes;
    s->tls_cert_pem = c->tls_cert_pem;
    s->tls_key_pem = c->tls_key_pem;
}

static int listen_now(daemon_t *d)
{
    char err[512];
    int rc = srv_listen(d->srv, err, sizeof(err));
    if (rc)
        fd_log_error("cannot listen on %s:%d: %s", d->cfg.host, d->cfg.port, err);
    else
        fd_log_info("listening on %s://%s:%d", srv_scheme(d->srv), d->cfg.host,
                    srv_port(d->srv));
    return rc;
}

/* Creates the server with no engine yet (it answers 503 "loading" until load_done hands
 * the engine over) and listens, unless root must drop privileges first: then the port is
 * bound only after the model is open, so no request is parsed as root. */
static int server_init(daemon_t *d)
{
    char err[512];
    srv_config_t sc;
    srv_config_from(&sc, &d->cfg);
    sc.lora_scales = d->lora_scales;
    sc.n_lora = d->n_lora;
    srv_t *s;
    int rc = srv_create(&s, &d->loop, NULL, &sc, err, sizeof(err));
    if (rc) {
        fd_log_error("cannot create the server: %s", err);
        return rc;
    }
    pthread_mutex_lock(&d->srv_lock);
    d->srv = s;
    pthread_mutex_unlock(&d->srv_lock);
    d->listen_deferred = geteuid() == 0 && *d->cfg.user;
    if (!d->listen_deferred && (rc = listen_now(d)) != 0) {
        pthread_mutex_lock(&d->srv_lock);
        d->srv = NULL;
        pthread_mutex_unlock(&d->srv_lock);
        srv_destroy(s);
        return rc;
    }
    return 0;
}

static void server_fini(daemon_t *d)
{
    pthread_mutex_lock(&d->srv_lock);
    srv_t *s = d->srv;
    d->srv = NULL;
    pthread_mutex_unlock(&d->srv_lock);
    srv_destroy(s);
}

/* ---- privileges ---- */

/* Started as root with `user` set: become that user for good (glibc applies set*id to every
 * thread, the engine's included). */
static int privileges_drop(daemon_t *d)
{
    const char *user = d->cfg.user;
    if (!*user)
        return 0;
    if (geteuid() != 0) {
        fd_log_info("user = %s ignored: not started as root (running as uid %ld)", user,
                    (long)geteuid());
        return 0;
    }
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fd_log_error("user = %s: no such user", user);
        return -ENOENT;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        int e = errno;
        fd_log_error("cannot switch to user %s: %s", user, strerror(e));
        return -e;
    }
    if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        fd_log_error("switched to user %s but could become root again", user);
        return -EPERM;
    }
    fd_log_info("running as user %s (uid %ld, gid %ld)", user, (long)pw->pw_uid,
                (long)pw->pw_gid);
    return 0;
}

/* ---- reload and drain ---- */

static void reload(daemon_t *d)
{
    char err[1024];
    int changed = 0;
    if (d->stopping || !d->srv) {
        fd_log_info("SIGHUP ignored: %s", d->stopping ? "draining" : "shutting down");
        return;
    }
    fd_log_info("SIGHUP: reloading %s", d->cfg.config_path);
    fd_log_debug("reload: reading %s, then %d flag(s) over it", d->cfg.config_path,
                 d->cfg.argc);
    /* Before READY=1, RELOADING/READY would claim a readiness we do not have yet. */
    if (d->ready)
        ntf_send("RELOADING=1\nMONOTONIC_USEC=%llu", ntf_monotonic_usec());
    if (cfg_reload(&d->cfg, &changed, err, sizeof(err)) != 0) {
        fd_log_error("reload failed, keeping the old configuration: %s", err);
    } else {
        fd_log_set_level(cfg_fd_log_level(&d->cfg));
        srv_config_t sc;
        srv_config_from(&sc, &d->cfg);
        if (d->srv && srv_reconfigure(d->srv, &sc, err, sizeof(err)) != 0)
            fd_log_error("reload: the server refused the new limits: %s", err);
        /* HTTPS: the files are read again (a renewed certificate); the paths need a restart */
        bool tls_new = false;
        if (cfg_tls_reread(&d->cfg, &tls_new, err, sizeof(err)) != 0) {
            fd_log_error("reload: keeping the certificate in use: %s", err);
        } else if (tls_new) {
            if (srv_tls_update(d->srv, d->cfg.tls_cert_pem, d->cfg.tls_key_pem, err,
                               sizeof(err)) != 0) {
                fd_log_error("reload: keeping the certificate in use: %s", err);
            } else {
                fd_log_info("reload: %s and %s: the new certificate is served to new "
                            "connections", d->cfg.tls_cert_file, d->cfg.tls_key_file);
                changed++;
            }
        }
        fd_log_info("reload done: %d change(s) applied", changed);
    }
    if (d->ready)
        ntf_send("READY=1\nSTATUS=serving on %s:%d", d->cfg.host, srv_port(d->srv));
}

static void drain_tick(uv_timer_t *t)
{
    daemon_t *d = t->data;
    if (d->loading)
        return; /* load_done stops the loop */
    int running = d->srv ? srv_running(d->srv) : 0;
    double now = fd_now_s();
    if (running == 0) {
        fd_log_info("drained");
        uv_timer_stop(t);
        uv_stop(&d->loop);
    } else if (!d->cancelled && now >= d->drain_deadline) {
        fd_log_warn("drain timeout (%g s): cancelling %d running request(s)",
                    d->cfg.drain_timeout, running);
        srv_cancel_all(d->srv);
        d->cancelled = true;
        d->cancel_deadline = now + CANCEL_GRACE_S;
    } else if (d->cancelled && now >= d->cancel_deadline) {
        fd_log_error("%d request(s) did not end after cancelling; stopping anyway", running);
        uv_timer_stop(t);
        uv_stop(&d->loop);
    }
}

/* Stop accepting work, let what runs finish (up to drain_timeout), then stop the loop. */
static void begin_drain(daemon_t *d, const char *why)
{
    d->stopping = true;
    int running = d->srv && !d->loading ? srv_running(d->srv) : 0;
    fd_log_info("%s: draining, %d request(s) running (up to %g s)", why, running,
                d->cfg.drain_timeout);
    ntf_send("STOPPING=1\nSTATUS=draining, %d request(s) running", running);
    if (d->srv)
        srv_drain(d->srv);
    d->drain_deadline = fd_now_s() + d->cfg.drain_timeout;
    uv_timer_start(&d->drain_timer, drain_tick, 0, DRAIN_TICK_MS);
}

/* ---- main ---- */

static int run(daemon_t *d)
{
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&d->drain_timer);
    return d->exit_code;
}

int main(int argc, char **argv)
{
    static daemon_t d;
    int rc = config_init(&d, argc, argv);
    if (rc != CONTINUE)
        return rc;
    d.exit_code = EXIT_FAILURE;
    if (log_init(&d) != 0)
        goto fail_log;
    if (loop_init(&d) != 0)
        goto fail_loop;
    if (engine_init(&d) != 0)
        goto fail_engine;
    if (server_init(&d) != 0)
        goto fail_server;

    d.exit_code = EXIT_SUCCESS;
    run(&d);

    server_fini(&d);
fail_server:
    engine_fini(&d);
fail_engine:
    loop_fini(&d);
fail_loop:
    log_fini(&d);
fail_log:
    config_fini(&d);
    return d.exit_code;
}
