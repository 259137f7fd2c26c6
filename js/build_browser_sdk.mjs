// Bundle browser-sdk.js (the OpenTelemetry JS web SDK, versions pinned by package-lock.json)
// into one minified ES module, with the licence beside it:
//
//   npm ci && node build_browser_sdk.mjs [OUT_DIR]
//
// OUT_DIR defaults to the example's static files. The output depends only on the lock file
// and this script (no paths, dates or host names in it): tests/browser/test_browser_sdk_bundle.py
// rebuilds it and compares the bytes with the committed copy.
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "example_project", "chat", "static", "chat", "vendor"));
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));

const result = await build({
  absWorkingDir: here,
  entryPoints: ["browser-sdk.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: true,
  legalComments: "none",  // the licence file below carries them
  charset: "utf8",
  write: false,
  metafile: true,
});

// Which packages went in (from esbuild's list of inputs), with the lock file's versions.
const names = [...new Set(Object.keys(result.metafile.inputs).map((input) => {
  const at = input.lastIndexOf("node_modules/");
  if (at < 0) return null;
  const rest = input.slice(at + "node_modules/".length).split("/");
  const name = rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  const meta = lock.packages[input.slice(0, at) + "node_modules/" + name];
  return `${name} ${meta.version} (${meta.license})`;
}).filter(Boolean))].sort();
const header = `/* OpenTelemetry JS web SDK for browsers, bundled by js/build_browser_sdk.mjs with esbuild ${lock.packages["node_modules/esbuild"].version}.\n` +
  ` * Apache License 2.0: see opentelemetry-web.LICENSE. Packages:\n${names.map((n) => ` *   ${n}`).join("\n")}\n */\n`;

mkdirSync(out, { recursive: true });
writeFileSync(join(out, "opentelemetry-web.js"), header + result.outputFiles[0].text);
const licence = readFileSync(join(here, "node_modules", "@opentelemetry", "api", "LICENSE"), "utf8");
writeFileSync(join(out, "opentelemetry-web.LICENSE"),
  `The OpenTelemetry JS packages bundled in opentelemetry-web.js:\n\n${names.map((n) => `  ${n}`).join("\n")}\n\n` +
  `are Copyright The OpenTelemetry Authors, licensed under the Apache License, Version 2.0:\n\n${licence}`);
console.log(`wrote ${join(out, "opentelemetry-web.js")} (${result.outputFiles[0].contents.length} bytes)`);
