// Edge Function `chat`: forwards to the Python `chat` function at ${OPENROUTER_FUNCTIONS_URL}/chat
// (OpenAI chat completions, plain JSON or SSE). See ../_shared/forward.ts and docs/edge.md.
import { forwardTo, serveFunction } from "../_shared/forward.ts";

export const handler = forwardTo("chat");

serveFunction(handler);
