/* test_jinja.c: proves server/jinja.c renders each Jinja construct chat templates use as
 * jinja2 renders it under transformers' settings (every expected string below was checked
 * with python3-jinja2: trim_blocks, lstrip_blocks, loopcontrols, json.dumps tojson), reports
 * syntax and render errors with their line and column, stops runaway templates at its
 * limits, and refuses malformed templates and variables cleanly. */
#include "server/jinja.h"

#include <string.h>
#include <time.h>

#include "common/fd.h"
#include "tests/testutil.h"

/* renders tmpl with vars; returns the output (static) or "ERR: message" */
static const char *render(const char *tmpl, const char *vars)
{
    static char buf[8192];
    char err[512];
    jinja_t *t;
    int rc = jinja_parse(tmpl, strlen(tmpl), &t, err, sizeof err);
    if (rc) {
        snprintf(buf, sizeof buf, "PARSE: %s", err);
        return buf;
    }
    char *out;
    size_t len;
    rc = jinja_render(t, vars, NULL, &out, &len, err, sizeof err);
    jinja_free(t);
    if (rc) {
        snprintf(buf, sizeof buf, "ERR: %s", err);
        return buf;
    }
    ck_assert_uint_eq(strlen(out), len);
    snprintf(buf, sizeof buf, "%s", out);
    free(out);
    return buf;
}

