/* unicode.h: UTF-8 decoding and encoding, and the few Unicode properties the tokenizers'
 * pre-splitters need (letter, number, white space; tables generated from Unicode data by
 * tools/gen-unicode-tables.py).  Pure functions on caller memory: any layer above common
 * (engine, server) and any thread may call them. */
#ifndef FD_UNICODE_H
#define FD_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Character classes of the pre-tokenizer regexes: \p{L}, \p{N}, \s, everything else. */
enum uni_class { UNI_OTHER = 0, UNI_LETTER = 1, UNI_NUMBER = 2, UNI_SPACE = 3 };

#define UNI_REPLACEMENT 0xFFFDu

/* Looks at the bytes s[0..n).  Returns k > 0 when they start with a well-formed UTF-8
 * character of k bytes (*cp set); 0 when all n bytes are a well-formed but unfinished prefix
 * (more bytes could complete it; also for n == 0); -k when they are ill-formed, k being the
 * length of the maximal subpart (Unicode's "best practice" for U+FFFD substitution: one
 * U+FFFD per k bytes).  Overlongs, surrogates and values past U+10FFFF are ill-formed. */
int uni_scan(const uint8_t *s, size_t n, uint32_t *cp);

/* Writes the UTF-8 form of cp (< 0x110000, not a surrogate) to out; returns its length, or
 * 0 (nothing written) for a value that has none. */
int uni_encode(uint32_t cp, uint8_t out[4]);

/* The class of a code point (white space is Unicode's White_Space property). */
int uni_class(uint32_t cp);
bool uni_is_letter(uint32_t cp);
bool uni_is_number(uint32_t cp);
bool uni_is_space(uint32_t cp);

/* True when s[0..n) is entirely well-formed UTF-8. */
bool uni_valid(const uint8_t *s, size_t n);

/* The Unicode version of the property tables. */
const char *uni_data_version(void);

#endif
