/** An error about one file: the message always names the file and the problem. */
export class FileError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = "FileError";
  }
}

/** A user-facing configuration or usage error (the CLI prints its message without a stack). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
