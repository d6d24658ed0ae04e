/**
 * The `.nns` front end: text → AST ({@link parseScript}) → IR per trace ({@link lowerTrace}).
 * @module
 */
export type * from './ast.js';
export { parseScript, sortErrors, type ParseResult } from './parse.js';
export { lowerTrace, type HostValueInfo, type LoweredTrace, type LowerOptions } from './lower.js';
export { checkTopLevel, lowerScript, traces, type LoweredScript } from './script.js';
export { exprText } from './exprtext.js';
export { FUNCTIONS, signature, type FnSpec } from './functions.js';
export { DEFAULT_LIMITS, limitsWith, type FrontEndLimits } from './limits.js';
