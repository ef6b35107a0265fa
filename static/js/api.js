// The REST calls of the chat page: same-origin, session cookie, Django's CSRF token on
// unsafe methods. Every answer comes back as {ok, status, body}; nothing throws.
// `body` goes as JSON; `form` (a FormData: files) as multipart, its boundary set by the
// browser; `signal` aborts the call (then status 0 and `aborted`).
// The token comes from the page's root element (the chat page's #live, the knowledge
// pages' #knowledge).
const root = document.querySelector("[data-csrf]");
const csrf = root ? root.dataset.csrf || "" : "";

export function csrfToken() {
  return csrf;
}

export async function api(path, { method = "GET", body, form, accept, signal } = {}) {
  const headers = { Accept: accept || "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: form !== undefined ? form : body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error && error.name === "AbortError") return { ok: false, status: 0, aborted: true, body: { detail: "Cancelled." } };
    return { ok: false, status: 0, body: { detail: "The server cannot be reached." } };
  }
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, body: data };
}

// Whether the server offers `method` on `path` (DRF answers OPTIONS with an Allow
// header). Controls whose endpoint is not there (404, or 405 for the method) hide.
export async function offers(path, method) {
  try {
    const response = await fetch(path, { method: "OPTIONS", credentials: "same-origin" });
    if (!response.ok) return false;
    const allow = (response.headers.get("Allow") || "").toUpperCase().split(/\s*,\s*/);
    return allow.includes(method);
  } catch {
    return false;
  }
}

// A short error line from an answer: the protocol's `detail`, with the field named.
export function problem(answer, fallback) {
  const body = answer.body || {};
  const fields = body.fields ? ` (${Object.keys(body.fields).join(", ")})` : "";
  return `${body.detail || fallback}${fields}`;
}
