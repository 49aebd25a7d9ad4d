// Start-up errors. Everything that goes wrong later, in the event stream, is counted and logged instead.

/** A bad flag, variable or config file value. The CLI prints the message and exits with code 2. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
