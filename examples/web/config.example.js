// Copy this file to config.js and fill it in for your Supabase project. The page imports ./config.js.
// Everything here is public: the anon (publishable) key is meant for browsers; row level security and
// the functions' token check are what protect the data.
//
// Offline mode needs no config.js: `openrouter-functions serve` generates one at /app/config.js.
export default {
  // Project Settings > API: the project URL and its anon / publishable key.
  supabaseUrl: "https://YOUR-PROJECT-REF.supabase.co",
  anonKey: "YOUR-ANON-OR-PUBLISHABLE-KEY",

  // Where the Python functions are deployed; the openai SDK toggle calls `${functionsUrl}/chat` directly.
  // supabase.functions.invoke("chat") goes through the project URL instead (the Edge front door).
  functionsUrl: "https://REGION-PROJECT.cloudfunctions.net",

  // Optional: the model to ask for (one of the functions' ALLOWED_MODELS); the functions' default otherwise.
  // model: "openai/gpt-4o",
};
