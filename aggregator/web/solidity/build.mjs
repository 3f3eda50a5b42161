// Bundles the page (src/main.js: CodeMirror, the Solidity mode, ethers) and
// the compiler worker into dist/, which is checked in and embedded in the
// aggregator. `node build.mjs OUTDIR` writes elsewhere (the freshness test
// compares that with dist/).
import * as esbuild from "esbuild";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "dist"));

const common = {
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  platform: "browser",
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
  loader: { ".sol": "text" },
};

await esbuild.build({ ...common, entryPoints: [join(here, "src/main.js")], outfile: join(out, "app.js") });
await esbuild.build({ ...common, entryPoints: [join(here, "src/worker.js")], outfile: join(out, "worker.js") });
