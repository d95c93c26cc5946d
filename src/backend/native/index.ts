// The `native` backend: tfjs-backend-cpu kernels with the heavy ones replaced by oneDNN/OpenBLAS calls.
// Placeholder until the addon lands (issue 3): it reports itself unavailable.
import { BackendUnavailableError } from '../index.js';

export async function registerNativeBackend(): Promise<void> {
  throw new BackendUnavailableError('native', 'not built in this version yet');
}
