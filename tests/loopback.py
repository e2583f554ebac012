"""loopback.py: one real fusiond on 127.0.0.1 (an OS-chosen port) with stories260K, for the
black-box reliability tests (test_badinput.py, test_load.py): raw and JSON requests, the
/metrics scrape, the process's resident memory from /proc, and a SIGTERM stop that returns
the exit status; test_server.py builds on it too.  The skip/fail rules of the C suites: exit 77 skips when the shared model
is missing, unless FUSIOND_REQUIRE_SHARED=1 (CI).  python3 standard library only."""

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def fusiond_path():
    p = os.environ.get("FUSIOND") or os.path.join(os.environ.get("top_builddir", "."), "fusiond")
    if not os.access(p, os.X_OK):
        print("FAIL: fusiond not built: %s" % p)
        sys.exit(1)
    return p


def tool(name):
    """A program built beside fusiond (under top_builddir), or FAIL when it is not."""
    p = os.path.join(os.environ.get("top_builddir", "."), name)
    if not os.access(p, os.X_OK):
        print("FAIL: %s not built: %s" % (name, p))
        sys.exit(1)
    return p


def shared_model():
    d = os.environ.get("FUSIOND_SHARED") or "../shared"
    p = os.path.join(d, "models", "stories260K.gguf")
    if os.access(p, os.R_OK):
        return os.path.abspath(p)
    if os.environ.get("FUSIOND_REQUIRE_SHARED") == "1":
        print("FAIL: shared test data missing: %s (FUSIOND_REQUIRE_SHARED=1)" % p)
        sys.exit(1)
    print("SKIP: shared test data missing: %s (set FUSIOND_SHARED)" % p)
    sys.exit(SKIP)


def sse_frames(raw):
    """(the JSON frames of an OpenAI SSE body, whether it ended with data: [DONE]); comment
    blocks (the server's pings) are skipped."""
    frames, done = [], False
    for block in (raw.decode() if isinstance(raw, bytes) else raw).split("\n\n"):
        if not block or block.startswith(":"):
            continue
        if block == "data: [DONE]":
            done = True
            continue
        frames.append(json.loads(block[6:]))
    return frames, done


@contextlib.contextmanager
def daemon(check, what, *args, **kw):
    """A Daemon(*args, **kw) for a with block; at its end, however it ends, check(cond, what)
    is told whether it exited cleanly, and its log is removed."""
    d = Daemon(*args, **kw)
    try:
        yield d
    finally:
        check(d.stop(timeout=30) == 0, what)
        d.cleanup()


class Daemon:
    """fusiond and model default to $FUSIOND (or the build's) and the shared stories260K."""

    def __init__(self, *args, env=None, fusiond=None, model=None):
        # The child appends through its own file description, so reading here never moves
        # its write offset.
        fd, self.logpath = tempfile.mkstemp(prefix="fusiond-test-", suffix=".log")
        os.close(fd)
        self.log = open(self.logpath, "ab")
        cmd = [fusiond or fusiond_path(), "--model", model or shared_model(), "--host",
               "127.0.0.1", "--port", "0", "--threads", "1", "--log-format", "plain", *args]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=e)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(rb"listening on \S*:(\d+)\n", self.logtext())
            if m:
                self.port = int(m.group(1))
                try:
                    if self.get("/health")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("fusiond did not become ready:\n%s" % self.logtext().decode(errors="replace"))

    def logtext(self):
        with open(self.logpath, "rb") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        """VmRSS of the daemon, in kB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def sanitized(self):
        """True for an ASan build: its quarantine keeps freed memory resident (up to 256 MiB
        by default), so resident memory says nothing about leaks there (LeakSanitizer does)."""
        with open("/proc/%d/maps" % self.proc.pid) as f:
            return "libasan" in f.read()

    def stop(self, timeout=60, signal_it=True):
        """SIGTERM (drain) unless signal_it is false (one was sent already: a second one may
        end the drain at once), then the exit status (None if it had to be killed)."""
        if signal_it and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log.close()
        return rc

    def cleanup(self):
        try:
            os.unlink(self.logpath)
        except OSError:
            pass

    # ---- requests

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = self.conn(timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), out

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, body, headers=None, timeout=60):
        st, h, out = self.request("POST", path, body, headers, timeout)
        try:
            js = json.loads(out)
        except ValueError:
            js = None
        return st, h, js

    def raw(self, data, timeout=10, chunks=None, delay=0.0):
        """Sends bytes (all at once, or in pieces of `chunks` bytes `delay` s apart) and reads
        until the server closes or `timeout` passes.  Returns (status or None, raw reply)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        out = b""
        try:
            if chunks:
                for i in range(0, len(data), chunks):
                    s.sendall(data[i:i + chunks])
                    time.sleep(delay)
            else:
                s.sendall(data)
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except OSError:
            pass
        finally:
            s.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", out)
        return (int(m.group(1)) if m else None), out

    def metrics(self):
        st, _, body = self.get("/metrics")
        if st != 200:
            raise RuntimeError("/metrics answered %d" % st)
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def settle(self, timeout=20):
        """Waits until nothing runs, waits or is in flight, and no KV cache is in use; returns
        the last metrics."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            idle = (m.get("fusiond_requests_running") == 0 and
                    m.get("fusiond_requests_waiting") == 0 and
                    m.get("fusiond_kv_cache_usage_ratio") == 0 and
                    m.get("fusiond_http_requests_in_flight") == 0)
            if idle or time.time() > deadline:
                return m
            time.sleep(0.05)
