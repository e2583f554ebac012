#!/usr/bin/env python3
"""daemon_sandbox.py: proves fusiond runs under the unit's hardening, without needing systemd
as PID 1: it serves a whole life cycle (load, completions, a stream, /metrics, SIGHUP, a
drain) as an unprivileged user with no capabilities and no_new_privs (DynamicUser=,
CapabilityBoundingSet=, NoNewPrivileges=), traced by strace, and every system call it makes
must be in systemd's @system-service minus @privileged (SystemCallFilter=), every socket
AF_INET/AF_INET6/AF_UNIX (RestrictAddressFamilies=), no memory ever writable and executable
(MemoryDenyWriteExecute=), no file opened for writing nor any device beyond PrivateDevices'
set (ProtectSystem=strict, PrivateDevices=), nothing under /home or /root (ProtectHome=), no
real-time scheduling, namespaces or personality changes.  Skips (77) without strace or
systemd-analyze."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import SKIP, Daemon, TmpDir, check, fail, fusiond_path, shared_model  # noqa

PRIVATE_DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                   "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/log"}


def syscall_groups():
    """{"@group": [members]} from `systemd-analyze syscall-filter`."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                         text=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and cur is not None and not line.strip().startswith("#"):
            cur.append(line.strip())
        elif not line.strip():
            cur = None
    return groups


def expand(groups, name, seen=None):
    seen = seen if seen is not None else set()
    out = set()
    for m in groups.get(name, []):
        if m.startswith("@"):
            if m not in seen:
                seen.add(m)
                out |= expand(groups, m, seen)
        else:
            out.add(m)
    return out


def main():
    for tool in ("strace", "systemd-analyze"):
        if not shutil.which(tool):
            print("SKIP: %s not installed" % tool)
            sys.exit(SKIP)
    with open(fusiond_path(), "rb") as f:
        if b"__asan_init" in f.read():
            print("SKIP: a sanitizer build (LeakSanitizer cannot run under strace); this test "
                  "checks the production build")
            sys.exit(SKIP)
    model = shared_model()
    groups = syscall_groups()
    check("@system-service" in groups and "@privileged" in groups,
          "cannot read systemd's system call groups")
    allowed = expand(groups, "@system-service") - expand(groups, "@privileged")

    tmp = TmpDir()
    os.chmod(tmp.path, 0o777)
    trace = os.path.join(tmp.path, "trace")
    conf = tmp.write("fusiond.conf", "model = %s\nthreads = 2\nmax_running = 4\n" % model)
    wrapper = ["strace", "-f", "-qq", "-s", "200", "-o", trace]
    if os.geteuid() == 0:
        # DynamicUser=, CapabilityBoundingSet= (empty), NoNewPrivileges=yes.
        wrapper = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"] + wrapper
        if not shutil.which("setpriv"):
            print("SKIP: setpriv not installed")
            sys.exit(SKIP)
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            print("SKIP: no user nobody")
            sys.exit(SKIP)
    d = Daemon(["-c", conf, "--port=0"], tmp, wrapper=wrapper)
    try:
        d.wait_ready(120)
        st, _, body = d.completion(24)
        check(st == 200, "completion in the sandbox: %d %r" % (st, body[:200]))
        st, _, body = d.completion(24, stream=True)
        check(st == 200 and body.rstrip().endswith(b"data: [DONE]"), "stream: %d" % st)
        check(d.request("GET", "/metrics")[0] == 200, "/metrics")
        check(d.request("GET", "/v1/models")[0] == 200, "/v1/models")
        mark = d.log_count()
        d.signal(signal.SIGHUP)
        msg = d.next_notify()
        check(msg.startswith("RELOADING=1"), "reload notify: %r" % msg)
        msg = d.next_notify()
        check(msg.startswith("READY=1"), "after the reload: %r" % msg)
        d.wait_log(r"reload done", start=mark)
        d.signal(signal.SIGTERM)
        check(d.wait_exit(60) == 0, "exit status in the sandbox")
    finally:
        d.close()

    problems = []
    used = {}
    with open(trace) as f:
        lines = f.read().splitlines()
    call = re.compile(r"^\d+\s+([a-z_0-9]+)\((.*)")
    for line in lines:
        m = call.match(line)
        if not m:
            continue
        name, rest = m.group(1), m.group(2)
        used[name] = used.get(name, 0) + 1
        ok = re.search(r"\) = (-?\d+|0x[0-9a-f]+)", rest)
        failed = re.search(r"\) = -1 ", rest) is not None
        if name == "socket":
            fam = rest.split(",")[0]
            if fam not in ("AF_INET", "AF_INET6", "AF_UNIX"):
                problems.append("socket family %s (RestrictAddressFamilies=): %s" % (fam, line))
        if name in ("mmap", "mmap2") and "PROT_WRITE" in rest and "PROT_EXEC" in rest:
            problems.append("writable+executable mapping (MemoryDenyWriteExecute=): " + line)
        if name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in rest:
            problems.append("mprotect to executable (MemoryDenyWriteExecute=): " + line)
        if name in ("open", "openat", "openat2", "creat"):
            pm = re.search(r'"([^"]*)"', rest)
            path = pm.group(1) if pm else ""
            if re.match(r"/(home|root|run/user)(/|$)", path):
                problems.append("touches %s (ProtectHome=): %s" % (path, line))
            if ok and not failed:
                if re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", rest) and \
                        path not in ("/dev/null", "/dev/tty"):
                    problems.append("opens %s for writing (ProtectSystem=strict): %s"
                                    % (path, line))
                if path.startswith("/dev/") and \
                        not any(path == p or path.startswith(p + "/") for p in PRIVATE_DEVICES):
                    problems.append("opens device %s (PrivateDevices=): %s" % (path, line))
        if name in ("sched_setscheduler", "sched_setattr") and re.search(r"SCHED_(FIFO|RR)",
                                                                          rest):
            problems.append("real-time scheduling (RestrictRealtime=): " + line)
        if name in ("unshare", "setns") or (name in ("clone", "clone3") and "CLONE_NEW" in rest):
            problems.append("namespaces (RestrictNamespaces=): " + line)
        if name == "personality" and not rest.startswith("0xffffffff"):
            problems.append("personality change (LockPersonality=): " + line)
    check(used.get("execve", 0) >= 1 and len(used) > 20, "the trace looks empty: %r" % used)
    for name in sorted(used):
        if name not in allowed and name != "execve":
            problems.append("system call %s (x%d) is outside @system-service minus @privileged "
                            "(SystemCallFilter=)" % (name, used[name]))
    for p in problems[:40]:
        print("  " + p)
    check(not problems, "%d hardening problem(s) above" % len(problems))
    print("  %d distinct system calls, all allowed: %s" % (len(used), " ".join(sorted(used))))
    tmp.cleanup()
    print("PASS: daemon_sandbox")


if __name__ == "__main__":
    main()
