/**
 * Real stained tissue, for checks the synthetic benchmark cannot make.
 *
 * The embedded dataset is painted, not real. Two small real images can be had
 * from Debian's archive (and from their upstream repositories), so pbip fetches
 * them on request into `<cache>/real-samples` (never into git), checks each file's
 * SHA-256, and records where it came from:
 *
 * | id | what | from |
 * |---|---|---|
 * | `visium-he` | H&E, mouse brain section, 10x Visium low-res scan (600x599) | Seurat's test data (`r-cran-seurat`, GPL-3) |
 * | `visium-positions` | the capture spots of that scan: barcode, in_tissue (Space Ranger's call), row, col, full-res pixel row, col | same |
 * | `visium-scalefactors` | spot diameter and the low-res scale factor | same |
 * | `ihc-dab` | IHC (DAB + hematoxylin), colon glands, 512x512 | scikit-image's `data/ihc.png` (`python3-skimage`, "no known copyright restrictions") |
 *
 * Neither image has pixel labels, so nothing here measures segmentation. The Visium
 * spots do carry a tissue/glass call made by Space Ranger (10x Genomics' own
 * tissue detection on the same scan): a second algorithm to compare pbip's glass
 * rules with, not ground truth (see `src/data/glass.ts`).
 *
 * Sources are tried in order: the cache, Debian (`apt-get download` through the
 * project's private apt configuration, then `dpkg -x`; nothing is installed), and
 * the upstream repositories over HTTPS at the tags Debian packaged. Every file must
 * match its recorded SHA-256 whatever the source.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { cacheBase } from "../nbrun/paths";
import { downloadDebianPackages } from "../nbrun/lavapipe";
import { readJson, sha256, writeFileAtomic, writeJsonAtomic } from "../util/fs";

/** The real samples pbip knows. */
export type RealSampleId = "visium-he" | "visium-positions" | "visium-scalefactors" | "ihc-dab";

/** Where one sample comes from and what it must hash to. */
export interface RealSampleSpec {
  id: RealSampleId;
  /** File name in the samples folder. */
  file: string;
  /** SHA-256 of the file as stored (the positions list decompressed). */
  sha256: string;
  description: string;
  licence: string;
  debian: { package: string; version: string; path: string; gzip?: boolean };
  upstream: { url: string; gzip?: boolean };
}

const SEURAT_DEB = { package: "r-cran-seurat", version: "4.3.0-1" };
const SEURAT_DOC = "usr/share/doc/r-cran-seurat/tests/testdata/visium/spatial";
const SEURAT_GIT = "https://raw.githubusercontent.com/satijalab/seurat/v4.3.0/tests/testdata/visium/spatial";
const SEURAT_LICENCE =
  "distributed in Seurat's test data (r-cran-seurat, GPL-3 per Debian's copyright file); the scan and spot list come from 10x Genomics' public mouse brain Visium demo dataset, under 10x's own dataset terms";

