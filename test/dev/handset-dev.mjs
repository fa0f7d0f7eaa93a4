#!/usr/bin/env node
// The development entry (`npm start`): the product's commands plus `demo` and `lab`, which need
// the lab pool in test/lab/ and so never ship in the firmware. Registers tsx's loader as
// firmware/handset.mjs does and hands over to test/dev/dev-cli.ts.
import { register } from "tsx/esm/api";

register();
const { runDevEntry } = await import("./dev-cli.ts");
process.exitCode = await runDevEntry(process.argv.slice(2));
