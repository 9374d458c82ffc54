export * from "./display";
export {
  toRgbImage,
  toIdMask,
  toMapStack,
  resizeMapsBilinear,
  upscale,
  rgbToPng,
  decodeToRgb,
  isPngBuffer,
  pngDimensions,
  type ImageInput,
  type PixelArray,
  type IdMask,
  type MaskInput,
  type MapStack,
  type MapsInput,
} from "./raster";
export * from "./colormap";
export { FONT_FAMILY, escapeXml, isSvg, svgSize, installedFontFamilies, fontReport } from "./svg";
export * from "./charts";
export * from "./views";
export * from "./plotly";
export * from "./table";
export * from "./show";
export * from "./live";
