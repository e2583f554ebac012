#!/bin/sh
# make_corpus.sh OUTDIR: builds the demo model's corpus, the King James Bible, from Debian's
# bible-kjv-text package (read through its `bible` program, package bible-kjv, 4.38 here).
#
# Exactly what it does:
#  1. `bible -f gen1:1-rev22:21` prints all 31102 verses, one a line, as "Ge1:1 In the
#     beginning ..." (book abbreviation, chapter:verse, one space, the verse text).  The text
#     carries no markup: plain ASCII letters and . , ; : ? ! ' ( ) -.
#  2. The reference (first field) is removed; runs of spaces become one space and leading or
#     trailing spaces go (three verses have a double or trailing space).  Nothing else
#     changes: case, punctuation and spelling are the 1769 text as the package has it.
#  3. The verses of one chapter are joined with one space: one chapter is one line (1189
#     lines, canonical order, Genesis 1 first).  The script checks that every chapter's
#     verses run 1, 2, 3, ... with none missing.
#  4. Split: counting chapters from 1, every 50th chapter (50, 100, ..., 1150: 23 chapters,
#     about 2% of the text) goes to kjv-valid.txt, the rest to kjv-train.txt.
# The output is byte-for-byte reproducible; the SHA-256 sums printed at the end are recorded
# in models/README.md.  Needs: bible (apt-get install bible-kjv), awk, sha256sum.
set -eu
out=${1:?usage: make_corpus.sh OUTDIR}
command -v bible >/dev/null 2>&1 || {
    echo "make_corpus.sh: the 'bible' program is missing: apt-get install bible-kjv" >&2
    exit 1
}
mkdir -p "$out"
LC_ALL=C bible -f 'gen1:1-rev22:21' </dev/null >"$out/kjv-verses.raw"
LC_ALL=C awk -v train="$out/kjv-train.txt" -v valid="$out/kjv-valid.txt" '
function flush() {
    if (key == "") return
    nch++
    if (nch % 50 == 0) { print line > valid; nvalid++ } else { print line > train; ntrain++ }
}
{
    ref = $1
    if (ref !~ /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+$/) {
        printf "make_corpus.sh: line %d: unexpected reference \"%s\"\n", NR, ref > "/dev/stderr"
        bad = 1; exit 1
    }
    k = ref; sub(/:[0-9]+$/, "", k)
    v = ref; sub(/^.*:/, "", v); v += 0
    text = substr($0, length(ref) + 2)
    gsub(/[ \t]+/, " ", text); sub(/^ /, "", text); sub(/ $/, "", text)
    if (k != key) {
        flush()
        key = k; line = text; want = 2
        if (v != 1) { printf "make_corpus.sh: %s does not start at verse 1\n", ref > "/dev/stderr"; bad = 1; exit 1 }
    } else {
        if (v != want) { printf "make_corpus.sh: %s: expected verse %d\n", ref, want > "/dev/stderr"; bad = 1; exit 1 }
        want++
        line = line " " text
    }
    nverse++
}
END {
    if (bad) exit 1
    flush()
    printf "verses %d, chapters %d: train %d, valid %d\n", nverse, nch, ntrain, nvalid
}' "$out/kjv-verses.raw"
rm -f "$out/kjv-verses.raw"
(cd "$out" && sha256sum kjv-train.txt kjv-valid.txt)
