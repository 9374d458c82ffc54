import * as path from "node:path";
import { type Command, parse, datasetArg, str, flag, intArg, startBackend } from "../command";
import { openDataset } from "../../data/dataset";
import { openBank, loadClassNet, writePseudoMasks, PSEUDO_MASK_RECORD } from "../../pipeline";
import { ProgressBar } from "../../util/progress";
import { UsageError } from "../../util/errors";
import { assertRecordedOutputFolder, sha256File, writeJsonAtomic } from "../../util/fs";
import type { PbipConfig } from "../../config/profiles";
import { iouPerClass, meanIoU } from "../../eval/confusion";

const cam: Command = {
  name: ["cam"],
  summary: "write pseudo-masks (palette PNGs in the dataset's palette) for a split from a ClassNet checkpoint; resumable",
  usage: [
    "--checkpoint FILE  ClassNet checkpoint (best.safetensors or step-N.safetensors of a `pbip train` run)",
    "--bank DIR         the bank the checkpoint was trained with",
    "--data DIR --dataset NAME   dataset folder and manifest name",
    "--split NAME       train | val | test (default test)",
    "--resize N         resize patches of another size to N on load (default: they are an error)",
    "--out DIR          where the masks go: a new or empty folder, or one this command wrote (its valid masks are kept",
    "                   when pseudo-masks.json records the same checkpoint and settings; otherwise an error)",
    "--overwrite        make every mask again in a folder this command wrote with another checkpoint or settings",
    "--tta / --no-tta   test-time augmentation h-flip x intensity 0.9/1.0/1.1 (default: the checkpoint's config)",
    "--merge softmax|mean  subclass merge: softmax-weighted (release) or mean (paper, eq. 2) (default: config)",
    "--gate gt|pred     gate CAM channels by ground-truth labels or predicted probabilities (default: config)",
    "--background MODE  none (release) | power | white | power-white (default: config)",
    "--backend NAME     compute backend",
  ].join("\n"),
  async run(argv) {
    const p = parse("cam", argv, {
      checkpoint: { type: "string" },
      bank: { type: "string" },
      data: { type: "string" },
      dataset: { type: "string" },
      split: { type: "string" },
      out: { type: "string" },
      tta: { type: "boolean" },
      "no-tta": { type: "boolean" },
      overwrite: { type: "boolean" },
      merge: { type: "string" },
      gate: { type: "string" },
      background: { type: "string" },
      resize: { type: "string" },
      backend: { type: "string" },
    });
    const ckpt = str(p, "checkpoint");
    const bankDir = str(p, "bank");
    const data = str(p, "data");
    const out = str(p, "out");
    if (!ckpt || !bankDir || !data || !out) throw new UsageError("pbip cam: --checkpoint, --bank, --data and --out are required (see --help)");
    if (flag(p, "tta") && flag(p, "no-tta")) throw new UsageError("pbip cam: --tta and --no-tta contradict each other; give one");
    // Settings are checked before any work.
    const merge = str(p, "merge");
    if (merge !== undefined && merge !== "softmax" && merge !== "mean") throw new UsageError(`pbip cam: --merge must be softmax or mean, got "${merge}"`);
    const gate = str(p, "gate");
    if (gate !== undefined && gate !== "gt" && gate !== "pred") throw new UsageError(`pbip cam: --gate must be gt or pred, got "${gate}"`);
    const bg = str(p, "background") as PbipConfig["cam"]["background"]["mode"] | undefined;
    if (bg !== undefined && !["none", "power", "white", "power-white"].includes(bg)) throw new UsageError(`pbip cam: --background must be none, power, white or power-white, got "${bg}"`);
    assertRecordedOutputFolder(path.resolve(out), PSEUDO_MASK_RECORD, "pseudo-masks"); // before any work
    await startBackend(str(p, "backend"));
    const dataset = datasetArg("cam", data, str(p, "dataset"));
    const ds = openDataset(data, { dataset, resize: intArg("cam", "resize", str(p, "resize"), 16) });
    const splitName = (str(p, "split") ?? "test") as "train" | "val" | "test";
    const split = ds.split(splitName);
    const bank = openBank(bankDir);
    const { net, config } = await loadClassNet(ckpt, bank, ds.spec);
    const camCfg: PbipConfig["cam"] = JSON.parse(JSON.stringify(config.cam));
    if (flag(p, "tta")) camCfg.tta = { hflip: true, intensities: [0.9, 1.0, 1.1] };
    if (flag(p, "no-tta")) camCfg.tta = { hflip: false, intensities: [1] };
    if (merge) camCfg.merge = merge;
    if (gate) camCfg.gate = gate;
    if (bg) camCfg.background.mode = bg;
    const bar = new ProgressBar(`cam ${splitName}`, split.samples.length);
    try {
      const r = await writePseudoMasks({
        net,
        split,
        cam: camCfg,
        inputSize: config.data.inputSize,
        outDir: path.resolve(out),
        batchSize: config.train.batchSize,
        source: `sha256:${sha256File(ckpt).slice(0, 16)}`,
        overwrite: flag(p, "overwrite"),
        onProgress: (d) => bar.update(d),
      });
      console.log(`${r.written} masks written, ${r.skipped} already there, in ${r.outDir}`);
      if (r.matrix) {
        const fg = ds.spec.classes.map((_, i) => i);
        const iou = iouPerClass(r.matrix);
        const miou = meanIoU(r.matrix, fg);
        console.log(`mIoU ${(100 * miou).toFixed(2)}% (ground-truth background counted); ${ds.spec.codes.map((c, i) => `${c} ${(100 * iou[i]!).toFixed(1)}`).join(", ")}`);
        writeJsonAtomic(path.join(r.outDir, "..", `${path.basename(r.outDir)}.metrics.json`), {
          checkpoint: path.resolve(ckpt),
          split: splitName,
          convention: "count-bg",
          miou,
          iou: Object.fromEntries(ds.spec.codes.map((c, i) => [c, iou[i]])),
          cam: camCfg,
        });
      }
    } finally {
      net.dispose();
    }
    return 0;
  },
};

export const commands: Command[] = [cam];
