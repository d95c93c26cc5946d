// How the CLI reports failures. Expected errors (bad arguments, bad or missing files, a full disk: things the user
// can fix) print one line `karlo: <message>` and exit 2. Anything else is our bug: `karlo: internal error: <message>`
// and exit 1, with the stack trace only under --verbose.

/** An error the user can fix (bad argument, missing file): printed as one line, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Error classes (by name, so the CLI needs not import every reader) whose messages name the file, tensor or
 * argument at fault: the user's input, not our bug.
 */
const EXPECTED_NAMES = new Set([
  'UsageError', 'ModelFolderError', 'BackendChoiceError', 'SafetensorsError', 'TorchFileError', 'InspectError', 'BackendUnavailableError',
  'PickleTruncatedError', 'PngError', 'ImageDecodeError', 'ImageError', 'HubError', 'FileRefusedError', 'TokenizerError',
  'ConfigError', 'MemoryEstimateError', 'InputError',
]);

/** System errors about the user's files or machine (missing, not permitted, read-only, full disk, ...). */
const EXPECTED_CODES = new Set([
  'ENOENT', 'EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'EISDIR', 'ENOTDIR', 'EEXIST', 'ENOTEMPTY', 'EMFILE',
  'ENFILE', 'EFBIG', 'ENAMETOOLONG', 'ELOOP', 'EXDEV', 'EBUSY', 'ETXTBSY', 'ENXIO', 'ENODEV', 'EIO',
  'ERR_FS_FILE_TOO_LARGE', 'ERR_STRING_TOO_LONG', 'ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'ECONNRESET',
]);

/** True when `e` is an error the user can fix (printed as one line, exit 2). */
export function isExpectedError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (EXPECTED_NAMES.has(e.name) || EXPECTED_NAMES.has(e.constructor?.name)) return true;
  if ((e as { expected?: unknown }).expected === true) return true;
  const code = (e as NodeJS.ErrnoException).code;
  return typeof code === 'string' && EXPECTED_CODES.has(code);
}

/** A message as one printable line: control characters escaped, line breaks folded. */
export function oneLine(message: string): string {
  return message
    .replace(/\s*[\r\n]+\s*/g, ' ')
    .replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(/[\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => `\\u{${c.charCodeAt(0).toString(16)}}`)
    .trim();
}

/** The lines to print for an error and the exit code: 2 for expected errors, 1 for internal ones. */
export function describeError(e: unknown, verbose = false): { lines: string[]; code: 1 | 2 } {
  const err = e instanceof Error ? e : new Error(String(e));
  if (isExpectedError(err)) {
    return { lines: [`karlo: ${oneLine(err.message)}`], code: 2 };
  }
  const lines = [`karlo: internal error: ${oneLine(err.message || err.name)}`];
  lines.push(verbose && err.stack ? err.stack : 'karlo: (this is a bug in karlo-tfjs; run again with --verbose for the stack trace and report it)');
  return { lines, code: 1 };
}
