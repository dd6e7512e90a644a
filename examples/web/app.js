// The example web app: Supabase sign-in, a chat that streams through the `chat` function (with
// supabase-js or the openai SDK), and the signed-in user's usage read from the ledger's tables under RLS.
//
// Settings come from ./config.js (see config.example.js). `openrouter-functions serve` in offline mode
// generates one at /app/config.js with `offline: true` and the local developer's token.

const { createClient, FunctionsHttpError, FunctionsRelayError, FunctionsFetchError } = globalThis.supabase;

const $ = (id) => document.getElementById(id);

/** A failed call, as the page shows it: our error envelope's message, and the wait from Retry-After. */
class ChatError extends Error {
  constructor(message, { status = null, type = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

const state = {
  config: null,
  client: null, // the supabase-js client
  user: null, // { id, email, anonymous }
  getToken: async () => null, // the current access token
  history: [], // [{ role, content }] sent with each chat request
  busy: false,
  controller: null,
  newestRequestId: undefined,
};

// ---------------------------------------------------------------------------------------------------
// Start-up: configuration, then a client and a user.

async function loadConfig() {
  try {
    const module = await import("./config.js");
    return module.default ?? null;
  } catch (error) {
    console.warn("config.js could not be loaded", error);
    return null;
  }
}

function decodeJwt(token) {
  const payload = token.split(".")[1] ?? "";
  const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
  return JSON.parse(json);
}

async function start() {
  const config = await loadConfig();
  $("loading").hidden = true;
  if (!config?.supabaseUrl || !config?.anonKey) {
    $("setup-message").textContent = config
      ? "config.js needs at least supabaseUrl and anonKey."
      : "This page has no config.js yet.";
    $("setup").hidden = false;
    return;
  }
  state.config = config;
  const mode = $("mode");
  mode.hidden = false;
  if (config.offline) {
    // No Auth server offline: "sign in" as the developer with the token serve minted. supabase-js sends it
    // as the bearer token of every call (functions and tables alike); `supabase.auth` is unavailable then.
    const token = config.devToken;
    state.client = createClient(config.supabaseUrl, config.anonKey, { accessToken: async () => token });
    const claims = decodeJwt(token);
    mode.textContent = "Offline mode";
    mode.classList.add("offline");
    $("offline-note").hidden = false;
    signedIn({ id: claims.sub, email: claims.email ?? "local developer", anonymous: false }, async () => token);
    return;
  }
  mode.textContent = new URL(config.supabaseUrl).host;
  state.client = createClient(config.supabaseUrl, config.anonKey);
  state.client.auth.onAuthStateChange((_event, session) => {
    // Never await supabase calls inside this callback (supabase-js holds a lock while it runs).
    setTimeout(() => applySession(session), 0);
  });
  const { data } = await state.client.auth.getSession();
  applySession(data.session);
}

function applySession(session) {
  if (!session) {
    signedOut();
    return;
  }
  const user = session.user;
  signedIn({ id: user.id, email: user.email || null, anonymous: Boolean(user.is_anonymous) }, async () => {
    const { data } = await state.client.auth.getSession(); // refreshed by supabase-js when near expiry
    return data.session?.access_token ?? null;
  });
}

function signedIn(user, getToken) {
  const changed = state.user?.id !== user.id;
  state.user = user;
  state.getToken = getToken;
  $("who").textContent = user.anonymous ? "anonymous user" : user.email;
  $("sign-out").hidden = Boolean(state.config.offline);
  $("auth").hidden = true;
  $("workspace").hidden = false;
  if (changed) {
    state.history = [];
    state.newestRequestId = undefined;
    resetTranscript();
    refreshUsage();
  }
}

function signedOut() {
  state.user = null;
  state.getToken = async () => null;
  $("who").textContent = "";
  $("sign-out").hidden = true;
  $("workspace").hidden = true;
  $("auth").hidden = false;
}

// ---------------------------------------------------------------------------------------------------
// Sign-in with Supabase Auth (a real project only).

function authMessage(text, bad = false) {
  const element = $("auth-message");
  element.textContent = text;
  element.classList.toggle("bad", bad);
}

async function withAuthButtons(action) {
  const buttons = [$("sign-in"), $("sign-up"), $("anonymous")];
  buttons.forEach((button) => (button.disabled = true));
  try {
    await action();
  } catch (error) {
    authMessage(error.message || String(error), true);
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  withAuthButtons(async () => {
    authMessage("Signing in…");
    const { error } = await state.client.auth.signInWithPassword({
      email: $("email").value.trim(),
      password: $("password").value,
    });
    authMessage(error ? error.message : "", Boolean(error));
  });
});

$("sign-up").addEventListener("click", () => {
  if (!$("auth-form").reportValidity()) return;
  withAuthButtons(async () => {
    authMessage("Creating your account…");
    const { data, error } = await state.client.auth.signUp({
      email: $("email").value.trim(),
      password: $("password").value,
    });
    if (error) authMessage(error.message, true);
    else if (!data.session) authMessage("Check your inbox to confirm your email address, then sign in.");
    else authMessage("");
  });
});

$("anonymous").addEventListener("click", () =>
  withAuthButtons(async () => {
    authMessage("Signing in anonymously…");
    const { error } = await state.client.auth.signInAnonymously();
    // "Anonymous sign-ins are disabled" unless the project allows them (Authentication > Sign In / Providers).
    authMessage(error ? error.message : "", Boolean(error));
  }),
);

$("sign-out").addEventListener("click", async () => {
  await state.client.auth.signOut();
});

// ---------------------------------------------------------------------------------------------------
// Chat: two clients, one stream of text deltas.

/** Reads an OpenAI-style SSE body, calling onDelta with each piece of answer text as it arrives. */
async function readSse(body, onDelta) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
      const event = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      // An event's data lines; lines starting with ":" are comments (OpenRouter's keep-alives).
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") continue; // the server closes the stream right after it
      const chunk = JSON.parse(data);
      if (chunk.error) {
        // A failure after the stream began arrives as an event carrying OpenRouter's error shape
        // ({code, message, metadata: {type}}), then the stream ends.
        throw new ChatError(chunk.error.message ?? "The answer stopped with an error.", {
          status: chunk.error.code ?? null,
          type: chunk.error.type ?? chunk.error.metadata?.type ?? null,
        });
      }
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) onDelta(delta);
    }
  }
}

