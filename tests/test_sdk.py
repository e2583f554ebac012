#!/usr/bin/env python3
"""test_sdk.py: proves fusiond works with the official OpenAI Node SDK (npm `openai`, pinned
in tests/sdk/package-lock.json) and Anthropic's TypeScript SDK (`@anthropic-ai/sdk`, pinned
there too; tests/sdk/anthropic.mjs: messages.create, messages.stream, countTokens, typed
errors, against the first daemon): it starts the real fusiond with the demo model and an API
key on a free loopback port and runs tests/sdk/check.mjs, which uses the SDK as a user would
(models, completions, embeddings, chat whole and streamed, usage, stop, n, logprobs, seeds, typed
errors, a wrong key, an aborted stream, the Responses API with background create, retrieve,
stream resume and cancel, conversations); the greedy text must equal fusion-cli's.  A second
daemon with room for one request proves a full queue's 503 + Retry-After and the SDK's
retries honouring it, then a SIGTERM that cancels a stream midway: the SDK's iterator raises
the server's error frame.  A third runs a stories260K copy with Qwen 2.5's chat template whose
token 503 is a whole tool call (the shared model and template: skipped without them unless
FUSIOND_REQUIRE_SHARED=1): function calling through the SDK, whole and with its stream
helper.  Skips (77)
when node (>= 18) or the SDK is missing, unless FUSIOND_REQUIRE_SDK=1 (CI's make check), where
that is a failure.  The SDK is looked for in FUSIOND_SDK_DIR, else $top_srcdir/tests/sdk
(install it there: cd tests/sdk && npm ci)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_harness import Daemon, TmpDir, check, fail, time_scale  # noqa: E402
from gguf_copy import gguf_rewrite  # noqa: E402

TOOL_TOKEN = 503
TOOL_CALL = {"name": "get_weather", "arguments": {"city": "Z\u00fcrich"}}

KEY = "sk-fusiond-sdk-test-3Jq8"
CORS_ORIGIN = "http://localhost:5173"  # a web UI's dev server
CLI_PROMPT, CLI_TOKENS = "And God said", 24
SRC = os.environ.get("top_srcdir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BUILD = os.environ.get("top_builddir", ".")


def missing(what):
    how = ("Debian: apt-get install nodejs npm; then: cd %s && npm ci"
           % os.path.join(SRC, "tests", "sdk"))
    if os.environ.get("FUSIOND_REQUIRE_SDK") == "1":
        fail("%s (FUSIOND_REQUIRE_SDK=1). %s" % (what, how))
    print("SKIP: %s: the OpenAI SDK test needs it. %s" % (what, how))
    sys.exit(77)


def find_sdk():
    """(node, sdk folder, SDK version) or skip/fail."""
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        missing("node (Node.js >= 18) not found")
    ver = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"v(\d+)\.", ver)
    if not m or int(m.group(1)) < 18:
        missing("node %s is too old (Node.js >= 18 is needed)" % (ver or "?"))
    sdk = os.environ.get("FUSIOND_SDK_DIR") or os.path.join(SRC, "tests", "sdk")
    pkg = os.path.join(sdk, "node_modules", "openai", "package.json")
    if not os.access(pkg, os.R_OK):
        missing("the openai SDK is not installed in %s" % os.path.join(sdk, "node_modules"))
    if not os.access(os.path.join(sdk, "node_modules", "@anthropic-ai", "sdk", "package.json"),
                     os.R_OK):
        missing("the Anthropic SDK is not installed in %s" % os.path.join(sdk, "node_modules"))
    with open(pkg) as f:
        return node, sdk, ver, json.load(f)["version"]


def cli_text(model):
    """fusion-cli's greedy continuation: the server must produce the same text."""
    cli = os.path.join(BUILD, "fusion-cli")
    p = subprocess.run([cli, "-m", model, "-p", CLI_PROMPT, "-n", str(CLI_TOKENS), "--temp", "0"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60 * time_scale())
    check(p.returncode == 0, "fusion-cli failed (%d): %s" % (p.returncode, p.stderr.decode()))
    text = p.stdout.decode("utf-8")
    check(len(text) > 0, "fusion-cli printed nothing")
    return text


def run_check(node, env, script="check.mjs"):
    try:
        return subprocess.run([node, os.path.join(SRC, "tests", "sdk", script)], env=env,
                              stdin=subprocess.DEVNULL, timeout=120 * time_scale())
    except subprocess.TimeoutExpired:
        fail("%s did not finish within %gs" % (script, 120 * time_scale()))


def stop(d):
    """SIGTERM: fusiond must still run, exit 0 and have logged no error."""
    check(d.proc.poll() is None, "fusiond exited during the SDK checks")
    d.signal(signal.SIGTERM)
    rc = d.wait_exit()
    check(rc == 0, "fusiond exited with %s after SIGTERM" % rc)
    check(not d.log_has(r"\b(error|crit|alert|emerg):"), "fusiond logged an error")


def main():
    node, sdk, node_ver, sdk_ver = find_sdk()
    model = os.path.abspath(os.path.join(SRC, "models", "demo.gguf"))
    check(os.access(model, os.R_OK), "demo model missing: %s" % model)
    cli = cli_text(model)
    tmp = TmpDir()
    d = None
    try:
        conf = tmp.write("fusiond.conf", "model = %s\napi_keys = %s\ncors_origins = %s\n"
                         % (model, KEY, CORS_ORIGIN))
        d = Daemon(["-c", conf, "--port=0", "--threads=2"], tmp)
        d.wait_ready()
        env = dict(os.environ)
        env.update({
            "FUSIOND_BASE_URL": "http://127.0.0.1:%d/v1" % d.port,
            "FUSIOND_API_KEY": KEY,
            "FUSIOND_CORS_ORIGIN": CORS_ORIGIN,
            "FUSIOND_SDK_DIR": sdk,
            "FUSIOND_CLI_TEXT": json.dumps({"prompt": CLI_PROMPT, "max_tokens": CLI_TOKENS,
                                            "text": cli}),
            "NODE_NO_WARNINGS": "1",
        })
        print("node %s, openai %s (%s)" % (node_ver, sdk_ver, sdk), flush=True)
        p = run_check(node, env)
        check(p.returncode == 0, "check.mjs failed (exit %d)" % p.returncode)
        # the Anthropic SDK against the same daemon: /v1/messages
        p = run_check(node, env, "anthropic.mjs")
        check(p.returncode == 0, "anthropic.mjs failed (exit %d)" % p.returncode)
        stop(d)
        d.close()
        d = None

        # A full queue: 503 + Retry-After, and the SDK's retries honour it.
        # Then SIGTERM cancels a stream midway (drain_timeout 0): the SDK raises its error.
        conf = tmp.write("busy.conf", "model = %s\napi_keys = %s\nmax_running = 1\n"
                                      "max_waiting = 0\nretry_after = 1\ndrain_timeout = 0\n"
                         % (model, KEY))
        d = Daemon(["-c", conf, "--port=0", "--threads=2"], tmp)
        d.wait_ready()
        env["FUSIOND_BASE_URL"] = "http://127.0.0.1:%d/v1" % d.port
        env["FUSIOND_CHECK"] = "busy"
        env["FUSIOND_PID"] = str(d.wait_pid())
        p = run_check(node, env)
        check(p.returncode == 0, "check.mjs (busy) failed (exit %d)" % p.returncode)
        rc = d.wait_exit()
        check(rc == 0, "fusiond exited with %s after SIGTERM with a stream running" % rc)
        check(not d.log_has(r"\b(error|crit|alert|emerg):"), "fusiond logged an error")
        d.close()
        d = None

        # Function calling: a model whose template has tools and whose token is a call.
        shared = os.environ.get("FUSIOND_SHARED") or os.path.join(SRC, "..", "shared")
        src = os.path.join(shared, "models", "stories260K.gguf")
        tmpl = os.path.join(shared, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
        if not (os.access(src, os.R_OK) and os.access(tmpl, os.R_OK)):
            if os.environ.get("FUSIOND_REQUIRE_SHARED") == "1":
                fail("shared data missing for the tools check: %s, %s" % (src, tmpl))
            print("SKIP (tools part only): shared data missing: %s, %s" % (src, tmpl))
        else:
            with open(tmpl, encoding="utf-8") as f:
                qwen = f.read()
            call = '<tool_call>\n%s\n</tool_call>' % json.dumps(TOOL_CALL, ensure_ascii=False)
            tools_model = os.path.join(tmp.path, "qwen-tools.gguf")
            gguf_rewrite(src, tools_model, qwen, 2048, {TOOL_TOKEN: call})
            conf = tmp.write("tools.conf", "model = %s\napi_keys = %s\n" % (tools_model, KEY))
            d = Daemon(["-c", conf, "--port=0", "--threads=2"], tmp)
            d.wait_ready()
            env["FUSIOND_BASE_URL"] = "http://127.0.0.1:%d/v1" % d.port
            env["FUSIOND_CHECK"] = "tools"
            env["FUSIOND_TOOL_TOKEN"] = str(TOOL_TOKEN)
            env["FUSIOND_TOOL_CALL"] = json.dumps(TOOL_CALL)
            p = run_check(node, env)
            check(p.returncode == 0, "check.mjs (tools) failed (exit %d)" % p.returncode)
            stop(d)
            d.close()
            d = None
    finally:
        if d:
            d.close()
        tmp.cleanup()
    print("PASS: the OpenAI SDK %s works with fusiond" % sdk_ver)


if __name__ == "__main__":
    main()
