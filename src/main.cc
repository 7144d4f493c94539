#include <string_view>

#include "ailb/bootstrap.h"
#include "ailb/cli/ingest.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "ingest") {
    return ailb::cli::RunIngest(argc - 2, argv + 2);
  }
  return ailb::RunMain(argc, argv);
}
