/* jinja.h: a Jinja2 interpreter for chat templates (tokenizer.chat_template): lexer, parser
 * to an AST and an evaluator over its own value type (none, bool, int, float, string, list,
 * dict, undefined), rendering as transformers renders them (jinja2 with trim_blocks,
 * lstrip_blocks and loopcontrols; tojson as json.dumps(ensure_ascii=False); raise_exception,
 * strftime_now).  A template is parsed once (jinja_parse) and rendered per request with the
 * variables given as the JSON text of an object (jinja_render).  A parsed template is read
 * only: any thread may render it at the same time as others.  Each render works in its own
 * arena, freed before it returns.  Layer: server; depends on nothing but libc. */
#ifndef FD_JINJA_H
#define FD_JINJA_H

#include <stddef.h>

typedef struct jinja jinja_t;

/* Guards against runaway templates; zero fields take the defaults in brackets. */
typedef struct jinja_limits {
    size_t max_output;    /* bytes of rendered text, nested captures included [64 MiB] */
    size_t max_steps;     /* loop iterations and macro calls over the render [10 000 000] */
    size_t max_depth;     /* nested macro calls [50] */
    size_t max_memory;    /* bytes of the render's values [256 MiB] */
} jinja_limits_t;

/* Parses len bytes of template text into *out.  -EINVAL on a syntax error, with "line L
 * column C: what" in err; -ENOMEM.  The text may be freed after the call. */
int jinja_parse(const char *src, size_t len, jinja_t **out, char *err, size_t errlen);
void jinja_free(jinja_t *t);

/* Renders t with the variables of vars_json (the JSON text of an object: its keys become
 * the template's variables; numbers keep Python's int/float distinction as json.loads reads
 * them, so tojson prints them back as written).  Globals: range, namespace, dict,
 * raise_exception(msg), strftime_now(fmt) (local time).  A malloc'd NUL-terminated string
 * in *out (*len bytes).  Errors, with the message in err: -EINVAL for vars_json that is not
 * a JSON object, a template error ("line L column C: what") or raise_exception (its message
 * alone); FD_ERANGE for a limit reached; -ENOMEM.  lim may be NULL. */
int jinja_render(const jinja_t *t, const char *vars_json, const jinja_limits_t *lim,
                 char **out, size_t *len, char *err, size_t errlen);

/* Whether the template reads a variable of that name anywhere (a {{ tools }}, a
 * "tools is defined"): how the server tells whether it renders tools. */
int jinja_uses(const jinja_t *t, const char *name);

#endif
