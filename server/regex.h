/* regex.h: vLLM's guided_regex and guided_choice as GBNF text (engine/gbnf.h), which the
 * request compiles like a "grammar" field.  Owns nothing beyond the call; any thread
 * (request parsing, on the event loop).
 *
 * The regex subset: literals, escapes (\n \t \r \f \v \xHH \uHHHH and escaped
 * punctuation), classes [...] and [^...] with ranges and \d \w \s inside, \d \D \w \W \s
 * \S, ., groups ( ) (?: ) (?P<name> ) (?<name> ), alternation |, the quantifiers * + ?
 * {m} {m,} {m,n} {,n} (a lazy one's trailing ? changes nothing: the language is the
 * same), and ^ at the start and $ at the end (the whole output matches either way).  "."
 * is any character but a newline, as in Python.  Refused by name, never ignored:
 * backreferences, lookaround, word boundaries, anchors elsewhere, inline flags, possessive
 * quantifiers, POSIX classes and Unicode properties. */
#ifndef FD_REGEX_H
#define FD_REGEX_H

#include <stddef.h>

/* The GBNF text (malloc'd) of a grammar whose sentences are the strings the whole regex
 * matches.  0, -EINVAL (a malformed regex), FD_EUNSUP (a construct outside the subset),
 * -ENOMEM; err says what and at which column ("column C: ..."). */
int rx_to_gbnf(const char *re, size_t len, char **out, char *err, size_t errlen);

/* The GBNF text of "exactly one of these n strings".  0 or -ENOMEM. */
int rx_choice_gbnf(const char *const *s, const size_t *lens, int n, char **out);

#endif
