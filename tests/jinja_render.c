/* jinja_render: the test helper that renders a template file with server/jinja.c for
 * tests/test_jinja_templates.py.  Usage: jinja_render TEMPLATE < cases, where each line of
 * stdin is the JSON object of one render's variables.  For each line it prints "OK <n>\n"
 * and the n bytes rendered, or "ERR <n>\n" and the n bytes of the error message, then "\n".
 * A template that does not parse prints "PARSE <n>\n<message>\n" once and exits 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jinja.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: jinja_render TEMPLATE < cases.jsonl\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    char *src = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            src = realloc(src, cap);
            if (!src)
                return 2;
        }
        size_t k = fread(src + len, 1, cap - len, f);
        if (!k)
            break;
        len += k;
    }
    fclose(f);
    char err[1024];
    jinja_t *t;
    if (jinja_parse(src, len, &t, err, sizeof err)) {
        printf("PARSE %zu\n%s\n", strlen(err), err);
        free(src);
        return 3;
    }
    free(src);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, stdin)) > 0) {
        char *out;
        size_t olen;
        if (jinja_render(t, line, NULL, &out, &olen, err, sizeof err) == 0) {
            printf("OK %zu\n", olen);
            fwrite(out, 1, olen, stdout);
            printf("\n");
            free(out);
        } else {
            printf("ERR %zu\n%s\n", strlen(err), err);
        }
    }
    free(line);
    jinja_free(t);
    return 0;
}
