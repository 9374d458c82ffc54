// The real samples: fetched (from Debian's archive here), hash-checked, recorded, reused,
// refetched when a file is damaged; the Visium spot list read and its errors named.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as http from "node:http";
import * as zlib from "node:zlib";
import type { AddressInfo } from "node:net";
import sharp from "sharp";
import { fetchRealSamples, readVisiumSpots, realSamplesPresent, REAL_SAMPLES, RealSamplesError, type RealSampleSpec } from "../../src/data/real-samples";
import { sha256 } from "../../src/util/fs";
import { commands } from "../../src/cli/commands/data";
import { tmpDir } from "../tmp";

test("fetchRealSamples: every file hash-checked and recorded; a second call reuses them; a damaged file is fetched again", async () => {
  const dir = path.join(tmpDir(), "samples");
  const lines: string[] = [];
  const got = await fetchRealSamples({ dir, log: (l) => lines.push(l) });
  assert.notEqual(got.source, "cache");
  assert.equal(got.dir, dir);
  for (const s of REAL_SAMPLES) assert.equal(sha256(fs.readFileSync(got.paths[s.id])), s.sha256, s.file);
  const record = JSON.parse(fs.readFileSync(path.join(dir, "samples.json"), "utf8")) as { source: string; files: { file: string; from: string; licence: string }[] };
  assert.equal(record.source, got.source);
  assert.deepEqual(
    record.files.map((f) => f.file),
    REAL_SAMPLES.map((s) => s.file),
  );
  assert.ok(record.files.every((f) => f.from.length > 0 && f.licence.length > 0));
  assert.match(lines.at(-1)!, /4 files in .* \(from (debian|upstream)\)/);
  // The images are what they are said to be.
  const he = await sharp(got.paths["visium-he"]).metadata();
  const ihc = await sharp(got.paths["ihc-dab"]).metadata();
  assert.deepEqual([he.width, he.height, he.channels, ihc.width, ihc.height, ihc.channels], [600, 599, 3, 512, 512, 3]);

  assert.equal((await fetchRealSamples({ dir })).source, "cache");
  fs.writeFileSync(got.paths["ihc-dab"], "not a png");
  assert.equal(realSamplesPresent(dir), undefined);
  const again = await fetchRealSamples({ dir });
  assert.notEqual(again.source, "cache");
  assert.equal(sha256(fs.readFileSync(again.paths["ihc-dab"])), REAL_SAMPLES.find((s) => s.id === "ihc-dab")!.sha256);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes(".tmp")), [], "no partial files left");
});

test("pbip data samples --json prints the folder and every path", async () => {
  const dir = path.join(tmpDir(), "cli-samples");
  const cmd = commands.find((c) => c.name.join(" ") === "data samples")!;
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  try {
    assert.equal(await cmd.run(["--dir", dir, "--json"]), 0);
  } finally {
    console.log = log;
  }
  const r = JSON.parse(out.join("\n")) as { dir: string; paths: Record<string, string> };
  assert.equal(r.dir, dir);
  assert.deepEqual(Object.keys(r.paths).sort(), REAL_SAMPLES.map((s) => s.id).sort());
  for (const p of Object.values(r.paths)) assert.ok(fs.existsSync(p), p);
});

test("readVisiumSpots: spots in low-res pixels; a malformed line is named with its file and line", async () => {
  const samples = await fetchRealSamples();
  const { spots, radius } = readVisiumSpots(samples);
  assert.equal(spots.length, 4992);
  // The first line of the list: ACGCCTGACACGCGCT-1,0,0,0,1487,1480 at scale 0.051635113.
  assert.deepEqual(spots[0], { barcode: "ACGCCTGACACGCGCT-1", inTissue: false, x: 1480 * 0.051635113, y: 1487 * 0.051635113 });
  assert.ok(Math.abs(radius - (96.3607212981978 * 0.051635113) / 2) < 1e-12);
  // Every spot lies inside the 600x599 image.
  assert.ok(spots.every((s) => s.x > 0 && s.x < 600 && s.y > 0 && s.y < 599));

  const dir = tmpDir();
  const bad = path.join(dir, "positions.csv");
  fs.writeFileSync(bad, "A-1,0,0,0,10,10\nB-1,yes,0,1,10,20\n");
  assert.throws(
    () => readVisiumSpots({ ...samples, paths: { ...samples.paths, "visium-positions": bad } }),
    (e: Error) => e instanceof RealSamplesError && e.message.includes(`${bad}, line 2`) && e.message.includes("B-1,yes"),
  );
});

test("the upstream route (a local HTTP server standing in): gunzips and hash-checks; a file that differs, or a server that is down, stores nothing", async () => {
  const cached = await fetchRealSamples();
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? "/").slice(1));
    const file = path.join(cached.dir, name.replace(/\.gz$/, ""));
    if (!fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    const bytes = fs.readFileSync(file);
    res.writeHead(200).end(name.endsWith(".gz") ? zlib.gzipSync(bytes) : bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const specs: RealSampleSpec[] = REAL_SAMPLES.map((s) => ({ ...s, upstream: s.id === "visium-positions" ? { url: `${base}/${s.file}.gz`, gzip: true } : { url: `${base}/${s.file}` } }));
    const dir = path.join(tmpDir(), "upstream");
    const got = await fetchRealSamples({ dir, specs, sources: ["upstream"] });
    assert.equal(got.source, "upstream");
    for (const s of REAL_SAMPLES) assert.equal(sha256(fs.readFileSync(got.paths[s.id])), s.sha256, s.file);
    const record = JSON.parse(fs.readFileSync(path.join(dir, "samples.json"), "utf8")) as { files: { from: string }[] };
    assert.deepEqual(
      record.files.map((f) => f.from),
      specs.map((s) => s.upstream.url),
    );

    const bad = specs.map((s) => (s.id === "ihc-dab" ? { ...s, sha256: "0".repeat(64) } : s));
    const badDir = path.join(tmpDir(), "bad");
    await assert.rejects(
      fetchRealSamples({ dir: badDir, specs: bad, sources: ["upstream"] }),
      (e: Error) =>
        e instanceof RealSamplesError &&
        e.message.includes(`ihc-dab.png from ${base}/ihc-dab.png has SHA-256 ${REAL_SAMPLES.find((s) => s.id === "ihc-dab")!.sha256}, expected ${"0".repeat(64)}`) &&
        e.message.includes("By hand: put these files there"),
    );
    assert.equal(fs.existsSync(badDir), false, "nothing stored");
    const missing = specs.map((s) => (s.id === "ihc-dab" ? { ...s, upstream: { url: `${base}/nope.png` } } : s));
    await assert.rejects(fetchRealSamples({ dir: badDir, specs: missing, sources: ["upstream"] }), new RegExp(`upstream: GET ${base}/nope\\.png: HTTP 404`));
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  // A port nothing listens on (a server opened and closed before any request).
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const down = REAL_SAMPLES.map((s) => ({ ...s, upstream: { url: `http://127.0.0.1:${port}/${s.file}` } }));
  await assert.rejects(fetchRealSamples({ dir: path.join(tmpDir(), "down"), specs: down, sources: ["upstream"] }), /upstream: GET http:\/\/127\.0\.0\.1:\d+\/visium-he\.png: connect ECONNREFUSED/);
});