static const struct {
    const char *tmpl, *vars, *want;
} cases[] = {
    /* output, literals, Python's str() */
    {"{{ 'a' ~ 1 ~ 1.5 ~ none ~ true }}", "{}", "a11.5NoneTrue"},
    {"{{ [1, 'a', {'b': none, 'c': 1.5e20}, true] }}", "{}",
     "[1, 'a', {'b': None, 'c': 1.5e+20}, True]"},
    {"{{ 1e-5 }}|{{ 10 / 4 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 0.1 + 0.2 }}",
     "{}", "1e-05|2.5|3|-4|2|1024|0.30000000000000004"},
    {"{{ \"it's\" }}|{{ [\"it's\", 'q\"'] }}|{{ x }}", "{\"x\": [1.0, 100.0, 1e16, -0.0]}",
     "it's|[\"it's\", 'q\"']|[1.0, 100.0, 1e+16, -0.0]"},
    {"{{ 'a' 'b' }}{{ \"\\n\\t\\u00e9\" }}", "{}", "ab\n\té"},
    {"{{ undefined_thing }}|{{ x.missing }}|{{ x['missing'] }}", "{\"x\": {}}", "||"},
    /* whitespace control, trim_blocks and lstrip_blocks */
    {"  {% if true %}\n  x\n  {% endif %}\n  {{ 1 }}  {# c #}\n y", "{}", "  x\n  1   y"},
    {"a  {%- if true -%}  b  {%- endif -%}  c", "{}", "abc"},
    {"a\n  {%+ if true %}b{% endif +%}\nc", "{}", "a\n  b\nc"},
    {"{% raw %}{{ x }}{% endraw %}", "{}", "{{ x }}"},
    {"line\n", "{}", "line"},
    {"a\r\nb\r\n\r\n", "{}", "a\nb\n"},
    /* for loops */
    {"{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}"
     "{{ loop.last }}{{ loop.length }};{% endfor %}", "{\"xs\": [5, 6]}",
     "102TrueFalse2;211FalseTrue2;"},
    {"{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}",
     "{\"xs\": [1, 2, 3]}", "2232"},
    {"{% for x in [] %}{{ x }}{% else %}empty{% endfor %}", "{}", "empty"},
    {"{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", "{\"d\": {\"b\": 1, \"a\": 2}}",
     "b=1,a=2,"},
    {"{% for k in d %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}",
     "{\"d\": {\"b\": 1, \"a\": 2}}", "ba[h][é]"},
    {"{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}"
     "{% endif %}{{ x }}{% endfor %}", "{\"xs\": [1, 2, 3, 4, 5]}", "13"},
    {"{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}", "{}", "[][]"},
    {"{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}", "{}",
     "[5][5]5"},
    {"{% for x in xs %}{{ loop.previtem }}-{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }} "
     "{% endfor %}", "{\"xs\": [1, 2, 3]}", "-2/a 1-3/b 2-/a "},
    /* if, set, namespace, block set */
    {"{% if a %}A{% elif b %}B{% else %}C{% endif %}", "{\"a\": 0, \"b\": \"x\"}", "B"},
    {"{% set ns = namespace(n=0, s='') %}{% for x in [1, 2, 3] %}{% set ns.n = ns.n + x %}"
     "{% endfor %}{{ ns.n }}", "{}", "6"},
    {"{% set a, b = [1, 2] %}{{ b }}{{ a }}{% set t = 1, 2 %}{{ t }}", "{}", "21(1, 2)"},
    {"{% set x %}  in {{ 1 }} {% endset %}[{{ x }}]{% set y | trim | upper %} y {% endset %}"
     "{{ y }}", "{}", "[  in 1 ]Y"},
    /* macros and call blocks */
    {"{% macro f(a, b=2) %}{{ a }}-{{ b }}-{{ x }}{% endmacro %}{% set x = 3 %}{{ f(1) }}"
     "{% for i in [1] %}{% set x = 9 %}{{ f(2, b=4) }}{% endfor %}", "{}", "1-2-32-4-3"},
    {"{% macro f() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, k='v') }}", "{}",
     "(1, 2){'k': 'v'}"},
    {"{% macro box(t) %}<{{ caller(t) }}>{% endmacro %}{% call(v) box('x') %}[{{ v }}]"
     "{% endcall %}", "{}", "<[x]>"},
    {"{% filter upper %}ab{{ 'c' }}{% endfilter %}", "{}", "ABC"},
    /* operators, tests, ternary */
    {"{{ 1 if x else 2 }}{{ 'y' if not x }}{{ 3 if x is defined and x is none }}",
     "{\"x\": null}", "2y3"},
    {"{{ 'b' in 'abc' }}{{ 1 in [1] }}{{ 'k' in d }}{{ 'z' not in d }}{{ 1 < 2 < 3 }}"
     "{{ 3 > 2 > 2 }}", "{\"d\": {\"k\": 1}}", "TrueTrueTrueTrueTrueFalse"},
    {"{{ x is string }}{{ x is number }}{{ d is mapping }}{{ l is iterable }}"
     "{{ l is sequence }}{{ t is boolean }}{{ t is true }}{{ f is false }}{{ 4 is even }}"
     "{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ x is equalto 'a' }}{{ x == 'a' }}"
     "{{ 1 is integer }}{{ 1.0 is float }}{{ u is undefined }}{{ x is not none }}",
     "{\"x\": \"a\", \"d\": {}, \"l\": [], \"t\": true, \"f\": false}",
     "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"{{ 'ab' * 3 }}{{ [1] * 2 }}{{ [1] + [2] }}{{ 'a' + 'b' }}{{ -x }}{{ 1 == 1.0 }}"
     "{{ true == 1 }}", "{\"x\": 2}", "ababab[1, 1][1, 2]ab-2TrueTrue"},
    {"{{ '%s=%d %.2f %05.1f %%' % ('a', 3, 1.5, 2.25) }}{{ '%s' | format(x) }}", "{\"x\": [1]}",
     "a=3 1.50 002.2 %[1]"},
    /* subscripts and slices (by code point) */
    {"{{ s[0] }}{{ s[-1] }}{{ s[1:] }}{{ s[::-1] }}{{ l[1:] }}{{ l[::-1] }}{{ l[-2:] }}"
     "{{ l[:1] }}{{ l[5:] }}", "{\"s\": \"hé!\", \"l\": [1, 2, 3]}",
     "h!é!!éh[2, 3][3, 2, 1][2, 3][1][]"},
    {"{{ m.content }}{{ m['role'] }}{{ l.0 }}{{ m.items is defined }}", "{\"m\": {\"role\": \"user\", "
     "\"content\": \"hi\"}, \"l\": [7]}", "hiuser7True"},
    /* string methods */
    {"{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ ' a'.lstrip() }}|{{ 'a '.rstrip() }}|"
     "{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|"
     "{{ 'a,b,c'.rsplit(',', 1) }}", "{}",
     "a b|a|a|a|['a', 'b', '', 'c']|['a', 'b']|['a', 'b,c']|['a,b', 'c']"},
    {"{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'hello world'.title() }}"
     "{{ 'aBc'.upper() }}{{ 'aBc'.lower() }}{{ 'aBc'.capitalize() }}{{ 'aa'.replace('a', 'b') }}"
     "{{ '{} {x}'.format(1, x=2) }}{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}"
     "{{ 'abcb'.count('b') }}{{ '-'.join(['a', 'b']) }}", "{}",
     "TrueTrueHello WorldABCabcAbcbb1 2132a-b"},
    /* dict methods */
    {"{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 0) }}{{ d.keys() | list }}"
     "{{ d.values() | list }}{{ d.items() | list }}", "{\"d\": {\"a\": 1}}",
     "1None0['a'][1][('a', 1)]"},
    /* filters */
    {"{{ ' x ' | trim }}|{{ [1, 2] | length }}|{{ 'abc' | count }}|{{ 'ab' | upper }}|"
     "{{ 'AB' | lower }}|{{ 'hello-world foo' | title }}|{{ 'aBC' | capitalize }}|"
     "{{ 'aab' | replace('a', 'x') }}|{{ [1, 'b'] | join(', ') }}|{{ u | default('d') }}|"
     "{{ '' | d('e', true) }}|{{ 1 | string }}|{{ '42' | int + 1 }}|{{ '1.5' | float }}|"
     "{{ 'x' | int }}|{{ 3.7 | int }}", "{}",
     "x|2|3|AB|ab|Hello-World Foo|Abc|xxb|1, b|d|e|1|43|1.5|0|3"},
    {"{{ l | first }}{{ l | last }}{{ l | reverse | list }}{{ 'abc' | reverse }}"
     "{{ l | unique | list }}{{ l | sort }}{{ l | sort(reverse=true) }}{{ l | min }}"
     "{{ l | max }}{{ l | sum }}{{ [-1.5] | map('abs') | list }}{{ 2.5 | round }}"
     "{{ 2.567 | round(2) }}", "{\"l\": [3, 1, 3, 2]}",
     "32[2, 3, 1, 3]cba[3, 1, 2][1, 2, 3, 3][3, 3, 2, 1]139[1.5]2.02.57"},
    {"{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | join }}"
     "{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}"
     "{{ ms | selectattr('x') | list | length }}{{ [0, 1, 2] | select | list }}"
     "{{ [0, 1, 2] | reject('odd') | list }}{{ ms | map(attribute='x', default='-') | join }}"
     "{{ ['a', 'B'] | map('upper') | join }}{{ ms[:1] | map(attribute='f.g') | list }}",
     "{\"ms\": [{\"role\": \"user\", \"c\": \"a\", \"x\": 1, \"f\": {\"g\": 5}}, "
     "{\"role\": \"assistant\", \"c\": \"b\"}, {\"role\": \"user\", \"c\": \"c\"}]}",
     "ac11[1, 2][0, 2]1--AB[5]"},
    {"{{ d | dictsort }}{{ d | items | list }}{{ d | tojson }}", "{\"d\": {\"b\": 1, \"A\": 2}}",
     "[('A', 2), ('b', 1)][('b', 1), ('A', 2)]{\"b\": 1, \"A\": 2}"},
    {"{{ x | tojson }}", "{\"x\": {\"s\": \"é\\\"\\n\\u0001\", \"n\": [1, 1.0, 1e20, -0.0, "
     "123456789012345678901234567890, null, true], \"e\": {}, \"l\": []}}",
     "{\"s\": \"é\\\"\\n\\u0001\", \"n\": [1, 1.0, 1e+20, -0.0, 123456789012345678901234567890, "
     "null, true], \"e\": {}, \"l\": []}"},
    {"{{ x | tojson(indent=2) }}", "{\"x\": {\"a\": [1, {}], \"b\": []}}",
     "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"},
    {"{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n' | indent }}",
     "{}", "a\n  b\n\n  c|  a\n  b|a\n"},
    {"{{ '<a&\"b\\'>' | e }}{{ '<x>' | safe }}", "{}", "&lt;a&amp;&#34;b&#39;&gt;<x>"},
    /* globals */
    {"{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ range(3, 0, -1) | list }}"
     "{{ dict(a=1) }}{{ namespace(a=1).a }}", "{}", "[0, 1, 2][1, 3, 5][3, 2, 1]{'a': 1}1"},
    {"{% if x %}{{ raise_exception('no ' ~ x) }}{% endif %}ok", "{\"x\": \"way\"}", "ERR: no way"},
    {"{% generation %}kept{% endgeneration %}", "{}", "kept"},
};

