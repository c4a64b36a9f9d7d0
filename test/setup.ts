// Preloaded by bun test (bunfig.toml). Engines in tests default to the CPU reference backend, also on a
// machine with a GPU; GPU tests ask for device "cuda" explicitly. Spawned servers inherit this.
process.env.VBUN_DEVICE ??= "cpu";
