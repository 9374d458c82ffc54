#!/usr/bin/env node
// `npm run bundle:gpu`: build dist-gpu/, a self-contained folder that runs pbip's
// benchmark and demo on a Linux x86-64 GPU machine with only a driver: no Node, no
// network, no node_modules. Layout:
//
//   dist-gpu/run.sh            launcher (scripts/gpu-bundle/run.sh)
//   dist-gpu/README.txt        how to run it
//   dist-gpu/torch-reference.py   PyTorch's timing of the step's two networks on the same GPU (bench/)
//   dist-gpu/manifest.json     versions, sizes, payload hash (the cache key)
//   dist-gpu/app/pbip.cjs      the pbip CLI and its JavaScript dependencies (esbuild)
//   dist-gpu/app/worker.js     the synthetic-data worker thread (esbuild)
//   dist-gpu/app/*.wasm        TensorFlow.js WASM binaries (PBIP_WASM_DIR points here)
//   dist-gpu/app/package.json, app/data-manifests/   what pbip's projectRoot() looks for
//   dist-gpu/payload.tar.xz    unpacked by run.sh into a cache folder on first run:
//       bin/node                              this Node.js (process.execPath), symbols stripped
//       lib/libvulkan.so.1                    the Vulkan loader from Debian's libvulkan1 (dpkg -x)
//       lib/fill/*.so.*                       glvnd and X11 client libraries a Vulkan driver loads (Debian 12),
//                                             put on the library path by run.sh only where the system lacks them
//       modules/webgpu/                       Dawn's dawn.node for linux-x64 only, with its index.js
//       modules/@img/sharp-linux-x64/, modules/@img/sharp-libvips-linux-x64/   sharp's prebuilt addon + libvips
//       modules/nsfwjs/dist/models/mobilenet_v2/   the bundled MobileNetV2 weights (stand-in encoder/backbone)
//       modules/@tensorflow/*/package.json    version records only (the code is in pbip.cjs)
//   (`modules` is put on NODE_PATH by run.sh; it is not a node_modules folder.)
//
// Options: --out DIR (default dist-gpu), --compression xz|gzip (default xz when the
// xz tool exists, else gzip through Node's zlib), --no-strip (keep Node's symbols).
// Compressed payloads are cached in .cache/bundle-gpu/ by content hash, so a rebuild
// after a source change takes seconds.
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const LIMIT = 60 * 1024 * 1024;

class BuildError extends Error {}

function fail(msg) {
  throw new BuildError(msg);
}

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}
const has = (name) => process.argv.includes(`--${name}`);

function which(tool) {
  const r = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  if (r.error) fail(`${cmd} ${args.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(" ")} failed (exit ${r.status}):\n${`${r.stderr}\n${r.stdout}`.trim().split("\n").slice(-10).join("\n")}`);
  return r.stdout;
}

function copy(src, dst, mode) {
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.copyFileSync(src, dst);
  if (mode !== undefined) fs.chmodSync(dst, mode);
}

function copyDir(src, dst, skip = () => false) {
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (skip(e.name, s)) continue;
    if (e.isDirectory()) copyDir(s, d, skip);
    else if (e.isFile()) copy(s, d, fs.statSync(s).mode & 0o777);
  }
}

function pkgDir(name) {
  // Packages that export neither "./package.json" nor a main file: walk node_modules.
  const d = path.join(root, "node_modules", ...name.split("/"));
  if (!fs.existsSync(path.join(d, "package.json"))) fail(`${name} is not installed (run \`npm ci\`)`);
  return d;
}

function pkgJson(name) {
  return JSON.parse(fs.readFileSync(path.join(pkgDir(name), "package.json"), "utf8"));
}

function duBytes(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p) + 4096;
    else n += Math.ceil(fs.lstatSync(p).size / 4096) * 4096;
  }
  return n;
}

function listFiles(dir, base = dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else out.push(path.relative(base, p));
  }
  return out;
}

/**
 * Debian packages whose libraries a GPU's Vulkan driver loads (soname per package):
 * glvnd (the dispatcher, EGL, GLX, GL, OpenGL, GLES) and the X11 client libraries
 * NVIDIA's libGLX_nvidia.so.0 links against, with their own dependencies.
 */
