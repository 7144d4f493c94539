// Temporary directories for tests that touch the disk. ctest runs every test case as its own
// process, in parallel, so each directory is unique per test and per process.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "gtest/gtest.h"

namespace ailb::testing {

// Creates <TempDir>/<prefix>_<suite>_<test>_XXXXXX and returns its path ("" on failure).
inline std::string MakeTestDir(std::string_view prefix) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info == nullptr ? std::string("global")
                                     : std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  std::string pattern = ::testing::TempDir() + std::string(prefix) + "_" + name + "_XXXXXX";
  return mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
}

// Removes a directory made by MakeTestDir, with everything in it.
inline void RemoveTestDir(const std::string& dir) {
  std::error_code ignored;
  if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
}

}  // namespace ailb::testing
