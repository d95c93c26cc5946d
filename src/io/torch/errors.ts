/** Every failure of the PyTorch checkpoint reader: names the file (and the record, key or tensor) at fault. */
export class TorchFileError extends Error {
  readonly file: string;
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'TorchFileError';
    this.file = file;
  }
}
