// The one place that knows the concrete types: it builds every component, wires them together
// and runs the process until a signal stops it.
#pragma once

namespace ailb {

// The `ailb` command. Returns the process exit code.
int RunMain(int argc, char** argv);

}  // namespace ailb