START_TEST(test_constructs)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *got = render(cases[i].tmpl, cases[i].vars);
        ck_assert_msg(strcmp(got, cases[i].want) == 0, "case %zu: %s\n want %s\n  got %s", i,
                      cases[i].tmpl, cases[i].want, got);
    }
}
END_TEST

START_TEST(test_strftime)
{
    char want[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(want, sizeof want, "%d %b %Y", &tm);
    ck_assert_str_eq(render("{{ strftime_now('%d %b %Y') }}", "{}"), want);
}
END_TEST

static const struct {
    const char *tmpl, *vars, *want;
} errors[] = {
    {"a\n{% if x %}", "{}", "PARSE: line 2 column 11: unexpected end of template: the 'if' "
     "of line 2 column 4 is not closed (expected 'endif')"},
    {"{{ 1 + }}", "{}", "PARSE: line 1 column 8: unexpected '}}' in an expression"},
    {"{{ x", "{}", "PARSE: line 1 column 1: unexpected end of template: '{{' is not closed"},
    {"{% endfor %}", "{}", "PARSE: line 1 column 4: unexpected 'endfor'"},
    {"{% for x %}{% endfor %}", "{}", "PARSE: line 1 column 10: expected 'in' in a for loop, "
     "got '%}'"},
    {"{% frob %}", "{}", "PARSE: line 1 column 4: unknown tag 'frob'"},
    {"{% include 'x' %}", "{}", "PARSE: line 1 column 4: 'include' is not supported in a chat "
     "template"},
    {"{% break %}", "{}", "PARSE: line 1 column 4: 'break' outside a for loop"},
    {"{{ 'abc }}", "{}", "PARSE: line 1 column 4: unterminated string literal"},
    {"{# open", "{}", "PARSE: line 1 column 1: unexpected end of template: comment '{#' is "
     "not closed"},
    {"{{ a $ b }}", "{}", "PARSE: line 1 column 6: unexpected character '$'"},
    {"ok\n  {{ x.y.z }}", "{}", "ERR: line 2 column 8: 'x' is undefined"},
    {"{{ m.content.z }}", "{\"m\": {}}", "ERR: line 1 column 14: 'dict object' has no attribute "
     "'content'"},
    {"{{ 1 + 'a' }}", "{}", "ERR: line 1 column 6: unsupported operand type(s) for +: 'int' "
     "and 'str'"},
    {"{{ 1 / 0 }}", "{}", "ERR: line 1 column 6: division by zero"},
    {"{{ 1 < 'a' }}", "{}", "ERR: line 1 column 4: '<' not supported between instances of "
     "'int' and 'str'"},
    {"{{ x | nofilter }}", "{}", "ERR: line 1 column 8: no filter named 'nofilter'"},
    {"{{ x is notest }}", "{}", "ERR: line 1 column 9: no test named 'notest'"},
    {"{% for x in 3 %}{% endfor %}", "{}", "ERR: line 1 column 13: 'int' object is not iterable"},
    {"{{ u | tojson }}", "{}", "ERR: line 1 column 8: 'u' is undefined"},
    {"{% set x.a = 1 %}", "{\"x\": {}}", "ERR: line 1 column 10: cannot assign attribute on "
     "non-namespace object"},
    {"{{ l.append(1) }}", "{\"l\": []}", "ERR: line 1 column 12: access to attribute 'append' of "
     "'list' object is unsafe."},
    {"{{ ms | map(attribute='f.g') | list }}", "{\"ms\": [{}]}", "ERR: line 1 column 9: "
     "'dict object' has no attribute 'f'"},
    {"x", "[1]", "ERR: the template's variables are not a JSON object"},
    {"x", "{\"a\": }", "ERR: the template's variables are not a JSON object"},
    {"x", "{\"a\": 1} x", "ERR: the template's variables are not a JSON object"},
};

START_TEST(test_errors)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(errors); i++) {
        const char *got = render(errors[i].tmpl, errors[i].vars);
        ck_assert_msg(strcmp(got, errors[i].want) == 0, "error %zu: %s\n want %s\n  got %s", i,
                      errors[i].tmpl, errors[i].want, got);
    }
}
END_TEST

