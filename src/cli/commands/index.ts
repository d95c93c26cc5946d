// Every `karlo` subcommand, one module each (a yargs CommandModule as the default export).
import type { CommandModule } from 'yargs';
import parity from './parity.js';
import inspect from './inspect.js';
import bench from './bench.js';
import tokenize from './tokenize.js';
import convert from './convert.js';
import generate from './generate.js';
import batch from './batch.js';
import worker from './worker.js';
import evalCommand from './eval.js';
import trace from './trace.js';
import attention from './attention.js';
import train from './train.js';
import vary from './vary.js';
import interpolate from './interpolate.js';

export const COMMANDS: CommandModule<any, any>[] = [
  parity,
  inspect,
  bench,
  tokenize,
  convert,
  generate,
  batch,
  worker,
  evalCommand,
  trace,
  attention,
  train,
  vary,
  interpolate,
];
