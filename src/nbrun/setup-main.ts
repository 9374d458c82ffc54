/** Script entry of `kernel-setup/setup.sh` (see ./setup.ts). */
import { setupMain } from "./setup";

void setupMain(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
