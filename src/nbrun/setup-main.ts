/** Script entry of `kernel-setup/setup.sh` (see ./setup.ts). */
import { setupMain } from "./setup";

process.exitCode = setupMain(process.argv.slice(2));
