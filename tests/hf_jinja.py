"""hf_jinja: python3-jinja2 set up as transformers renders a chat template (trim_blocks,
lstrip_blocks, loop controls, an immutable sandbox, its tojson, raise_exception and
strftime_now) and the WEATHER tool the tests give templates, shared by the tests that compare fusiond's rendering with it
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

# A tool whose schema has every kind of value a template prints (non-ASCII, quotes, braces,
# big integers, floats, -0, an empty schema)
WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Current weather in a city, \"quoted\" and {braced}",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "Zürich or 東京"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "ratio": {"type": "number", "default": 0.5},
        "alerts": {"type": "boolean", "default": False},
        "tags": {"type": "array", "items": {"type": "string"}},
        "temp": {"type": "number", "minimum": 0.0, "maximum": 1e2, "default": 2.50,
                 "exclusiveMinimum": -0, "multipleOf": 1e-7},
        "id": {"type": "integer", "maximum": 123456789012345678901234567890},
        "empty": {}}, "required": ["city"]}}}
