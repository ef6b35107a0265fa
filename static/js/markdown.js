// Markdown to safe DOM. marked parses, highlight.js colours code blocks, DOMPurify
// sanitizes; raw HTML in a message is shown as text, links never run script, and
// images are never fetched: an image becomes a plain link the reader may choose to open.
import { Marked } from "/static/vendor/marked/marked.esm.js";
import DOMPurify from "/static/vendor/dompurify/purify.es.mjs";
import { highlightCode } from "/static/js/highlight.js";

function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html(token) {
      return escapeHtml(token.text);
    },
    image(token) {
      const label = token.text || token.href;
      return `<a href="${escapeHtml(token.href)}" class="image-link">[image: ${escapeHtml(label)}]</a>`;
    },
    code(token) {
      // highlight.js escapes the code itself; its spans then pass the sanitizer below
      // like any other markup.
      const { html, language } = highlightCode(token.text, token.lang);
      const label = language ? ` data-language="${escapeHtml(language)}"` : "";
      return `<pre${label}><code class="hljs${language ? ` language-${escapeHtml(language)}` : ""}">${html}</code></pre>\n`;
    },
  },
});

const purifier = DOMPurify;
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY_OPTIONS = {
  FORBID_TAGS: ["img", "svg", "math", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio", "source", "picture"],
  FORBID_ATTR: ["style", "srcset", "src", "action", "formaction"],
  // data-language only: the one data attribute the code renderer above writes.
  ALLOW_DATA_ATTR: false,
  ADD_ATTR: ["data-language"],
  RETURN_DOM_FRAGMENT: true,
};

// Returns a DocumentFragment, never a string, so nothing downstream re-parses HTML.
export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  const fragment = purifier.sanitize(html, PURIFY_OPTIONS);
  for (const pre of fragment.querySelectorAll("pre")) addCopyButton(pre);
  return fragment;
}

// A code block gets a bar with its language and a copy button; the button is added
// after sanitizing (the sanitizer forbids buttons in message text).
function addCopyButton(pre) {
  const block = document.createElement("div");
  block.className = "code-block";
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const language = document.createElement("span");
  language.className = "code-language";
  language.textContent = pre.dataset.language || "";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy-code";
  button.textContent = "Copy";
  button.addEventListener("click", () => copyText(pre.textContent, button));
  bar.append(language, button);
  pre.replaceWith(block);
  block.append(bar, pre);
}

// Copies text and says so on the button that asked (the Clipboard API needs a secure
// context: https or localhost).
export async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = label), 1500);
}
