// The example web app: Supabase sign-in, conversations kept by the `chat` function (a thread list read
// from the `threads` and `messages` tables under RLS; each turn streams through the function with
// supabase-js or the openai SDK; a Stop button that works from any tab; a reloaded page follows an answer
// still being written), and the signed-in user's usage read from the ledger's tables under RLS.
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
  history: [], // [{ role, content }] sent with each request, only when the server keeps no threads
  busy: false,
  newestRequestId: undefined,
  threadsOn: true, // false when the project keeps no conversations (no `threads` table, or no store)
  threads: null, // [{ id, title, updated_at }], newest first, once read
  threadId: null, // the selected thread; null: a new chat (the server creates the thread on the first send)
  view: 0, // bumped whenever the transcript shows something else (a late answer for an old view is dropped)
  turn: null, // the answer this tab is streaming: { threadId, messageId, controller, item, stopping, detached }
  follow: null, // a stored `streaming` answer followed by re-reading its row: { messageId, item, timer }
};

const FOLLOW_MS = 500; // how often a followed answer's row is read again (the server writes it about as often)
const THREAD_COLUMNS = "id,title,updated_at";
const MESSAGE_COLUMNS =
  "id,seq,role,content,status,model,finish_reason,error_type,error_message,total_tokens,updated_at";

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
    state.threadsOn = true;
    state.threads = null;
    const wanted = threadFromHash(); // a reloaded page goes back to its thread
    leaveView();
    state.threadId = null;
    resetTranscript();
    refreshUsage();
    loadThreads().then(() => (wanted && state.threadsOn ? selectThread(wanted) : showThread(null)));
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

/**
 * supabase.functions.invoke("chat"): for `text/event-stream` supabase-js hands back the Response itself as
 * `data` (and as `response`, for every answer: its headers say where the thread is stored).
 */
