/**
 * Where the development environment of a pbip checkout lives: the project-local
 * Jupyter prefix holding the tslab kernelspec, the private apt state and the
 * unpacked Mesa lavapipe driver. Nothing here creates folders; the setup does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { projectRoot } from "../util/fs";

/** The project's cache folder ($PBIP_CACHE, else `<project>/.cache`), without creating it. */
export function cacheBase(): string {
  return process.env.PBIP_CACHE ? path.resolve(process.env.PBIP_CACHE) : path.join(projectRoot(), ".cache");
}

/** Paths of the notebook and GPU-emulation setup of this checkout. */
export interface DevPaths {
  root: string;
  cache: string;
  /** `tslab install --prefix` target: the kernelspec lands in `<prefix>/share/jupyter/kernels/tslab`. */
  jupyterPrefix: string;
  /** What JUPYTER_PATH must contain for Jupyter to find the project-local kernelspec. */
  jupyterDataDir: string;
  /** The project-local tslab kernelspec folder. */
  kernelspecDir: string;
  /** Launcher the kernelspec runs: the Node that ran setup, then tslab from node_modules. */
  kernelLauncher: string;
  /** Private apt configuration and caches (own sources list, lists, archives). */
  aptDir: string;
  /** Unpacked Mesa lavapipe and the libraries it needs (never installed system-wide). */
  vulkanDir: string;
  /** `VK_ICD_FILENAMES` target: the ICD JSON that points at the unpacked libvulkan_lvp.so. */
  vulkanIcd: string;
  /** Shell file to `source` for the lavapipe environment. */
  vulkanEnvSh: string;
  /** The same environment as JSON, read by the test harness and the notebook runner. */
  vulkanEnvJson: string;
  /** The `node_modules/pbip` link that lets notebooks `import ... from "pbip"`. */
  selfLink: string;
}

export function devPaths(): DevPaths {
  const root = projectRoot();
  const cache = cacheBase();
  const jupyterPrefix = path.join(cache, "jupyter");
  const jupyterDataDir = path.join(jupyterPrefix, "share", "jupyter");
  const vulkanDir = path.join(cache, "vulkan");
  return {
    root,
    cache,
    jupyterPrefix,
    jupyterDataDir,
    kernelspecDir: path.join(jupyterDataDir, "kernels", "tslab"),
    kernelLauncher: path.join(jupyterPrefix, "tslab-kernel.sh"),
    aptDir: path.join(cache, "apt"),
    vulkanDir,
    vulkanIcd: path.join(vulkanDir, "lvp_icd.json"),
    vulkanEnvSh: path.join(vulkanDir, "env.sh"),
    vulkanEnvJson: path.join(vulkanDir, "env.json"),
    selfLink: path.join(root, "node_modules", "pbip"),
  };
}

/** True when `file` exists. */
export function exists(file: string): boolean {
  return fs.existsSync(file);
}
