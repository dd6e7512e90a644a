/**
 * The Supabase Edge front door, shared by the three Edge Functions (`chat`, `completion`, `health`).
 *
 * Each one forwards its requests to the Python function of the same name at
 * `${OPENROUTER_FUNCTIONS_URL}/<name>` and streams the answer back unchanged, so
 * `supabase.functions.invoke("chat")` works against the app's own Supabase URL:
 *
 * - method, query string and the path after the function's name are kept
 *   (`/functions/v1/chat/chat/completions` -> `${URL}/chat/chat/completions`: the openai SDK appends
 *   `/chat/completions` to its base URL);
 * - the request body is passed on as it is (see `requestBody`); only the headers a caller of the
 *   functions sends are passed on (`FORWARDED_REQUEST_HEADERS`), never cookies or the platform's own;
 * - the answer's status, headers (`Retry-After`, `X-Request-Id`, `WWW-Authenticate`, CORS, ...) and
 *   body go back as they are, hop-by-hop headers excepted; an SSE body is the upstream stream itself,
 *   chunk by chunk, never buffered;
 * - a caller that hangs up mid-stream cancels the body stream, which closes the fetch's connection:
 *   the Python function closes its OpenRouter stream too and settles the request as cancelled. The
 *   request's AbortSignal is wired to the fetch as well, for a caller leaving before the answer's
 *   headers; but Deno 2.9 (HTTP/1.1) does not raise it before the handler has returned, so there it
 *   changes nothing — as with a direct call, the Python side completes a non-streamed answer anyway;
 * - CORS preflights are forwarded like any request: the Python side answers them exactly, with its
 *   `ALLOWED_ORIGINS`.
 *
 * Only when the Python side cannot be asked does the front door answer itself, in the functions' one
 * error envelope `{"error": {"code", "type", "message"}}` with CORS headers (so a web page can read
 * why): 502 `front_door_misconfigured` (no usable `OPENROUTER_FUNCTIONS_URL`) or 503
 * `functions_unreachable` with `Retry-After` (the fetch failed: refused, DNS, TLS, reset). A preflight
 * then gets a permissive 204, so that the request after it reaches that readable envelope.
 *
 * Tokens are not checked here: `verify_jwt` in supabase/config.toml has Supabase's gateway check them
 * for chat and completion, and the Python functions verify every token themselves anyway.
 *
 * Dependency-free: Deno built-ins and `fetch` only.
 */

/** One Edge Function: a request in, a response out. */
export type Handler = (req: Request) => Promise<Response>;

/** The prefix under which the Python functions answer `/chat`, `/completion` and `/health`. */
export const FUNCTIONS_URL_VAR = "OPENROUTER_FUNCTIONS_URL";
/** `true` allows a plain-http `OPENROUTER_FUNCTIONS_URL` beyond loopback (a private network you trust). */
export const ALLOW_PLAIN_HTTP_VAR = "ALLOW_PLAIN_HTTP";

/** The path Supabase's clients call (`${SUPABASE_URL}/functions/v1/<name>`); the hosted runtime strips it. */
const SUPABASE_PREFIX = "/functions/v1";

/** Request headers passed on to the Python function (lower case). Everything else stays here. */
export const FORWARDED_REQUEST_HEADERS: readonly string[] = [
  "accept",
  "access-control-request-headers",
  "access-control-request-method",
  "apikey",
  "authorization",
  "content-type",
  "origin",
  "x-client-info",
  "x-request-id",
];

/**
 * Response headers never passed back: hop-by-hop ones (RFC 9110 section 7.6.1) and the framing, which
 * the runtime writes itself for the body it sends.
 */