async function chatWithSupabase(body, signal, onStart, onDelta) {
  const { data, error, response } = await state.client.functions.invoke("chat", { body, signal });
  if (error) throw await fromFunctionsError(error);
  onStart(response?.headers ?? new Headers());
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

/**
 * The openai SDK, pointed at the chat function itself (it answers /chat/completions below its URL). The
 * thread fields ride along in the body; `.withResponse()` gives the raw Response with its headers.
 */
async function chatWithOpenAI(body, signal, onStart, onDelta) {
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
    const { data: stream, response } = await sdk.chat.completions.create(body, { signal }).withResponse();
    onStart(response.headers);
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

function resetTranscript(text = "Say hello — the answer streams in as it is written.") {
  const transcript = $("transcript");
  transcript.replaceChildren();
  const empty = document.createElement("li");
  empty.className = "empty muted";
  empty.textContent = text;
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

const STATUS_NOTES = {
  stopped: "Stopped",
  failed: "Failed",
};

/** Shows a stored assistant message's row on its item: its text (as far as written) and its status. */
function applyRow(item, row) {
  const content = item.querySelector(".content");
  item.dataset.messageId = row.id;
  item.dataset.status = row.status;
  if (row.status === "streaming") {
    item.dataset.state = "streaming";
    if (row.content.length >= content.textContent.length) content.textContent = row.content; // only ever grows
  } else {
    if (item.dataset.state !== "error") item.dataset.state = "done";
    if (row.content !== content.textContent && (row.content || row.status !== "complete")) {
      content.textContent = row.content; // the stored text is the answer (a stop may cut a piece in flight)
    }
  }
  item.querySelector(".status-note")?.remove();
  if (STATUS_NOTES[row.status]) {
    const note = document.createElement("span");
    note.className = `status-note ${row.status}`;
    note.dataset.testid = "status-note";
    const reason = row.status === "failed" ? row.error_message || row.error_type : null;
    note.textContent = reason ? `${STATUS_NOTES[row.status]}: ${reason}` : STATUS_NOTES[row.status];
    item.append(note);
  }
  const transcript = $("transcript");
  transcript.scrollTop = transcript.scrollHeight;
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

/** Busy while an answer is being written on the shown thread, streamed here or followed from the store. */
function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy || waitTimer !== null;
  $("stop").hidden = !busy;
  $("stop").disabled = false;
  $("stop").textContent = "Stop";
  $("prompt").disabled = busy;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The stored row of a turn's answer: by its id (X-Message-Id), else the thread's newest assistant message. */
async function readAnswerRow(turn) {
  let query = state.client.from("messages").select(MESSAGE_COLUMNS);
  query = turn.messageId
    ? query.eq("id", turn.messageId)
    : query.eq("thread_id", turn.threadId).eq("role", "assistant").order("seq", { ascending: false });
  const { data, error } = await query.limit(1).retry(false);
  if (error) throw error;
  return data?.[0] ?? null;
}

/** After a stream ends: the answer's row once the server has ended it (its status, the text it kept). */
async function settleFromStore(turn) {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    if (attempt) await sleep(250);
    if (turn.detached) return;
    let row;
    try {
      row = await readAnswerRow(turn);
    } catch (error) {
      console.warn("could not read the answer's row", error);
      return;
    }
    if (!row || turn.detached) return;
    turn.messageId = row.id;
    applyRow(turn.item, row);
    if (row.status !== "streaming") return;
  }
  // Still `streaming` (a stream cut between us and the server, say): the server is still writing it.
  follow(turn.messageId, turn.item);
}

/** The first answer of a new thread: its id from X-Thread-Id, or (a header CORS hides) the newest thread. */
async function adoptThread(turn, headers) {
  turn.messageId = headers.get("X-Message-Id") || null;
  let id = headers.get("X-Thread-Id");
  if (!id && !turn.threadId) {
    const { data } = await state.client
      .from("threads")
      .select("id")
      .order("created_at", { ascending: false })
      .limit(1)
      .retry(false);
    id = data?.[0]?.id ?? null;
  }
  if (id && !turn.threadId) {
    turn.threadId = id;
    if (!turn.detached && state.threadId === null) {
      state.threadId = id;
      setHash(id);
    }
    loadThreads();
  }
}

async function sendPrompt(text) {
  const clientName = document.querySelector('input[name="client"]:checked').value;
  hideChatError();
  const asked = addMessage("user", text);
  const threaded = state.threadsOn;
  const messages = [...state.history, { role: "user", content: text }];
  const body = threaded
    ? {
        thread_id: state.threadId ?? "new",
        messages: [{ role: "user", content: text }],
        stream: true,
        background: true,
      }
    : { messages, stream: true };
  if (state.config.model) body.model = state.config.model;
  const item = addMessage("assistant", "");
  const content = item.querySelector(".content");
  item.dataset.state = "streaming";
  item.dataset.client = clientName;
  let markStarted;
  const turn = {
    threadId: threaded ? state.threadId : null,
    messageId: null,
    controller: new AbortController(),
    item,
    stopping: false, // Stop was pressed: the stream's end is not an error
    detached: false, // the page moved to another thread: this stream is no longer shown
    responded: false,
    adopting: null, // reading where the answer is stored (the thread id of a new thread)
    started: new Promise((resolve) => (markStarted = resolve)), // resolved once the thread id is known
  };
  state.turn = turn;
  setBusy(true);
  const started = performance.now();
  let pieces = 0;
  let again = false; // sent with a thread to a server that keeps none: send it again without
  let busyThread = null; // another tab is writing an answer on this thread: show that one
  const onStart = (headers) => {
    turn.responded = true;
    if (threaded) turn.adopting = adoptThread(turn, headers).catch((error) => console.warn(error));
    Promise.resolve(turn.adopting).finally(markStarted);
  };
  const onDelta = (delta) => {
    if (turn.detached) return;
    pieces += 1;
    content.textContent += delta; // each piece is on screen as soon as it arrives
    const transcript = $("transcript");
    transcript.scrollTop = transcript.scrollHeight;
  };
  try {
    const chat = clientName === "openai" ? chatWithOpenAI : chatWithSupabase;
    await chat(body, turn.controller.signal, onStart, onDelta);
    item.dataset.state = "done";
    if (!threaded) state.history = [...messages, { role: "assistant", content: content.textContent }];
    const meta = document.createElement("span");
    meta.className = "meta";
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    meta.textContent = `${clientName === "openai" ? "openai SDK" : "supabase-js"} · ${pieces} pieces · ${seconds} s`;
    item.append(meta);
  } catch (error) {
    const chatError =
      error instanceof ChatError
        ? error
        : error?.name === "AbortError" // the fetch was abandoned (Stop, or another thread was opened)
          ? new ChatError("Stopped.", { type: "aborted" })
          : new ChatError(error?.message || String(error));
    if (chatError.type === "threads_unavailable" && chatError.status === 400) {
      // Refused before anything was asked upstream: the same message again, with the history in the body.
      noThreads("This server keeps no conversations: the page sends the whole history with each message.");
      again = !turn.detached;
      asked.remove();
      item.remove();
    } else if (chatError.type === "thread_busy" && !turn.detached) {
      asked.remove(); // not stored: the thread takes one turn at a time
      item.remove();
      busyThread = { id: turn.threadId, error: chatError };
    } else if (!turn.detached && !(turn.stopping && turn.responded)) {
      item.dataset.state = "error";
      if (!content.textContent) item.remove(); // nothing was said: keep the transcript clean
      showChatError(chatError);
    }
  } finally {
    await turn.adopting;
    markStarted();
    if (state.turn === turn) state.turn = null;
    if (threaded && turn.responded && turn.threadId && !turn.detached) await settleFromStore(turn);
    if (!turn.detached && state.follow === null) setBusy(false);
    refreshUsage({ waitForNew: true });
    if (threaded) loadThreads();
  }
  if (again) await sendPrompt(text);
  if (busyThread && state.threadId === busyThread.id) {
    $("prompt").value ||= text; // to send once that answer has ended
    await selectThread(busyThread.id); // shows the running answer and follows it
    showChatError(busyThread.error);
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

/**
 * Stop: asks the server (POST /chat/stop), which ends the generation wherever it runs, whichever tab
 * started it; the stream here then ends by itself and the message is stored as `stopped` with its text.
 * Only a server that keeps no threads is stopped by hanging up.
 */
async function stopGeneration() {
  const turn = state.turn;
  if (turn) turn.stopping = true;
  if (!state.threadsOn) {
    turn?.controller.abort();
    return;
  }
  $("stop").disabled = true;
  $("stop").textContent = "Stopping…";
  if (turn) await turn.started; // a new thread's id comes with the answer's first bytes
  const threadId = turn ? turn.threadId : state.follow ? state.threadId : null;
  if (!threadId) {
    turn?.controller.abort(); // the request never reached a thread (refused, or still connecting)
    return;
  }
  const { data, error } = await state.client.functions.invoke("chat/stop", { body: { thread_id: threadId } });
  if (error) {
    showChatError(await fromFunctionsError(error));
    $("stop").disabled = false;
    $("stop").textContent = "Stop";
    return;
  }
  console.info("stop:", data);
  if (turn) {
    // The server has cancelled the generation; the stream should end right away. Hang up if it does not.
    setTimeout(() => {
      if (state.turn === turn) turn.controller.abort();
    }, 3000);
  }
}

$("stop").addEventListener("click", () => {
  stopGeneration().catch((error) => showChatError(new ChatError(error?.message || String(error))));
});

// ---------------------------------------------------------------------------------------------------
// Threads: the list and each thread's messages are plain table reads under RLS; renaming and deleting are
// plain table writes (RLS allows a user exactly those on their own threads). A `streaming` answer that no
// stream here is showing (the page was reloaded, another tab asked) is followed by re-reading its row.

function threadFromHash() {
  const match = /^#thread=([0-9a-f-]{36})$/i.exec(location.hash);
  return match ? match[1].toLowerCase() : null;
}

function setHash(id) {
  const url = id ? `#thread=${id}` : location.pathname + location.search;
  history.replaceState(null, "", url); // no hashchange event: the page already shows it
}

function noThreads(reason) {
  state.threadsOn = false;
  $("threads-note").textContent = reason;
  $("threads-note").hidden = false;
  $("threads-error").hidden = true;
  $("thread-list").replaceChildren();
}

let threadsRun = 0;

async function loadThreads() {
  if (!state.user || !state.threadsOn) return;
  const run = ++threadsRun;
  const { data, error, status } = await state.client
    .from("threads")
    .select(THREAD_COLUMNS)
    .order("updated_at", { ascending: false })
    .limit(50)
    .retry(false);
  if (run !== threadsRun) return;
  if (error) {
    if (status === 404 || ["PGRST205", "42P01"].includes(error.code)) {
      noThreads("This project has no threads table (apply supabase/migrations): chats are not kept.");
    } else {
      $("threads-error").textContent = `Could not read your chats: ${error.message || error}`;
      $("threads-error").hidden = false;
    }
    return;
  }
  $("threads-error").hidden = true;
  state.threads = data;
  renderThreads();
}

function renderThreads() {
  const threads = state.threads ?? [];
  const shown = threads.find((thread) => thread.id === state.threadId);
  if (shown) $("chat-title").textContent = shown.title || "Untitled";
  const list = $("thread-list");
  const items = threads.map((thread) => {
    const li = document.createElement("li");
    li.className = "thread";
    li.dataset.threadId = thread.id;
    if (thread.id === state.threadId) li.setAttribute("aria-current", "true");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "thread-open";
    open.title = thread.title;
    const title = document.createElement("span");
    title.className = "thread-title";
    title.textContent = thread.title || "Untitled";
    const when = document.createElement("span");
    when.className = "thread-when";
    when.textContent = formatWhen(thread.updated_at);
    open.append(title, when);
    open.addEventListener("click", () => selectThread(thread.id));
    const rename = iconButton("✎", "Rename", () => startRename(li, thread));
    const remove = iconButton("✕", "Delete", () => deleteThread(thread));
    li.append(open, rename, remove);
    return li;
  });
  if (!items.length && state.threads) {
    const li = document.createElement("li");
    li.className = "muted small thread-empty";
    li.textContent = "No chats yet.";
    items.push(li);
  }
  list.replaceChildren(...items);
}

function iconButton(symbol, label, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon ${label.toLowerCase()}`;
  button.textContent = symbol;
  button.title = label;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", action);
  return button;
}

function formatWhen(value) {
  const moment = new Date(value);
  if (Number.isNaN(moment.getTime())) return "";
  const sameDay = moment.toDateString() === new Date().toDateString();
  return sameDay
    ? moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false })
    : moment.toLocaleDateString([], { month: "short", day: "numeric" });
}

function startRename(li, thread) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = "thread-rename";
  input.value = thread.title ?? "";
  input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== thread.title) {
      const { error } = await state.client.from("threads").update({ title }).eq("id", thread.id);
      if (error) {
        $("threads-error").textContent = `Could not rename: ${error.message}`;
        $("threads-error").hidden = false;
      } else if (thread.id === state.threadId) {
        $("chat-title").textContent = title;
      }
    }
    await loadThreads();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

async function deleteThread(thread) {
  if (!confirm(`Delete “${thread.title}” and its messages?`)) return;
  const { error } = await state.client.from("threads").delete().eq("id", thread.id);
  if (error) {
    $("threads-error").textContent = `Could not delete: ${error.message}`;
    $("threads-error").hidden = false;
    return;
  }
  if (thread.id === state.threadId) showThread(null);
  await loadThreads();
}

/** Leaves what the transcript shows: a stream here goes on on the server (background), unseen. */
function leaveView() {
  state.view += 1;
  const turn = state.turn;
  if (turn) {
    turn.detached = true;
    turn.controller.abort(); // `background: true`: hanging up does not stop the generation
    state.turn = null;
  }
  stopFollowing();
  setBusy(false);
}

/** Shows a thread (its title; its messages are loaded by selectThread), or a new chat for null. */
function showThread(id) {
  leaveView();
  state.threadId = id;
  state.history = [];
  setHash(id);
  const thread = state.threads?.find((entry) => entry.id === id);
  $("chat-title").textContent = id ? (thread?.title ?? "Chat") : "New chat";
  resetTranscript(id ? "Loading…" : undefined);
  renderThreads();
}

async function selectThread(id) {
  showThread(id);
  const view = state.view;
  const { data, error } = await state.client
    .from("messages")
    .select(MESSAGE_COLUMNS)
    .eq("thread_id", id)
    .order("seq")
    .retry(false);
  if (view !== state.view) return; // another thread was opened meanwhile
  if (error) {
    resetTranscript("");
    showChatError(new ChatError(`Could not read the messages: ${error.message}`));
    return;
  }
  if (!data.length && !state.threads?.some((thread) => thread.id === id)) {
    showThread(null); // not there (deleted, or not this user's): a new chat instead
    return;
  }
  resetTranscript();
  let streaming = null;
  for (const row of data) {
    const item = addMessage(row.role, row.content);
    if (row.role === "assistant") {
      applyRow(item, row);
      if (row.status === "streaming") streaming = { row, item };
    }
  }
  if (streaming) follow(streaming.row.id, streaming.item);
}

function stopFollowing() {
  if (state.follow) clearTimeout(state.follow.timer);
  state.follow = null;
}

/** Follows a stored answer that is still being written: re-reads its row every FOLLOW_MS until it ends. */
function follow(messageId, item) {
  stopFollowing();
  const run = { messageId, item, timer: null };
  state.follow = run;
  setBusy(true);
  pollFollowed(run);
}

async function pollFollowed(run) {
  clearTimeout(run.timer);
  const { data, error } = await state.client
    .from("messages")
    .select(MESSAGE_COLUMNS)
    .eq("id", run.messageId)
    .limit(1)
    .retry(false);
  if (state.follow !== run) return;
  const row = data?.[0];
  if (!error && !row) {
    stopFollowing(); // deleted meanwhile
    setBusy(false);
    return;
  }
  if (row) {
    applyRow(run.item, row);
    if (row.status !== "streaming") {
      stopFollowing();
      setBusy(false);
      refreshUsage({ waitForNew: true });
      loadThreads();
      return;
    }
  }
  run.timer = setTimeout(() => pollFollowed(run), FOLLOW_MS);
}

$("new-chat").addEventListener("click", () => {
  showThread(null);
  $("prompt").focus();
});

addEventListener("hashchange", () => {
  const id = threadFromHash();
  if (id === state.threadId) return;
  if (id) selectThread(id);
  else showThread(null);
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") loadThreads(); // another tab may have started a chat
});

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