/** The four files, with their hashes as measured on Debian bookworm's packages. */
export const REAL_SAMPLES: readonly RealSampleSpec[] = [
  {
    id: "visium-he",
    file: "visium-he.png",
    sha256: "733bfba3b8622f2f4cbe5a43da79eac0b1ec3768825afa6ca38fd8f70d828efb",
    description: "H&E, mouse brain, 10x Visium low-res scan, 600x599 RGB; glass is grey (about 187), fiducial dots around the capture area",
    licence: SEURAT_LICENCE,
    debian: { ...SEURAT_DEB, path: `${SEURAT_DOC}/tissue_lowres_image.png` },
    upstream: { url: `${SEURAT_GIT}/tissue_lowres_image.png` },
  },
  {
    id: "visium-positions",
    file: "visium-positions.csv",
    sha256: "1a27983a745840e6f9493fd4ebe98bb92ba66679bf1612381b7fd01f38863742",
    description: "Space Ranger's spot list: barcode, in_tissue (0/1), array row, array col, full-res pixel row, full-res pixel col",
    licence: SEURAT_LICENCE,
    debian: { ...SEURAT_DEB, path: `${SEURAT_DOC}/tissue_positions_list.csv.gz`, gzip: true },
    upstream: { url: `${SEURAT_GIT}/tissue_positions_list.csv` },
  },
  {
    id: "visium-scalefactors",
    file: "visium-scalefactors.json",
    sha256: "1c24e2de6abd169b9ee6115cfd218a3f6c870698984cb50a79fb44225ea0d430",
    description: "Space Ranger's scale factors: spot diameter (full-res pixels) and the low-res image's scale",
    licence: SEURAT_LICENCE,
    debian: { ...SEURAT_DEB, path: `${SEURAT_DOC}/scalefactors_json.json` },
    upstream: { url: `${SEURAT_GIT}/scalefactors_json.json` },
  },
  {
    id: "ihc-dab",
    file: "ihc-dab.png",
    sha256: "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    description: "IHC: FHL2 revealed with DAB (brown), hematoxylin counterstain (blue), colonic glands, 512x512 RGB; not H&E",
    licence: "scikit-image data (BSD-3-Clause package); the image: no known copyright restrictions (CMMI)",
    debian: { package: "python3-skimage", version: "0.19.3-8", path: "usr/lib/python3/dist-packages/skimage/data/ihc.png" },
    upstream: { url: "https://raw.githubusercontent.com/scikit-image/scikit-image/v0.19.3/skimage/data/ihc.png" },
  },
];

/** The fetched samples: their folder, each file's path, and where they came from this time. */
export interface RealSamples {
  dir: string;
  paths: Record<RealSampleId, string>;
  /** `cache`: all were already there; otherwise the source of the files fetched now. */
  source: "cache" | "debian" | "upstream";
}

/** Default folder: `<cache>/real-samples` (`$PBIP_CACHE`, else `<project>/.cache`). */
export function realSamplesDir(): string {
  return path.join(cacheBase(), "real-samples");
}

/** Thrown when the samples cannot be had; the message says what was tried and how to get them by hand. */
export class RealSamplesError extends Error {
  override name = "RealSamplesError";
}

function pathsIn(dir: string, specs: readonly RealSampleSpec[]): Record<RealSampleId, string> {
  return Object.fromEntries(specs.map((s) => [s.id, path.join(dir, s.file)])) as Record<RealSampleId, string>;
}

/** The samples already in `dir` with the right hashes, or undefined if any is missing or differs. */
export function realSamplesPresent(dir = realSamplesDir(), specs: readonly RealSampleSpec[] = REAL_SAMPLES): RealSamples | undefined {
  for (const s of specs) {
    const f = path.join(dir, s.file);
    if (!fs.existsSync(f) || sha256(fs.readFileSync(f)) !== s.sha256) return undefined;
  }
  return { dir, paths: pathsIn(dir, specs), source: "cache" };
}

function checked(spec: RealSampleSpec, bytes: Uint8Array, from: string): Uint8Array {
  const got = sha256(bytes);
  if (got !== spec.sha256) {
    throw new RealSamplesError(`${spec.file} from ${from} has SHA-256 ${got}, expected ${spec.sha256} (a different file; not stored)`);
  }
  return bytes;
}

/** The fetched bytes of each sample, and where each came from (for samples.json). */
type Fetched = Map<RealSampleId, { bytes: Uint8Array; from: string }>;

