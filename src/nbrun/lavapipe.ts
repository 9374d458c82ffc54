/**
 * GPU emulation on a CPU-only machine: Mesa's lavapipe Vulkan driver (llvmpipe)
 * under Dawn, so the WebGPU backend's code path runs and is tested without a GPU.
 *
 * Debian 12's own lavapipe (Mesa 22.3) is too old for Dawn, so the driver comes
 * from bookworm-backports (Mesa 25). It is fetched through a private apt
 * configuration inside the project (`.cache/apt`: its own sources list, lists and
 * archives; no system state is touched), unpacked with `dpkg -x` into
 * `.cache/vulkan/root`, and never installed system-wide. Only the packages the
 * system lacks (or has in a version too old) are fetched: the dependency closure
 * of `mesa-vulkan-drivers` is walked and each dependency the installed system
 * already satisfies is skipped. `ldd -r` then proves every library resolves.
 *
 * A process sees the driver only when it starts with the environment written to
 * `.cache/vulkan/env.sh` / `env.json` (`VK_ICD_FILENAMES` names the ICD JSON that
 * points at the unpacked `libvulkan_lvp.so`; `LD_LIBRARY_PATH` the unpacked
 * libraries, which the dynamic loader reads only at process start).
 */
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic, writeJsonAtomic, readJson } from "../util/fs";
import { devPaths } from "./paths";
import { which } from "./jupyter";

/** The environment a process needs to see lavapipe, as written by the setup. */
export interface GpuEmulationEnv {
  VK_ICD_FILENAMES: string;
  /** Folders of the unpacked libraries; prepended to any existing LD_LIBRARY_PATH. */
  libraryDirs: string[];
  /** Debian architecture of the unpacked packages, e.g. `amd64`. */
  architecture: string;
  /** The unpacked Mesa version, e.g. `25.0.7-2~bpo12+1`. */
  mesaVersion: string;
  /** Debian packages unpacked (name=version). */
  packages: string[];
  createdAt: string;
}

/** Why the lavapipe environment is missing, in words that say what to do. */
export const GPU_EMULATION_HINT =
  "the Mesa lavapipe (CPU Vulkan) setup is missing: run `npm run setup` (or `bash kernel-setup/setup.sh`) once; " +
  "it unpacks Mesa from Debian bookworm-backports into .cache/vulkan without installing anything system-wide";

/** Read the lavapipe environment written by the setup, or undefined if it is absent or incomplete. */
export function readGpuEmulationEnv(): GpuEmulationEnv | undefined {
  const p = devPaths();
  if (!fs.existsSync(p.vulkanEnvJson)) return undefined;
  try {
    const env = readJson<GpuEmulationEnv>(p.vulkanEnvJson);
    if (!fs.existsSync(env.VK_ICD_FILENAMES)) return undefined;
    const icd = readJson<{ ICD?: { library_path?: string } }>(env.VK_ICD_FILENAMES);
    if (!icd.ICD?.library_path || !fs.existsSync(icd.ICD.library_path)) return undefined;
    return env;
  } catch {
    return undefined;
  }
}

/**
 * `base` plus the lavapipe environment (VK_ICD_FILENAMES set, LD_LIBRARY_PATH
 * prepended). Throws with {@link GPU_EMULATION_HINT} when the setup has not run.
 */
export function withGpuEmulation(base: NodeJS.ProcessEnv, env: GpuEmulationEnv | undefined): NodeJS.ProcessEnv {
  if (!env) throw new Error(GPU_EMULATION_HINT);
  const ld = [...env.libraryDirs, ...(base.LD_LIBRARY_PATH ? base.LD_LIBRARY_PATH.split(":") : [])].filter(Boolean);
  return { ...base, VK_ICD_FILENAMES: env.VK_ICD_FILENAMES, LD_LIBRARY_PATH: ld.join(":") };
}

// ---------------------------------------------------------------------------
// Setup

/** Progress lines go through this (one line per step). */
export type Log = (line: string) => void;

class SetupError extends Error {}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, timeout: opts.timeout ?? 600_000, cwd: opts.cwd, env: opts.env });
}

function must(r: SpawnSyncReturns<string>, what: string): string {
  if (r.error) throw new SetupError(`${what}: ${r.error.message}`);
  if (r.status !== 0) {
    const tail = `${r.stderr}\n${r.stdout}`.trim().split("\n").slice(-8).join("\n");
    throw new SetupError(`${what} failed (exit ${r.status}):\n${tail}`);
  }
  return r.stdout;
}

