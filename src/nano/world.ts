// The karlo-nano synthetic world: one to three flat shapes (circle, square, triangle, star, ring) in 8 named
// colours on one of 6 background colours, described by a caption in varied English. Everything is a pure function
// of (seed, split, index): the same seed gives the same scenes, captions and pixels on every machine.
//
// Geometry is in image fractions ([0, 1] across both axes, y down); `r` is a shape's circumradius (the radius of
// the smallest circle about its centre that holds it), so a "medium square" and a "medium star" span the same
// circle. Rendering (render.ts) is exact coverage by supersampling, so images at 32x32 and at 128x128 are the same
// scene, each anti-aliased at its own size.

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'ring'] as const;
export type ShapeName = (typeof SHAPES)[number];

export type RGB = readonly [number, number, number];

/** The 8 shape colours (what the analyser recognises). */
export const COLOURS: Record<string, RGB> = {
  red: [220, 35, 35],
  orange: [245, 140, 25],
  yellow: [245, 225, 40],
  green: [45, 185, 65],
  blue: [40, 90, 235],
  purple: [145, 55, 195],
  pink: [250, 130, 200],
  white: [245, 245, 245],
};
export type ColourName = keyof typeof COLOURS & string;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

/** The 6 background colours (named as a caption says them; "blue"/"green"/"white" are darker/other tones than the shape colours of that name). */
export const BACKGROUNDS: Record<string, RGB> = {
  black: [12, 12, 14],
  white: [250, 250, 250],
  gray: [125, 125, 128],
  blue: [22, 40, 110],
  green: [20, 85, 40],
  brown: [105, 65, 30],
};
export type BackgroundName = keyof typeof BACKGROUNDS & string;
export const BACKGROUND_NAMES = Object.keys(BACKGROUNDS) as BackgroundName[];

export type SizeName = 'small' | 'medium' | 'large';
/** Circumradius ranges (image fractions) per size word. */
export const SIZE_RANGES: Record<SizeName, readonly [number, number]> = {
  small: [0.13, 0.16],
  medium: [0.18, 0.23],
  large: [0.26, 0.32],
};
/** Inner/outer radius of rings and stars. */
export const RING_INNER = 0.55;
export const STAR_INNER = 0.45;

export interface ShapeSpec {
  shape: ShapeName;
  colour: ColourName;
  size: SizeName;
  /** Centre (image fractions). */
  cx: number;
  cy: number;
  /** Circumradius (image fraction). */
  r: number;
  /** Rotation in radians (squares and triangles within ±0.35, stars and circles any). */
  angle: number;
}

export interface Scene {
  background: BackgroundName;
  shapes: ShapeSpec[];
  caption: string;
}

/** What a caption says (and what the analyser measures): the background, the shapes as (colour, shape) pairs. */
export interface SceneContent {
  background?: BackgroundName;
  shapes: { colour: ColourName; shape: ShapeName }[];
}

// ---------------- deterministic randomness ----------------

/** 32-bit FNV-1a of a string. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: a small, well-mixed 32-bit generator; uniform floats in [0, 1). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  range(a: number, b: number): number {
    return a + (b - a) * this.next();
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ---------------- held-out split ----------------

/** A (colour, shape, background) combination: the unit of the held-out split. */
export function tripleKey(colour: ColourName, shape: ShapeName, background: BackgroundName): string {
  return `${colour} ${shape} on ${background}`;
}

/** Every allowed (colour, shape, background) triple: a shape never has its background's colour name. */
export function allTriples(): string[] {
  const out: string[] = [];
  for (const c of COLOUR_NAMES) for (const s of SHAPES) for (const b of BACKGROUND_NAMES) if (allowedOn(c, b)) out.push(tripleKey(c, s, b));
  return out;
}

export function allowedOn(colour: ColourName, background: BackgroundName): boolean {
  return colour !== background;
}

/**
 * The held-out triples for a seed: about `fraction` of all triples, chosen so that every colour, every shape and
 * every background still appears in training with others (each held-out triple's colour, shape and background
 * are each in at least one training triple). Training scenes never contain a held-out triple; held-out captions
 * always contain one, so no held-out caption can ever occur in training.
 */
export function heldOutTriples(seed: number, fraction = 0.12): Set<string> {
  const all = allTriples();
  const rng = new Rng(hash32(`heldout:${seed}`));
  const order = all.map((k) => ({ k, u: rng.next() })).sort((a, b) => a.u - b.u).map((e) => e.k);
  const want = Math.round(all.length * fraction);
  const held = new Set<string>();
  for (const k of order) {
    if (held.size >= want) break;
    held.add(k);
  }
  return held;
}

// ---------------- scenes ----------------

export type Split = 'train' | 'heldout';

/** Scene kinds by shape count: [weight of 1, 2, 3]. */
const COUNT_WEIGHTS = [0.5, 0.35, 0.15];

function pickCount(rng: Rng): number {
  const u = rng.next();
  return u < COUNT_WEIGHTS[0] ? 1 : u < COUNT_WEIGHTS[0] + COUNT_WEIGHTS[1] ? 2 : 3;
}

