/* schema.h: compiles a JSON Schema (the subset structured outputs use) into an engine
 * grammar spec (engine/grammar.h), for response_format json_schema.  Owns nothing beyond
 * the call; any thread (request parsing, on the event loop).
 *
 * Supported: type (object, array, string, number, integer, boolean, null, and lists of
 * them), properties + required (properties come in the schema's order; an optional one may
 * be left out; no others: additionalProperties false or absent, or true, all generate only
 * the listed ones), additionalProperties as a schema for an object without properties,
 * items (one schema), minItems, maxItems, enum, const, anyOf / oneOf whose alternatives
 * start with different characters, allOf of one schema, $ref to "#", "#/$defs/<name>" or
 * "#/definitions/<name>" (recursion included), and annotations (title, description,
 * default, examples, $comment, $schema, $id, deprecated, readOnly, writeOnly), which
 * change nothing.  Any other keyword is refused, never ignored: the output would not be
 * known to conform. */
#ifndef FD_SCHEMA_H
#define FD_SCHEMA_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "engine/grammar.h"

/* 0 and *out (one reference), or: FD_EUNSUP (a keyword or form outside the subset),
 * -EINVAL (not a valid schema, or one no value satisfies), -ENOMEM.  On failure err says
 * what and path is the JSON pointer of the place in the schema ("/properties/age"). */
int sch_compile(const cJSON *schema, gr_spec_t **out, char *err, size_t errlen, char *path,
                size_t pathlen);

/* The same into the builder b (its other nodes untouched): the schema's node in *node, to
 * embed it in a larger spec (the generic tool-call shape, toolcall.h).  Same errors. */
int sch_compile_node(gr_build_t *b, const cJSON *schema, int *node, char *err, size_t errlen,
                     char *path, size_t pathlen);

#endif
