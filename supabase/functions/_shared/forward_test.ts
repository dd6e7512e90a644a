// Unit tests of the front door's pure parts: `deno test supabase/functions/` (no permissions needed).
// The whole path, under real Deno with a real Python server behind it, is tests/edge/ (pytest).
import { failure, forward, forwardedHeaders, functionsBase, returnedHeaders, targetUrl } from "./forward.ts";

function assertEquals(actual: unknown, expected: unknown, what = "value"): void {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  if (a !== e) {
    throw new Error(`${what}: expected ${e}, got ${a}`);
  }
}

function base(raw: string, plain = ""): URL {
  const found = functionsBase((name) => ({ OPENROUTER_FUNCTIONS_URL: raw, ALLOW_PLAIN_HTTP: plain })[name]);
  if (!("url" in found)) {
    throw new Error(`unexpected problem: ${found.problem}`);
  }
  return found.url;
}

function problem(raw: string | undefined, plain = ""): string {
  const found = functionsBase((name) => ({ OPENROUTER_FUNCTIONS_URL: raw, ALLOW_PLAIN_HTTP: plain })[name]);
  return "problem" in found ? found.problem : "";
}

Deno.test("target URL: function name, sub-path and query string kept, /functions/v1 dropped", () => {
  const cases: [string, string, string, string][] = [
    ["https://fn.example", "chat", "http://edge/functions/v1/chat", "https://fn.example/chat"],
    ["https://fn.example/", "chat", "http://edge/functions/v1/chat/", "https://fn.example/chat/"],
    [
      "https://fn.example",
      "chat",
      "http://edge/functions/v1/chat/chat/completions?a=1",
      "https://fn.example/chat/chat/completions?a=1",
    ],
    [
      "https://r-p.cloudfunctions.net/",
      "health",
      "http://edge/health?x=%2F",
      "https://r-p.cloudfunctions.net/health?x=%2F",
    ],
    ["http://127.0.0.1:8080/base/", "completion", "http://edge/completion", "http://127.0.0.1:8080/base/completion"],
    // A runtime that strips the function's name too: what is left is the sub-path.
    ["https://fn.example", "chat", "http://edge/", "https://fn.example/chat"],
    ["https://fn.example", "chat", "http://edge/v1/chat/completions", "https://fn.example/chat/v1/chat/completions"],
    // `..` never climbs out of the function (URLs arrive normalised; /chat/../health is /health).
    [
      "https://fn.example",
      "chat",
      "http://edge/functions/v1/chat/../../metrics",
      "https://fn.example/chat/functions/metrics",
    ],
    ["https://fn.example", "chat", "http://edge/chat/%2e%2e/metrics", "https://fn.example/chat/metrics"],
  ];
  for (const [root, name, request, expected] of cases) {
    assertEquals(targetUrl(base(root), name, new URL(request))?.href, expected, request);
  }
});

Deno.test("functions URL: https anywhere, plain http only to loopback unless allowed", () => {
  assertEquals(problem(undefined), "OPENROUTER_FUNCTIONS_URL is not set");
  assertEquals(problem("   "), "OPENROUTER_FUNCTIONS_URL is not set");
  assertEquals(problem("not a url"), "OPENROUTER_FUNCTIONS_URL is not a URL");
  assertEquals(problem("ftp://fn.example"), "OPENROUTER_FUNCTIONS_URL must be an https:// URL");
  for (const raw of ["https://u:p@fn.example", "https://fn.example?k=v", "https://fn.example#x"]) {
    assertEquals(problem(raw), "OPENROUTER_FUNCTIONS_URL must not carry credentials, a query or a fragment", raw);
  }
  assertEquals(problem("http://fn.example").startsWith("OPENROUTER_FUNCTIONS_URL must be https://"), true);
  for (
    const raw of [
      "http://127.0.0.1:8080",
      "http://localhost:8080",
      "http://[::1]:8080",
      "http://host.docker.internal:8080",
    ]
  ) {
    assertEquals(problem(raw), "", raw);
  }
  assertEquals(problem("http://kong:8000", "true"), "");
  assertEquals(problem("https://fn.example"), "");
});

