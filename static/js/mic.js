// The composer's microphone: record with MediaRecorder, send the recording to
// POST /api/transcribe, put the transcript into the message box. Chrome and Firefox
// record WebM/Opus (Firefox also Ogg); Safari records MP4/AAC. Hidden where the browser
// cannot record (no mediaDevices — an insecure origin — or no MediaRecorder) and where
// the server does not offer transcription.
import { api, offers, problem } from "/static/js/api.js";

const TYPES = [
  ["audio/webm;codecs=opus", "webm"],
  ["audio/webm", "webm"],
  ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"],
];
// The languages POST /api/transcribe knows (docs/protocol.md).
const LANGUAGES = ["en-US", "en-GB", "es-ES", "fr-FR", "de-DE", "it-IT", "pt-BR", "ja-JP", "ko-KR", "zh-CN"];
const MAX_SECONDS = 300; // a longer recording stops by itself

export function recordingType(isSupported = (type) => MediaRecorder.isTypeSupported(type)) {
  return TYPES.find(([type]) => isSupported(type)) || null;
}

// The page's language (<html lang>), else the browser's, as one of LANGUAGES: an exact
// match, else the first with the same primary language ("en" -> en-US), else en-US.
export function transcriptionLanguage(candidates = [document.documentElement.lang, ...(navigator.languages || [navigator.language])]) {
  for (const candidate of candidates.filter(Boolean)) {
    const exact = LANGUAGES.find((code) => code.toLowerCase() === candidate.toLowerCase());
    if (exact) return exact;
  }
  for (const candidate of candidates.filter(Boolean)) {
    const primary = candidate.toLowerCase().split("-")[0];
    const close = LANGUAGES.find((code) => code.toLowerCase().startsWith(primary + "-"));
    if (close) return close;
  }
  return "en-US";
}

// options: button, insert(text), notify(text, kind)
export async function setUpMic(options) {
  const button = options.button;
  if (!button) return;
  const capable = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  const chosen = capable ? recordingType() : null;
  button.hidden = true;
  if (!chosen || !(await offers("/api/transcribe", "POST"))) return;
  button.hidden = false;
  const [mimeType, extension] = chosen;
  let recorder = null;
  let started = 0;
  let ticker = null;

  const show = (state, label) => {
    button.dataset.state = state;
    button.setAttribute("aria-pressed", String(state === "recording"));
    button.disabled = state === "transcribing";
    button.textContent = label;
  };
  show("idle", "Voice");

  async function start() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
      options.notify(denied ? "The microphone is not allowed for this page." : "No microphone could be opened.", "error");
      return;
    }
    const chunks = [];
    try {
      recorder = new MediaRecorder(stream, { mimeType });
    } catch {
      stream.getTracks().forEach((track) => track.stop());
      options.notify("This browser cannot record audio here.", "error");
      return;
    }
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      clearInterval(ticker);
      recorder = null;
      transcribe(new Blob(chunks, { type: mimeType.split(";")[0] }));
    });
    recorder.start(1000);
    started = Date.now();
    show("recording", "Stop 0:00");
    ticker = setInterval(() => {
      const seconds = Math.floor((Date.now() - started) / 1000);
      if (seconds >= MAX_SECONDS) return stop();
      show("recording", `Stop ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
    }, 500);
  }

  function stop() {
    if (recorder && recorder.state !== "inactive") recorder.stop();
  }

  async function transcribe(blob) {
    if (!blob.size) {
      show("idle", "Voice");
      return options.notify("Nothing was recorded.", "error");
    }
    show("transcribing", "Transcribing…");
    const form = new FormData();
    form.append("file", blob, `recording.${extension}`);
    const language = transcriptionLanguage();
    const answer = await api(`/api/transcribe?language=${encodeURIComponent(language)}`, { method: "POST", form });
    show("idle", "Voice");
    if (!answer.ok) return options.notify(problem(answer, "The recording could not be transcribed."), "error");
    const text = String(answer.body.text || "").trim();
    if (!text) return options.notify("No words were heard in the recording.", "error");
    options.insert(text);
  }

  button.addEventListener("click", () => (recorder ? stop() : start()));
}
