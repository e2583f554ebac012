// anthropic.mjs: the official Anthropic TypeScript SDK (`@anthropic-ai/sdk`) used against a
// running fusiond as Claude Code and other clients use it, asserting real values:
// messages.create (the greedy text equals the chat endpoint's), messages.stream (its
// finalMessage equals the created message at temperature 0, its text events add up to it),
// stop_sequences, max_tokens, countTokens (the prompt the message ran), and errors surfacing
// as the SDK's typed errors (400, 404, 401).  tests/test_sdk.py runs it after check.mjs
// against the same daemon; by hand:
//   FUSIOND_BASE_URL=http://127.0.0.1:8080/v1 FUSIOND_API_KEY=KEY node tests/sdk/anthropic.mjs
// Environment: FUSIOND_SDK_DIR (the folder whose node_modules holds the SDK; default: this
// script's folder).  Exit 0: all passed, 1: a check failed.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkDir = process.env.FUSIOND_SDK_DIR || here;
const require = createRequire(path.join(sdkDir, 'package.json'));
const mod = require('@anthropic-ai/sdk');
const Anthropic = mod.Anthropic || mod.default || mod;
const sdkVersion = JSON.parse(fs.readFileSync(path.join(sdkDir, 'node_modules', '@anthropic-ai',
  'sdk', 'package.json'), 'utf8')).version;

const baseURL = process.env.FUSIOND_BASE_URL;
const apiKey = process.env.FUSIOND_API_KEY || 'none';
if (!baseURL) {
  console.error('anthropic.mjs: set FUSIOND_BASE_URL (http://127.0.0.1:PORT/v1)');
  process.exit(2);
}
// The SDK adds /v1/messages itself.
const root = baseURL.replace(/\/v1\/?$/, '');

let failures = 0;
function check(cond, what, detail) {
  if (cond) {
    console.log('ok   ' + what);
  } else {
    failures++;
    console.log('FAIL ' + what + (detail === undefined ? '' : '\n     ' + detail));
  }
  return cond;
}
const show = (v) => JSON.stringify(v);
const eq = (a, b, what) => check(show(a) === show(b), what, 'got ' + show(a) + ', want ' + show(b));
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

async function chatText(messages, maxTokens, extra = {}) {
  const r = await fetch(root + '/v1/chat/completions', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages, max_tokens: maxTokens, temperature: 0, ...extra }),
  });
  const j = await r.json();
  return { text: j.choices[0].message.content, usage: j.usage, finish: j.choices[0].finish_reason };
}

async function expectError(what, fn, cls, status, type) {
  try {
    await fn();
    check(false, what, 'no error was raised');
  } catch (e) {
    check(e instanceof cls && e.status === status && e.error?.type === 'error' &&
          e.error?.error?.type === type && typeof e.error?.error?.message === 'string',
          what, `got ${e?.constructor?.name} ${e?.status} ${show(e?.error)}`);
  }
}

