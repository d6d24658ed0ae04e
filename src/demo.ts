/**
 * Where the bundled demo model is: the package ships `models/gpt2-facts/` (a 4-layer GPT-2
 * that knows where 60 landmarks are), so examples work from any project.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The absolute path of the bundled demo model folder (`models/gpt2-facts` inside the
 * installed package), found from this file's location, so it works from the sources, the
 * build and an installed package alike.
 *
 * ```ts
 * import { LanguageModel, demoModelPath } from 'onnsight';
 * const model = await LanguageModel.load(demoModelPath());
 * ```
 * @category Model
 */
export function demoModelPath(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'models', 'gpt2-facts');
    if (fs.existsSync(path.join(candidate, 'config.json'))) return candidate;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('onnsight: the bundled demo model (models/gpt2-facts) is missing from this installation');
    dir = up;
  }
}
