// Builds the console into cli/assets/console/ (index.html, console.js,
// console.css), the files the `oscloud` binary embeds. The TypeScript
// client is bundled from its sources (../ts/src). With --check, builds
// into a temporary directory and fails if the committed files differ.
import { build } from "esbuild";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const assets = resolve(here, "../../cli/assets/console");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "oscloud-console-")) : assets;

// The client's sources import @msgpack/msgpack too: take it from here
// always, so the bundle is the same whether ../ts/node_modules exists
// (after scripts/test-ts.sh) or not.
const depsFromHere = {
  name: "deps-from-here",
  setup(b) {
    b.onResolve({ filter: /^@msgpack\/msgpack$/ }, (args) =>
      args.resolveDir === here ? undefined : b.resolve(args.path, { kind: args.kind, resolveDir: here }),
    );
  },
};

await build({
  entryPoints: { console: join(here, "src/main.ts") },
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  legalComments: "eof",
  outdir: out,
  alias: { "@oscloud/client": join(here, "../ts/src/index.ts") },
  nodePaths: [join(here, "node_modules")],
  plugins: [depsFromHere],
  logLevel: "warning",
});
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));

if (check) {
  const stale = ["index.html", "console.js", "console.css"].filter(
    (f) => !readFileSync(join(out, f)).equals(readFileSync(join(assets, f))),
  );
  rmSync(out, { recursive: true, force: true });
  if (stale.length > 0) {
    console.error(`cli/assets/console is stale (${stale.join(", ")}): run \`npm run build\` in clients/console and commit`);
    process.exit(1);
  }
  console.log("cli/assets/console is up to date");
}