/** The private apt configuration: options that point every apt path into `.cache/apt`. */
function aptOptions(aptDir: string): string[] {
  const o = (k: string, v: string) => ["-o", `${k}=${v}`];
  return [
    ...o("Dir::Etc::SourceList", path.join(aptDir, "sources.list")),
    ...o("Dir::Etc::SourceParts", path.join(aptDir, "sources.list.d")),
    ...o("Dir::Etc::Preferences", path.join(aptDir, "preferences")),
    ...o("Dir::Etc::PreferencesParts", path.join(aptDir, "preferences.d")),
    ...o("Dir::State", path.join(aptDir, "state")),
    ...o("Dir::State::Lists", path.join(aptDir, "lists")),
    ...o("Dir::State::status", path.join(aptDir, "status")),
    ...o("Dir::Cache", path.join(aptDir, "cache")),
    ...o("Debug::NoLocking", "1"),
    ...(process.getuid?.() === 0 ? o("APT::Sandbox::User", "root") : []),
  ];
}

const KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

/** Write the private apt configuration (bookworm + bookworm-backports, backports pinned equal so the newest wins). */
function writeAptConfig(aptDir: string): void {
  const mirror = process.env.PBIP_DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
  for (const d of ["sources.list.d", "preferences.d", "state", "lists/partial", "cache/archives/partial", "debs"]) {
    fs.mkdirSync(path.join(aptDir, d), { recursive: true });
  }
  writeFileAtomic(
    path.join(aptDir, "sources.list"),
    [
      "# Private to pbip's GPU emulation setup (kernel-setup/setup.sh); the system's apt is not touched.",
      `deb [signed-by=${KEYRING}] ${mirror} bookworm main`,
      `deb [signed-by=${KEYRING}] ${mirror} bookworm-backports main`,
      "",
    ].join("\n"),
  );
  writeFileAtomic(
    path.join(aptDir, "preferences"),
    ["Package: *", "Pin: release n=bookworm-backports", "Pin-Priority: 500", ""].join("\n"),
  );
  if (!fs.existsSync(path.join(aptDir, "status"))) writeFileAtomic(path.join(aptDir, "status"), "");
}

interface Stanza {
  Package: string;
  Version: string;
  Architecture: string;
  Depends?: string;
  "Pre-Depends"?: string;
}

function parseStanza(text: string): Stanza | undefined {
  const out: Record<string, string> = {};
  let key = "";
  for (const line of text.split("\n")) {
    if (!line.trim()) {
      if (key) break;
      continue;
    }
    if (/^\s/.test(line) && key) out[key] += " " + line.trim();
    else {
      const i = line.indexOf(":");
      if (i > 0) {
        key = line.slice(0, i);
        out[key] = line.slice(i + 1).trim();
      }
    }
  }
  return out.Package && out.Version ? (out as unknown as Stanza) : undefined;
}

interface DepAlt {
  name: string;
  op?: string;
  version?: string;
}

/** Parse a Debian `Depends` field into clauses of alternatives. */
export function parseDepends(field: string | undefined): DepAlt[][] {
  if (!field) return [];
  return field
    .split(",")
    .map((c) => c.trim())
    .filter(Boolean)
    .map((clause) =>
      clause.split("|").map((alt) => {
        const m = /^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?/.exec(alt);
        if (!m) throw new SetupError(`cannot parse dependency "${alt}"`);
        return { name: m[1]!, op: m[2], version: m[3] };
      }),
    );
}

const DPKG_OP: Record<string, string> = { "<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt" };

function versionSatisfies(have: string, op: string | undefined, want: string | undefined): boolean {
  if (!op || !want) return true;
  return run("dpkg", ["--compare-versions", have, DPKG_OP[op]!, want]).status === 0;
}

/** The private apt configuration in `.cache/apt`, its package lists fresh (fetched when missing or a week old). */
interface PrivateApt {
  opts: string[];
  debsDir: string;
  update: () => void;
  show: (pkg: string) => Stanza | undefined;
}