function fromDebian(specs: readonly RealSampleSpec[]): Fetched {
  const pkgs = [...new Set(specs.map((s) => s.debian.package))];
  const debs = downloadDebianPackages(pkgs);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pbip-real-samples-"));
  try {
    const out: Fetched = new Map();
    debs.forEach((deb) => {
      const x = path.join(tmp, deb.package);
      const r = spawnSync("dpkg-deb", ["-x", deb.path, x], { encoding: "utf8" });
      if (r.error || r.status !== 0) throw new RealSamplesError(`dpkg-deb -x ${deb.path} failed: ${r.error?.message ?? r.stderr.trim()}`);
      for (const s of specs.filter((t) => t.debian.package === deb.package)) {
        const f = path.join(x, s.debian.path);
        const name = path.basename(deb.path);
        if (!fs.existsSync(f)) throw new RealSamplesError(`${name} has no ${s.debian.path}`);
        const raw = fs.readFileSync(f);
        out.set(s.id, { bytes: checked(s, s.debian.gzip ? zlib.gunzipSync(raw) : raw, name), from: `${deb.package} ${deb.version}: /${s.debian.path}` });
      }
    });
    return out;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function fromUpstream(specs: readonly RealSampleSpec[]): Promise<Fetched> {
  const out: Fetched = new Map();
  for (const s of specs) {
    let res: Response;
    try {
      res = await fetch(s.upstream.url, { signal: AbortSignal.timeout(60_000) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new RealSamplesError(`GET ${s.upstream.url}: ${cause?.message ?? cause?.code ?? (e as Error).message}`);
    }
    if (!res.ok) throw new RealSamplesError(`GET ${s.upstream.url}: HTTP ${res.status}`);
    const raw = new Uint8Array(await res.arrayBuffer());
    out.set(s.id, { bytes: checked(s, s.upstream.gzip ? zlib.gunzipSync(raw) : raw, s.upstream.url), from: s.upstream.url });
  }
  return out;
}

/** Options of {@link fetchRealSamples}. */
export interface FetchRealSamplesOptions {
  /** Where to keep them (default {@link realSamplesDir}). */
  dir?: string;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Sources to try, in order (default Debian's archive, then upstream). */
  sources?: readonly ("debian" | "upstream")[];
  /** The files (default {@link REAL_SAMPLES}); another list serves tests, or samples of your own with their hashes. */
  specs?: readonly RealSampleSpec[];
}

/** A failure's whole message on one line (apt's own words come on the lines after the first). */
const oneLine = (e: unknown): string =>
  (e as Error).message
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .join(" | ");

/**
 * Make sure the real samples are in `dir` (default `realSamplesDir()`), fetching
 * them when any is missing or damaged: first from Debian's archive, then from
 * upstream over HTTPS. Each file is hash-checked before it is written
 * (atomically), and `samples.json` records where each came from (the Debian
 * package version actually downloaded, or the URL) and its licence. Throws
 * `RealSamplesError` naming each source's failure and the manual route.
 */
export async function fetchRealSamples(opts: FetchRealSamplesOptions = {}): Promise<RealSamples> {
  const dir = opts.dir ?? realSamplesDir();
  const specs = opts.specs ?? REAL_SAMPLES;
  const have = realSamplesPresent(dir, specs);
  if (have) return have;
  const log = opts.log ?? (() => {});
  const failures: string[] = [];
  let got: Fetched | undefined;
  let source: RealSamples["source"] = "debian";
  for (const src of opts.sources ?? ["debian", "upstream"]) {
    source = src;
    try {
      if (src === "debian") {
        if (process.platform !== "linux") throw new RealSamplesError(`not tried on ${process.platform}`);
        log(`real samples: downloading ${[...new Set(specs.map((s) => s.debian.package))].join(" and ")} from Debian (unpacked, not installed)`);
        got = fromDebian(specs);
      } else {
        log("real samples: downloading from the upstream repositories");
        got = await fromUpstream(specs);
      }
      break;
    } catch (e) {
      failures.push(`${src === "debian" ? "Debian" : "upstream"}: ${oneLine(e)}`);
    }
  }
  if (!got) {
    throw new RealSamplesError(
      `could not fetch the real samples into ${dir}:\n  ${failures.join("\n  ")}\n` +
        `By hand: put these files there (the hashes are checked):\n` +
        specs.map((s) => `  ${s.file}  <- ${s.upstream.url}  (or /${s.debian.path} in Debian's ${s.debian.package} ${s.debian.version})`).join("\n"),
    );
  }
  fs.mkdirSync(dir, { recursive: true });
  for (const s of specs) writeFileAtomic(path.join(dir, s.file), got.get(s.id)!.bytes);
  writeJsonAtomic(path.join(dir, "samples.json"), {
    fetchedAt: new Date().toISOString(),
    source,
    files: specs.map((s) => ({ id: s.id, file: s.file, sha256: s.sha256, description: s.description, licence: s.licence, from: got.get(s.id)!.from })),
  });
  log(`real samples: ${specs.length} files in ${dir} (from ${source})`);
  return { dir, paths: pathsIn(dir, specs), source };
}

/** One Visium capture spot in the low-res image's pixels. */
export interface VisiumSpot {
  barcode: string;
  /** Space Ranger's call: the spot lies on tissue. */
  inTissue: boolean;
  /** Centre, in low-res image pixels (x = column, y = row). */
  x: number;
  y: number;
}

/** The spots of the Visium sample and the spot radius, both in the low-res image's pixels. */
export function readVisiumSpots(samples: RealSamples): { spots: VisiumSpot[]; radius: number } {
  const sf = readJson<{ spot_diameter_fullres?: number; tissue_lowres_scalef?: number }>(samples.paths["visium-scalefactors"]);
  const scale = sf.tissue_lowres_scalef;
  const diameter = sf.spot_diameter_fullres;
  if (typeof scale !== "number" || typeof diameter !== "number") {
    throw new RealSamplesError(`${samples.paths["visium-scalefactors"]}: needs numbers tissue_lowres_scalef and spot_diameter_fullres`);
  }
  const file = samples.paths["visium-positions"];
  const spots = fs
    .readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((line, i) => {
      const f = line.split(",");
      const row = Number(f[4]);
      const col = Number(f[5]);
      if (f.length !== 6 || (f[1] !== "0" && f[1] !== "1") || !Number.isFinite(row) || !Number.isFinite(col)) {
        throw new RealSamplesError(`${file}, line ${i + 1}: expected barcode,in_tissue(0/1),row,col,pxl_row,pxl_col; got "${line}"`);
      }
      return { barcode: f[0]!, inTissue: f[1] === "1", x: col * scale, y: row * scale };
    });
  return { spots, radius: (diameter * scale) / 2 };
}

/** How a glass mask agrees with Space Ranger's per-spot tissue calls. */
export interface SpotAgreement {
  /** Share of spots where the mask agrees (a spot is glass when over half its pixels are). */
  agreement: number;
  /** Spots on tissue that the mask calls glass, and spots on glass it calls tissue. */
  tissueAsGlass: number;
  glassAsTissue: number;
  /** Per spot, in the order given: the mask agrees. */
  agrees: boolean[];
}

/**
 * Compare a glass mask (`glass[y * width + x]` non-zero = glass) with the spots'
 * tissue calls: each spot's pixels are those whose centre lies within `radius` of
 * the spot's centre; the spot is glass when more than half of them are.
 */
export function visiumSpotAgreement(glass: ArrayLike<number>, width: number, height: number, spots: readonly VisiumSpot[], radius: number): SpotAgreement {
  if (glass.length !== width * height) throw new Error(`visiumSpotAgreement: ${glass.length} mask values for a ${width}x${height} image`);
  let tissueAsGlass = 0;
  let glassAsTissue = 0;
  const agrees = spots.map((s) => {
    let n = 0;
    let g = 0;
    for (let y = Math.max(0, Math.floor(s.y - radius)); y <= Math.min(height - 1, Math.ceil(s.y + radius)); y++) {
      for (let x = Math.max(0, Math.floor(s.x - radius)); x <= Math.min(width - 1, Math.ceil(s.x + radius)); x++) {
        if ((x - s.x) ** 2 + (y - s.y) ** 2 > radius * radius) continue;
        n++;
        if (glass[y * width + x]) g++;
      }
    }
    if (n === 0) throw new Error(`visiumSpotAgreement: spot ${s.barcode} at (${s.x}, ${s.y}) covers no pixel of the ${width}x${height} mask`);
    const calledGlass = g / n > 0.5;
    if (calledGlass && s.inTissue) tissueAsGlass++;
    if (!calledGlass && !s.inTissue) glassAsTissue++;
    return calledGlass !== s.inTissue;
  });
  return { agreement: agrees.filter(Boolean).length / Math.max(1, spots.length), tissueAsGlass, glassAsTissue, agrees };
}
