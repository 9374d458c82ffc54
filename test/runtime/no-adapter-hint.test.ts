/**
 * The message when Dawn finds no WebGPU adapter: it tells the two cases apart (no
 * Vulkan driver named at all; a named driver that gave no device, as NVIDIA's does
 * without glvnd) and gives the lavapipe advice only outside the GPU bundle.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { noAdapterHint } from "../../src/runtime/backend";

test("no-adapter hint: no driver named vs a named driver that gave no device", () => {
  const none = noAdapterHint({});
  assert.match(none, /no Vulkan driver is named/);
  assert.match(none, /npm run setup/);

  const nvidia = noAdapterHint({ VK_ICD_FILENAMES: "/usr/share/vulkan/icd.d/nvidia_icd.json" });
  assert.match(nvidia, /was given \/usr\/share\/vulkan\/icd\.d\/nvidia_icd\.json but got no device/);
  assert.match(nvidia, /VK_LOADER_DEBUG=error/);
  assert.match(nvidia, /libGLdispatch\.so\.0/);

  assert.match(noAdapterHint({ VK_DRIVER_FILES: "/x/lvp_icd.json" }), /was given \/x\/lvp_icd\.json/);
  const bundle = noAdapterHint({ VK_ICD_FILENAMES: "/a.json", PBIP_GPU_BUNDLE: "0.1.0-abc" });
  assert.doesNotMatch(bundle, /npm run setup/, "the bundle has no npm");
});
