#!/usr/bin/env node
// The swarm-agent command. The package runs TypeScript through tsx (no build step), so this
// registers tsx's loader and then runs the command's source.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/agent/cli.ts");
process.exit(await main(process.argv.slice(2)));
