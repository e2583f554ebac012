#!/usr/bin/env python3
"""daemon_signals.py: proves the daemon's life cycle on the real fusiond with a real model:
sd_notify messages in order (STATUS=loading, READY=1, RELOADING=1/READY=1 on SIGHUP,
STOPPING=1 on SIGTERM); SIGHUP with a good file applies the log level and API keys (a debug
line appears, the new key is required) and leaves non-reloadable options for a restart;
SIGHUP with a bad file keeps the old configuration and says why; SIGTERM with requests in
flight lets them all complete while /health and new requests answer 503, then exits 0; a
drain timeout cancels what still runs and exits 0; a second SIGINT exits at once (130);
started as root with `user`, fusiond serves as that user."""

import os
import pwd
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import Daemon, TmpDir, check, fail, shared_model, time_scale  # noqa: E402

# An API key that no temporary path or log word can contain by chance (the check that it is
# never logged once matched a temporary directory named ...pk1).
KEY = "Sk-fusiond-test-Q7vX2wJ9"

MAX_TOKENS = int(os.environ.get("FD_TEST_MAX_TOKENS", "400"))  # stories260K: 512 context


def start(tmp, conf_text, extra=None, abstract=False):
    conf = tmp.write("fusiond.conf", conf_text)
    d = Daemon(["-c", conf, "--port=0", "--threads=1"] + (extra or []), tmp,
               abstract_notify=abstract)
    d.wait_ready()
    return d, conf


def finished_total(m):
    return sum(v for k, v in m.items() if k.startswith("fusiond_requests_finished_total{"))


def queue_work(d, one, seconds, key=None, cap=240):
    """Long greedy completions on threads (max_running = 1), sent until every one is admitted
    and at least `seconds` of work (one request: `one` s) waits behind the running one, so a
    signal sent now finds requests in flight.  The engine keeps finishing requests meanwhile:
    admitted = running + waiting + finished since the start.  Returns (threads, results)."""
    want = max(2, int(seconds / one) + 1)
    base = finished_total(d.metrics(key))
    threads, results = [], []

    def one_request(i):
        try:
            results[i] = d.completion(MAX_TOKENS, key=key, ignore_eos=True, timeout=300)
        except Exception as e:  # the test reports it below
            results[i] = e

    def add(k):
        for _ in range(k):
            results.append(None)
            t = threading.Thread(target=one_request, args=(len(results) - 1,))
            threads.append(t)
            t.start()

    add(min(cap, want + 2))
    end = time.time() + 30 * time_scale()
    while time.time() < end:
        for i, r in enumerate(results):
            check(r is None or not isinstance(r, Exception) and r[0] == 200,
                  "request %d failed before the signal: %r" % (i, r))
        m = d.metrics(key)
        waiting = m["fusiond_requests_waiting"]
        admitted = m["fusiond_requests_running"] + waiting + finished_total(m) - base
        if admitted >= len(threads):
            if waiting >= want:
                return threads, results
            check(len(threads) < cap, "%d requests sent, only %d waiting: the engine outruns "
                  "the client" % (len(threads), waiting))
            add(min(cap - len(threads), want - int(waiting) + 2))
        time.sleep(0.005)
    fail("the %d requests were not admitted within %gs" % (len(threads), 30 * time_scale()))


def calibrate(d, key=None):
    """Seconds of one long request (max_running = 1): the faster of two, so the queued work
    is not overestimated if the machine gets less busy."""
    best = None
    for _ in range(2):
        t0 = time.time()
        st, _, body = d.completion(MAX_TOKENS, key=key, ignore_eos=True)
        check(st == 200, "calibration request: %d %r" % (st, body[:200]))
        took = max(time.time() - t0, 1e-3)
        best = took if best is None else min(best, took)
    return best


def stopping_running(msg):
    """The running count of a STOPPING=1 notify message."""
    m = re.search(r"draining, (\d+) request\(s\) running", msg)
    check(msg.startswith("STOPPING=1") and m is not None, "drain notify: %r" % msg)
    return int(m.group(1))