async function main() {
  console.log(`@anthropic-ai/sdk ${sdkVersion} against ${root}`);
  const client = new Anthropic({ apiKey, baseURL: root, maxRetries: 0 });
  const models = await (await fetch(root + '/v1/models',
    { headers: { Authorization: 'Bearer ' + apiKey } })).json();
  const model = models.data[0].id;
  const messages = [{ role: 'user', content: 'Once upon a time' }];
  const params = { model, max_tokens: 24, temperature: 0, messages };

  const m = await client.messages.create(params);
  const chat = await chatText(messages, 24);
  check(m.id.startsWith('msg_') && m.type === 'message' && m.role === 'assistant' &&
        m.model === model, 'messages.create: the message object', show(m));
  check(typeof m._request_id === 'string' && m._request_id.startsWith('msg_'),
        'messages.create: _request_id from the request-id header', show(m._request_id));
  eq(textOf(m), chat.text, 'messages.create: greedy text equals the chat endpoint\'s');
  eq(m.stop_reason, chat.finish === 'length' ? 'max_tokens' : 'end_turn',
     'messages.create: stop_reason');
  eq(m.usage.output_tokens, chat.usage.completion_tokens, 'messages.create: output_tokens');
  eq(m.usage.input_tokens + m.usage.cache_read_input_tokens, chat.usage.prompt_tokens,
     'messages.create: input_tokens + cache_read_input_tokens is the prompt');

  // messages.stream: finalMessage equals the created message; its text events add up to it
  const stream = client.messages.stream(params);
  let streamed = '';
  stream.on('text', (t) => { streamed += t; });
  const fm = await stream.finalMessage();
  eq(textOf(fm), textOf(m), 'messages.stream: finalMessage text equals messages.create\'s');
  eq(streamed, textOf(m), 'messages.stream: text events add up to the message');
  eq(fm.stop_reason, m.stop_reason, 'messages.stream: stop_reason');
  eq(fm.usage.output_tokens, m.usage.output_tokens, 'messages.stream: output_tokens');
  eq(fm.usage.input_tokens + fm.usage.cache_read_input_tokens,
     m.usage.input_tokens + m.usage.cache_read_input_tokens, 'messages.stream: input tokens');

  // raw stream events through create({stream: true})
  const raw = await client.messages.create({ ...params, stream: true });
  const types = [];
  for await (const ev of raw) types.push(ev.type);
  check(types[0] === 'message_start' && types.at(-1) === 'message_stop' &&
        types.at(-2) === 'message_delta', 'create({stream: true}): event order', show(types));

  // stop_sequences and max_tokens
  const words = textOf(m).split(/\s+/).filter(Boolean);
  if (check(words.length > 3, 'an answer long enough to stop in', textOf(m))) {
    const word = words[Math.floor(words.length / 2)];
    const s = await client.messages.create({ ...params, stop_sequences: [word] });
    eq([s.stop_reason, s.stop_sequence, textOf(s)],
       ['stop_sequence', word, textOf(m).slice(0, textOf(m).indexOf(word))],
       'stop_sequences: stop_reason stop_sequence, the text before it');
  }
  const short = await client.messages.create({ ...params, max_tokens: 2 });
  eq([short.stop_reason, short.usage.output_tokens], ['max_tokens', 2], 'max_tokens 2');

  // countTokens: the prompt the message ran
  const n = await client.messages.countTokens({ model, messages });
  eq(n.input_tokens, chat.usage.prompt_tokens, 'countTokens equals the prompt\'s tokens');
  const ns = await client.messages.countTokens({ model, messages, system: 'Be brief.' });
  check(ns.input_tokens > n.input_tokens, 'countTokens counts the system prompt',
        `${ns.input_tokens} vs ${n.input_tokens}`);

  // errors as the SDK's typed errors
  await expectError('a bad body: BadRequestError',
    () => client.messages.create({ ...params, max_tokens: 0 }), Anthropic.BadRequestError, 400,
    'invalid_request_error');
  await expectError('an image block: BadRequestError',
    () => client.messages.create({ ...params, messages: [{ role: 'user', content: [
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }] }] }),
    Anthropic.BadRequestError, 400, 'invalid_request_error');
  await expectError('an unknown model: NotFoundError',
    () => client.messages.create({ ...params, model: 'claude-unknown' }), Anthropic.NotFoundError,
    404, 'not_found_error');
  const wrong = new Anthropic({ apiKey: 'wrong-key', baseURL: root, maxRetries: 0 });
  await expectError('a wrong key: AuthenticationError', () => wrong.messages.create(params),
    Anthropic.AuthenticationError, 401, 'authentication_error');
  await expectError('a wrong key on countTokens: AuthenticationError',
    () => wrong.messages.countTokens({ model, messages }), Anthropic.AuthenticationError, 401,
    'authentication_error');
}

try {
  await main();
} catch (e) {
  failures++;
  console.log('FAIL unexpected: ' + (e?.stack || e));
}
if (failures) {
  console.log(`${failures} failure(s)`);
  process.exit(1);
}
console.log('anthropic.mjs: all checks passed');
