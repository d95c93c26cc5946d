// Backend-agnostic composite ops with native fast paths: each validates its inputs, then dispatches to a fused
// kernel of the running backend when it has one, else computes the same thing from tfjs ops. layers/ and
// pipeline/ call these; only src/backend registers the kernels behind them.
export { groupNorm, groupNormComposite, GROUP_NORM_KERNEL } from './group_norm.js';
export { linear } from './linear.js';
