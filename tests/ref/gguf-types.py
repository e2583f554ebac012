#!/usr/bin/env python3
"""gguf-types.py A.gguf B.gguf: compares the two files' tensor types, name by name (the
GGUF header only; no numpy).  Prints each difference; exits 1 if there is one."""
import struct
import sys

NAMES = {0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0',
         10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 20: 'IQ4_NL',
         23: 'IQ4_XS', 30: 'BF16', 39: 'MXFP4'}
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def tensor_types(path):
    data = open(path, 'rb').read()
    if data[:4] != b'GGUF':
        sys.exit(f'{path}: not a GGUF file')
    off = 8
    n_tensors, n_kv = struct.unpack_from('<QQ', data, off)
    off += 16

    def string():
        nonlocal off
        n, = struct.unpack_from('<Q', data, off)
        off += 8 + n
        return data[off - n:off].decode()

    def value(t):
        nonlocal off
        if t == 8:
            string()
        elif t == 9:
            at, n = struct.unpack_from('<IQ', data, off)
            off += 12
            for _ in range(n):
                value(at)
        else:
            off += SIZES[t]

    for _ in range(n_kv):
        string()
        t, = struct.unpack_from('<I', data, off)
        off += 4
        value(t)
    types = {}
    for _ in range(n_tensors):
        name = string()
        n_dims, = struct.unpack_from('<I', data, off)
        off += 4 + 8 * n_dims
        t, = struct.unpack_from('<I', data, off)
        off += 4 + 8
        types[name] = NAMES.get(t, str(t))
    return types


a, b = tensor_types(sys.argv[1]), tensor_types(sys.argv[2])
diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
for k in diff:
    print(f'  {k}: fusion-gguf-gen {a.get(k)}, llama.cpp {b.get(k)}')
sys.exit(1 if diff else 0)
