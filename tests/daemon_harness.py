"""daemon_harness.py: runs the real fusiond for the black-box daemon tests: a private
NOTIFY_SOCKET (a datagram socket, as systemd's), its stderr collected line by line, HTTP
helpers on loopback, and the skip/fail rules of the C suites (exit 77 = skip).  stdlib only."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77


def time_scale():
    """FUSIOND_TEST_TIME_SCALE (make check sets it: 1, more under --enable-asan): multiplies
    the time bounds that only a slow build or a loaded machine can reach."""
    try:
        return max(1.0, float(os.environ.get("FUSIOND_TEST_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def fusiond_path():
    p = os.environ.get("FUSIOND") or os.path.join(os.environ.get("top_builddir", "."), "fusiond")
    if not os.access(p, os.X_OK):
        fail("fusiond not built: %s" % p)
    return p


def shared_model():
    """The small shared model, or skip (exit 77) / fail under FUSIOND_REQUIRE_SHARED=1."""
    d = os.environ.get("FUSIOND_SHARED") or "../shared"
    p = os.path.join(d, "models", "stories260K.gguf")
    if os.access(p, os.R_OK):
        return os.path.abspath(p)
    if os.environ.get("FUSIOND_REQUIRE_SHARED") == "1":
        fail("shared test data missing: %s (FUSIOND_REQUIRE_SHARED=1)" % p)
    print("SKIP: shared test data missing: %s (set FUSIOND_SHARED)" % p)
    sys.exit(SKIP)


class TmpDir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="fd_daemon_test.")
        os.chmod(self.path, 0o755)

    def write(self, name, text, mode=0o644):
        p = os.path.join(self.path, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Daemon:
    """fusiond started with args; notify messages and log lines are collected as they come."""

    def __init__(self, args, tmp, abstract_notify=False, env=None, wrapper=None):
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract_notify:
            name = "@fd-daemon-test-%d-%d" % (os.getpid(), int(time.time() * 1e6))
            self.notify.bind("\0" + name[1:])
        else:
            name = os.path.join(tmp.path, "notify-%d" % int(time.time() * 1e6))
            self.notify.bind(name)
            os.chmod(name, 0o666)  # a wrapper may run fusiond as another user
        self.notify_name = name
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        e["NOTIFY_SOCKET"] = name
        if env:
            e.update(env)
        self.lines = []
        self.cond = threading.Condition()
        self.pid = None  # fusiond's own pid, from its log (a wrapper may stand between)
        self.proc = subprocess.Popen((wrapper or []) + [fusiond_path()] + args,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = None
        self.tls = None  # an ssl.SSLContext: request() speaks HTTPS with it

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                sys.stderr.write("  fusiond| " + line + "\n")
            except (OSError, ValueError):
                pass  # echoing is a courtesy; the lines must still be collected
            m = re.search(r"fusiond\[(\d+)\]", line)
            with self.cond:
                if m and self.pid is None:
                    self.pid = int(m.group(1))
                self.lines.append(line)
                self.cond.notify_all()

    def wait_log(self, pattern, timeout=30.0, start=0):
        """The first log line from index start matching the regex; fails on timeout (scaled
        by time_scale()) or when fusiond has exited without writing it."""
        rx = re.compile(pattern)
        timeout *= time_scale()
        end = time.time() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = end - time.time()
                if self.proc.poll() is not None and i >= len(self.lines):
                    fail("no log line matching %r: fusiond exited (status %s)"
                         % (pattern, self.proc.returncode))
                if left <= 0:
                    fail("no log line matching %r within %gs" % (pattern, timeout))
                self.cond.wait(min(left, 0.1))

    def log_count(self):
        with self.cond:
            return len(self.lines)

    def log_has(self, pattern, start=0):
        rx = re.compile(pattern)
        with self.cond:
            return any(rx.search(l) for l in self.lines[start:])

    def next_notify(self, timeout=30.0):
        timeout *= time_scale()
        self.notify.settimeout(timeout)
        try:
            return self.notify.recv(4096).decode()
        except socket.timeout:
            fail("no sd_notify message within %gs" % timeout)

    def no_notify(self):
        self.notify.setblocking(False)
        try:
            msg = self.notify.recv(4096).decode()
        except BlockingIOError:
            msg = None
        self.notify.setblocking(True)
        return msg

    def wait_ready(self, timeout=60.0):
        """Expects STATUS=loading then READY=1 on the notify socket; learns the port."""
        first = self.next_notify(timeout)
        check(first.startswith("STATUS=loading "), "first notify message: %r" % first)
        ready = self.next_notify(timeout)
        check(ready.startswith("READY=1\nSTATUS=serving "), "second notify message: %r" % ready)
        m = re.search(r":(\d+)$", ready)
        check(m is not None, "no port in %r" % ready)
        self.port = int(m.group(1))
        return first, ready

    def wait_pid(self, timeout=30.0):
        """fusiond's own pid, from its first log line.  A wrapper (strace, setpriv) may stand
        between: the process we started is not the one to signal (strace holds a SIGHUP
        back, so a reload sent there never happens)."""
        timeout *= time_scale()
        end = time.time() + timeout
        with self.cond:
            while self.pid is None:
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    fail("fusiond's pid did not appear in its log within %gs" % timeout)
                self.cond.wait(min(left, 0.1))
            return self.pid

    def signal(self, sig):
        os.kill(self.wait_pid(), sig)

    def wait_exit(self, timeout=60.0):
        timeout *= time_scale()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("fusiond did not exit within %gs" % timeout)
        self.reader.join(5)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        if not self.notify_name.startswith("@"):
            try:
                os.unlink(self.notify_name)
            except OSError:
                pass

    def request(self, method, path, body=None, headers=None, timeout=60.0):
        """(status, headers dict (lower-case names), body bytes)."""
        if self.tls:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                            context=self.tls)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        c.close()
        return out

    def completion(self, max_tokens=16, key=None, timeout=120.0, **extra):
        body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0}
        body.update(extra)
        h = {"Authorization": "Bearer " + key} if key else {}
        return self.request("POST", "/v1/completions", body, h, timeout)

    def metrics(self, key=None):
        """{series: value} of one /metrics scrape (series with their labels)."""
        h = {"Authorization": "Bearer " + key} if key else {}
        st, _, body = self.request("GET", "/metrics", headers=h)
        check(st == 200, "/metrics answered %d" % st)
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, name, key=None):
        m = self.metrics(key)
        check(name in m, "metric %s missing" % name)
        return m[name]
