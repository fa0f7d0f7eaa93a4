#!/usr/bin/env node
// The `handset` bin. Node 20 cannot run TypeScript by itself, so register tsx's loader and
// hand over to the real entry point (firmware/cli.ts), which installs the crash handlers.
import { register } from "tsx/esm/api";

register();
const { runEntry } = await import("./cli.ts");
process.exitCode = await runEntry(process.argv.slice(2));
