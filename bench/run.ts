// The benchmark (`npm run bench`; not a test): runs `pbip bench` from the TypeScript
// sources through tsx, so no build is needed. Options: `npx tsx bench/run.ts --help`.
//
//   npm run bench                       every available backend, full sizes (minutes)
//   npm run bench -- --smoke            every measured path once at tiny sizes (seconds)
//   npm run bench -- --backend wasm --only release-image,cam --reps 2
//
// See src/cli/commands/bench.ts for what is measured.
import { main } from "../src/cli/main";

const args = process.argv.slice(2);
main(args[0] === "bench" ? args : ["bench", ...args]).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exitCode = 1;
  },
);
