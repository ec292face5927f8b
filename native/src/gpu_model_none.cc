// Builds without a CUDA compiler: asking for a GPU engine fails with a code and says what to change.
#ifndef TPSERVE_WITH_CUDA
#include "errors.h"
#include "gpu_model.h"

namespace tpserve {

std::unique_ptr<GpuModel> createGpuModel(const EngineOptions&, int, const ModelShape&, int) {
  fail("NATIVE_NO_CUDA",
       "this build of the addon has no CUDA backend (nvcc was not found when it was built): rebuild with "
       "`npm run build:native` on a machine with the CUDA toolkit, or use device \"cpu\"");
}

}  // namespace tpserve
#endif
