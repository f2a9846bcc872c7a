// Passage cards: where the passage comes from (document, heading or page, a link to open it there), the
// passage as markdown with the sentence that best matches the question marked, and the whole passage on
// demand (folded, the card shows the block that holds that sentence).
import { el } from "./common.js";
import { markdownFragment, textNodes } from "./markdown.js";

// Words too common to tell sentences apart (English and Portuguese, the two languages answers come in).
const STOP = new Set(("the and for are was were what when how does did that this with from which who why where you " +
  "your its into have has had can any all not but about there their them they will would should could been " +
  "being also than then some more most such only other each many much our out per via get got one two is it " +
  "que como para por uma com dos das nos nas não mais qual quais quando onde ser são está isso esse essa").split(" "));

/** Words of `text` as comparable terms: lower case, no stop words, a crude stem (as the server's support check). */
export function terms(text) {
  return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [])
    .filter((w) => w.length > 2 && !STOP.has(w))
    .map((w) => (w.length > 4 && w.endsWith("s") ? w.slice(0, -1) : w).slice(0, 5));
}

const BLOCKS = "p, li, td, th, h1, h2, h3, h4, h5, h6, blockquote";

/** Sentences of a block's text as [start, end) offsets: a sentence ends at . ! ? followed by a space. */
function sentenceSpans(text) {
  const spans = [];
  let start = 0;
  for (const m of text.matchAll(/[.!?…]+["”’)]*(\s+|$)/g)) {
    const end = m.index + m[0].length;
    spans.push([start, end]);
    start = end;
  }
  if (start < text.length) spans.push([start, text.length]);
  return spans.filter(([a, b]) => text.slice(a, b).trim());
}

/** The sentence of `root` that shares the most (rarer words weigh more) with `question`; null when none does. */
export function bestSentence(root, question) {
  const wanted = new Set(terms(question || ""));
  if (!wanted.size) return null;
  const leaves = [...root.querySelectorAll(BLOCKS)].filter((b) => !b.querySelector(BLOCKS) && !b.closest("pre"));
  const candidates = [];
  for (const block of leaves) {
    const text = block.textContent;
    for (const [start, end] of sentenceSpans(text)) {
      candidates.push({ block, start, end, terms: new Set(terms(text.slice(start, end))) });
    }
  }
  const df = new Map();
  for (const c of candidates) for (const t of c.terms) df.set(t, (df.get(t) || 0) + 1);
  // One shared word (say "open") is chance more often than an answer: two are needed, unless the
  // question has only one word that counts.
  const needed = Math.min(2, wanted.size);
  let best = null;
  let bestScore = 0;
  for (const c of candidates) { // ties go to the earlier sentence
    const shared = [...c.terms].filter((t) => wanted.has(t));
    if (shared.length < needed) continue;
    const score = shared.reduce((sum, t) => sum + Math.log(1 + candidates.length / df.get(t)), 0);
    if (score > bestScore) [best, bestScore] = [c, score];
  }
  return best;
}

/** Wrap characters [start, end) of `block`'s text in <mark> elements (one per text node they cross). */
export function markRange(block, start, end) {
  let offset = 0;
  const marks = [];
  for (const node of textNodes(block, "pre")) {
    const len = node.nodeValue.length;
    const from = Math.max(start - offset, 0);
    const to = Math.min(end - offset, len);
    offset += len;
    if (to <= from) continue;
    let target = node;
    if (from > 0) target = target.splitText(from);
    if (to - from < target.nodeValue.length) target.splitText(to - from);
    if (!target.nodeValue.trim()) continue;
    const mark = el("mark", { class: "best" });
    target.replaceWith(mark);
    mark.append(target);
    marks.push(mark);
  }
  return marks;
}

/** Mark the best sentence of `root` for `question`; its blocks (and their parents) get `has-best`. */
export function markBest(root, question) {
  const best = bestSentence(root, question);
  if (!best) return null;
  const marks = markRange(best.block, best.start, best.end);
  let top = best.block;
  for (let node = best.block; node && node !== root; node = node.parentElement) {
    node.classList.add("has-best");
    top = node;
  }
  // "…two plans:" introduces what follows (a list, a table): folded, the card shows that too.
  const said = best.block.textContent.slice(best.start, best.end).trim();
  if (said.endsWith(":") && top.nextElementSibling) {
    for (const node of [top.nextElementSibling, ...top.nextElementSibling.querySelectorAll("*")]) {
      node.classList.add("has-best");
    }
  }
  return marks[0] || null;
}

/** Where in the document: the heading path without the document title it usually repeats. */
export function whereIn(s) {
  const where = s.page_or_heading || "";
  const title = s.title || "";
  return title && where.startsWith(`${title} > `) ? where.slice(title.length + 3) : where === title ? "" : where;
}

/** The document page with this passage's chunk in view. */
export function documentHref(s) {
  return `/documents/${encodeURIComponent(s.document)}#chunk-${encodeURIComponent(s.chunk)}`;
}

/** One source of an answer as a card (`id` for citation links to it). */
export function passageCard(s, id, question) {
  const body = el("div", { class: "passage md collapsed" });
  body.append(markdownFragment(s.text));
  const mark = markBest(body, question);
  if (!mark) body.classList.add("no-best");
  // Folding hides only whole blocks; a passage of one block shows whole either way.
  const folds = body.children.length > 1 || !mark;
  const toggle = el("button", {
    type: "button", class: "secondary small expand", "aria-expanded": "false",
    text: "Show full passage", hidden: !folds,
    onclick: () => {
      const open = body.classList.toggle("collapsed") === false;
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = open ? "Show less" : "Show full passage";
    },
  });
  if (!mark) {
    // Folded to a few lines: once laid out, a passage that fits them needs no button.
    requestAnimationFrame(() => {
      if (body.clientHeight > 0 && body.scrollHeight <= body.clientHeight + 1) toggle.hidden = true;
    });
  }
  const where = whereIn(s);
  return el("li", { id, tabindex: "-1", class: "source" },
    el("div", { class: "source-head" },
      el("span", { class: "source-n", text: `[${s.n}]` }),
      s.url ? el("a", { href: s.url, rel: "noopener noreferrer", target: "_blank" }, el("strong", { text: s.title || s.url }))
        : el("strong", { class: "doc-name", text: s.title || "untitled" }),
      where ? el("span", { class: "where", text: ` — ${where}` }) : null,
      el("span", { class: "score", title: "cosine similarity", text: ` · ${Number(s.score).toFixed(2)}` })),
    body,
    el("div", { class: "source-actions" }, toggle,
      s.document ? el("a", { class: "open-doc", href: documentHref(s), target: "_blank", rel: "noopener",
        text: "Open document" }) : null));
}
