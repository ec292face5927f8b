// Which device a worker (or one rank of a tensor-parallel group) takes for --device.
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { resolveDevice } from "../../services/worker/server.js";

describe("resolveDevice", () => {
  it("gives rank r of a group GPU r, or GPU N + r with --device cuda:N", () => {
    expect(resolveDevice("cuda", 0, 1).device).toBe("cuda:0");
    expect(resolveDevice("cuda", 1, 2)).toEqual({ device: "cuda:1", reason: "--device cuda, tp rank 1 of 2" });
    expect(resolveDevice("cuda:2", 3, 4).device).toBe("cuda:5");
    expect(resolveDevice("cpu", 1, 2)).toEqual({ device: "cpu", reason: "--device cpu" });
  });

  it("with a shared GPU (TPSERVE_TP_SHARED_GPU=1, tests) gives every rank the same GPU and says so", () => {
    expect(resolveDevice("cuda", 3, 8, true)).toEqual({
      device: "cuda:0",
      reason: "--device cuda, tp rank 3 of 8, every rank on one GPU (TPSERVE_TP_SHARED_GPU=1)",
    });
    expect(resolveDevice("cuda:1", 2, 4, true).device).toBe("cuda:1");
    expect(resolveDevice("cpu", 2, 4, true).device).toBe("cpu");
    const gpus = loadNative().buildInfo().cudaDevices;
    const auto = resolveDevice("auto", 5, 8, true);
    if (gpus === 0) expect(auto.device).toBe("cpu");
    else expect(auto.device).toBe("cuda:0");
  });

  it("auto falls back to the CPU and says why when there are fewer GPUs than ranks", () => {
    const gpus = loadNative().buildInfo().cudaDevices;
    const one = resolveDevice("auto", 0, 1);
    const group = resolveDevice("auto", 1, gpus + 1);
    expect(group.device).toBe("cpu");
    if (gpus === 0) {
      expect(one.device).toBe("cpu");
      expect(group.reason).toMatch(/no CUDA device is visible|no CUDA backend/);
    } else {
      expect(one.device).toBe("cuda:0");
      expect(group.reason).toMatch(new RegExp(`--tp ${gpus + 1} needs ${gpus + 1} GPUs and ${gpus} are visible`));
    }
  });
});
