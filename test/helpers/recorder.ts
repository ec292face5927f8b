// A stand-in engine that records the tensors the loader hands over (loader and sharding tests); every forward
// rejects.
import type { Engine, EngineInfo, WeightTensor } from "../../native/index.js";

export function recorder(): { engine: Engine; tensors: Map<string, WeightTensor> } {
  const tensors = new Map<string, WeightTensor>();
  const no = () => Promise.reject(new Error("recorder"));
  const engine: Engine = {
    setTensor: (name, t) => void tensors.set(name, t),
    finalize: () => undefined,
    forward: no,
    forwardArgmax: no,
    forwardSample: no,
    forwardSync: () => {
      throw new Error("recorder");
    },
    info: (): EngineInfo => ({ threads: 1, simd: "scalar", weightBytes: 0, kvBytes: 0, device: "cpu", numPages: 2 }),
    limitPages: () => undefined,
    close: () => undefined,
  };
  return { engine, tensors };
}