/** supabase.functions.invoke("chat"): for `text/event-stream` supabase-js hands back the Response itself. */
async function chatWithSupabase(messages, signal, onDelta) {
  const { data, error } = await state.client.functions.invoke("chat", {
    body: { messages, stream: true, ...(state.config.model ? { model: state.config.model } : {}) },
    signal,
  });
  if (error) throw await fromFunctionsError(error);
  if (data instanceof Response) {
    await readSse(data.body, onDelta);
  } else {
    onDelta(data?.choices?.[0]?.message?.content ?? String(data ?? "")); // a server that did not stream
  }
}

async function fromFunctionsError(error) {
  if (error instanceof FunctionsHttpError) {
    const response = error.context; // the Response: our envelope is its JSON body
    let envelope = null;
    try {
      envelope = await response.json();
    } catch {
      // not JSON (a proxy's page, for instance)
    }
    const inner = envelope?.error;
    const message =
      (typeof inner === "object" && inner?.message) ||
      (typeof inner === "string" && inner) ||
      `The function answered ${response.status} ${response.statusText}`.trim();
    return new ChatError(message, {
      status: response.status,
      type: typeof inner === "object" ? (inner?.type ?? null) : null,
      retryAfter: response.headers.get("Retry-After"),
    });
  }
  if (error instanceof FunctionsRelayError) {
    return new ChatError("Supabase's relay could not reach the chat function.", { status: error.context?.status });
  }
  if (error instanceof FunctionsFetchError) {
    const cause = error.context;
    if (cause?.name === "AbortError") return new ChatError("Stopped.", { type: "aborted" });
    return new ChatError(
      "Could not reach the chat function: the network failed, or the function does not allow this page's origin " +
        `(${location.origin}) in ALLOWED_ORIGINS.`,
      { type: "network" },
    );
  }
  return new ChatError(error?.message || String(error));
}

let openaiModule = null;

// The openai SDK adds its telemetry headers (X-Stainless-*) to every request. They are not among the
// headers the functions' CORS preflight allows, so a browser would refuse the call: null removes them.
const NO_SDK_TELEMETRY = Object.fromEntries(
  [
    "X-Stainless-Lang",
    "X-Stainless-Package-Version",
    "X-Stainless-OS",
    "X-Stainless-Arch",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Retry-Count",
    "X-Stainless-Timeout",
    "User-Agent",
  ].map((name) => [name, null]),
);

