// Edge Function `completion`: forwards to the Python `completion` function at
// ${OPENROUTER_FUNCTIONS_URL}/completion. See ../_shared/forward.ts and docs/edge.md.
import { forwardTo, serveFunction } from "../_shared/forward.ts";

export const handler = forwardTo("completion");

serveFunction(handler);
