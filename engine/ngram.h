/* ngram.h: the draft of n-gram (prompt-lookup) speculative decoding: the tokens that followed
 * the most recent earlier occurrence of a sequence's last n tokens in its own history.
 * Called by the engine thread for each decoding sequence every step (engine.c), and by tests;
 * pure functions on caller memory, any thread. */
#ifndef FD_NGRAM_H
#define FD_NGRAM_H

#include <stdint.h>

/* Finds the draft for the n tokens tok[0..n-1] (prompt + generated).  For a match length L
 * from n_max down to n_min (and at most n - 1): the largest i with i + L < n and
 * tok[i..i+L-1] == tok[n-L..n-1] (an earlier occurrence of the last L tokens, overlapping
 * allowed); the first L that has one wins.  The draft is then up to k tokens of the history
 * that followed it, the draft itself continuing that history when the match runs into its
 * end (draft[j] = x[i + L + j] with x = tok followed by draft), so a repeating loop is
 * drafted in full.  draft may be tok + n (the engine drafts in place).  Returns the number
 * of draft tokens written (0: no match, or k <= 0, or bad sizes). */
int ngram_draft(const int32_t *tok, int n, int n_min, int n_max, int k, int32_t *draft);

#endif
