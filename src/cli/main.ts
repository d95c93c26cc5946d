// The `karlo` command line (yargs). Each command lives in src/cli/commands/<name>.ts and is listed in
// commands/index.ts. Expected errors print one line and exit 2; internal errors print "internal error: ..." and exit 1
// (stack trace under --verbose); a closed stdout (`karlo ... | head -1`) ends quietly with exit 0.
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { COMMANDS } from './commands/index.js';
import { UsageError, describeError, oneLine } from './errors.js';
import { BACKEND_NAMES } from '../backend/index.js';

// Commands that run no model: --backend is refused there instead of silently ignored.
const NO_BACKEND = new Set(['inspect', 'tokenize', 'convert']);

const rawArgs = hideBin(process.argv);
const verbose = rawArgs.includes('--verbose');

// A reader that goes away (`karlo tokenize a | head -1`) is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
}

function fail(e: unknown): never {
  const { lines, code } = describeError(e, verbose);
  for (const l of lines) process.stderr.write(`${l}\n`);
  process.exit(code);
}

/**
 * `--` ends the options: everything after it is a positional argument even when it starts with '-'
 * (`karlo tokenize -- "-a prompt"`). yargs would put those into `_`, out of reach of the commands' positionals,
 * so they travel as placeholders that yargs cannot take for options and are restored after parsing.
 */
const PLACEHOLDER = '\u0000karlo-arg-';
const dd = rawArgs.indexOf('--');
const literal = dd >= 0 ? rawArgs.slice(dd + 1) : [];
const args = dd >= 0 ? [...rawArgs.slice(0, dd), ...literal.map((_, i) => `${PLACEHOLDER}${i}`)] : rawArgs;
const restore = (v: unknown): unknown => {
  if (typeof v === 'string' && v.startsWith(PLACEHOLDER)) return literal[Number(v.slice(PLACEHOLDER.length))];
  if (Array.isArray(v)) return v.map(restore);
  return v;
};
const restoreText = (s: string) => s.replace(new RegExp(`${PLACEHOLDER}(\\d+)`, 'g'), (_, i) => literal[Number(i)]);

/** Levenshtein distance (for "did you mean"). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

/** The options a command knows (its builder run on a throwaway parser), plus the global ones. */
function optionsOf(commandName: string | undefined): string[] {
  const names = new Set(['backend', 'verbose', 'help', 'version']);
  const c = COMMANDS.find((x) => String(x.command ?? '').split(' ')[0] === commandName);
  if (c && typeof c.builder === 'function') {
    try {
      const y = (c.builder as (y: Argv) => Argv)(yargs([]));
      for (const k of Object.keys((y as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions().key)) names.add(k);
    } catch {
      /* suggestions are best effort */
    }
  } else if (c && c.builder && typeof c.builder === 'object') {
    for (const k of Object.keys(c.builder)) names.add(k);
  }
  return [...names];
}

/** "Unknown argument: seeed" → the same message with "did you mean --seed?" for each close match. */
function withSuggestions(msg: string): string {
  const m = /^Unknown arguments?: (.*)$/.exec(msg);
  if (!m) return msg;
  const command = args.find((a) => !a.startsWith('-'));
  if (command && m[1].split(', ')[0] === command && !isCommand(command)) return `unknown command "${oneLine(command)}" (karlo --help lists them)`;
  const parts = m[1].split(', ').map((u) => suggest(command, u));
  return `unknown argument${parts.length > 1 ? 's' : ''}: ${parts.join(', ')}`;
}

function isCommand(name: string): boolean {
  return COMMANDS.some((c) => String(c.command ?? '').split(' ')[0] === name);
}

/** An unknown option or argument as given, with "(did you mean --x?)" when a known option is close. */
function suggest(command: string | undefined, u: string): string {
  const known = optionsOf(command).filter((k) => k.length > 1);
  const bare = u.replace(/^-+/, '');
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dist = distance(bare, k);
    if (dist < bestD) { bestD = dist; best = k; }
  }
  const looksLikeOption = u.startsWith('-') || args.some((a) => a === `--${bare}` || a.startsWith(`--${bare}=`) || a === `-${bare}`);
  const label = oneLine(looksLikeOption ? (u.startsWith('-') ? u : `${bare.length > 1 ? '--' : '-'}${bare}`) : u);
  return best && bestD <= Math.max(1, Math.floor(bare.length / 3)) ? `${label} (did you mean --${best}?)` : label;
}