def test_lifecycle(tmp, model):
    base = "model = %s\nmax_running = 1\nmax_waiting = 256\nlog_level = info\n" % model
    d, conf = start(tmp, base)
    try:
        st, _, _ = d.request("GET", "/health")
        check(st == 200, "/health after READY=1: %d" % st)

        # Good reload: log level, API keys; the port waits for a restart.
        mark = d.log_count()
        tmp.write("fusiond.conf", base.replace("log_level = info", "log_level = debug") +
                  "api_keys = %s\n" % KEY + "host = 127.0.0.2\n")
        d.signal(signal.SIGHUP)
        msg = d.next_notify()
        check(msg.startswith("RELOADING=1\nMONOTONIC_USEC="), "reload notify: %r" % msg)
        check(d.next_notify().startswith("READY=1\n"), "no READY=1 after the reload")
        d.wait_log(r"reload done: \d+ change", start=mark)
        check(d.log_has(r"reload: log_level: info -> debug", mark), "log level change not logged")
        check(d.log_has(r"reload: host changed \(127\.0\.0\.1 -> 127\.0\.0\.2\) but needs a "
                        r"restart", mark), "host change not reported as needing a restart")
        check(not d.log_has(re.escape(KEY), mark), "an API key was logged")
        st, _, _ = d.completion(4)
        check(st == 401, "no key after api_keys = KEY: %d" % st)
        st, _, _ = d.completion(4, key=KEY)
        check(st == 200, "key KEY: %d" % st)
        # The level really changed: a second reload writes its debug line.
        mark = d.log_count()
        d.signal(signal.SIGHUP)
        d.next_notify(), d.next_notify()
        d.wait_log(r"reload done", start=mark)
        check(d.log_has(r"debug: reload: reading ", mark) or d.log_has(r"<7>reload: reading ", mark),
              "no debug line after log_level = debug")

        # Bad reload: nothing changes, the reason is logged with file:line.
        mark = d.log_count()
        tmp.write("fusiond.conf", base + "api_keys = k2\nmax_body_bytes = huge\n")
        d.signal(signal.SIGHUP)
        d.next_notify(), d.next_notify()
        d.wait_log(r"reload failed, keeping the old configuration: %s:6: max_body_bytes: "
                   r"'huge' is not a size" % conf, start=mark)
        st, _, _ = d.completion(4, key=KEY)
        check(st == 200, "old key KEY after a bad reload: %d" % st)
        st, _, _ = d.completion(4, key="k2")
        check(st == 401, "key k2 from the bad file accepted: %d" % st)

        # SIGTERM with requests in flight.
        one = calibrate(d, key=KEY)
        ts, results = queue_work(d, one, 1.0, key=KEY)
        print("  %d requests of %d tokens, %.3f s each" % (len(ts), MAX_TOKENS, one), flush=True)
        d.signal(signal.SIGTERM)
        running = stopping_running(d.next_notify())
        check(running >= 2, "only %d request(s) in flight at SIGTERM" % running)
        st, h, _ = d.request("GET", "/health")
        check(st == 503, "/health while draining: %d" % st)
        st, h, _ = d.completion(4, key=KEY)
        check(st == 503 and "retry-after" in h, "new request while draining: %d %r" % (st, h))
        for t in ts:
            t.join(300)
        for i, r in enumerate(results):
            check(not isinstance(r, Exception), "request %d failed: %r" % (i, r))
            st, _, body = r
            check(st == 200, "request %d in flight at SIGTERM: %d %r" % (i, st, body[:200]))
            check(b'"completion_tokens":%d' % MAX_TOKENS in body, "request %d cut short" % i)
        rc = d.wait_exit()
        check(rc == 0, "exit status after the drain: %d" % rc)
        d.wait_log(r"drained")
    finally:
        d.close()


def test_drain_timeout(tmp, model):
    d, _ = start(tmp, "model = %s\nmax_running = 1\nmax_waiting = 256\ndrain_timeout = 0.2\n"
                 % model, abstract=True)
    try:
        ts, results = queue_work(d, calibrate(d), 1.0)
        d.signal(signal.SIGTERM)
        check(stopping_running(d.next_notify()) >= 2, "no requests in flight at SIGTERM")
        d.wait_log(r"drain timeout \(0\.2 s\): cancelling")
        for t in ts:
            t.join(120)
        codes = sorted(r[0] for r in results if not isinstance(r, Exception))
        check(503 in codes, "no request was cancelled by the drain timeout: %r" % codes)
        rc = d.wait_exit()
        check(rc == 0, "exit status after a drain timeout: %d" % rc)
    finally:
        d.close()


def test_second_sigint(tmp, model):
    d, _ = start(tmp, "model = %s\nmax_running = 1\nmax_waiting = 256\n" % model)
    try:
        one = calibrate(d)
        ts, _ = queue_work(d, one, 2.0)
        d.signal(signal.SIGINT)
        check(stopping_running(d.next_notify()) >= 2, "no requests in flight at SIGINT")
        t0 = time.time()
        d.signal(signal.SIGINT)
        rc = d.wait_exit(10)
        # A drain would have ended with 0 after the queued work; 130 is the second SIGINT.
        check(rc == 130, "exit status after a second SIGINT: %d" % rc)
        took = time.time() - t0
        check(took < 2 * time_scale(), "a second SIGINT took %.1fs" % took)
        for t in ts:
            t.join(30)
    finally:
        d.close()


def test_user(tmp, model):
    if os.geteuid() != 0:
        print("  (not root: privilege drop not tested)")
        return
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        print("  (no user nobody: privilege drop not tested)")
        return
    if not os.stat("/").st_mode & 0o001:
        # A root directory others may not search (a chroot made with mktemp -d) hides every
        # path, the notify socket included, from the dropped user: not a real system.
        print("  (/ is not searchable by other users: privilege drop not tested)")
        return
    d, _ = start(tmp, "model = %s\nuser = nobody\n" % model)
    try:
        with open("/proc/%d/status" % d.proc.pid) as f:
            status = f.read()
        uids = [l.split()[1:] for l in status.splitlines() if l.startswith(("Uid:", "Gid:"))]
        check(uids[0] == [str(pw.pw_uid)] * 4, "uids after the drop: %r" % uids[0])
        check(uids[1] == [str(pw.pw_gid)] * 4, "gids after the drop: %r" % uids[1])
        st, _, _ = d.completion(4)
        check(st == 200, "completion as nobody: %d" % st)
        d.wait_log(r"running as user nobody")
        d.signal(signal.SIGTERM)
        check(d.wait_exit() == 0, "exit status as nobody")
    finally:
        d.close()


def main():
    model = shared_model()
    tmp = TmpDir()
    try:
        for t in (test_lifecycle, test_drain_timeout, test_second_sigint, test_user):
            print("== " + t.__name__, flush=True)
            t(tmp, model)
        print("PASS: daemon_signals")
    finally:
        tmp.cleanup()


if __name__ == "__main__":
    main()