/* runaway templates stop at the limits with FD_ERANGE */
START_TEST(test_limits)
{
    static const struct {
        const char *tmpl, *msg;
    } runaway[] = {
        {"{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
         "loop iterations"},
        {"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested more than"},
        {"{% for i in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxx{% endfor %}", "output exceeds"},
        {"{{ 'x' * 100000000 }}", "output exceeds"},
    };
    jinja_limits_t lim = {.max_output = 100000, .max_steps = 200000, .max_depth = 20,
                          .max_memory = 64 << 20};
    for (size_t i = 0; i < FD_ARRAY_LEN(runaway); i++) {
        jinja_t *t;
        char err[256];
        ck_assert_int_eq(jinja_parse(runaway[i].tmpl, strlen(runaway[i].tmpl), &t, err,
                                     sizeof err), 0);
        char *out = NULL;
        size_t len;
        int rc = jinja_render(t, "{}", &lim, &out, &len, err, sizeof err);
        ck_assert_msg(rc == FD_ERANGE, "runaway %zu: rc %d (%s)", i, rc, err);
        ck_assert_msg(strstr(err, runaway[i].msg), "runaway %zu: %s", i, err);
        ck_assert_ptr_null(out);
        jinja_free(t);
    }
    /* a parse that nests without end is refused, not a stack overflow */
    char deep[4000];
    size_t k = 0;
    k += (size_t)snprintf(deep + k, sizeof deep - k, "{{ ");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '-';
    k += (size_t)snprintf(deep + k, sizeof deep - k, "1 }}");
    jinja_t *t;
    char err[256];
    ck_assert_int_eq(jinja_parse(deep, k, &t, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "nested too deeply"), "%s", err);
}
END_TEST

