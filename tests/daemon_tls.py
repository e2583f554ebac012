#!/usr/bin/env python3
"""daemon_tls.py: proves HTTPS (tls_cert_file / tls_key_file): the daemon serves the API over
TLS with a certificate that a client verifies (health, a completion, a stream, the same text
as plain HTTP), a plain-HTTP request to that port gets no answer, a world-readable key is
warned about, and every bad pair is a configuration error (exit 78; --test-config exit 1)
naming the file and the reason: one file without the other, a missing file, a key given as
the certificate and the reverse, a key of another certificate, an encrypted key, a
certificate whose body is not base64, a key cut short.  A renewal rewritten in place and a
SIGHUP put the new certificate on new connections (a client trusting only the old one is
refused); a pair that does not fit at a reload is logged and the one in use kept.  Test certificates come from the openssl command
(skip when it is missing)."""

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import SKIP, Daemon, TmpDir, check, fail, fusiond_path  # noqa: E402


def openssl(*args):
    p = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        fail("openssl %s: %s" % (" ".join(args), p.stderr.decode()))


def make_pair(tmp, name, key_type):
    """A self-signed certificate for 127.0.0.1 and its key (mode 0600): (cert, key)."""
    cert = os.path.join(tmp.path, name + "-cert.pem")
    key = os.path.join(tmp.path, name + "-key.pem")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" \
        else ["-newkey", "rsa:2048"]
    openssl("req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert, "-days", "30",
            "-subj", "/CN=" + name, "-addext", "subjectAltName=IP:127.0.0.1")
    os.chmod(key, 0o600)
    return cert, key