function angleFor(shape: ShapeName, rng: Rng): number {
  if (shape === 'square' || shape === 'triangle') return rng.range(-0.35, 0.35);
  if (shape === 'star') return rng.range(-0.6, 0.6);
  return 0;
}

/** Places shapes of the given radii without overlap (a gap of 0.05 between circumcircles), inside the frame. */
function place(rng: Rng, radii: number[], relation?: 'left' | 'above'): { cx: number; cy: number }[] | null {
  const margin = 0.03;
  for (let attempt = 0; attempt < 200; attempt++) {
    const pts = radii.map((r) => ({ cx: rng.range(margin + r, 1 - margin - r), cy: rng.range(margin + r, 1 - margin - r) }));
    let ok = true;
    for (let i = 0; i < pts.length && ok; i++) {
      for (let j = i + 1; j < pts.length && ok; j++) {
        const d = Math.hypot(pts[i].cx - pts[j].cx, pts[i].cy - pts[j].cy);
        if (d < radii[i] + radii[j] + 0.05) ok = false;
      }
    }
    if (ok && relation) {
      // The relation must be plain to see: the separation along its axis clearly dominates.
      const dx = pts[1].cx - pts[0].cx, dy = pts[1].cy - pts[0].cy;
      if (relation === 'left' && !(dx > 0.25 && Math.abs(dx) > 1.5 * Math.abs(dy))) ok = false;
      if (relation === 'above' && !(dy > 0.25 && Math.abs(dy) > 1.5 * Math.abs(dx))) ok = false;
    }
    if (ok) return pts;
  }
  return null;
}

function sizeRadius(rng: Rng, size: SizeName): number {
  const [a, b] = SIZE_RANGES[size];
  return rng.range(a, b);
}

/**
 * Scene `index` of `split` for `seed`. Training scenes avoid every held-out triple; held-out scenes contain at
 * least one (the first shape's). `count` forces the number of shapes.
 */
export function makeScene(seed: number, split: Split, index: number, opts: { count?: number; held?: Set<string> } = {}): Scene {
  const held = opts.held ?? heldOutTriples(seed);
  const heldList = [...held].sort();
  const rng = new Rng(hash32(`${split}:${seed}:${index}`));
  for (let attempt = 0; ; attempt++) {
    if (attempt > 1000) throw new Error(`makeScene: no valid scene for ${split} ${index}`);
    const count = opts.count ?? pickCount(rng);
    let background: BackgroundName;
    let first: { colour: ColourName; shape: ShapeName } | null = null;
    if (split === 'heldout') {
      const [c, s, , b] = rng.pick(heldList).split(' ');
      background = b as BackgroundName;
      first = { colour: c as ColourName, shape: s as ShapeName };
    } else {
      background = rng.pick(BACKGROUND_NAMES);
    }
    const same = count > 1 && rng.chance(0.45); // "two red stars": identical colour and shape
    const kinds: { colour: ColourName; shape: ShapeName }[] = [];
    for (let i = 0; i < count; i++) {
      if (i === 0 && first) kinds.push(first);
      else if (same && i > 0) kinds.push(kinds[0]);
      else kinds.push({ colour: rng.pick(COLOUR_NAMES.filter((c) => allowedOn(c, background))), shape: rng.pick(SHAPES) });
    }
    if (kinds.some((k) => !allowedOn(k.colour, background))) continue;
    const heldHits = kinds.filter((k) => held.has(tripleKey(k.colour, k.shape, background))).length;
    if (split === 'train' && heldHits > 0) continue;
    if (split === 'heldout' && heldHits === 0) continue;
    if (!same && count > 1 && new Set(kinds.map((k) => `${k.colour} ${k.shape}`)).size < count) continue;
    const sizes: SizeName[] = kinds.map(() => (count === 1 ? rng.pick(['small', 'medium', 'large'] as const) : count === 2 ? rng.pick(['small', 'medium'] as const) : 'small'));
    if (same) sizes.fill(sizes[0]);
    const radii = sizes.map((s) => sizeRadius(rng, s));
    const relation = count === 2 && !same && rng.chance(0.5) ? rng.pick(['left', 'above'] as const) : undefined;
    const pts = place(rng, radii, relation);
    if (!pts) continue;
    const shapes: ShapeSpec[] = kinds.map((k, i) => ({ ...k, size: sizes[i], cx: pts[i].cx, cy: pts[i].cy, r: radii[i], angle: angleFor(k.shape, rng) }));
    const caption = captionFor(rng, background, shapes, { same, relation });
    return { background, shapes, caption };
  }
}

// ---------------- captions ----------------

const NUMBER_WORDS = ['', 'one', 'two', 'three'];

