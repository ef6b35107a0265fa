// Syntax highlighting of code blocks with the vendored highlight.js core and a handful
// of common languages (static/vendor/highlight/VERSION). Unknown languages and very
// long blocks stay plain text: auto-detection runs on every repaint of a streaming
// reply, so it is kept to blocks small enough to be cheap.
import hljs from "/static/vendor/highlight/core.min.js";
import bash from "/static/vendor/highlight/languages/bash.min.js";
import c from "/static/vendor/highlight/languages/c.min.js";
import cpp from "/static/vendor/highlight/languages/cpp.min.js";
import css from "/static/vendor/highlight/languages/css.min.js";
import diff from "/static/vendor/highlight/languages/diff.min.js";
import go from "/static/vendor/highlight/languages/go.min.js";
import java from "/static/vendor/highlight/languages/java.min.js";
import javascript from "/static/vendor/highlight/languages/javascript.min.js";
import json from "/static/vendor/highlight/languages/json.min.js";
import markdown from "/static/vendor/highlight/languages/markdown.min.js";
import plaintext from "/static/vendor/highlight/languages/plaintext.min.js";
import python from "/static/vendor/highlight/languages/python.min.js";
import rust from "/static/vendor/highlight/languages/rust.min.js";
import shell from "/static/vendor/highlight/languages/shell.min.js";
import sql from "/static/vendor/highlight/languages/sql.min.js";
import typescript from "/static/vendor/highlight/languages/typescript.min.js";
import xml from "/static/vendor/highlight/languages/xml.min.js";
import yaml from "/static/vendor/highlight/languages/yaml.min.js";

const LANGUAGES = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, plaintext, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

const AUTO_DETECT_LIMIT = 5000;

function escapeCode(text) {
  return String(text).replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

// -> {html, language}: html is escaped code with highlight.js's <span class="hljs-…">.
export function highlightCode(code, lang) {
  const asked = String(lang || "").trim().split(/\s/)[0].toLowerCase();
  const grammar = asked ? hljs.getLanguage(asked) : null;
  try {
    if (grammar) {
      const result = hljs.highlight(code, { language: asked, ignoreIllegals: true });
      return { html: result.value, language: asked };
    }
    if (!asked && code.length <= AUTO_DETECT_LIMIT) {
      const result = hljs.highlightAuto(code);
      if (result.language && result.relevance >= 5) return { html: result.value, language: result.language };
    }
  } catch {
    // A grammar that throws leaves the block plain rather than breaking the page.
  }
  return { html: escapeCode(code), language: asked.replace(/[^a-z0-9+#_-]/g, "").slice(0, 20) };
}
