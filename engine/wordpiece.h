/* wordpiece.h: the WordPiece (BERT) normalizer and word split, as llama.cpp's WPM tokenizer
 * does them: each code point replaced by the first code point of its canonical decomposition
 * (so precomposed accents go), lower-cased (first code point of its lower case), NUL,
 * U+FFFD, control and format characters dropped, white space separating words, and every
 * punctuation character, ASCII symbol and CJK ideograph a word of its own.  The greedy
 * longest-match of the words against the vocabulary is tokenizer.c's.  Pure functions on
 * caller memory: any thread. */
#ifndef FD_WORDPIECE_H
#define FD_WORDPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes wpm_words may write for n input bytes (a character never grows past 4 bytes). */
static inline size_t wpm_out_cap(size_t n) { return 4 * n + 4; }

/* Splits s[0..n) (any bytes: ill-formed UTF-8 is dropped, as llama.cpp's U+FFFD is) into
 * normalized words: their UTF-8 bytes back to back in out (wpm_out_cap(n) bytes), word k
 * ending at out[ends[k]] (ends: n + 1 entries).  Returns the number of words (never an empty
 * one). */
size_t wpm_words(const uint8_t *s, size_t n, uint8_t *out, size_t *ends);

/* The single properties, for tests. */
uint32_t wpm_nfd(uint32_t cp);
uint32_t wpm_lower(uint32_t cp);
bool wpm_is_punct(uint32_t cp);
bool wpm_is_control(uint32_t cp);
bool wpm_is_space(uint32_t cp);
bool wpm_is_cjk(uint32_t cp);
const char *wpm_data_version(void);

#endif
