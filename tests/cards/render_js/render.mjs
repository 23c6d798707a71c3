// Render CDS Hooks card markdown the way the CDS Hooks sandbox does: react-markdown with remark-gfm
// (tables, strike-through, autolink literals) and rehype-raw (raw HTML passed through).
// stdin: a JSON array of markdown strings; stdout: a JSON array of the HTML each renders to.
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import Markdown from "react-markdown";
import rehypeRaw from "rehype-raw";
import remarkGfm from "remark-gfm";

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const sources = JSON.parse(input);
const html = sources.map((source) =>
  renderToStaticMarkup(
    createElement(Markdown, { remarkPlugins: [remarkGfm], rehypePlugins: [rehypeRaw] }, source),
  ),
);
process.stdout.write(JSON.stringify(html));
