// The compiler, off the page's thread: solc's soljson (served by the
// aggregator, never a CDN) compiled synchronously, which browsers allow for
// a large WebAssembly module only in a worker. Imports are resolved before
// compiling: workspace files first, then the library the aggregator serves
// (OpenZeppelin from its npm package).

let compile = null;
let version = null;

function load() {
  if (compile) return;
  importScripts("/solidity/soljson.js");
  const m = self.Module;
  compile = m.cwrap("solidity_compile", "string", ["string", "number", "number"]);
  version = m.cwrap("solidity_version", "string", [])();
  self.reset = m.cwrap("solidity_reset", null, []);
}

const IMPORT = /import\s+(?:[^;'"]*?\s+from\s+)?["']([^"']+)["']/g;

/** `path` as seen from the file `from` (relative imports), else as given. */
export function resolve(from, path) {
  if (!path.startsWith("./") && !path.startsWith("../")) return path;
  const parts = from.split("/").slice(0, -1);
  for (const p of path.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== ".") parts.push(p);
  }
  return parts.join("/");
}

/** Every file `main` needs, by path: workspace files, then library files. */
async function gather(main, files) {
  const sources = {};
  const missing = [];
  const queue = [main];
  while (queue.length) {
    const path = queue.shift();
    if (path in sources) continue;
    let content = files[path];
    if (content === undefined) {
      const r = await fetch("/solidity/lib/" + encodeURI(path));
      if (!r.ok) {
        missing.push(path);
        sources[path] = "";
        continue;
      }
      content = await r.text();
    }
    sources[path] = content;
    for (const m of content.matchAll(IMPORT)) queue.push(resolve(path, m[1]));
  }
  return { sources, missing };
}

self.onmessage = async (e) => {
  const { id, main, files, evmVersion, optimize } = e.data;
  try {
    const started = performance.now();
    load();
    const loaded = performance.now();
    const { sources, missing } = await gather(main, files);
    const gathered = performance.now();
    const input = {
      language: "Solidity",
      sources: Object.fromEntries(Object.entries(sources).map(([k, v]) => [k, { content: v }])),
      settings: {
        evmVersion,
        optimizer: { enabled: !!optimize, runs: 200 },
        outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
      },
    };
    const output = JSON.parse(compile(JSON.stringify(input), 0, 0));
    const done = performance.now();
    self.reset();
    self.postMessage({
      id,
      version,
      output,
      missing,
      input,
      ms: { load: loaded - started, imports: gathered - loaded, compile: done - gathered },
    });
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