Deno.test("request headers: only what the functions read, and no compression", () => {
  const incoming = new Headers({
    authorization: "Bearer t",
    apikey: "k",
    "content-type": "application/json",
    accept: "text/event-stream",
    "x-client-info": "supabase-js/2",
    "x-request-id": "r",
    origin: "https://app.example",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization",
    cookie: "session=secret",
    "x-forwarded-for": "203.0.113.9",
    host: "edge.example",
    "accept-encoding": "gzip, br",
  });
  const sent = Object.fromEntries(forwardedHeaders(incoming));
  assertEquals(Object.keys(sent).sort(), [
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "apikey",
    "authorization",
    "content-type",
    "origin",
    "x-client-info",
    "x-request-id",
  ]);
  assertEquals(sent["accept-encoding"], "identity");
});

Deno.test("response headers: hop-by-hop ones dropped, the rest kept", () => {
  const upstream = new Headers({
    connection: "keep-alive, x-hop",
    "keep-alive": "timeout=5",
    "x-hop": "gone",
    "transfer-encoding": "chunked",
    "content-length": "12",
    "retry-after": "7",
    "x-request-id": "r",
    "www-authenticate": 'Bearer error="invalid_token"',
    "content-type": "text/event-stream; charset=utf-8",
    "access-control-allow-origin": "https://app.example",
  });
  assertEquals(Object.keys(Object.fromEntries(returnedHeaders(upstream))).sort(), [
    "access-control-allow-origin",
    "content-type",
    "retry-after",
    "www-authenticate",
    "x-request-id",
  ]);
});

Deno.test("own answers: the envelope with CORS and the request id; a preflight gets a 204", async () => {
  const post = new Request("http://edge/functions/v1/chat", { method: "POST", headers: { "x-request-id": "r-1" } });
  const answer = failure(post, 503, "functions_unreachable", "later", 5);
  assertEquals(answer.status, 503);
  assertEquals(await answer.json(), { error: { code: 503, type: "functions_unreachable", message: "later" } });
  assertEquals(answer.headers.get("retry-after"), "5");
  assertEquals(answer.headers.get("x-request-id"), "r-1");
  assertEquals(answer.headers.get("access-control-allow-origin"), "*");

  const odd = new Request("http://edge/functions/v1/chat", { method: "POST", headers: { "x-request-id": "a b" } });
  assertEquals(/^[0-9a-f]{32}$/.test(failure(odd, 502, "t", "m").headers.get("x-request-id") ?? ""), true);

  const preflight = new Request("http://edge/functions/v1/chat", {
    method: "OPTIONS",
    headers: { origin: "https://app.example", "access-control-request-headers": "authorization, x-region" },
  });
  const allowed = failure(preflight, 502, "front_door_misconfigured", "m");
  assertEquals(allowed.status, 204);
  assertEquals(allowed.headers.get("access-control-allow-headers"), "authorization, x-region");
  assertEquals(allowed.body, null);
});

Deno.test("forward without a configured URL answers 502 front_door_misconfigured", async () => {
  const request = new Request("http://edge/functions/v1/chat", { method: "POST", body: "{}" });
  const original = console.error;
  console.error = () => {};
  try {
    const answer = await forward(request, "chat", { problem: "OPENROUTER_FUNCTIONS_URL is not set" });
    assertEquals(answer.status, 502);
    const body = await answer.json();
    assertEquals(body.error.type, "front_door_misconfigured");
    assertEquals(
      body.error.message,
      "The chat function's Edge front door is not configured: OPENROUTER_FUNCTIONS_URL is not set.",
    );
  } finally {
    console.error = original;
  }
});
