// @supabase/supabase-js `functions.invoke(...)` through the Supabase Edge front door, the way a web app
// calls it: `createClient(SUPABASE_URL, anonKey, { accessToken })` and the function's name.
//
// Run by tests/edge/test_edge_front_door.py against a real front door (`openrouter-functions edge`)
// forwarding to a real `openrouter-functions serve` on the fake OpenRouter (which echoes the last user
// message as "Echo: ..."):
//
//   SUPABASE_URL=http://127.0.0.1:54321 SUPABASE_ANON_KEY=... ACCESS_TOKEN=... node --test invoke_through_edge.mjs
//
// (On Node 20 add --experimental-websocket: createClient builds a Realtime client, which needs a global
// WebSocket; Node 22 has one.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient, FunctionsHttpError } from "@supabase/supabase-js";

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} must be set (see the comment at the top of this file)`);
  }
  return value;
}

if (typeof globalThis.WebSocket === "undefined") {
  throw new Error("no global WebSocket: on Node 20 run with --experimental-websocket (see the top of this file)");
}

const SUPABASE_URL = required("SUPABASE_URL");
const ANON_KEY = required("SUPABASE_ANON_KEY");
const ACCESS_TOKEN = required("ACCESS_TOKEN");
const TIMEOUT = { timeout: 20_000 };

/** A client whose calls carry `token` (supabase-js sends `apikey: anonKey` and `Authorization: Bearer token`). */
function client(token) {
  return createClient(SUPABASE_URL, ANON_KEY, { accessToken: async () => token });
}

const supabase = client(ACCESS_TOKEN);

test("chat: plain JSON, request id echoed", TIMEOUT, async () => {
  const { data, error, response } = await supabase.functions.invoke("chat", {
    body: { messages: [{ role: "user", content: "hello through the edge" }] },
    headers: { "X-Request-Id": `node-chat-${Date.now()}` },
  });
  assert.equal(error, null);
  assert.equal(data.object, "chat.completion");
  assert.equal(data.choices[0].message.content, "Echo: hello through the edge");
  assert.ok(data.usage.total_tokens > 0);
  assert.match(response.headers.get("x-request-id"), /^node-chat-\d+$/);
});

test("chat: streamed SSE arrives as a Response body, chunk by chunk, ending in [DONE]", TIMEOUT, async () => {
  const { data, error, response } = await supabase.functions.invoke("chat", {
    body: { messages: [{ role: "user", content: "stream me a few words please" }], stream: true },
  });
  assert.equal(error, null);
  // functions-js hands a text/event-stream answer back unread: `data` is the fetch Response itself.
  assert.ok(data instanceof Response, `expected a Response, got ${typeof data}`);
  assert.equal(data, response);
  assert.match(response.headers.get("content-type"), /^text\/event-stream/);

  const decoder = new TextDecoder();
  let text = "";
  for await (const piece of data.body) {
    text += decoder.decode(piece, { stream: true });
  }
  const events = text.split("\n\n").filter((event) => event.startsWith("data: "));
  assert.equal(events.at(-1), "data: [DONE]");
  const chunks = events.slice(0, -1).map((event) => JSON.parse(event.slice("data: ".length)));
  assert.ok(chunks.length >= 3, `expected several chunks, got ${chunks.length}`);
  const content = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? "").join("");
  assert.equal(content, "Echo: stream me a few words please");
});

test("chat: a bad body is a FunctionsHttpError whose context is the envelope's Response", TIMEOUT, async () => {
  const { data, error } = await supabase.functions.invoke("chat", { body: { messages: "not a list" } });
  assert.equal(data, null);
  assert.ok(error instanceof FunctionsHttpError, `expected FunctionsHttpError, got ${error?.name}`);
  assert.equal(error.context.status, 400);
  const envelope = await error.context.json();
  assert.equal(envelope.error.code, 400);
  assert.equal(envelope.error.type, "invalid_request");
  assert.equal(typeof envelope.error.message, "string");
});

test("chat: a bad token is 401 with WWW-Authenticate, readable through error.context", TIMEOUT, async () => {
  const { data, error } = await client("not-a-real-token").functions.invoke("chat", {
    body: { messages: [{ role: "user", content: "hi" }] },
  });
  assert.equal(data, null);
  assert.ok(error instanceof FunctionsHttpError);
  assert.equal(error.context.status, 401);
  assert.match(error.context.headers.get("www-authenticate"), /^Bearer/);
  const envelope = await error.context.json();
  assert.equal(envelope.error.type, "invalid_token");
});

test("completion: prompt in, text out", TIMEOUT, async () => {
  const { data, error } = await supabase.functions.invoke("completion", {
    body: { prompt: "complete me", system: "be brief" },
  });
  assert.equal(error, null);
  assert.equal(data.text, "Echo: complete me");
  assert.equal(data.data, null);
  assert.ok(data.id.startsWith("gen-"));
});

test("health: GET, no token needed", TIMEOUT, async () => {
  const anonymous = createClient(SUPABASE_URL, ANON_KEY);
  const { data, error } = await anonymous.functions.invoke("health", { method: "GET" });
  assert.equal(error, null);
  assert.equal(data.status, "ok");
});
