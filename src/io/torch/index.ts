// PyTorch checkpoint reader (zip archives, Lightning .ckpt, TorchScript), without Python. See checkpoint.ts.
export { TorchCheckpoint, torchSource, keyName, type TorchOpenOptions } from './checkpoint.js';
export { TorchFileError } from './errors.js';
export { TorchTensor, TorchStorage, type RawTensor, DTYPE_TORCH_NAME } from './tensor.js';
export { PyDict, PyGlobal, PyObject, PySet, isTuple, deniedGlobal } from './pickle.js';
export { ZipArchive, type ZipEntry } from './zip.js';
export { saveTorchStateDict, saveLegacyStateDict, writeZip, PickleWriter, pickleStateDict, type TensorToSave, type ZipRecord } from './writer.js';