def run(args, timeout=30):
    p = subprocess.run([fusiond_path()] + args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stderr.decode()


def sse_text(d, body):
    """The streamed completion's text, over d's connection kind."""
    st, h, raw = d.request("POST", "/v1/completions", dict(body, stream=True))
    check(st == 200 and h.get("content-type", "").startswith("text/event-stream"),
          "stream over HTTPS: %d %r" % (st, h))
    text = ""
    done = False
    for line in raw.decode().split("\n"):
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            text += json.loads(line[6:])["choices"][0]["text"]
    check(done, "stream over HTTPS: no [DONE]")
    return text


def main():
    if not shutil.which("openssl"):
        print("SKIP: the openssl command is missing (apt-get install openssl): it makes the "
              "test certificates")
        return SKIP
    src = os.environ.get("top_srcdir", ".")
    model = os.path.abspath(os.path.join(src, "models", "demo.gguf"))
    check(os.access(model, os.R_OK), "the demo model is missing: %s" % model)
    tmp = TmpDir()
    try:
        cert, key = make_pair(tmp, "server", "ec")
        other_cert, other_key = make_pair(tmp, "other", "rsa")
        enc_key = os.path.join(tmp.path, "enc-key.pem")
        openssl("pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", enc_key)
        with open(cert) as f:
            lines = f.read().splitlines()
        junk = tmp.write("junk-cert.pem", "\n".join([lines[0], "not base64 at all!"] + lines[-1:])
                         + "\n")
        # base64 that is not DER: a key cut short
        with open(key) as f:
            klines = f.read().splitlines()
        cut_key = tmp.write("cut-key.pem", "\n".join(klines[:2] + ["AAAA"] + klines[-1:]) + "\n")
        base = ["--model", model, "--port", "0", "--threads", "1"]

        # ---- bad pairs: exit 78 when starting, 1 under --test-config, the reason named
        bad = [
            (["--tls-cert-file", cert], "HTTPS needs both tls_cert_file and tls_key_file; "
             "tls_key_file is not set"),
            (["--tls-key-file", key], "HTTPS needs both tls_cert_file and tls_key_file; "
             "tls_cert_file is not set"),
            (["--tls-cert-file", cert + ".missing", "--tls-key-file", key],
             "--tls-cert-file: cannot read %s.missing: No such file or directory" % cert),
            (["--tls-cert-file", key, "--tls-key-file", key],
             "%s is not a PEM file with a certificate" % key),
            (["--tls-cert-file", cert, "--tls-key-file", cert],
             "%s is not a PEM file with a private key" % cert),
            (["--tls-cert-file", cert, "--tls-key-file", other_key],
             "%s and %s cannot serve HTTPS together: " % (cert, other_key)),
            (["--tls-cert-file", cert, "--tls-key-file", enc_key],
             "%s holds an encrypted private key" % enc_key),
            (["--tls-cert-file", junk, "--tls-key-file", key],
             "--tls-cert-file: %s: cannot read the certificate: " % junk),
            (["--tls-cert-file", cert, "--tls-key-file", cut_key],
             "--tls-key-file: %s: cannot read the private key: " % cut_key),
        ]
        for args, want in bad:
            rc, err = run(base + args)
            check(rc == 78, "starting with %s: exit %d (want 78): %s" % (args, rc, err))
            check(want in err, "starting with %s printed %r, want %r" % (args, err, want))
            rc, err = run(["--test-config"] + base + args)
            check(rc == 1 and want in err, "--test-config with %s: %d %r" % (args, rc, err))
        # the key of another certificate: GnuTLS says why
        rc, err = run(base + ["--tls-cert-file", cert, "--tls-key-file", other_key])
        check("do not match" in err, "a key of another certificate: %r" % err)
        rc, err = run(["--test-config"] + base + ["--tls-cert-file", other_cert,
                                                  "--tls-key-file", other_key])
        check(rc == 0, "--test-config with a good RSA pair: %d %s" % (rc, err))

        body = {"prompt": "And God said", "max_tokens": 12, "temperature": 0}

        # ---- the text over plain HTTP, to compare with
        d = Daemon(base, tmp)
        try:
            d.wait_ready()
            st, _, plain = d.request("POST", "/v1/completions", body)
            check(st == 200, "plain HTTP completion: %d" % st)
            plain_text = json.loads(plain)["choices"][0]["text"]
            d.wait_log(r"listening on http://127\.0\.0\.1:\d+$")
        finally:
            d.signal(15)
            d.wait_exit()
            d.close()

        # ---- HTTPS, verified against the certificate (hostname 127.0.0.1 in its SAN)
        os.chmod(key, 0o644)  # readable by every user: warned about, still served
        conf = tmp.write("empty.conf", "")
        d = Daemon(base + ["--config", conf, "--tls-cert-file", cert, "--tls-key-file", key],
                   tmp)
        try:
            d.wait_ready()
            # (the log is read on another thread: wait for the lines, the READY message
            # may come first)
            d.wait_log(r"listening on https://127\.0\.0\.1:%d$" % d.port)
            d.wait_log(r"%s is readable by every user" % re.escape(key))
            ctx = ssl.create_default_context(cafile=cert)
            d.tls = ctx
            st, _, b = d.request("GET", "/health")
            check(st == 200, "/health over HTTPS: %d" % st)
            st, _, b = d.request("POST", "/v1/completions", body)
            check(st == 200, "completion over HTTPS: %d %s" % (st, b[:200]))
            got = json.loads(b)["choices"][0]["text"]
            check(got == plain_text, "HTTPS text %r differs from plain HTTP's %r"
                  % (got, plain_text))
            check(sse_text(d, body) == plain_text, "the HTTPS stream's text differs")
            # a client that does not trust the certificate refuses the server
            d.tls = ssl.create_default_context(cafile=other_cert)
            try:
                d.request("GET", "/health")
                fail("a client trusting another certificate connected")
            except ssl.SSLCertVerificationError:
                pass
            # plain HTTP to the HTTPS port gets no HTTP answer
            d.tls = None
            try:
                st, _, _ = d.request("GET", "/health", timeout=10)
                fail("plain HTTP to the HTTPS port was answered %d" % st)
            except (OSError, http.client.HTTPException):
                pass
            # and the server still serves HTTPS after that
            d.tls = ctx
            st, _, _ = d.request("GET", "/health")
            check(st == 200, "/health over HTTPS after a plain request: %d" % st)

            # ---- a renewal: the files rewritten in place, SIGHUP, new handshakes get the
            # new certificate, which a client trusting only the old one refuses
            new_cert, new_key = make_pair(tmp, "renewed", "ec")
            shutil.copyfile(new_cert, cert)
            shutil.copyfile(new_key, key)
            n = d.log_count()
            d.signal(signal.SIGHUP)
            d.wait_log(r"reload: %s and %s: the new certificate is served to new connections"
                       % (re.escape(cert), re.escape(key)), start=n)
            d.wait_log(r"reload done: 1 change\(s\) applied", start=n)
            renewed = ssl.create_default_context(cafile=new_cert)
            d.tls = renewed
            st, _, b = d.request("POST", "/v1/completions", body)
            check(st == 200 and json.loads(b)["choices"][0]["text"] == plain_text,
                  "a completion with the renewed certificate: %d" % st)
            d.tls = ctx
            try:
                d.request("GET", "/health")
                fail("the old certificate was still served after the reload")
            except ssl.SSLCertVerificationError:
                pass
            # a pair that does not fit, at a reload: logged, the renewed one kept
            shutil.copyfile(other_key, key)
            n = d.log_count()
            d.signal(signal.SIGHUP)
            d.wait_log(r"reload: keeping the certificate in use: .*%s and %s cannot serve "
                       r"HTTPS together" % (re.escape(cert), re.escape(key)), start=n)
            d.wait_log(r"reload done: 0 change\(s\) applied", start=n)
            d.tls = renewed
            st, _, _ = d.request("GET", "/health")
            check(st == 200, "HTTPS after a refused pair: %d" % st)
            # the same pair again is no change
            shutil.copyfile(new_key, key)
            n = d.log_count()
            d.signal(signal.SIGHUP)
            d.wait_log(r"reload done: 0 change\(s\) applied", start=n)
            check(not d.log_has(r"new certificate is served", start=n),
                  "an unchanged pair was loaded again")
        finally:
            d.signal(15)
            rc = d.wait_exit()
            d.close()
        check(rc == 0, "HTTPS daemon exit status %d" % rc)
        print("PASS: HTTPS serves verified clients; %d bad pairs refused" % len(bad))
        return 0
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
