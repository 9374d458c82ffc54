/**
 * A progress bar for long CLI jobs: redraws in place on a TTY, prints a line every
 * 10% otherwise (CI logs). Shows count, rate, ETA and a caller-supplied status.
 */
export class ProgressBar {
  private start = Date.now();
  private lastPct = -1;
  private done = 0;
  constructor(
    readonly label: string,
    readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  tick(n = 1, status = ""): void {
    this.update(this.done + n, status);
  }

  update(done: number, status = ""): void {
    this.done = done;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const secs = (Date.now() - this.start) / 1000;
    const eta = done > 0 ? (secs / done) * (this.total - done) : NaN;
    const line = `${this.label} ${done}/${this.total} ${(frac * 100).toFixed(0).padStart(3)}% ${formatDuration(secs)} elapsed${
      Number.isFinite(eta) && done < this.total ? `, ETA ${formatDuration(eta)}` : ""
    }${status ? `  ${status}` : ""}`;
    if (this.stream.isTTY) {
      const width = 24;
      const filled = Math.round(frac * width);
      this.stream.write(`\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${line}\x1b[K`);
      if (done >= this.total) this.stream.write("\n");
    } else {
      const pct = Math.floor(frac * 10);
      if (pct !== this.lastPct || done >= this.total) {
        this.lastPct = pct;
        this.stream.write(line + "\n");
      }
    }
  }
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s - m * 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}
