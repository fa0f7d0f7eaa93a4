#!/usr/bin/env node
// The `handset` bin. Node 20 cannot run TypeScript by itself, so register tsx's loader and
// hand over to the real entry point (firmware/cli.ts).
import { register } from "tsx/esm/api";

register();
const { main } = await import("./cli.ts");
process.exitCode = await main(process.argv.slice(2));
