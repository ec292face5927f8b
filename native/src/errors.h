// Errors thrown by the C++ side; addon.cc turns them into JS Errors with a `code` property.
#pragma once
#include <stdexcept>
#include <string>

namespace tpserve {

struct NativeError : std::runtime_error {
  std::string code;
  NativeError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

[[noreturn]] inline void fail(const char* code, const std::string& msg) { throw NativeError(code, msg); }

inline std::string shapeStr(long long a, long long b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

}  // namespace tpserve