/** The openai SDK, pointed at the chat function itself (it answers /chat/completions below its URL). */
async function chatWithOpenAI(messages, signal, onDelta) {
  if (!state.config.functionsUrl) {
    throw new ChatError("config.js has no functionsUrl, so the openai SDK has nowhere to call.");
  }
  openaiModule ??= await import("openai");
  const { default: OpenAI, APIError, APIConnectionError, APIUserAbortError } = openaiModule;
  const sdk = new OpenAI({
    apiKey: await state.getToken(), // the user's Supabase access token is the bearer token
    baseURL: `${state.config.functionsUrl.replace(/\/+$/, "")}/chat`,
    dangerouslyAllowBrowser: true, // fine here: the "key" is the signed-in user's own short-lived token
    maxRetries: 0, // show the wait from Retry-After instead of sleeping through it
    defaultHeaders: NO_SDK_TELEMETRY,
  });
  try {
    const stream = await sdk.chat.completions.create(
      { messages, stream: true, ...(state.config.model ? { model: state.config.model } : {}) },
      { signal },
    );
    for await (const chunk of stream) {
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) onDelta(delta);
    }
  } catch (error) {
    if (error instanceof APIUserAbortError) throw new ChatError("Stopped.", { type: "aborted" });
    if (error instanceof APIConnectionError) {
      throw new ChatError(
        "Could not reach the chat function: the network failed, or the function does not allow this page's " +
          `origin (${location.origin}) in ALLOWED_ORIGINS.`,
        { type: "network" },
      );
    }
    if (error instanceof APIError) {
      // error.error is the envelope's inner object: {code, type, message}
      throw new ChatError(error.error?.message ?? error.message, {
        status: error.status ?? error.error?.code ?? null,
        type: error.error?.type ?? null,
        retryAfter: error.headers?.get?.("retry-after") ?? null,
      });
    }
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------
// Chat view.

function resetTranscript() {
  const transcript = $("transcript");
  transcript.replaceChildren();
  const empty = document.createElement("li");
  empty.className = "empty muted";
  empty.textContent = "Say hello — the answer streams in as it is written.";
  transcript.append(empty);
  hideChatError();
}

function addMessage(role, text) {
  const transcript = $("transcript");
  transcript.querySelector(".empty")?.remove();
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  item.append(content);
  if (role === "assistant") content.dataset.testid = "answer";
  transcript.append(item);
  transcript.scrollTop = transcript.scrollHeight;
  return item;
}

function formatWait(seconds) {
  if (seconds < 120) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

let waitTimer = null;

function showChatError(error) {
  const box = $("chat-error");
  box.replaceChildren();
  if (error.status) {
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = error.type ? `${error.status} · ${error.type}` : String(error.status);
    box.append(status);
  }
  box.append(document.createTextNode(error.message));
  const seconds = Number.parseInt(error.retryAfter ?? "", 10);
  box.dataset.status = error.status ?? "";
  box.dataset.retryAfter = Number.isFinite(seconds) ? String(seconds) : "";
  if (Number.isFinite(seconds) && seconds > 0) {
    box.append(document.createTextNode(` Try again in ${formatWait(seconds)}.`));
    holdSend(seconds);
  }
  box.hidden = false;
}

function hideChatError() {
  $("chat-error").hidden = true;
}

/** Keeps Send disabled while the server asked us to wait (Retry-After), counting down on the button. */
function holdSend(seconds) {
  clearInterval(waitTimer);
  const send = $("send");
  const until = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(waitTimer);
      waitTimer = null;
      send.textContent = "Send";
      send.disabled = state.busy;
      return;
    }
    send.textContent = `Wait ${formatWait(left)}`;
    send.disabled = true;
  };
  tick();
  waitTimer = setInterval(tick, 1000);
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy || waitTimer !== null;
  $("stop").hidden = !busy;
  $("prompt").disabled = busy;
}

async function sendPrompt(text) {
  const clientName = document.querySelector('input[name="client"]:checked').value;
  hideChatError();
  addMessage("user", text);
  const messages = [...state.history, { role: "user", content: text }];
  const item = addMessage("assistant", "");
  const content = item.querySelector(".content");
  item.dataset.state = "streaming";
  item.dataset.client = clientName;
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const started = performance.now();
  let pieces = 0;
  const onDelta = (delta) => {
    pieces += 1;
    content.textContent += delta; // each piece is on screen as soon as it arrives
    const transcript = $("transcript");
    transcript.scrollTop = transcript.scrollHeight;
  };
  try {
    const chat = clientName === "openai" ? chatWithOpenAI : chatWithSupabase;
    await chat(messages, controller.signal, onDelta);
    item.dataset.state = "done";
    state.history = [...messages, { role: "assistant", content: content.textContent }];
    const meta = document.createElement("span");
    meta.className = "meta";
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    meta.textContent = `${clientName === "openai" ? "openai SDK" : "supabase-js"} · ${pieces} pieces · ${seconds} s`;
    item.append(meta);
  } catch (error) {
    const chatError =
      error instanceof ChatError
        ? error
        : error?.name === "AbortError" // Stop pressed while the answer was streaming
          ? new ChatError("Stopped.", { type: "aborted" })
          : new ChatError(error?.message || String(error));
    item.dataset.state = "error";
    if (!content.textContent) item.remove(); // nothing was said: keep the transcript clean
    showChatError(chatError);
  } finally {
    state.controller = null;
    setBusy(false);
    refreshUsage({ waitForNew: true });
  }
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.busy || waitTimer !== null) return;
  $("prompt").value = "";
  sendPrompt(text).finally(() => $("prompt").focus());
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
});

