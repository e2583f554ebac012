#!/usr/bin/env python3
"""test_fusion_cli.py: proves fusion-cli end to end: greedy text from an empty prompt is
exactly stories260K's reference (both files, fusion on and off, and with an f16 KV cache; a
q8_0 cache starts the same and then parts), seeded sampling replays,
speeds go to stderr only, the RoPE scaling flags (llama-server's) override a file's YaRN
keys exactly (a plain model with --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 32 writes
the YaRN model's text; none and linear change it), and bad input (too long a prompt, bad options, missing file)
fails with a clear message and exit status 1."""
import json
import os
import re
import subprocess
import sys
import tempfile

build = os.environ.get("top_builddir", ".")
cli = os.path.join(build, "fusion-cli")
shared = os.environ.get("FUSIOND_SHARED") or "../shared"
models = os.path.join(shared, "models")
ref_path = os.path.join(models, "stories260K.reference.json")
if not os.path.exists(ref_path):
    if os.environ.get("FUSIOND_REQUIRE_SHARED") == "1":
        print("FAIL: shared test data missing: %s (FUSIOND_REQUIRE_SHARED=1)" % ref_path)
        sys.exit(1)
    print("SKIP: shared test data missing: %s (set FUSIOND_SHARED)" % ref_path)
    sys.exit(77)
ref = json.load(open(ref_path, encoding="utf-8"))
model = os.path.join(models, "stories260K.gguf")
failures = 0


