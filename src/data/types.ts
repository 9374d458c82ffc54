import type * as tf from "@tensorflow/tfjs";

/** An 8-bit colour (palette entry). */
export type RGB = [number, number, number];

/** How image-level labels are written: `luad` `-[1 0 0 1].png`, `bcss` `[1101].png`, `csv` a labels.csv. */
export type LabelFormat = "luad" | "bcss" | "csv";

/**
 * What pbip knows about a dataset: read from `data-manifests/<name>.json`.
 * Images are RGB everywhere in pbip; note that the authors' release reads
 * patches with OpenCV and so feeds BGR to its network without converting.
 */
export interface DatasetSpec {
  /** Manifest name, e.g. `luad-histoseg`, `bcss-wsss`, `synthetic`. */
  name: string;
  /** Foreground class names in label order (N of them). */
  classes: string[];
  /** Short class codes in label order, e.g. TE, NEC, LYM, TAS. */
  codes: string[];
  /** Palette entries indexed by mask id: classes first, then background. */
  palette: RGB[];
  /** Mask id of background (N for LUAD-HistoSeg and BCSS-WSSS). */
  backgroundId: number;
  /** How image-level labels are written in file names. */
  labelFormat: LabelFormat;
  /** Patch side in pixels. */
  patchSize: number;
  /** Normalisation statistics (RGB, [0,1] scale). */
  normalization: { mean: RGB; std: RGB };
}

/** One patch on disk. */
export interface Sample {
  /** File name without folder, unique within a split. */
  id: string;
  imagePath: string;
  /** Multi-hot image-level label over the N classes (train: from the file name; val/test: from the mask). */
  label: number[];
  /** Palette-mode PNG mask, for val/test. */
  maskPath?: string;
}

/** The splits of a dataset (`valid` folders are read as `val`). */
export type SplitName = "train" | "val" | "test";

/** The samples of one split of a dataset folder, as the readers open it. */
export interface Split {
  dataset: DatasetSpec;
  name: SplitName;
  /** The split's folder (e.g. `<dataset>/train` or `<dataset>/valid`). */
  root: string;
  samples: Sample[];
  /** Layout it was read with (`luad`/`bcss` published layouts or the generic `csv` one). */
  layout?: LabelFormat;
  /** When set, patches of another size are resized to this side on load; otherwise they are an error. */
  resize?: number;
  /** True when every sample has a mask. */
  hasMasks?: boolean;
}

/** A batch as the trainer and CAM code consume it. The caller disposes the tensors. */
export interface Batch {
  /** RGB in [0, 1], NHWC float32 (not normalised: models normalise inside). */
  images: tf.Tensor4D;
  /** Multi-hot [B, N] float32. */
  labels: tf.Tensor2D;
  /** Class-id masks [B, H, W] int32 (background = spec.backgroundId), when the split has masks. */
  masks?: tf.Tensor3D;
  /** Sample ids in batch order. */
  ids: string[];
}
