/**
 * The three Edge Functions on one local port, under `/functions/v1/<name>` as Supabase serves them, for
 * running the front door without the Supabase CLI or Docker:
 *
 *   openrouter-functions edge --port 54321 --functions-url http://127.0.0.1:8080
 *   # which runs:
 *   OPENROUTER_FUNCTIONS_URL=http://127.0.0.1:8080 deno run --no-prompt \
 *     --allow-net=127.0.0.1:54321,127.0.0.1:8080 --allow-env=OPENROUTER_FUNCTIONS_URL,ALLOW_PLAIN_HTTP \
 *     supabase/functions/_dev/serve.ts --host 127.0.0.1 --port 54321
 *
 * Then `createClient("http://127.0.0.1:54321", anonKey).functions.invoke("chat")` goes through the
 * front door. Tokens are not verified here (Supabase's gateway does that for `verify_jwt = true`
 * functions): the Python functions verify every token themselves, so nothing gets past them.
 *
 * Supabase's CLI ignores folders whose names start with `_`: this is never deployed.
 */
import { DEV_ROUTER, failure, functionsBase, type Handler } from "../_shared/forward.ts";

const FUNCTIONS = ["chat", "completion", "health"] as const;
const PREFIX = "/functions/v1/";

/** Each function's exported handler, imported with `Deno.serve` held back (forward.ts `serveFunction`). */
async function loadHandlers(): Promise<Map<string, Handler>> {
  (globalThis as Record<symbol, unknown>)[DEV_ROUTER] = true;
  const modules = [
    await import("../chat/index.ts"),
    await import("../completion/index.ts"),
    await import("../health/index.ts"),
  ];
  return new Map(FUNCTIONS.map((name, i) => [name, modules[i].handler]));
}

/** `/functions/v1/<name>` and `/functions/v1/<name>/...` go to that function; anything else is a 404. */
export function router(handlers: Map<string, Handler>): Handler {
  const known = FUNCTIONS.map((name) => PREFIX + name).join(", ");
  return (req) => {
    const path = new URL(req.url).pathname;
    const name = path.startsWith(PREFIX) ? path.slice(PREFIX.length).split("/", 1)[0] : "";
    const handler = handlers.get(name);
    if (handler === undefined) {
      return Promise.resolve(failure(req, 404, "not_found", `No Edge Function here; try ${known}.`));
    }
    return handler(req);
  };
}

function option(args: string[], name: string, fallback: string): string {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? args[at + 1] : fallback;
}

if (import.meta.main) {
  const hostname = option(Deno.args, "--host", "127.0.0.1");
  const port = Number(option(Deno.args, "--port", "54321"));
  const handlers = await loadHandlers();
  Deno.serve({
    hostname,
    port,
    onListen: ({ hostname, port }) => {
      const base = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
      const paths = FUNCTIONS.map((name) => PREFIX + name).join(" ");
      const target = functionsBase();
      const to = "url" in target
        ? target.url.origin + target.url.pathname.replace(/\/+$/, "")
        : `nowhere: ${target.problem}`;
      console.log(`openrouter-functions edge: serving ${paths} on ${base}, forwarding to ${to}`);
      console.log("tokens are not verified here (Supabase's gateway would); the Python functions verify each one");
    },
  }, router(handlers));
}
