"""hf_jinja: python3-jinja2 set up as transformers renders a chat template (trim_blocks,
lstrip_blocks, loop controls, an immutable sandbox, its tojson, raise_exception and
strftime_now), shared by the tests that compare fusiond's rendering with it
(test_chat_jinja.py, test_chat_prefill.py, test_jinja_templates.py).

Importing it skips the test (exit 77) when python3-jinja2 is missing, or fails it when
FUSIOND_REQUIRE_JINJA=1 (CI's flag)."""

import datetime
import json
import os
import sys

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    if os.environ.get("FUSIOND_REQUIRE_JINJA") == "1":
        print("FAIL: python3 jinja2 is not installed (FUSIOND_REQUIRE_JINJA=1)")
        sys.exit(1)
    print("SKIP: python3 jinja2 is not installed (Debian: apt-get install python3-jinja2)")
    sys.exit(77)


class Refused(Exception):
    """A template's raise_exception(msg)."""


def raise_exception(msg):
    raise Refused(msg)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[jinja2.ext.loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception
ENV.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
