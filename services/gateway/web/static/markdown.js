// Markdown for answers and passages: marked parses, DOMPurify sanitizes, highlight.js colours code.
//
// What a model writes and what a document holds are untrusted. Raw HTML in it stays text; what markdown
// itself makes (links above all) reaches the page only as the DOM that DOMPurify returns, with no tag or
// attribute that can run script, load anything, style the page or take an id the page uses. The page's
// CSP (script-src 'self', no inline) is the last wall, not the first.
import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight.min.js";

// breaks: a model's single newlines are line breaks (quoted answers put one quote per line).
const parser = new Marked({ gfm: true, breaks: true, async: false });

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

parser.use({
  renderer: {
    // Raw HTML in an answer or a passage is shown as the text it is, never parsed as markup. (Parsing it,
    // even only to sanitize it, makes Chromium report each inline handler or style against the page's
    // CSP: blocked, but logged as errors.)
    html(token) {
      const text = escapeHtml(token.text);
      return token.block ? `<p>${text}</p>` : text;
    },
    // Nothing loads from an answer: an image becomes a link to it.
    image(token) {
      return `<a href="${escapeHtml(token.href || "")}">${escapeHtml(token.text || "image")}</a>`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true }, // no SVG or MathML
  // Nothing that loads (images would also break the CSP and log errors), nothing that looks like the
  // page's own controls.
  FORBID_TAGS: ["img", "picture", "video", "audio", "source", "track", "iframe", "frame", "object", "embed",
    "style", "link", "meta", "base", "form", "input", "button", "textarea", "select", "option", "dialog", "details"],
  // No id or name: an element called "question" must not shadow the page's own (DOM clobbering).
  FORBID_ATTR: ["style", "id", "name", "srcset", "action", "formaction", "target"],
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  // Classes only for code languages (marked's language-x): the page's own classes stay the page's.
  if (data.attrName === "class" && !/^language-[\w+#.-]+$/.test(data.attrValue)) data.keepAttr = false;
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href") && !node.getAttribute("href").startsWith("#")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

hljs.configure({ ignoreUnescapedHTML: true });

/** Safe DOM for `text` (markdown): a DocumentFragment holding only sanitized nodes, code highlighted. */
export function markdownFragment(text) {
  const fragment = DOMPurify.sanitize(parser.parse(text || ""), PURIFY);
  for (const code of fragment.querySelectorAll("pre code")) {
    const lang = (code.className.match(/language-([\w+#.-]+)/) || [])[1];
    if (lang && !hljs.getLanguage(lang)) code.removeAttribute("class"); // unknown: let it guess
    // highlight.js reads the text and writes back its own escaped spans: no markup of ours gets through.
    hljs.highlightElement(code);
  }
  return fragment;
}

/** Render `text` as markdown into `node` (replacing what it held). */
export function renderMarkdown(node, text) {
  node.replaceChildren(markdownFragment(text));
  node.classList.add("md");
}

/** Text nodes under `root` outside code and links, for passes that turn text into links or marks. */
export function textNodes(root, skip = "code, pre, a") {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => (n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  return nodes;
}

/** Replace "[n]" in the text of `root` with `link(n)` (a node), where it returns one. */
export function linkCitations(root, link) {
  for (const node of textNodes(root)) {
    const text = node.nodeValue;
    const parts = [];
    let last = 0;
    for (const m of text.matchAll(/\[(\d{1,2})\]/g)) {
      const a = link(Number(m[1]));
      if (!a) continue;
      parts.push(text.slice(last, m.index), a);
      last = m.index + m[0].length;
    }
    if (!parts.length) continue;
    parts.push(text.slice(last));
    node.replaceWith(...parts.filter((p) => p !== ""));
  }
}
