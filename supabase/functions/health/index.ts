// Edge Function `health`: forwards to the Python `health` function at ${OPENROUTER_FUNCTIONS_URL}/health
// (no token needed; verify_jwt = false in supabase/config.toml). See ../_shared/forward.ts and docs/edge.md.
import { forwardTo, serveFunction } from "../_shared/forward.ts";

export const handler = forwardTo("health");

serveFunction(handler);
