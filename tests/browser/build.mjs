#!/usr/bin/env node
// Bundle the page with esbuild into dist/ (index.html + app.js).  Usage: node build.mjs [outdir]

import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, "dist"));
await mkdir(outdir, { recursive: true });
await build({
	entryPoints: [path.join(here, "src/app.jsx")],
	outfile: path.join(outdir, "app.js"),
	bundle: true,
	format: "esm",
	platform: "browser",
	target: "es2022",
	jsx: "automatic",
	minify: false,
	sourcemap: false,
	logLevel: "warning",
	define: { "process.env.NODE_ENV": '"production"' },
});
await copyFile(path.join(here, "src/index.html"), path.join(outdir, "index.html"));
console.log(`built ${outdir}`);