def run(*args):
    p = subprocess.run([cli] + list(args), capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


def check(cond, what, detail=""):
    global failures
    if cond:
        print("ok   %s" % what)
    else:
        failures += 1
        print("FAIL %s\n%s" % (what, detail))


for name in ("stories260K.gguf", "stories260K-ggml-org.gguf"):
    for fusion in ("on", "off"):
        rc, out, err = run("-m", os.path.join(models, name), "-n", "200", "--temp", "0",
                           "--fusion", fusion, "--threads", "1")
        check(rc == 0 and out == ref["text"], "greedy %s fusion %s is the reference" % (name, fusion),
              "rc=%d\nstdout=%r\nstderr=%s" % (rc, out, err))
        check("tokens/s" in err and "fusion %s" % fusion in err and "tokens/s" not in out,
              "speeds on stderr (%s, fusion %s)" % (name, fusion), err)

rc, out, err = run("-m", model, "-n", "200", "--temp", "0", "--softmax", "sumonly")
check(rc == 0 and out == ref["text"], "greedy with the sum-only softmax", err)

# KV cache types: an f16 cache keeps stories260K's 200 greedy tokens (measured: all of them);
# q8_0 rounds K and V to 8 bits, and the text only starts the same (304 characters measured)
rc, out, err = run("-m", model, "-n", "200", "--temp", "0", "-ctk", "f16", "-ctv", "f16")
check(rc == 0 and out == ref["text"], "greedy with an f16 KV cache is the reference", err)
rc, out, err = run("-m", model, "-n", "200", "--temp", "0", "--cache-type-k", "q8_0",
                   "--cache-type-v", "q8_0")
check(rc == 0 and out[:100] == ref["text"][:100] and out != ref["text"],
      "greedy with a q8_0 KV cache starts as the reference and then differs", "stdout=%r" % out)

# a prompt: the continuation only, not the prompt
rc, out, err = run("-m", model, "-p", "Once upon a time", "-n", "10", "--temp", "0")
check(rc == 0 and ref["text"].startswith("Once upon a time" + out) and len(out) > 0,
      "greedy continuation of a prompt", "stdout=%r" % out)

rc1, out1, _ = run("-m", model, "-n", "40", "--temp", "0.9", "--seed", "7")
rc2, out2, _ = run("-m", model, "-n", "40", "--temp", "0.9", "--seed", "7")
rc3, out3, _ = run("-m", model, "-n", "40", "--temp", "0.9", "--seed", "8", "--top-k", "0",
                   "--top-p", "1", "--min-p", "0")
check(rc1 == rc2 == rc3 == 0 and out1 == out2 and len(out1) > 0, "seeded sampling replays")
check(out3 != out1, "another seed gives other text", out3)

rc, out, err = run("-m", model, "-n", "0")
check(rc == 0 and out == "", "-n 0 prints nothing")

long_prompt = "Lily went to the park and saw a big dog. " * 8
rc, out, err = run("-m", model, "-p", long_prompt, "--ctx", "16")
check(rc == 1 and "longer than the context" in err and out == "", "prompt longer than the context", err)

rc, out, err = run("-m", model, "-n", "40", "--temp", "0", "--ctx", "20")
check(rc == 0 and "context full" in err and ref["text"].startswith(out), "stops at the context end", err)

# n-gram speculative decoding: the same text, greedy from the reference, seeded, at the ends
rc, out, err = run("-m", model, "-n", "200", "--temp", "0", "--draft-max", "6", "--lookup-min", "1")
m = re.search(r"speculation: \d+ steps, (\d+) draft tokens, (\d+) accepted", err)
check(rc == 0 and out == ref["text"] and m and 0 < int(m.group(2)) < int(m.group(1)),
      "greedy with speculation equals the reference (drafts taken and refused)", err)
rc1, out1, _ = run("-m", model, "-n", "60", "--temp", "0.9", "--seed", "7", "-p", "Lily and Ben. Lily and Ben.")
rc2, out2, err = run("-m", model, "-n", "60", "--temp", "0.9", "--seed", "7", "-p", "Lily and Ben. Lily and Ben.",
                     "--draft-max", "4")
check(rc1 == rc2 == 0 and out1 == out2 and "speculation:" in err, "seeded sampling with speculation", err)
for n in ("1", "3", "7"):
    rc1, out1, _ = run("-m", model, "-n", n, "--temp", "0")
    rc2, out2, _ = run("-m", model, "-n", n, "--temp", "0", "--draft-max", "8", "--lookup-min", "1")
    check(rc1 == rc2 == 0 and out1 == out2, "-n %s with speculation" % n)
rc, out, err = run("-m", model, "-n", "40", "--temp", "0", "--ctx", "20", "--draft-max", "8", "--lookup-min", "1")
check(rc == 0 and "context full" in err and ref["text"].startswith(out) and len(out) > 40,
      "speculation stops at the context end", err)

rc, out, err = run("--info", model)
check(rc == 0 and "llama.block_count" in out and "blk.4.ffn_down.weight" in out, "--info", err)

# RoPE scaling: random models from fusion-gguf-gen, with and without rope.scaling.* = yarn
gen = os.path.join(build, "fusion-gguf-gen")
with tempfile.TemporaryDirectory() as tmp:
    shape = ["--arch", "llama", "--n-embd", "64", "--n-layer", "2", "--n-head", "4",
             "--n-head-kv", "2", "--n-ff", "160", "--n-vocab", "512", "--n-ctx", "256",
             "-s", "5", "-j", "1"]
    yarn, plain = os.path.join(tmp, "yarn.gguf"), os.path.join(tmp, "plain.gguf")
    subprocess.run([gen, "-o", yarn, "--rope-scaling", "yarn:4:32"] + shape, check=True,
                   capture_output=True)
    subprocess.run([gen, "-o", plain] + shape, check=True, capture_output=True)
    greedy = ["-n", "40", "--temp", "0", "--threads", "1"]
    texts = {}
    for key, args in (("file", ["-m", yarn]),
                      ("flags", ["-m", plain, "--rope-scaling", "yarn", "--rope-scale", "4",
                                 "--yarn-orig-ctx", "32"]),
                      ("plain", ["-m", plain]),
                      ("none", ["-m", yarn, "--rope-scaling", "none"]),
                      ("linear", ["-m", yarn, "--rope-scaling", "linear"])):
        rc, out, err = run(*(args + greedy))
        check(rc == 0 and out, "RoPE scaling run %s" % key, err)
        texts[key] = out
    check(texts["file"] == texts["flags"], "the flags give the file's YaRN",
          "%r\n%r" % (texts["file"], texts["flags"]))
    check(texts["none"] == texts["plain"] and texts["none"] != texts["file"] and
          texts["linear"] not in (texts["file"], texts["none"]),
          "--rope-scaling none and linear override the file's yarn", repr(texts))

for args, what in ((["-m", model, "--fusion", "maybe"], "on or off"),
                   (["-m", model, "--rope-scaling", "longrope"],
                    "--rope-scaling takes none, linear or yarn, not 'longrope'"),
                   (["-m", model, "--yarn-beta-fast", "0"], "--yarn-beta-fast takes a number > 0"),
                   (["-m", model, "--rope-scale", "x"], "--rope-scale takes a number >= 0"),
                   (["-m", model, "--yarn-orig-ctx", "1.5"], "--yarn-orig-ctx takes a whole"),
                   (["-m", model, "--temp", "x"], "--temp"),
                   (["-m", model, "--draft-max", "65"], "--draft-max"),
                   (["-m", model, "--lookup-min", "3", "--lookup-max", "2"], "--lookup-min 3"),
                   (["-m", model, "--backend", "nope"], "nope"),
                   (["-m", model, "-ctk", "q4_k"], "--cache-type-k takes f32, f16"),
                   (["-m", model, "--cache-type-v", "fp16"], "not 'fp16'"),
                   (["-m", os.path.join(models, "missing.gguf")], "missing.gguf")):
    rc, out, err = run(*args)
    check(rc == 1 and what in err and out == "", "bad input %s" % " ".join(args[2:] or args), err)

# No -m: the demo model (installed, or the build tree's models/demo.gguf) answers.
rc, out, err = run("-p", "And God said", "-n", "12")
check(rc == 0 and len(out.split()) >= 3, "demo model by default", err)

sys.exit(1 if failures else 0)
