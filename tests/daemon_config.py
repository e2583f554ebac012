#!/usr/bin/env python3
"""daemon_config.py: proves fusiond's command line: --test-config exits 0 on a good file and 1
with file:line: reason on bad ones, starting with a bad configuration exits 78 (EX_CONFIG,
which the unit does not restart), --dump-config prints a file that reads back to the same
configuration, --help and --version work without a file, and etc/fusiond.conf is the
documented dump of the defaults, and llama-server's flags start it (aliases, ignored flags
reported, refused ones explained)."""

import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import TmpDir, check, fusiond_path  # noqa: E402


def run(args, timeout=30):
    p = subprocess.run([fusiond_path()] + args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def main():
    tmp = TmpDir()
    try:
        model = tmp.write("model.gguf", "a regular file is all --test-config checks\n")
        good = tmp.write("good.conf", "# a good file\nmodel = %s\nport = 9123\n"
                                      "api_keys = k1, k2\nbackend_option = a=1\n" % model)

        rc, out, err = run(["--test-config", "-c", good])
        check(rc == 0, "--test-config on a good file: exit %d, %s" % (rc, err))
        check("configuration OK" in out, "--test-config said: %r" % out)

        bad_cases = [
            ("port = 70000\n", 1, "port: 70000 is out of range 0..65535"),
            ("\n\nprot = 1\n", 3, "unknown option 'prot' (did you mean 'port'?)"),
            ("port = 1\nport = 2\n", 2, "duplicate option 'port' (first set on line 1)"),
            ("backend = tpu\n", 1, "backend: 'tpu' is not one of cpu, corsair, cuda"),
            ("model = /nonexistent/m.gguf\n", 1,
             "model: cannot read /nonexistent/m.gguf: No such file or directory"),
        ]
        for i, (text, line, reason) in enumerate(bad_cases):
            path = tmp.write("bad%d.conf" % i, text)
            want = "%s:%d: %s" % (path, line, reason)
            rc, out, err = run(["--test-config", "-c", path, "--model", model]
                               if "model" not in text else ["--test-config", "-c", path])
            check(rc == 1, "--test-config on %r: exit %d" % (text, rc))
            check(want in err, "--test-config on %r printed %r, want %r" % (text, err, want))
            # Starting the daemon with it: exit 78, the same message.
            rc, out, err = run(["-c", path, "--model", model] if "model" not in text
                               else ["-c", path])
            check(rc == 78, "starting with %r: exit %d (want 78)" % (text, rc))
            check(want in err, "starting with %r printed %r" % (text, err))

        # A bad flag: 78 when starting, 1 under --test-config.
        rc, out, err = run(["-c", good, "--port=abc"])
        check(rc == 78 and "--port: 'abc' is not an integer" in err, "bad flag: %d %r" % (rc, err))
        rc, out, err = run(["-c", good, "--test-config", "--prot=1"])
        check(rc == 1 and "unknown option --prot (did you mean --port?)" in err,
              "bad flag under --test-config: %d %r" % (rc, err))
        # An explicitly named file must exist.
        rc, out, err = run(["--test-config", "-c", tmp.path + "/none.conf"])
        check(rc == 1 and "none.conf: cannot read: No such file or directory" in err,
              "missing file: %d %r" % (rc, err))

        # llama-server's command line: its flags that mean nothing here are accepted and
        # reported, -nocb and a number after -c are refused with the fusiond spelling.
        rc, out, err = run(["--test-config", "-c", good, "-ngl", "99", "-fa", "on",
                            "--alias", "chat", "-np", "4", "--metrics"])
        check(rc == 0, "llama-server flags: exit %d, %s" % (rc, err))
        for note in ("fusiond: -ngl 99: ignored: --backend runs every layer",
                     "fusiond: -fa on: ignored:", "fusiond: --metrics: ignored:"):
            check(note in err, "--test-config did not report %r: %r" % (note, err))
        rc, dump, err = run(["--dump-config", "-c", good, "--alias", "chat", "-np", "4"])
        check(rc == 0 and "model_alias = chat\n" in dump and "max_running = 4\n" in dump,
              "llama-server aliases in the dump: %d %r" % (rc, dump))
        rc, out, err = run(["-c", good, "-nocb"])
        check(rc == 78 and "-nocb: fusiond always batches continuously" in err,
              "-nocb: %d %r" % (rc, err))
        rc, out, err = run(["--test-config", "-c", "4096"])
        check(rc == 1 and "llama-server's context size is --ctx-size 4096" in err,
              "-c 4096: %d %r" % (rc, err))

        # --dump-config: the effective configuration (flags win) reads back identically.
        rc, dump, err = run(["--dump-config", "-c", good, "--port=9200", "--no-fusion"])
        check(rc == 0, "--dump-config: exit %d %s" % (rc, err))
        check("port = 9200\n" in dump and "fusion = off\n" in dump and
              "api_keys = k1,k2\n" in dump and "backend_option = a=1\n" in dump,
              "--dump-config lacks the effective values:\n" + dump)
        again = tmp.write("dump.conf", dump)
        rc, dump2, err = run(["--dump-config", "-c", again])
        check(rc == 0 and dump2 == dump, "the dump does not read back identically: %s" % err)
        rc, out, err = run(["--test-config", "-c", again])
        check(rc == 0, "--test-config on the dump: %d %s" % (rc, err))

        # The shipped file is the documented dump of the defaults.
        rc, doc, err = run(["--config=/dev/null", "--dump-config", "--verbose"])
        src = os.environ.get("top_srcdir", ".")
        with open(os.path.join(src, "etc", "fusiond.conf")) as f:
            check(f.read() == doc, "etc/fusiond.conf differs from --dump-config --verbose")

        # --help and --version need no file, even a broken one.
        broken = tmp.write("broken.conf", "this is not a config\n")
        rc, out, err = run(["--help", "-c", broken])
        check(rc == 0 and "--test-config" in out and "--max-body-bytes" in out,
              "--help: %d %r" % (rc, err))
        rc, out, err = run(["--version"])
        check(rc == 0 and out.startswith("fusiond ") and "data directory:" in out,
              "--version: %d %r" % (rc, out))
        print("PASS: daemon_config")
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    main()