export function plural(shape: ShapeName): string {
  return `${shape}s`;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

function where(s: ShapeSpec): string {
  const col = s.cx < 0.36 ? 'left' : s.cx > 0.64 ? 'right' : '';
  const row = s.cy < 0.36 ? 'top' : s.cy > 0.64 ? 'bottom' : '';
  if (!col && !row) return 'the middle';
  if (!col) return `the ${row}`;
  if (!row) return `the ${col}`;
  return `the ${row} ${col}`;
}

function nounPhrase(rng: Rng, s: ShapeSpec, withSize: boolean): string {
  const size = withSize && s.size !== 'medium' ? `${s.size} ` : '';
  const words = `${size}${s.colour} ${s.shape}`;
  return `${article(words)} ${words}`;
}

function bgPhrase(rng: Rng, bg: BackgroundName): string {
  return rng.pick([`on ${article(bg)} ${bg} background`, `on ${bg}`, `against ${article(bg)} ${bg} background`]);
}

function captionFor(rng: Rng, bg: BackgroundName, shapes: ShapeSpec[], o: { same: boolean; relation?: 'left' | 'above' }): string {
  const withSize = rng.chance(0.5);
  if (shapes.length === 1) {
    const s = shapes[0];
    const np = nounPhrase(rng, s, withSize);
    switch (rng.int(5)) {
      case 0: return `${np} ${bgPhrase(rng, bg)}`;
      case 1: return `${article(bg)} ${bg} background with ${np}`;
      case 2: return `${np} in ${where(s)} ${bgPhrase(rng, bg)}`;
      case 3: return `a picture of ${np} ${bgPhrase(rng, bg)}`;
      default: return `${np.replace(/^an? /, 'one ')} ${bgPhrase(rng, bg)}`;
    }
  }
  const n = shapes.length;
  if (o.same) {
    const s = shapes[0];
    const size = withSize && s.size !== 'medium' ? `${s.size} ` : '';
    const np = `${n === 2 && rng.chance(0.2) ? 'a pair of' : NUMBER_WORDS[n]} ${size}${s.colour} ${plural(s.shape)}`;
    return rng.chance(0.25) ? `${article(bg)} ${bg} background with ${np}` : `${np} ${bgPhrase(rng, bg)}`;
  }
  if (o.relation) {
    const rel = o.relation === 'left' ? rng.pick(['left of', 'to the left of']) : 'above';
    const tail = rng.chance(0.7) ? ` ${bgPhrase(rng, bg)}` : '';
    return `${nounPhrase(rng, shapes[0], false)} ${rel} ${nounPhrase(rng, shapes[1], false)}${tail}`;
  }
  const nps = shapes.map((s) => nounPhrase(rng, s, withSize));
  const list = n === 2 ? `${nps[0]} and ${nps[1]}` : `${nps[0]}, ${nps[1]} and ${nps[2]}`;
  return `${list} ${bgPhrase(rng, bg)}`;
}

/** What a scene shows, in caption terms. */
export function sceneContent(scene: Pick<Scene, 'background' | 'shapes'>): SceneContent {
  return { background: scene.background, shapes: scene.shapes.map((s) => ({ colour: s.colour, shape: s.shape })) };
}

// ---------------- caption parser ----------------

const COUNT_WORD: Record<string, number> = { a: 1, an: 1, one: 1, two: 2, three: 3, 'a pair of': 2 };

/**
 * Reads what a caption of this world says: the background (when named) and each shape as (colour, shape), "two
 * red stars" giving two entries. Works on any caption in the world's phrasing, not only generated ones. Returns
 * null when no shape is recognised.
 */
export function parseCaption(caption: string): SceneContent | null {
  let text = ` ${caption.toLowerCase().replace(/[.,!?;]/g, ' ').replace(/\s+/g, ' ').trim()} `;
  const bgAlt = BACKGROUND_NAMES.join('|');
  let background: BackgroundName | undefined;
  const bgPatterns = [
    new RegExp(` (?:on|against|over) (?:an? |the )?(${bgAlt})(?: background| backdrop)? `),
    new RegExp(` (?:an? |the )?(${bgAlt}) (?:background|backdrop) with `),
  ];
  for (const re of bgPatterns) {
    const m = re.exec(text);
    if (m) {
      background = m[1] as BackgroundName;
      text = `${text.slice(0, m.index)} | ${text.slice(m.index + m[0].length)}`;
      break;
    }
  }
  const colourAlt = COLOUR_NAMES.join('|');
  const shapeAlt = SHAPES.join('|');
  const re = new RegExp(`(a pair of|an?|one|two|three)? ?(?:(?:small|medium|large|big|tiny) )?(${colourAlt}) (${shapeAlt})(s?)\\b`, 'g');
  const shapes: SceneContent['shapes'] = [];
  for (const m of text.matchAll(re)) {
    const n = m[1] ? COUNT_WORD[m[1]] : m[4] ? 2 : 1;
    for (let i = 0; i < n; i++) shapes.push({ colour: m[2] as ColourName, shape: m[3] as ShapeName });
  }
  if (!shapes.length) return null;
  return background ? { background, shapes } : { shapes };
}

/** Order-free key of a content's shapes ("blue ring|red star|red star"). */
export function shapesKey(c: SceneContent): string {
  return c.shapes.map((s) => `${s.colour} ${s.shape}`).sort().join('|');
}