$("stop").addEventListener("click", () => state.controller?.abort());

// ---------------------------------------------------------------------------------------------------
// Usage: plain supabase-js table reads. Row level security (supabase/migrations) lets a user read only
// their own rows; the user_id filter just says so explicitly (and uses the index). No automatic retries
// (supabase-js would back off for up to 7 s): the panel re-reads after every chat and has a button.

const money = (value) => (value == null ? "–" : `$${Number(value).toFixed(value && value < 0.01 ? 6 : 2)}`);
const count = (value) => (value == null ? "–" : Number(value).toLocaleString());

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.append(text);
  else td.textContent = text;
  return td;
}

async function readUsage() {
  const userId = state.user.id;
  const [days, log] = await Promise.all([
    state.client
      .from("usage_daily")
      .select("day,requests,in_flight,total_tokens,cost_usd")
      .eq("user_id", userId)
      .order("day", { ascending: false })
      .limit(7)
      .retry(false),
    state.client
      .from("request_log")
      .select("request_id,created_at,function,model,status,error_type,total_tokens,cost_usd,latency_ms")
      .eq("user_id", userId)
      .order("created_at", { ascending: false })
      .limit(8)
      .retry(false),
  ]);
  const error = days.error ?? log.error;
  if (error) throw error;
  return { days: days.data, log: log.data };
}

function renderUsage({ days, log }) {
  const today = new Date().toISOString().slice(0, 10);
  const row = days.find((day) => day.day === today);
  $("today-requests").textContent = count(row?.requests ?? 0);
  $("today-tokens").textContent = count(row?.total_tokens ?? 0);
  $("today-cost").textContent = money(row?.cost_usd ?? 0);

  const requests = $("requests").tBodies[0];
  requests.replaceChildren(
    ...log.map((entry) => {
      const tr = document.createElement("tr");
      tr.dataset.requestId = entry.request_id;
      tr.title = [entry.model, entry.error_type].filter(Boolean).join(" · ");
      const pill = document.createElement("span");
      pill.className = `pill ${entry.status && entry.status < 400 ? "ok" : "bad"}`;
      pill.textContent = entry.status ?? "…";
      tr.append(
        cell(new Date(entry.created_at).toLocaleTimeString([], { hour12: false })),
        cell(entry.function ?? "–"),
        cell(pill),
        cell(count(entry.total_tokens), "num"),
        cell(money(entry.cost_usd), "num"),
        cell(count(entry.latency_ms), "num"),
      );
      return tr;
    }),
  );
  if (!log.length) {
    const tr = document.createElement("tr");
    const td = cell("No requests yet.", "muted");
    td.colSpan = 6;
    tr.append(td);
    requests.append(tr);
  }

  $("days").tBodies[0].replaceChildren(
    ...days.map((day) => {
      const tr = document.createElement("tr");
      tr.append(
        cell(day.day),
        cell(count(day.requests), "num"),
        cell(count(day.total_tokens), "num"),
        cell(money(day.cost_usd), "num"),
      );
      return tr;
    }),
  );
}

let usageRun = 0;

/** Reads and shows usage; after a chat, re-reads briefly until its log row is there (written as the call ends). */
async function refreshUsage({ waitForNew = false } = {}) {
  if (!state.user) return;
  const run = ++usageRun;
  const before = state.newestRequestId;
  for (let attempt = 0; attempt < (waitForNew ? 8 : 1); attempt += 1) {
    if (attempt) await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    if (run !== usageRun) return; // a newer refresh took over
    try {
      const usage = await readUsage();
      if (run !== usageRun) return;
      $("usage-error").hidden = true;
      renderUsage(usage);
      state.newestRequestId = usage.log[0]?.request_id ?? null;
      if (state.newestRequestId !== before) return;
    } catch (error) {
      if (run !== usageRun) return;
      $("usage-error").textContent = `Could not read usage: ${error.message || error}`;
      $("usage-error").hidden = false;
      return;
    }
  }
}

$("refresh").addEventListener("click", () => refreshUsage());

start().catch((error) => {
  $("loading").textContent = `The page failed to start: ${error.message || error}`;
  $("loading").hidden = false;
  console.error(error);
});