function privateApt(): PrivateApt {
  const p = devPaths();
  const opts = aptOptions(p.aptDir);
  writeAptConfig(p.aptDir);
  const listsDir = path.join(p.aptDir, "lists");
  const lists = fs.readdirSync(listsDir).filter((f) => f.endsWith("_Packages") || f.endsWith("_Packages.lz4"));
  const fresh = lists.length >= 2 && lists.every((f) => Date.now() - fs.statSync(path.join(listsDir, f)).mtimeMs < 7 * 86400e3);
  const update = () => void must(run("apt-get", [...opts, "-q", "update"]), "apt-get update (private lists in .cache/apt)");
  if (!fresh) update();
  const show = (pkg: string): Stanza | undefined => {
    const r = run("apt-cache", [...opts, "show", "--no-all-versions", pkg]);
    return r.status === 0 ? parseStanza(r.stdout) : undefined;
  };
  return { opts, debsDir: path.join(p.aptDir, "debs"), update, show };
}

/** The downloaded `.deb` of a package version in the private archive folder, if any. */
function debFor(apt: PrivateApt, st: Stanza): string | undefined {
  const prefix = `${st.Package}_${st.Version.replace(/:/g, "%3a")}_`;
  const f = fs.readdirSync(apt.debsDir).find((n) => n.startsWith(prefix) && n.endsWith(".deb"));
  return f && path.join(apt.debsDir, f);
}

/** Download the `.deb` of each package version not downloaded yet (refreshing the lists once on a 404). */
function downloadMissing(apt: PrivateApt, stanzas: readonly Stanza[]): void {
  const missing = stanzas.filter((st) => !debFor(apt, st));
  if (!missing.length) return;
  const args = [...apt.opts, "-q", "download", ...missing.map((st) => `${st.Package}=${st.Version}`)];
  let r = run("apt-get", args, { cwd: apt.debsDir });
  if (r.status !== 0 && /404|Unable to fetch|Failed to fetch/i.test(r.stderr)) {
    apt.update();
    r = run("apt-get", args, { cwd: apt.debsDir });
  }
  must(r, "apt-get download (into .cache/apt/debs)");
}

/** A downloaded Debian package. */
export interface DebianPackageFile {
  package: string;
  /** The version downloaded (the archive's candidate). */
  version: string;
  /** The `.deb` file. */
  path: string;
}

/**
 * Download Debian bookworm packages (the candidate version of each, backports
 * included) through the private apt configuration in `.cache/apt`, without
 * installing anything; returns one file per name, in the order given.
 * Already-downloaded files are reused.
 */
export function downloadDebianPackages(names: readonly string[]): DebianPackageFile[] {
  for (const tool of ["apt-get", "apt-cache"]) {
    if (!which(tool)) throw new SetupError(`needs ${tool} (Debian/Ubuntu) to download ${names.join(", ")}`);
  }
  if (!fs.existsSync(KEYRING)) throw new SetupError(`needs Debian's archive keyring ${KEYRING}: install the package debian-archive-keyring`);
  const apt = privateApt();
  const stanzas = names.map((name) => {
    const st = apt.show(name);
    if (!st) throw new SetupError(`package ${name} not found in Debian bookworm`);
    return st;
  });
  downloadMissing(apt, stanzas);
  return stanzas.map((st) => {
    const f = debFor(apt, st);
    if (!f) throw new SetupError(`apt-get download reported success but no ${st.Package}_${st.Version} .deb is in ${apt.debsDir}`);
    return { package: st.Package, version: st.Version, path: f };
  });
}

/** Packages never unpacked privately: the C library must be the system's own. */
const NEVER_UNPACK = new Set(["libc6", "libc-bin", "libc6-dev"]);

/**
 * Unpack Mesa lavapipe (and whatever the system lacks for it) into `.cache/vulkan`,
 * write the ICD JSON and the environment files, and verify with `ldd -r`.
 * Returns the environment. Every apt path is private to the project.
 */
