/**
 * The notebook runner's hook (src/nbrun/run.ts loads this module by path):
 * `injectPlotly(html)` puts plotly.js, from the installed plotly.js-dist-min,
 * into an exported notebook page's <head> when the page has pbip plotly figures,
 * so they draw offline even where the output that carried the library was
 * cleared. Idempotent; pages without figures come back unchanged.
 */
import { injectPlotlyIntoHtmlPage } from "./plotly";

/** See {@link injectPlotlyIntoHtmlPage}. */
export function injectPlotly(html: string): string {
  return injectPlotlyIntoHtmlPage(html);
}
