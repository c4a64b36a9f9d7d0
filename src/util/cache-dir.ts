/** vbun's cache folder: $VBUN_CACHE, else $XDG_CACHE_HOME/vbun, else ~/.cache/vbun (built-in model, compiled kernels). */
import { homedir } from "node:os";
import { join } from "node:path";

export function cacheDir(): string {
  return process.env.VBUN_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "vbun");
}
