// How well do the bundled stand-in encoder's prototypes segment the TRAINING patches
// at each input size and output stride? An investigation, not a test:
//
//   npx tsx bench/encoder-view.ts [112/32,112/16,224/32,224/16] [--data data/synthetic] [--limit 300]
//   npx tsx bench/encoder-view.ts 112/32/block_12_add,112/32/block_16_project
//
// For each `size/stride[/layer]`: the MobileNetV2 stand-in at that input side (patches
// are loaded at the notebook profile's 112 px and resized by the encoder), output
// stride and feature layer (default out_relu), a bank built with the notebook profile's bank settings (features cached),
// then `prototypeSegmentation` (label-gated nearest prototype on the dense map, white
// pixels as background) scored against the synthetic set's train-mask/ ground truth.
// The validation and test splits are not touched, so a configuration chosen from
// this does not peek at the numbers PBIP is judged by.
import { parseArgs } from "node:util";
import { initBackend } from "../src/runtime";
import { openDataset, syntheticManifest } from "../src/data";
import { MobileNetV2Encoder } from "../src/encoders";
import { buildBank } from "../src/bank";
import { prototypeSegmentation } from "../src/bank/diagnostics";
import { NOTEBOOK } from "../src/config/profiles";

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { data: { type: "string", default: "data/synthetic" }, limit: { type: "string", default: "300" } } });
  await initBackend({ backend: "wasm" });
  const ds = openDataset(values.data!, { dataset: syntheticManifest() });
  const train = ds.split("train");
  if (!train.samples.some((s) => s.maskPath)) throw new Error(`${values.data}: the train split has no train-mask/ ground truth (pbip data synth writes it)`);
  const cases = (positionals[0] ?? "112/32,112/16,224/32,224/16").split(",");
  for (const c of cases) {
    const [sizeS, osS, layer] = c.split("/");
    const size = Number(sizeS);
    const os = Number(osS);
    if (!(size > 0) || (os !== 16 && os !== 32)) throw new Error(`case "${c}": expected <input size>/<16|32>[/<layer>]`);
    const t = Date.now();
    const enc = await MobileNetV2Encoder.create({ preprocessing: { inputSize: size }, outputStride: os, ...(layer ? { featureLayer: layer } : {}) });
    try {
      const { bank } = await buildBank({ split: train, encoder: enc, config: NOTEBOOK.bank, cache: true });
      const s = await prototypeSegmentation(enc, bank, train, { inputSize: NOTEBOOK.data.inputSize, whiteGrey: NOTEBOOK.cam.background.whiteGrey, limit: Number(values.limit) });
      const iou = s.iou.map((v) => (100 * v).toFixed(1)).join(" ");
      console.log(`encoder ${size} px, output stride ${os}${layer ? `, layer ${layer} (d = ${enc.identity.dim})` : ""}: ${s.denseGrid}x${s.denseGrid} grid, train mIoU ${(100 * s.miou).toFixed(2)}% (IoU per id ${iou}; ${s.patches} patches, ${((Date.now() - t) / 1000).toFixed(0)} s)`);
    } finally {
      enc.dispose();
    }
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
