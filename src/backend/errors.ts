// Errors of backend choice and set-up (imported by the chooser and by each backend, so no module imports its own
// chooser back).

/** A bad backend name (argument or KARLO_BACKEND): the user's to fix. */
export class BackendChoiceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendChoiceError';
  }
}

/** A backend that cannot run here, with the reason (and, where known, the fix). */
export class BackendUnavailableError extends Error {
  constructor(readonly backend: string, reason: string) {
    super(`backend "${backend}" is unavailable: ${reason}`);
    this.name = 'BackendUnavailableError';
  }
}