export function installLavapipe(): GpuEmulationEnv {
  const p = devPaths();
  if (process.platform !== "linux") throw new SetupError(`GPU emulation with lavapipe is set up on Linux only (this is ${process.platform})`);
  for (const tool of ["apt-get", "apt-cache", "dpkg", "dpkg-query", "dpkg-deb", "ldd"]) {
    if (!which(tool)) {
      throw new SetupError(
        `needs ${tool} (Debian/Ubuntu). Elsewhere install your distribution's Mesa Vulkan drivers (lavapipe, Mesa 24 or newer) ` +
          "and set VK_ICD_FILENAMES to its lvp_icd JSON yourself",
      );
    }
  }
  if (!fs.existsSync(KEYRING)) {
    throw new SetupError(`needs Debian's archive keyring ${KEYRING}: install the package debian-archive-keyring`);
  }
  const arch = must(run("dpkg", ["--print-architecture"]), "dpkg --print-architecture").trim();
  // 1. Package lists (private), refreshed when older than a week.
  const apt = privateApt();
  const show = apt.show;
  const installed = (pkg: string): string | undefined => {
    const r = run("dpkg-query", ["-W", "-f=${Status}\t${Version}", pkg]);
    if (r.status !== 0) return undefined;
    const [status, version] = r.stdout.split("\t");
    return status?.endsWith(" installed") ? version : undefined;
  };

  // 2. Walk the dependency closure; keep what the installed system does not satisfy.
  const roots = ["mesa-vulkan-drivers", "libvulkan1"];
  const chosen = new Map<string, Stanza>();
  const queue = [...roots];
  while (queue.length) {
    const name = queue.shift()!;
    if (chosen.has(name)) continue;
    const st = show(name);
    if (!st) throw new SetupError(`package ${name} not found in bookworm/bookworm-backports`);
    chosen.set(name, st);
    for (const clause of [...parseDepends(st["Pre-Depends"]), ...parseDepends(st.Depends)]) {
      const ok = clause.some((a) => {
        const inst = installed(a.name);
        if (inst !== undefined && versionSatisfies(inst, a.op, a.version)) return true;
        const ch = chosen.get(a.name);
        return ch !== undefined && versionSatisfies(ch.Version, a.op, a.version);
      });
      if (ok) continue;
      const pick = clause.find((a) => {
        const c = show(a.name);
        return c !== undefined && versionSatisfies(c.Version, a.op, a.version);
      });
      const want = clause.map((a) => `${a.name}${a.op ? ` (${a.op} ${a.version})` : ""}`).join(" | ");
      if (!pick) throw new SetupError(`${name} needs ${want}, which neither the system nor bookworm(-backports) provides`);
      if (NEVER_UNPACK.has(pick.name)) {
        throw new SetupError(
          `${name} needs ${want} but the system has ${pick.name} ${installed(pick.name) ?? "(none)"}; ` +
            "the C library cannot be replaced privately: GPU emulation needs Debian 12 / Ubuntu 22.04 or newer",
        );
      }
      queue.push(pick.name);
    }
  }
  const mesa = chosen.get("mesa-vulkan-drivers")!;
  if (!/bpo|^2[4-9]\./.test(mesa.Version)) {
    throw new SetupError(`mesa-vulkan-drivers candidate is ${mesa.Version}; Dawn needs the bookworm-backports build (Mesa 24+)`);
  }

  // 3. Download (skipping .debs already fetched) and unpack into a fresh tree.
  downloadMissing(apt, [...chosen.values()]);
  const rootTmp = path.join(p.vulkanDir, `root.${process.pid}.tmp`);
  const rootDir = path.join(p.vulkanDir, "root");
  fs.rmSync(rootTmp, { recursive: true, force: true });
  fs.mkdirSync(rootTmp, { recursive: true });
  for (const st of chosen.values()) must(run("dpkg", ["-x", debFor(apt, st)!, rootTmp]), `dpkg -x ${st.Package}`);

  // 4. Point everything at the final location, then move the tree into place.
  const triplet = fs
    .readdirSync(path.join(rootTmp, "usr", "lib"))
    .find((d) => fs.existsSync(path.join(rootTmp, "usr", "lib", d, "libvulkan_lvp.so")));
  if (!triplet) throw new SetupError("the unpacked mesa-vulkan-drivers has no libvulkan_lvp.so");
  fs.rmSync(rootDir, { recursive: true, force: true });
  fs.renameSync(rootTmp, rootDir);
  const libDirs = [path.join(rootDir, "usr", "lib", triplet), path.join(rootDir, "lib", triplet), path.join(rootDir, "usr", "lib")].filter(
    (d) => fs.existsSync(d) && fs.readdirSync(d).some((f) => /\.so(\.|$)/.test(f)),
  );
  const lvp = path.join(rootDir, "usr", "lib", triplet, "libvulkan_lvp.so");
  const shipped = path.join(rootDir, "usr", "share", "vulkan", "icd.d", "lvp_icd.json");
  const apiVersion = fs.existsSync(shipped) ? (readJson<{ ICD?: { api_version?: string } }>(shipped).ICD?.api_version ?? "1.3.0") : "1.3.0";
  writeJsonAtomic(p.vulkanIcd, { file_format_version: "1.0.0", ICD: { library_path: lvp, api_version: apiVersion } });

  const env: GpuEmulationEnv = {
    VK_ICD_FILENAMES: p.vulkanIcd,
    libraryDirs: libDirs,
    architecture: arch,
    mesaVersion: mesa.Version,
    packages: [...chosen.values()].map((st) => `${st.Package}=${st.Version}`),
    createdAt: new Date().toISOString(),
  };
  const problems = lddProblems(env);
  if (problems.length) throw new SetupError(`unpacked lavapipe does not load:\n  ${problems.join("\n  ")}`);
  writeJsonAtomic(p.vulkanEnvJson, env);
  writeFileAtomic(
    p.vulkanEnvSh,
    [
      "# Mesa lavapipe (CPU Vulkan) for Dawn/WebGPU, unpacked by kernel-setup/setup.sh. Source this file:",
      `#   . ${p.vulkanEnvSh}`,
      `export VK_ICD_FILENAMES='${p.vulkanIcd}'`,
      `export LD_LIBRARY_PATH='${libDirs.join(":")}'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}`,
      "",
    ].join("\n"),
  );
  return env;
}