const DRIVER_COMPANIONS = {
  libglvnd0: ["libGLdispatch.so.0"],
  libegl1: ["libEGL.so.1"],
  libglx0: ["libGLX.so.0"],
  libgl1: ["libGL.so.1"],
  libopengl0: ["libOpenGL.so.0"],
  libgles2: ["libGLESv2.so.2"],
  "libx11-6": ["libX11.so.6"],
  libxext6: ["libXext.so.6"],
  libxcb1: ["libxcb.so.1"],
  libxau6: ["libXau.so.6"],
  libxdmcp6: ["libXdmcp.so.6"],
  libbsd0: ["libbsd.so.0"],
  libmd0: ["libmd.so.0"],
};

const sha256File = (f) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

// ---------------------------------------------------------------- build

async function build() {
  if (process.platform !== "linux" || process.arch !== "x64") fail(`builds a linux-x64 bundle from a linux-x64 machine (this is ${process.platform}-${process.arch})`);
  const outDir = path.resolve(root, arg("out", "dist-gpu"));
  const compression = arg("compression", which("xz") ? "xz" : "gzip");
  if (!["xz", "gzip"].includes(compression)) fail(`--compression must be xz or gzip, got ${compression}`);
  if (compression === "xz" && !which("xz")) fail("--compression xz needs the xz tool (apt-get install xz-utils)");
  for (const tool of ["tar", "dpkg-deb"]) if (!which(tool)) fail(`needs ${tool}`);
  const t0 = Date.now();
  const pbipVersion = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).version;
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), "pbip-bundle-gpu-"));
  // Built beside the cache (gitignored, not linted) when the output is in the project, then renamed into place.
  const inProject = !path.relative(root, outDir).startsWith("..");
  const tmpOut = inProject ? path.join(root, ".cache", "bundle-gpu", `build-${process.pid}`) : `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmpOut, { recursive: true, force: true });
  const app = path.join(tmpOut, "app");
  fs.mkdirSync(app, { recursive: true });
  const payloadDir = path.join(stage, "payload");
  const log = (s) => console.error(`bundle:gpu: ${s}`);

  try {
    // -------------------------------------------------------------- JavaScript (esbuild)
    const esbuild = require("esbuild");
    const external = [
      "webgpu", // Dawn: ESM with a native addon beside it; shipped under modules/
      "@img/sharp-*", // sharp's prebuilt addon and libvips; shipped under modules/
      "onnxruntime-node", // ONNX encoders: not in the GPU bundle (native, ~50 MB)
      "@tensorflow/tfjs-node",
      "@tensorflow/tfjs-node-gpu",
      "tsx",
      "tsx/*",
      "typescript",
      "tslab",
      "mathjax/*",
      "*.node", // native addons are never bundled (sharp probes build paths that do not exist here)
    ];
    // sharp first tries addons built from source at relative paths given as template
    // literals, which esbuild would try to resolve as file globs. The bundle has no
    // source build: those requires become a throw (inside sharp's own try/catch, so
    // it goes on to the prebuilt @img/sharp-linux-x64, as in any prebuilt install).
    const opaqueNativeRequires = {
      name: "opaque-native-requires",
      setup(b) {
        // One copy of sharp, its CommonJS build (its ESM build needs import.meta.url).
        const sharpCjs = path.join(pkgDir("sharp"), pkgJson("sharp").main);
        b.onResolve({ filter: /^sharp$/ }, () => ({ path: sharpCjs }));
        b.onLoad({ filter: /[\\/]sharp[\\/]dist[\\/]sharp\.cjs$/ }, (a) => {
          const src = fs.readFileSync(a.path, "utf8");
          const out = src.replace(/require\(`\.\.\/src\/build\/[^`]*\.node`\)/g, '(() => { throw new Error("pbip GPU bundle: no source-built sharp"); })()');
          if (out === src) fail(`${a.path}: expected source-build requires to neutralise (sharp changed?)`);
          return { contents: out, loader: "js" };
        });
      },
    };
    const common = {
      plugins: [opaqueNativeRequires],
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      external,
      legalComments: "none",
      minifyWhitespace: true,
      minifySyntax: true,
      keepNames: true,
      logLevel: "warning",
      logOverride: { "require-resolve-not-external": "silent" },
    };
    const r1 = await esbuild.build({ ...common, entryPoints: [path.join(root, "scripts/gpu-bundle/entry.ts")], outfile: path.join(app, "pbip.cjs"), metafile: true });
    await esbuild.build({ ...common, entryPoints: [path.join(root, "src/data/synthetic/worker.ts")], outfile: path.join(app, "worker.js") });
    const inputs = Object.keys(r1.metafile.inputs).filter((f) => f.includes("node_modules/")).map((f) => f.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*$/, "$1"));
    const bundledPkgs = [...new Set(inputs)].sort();
    log(`esbuild: pbip.cjs ${mib(fs.statSync(path.join(app, "pbip.cjs")).size)} (${bundledPkgs.length} packages bundled)`);
    const wasmDist = path.join(pkgDir("@tensorflow/tfjs-backend-wasm"), "dist");
    for (const f of fs.readdirSync(wasmDist).filter((f) => f.endsWith(".wasm"))) copy(path.join(wasmDist, f), path.join(app, f));
    fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "pbip", version: pbipVersion, private: true, description: "pbip GPU bundle (scripts/bundle-gpu.mjs)", type: "commonjs" }, null, 2) + "\n");
    copyDir(path.join(root, "data-manifests"), path.join(app, "data-manifests"));

    // -------------------------------------------------------------- native payload
    // Node.js: this one, symbols stripped when `strip` exists (86 MB instead of 99).
    const nodeDst = path.join(payloadDir, "bin", "node");
    fs.mkdirSync(path.dirname(nodeDst), { recursive: true });
    const strip = !has("no-strip") && which("strip");
    if (strip) run(strip, ["-o", nodeDst, process.execPath]);
    else copy(process.execPath, nodeDst);
    fs.chmodSync(nodeDst, 0o755);

    // Debian packages: found in the project's .deb cache (which `npm run setup` fills
    // for lavapipe) or apt's, else downloaded into the project's cache so a rebuild
    // reuses them; unpacked with dpkg -x, never installed.
    const dl = path.join(root, ".cache", "apt", "debs");
    const debDirs = [dl, "/var/cache/apt/archives"];
    const debVersions = {};
    const unpackDeb = (pkg) => {
      const re = new RegExp(`^${pkg.replace(/[+.]/g, "\\$&")}_[^_]+_amd64\\.deb$`);
      let deb = debDirs.flatMap((d) => (fs.existsSync(d) ? fs.readdirSync(d).filter((f) => re.test(f)).map((f) => path.join(d, f)) : []))[0];
      if (!deb) {
        fs.mkdirSync(dl, { recursive: true });
        log(`apt-get download ${pkg} (not installed)`);
        run("apt-get", ["download", `${pkg}:amd64`], { cwd: dl });
        const f = fs.readdirSync(dl).find((f) => re.test(f));
        if (!f) fail(`apt-get download ${pkg} wrote no ${pkg}_*_amd64.deb`);
        deb = path.join(dl, f);
      }
      const x = path.join(stage, "x", pkg);
      fs.mkdirSync(x, { recursive: true });
      run("dpkg-deb", ["-x", deb, x]);
      debVersions[pkg] = decodeURIComponent(path.basename(deb).split("_")[1]);
      return x;
    };
    /** The real file behind `soname` in an unpacked package (sonames are symlinks to it). */
    const sharedObject = (x, soname, pkg) => {
      const f = listFiles(x).find((f) => path.basename(f) === soname);
      if (!f) fail(`${pkg} holds no ${soname}`);
      return fs.realpathSync(path.join(x, f));
    };

    // The Vulkan loader from Debian's libvulkan1.
    copy(sharedObject(unpackDeb("libvulkan1"), "libvulkan.so.1", "libvulkan1"), path.join(payloadDir, "lib", "libvulkan.so.1"), 0o755);

    // What a vendor's Vulkan driver loads besides itself and a bare machine may lack.
    // NVIDIA's ICD (libGLX_nvidia.so.0) needs glvnd's dispatcher and EGL and the X11
    // client libraries: on an H200 machine with only the driver mounted, the loader
    // got no vkCreateInstance from it until glvnd's libraries were present. run.sh
    // puts a copy on the library path only for those the system lacks.
    for (const [pkg, sonames] of Object.entries(DRIVER_COMPANIONS)) {
      const x = unpackDeb(pkg);
      for (const so of sonames) copy(sharedObject(x, so, pkg), path.join(payloadDir, "lib", "fill", so), 0o755);
    }

    // Dawn (the webgpu package): linux-x64 only.
    const wg = pkgDir("webgpu");
    const wgDst = path.join(payloadDir, "modules", "webgpu");
    for (const f of ["package.json", "index.js", "LICENSE.md"]) if (fs.existsSync(path.join(wg, f))) copy(path.join(wg, f), path.join(wgDst, f));
    copy(path.join(wg, "dist", "linux-x64", "dawn.node"), path.join(wgDst, "dist", "linux-x64", "dawn.node"), 0o755);

    // sharp's prebuilt addon and libvips (image decoding and resizing in the data loader).
    for (const name of ["@img/sharp-linux-x64", "@img/sharp-libvips-linux-x64"]) {
      copyDir(pkgDir(name), path.join(payloadDir, "modules", ...name.split("/")), (n) => n === "README.md" || n === "include");
    }

    // The bundled MobileNetV2 (nsfwjs's weights): its package resolved through NODE_PATH, code stubbed.
    const nsfw = pkgJson("nsfwjs");
    const nsfwDst = path.join(payloadDir, "modules", "nsfwjs");
    fs.mkdirSync(path.join(nsfwDst, "dist", "cjs"), { recursive: true });
    fs.writeFileSync(path.join(nsfwDst, "package.json"), JSON.stringify({ name: "nsfwjs", version: nsfw.version, main: "dist/cjs/index.js", license: nsfw.license, note: "pbip GPU bundle: model files only" }, null, 2) + "\n");
    fs.writeFileSync(path.join(nsfwDst, "dist", "cjs", "index.js"), 'throw new Error("pbip GPU bundle: nsfwjs is present for its MobileNetV2 model files only");\n');
    copyDir(path.join(pkgDir("nsfwjs"), "dist", "models", "mobilenet_v2"), path.join(nsfwDst, "dist", "models", "mobilenet_v2"));
    if (fs.existsSync(path.join(pkgDir("nsfwjs"), "LICENSE"))) copy(path.join(pkgDir("nsfwjs"), "LICENSE"), path.join(nsfwDst, "LICENSE"));

    // Version records of bundled packages (pbip's backend report reads them).
    const versions = {};
    for (const name of ["@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@tensorflow/tfjs-backend-webgpu", "sharp"]) {
      const pj = pkgJson(name);
      versions[name] = pj.version;
      const d = path.join(payloadDir, "modules", ...name.split("/"));
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, "package.json"), JSON.stringify({ name, version: pj.version, main: "bundled.js", note: "pbip GPU bundle: the code is bundled into app/pbip.cjs; this records the version" }, null, 2) + "\n");
      fs.writeFileSync(path.join(d, "bundled.js"), `throw new Error(${JSON.stringify(`pbip GPU bundle: ${name} is bundled into app/pbip.cjs`)});\n`);
    }
    versions.webgpu = pkgJson("webgpu").version;
    for (const [k, v] of Object.entries(debVersions)) versions[`deb:${k}`] = v;
    versions.node = process.version;
    versions["@img/sharp-libvips-linux-x64"] = pkgJson("@img/sharp-libvips-linux-x64").version;

    // -------------------------------------------------------------- compress (cached by content)
    const files = listFiles(payloadDir);
    const h = crypto.createHash("sha256").update(`${compression}\n`);
    let unpacked = 0;
    for (const f of files) {
      const st = fs.statSync(path.join(payloadDir, f));
      unpacked += st.size;
      h.update(`${f}\0${st.mode & 0o777}\0${sha256File(path.join(payloadDir, f))}\n`);
    }
    const key = h.digest("hex").slice(0, 16);
    const ext = compression === "xz" ? "tar.xz" : "tar.gz";
    const cacheDir = path.join(root, ".cache", "bundle-gpu");
    fs.mkdirSync(cacheDir, { recursive: true });
    const cached = path.join(cacheDir, `payload-${key}.${ext}`);
    if (!fs.existsSync(cached)) {
      log(`compressing ${mib(unpacked)} with ${compression} (cached afterwards in .cache/bundle-gpu/) ...`);
      const tarFile = path.join(stage, "payload.tar");
      run("tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-cf", tarFile, "-C", payloadDir, "."]);
      const tmp = `${cached}.${process.pid}.tmp`;
      if (compression === "xz") {
        const fd = fs.openSync(tmp, "w");
        const r = spawnSync("xz", ["-6", "-T0", "-c", tarFile], { stdio: ["ignore", fd, "pipe"] });
        fs.closeSync(fd);
        if (r.status !== 0) fail(`xz failed: ${r.stderr}`);
      } else {
        fs.writeFileSync(tmp, zlib.gzipSync(fs.readFileSync(tarFile), { level: 9 }));
      }
      fs.renameSync(tmp, cached);
      // Keep the cache small: the newest three payloads.
      const old = fs.readdirSync(cacheDir).filter((f) => f.startsWith("payload-")).map((f) => ({ f, t: fs.statSync(path.join(cacheDir, f)).mtimeMs })).sort((a, b) => b.t - a.t).slice(3);
      for (const o of old) fs.rmSync(path.join(cacheDir, o.f), { force: true });
    } else {
      log(`payload unchanged: reusing .cache/bundle-gpu/${path.basename(cached)}`);
    }
    copy(cached, path.join(tmpOut, `payload.${ext}`));

    // -------------------------------------------------------------- launcher, readme, manifest
    copy(path.join(root, "scripts", "gpu-bundle", "run.sh"), path.join(tmpOut, "run.sh"), 0o755);
    copy(path.join(root, "scripts", "gpu-bundle", "README.txt"), path.join(tmpOut, "README.txt"));
    // PyTorch on the same GPU, for scale (needs torch, timm and transformers there; not pbip).
    copy(path.join(root, "bench", "torch-reference.py"), path.join(tmpOut, "torch-reference.py"), 0o755);
    const payloadSha = sha256File(path.join(tmpOut, `payload.${ext}`));
    const manifest = {
      name: "pbip-gpu-bundle",
      id: `${pbipVersion}-${payloadSha.slice(0, 12)}`,
      pbip: pbipVersion,
      builtAt: new Date().toISOString(),
      platform: "linux-x64",
      requires: "glibc >= 2.34 and libstdc++ (GLIBCXX_3.4.21+) on the target; a Vulkan driver (ICD) for the GPU",
      payload: { file: `payload.${ext}`, compression, sha256: payloadSha, bytes: fs.statSync(path.join(tmpOut, `payload.${ext}`)).size, unpackedBytes: unpacked, files },
      nodeStripped: Boolean(strip),
      versions,
      bundledPackages: bundledPkgs,
      notInBundle: ["onnxruntime-node (onnx: encoders)", "tslab/Jupyter (notebooks)", "@tensorflow/tfjs-node(-gpu)"],
    };
    fs.writeFileSync(path.join(tmpOut, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

    // -------------------------------------------------------------- checks, then swap into place
    const bad = listFiles(tmpOut).filter((f) => f.split(path.sep).includes("node_modules"));
    if (bad.length) fail(`the bundle must not contain node_modules: ${bad.slice(0, 3).join(", ")}`);
    const total = duBytes(tmpOut);
    if (total >= LIMIT) fail(`the bundle is ${mib(total)}, over the 60 MiB limit`);
    fs.rmSync(outDir, { recursive: true, force: true });
    fs.renameSync(tmpOut, outDir);
    log(`wrote ${path.relative(process.cwd(), outDir) || outDir}: ${mib(total)} on disk (payload ${mib(manifest.payload.bytes)} ${compression}, unpacks to ${mib(unpacked)}), ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
    fs.rmSync(tmpOut, { recursive: true, force: true });
  }
}

build().catch((e) => {
  console.error(e instanceof BuildError ? `bundle:gpu: ${e.message}` : e);
  process.exitCode = 1;
});