const DROPPED_RESPONSE_HEADERS = new Set([
  "connection",
  "content-length",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Seconds a caller is asked to wait when the Python side could not be reached. */
const UNREACHABLE_RETRY_AFTER = 5;

/** The CORS headers of the front door's own answers (the Python side's answers carry their own). */
const ALLOWED_HEADERS = "authorization, x-client-info, apikey, content-type, x-request-id";
const EXPOSED_HEADERS = "X-Request-Id, Retry-After, WWW-Authenticate, X-Thread-Id, X-Message-Id";

// The Python side's rule for a caller's X-Request-Id (openrouter_functions.pipeline.request_id).
const REQUEST_ID = /^[A-Za-z0-9._:\-]{1,128}$/;
// A header list a browser sends in Access-Control-Request-Headers.
const HEADER_LIST = /^[A-Za-z0-9!#$%&'*+.^_`|~\-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~\-]+)*$/;

/** Hosts a plain-http `OPENROUTER_FUNCTIONS_URL` may name without `ALLOW_PLAIN_HTTP=true`. */
function isLocalHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || hostname === "host.docker.internal" ||
    /^127(\.\d{1,3}){3}$/.test(hostname);
}

/** Where the Python functions answer, or why that is not known. */
export type FunctionsBase = { url: URL } | { problem: string };

/** The configured base URL, checked: http(s), no credentials, query or fragment, https beyond loopback. */
export function functionsBase(read: (name: string) => string | undefined = readEnv): FunctionsBase {
  const raw = (read(FUNCTIONS_URL_VAR) ?? "").trim();
  if (!raw) {
    return { problem: `${FUNCTIONS_URL_VAR} is not set` };
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { problem: `${FUNCTIONS_URL_VAR} is not a URL` };
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { problem: `${FUNCTIONS_URL_VAR} must be an https:// URL` };
  }
  if (url.username || url.password || url.search || url.hash) {
    return { problem: `${FUNCTIONS_URL_VAR} must not carry credentials, a query or a fragment` };
  }
  const plainAllowed = (read(ALLOW_PLAIN_HTTP_VAR) ?? "").trim().toLowerCase() === "true";
  if (url.protocol === "http:" && !isLocalHost(url.hostname) && !plainAllowed) {
    return {
      problem:
        `${FUNCTIONS_URL_VAR} must be https:// (plain http only to loopback, or with ${ALLOW_PLAIN_HTTP_VAR}=true)`,
    };
  }
  return { url };
}

/** `Deno.env.get`, where reading the environment is not allowed too (then: not set). */
function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * The Python function's URL for a request to Edge Function `name`: the base, `/<name>`, whatever
 * followed the function's name in the request's path, and the query string. `null` if the result
 * would leave `${base}/<name>` (it cannot, as request URLs arrive normalised; checked all the same).
 */
export function targetUrl(base: URL, name: string, requestUrl: URL): URL | null {
  let path = requestUrl.pathname;
  if (path === SUPABASE_PREFIX || path.startsWith(SUPABASE_PREFIX + "/")) {
    path = path.slice(SUPABASE_PREFIX.length);
  }
  const own = `/${name}`;
  let rest: string;
  if (path === own || path.startsWith(own + "/")) {
    rest = path.slice(own.length);
  } else {
    rest = path === "/" ? "" : path; // a runtime that already stripped the name
  }
  const root = `${base.pathname.replace(/\/+$/, "")}/${name}`;
  const target = new URL(base.href);
  target.pathname = root + rest;
  target.search = requestUrl.search;
  if (target.pathname !== root && !target.pathname.startsWith(root + "/")) {
    return null;
  }
  return target;
}

/** The caller's headers that the Python function reads; the rest (cookies, platform headers) stay here. */
export function forwardedHeaders(incoming: Headers): Headers {
  const headers = new Headers();
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming.get(name);
    if (value !== null) {
      headers.set(name, value);
    }
  }
  // An uncompressed answer: the body goes back exactly as the function wrote it, event by event.
  headers.set("accept-encoding", "identity");
  return headers;
}

/** The Python function's response headers minus hop-by-hop ones (and those its `Connection` names). */
export function returnedHeaders(upstream: Headers): Headers {
  const named = new Set(
    (upstream.get("connection") ?? "").split(",").map((token) => token.trim().toLowerCase()).filter(Boolean),
  );
  const headers = new Headers();
  for (const [name, value] of upstream) {
    if (!DROPPED_RESPONSE_HEADERS.has(name) && !named.has(name)) {
      headers.append(name, value);
    }
  }
  return headers;
}

/** The caller's `X-Request-Id` when it is sane (as the Python side judges it), else a new one. */
function requestId(req: Request): string {
  const given = req.headers.get("x-request-id");
  return given && REQUEST_ID.test(given) ? given : crypto.randomUUID().replaceAll("-", "");
}

/**
 * The front door's own answer when the Python side cannot be asked: the error envelope with CORS
 * headers and a request id; for a preflight, a 204 that lets the request itself come and read it.
 */
export function failure(
  req: Request,
  status: number,
  type: string,
  message: string,
  retryAfter?: number,
): Response {
  const headers = new Headers({
    "access-control-allow-origin": "*",
    "access-control-expose-headers": EXPOSED_HEADERS,
    "x-request-id": requestId(req),
  });
  if (req.method === "OPTIONS") {
    const asked = req.headers.get("access-control-request-headers") ?? "";
    headers.set("access-control-allow-methods", "GET, POST, OPTIONS");
    headers.set("access-control-allow-headers", HEADER_LIST.test(asked) ? asked : ALLOWED_HEADERS);
    return new Response(null, { status: 204, headers });
  }
  headers.set("content-type", "application/json");
  if (retryAfter !== undefined) {
    headers.set("retry-after", String(retryAfter));
  }
  const body = JSON.stringify({ error: { code: status, type, message } });
  return new Response(body, { status, headers });
}

/** Request bodies up to this size (by their Content-Length) are read whole before they are sent on. */
export const BUFFERED_BODY_BYTES = 8 * 1024 * 1024;

/**
 * The body to send on: read whole when its Content-Length says it is small (every supabase-js call), so
 * it leaves in one piece with a Content-Length. Streamed on in chunks, that costs a round of Nagle's
 * algorithm against delayed ACKs (~40 ms) before the Python side sees its end. Others (no or a large
 * Content-Length) are streamed through; the Python side caps bodies either way (MAX_BODY_BYTES).
 */
async function requestBody(req: Request): Promise<BodyInit | null> {
  if (req.body === null) {
    return null;
  }
  const length = Number(req.headers.get("content-length") ?? "NaN");
  if (Number.isSafeInteger(length) && length >= 0 && length <= BUFFERED_BODY_BYTES) {
    return await req.arrayBuffer();
  }
  return req.body;
}

/** Forward one request to Edge Function `name`'s Python function; see the module's comment. */
export async function forward(
  req: Request,
  name: string,
  base: FunctionsBase = functionsBase(),
): Promise<Response> {
  if ("problem" in base) {
    console.error(`front door ${name}: not configured: ${base.problem}`);
    return failure(
      req,
      502,
      "front_door_misconfigured",
      `The ${name} function's Edge front door is not configured: ${base.problem}.`,
    );
  }
  const target = targetUrl(base.url, name, new URL(req.url));
  if (target === null) {
    return failure(req, 404, "not_found", `No such path under /${name}.`);
  }
  // The caller hanging up (the request's signal, where the runtime raises it) aborts the upstream fetch.
  const upstream = new AbortController();
  const hangUp = () => upstream.abort(req.signal.reason);
  if (req.signal.aborted) {
    hangUp();
  } else {
    req.signal.addEventListener("abort", hangUp, { once: true });
  }
  let body: BodyInit | null;
  try {
    body = await requestBody(req);
  } catch {
    req.signal.removeEventListener("abort", hangUp);
    return failure(req, 400, "invalid_request", "The request body could not be read.");
  }
  let response: Response;
  try {
    response = await fetch(target, {
      method: req.method,
      headers: forwardedHeaders(req.headers),
      body,
      redirect: "manual",
      signal: upstream.signal,
    });
  } catch (error) {
    req.signal.removeEventListener("abort", hangUp);
    if (req.signal.aborted) {
      return new Response(null, { status: 499 }); // the caller hung up first: nobody reads this
    }
    // The host and why, never the URL itself (its path and query are the caller's).
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : "";
    const why = error instanceof Error ? `${error.name}: ${error.message}${cause}` : String(error);
    console.error(
      `front door ${name}: ${base.url.host} did not answer: ${why.replace(/\bhttps?:\/\/[^\s)]*/g, "<url>")}`,
    );
    return failure(
      req,
      503,
      "functions_unreachable",
      `The ${name} function cannot be reached right now; try again shortly.`,
      UNREACHABLE_RETRY_AFTER,
    );
  }
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: returnedHeaders(response.headers),
  });
}

/** The handler of Edge Function `name`. */
export function forwardTo(name: string): Handler {
  return (req) => forward(req, name);
}

/** Set by the local dev router (`_dev/serve.ts`) before it imports the functions to mount them itself. */
export const DEV_ROUTER = Symbol.for("openrouter-functions.edge.dev-router");

/**
 * Serve `handler` as this Edge Function with `Deno.serve`, as Supabase's runtime expects, unless the
 * local dev router is importing the function (it then mounts the exported handler under
 * `/functions/v1/<name>` on its own port).
 */
export function serveFunction(handler: Handler): void {
  if ((globalThis as Record<symbol, unknown>)[DEV_ROUTER] === true) {
    return;
  }
  Deno.serve(handler);
}