// Commands that pass unknown options on (bench forwards them to the benchmark scripts).
const PASS_THROUGH = new Set(['bench']);

/**
 * Unknown options are refused before yargs parses: yargs would otherwise let `--jsn a` swallow the prompt and
 * report a missing positional instead of the typo.
 */
function checkOptions(): void {
  const command = args.find((a) => !a.startsWith('-'));
  if (!command || !isCommand(command) || PASS_THROUGH.has(command)) return;
  const known = new Set(optionsOf(command));
  const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const bad: string[] = [];
  for (const a of args) {
    if (a.startsWith(PLACEHOLDER) || !/^--?[A-Za-z]/.test(a)) continue;
    const name = a.replace(/^-+/, '').split('=')[0];
    if (!a.startsWith('--')) continue; // short flags: yargs checks them
    const base = name.startsWith('no-') ? name.slice(3) : name;
    if (known.has(name) || known.has(base) || [...known].some((k) => camel(k) === name || camel(k) === base)) continue;
    bad.push(suggest(command, `--${name}`));
  }
  if (bad.length) throw new UsageError(`unknown option${bad.length > 1 ? 's' : ''} for \`karlo ${command}\`: ${bad.join(', ')}`);
}

const cli = yargs(args)
  .scriptName('karlo')
  .usage('$0 <command> [options]\n\nKarlo v1 alpha (unCLIP) text-to-image on TensorFlow.js')
  .option('backend', {
    type: 'string',
    choices: BACKEND_NAMES,
    describe: 'tfjs backend (default: $KARLO_BACKEND or auto)',
    global: true,
  })
  .option('verbose', { type: 'boolean', describe: 'more detail: backend choice, stack traces of internal errors', global: true })
  .middleware((argv) => {
    for (const k of Object.keys(argv)) argv[k] = restore(argv[k]);
    const command = String(argv._[0] ?? '');
    if (argv.backend !== undefined && !(BACKEND_NAMES as unknown[]).includes(argv.backend)) {
      throw new UsageError(`--backend must be one of ${BACKEND_NAMES.join(', ')}; got ${JSON.stringify(argv.backend)}`);
    }
    if (argv.backend !== undefined && NO_BACKEND.has(command)) {
      throw new UsageError(`--backend does not apply to \`karlo ${command}\` (it runs no model)`);
    }
  }, true)
  .wrap(process.stdout.isTTY ? Math.min(120, process.stdout.columns || 80) : null)
  .strict()
  .recommendCommands()
  .help()
  .fail((msg, err) => {
    if (err) throw err;
    const choice = /^Invalid values:\s*Argument: ([\w-]+), Given: (.*), Choices: (.*)$/s.exec(msg);
    if (choice) throw new UsageError(`--${choice[1]} must be one of ${choice[3].replace(/"/g, '')}; got ${restoreText(choice[2])}`);
    throw new UsageError(withSuggestions(restoreText(msg)).replace(/^Did you mean/, 'unknown command; did you mean'));
  });
for (const c of COMMANDS) cli.command(c as never);

try {
  if (args.length === 0) {
    // Bare `karlo`: the help, not an error.
    cli.showHelp('log');
    process.exit(0);
  }
  checkOptions();
  const argv = await cli.parseAsync();
  if (argv._.length === 0 && !argv.help) throw new UsageError('name a command (karlo --help lists them)');
  if (argv._.length > 0 && !COMMANDS.some((c) => String(c.command ?? '').split(' ')[0] === argv._[0])) {
    throw new UsageError(`unknown command "${oneLine(String(argv._[0]))}" (karlo --help lists them)`);
  }
} catch (e) {
  fail(e);
}