/** `ldd -r` the driver and the Vulkan loader with the private library path; returns unresolved libraries/symbols. */
export function lddProblems(env: GpuEmulationEnv): string[] {
  const icd = readJson<{ ICD: { library_path: string } }>(env.VK_ICD_FILENAMES);
  const loader = env.libraryDirs.map((d) => path.join(d, "libvulkan.so.1")).find((f) => fs.existsSync(f));
  const out: string[] = [];
  for (const lib of [icd.ICD.library_path, ...(loader ? [loader] : [])]) {
    const r = run("ldd", ["-r", lib], { env: withGpuEmulation({ ...process.env, LD_LIBRARY_PATH: "" }, env) });
    for (const line of `${r.stdout}\n${r.stderr}`.split("\n")) {
      if (/not found|undefined symbol/.test(line)) out.push(`${path.basename(lib)}: ${line.trim()}`);
    }
  }
  return out;
}

/** What the WebGPU probe child prints. */
export interface WebGpuProbe {
  ok: boolean;
  backend?: string;
  device?: string;
  adapter?: { vendor: string; architecture: string; device: string; description: string; software: boolean };
  error?: string;
  seconds: number;
}

/**
 * Start a child Node with the lavapipe environment and `PBIP_BACKEND=webgpu`, run
 * `initBackend` and a small convolution there, and return what it reports.
 */
export function probeWebGpuWithLavapipe(env = readGpuEmulationEnv()): WebGpuProbe {
  const t0 = Date.now();
  const [cmd, ...args] = nodeModuleCommand("nbrun/probe-webgpu");
  const childEnv = { ...withGpuEmulation(process.env, env), PBIP_BACKEND: "webgpu" };
  const r = spawnSync(cmd!, args, { encoding: "utf8", env: childEnv, timeout: 180_000, cwd: devPaths().root });
  const last = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return { ...(JSON.parse(last) as WebGpuProbe), seconds: (Date.now() - t0) / 1000 };
  } catch {
    const err = (r.error?.message ?? `${r.stderr}`.trim().split("\n").slice(-5).join(" | ")) || `exit ${r.status}`;
    return { ok: false, error: err, seconds: (Date.now() - t0) / 1000 };
  }
}

/**
 * The command that runs one of pbip's own modules as a script: through tsx on the
 * TypeScript source in a development checkout (so it never runs a stale build),
 * else the compiled file in dist/.
 */
export function nodeModuleCommand(rel: string): string[] {
  const root = devPaths().root;
  const src = path.join(root, "src", `${rel}.ts`);
  let tsx: string | undefined;
  try {
    tsx = require.resolve("tsx", { paths: [root] });
  } catch {
    tsx = undefined;
  }
  if (tsx && fs.existsSync(src)) return [process.execPath, "--import", "tsx", src];
  return [process.execPath, path.join(root, "dist", `${rel}.js`)];
}

export { SetupError };

