/**
 * The onnsight version (package.json's), for `nns --version`, the language server and the
 * `producer_version` of rewritten models.
 * @module
 */

/** The package version. */
export const VERSION = '0.1.0';
