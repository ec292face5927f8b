// Load options of a checkpoint read as stored: safetensors, no quantization at load (the loader still reads a
// GPTQ/AWQ checkpoint as such), group 128 symmetric; `o` sets the folder (`dir`) and overrides any of them.
import type { ModelConfig } from "../../services/common/model/config.js";
import type { LoadOptions } from "../../services/worker/load.js";

export function asStored(config: ModelConfig, o: Partial<LoadOptions> = {}): LoadOptions {
  return { config, quantization: "none", groupSize: 128, symmetric: true, loadFormat: "safetensors", ...o };
}
