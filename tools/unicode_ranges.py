"""What the Unicode table generators share (tools/gen-unicode-tables.py,
tools/gen-wordpiece-tables.py): the code point ranges of a predicate, and a table of pairs
written as a C array.
"""


def ranges(pred):
    """The sorted, disjoint, inclusive (first, last) ranges of the code points pred holds for."""
    out, start = [], None
    for cp in range(0x110000):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def emit(name, pairs):
    """Prints pairs as `static const uint32_t name[][2]`, in hexadecimal, lines of at most 92."""
    print("static const uint32_t %s[][2] = {" % name)
    line = "   "
    for a, b in pairs:
        item = " {0x%X, 0x%X}," % (a, b)
        if len(line) + len(item) > 92:
            print(line)
            line = "   "
        line += item
    print(line)
    print("};")
