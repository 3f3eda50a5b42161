// Compiles contracts/src with the pinned solc (npm `solc`, see package.json)
// for evmVersion berlin (the sidechain's genesis stops at Berlin: no PUSH0, no
// base fee) and writes one artefact per deployable contract: {abi, bytecode}.
// Usage: node build.mjs <out-dir>
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? path.join(here, "artifacts");
const CONTRACTS = ["BridgedToken", "BridgedNft", "DepositForger"];

const sources = {};
for (const file of fs.readdirSync(path.join(here, "src")).sort()) {
    if (file.endsWith(".sol")) {
        sources[`src/${file}`] = { content: fs.readFileSync(path.join(here, "src", file), "utf8") };
    }
}
const input = {
    language: "Solidity",
    sources,
    settings: {
        evmVersion: "berlin",
        optimizer: { enabled: true, runs: 200 },
        metadata: { bytecodeHash: "none" },
        outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
};
function findImports(name) {
    try {
        return { contents: fs.readFileSync(require.resolve(name), "utf8") };
    } catch {
        return { error: `not found: ${name}` };
    }
}
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

fs.mkdirSync(out, { recursive: true });
for (const name of CONTRACTS) {
    const compiled = output.contracts[`src/${name}.sol`][name];
    const artefact = {
        contractName: name,
        compiler: `solc ${solc.version()}`,
        evmVersion: "berlin",
        abi: compiled.abi,
        bytecode: `0x${compiled.evm.bytecode.object}`,
    };
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify(artefact, null, 2) + "\n");
}
console.error(`build-contracts: wrote ${CONTRACTS.join(", ")} to ${out} (solc ${solc.version()})`);
