// Bundles the console (src/) with esbuild into ../internal/webui/dist, which kumod embeds:
// assets/ gets content-hashed names (served as immutable) and index.html names them.
import * as esbuild from "esbuild";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "internal", "webui", "dist");

// Clear the previous bundle but keep the committed README.
mkdirSync(out, { recursive: true });
for (const f of readdirSync(out)) {
  if (f !== "README") rmSync(join(out, f), { recursive: true, force: true });
}

const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "esm", // noVNC uses top-level await
  target: ["es2022"],
  minify: true,
  sourcemap: false,
  legalComments: "linked",
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  loader: { ".woff": "file", ".woff2": "file", ".ttf": "file", ".png": "file", ".svg": "file" },
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((f) => f.startsWith("main-") && f.endsWith(".js"));
const css = outputs.find((f) => f.startsWith("main-") && f.endsWith(".css"));
if (!js || !css) throw new Error(`bundle incomplete: ${outputs.join(", ")}`);

writeFileSync(join(out, "index.html"), `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kumo console</title>
<link rel="stylesheet" href="assets/${css}">
<script type="module" src="assets/${js}"></script>
</head>
<body><div id="app"></div></body>
</html>
`);
console.log(`web console bundled into ${out}: ${outputs.join(", ")}`);