/* every prefix of a real-looking template parses or fails cleanly (no crash, no leak) and
 * a parsed template renders the same twice, and may be rendered from several places */
START_TEST(test_malformed_prefixes)
{
    static const char tmpl[] =
        "{%- set ns = namespace(first=true) -%}\n{% for m in messages %}{% if m.role == "
        "'user' %}<u>{{ m.content | trim }}</u>{% elif m['role'] == \"assistant\" %}{{ '<a>' "
        "+ m.content ~ '</a>' }}{% else %}{{ raise_exception('bad role ' + m.role) }}"
        "{% endif %}{# note #}{% endfor %}{%- if add_generation_prompt -%}<a>{%- endif %}";
    const char *vars = "{\"messages\": [{\"role\": \"user\", \"content\": \" hi \"}, "
                       "{\"role\": \"assistant\", \"content\": \"yo\"}], "
                       "\"add_generation_prompt\": true}";
    for (size_t n = 0; n <= sizeof tmpl - 1; n++) {
        jinja_t *t;
        char err[256];
        int rc = jinja_parse(tmpl, n, &t, err, sizeof err);
        if (rc) {
            ck_assert_int_eq(rc, -EINVAL);
            ck_assert_msg(strncmp(err, "line ", 5) == 0, "prefix %zu: %s", n, err);
            continue;
        }
        char *out;
        size_t len;
        rc = jinja_render(t, vars, NULL, &out, &len, err, sizeof err);
        if (rc == 0)
            free(out);
        jinja_free(t);
    }
    jinja_t *t;
    char err[256];
    ck_assert_int_eq(jinja_parse(tmpl, sizeof tmpl - 1, &t, err, sizeof err), 0);
    ck_assert(jinja_uses(t, "messages"));
    ck_assert(jinja_uses(t, "add_generation_prompt"));
    ck_assert(!jinja_uses(t, "tools"));
    char *a, *b;
    size_t la, lb;
    ck_assert_int_eq(jinja_render(t, vars, NULL, &a, &la, err, sizeof err), 0);
    ck_assert_int_eq(jinja_render(t, vars, NULL, &b, &lb, err, sizeof err), 0);
    ck_assert_str_eq(a, "<u>hi</u><a>yo</a><a>");
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    ck_assert_int_eq(jinja_render(t, "{\"messages\": [{\"role\": \"x\", \"content\": \"\"}]}",
                                  NULL, &a, &la, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "bad role x");
    jinja_free(t);
    jinja_free(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jinja");
    TCase *tc = tcase_create("jinja");
    tcase_add_test(tc, test_constructs);
    tcase_add_test(tc, test_strftime);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_malformed_prefixes);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
