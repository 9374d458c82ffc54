/**
 * Worker-thread entry of the synthetic generator: runs {@link runPatchTask} for
 * each task message and posts the result back (pixel buffers transferred).
 */
import { parentPort, workerData } from "node:worker_threads";
import { runPatchTask, type PatchTask } from "./task";

const root = (workerData as { root: string }).root;
parentPort!.on("message", (t: PatchTask) => {
  try {
    const r = runPatchTask(t, root);
    const transfer: ArrayBuffer[] = [];
    if (r.rgb) transfer.push(r.rgb.buffer as ArrayBuffer);
    if (r.mask) transfer.push(r.mask.buffer as ArrayBuffer);
    parentPort!.postMessage({ ok: true, result: r }, transfer);
  } catch (e) {
    parentPort!.postMessage({ ok: false, error: (e as Error).stack ?? String(e), task: t.index, split: t.split });
  }
});
